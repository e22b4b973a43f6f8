//! The open-file limit at start: raised from soft to hard (containers often
//! start processes at 1024 soft), logged, and checked against
//! `max_connections` (every session holds a socket; the listeners, the
//! broker, backend pools and files need a few more). The effective limit is
//! exported as `myriad_process_max_fds` (refreshed per scrape).
//!
//! Never lowers a limit; never refuses to start over it (a warning says what
//! the node will really hold).

use crate::config::Config;
use crate::process;

/// Descriptors kept for what is not a session: listeners, the broker's
/// connections, hook and webhook pools, the spool, logs, /proc reads.
pub const RESERVED_FDS: u64 = 256;

/// Sessions `limit` leaves room for.
pub fn sessions_under(limit: u64) -> u64 {
    limit.saturating_sub(RESERVED_FDS)
}

/// Why `max_connections` cannot be reached under `limit`; None when it can
/// (or there is no limit).
pub fn shortfall(max_connections: usize, limit: Option<u64>) -> Option<String> {
    let limit = limit?;
    let room = sessions_under(limit);
    let wanted = max_connections as u64;
    if max_connections == 0 {
        return Some(format!(
            "max_connections is 0 (no cap) but the open-file limit {limit} holds about {room} sessions: \
             past that, accepts fail with EMFILE (raise the hard limit, e.g. LimitNOFILE= or ulimit -Hn)"
        ));
    }
    (wanted > room).then(|| {
        format!(
            "max_connections {wanted} cannot be reached: the open-file limit {limit} holds about {room} sessions \
             (raise the hard limit, e.g. LimitNOFILE= or ulimit -Hn, or lower max_connections)"
        )
    })
}

/// Raise the soft limit to the hard one, log the outcome, warn on a shortfall.
pub fn raise_and_check(config: &Config) {
    match process::raise_fd_limit() {
        Ok(limit) => {
            let show =
                |v: Option<u64>| v.map_or_else(|| String::from("unlimited"), |v| v.to_string());
            tracing::info!(
                was = %show(limit.was),
                now = %show(limit.now),
                "open-file limit"
            );
            if let Some(why) = shortfall(config.max_connections, limit.now) {
                tracing::warn!("{why}");
            }
        }
        Err(err) => tracing::warn!(error = %err, "could not raise the open-file limit"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_below_max_connections_is_reported() {
        assert_eq!(shortfall(100_000, None), None);
        assert_eq!(shortfall(1000, Some(1 << 20)), None);
        let why = shortfall(100_000, Some(1024)).unwrap();
        assert!(why.contains("holds about 768 sessions"), "{why}");
        assert!(shortfall(0, Some(1024)).unwrap().contains("no cap"));
    }
}
