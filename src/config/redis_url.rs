//! The Redis URLs that name more than one server, parsed (never resolved or
//! connected: the Redis link does that):
//!
//! - `redis+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER[/DB]`
//!   (`rediss+sentinel://`: TLS to the sentinels and the master): the
//!   sentinels to ask, the master's name and database, and the master's
//!   password (`pubsub::broker::sentinel` asks).
//! - `redis+cluster://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]`
//!   (`rediss+cluster://`: TLS to every node): a Redis Cluster's seed nodes
//!   (`pubsub::broker::redis::cluster` connects).
//!
//! Every address is checked here, so a URL that reaches the link is usable.

/// A parsed `redis+sentinel://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelUrl {
    /// host:port of each sentinel, in the order given.
    pub sentinels: Vec<String>,
    pub master: String,
    pub db: u32,
    /// `user:password` or `:password` for the master (as in redis:// URLs).
    pub credentials: Option<String>,
    /// `rediss+sentinel://`: TLS to the sentinels and to the master.
    pub tls: bool,
}

pub const SCHEME: &str = "redis+sentinel://";
/// `rediss+sentinel://`: the sentinels and the master speak TLS.
pub const TLS_SCHEME: &str = "rediss+sentinel://";
/// Most servers one URL may name (sentinels or cluster seeds).
const MAX_HOSTS: usize = 16;

/// `HOST[:PORT],...` into `host:port` strings; a bare host gets
/// `default_port`. Err when an address is empty or there are too many.
fn host_list(hosts: &str, default_port: u16, what: &str) -> Result<Vec<String>, String> {
    let list: Vec<String> = hosts
        .split(',')
        .map(|h| {
            let h = h.trim();
            if h.is_empty() {
                return Err(format!("an empty {what} address"));
            }
            Ok(
                if h.rsplit_once(':')
                    .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
                {
                    h.to_owned()
                } else {
                    format!("{h}:{default_port}")
                },
            )
        })
        .collect::<Result<_, _>>()?;
    if list.is_empty() || list.len() > MAX_HOSTS {
        return Err(format!("name 1 to {MAX_HOSTS} {what}s"));
    }
    Ok(list)
}

/// What follows `plain` or `tls` in `url`, and whether it was `tls`.
fn strip_scheme<'u>(url: &'u str, plain: &str, tls: &str) -> Result<(&'u str, bool), String> {
    match (url.strip_prefix(plain), url.strip_prefix(tls)) {
        (Some(rest), _) => Ok((rest, false)),
        (None, Some(rest)) => Ok((rest, true)),
        (None, None) => Err(format!("not a {plain} or {tls} URL")),
    }
}

/// `[credentials@]hosts` split at the last `@`.
fn split_credentials(authority: &str) -> (Option<String>, &str) {
    match authority.rsplit_once('@') {
        Some((c, h)) => (Some(c.to_owned()), h),
        None => (None, authority),
    }
}

impl SentinelUrl {
    pub fn parse(url: &str) -> Result<SentinelUrl, String> {
        let (rest, tls) = strip_scheme(url, SCHEME, TLS_SCHEME)?;
        let (authority, path) = rest.split_once('/').ok_or_else(|| {
            String::from(
                "needs the master's name: redis+sentinel://HOST:PORT[,HOST:PORT]/MASTER[/DB]",
            )
        })?;
        let (credentials, hosts) = split_credentials(authority);
        // A bare host gets Sentinel's port.
        let sentinels = host_list(hosts, 26379, "sentinel")?;
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
            tls,
        })
    }

    /// A sentinel's URL (no credentials: they are the master's).
    pub fn sentinel_url(&self, sentinel: &str) -> String {
        format!("{}://{sentinel}", if self.tls { "rediss" } else { "redis" })
    }

    /// The master's redis:// (rediss:// under TLS) URL for the address a sentinel named; None when
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
        let scheme = if self.tls { "rediss" } else { "redis" };
        Some(format!("{scheme}://{auth}{host}:{port}/{}", self.db))
    }
}

