//! [`Nodes`] on Redis: one key per node with a PX TTL (the lease), and a zset of nodes scored
//! by lease expiry so the live set is read without SCAN.

use std::time::Duration;

use super::RedisCluster;
use crate::nodes::check_heartbeat;
use crate::ownership::MAX_KEY_BYTES;
use crate::{BoxFuture, ClusterError, NodeInfo, Nodes};

pub(super) const MAX_TTL_MS: u64 = crate::nodes::MAX_TTL.as_millis() as u64;

impl RedisCluster {
    async fn heartbeat_now(
        &self,
        node: &str,
        advertise: &str,
        ttl: Duration,
    ) -> Result<(), ClusterError> {
        check_heartbeat(node, advertise)?;
        // Redis refuses expiries beyond its clock's range.
        let ttl_ms = u64::try_from(ttl.as_millis())
            .unwrap_or(u64::MAX)
            .clamp(1, MAX_TTL_MS);
        let keys = &self.inner.keys;
        let max_nodes = self.inner.options.max_nodes;
        let renewed: i64 = self
            .run("heartbeat", |mut con| async move {
                self.inner
                    .scripts
                    .heartbeat
                    .key(keys.node(node))
                    .key(keys.nodes())
                    .arg(node)
                    .arg(advertise)
                    .arg(ttl_ms)
                    .arg(max_nodes)
                    .invoke_async(&mut con)
                    .await
            })
            .await?;
        if renewed == 1 {
            Ok(())
        } else {
            Err(ClusterError::Full {
                what: "nodes",
                limit: max_nodes,
            })
        }
    }

    async fn leave_now(&self, node: &str) -> Result<(), ClusterError> {
        if node.len() > MAX_KEY_BYTES {
            return Ok(());
        }
        let keys = &self.inner.keys;
        let _: i64 = self
            .run("leave", |mut con| async move {
                self.inner
                    .scripts
                    .leave
                    .key(keys.node(node))
                    .key(keys.nodes())
                    .arg(node)
                    .invoke_async(&mut con)
                    .await
            })
            .await?;
        Ok(())
    }

    async fn live_now(&self) -> Result<Vec<NodeInfo>, ClusterError> {
        let keys = &self.inner.keys;
        let flat: Vec<String> = self
            .run("live", |mut con| async move {
                self.inner
                    .scripts
                    .live
                    .key(keys.nodes())
                    .arg(keys.node_prefix())
                    .invoke_async(&mut con)
                    .await
            })
            .await?;
        let mut live: Vec<NodeInfo> = flat
            .chunks_exact(2)
            .map(|pair| NodeInfo {
                id: pair[0].clone(),
                advertise: pair[1].clone(),
            })
            .collect();
        live.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        Ok(live)
    }

    async fn is_live_now(&self, node: &str) -> Result<bool, ClusterError> {
        if node.len() > MAX_KEY_BYTES {
            return Ok(false);
        }
        let key = self.inner.keys.node(node);
        let exists: i64 = self
            .run("is_live", |mut con| async move {
                redis::cmd("EXISTS").arg(key).query_async(&mut con).await
            })
            .await?;
        Ok(exists == 1)
    }
}

impl Nodes for RedisCluster {
    fn heartbeat<'a>(
        &'a self,
        node: &'a str,
        advertise: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), ClusterError>> {
        Box::pin(self.heartbeat_now(node, advertise, ttl))
    }

    fn leave<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Result<(), ClusterError>> {
        Box::pin(self.leave_now(node))
    }

    fn live<'a>(&'a self) -> BoxFuture<'a, Result<Vec<NodeInfo>, ClusterError>> {
        Box::pin(self.live_now())
    }

    fn is_live<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Result<bool, ClusterError>> {
        Box::pin(self.is_live_now(node))
    }
}
