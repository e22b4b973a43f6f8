//! Where webhook events wait until the receiver acknowledges them: in
//! memory, or in a file (redb, an embedded transactional store) that keeps
//! them across restarts. Bounded in bytes: past `spool_max_bytes` the oldest
//! events are dropped (and counted by the caller).
//!
//! First in, first out; an event leaves only when `ack`ed.

use std::collections::VecDeque;
use std::path::Path;

use redb::{Database, ReadableTable, TableDefinition};

const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");

#[derive(Debug, thiserror::Error)]
#[error("webhook spool: {0}")]
pub struct SpoolError(String);

fn err(e: impl std::fmt::Display) -> SpoolError {
    SpoolError(e.to_string())
}

enum Store {
    Memory(VecDeque<(u64, Vec<u8>)>),
    Disk(Database),
}

pub struct Spool {
    store: Store,
    next: u64,
    len: usize,
    bytes: usize,
    max_bytes: usize,
}

impl Spool {
    pub fn memory(max_bytes: usize) -> Spool {
        Spool {
            store: Store::Memory(VecDeque::new()),
            next: 0,
            len: 0,
            bytes: 0,
            max_bytes,
        }
    }

    /// Open (or create) the spool file and count what it holds.
    pub fn open(path: &Path, max_bytes: usize) -> Result<Spool, SpoolError> {
        let db = Database::create(path).map_err(err)?;
        let (mut next, mut len, mut bytes) = (0u64, 0usize, 0usize);
        {
            let tx = db.begin_write().map_err(err)?;
            {
                let table = tx.open_table(EVENTS).map_err(err)?;
                for entry in table.iter().map_err(err)? {
                    let (k, v) = entry.map_err(err)?;
                    next = next.max(k.value() + 1);
                    len += 1;
                    bytes += v.value().len();
                }
            }
            tx.commit().map_err(err)?;
        }
        Ok(Spool {
            store: Store::Disk(db),
            next,
            len,
            bytes,
            max_bytes,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Append events (one transaction); returns how many old ones were
    /// dropped to stay within `max_bytes`.
    pub fn push(&mut self, events: &[Vec<u8>]) -> Result<usize, SpoolError> {
        let mut keys = Vec::with_capacity(events.len());
        for e in events {
            keys.push(self.next);
            self.next += 1;
            self.len += 1;
            self.bytes += e.len();
        }
        match &mut self.store {
            Store::Memory(q) => {
                q.extend(keys.iter().copied().zip(events.iter().cloned()));
            }
            Store::Disk(db) => {
                let tx = db.begin_write().map_err(err)?;
                {
                    let mut table = tx.open_table(EVENTS).map_err(err)?;
                    for (k, e) in keys.iter().zip(events) {
                        table.insert(*k, e.as_slice()).map_err(err)?;
                    }
                }
                tx.commit().map_err(err)?;
            }
        }
        let mut dropped = 0;
        while self.bytes > self.max_bytes && self.len > 0 {
            let oldest = self.peek(1)?;
            let Some((k, _)) = oldest.into_iter().next() else {
                break;
            };
            self.ack(&[k])?;
            dropped += 1;
        }
        Ok(dropped)
    }

    /// The oldest `n` events, with their keys.
    pub fn peek(&self, n: usize) -> Result<Vec<(u64, Vec<u8>)>, SpoolError> {
        match &self.store {
            Store::Memory(q) => Ok(q.iter().take(n).cloned().collect()),
            Store::Disk(db) => {
                let tx = db.begin_read().map_err(err)?;
                let table = tx.open_table(EVENTS).map_err(err)?;
                let mut out = Vec::with_capacity(n.min(self.len));
                for entry in table.iter().map_err(err)?.take(n) {
                    let (k, v) = entry.map_err(err)?;
                    out.push((k.value(), v.value().to_vec()));
                }
                Ok(out)
            }
        }
    }

    /// Remove delivered (or dropped) events.
    pub fn ack(&mut self, keys: &[u64]) -> Result<(), SpoolError> {
        match &mut self.store {
            Store::Memory(q) => {
                for k in keys {
                    if let Some(pos) = q.iter().position(|(key, _)| key == k) {
                        if let Some((_, e)) = q.remove(pos) {
                            self.len -= 1;
                            self.bytes -= e.len();
                        }
                    }
                }
            }
            Store::Disk(db) => {
                let tx = db.begin_write().map_err(err)?;
                {
                    let mut table = tx.open_table(EVENTS).map_err(err)?;
                    for k in keys {
                        if let Some(e) = table.remove(*k).map_err(err)? {
                            self.len -= 1;
                            self.bytes -= e.value().len();
                        }
                    }
                }
                tx.commit().map_err(err)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise(mut s: Spool) {
        assert_eq!(s.push(&[b"a".to_vec(), b"bb".to_vec()]).unwrap(), 0);
        let first = s.peek(10).unwrap();
        assert_eq!(first.len(), 2);
        assert_eq!(first[0].1, b"a");
        s.ack(&[first[0].0]).unwrap();
        assert_eq!(s.len(), 1);
        // Over the byte bound: the oldest go.
        let big = vec![b'x'; 1000];
        let dropped = s.push(&[big.clone(), big.clone()]).unwrap();
        assert_eq!(dropped, 2, "bb and the first big one");
        assert_eq!(s.peek(10).unwrap().len(), 1);
    }

    #[test]
    fn memory_and_disk_spools_keep_order_and_their_bound() {
        exercise(Spool::memory(1500));
        let path = std::env::temp_dir().join(format!("myriad-spool-{}.redb", std::process::id()));
        let _ = std::fs::remove_file(&path);
        exercise(Spool::open(&path, 1500).unwrap());
        // What was left is there after a reopen.
        let s = Spool::open(&path, 1500).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s.peek(1).unwrap()[0].1.len(), 1000);
        drop(s);
        let _ = std::fs::remove_file(&path);
    }
}
