//! Redis Sentinel: `redis+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER[/DB]`
//! (`rediss+sentinel://`: the sentinels and the master speak TLS, checked
//! against `broker_tls_ca`, with the client certificate when configured).
//! Before each connection the link asks the sentinels, in order, where the
//! master named MASTER is (`SENTINEL get-master-addr-by-name`), checks that
//! the address really is a master (`ROLE`: a demoted one can linger in a
//! sentinel's answer for a moment) and connects there; after a failover the
//! link's connections fail, and the next attempt asks again.
//!
//! This module resolves the master (the URL is parsed by
//! `config::redis_url`); it never holds a connection (the Redis link
//! does). The password, if any, is the master's; sentinels are reached
//! without one.

use std::time::Duration;

pub use crate::config::redis_url::SentinelUrl;

/// Ask the sentinels, in order, for the current master and return a
/// redis:// (rediss://) URL for it; the first sentinel that answers with an
/// address whose `ROLE` is master wins. `open` makes a client for a URL (it
/// adds the TLS certificates).
pub async fn resolve(
    s: &SentinelUrl,
    timeout: Duration,
    open: impl Fn(&str) -> redis::RedisResult<redis::Client>,
) -> Result<String, String> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    let mut last = String::from("no sentinel answered");
    for sentinel in &s.sentinels {
        let asked = async {
            let client = open(&s.sentinel_url(sentinel))?;
            let mut conn = client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(&s.master)
                .query_async::<Option<(String, u16)>>(&mut conn)
                .await
        };
        let (host, port) = match asked.await {
            Ok(Some(addr)) => addr,
            Ok(None) => {
                last = format!("sentinel {sentinel} does not know master {:?}", s.master);
                continue;
            }
            Err(e) => {
                last = format!("sentinel {sentinel}: {e}");
                continue;
            }
        };
        let Some(url) = s.master_url(&host, port) else {
            last = format!("sentinel {sentinel} named an unusable master address");
            continue;
        };
        let role = async {
            let client = open(&url)?;
            let mut conn = client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            redis::cmd("ROLE")
                .query_async::<redis::Value>(&mut conn)
                .await
        };
        match role.await {
            Ok(redis::Value::Array(items)) if matches!(items.first(), Some(redis::Value::BulkString(r)) if r == b"master") =>
            {
                return Ok(url);
            }
            Ok(_) => last = format!("{host}:{port} (from sentinel {sentinel}) is not a master yet"),
            Err(e) => last = format!("master {host}:{port} (from sentinel {sentinel}): {e}"),
        }
    }
    Err(last)
}