/// A parsed `redis+cluster://` URL: the seed nodes the link asks for the
/// cluster's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterUrl {
    /// host:port of each seed node, in the order given.
    pub seeds: Vec<String>,
    /// `user:password` or `:password` for every node.
    pub credentials: Option<String>,
    /// `rediss+cluster://`: TLS to every node.
    pub tls: bool,
}

pub const CLUSTER_SCHEME: &str = "redis+cluster://";
pub const CLUSTER_TLS_SCHEME: &str = "rediss+cluster://";

/// Whether `url` names a Redis Cluster.
pub fn is_cluster(url: &str) -> bool {
    url.starts_with(CLUSTER_SCHEME) || url.starts_with(CLUSTER_TLS_SCHEME)
}

/// Whether `url` names Redis Sentinels.
pub fn is_sentinel(url: &str) -> bool {
    url.starts_with(SCHEME) || url.starts_with(TLS_SCHEME)
}

impl ClusterUrl {
    pub fn parse(url: &str) -> Result<ClusterUrl, String> {
        let (rest, tls) = strip_scheme(url, CLUSTER_SCHEME, CLUSTER_TLS_SCHEME)?;
        // A cluster has database 0 only; anything after the hosts is a
        // mistake (a database, options), refused rather than ignored.
        let authority = match rest.split_once(['/', '?', '#']) {
            None => rest,
            Some((a, "")) if rest.ends_with('/') => a,
            Some(_) => {
                return Err(String::from(
                    "a Redis Cluster URL names only its nodes: \
                     redis+cluster://[USER:PASSWORD@]HOST:PORT[,HOST:PORT]",
                ))
            }
        };
        let (credentials, hosts) = split_credentials(authority);
        let seeds = host_list(hosts, 6379, "cluster node")?;
        Ok(ClusterUrl {
            seeds,
            credentials,
            tls,
        })
    }

    /// One redis:// (rediss://) URL per seed node, with the credentials.
    pub fn node_urls(&self) -> Vec<String> {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let auth = self
            .credentials
            .as_ref()
            .map(|c| format!("{c}@"))
            .unwrap_or_default();
        self.seeds
            .iter()
            .map(|s| format!("{scheme}://{auth}{s}"))
            .collect()
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
            "redis+cluster://s1/m",
        ] {
            assert!(SentinelUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tls_sentinels_and_masters() {
        let u = SentinelUrl::parse("rediss+sentinel://:pw@s1:26380/m").unwrap();
        assert!(u.tls);
        assert_eq!(u.sentinel_url(&u.sentinels[0]), "rediss://s1:26380");
        assert_eq!(
            u.master_url("10.0.0.1", 6380).unwrap(),
            "rediss://:pw@10.0.0.1:6380/0"
        );
        assert!(!SentinelUrl::parse("redis+sentinel://s1/m").unwrap().tls);
        assert!(is_sentinel("rediss+sentinel://s1/m") && !is_cluster("rediss+sentinel://s1/m"));
    }

    #[test]
    fn cluster_urls_name_seed_nodes_only() {
        let u = ClusterUrl::parse("redis+cluster://u:pw@r1:7000,r2,10.0.0.3:7002/").unwrap();
        assert_eq!(u.seeds, ["r1:7000", "r2:6379", "10.0.0.3:7002"]);
        assert_eq!(
            u.node_urls(),
            [
                "redis://u:pw@r1:7000",
                "redis://u:pw@r2:6379",
                "redis://u:pw@10.0.0.3:7002"
            ]
        );
        let t = ClusterUrl::parse("rediss+cluster://r1:7000").unwrap();
        assert!(t.tls);
        assert_eq!(t.node_urls(), ["rediss://r1:7000"]);
        assert!(is_cluster("redis+cluster://r1") && !is_sentinel("redis+cluster://r1"));
        let too_many = format!("redis+cluster://{}", vec!["h:1"; 17].join(","));
        for bad in [
            "redis+cluster://",
            "redis+cluster://r1,,r2",
            "redis+cluster://r1/0",
            "redis+cluster://r1?protocol=3",
            "redis://r1",
            too_many.as_str(),
        ] {
            assert!(ClusterUrl::parse(bad).is_err(), "{bad}");
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
