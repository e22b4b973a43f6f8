//! `redis+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER[/DB]`: the
//! sentinels to ask, the master's name and database, and the master's
//! password. Parsing only; the Redis link asks the sentinels
//! (`pubsub::broker::sentinel`).

/// A parsed `redis+sentinel://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelUrl {
    /// host:port of each sentinel, in the order given.
    pub sentinels: Vec<String>,
    pub master: String,
    pub db: u32,
    /// `user:password` or `:password` for the master (as in redis:// URLs).
    pub credentials: Option<String>,
}

pub const SCHEME: &str = "redis+sentinel://";
/// Most sentinels one URL may name.
const MAX_SENTINELS: usize = 16;

impl SentinelUrl {
    pub fn parse(url: &str) -> Result<SentinelUrl, String> {
        let rest = url
            .strip_prefix(SCHEME)
            .ok_or_else(|| format!("not a {SCHEME} URL"))?;
        let (authority, path) = rest.split_once('/').ok_or_else(|| {
            String::from(
                "needs the master's name: redis+sentinel://HOST:PORT[,HOST:PORT]/MASTER[/DB]",
            )
        })?;
        let (credentials, hosts) = match authority.rsplit_once('@') {
            Some((c, h)) => (Some(c.to_owned()), h),
            None => (None, authority),
        };
        let sentinels: Vec<String> = hosts
            .split(',')
            .map(|h| {
                let h = h.trim();
                if h.is_empty() {
                    return Err(String::from("an empty sentinel address"));
                }
                // A bare host gets Sentinel's port.
                Ok(
                    if h.rsplit_once(':')
                        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
                    {
                        h.to_owned()
                    } else {
                        format!("{h}:26379")
                    },
                )
            })
            .collect::<Result<_, _>>()?;
        if sentinels.is_empty() || sentinels.len() > MAX_SENTINELS {
            return Err(format!("name 1 to {MAX_SENTINELS} sentinels"));
        }
        let mut parts = path.split('/');
        let master = parts.next().unwrap_or("").to_owned();
        if master.is_empty() || master.len() > 256 {
            return Err(String::from("needs the master's name after the sentinels"));
        }
        let db = match parts.next() {
            None | Some("") => 0,
            Some(d) => d
                .parse()
                .map_err(|_| format!("database {d:?} is not a number"))?,
        };
        if parts.next().is_some() {
            return Err(String::from("too many path segments"));
        }
        Ok(SentinelUrl {
            sentinels,
            master,
            db,
            credentials,
        })
    }

    /// The master's redis:// URL, given its address.
    /// The master's redis:// URL for the address a sentinel named; None when
    /// the host is not a plain host name or address (a sentinel's answer is
    /// network input: it must not add credentials, a path or a query).
    pub fn master_url(&self, host: &str, port: u16) -> Option<String> {
        let plain = !host.is_empty()
            && host.len() <= 255
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'_'));
        if !plain || port == 0 {
            return None;
        }
        let auth = self
            .credentials
            .as_ref()
            .map(|c| format!("{c}@"))
            .unwrap_or_default();
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        Some(format!("redis://{auth}{host}:{port}/{}", self.db))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn urls_name_sentinels_master_and_database() {
        let u = SentinelUrl::parse("redis+sentinel://:pw@s1:26379,s2,10.0.0.3:5000/mymaster/2")
            .unwrap();
        assert_eq!(u.sentinels, ["s1:26379", "s2:26379", "10.0.0.3:5000"]);
        assert_eq!(u.master, "mymaster");
        assert_eq!(u.db, 2);
        assert_eq!(
            u.master_url("10.1.1.1", 6380).unwrap(),
            "redis://:pw@10.1.1.1:6380/2"
        );
        assert_eq!(
            SentinelUrl::parse("redis+sentinel://s1/m")
                .unwrap()
                .master_url("::1", 6379)
                .unwrap(),
            "redis://[::1]:6379/0"
        );
        for bad in [
            "redis+sentinel://s1",
            "redis+sentinel://s1/",
            "redis+sentinel:///m",
            "redis+sentinel://s1,,s2/m",
            "redis+sentinel://s1/m/x",
            "redis+sentinel://s1/m/0/extra",
            "redis://s1/m",
        ] {
            assert!(SentinelUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_sentinel_cannot_smuggle_credentials_or_paths_into_the_master_url() {
        let u = SentinelUrl::parse("redis+sentinel://s1/m").unwrap();
        for host in [
            "evil@10.0.0.1",
            "10.0.0.1/0?x=1",
            "a b",
            "",
            "h#frag",
            &"x".repeat(256),
        ] {
            assert_eq!(u.master_url(host, 6379), None, "{host:?}");
        }
        assert_eq!(u.master_url("10.0.0.1", 0), None);
        assert!(u.master_url("redis-0.redis.svc", 6379).is_some());
    }
}
