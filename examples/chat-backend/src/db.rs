//! The example's storage: users, login sessions, rooms and their members,
//! messages, and the webhook events received. SQLite through rusqlite; one
//! connection behind a mutex (a demo's load).

use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub struct Db {
    conn: Mutex<Connection>,
    /// Salts password hashes and login tokens.
    secret: String,
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn hash(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    format!("{:x}", h.finalize())
}

/// What a refused action tells the user.
pub type Refusal = String;

impl Db {
    pub fn open(path: &Path, secret: &str) -> anyhow::Result<Db> {
        let conn = Connection::open(path)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY, password TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS logins (token TEXT PRIMARY KEY, user TEXT NOT NULL, expires INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS rooms (name TEXT PRIMARY KEY, invite TEXT NOT NULL, owner TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS members (room TEXT NOT NULL, user TEXT NOT NULL, PRIMARY KEY (room, user));
             CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY AUTOINCREMENT, room TEXT NOT NULL,
                 user TEXT NOT NULL, body TEXT NOT NULL, at INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS events (id TEXT PRIMARY KEY, type TEXT NOT NULL, body TEXT NOT NULL);",
        )?;
        Ok(Db {
            conn: Mutex::new(conn),
            secret: secret.to_owned(),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock is a bug in this demo; keep serving.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Log in (signing up a new name): a token valid for a day.
    pub fn login(&self, user: &str, password: &str) -> Result<String, Refusal> {
        let ok_name = !user.is_empty()
            && user.len() <= 32
            && user.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok_name || password.is_empty() {
            return Err("a name of letters, digits or _ (at most 32) and a password".into());
        }
        let pw = hash(&[&self.secret, user, password]);
        let conn = self.conn();
        let stored: Option<String> = conn
            .query_row("SELECT password FROM users WHERE name = ?1", [user], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| e.to_string())?;
        match stored {
            Some(s) if s != pw => return Err("wrong password".into()),
            Some(_) => {}
            None => {
                conn.execute(
                    "INSERT INTO users (name, password) VALUES (?1, ?2)",
                    [user, &pw],
                )
                .map_err(|e| e.to_string())?;
            }
        }
        let token = hash(&[&self.secret, user, &format!("{:?}", SystemTime::now())]);
        conn.execute(
            "INSERT INTO logins (token, user, expires) VALUES (?1, ?2, ?3)",
            params![token, user, now() + 86_400],
        )
        .map_err(|e| e.to_string())?;
        Ok(token)
    }

    /// The user a login token belongs to, while it is valid.
    pub fn user_of(&self, token: &str) -> Option<String> {
        self.conn()
            .query_row(
                "SELECT user FROM logins WHERE token = ?1 AND expires > ?2",
                params![token, now()],
                |r| r.get(0),
            )
            .optional()
            .ok()
            .flatten()
    }

    /// May `user` join `room`? The lobby is open; a new room belongs to its
    /// first visitor, who gets its invite code; others need the code once.
    pub fn join(&self, room: &str, user: &str, invite: Option<&str>) -> Result<Value, Refusal> {
        if room == "lobby" {
            return Ok(json!({}));
        }
        let conn = self.conn();
        let existing: Option<(String, String)> = conn
            .query_row(
                "SELECT invite, owner FROM rooms WHERE name = ?1",
                [room],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| e.to_string())?;
        let Some((code, owner)) = existing else {
            let code = hash(&[&self.secret, room, user])[..8].to_owned();
            conn.execute(
                "INSERT INTO rooms (name, invite, owner) VALUES (?1, ?2, ?3)",
                [room, &code, user],
            )
            .map_err(|e| e.to_string())?;
            conn.execute(
                "INSERT INTO members (room, user) VALUES (?1, ?2)",
                [room, user],
            )
            .map_err(|e| e.to_string())?;
            return Ok(json!({"invite": code, "owner": true}));
        };
        let member: bool = conn
            .query_row(
                "SELECT 1 FROM members WHERE room = ?1 AND user = ?2",
                [room, user],
                |_| Ok(true),
            )
            .optional()
            .map_err(|e| e.to_string())?
            .unwrap_or(false);
        if member || invite == Some(code.as_str()) {
            conn.execute(
                "INSERT OR IGNORE INTO members (room, user) VALUES (?1, ?2)",
                [room, user],
            )
            .map_err(|e| e.to_string())?;
            let extra = if owner == user {
                json!({"invite": code, "owner": true})
            } else {
                json!({})
            };
            return Ok(extra);
        }
        Err("not a member of this room (ask its owner for the invite code)".into())
    }

    /// Store a message; its id and time.
    pub fn store(&self, room: &str, user: &str, body: &str) -> Result<(i64, u64), Refusal> {
        let at = now();
        let conn = self.conn();
        conn.execute(
            "INSERT INTO messages (room, user, body, at) VALUES (?1, ?2, ?3, ?4)",
            params![room, user, body, at],
        )
        .map_err(|e| e.to_string())?;
        Ok((conn.last_insert_rowid(), at))
    }

    /// Up to `n` messages of `room` older than `before`, oldest first.
    pub fn older(&self, room: &str, before: i64, n: u32) -> Result<Vec<Value>, Refusal> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT id, user, body, at FROM messages WHERE room = ?1 AND id < ?2
                 ORDER BY id DESC LIMIT ?3",
            )
            .map_err(|e| e.to_string())?;
        let rows = stmt
            .query_map(params![room, before, n], |r| {
                Ok(
                    json!({"id": r.get::<_, i64>(0)?, "name": r.get::<_, String>(1)?,
                          "body": r.get::<_, String>(2)?, "at": r.get::<_, i64>(3)?}),
                )
            })
            .map_err(|e| e.to_string())?;
        let mut out: Vec<Value> = rows.filter_map(Result::ok).collect();
        out.reverse();
        Ok(out)
    }

    /// A webhook event, once per id (they may arrive twice).
    pub fn record_event(&self, event: &Value) {
        let id = event["id"].as_str().unwrap_or_default();
        let kind = event["type"].as_str().unwrap_or_default();
        let _ = self.conn().execute(
            "INSERT OR IGNORE INTO events (id, type, body) VALUES (?1, ?2, ?3)",
            [id, kind, &event.to_string()],
        );
    }

    /// Events received, by type.
    pub fn event_counts(&self) -> Value {
        let conn = self.conn();
        let Ok(mut stmt) = conn.prepare("SELECT type, COUNT(*) FROM events GROUP BY type") else {
            return json!({});
        };
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)));
        let mut out = serde_json::Map::new();
        if let Ok(rows) = rows {
            for (k, n) in rows.flatten() {
                out.insert(k, json!(n));
            }
        }
        Value::Object(out)
    }
}
