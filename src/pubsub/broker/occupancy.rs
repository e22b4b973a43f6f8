//! Cluster-wide channel occupancy in Redis, for the `channel_occupied` and
//! `channel_vacated` webhooks: a topic is occupied when the first node gets
//! a member and vacated when the last node loses its last, and exactly one
//! node (the one whose script saw the change) reports it.
//!
//! Per topic a set of the nodes with members (`myriad-occ:{topic}`), per node
//! the set of its topics (`myriad-occ-node:{node}`) and a liveness key that
//! heartbeats refresh (`myriad-alive:{node}`). When a node dies, the first
//! survivor to notice runs `GONE` for it: the dead node's topics lose it, and
//! the ones left empty are reported vacated (once: the script deletes the
//! dead node's set). A node whose liveness key expired (the whole cluster
//! restarted, so nobody noticed it die) is dropped from a topic the next time
//! someone joins it.
//!
//! Only scripts; the link task decides when to run them.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::RedisResult;

use super::names;

const OCCUPY: &str = r#"
redis.call('SET', ARGV[3] .. ARGV[1], '1', 'PX', ARGV[4])
redis.call('SADD', KEYS[2], ARGV[2])
for _, m in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if m ~= ARGV[1] and redis.call('EXISTS', ARGV[3] .. m) == 0 then
    redis.call('SREM', KEYS[1], m)
  end
end
if redis.call('SADD', KEYS[1], ARGV[1]) == 1 and redis.call('SCARD', KEYS[1]) == 1 then
  return 1
end
return 0
"#;

const VACATE: &str = r#"
redis.call('SREM', KEYS[2], ARGV[2])
if redis.call('SREM', KEYS[1], ARGV[1]) == 1 and redis.call('SCARD', KEYS[1]) == 0 then
  return 1
end
return 0
"#;

const GONE: &str = r#"
local out = {}
for _, t in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local k = ARGV[2] .. t
  if redis.call('SREM', k, ARGV[1]) == 1 and redis.call('SCARD', k) == 0 then
    table.insert(out, t)
  end
end
redis.call('DEL', KEYS[1])
return out
"#;

pub struct Occupancy {
    occupy: redis::Script,
    vacate: redis::Script,
    gone: redis::Script,
    /// How long a node counts as alive after its last heartbeat.
    alive_ttl: Duration,
}

impl Occupancy {
    pub fn new(alive_ttl: Duration) -> Occupancy {
        Occupancy {
            occupy: redis::Script::new(OCCUPY),
            vacate: redis::Script::new(VACATE),
            gone: redis::Script::new(GONE),
            alive_ttl,
        }
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.alive_ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// `node` has members on `topic`; true when it is the first node.
    pub async fn occupy(
        &self,
        conn: &mut MultiplexedConnection,
        node: &str,
        topic: &str,
    ) -> RedisResult<bool> {
        let first: i64 = self
            .occupy
            .key(names::redis_occupancy_key(topic))
            .key(names::redis_occupancy_node_key(node))
            .arg(node)
            .arg(topic)
            .arg(names::REDIS_ALIVE_PREFIX)
            .arg(self.ttl_ms())
            .invoke_async(conn)
            .await?;
        Ok(first == 1)
    }

    /// `node` has no members on `topic` any more; true when it was the last.
    pub async fn vacate(
        &self,
        conn: &mut MultiplexedConnection,
        node: &str,
        topic: &str,
    ) -> RedisResult<bool> {
        let last: i64 = self
            .vacate
            .key(names::redis_occupancy_key(topic))
            .key(names::redis_occupancy_node_key(node))
            .arg(node)
            .arg(topic)
            .invoke_async(conn)
            .await?;
        Ok(last == 1)
    }

    /// `dead` is gone: the topics only it occupied (reported by whoever runs
    /// this first; later runs find nothing).
    pub async fn node_gone(
        &self,
        conn: &mut MultiplexedConnection,
        dead: &str,
    ) -> RedisResult<Vec<String>> {
        self.gone
            .key(names::redis_occupancy_node_key(dead))
            .arg(dead)
            .arg(names::REDIS_OCCUPANCY_PREFIX)
            .invoke_async(conn)
            .await
    }

    /// The topics Redis has this node on (to reconcile after a reconnect).
    pub async fn recorded(
        &self,
        conn: &mut MultiplexedConnection,
        node: &str,
    ) -> RedisResult<Vec<String>> {
        redis::cmd("SMEMBERS")
            .arg(names::redis_occupancy_node_key(node))
            .query_async(conn)
            .await
    }

    /// The liveness key, refreshed with every heartbeat.
    pub fn alive_cmd(&self, node: &str) -> redis::Cmd {
        let mut cmd = redis::cmd("SET");
        cmd.arg(format!("{}{node}", names::REDIS_ALIVE_PREFIX))
            .arg("1")
            .arg("PX")
            .arg(self.ttl_ms());
        cmd
    }
}
