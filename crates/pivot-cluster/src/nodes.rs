//! The node registry (DESIGN §7): which nodes are alive, and where each answers its API.
//!
//! Each node renews one heartbeat with a TTL — its node lease. Liveness is per node, never per
//! call, so the registry's load does not grow with the number of calls: a call is orphaned when
//! its owner's heartbeat lapses, and survivors find its calls through
//! [`Ownership::calls_of_node`](crate::Ownership::calls_of_node).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::ownership::check_key;
use crate::{BoxFuture, ClusterError, lock};

/// The default bound on registered nodes: far above any real cluster, low enough that a
/// misconfigured fleet (a fresh node name per restart) cannot grow the registry without limit.
pub const DEFAULT_MAX_NODES: usize = 1024;
/// An advertised URL longer than this is a configuration error, not an address.
pub const MAX_ADVERTISE_BYTES: usize = 1024;
/// Longer heartbeat TTLs are cut to this: a lease of a year is already forever.
pub const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// A live node and the base URL its API answers on (for owner routing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: String,
    pub advertise: String,
}

/// The registry of live nodes shared by a cluster.
pub trait Nodes: Send + Sync + std::fmt::Debug + 'static {
    /// Registers or renews `node`'s lease for `ttl` (at least 1 ms), advertising `advertise`.
    /// `Full` if the registry holds its bound of other live nodes.
    fn heartbeat<'a>(
        &'a self,
        node: &'a str,
        advertise: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), ClusterError>>;

    /// Ends `node`'s lease at once (a drained node leaving), so peers need not wait for the TTL.
    fn leave<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Result<(), ClusterError>>;

    /// The nodes whose lease has not expired, sorted by id.
    fn live<'a>(&'a self) -> BoxFuture<'a, Result<Vec<NodeInfo>, ClusterError>>;

    fn is_live<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Result<bool, ClusterError>>;
}

pub(crate) fn check_heartbeat(node: &str, advertise: &str) -> Result<(), ClusterError> {
    check_key("node", node)?;
    if advertise.len() > MAX_ADVERTISE_BYTES {
        return Err(ClusterError::TooLarge {
            what: "advertise",
            size: advertise.len(),
            limit: MAX_ADVERTISE_BYTES,
        });
    }
    Ok(())
}

/// The in-memory [`Nodes`]: one process, so every "node" lives in it (tests, single node).
#[derive(Debug)]
pub struct MemoryNodes {
    nodes: Mutex<HashMap<String, (String, Instant)>>,
    max_nodes: usize,
}

impl MemoryNodes {
    pub fn new(max_nodes: usize) -> MemoryNodes {
        MemoryNodes {
            nodes: Mutex::new(HashMap::new()),
            max_nodes,
        }
    }

    fn heartbeat_now(
        &self,
        node: &str,
        advertise: &str,
        ttl: Duration,
    ) -> Result<(), ClusterError> {
        check_heartbeat(node, advertise)?;
        let now = Instant::now();
        // Clamped as Redis must clamp it; unclamped, a huge TTL would overflow the Instant.
        let expires = now + ttl.clamp(Duration::from_millis(1), MAX_TTL);
        let mut nodes = lock(&self.nodes);
        nodes.retain(|_, (_, expires)| *expires > now);
        if !nodes.contains_key(node) && nodes.len() >= self.max_nodes {
            return Err(ClusterError::Full {
                what: "nodes",
                limit: self.max_nodes,
            });
        }
        nodes.insert(node.to_owned(), (advertise.to_owned(), expires));
        Ok(())
    }

    fn live_now(&self) -> Vec<NodeInfo> {
        let now = Instant::now();
        let mut nodes = lock(&self.nodes);
        nodes.retain(|_, (_, expires)| *expires > now);
        let mut live: Vec<NodeInfo> = nodes
            .iter()
            .map(|(id, (advertise, _))| NodeInfo {
                id: id.clone(),
                advertise: advertise.clone(),
            })
            .collect();
        live.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        live
    }

    fn is_live_now(&self, node: &str) -> bool {
        lock(&self.nodes)
            .get(node)
            .is_some_and(|(_, expires)| *expires > Instant::now())
    }
}

impl Nodes for MemoryNodes {
    fn heartbeat<'a>(
        &'a self,
        node: &'a str,
        advertise: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), ClusterError>> {
        Box::pin(async move { self.heartbeat_now(node, advertise, ttl) })
    }

    fn leave<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Result<(), ClusterError>> {
        Box::pin(async move {
            lock(&self.nodes).remove(node);
            Ok(())
        })
    }

    fn live<'a>(&'a self) -> BoxFuture<'a, Result<Vec<NodeInfo>, ClusterError>> {
        Box::pin(async move { Ok(self.live_now()) })
    }

    fn is_live<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Result<bool, ClusterError>> {
        Box::pin(async move { Ok(self.is_live_now(node)) })
    }
}
