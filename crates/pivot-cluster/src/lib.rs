//! # pivot-cluster
//!
//! The state pivot nodes share (DESIGN §7, §8): who drives which call, the callflows that map
//! dialled numbers to pivot apps, and the pivot debug logs the API serves.
//!
//! Layout:
//! - [`ownership`]: [`Ownership`] — claims, adoption, fencing epochs, checkpoints, drain;
//! - [`callflows`]: [`CallflowStore`] — KAZOO-shaped callflows per account, number resolution;
//! - [`debug`]: [`DebugStore`] — per-call debug entries with retention and paging;
//! - [`nodes`]: [`Nodes`] — the node registry (heartbeats with a TTL, the live set);
//! - [`rendezvous`]: [`rendezvous_rank`] — which live node should take a call;
//! - [`redis`]: [`RedisCluster`] — every trait above on a shared Redis;
//! - [`error`]: [`ClusterError`] and [`StoreError`].
//!
//! Each store is an object-safe async trait (`Arc<dyn Ownership>` works) so a networked backend
//! (Redis) can stand behind the same calls; `Memory*` types are the single-node embedded default
//! and what unit tests use. Every in-memory map has a configured bound.
//!
//! **Invariant: only the holder of the current epoch writes.** Every claim or adoption of a call
//! bumps its epoch and hands out a [`Lease`] carrying it; a checkpoint, release or finish with any
//! other epoch is refused as [`ClusterError::Fenced`], so a node that lost a call (paused,
//! partitioned, or simply slow) can never overwrite the state of the node that took it over.

pub mod callflows;
pub mod debug;
pub mod error;
pub mod nodes;
pub mod ownership;
pub mod redis;
pub mod rendezvous;

mod ids;
mod json;

pub use callflows::{Callflow, CallflowStore, MemoryCallflows};
pub use debug::{
    Clock, DebugEntry, DebugLimits, DebugPage, DebugStore, DebugSummary, MemoryDebugStore,
};
pub use error::{ClusterError, StoreError};
pub use ids::new_id;
pub use nodes::{MemoryNodes, NodeInfo, Nodes};
pub use ownership::{Adopted, CallOwner, Checkpoint, Lease, MemoryOwnership, Ownership};
pub use rendezvous::{rendezvous_rank, rendezvous_weight};

pub use crate::redis::{RedisCluster, RedisOptions};

/// The future every store method returns: boxed so the traits stay object-safe, `Send` so a
/// networked backend's futures can run on any runtime thread.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Wall-clock milliseconds since the Unix epoch; 0 if the clock is set before 1970, which only
/// makes records look old rather than failing a call.
pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Locks a store's state even if a previous holder panicked: every critical section in this
/// crate finishes its invariant-preserving updates before anything that could panic, so the
/// data behind a poisoned lock is still consistent and refusing all calls would be worse.
fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
