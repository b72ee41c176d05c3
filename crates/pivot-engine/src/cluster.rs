//! The node's part in the cluster (DESIGN §7): its heartbeat, self-fencing when the heartbeat
//! cannot be renewed, the rank of this node for a new call (rendezvous hash over live nodes),
//! and the takeover of calls whose node died or left.
//!
//! Liveness is per node: one heartbeat key with a TTL of `lease`, renewed every `lease / 5`.
//! A node that has not renewed it for `FENCE_AFTER` of the lease stops commanding its calls,
//! so it is silent before any peer can see its lease expire and adopt them.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use pivot_cluster::{CallOwner, rendezvous_rank};

use crate::engine::{Shared, resume};

/// Share of the lease after which a node that could not renew its heartbeat fences itself.
const FENCE_AFTER: f64 = 0.6;
/// Calls of one dead node looked at per takeover round.
const TAKEOVER_BATCH: usize = 10_000;
/// Adoptions in flight at once.
const ADOPT_CONCURRENCY: usize = 256;

/// Cluster timing.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// The node lease: a node silent this long is dead and its calls are adopted.
    pub lease: Duration,
    /// How long a node ranked `n` for a new call waits, times `n`, before claiming it if the
    /// better-ranked nodes have not.
    pub claim_grace: Duration,
    /// Where peers reach this node's API (owner routing).
    pub advertise: String,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            lease: Duration::from_secs(5),
            claim_grace: Duration::from_millis(300),
            advertise: "http://127.0.0.1:8080".to_owned(),
        }
    }
}

/// This node's rank for `call_id` among the live nodes (0 = first); 0 when the live set is not
/// known yet or does not include this node (a lone node claims at once).
pub(crate) fn rank(shared: &Shared, call_id: &str) -> usize {
    let live = shared.live_nodes();
    if live.is_empty() {
        return 0;
    }
    rendezvous_rank(call_id, &live)
        .iter()
        .position(|n| *n == shared.config.node_id)
        .unwrap_or(0)
}

/// Heartbeat, self-fencing and takeover, until the engine stops.
pub(crate) async fn run(shared: Arc<Shared>) {
    let settings = shared.config.cluster.clone();
    let tick = (settings.lease / 5).max(Duration::from_millis(20));
    let mut last_renewal = Instant::now();
    // Nodes seen alive, and when each was first seen dead.
    let mut seen: HashMap<String, Option<Instant>> = HashMap::new();
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if shared.stopped.load(Ordering::Acquire) {
            return;
        }
        let node = shared.config.node_id.clone();
        if !shared.leaving.load(Ordering::Acquire) {
            match shared
                .nodes
                .heartbeat(&node, &settings.advertise, settings.lease)
                .await
            {
                Ok(()) => {
                    last_renewal = Instant::now();
                    if shared.fenced.swap(false, Ordering::AcqRel) {
                        tracing::info!(%node, "lease proven: taking calls");
                        // Calls this node stopped commanding while fenced (or drove before a
                        // restart) are still recorded as its own, so no peer adopts them: it
                        // takes them back itself.
                        match shared.ownership.calls_of_node(&node, TAKEOVER_BATCH).await {
                            Ok(own) => {
                                let orphans = own
                                    .into_iter()
                                    .filter(|c| !shared.has_call(&c.call_id))
                                    .collect();
                                adopt_all(&shared, orphans).await;
                            }
                            Err(error) => {
                                tracing::warn!(%node, %error, "own calls not read after fencing");
                            }
                        }
                    }
                }
                Err(error) => {
                    shared
                        .metrics
                        .cluster_redis_errors
                        .with_label_values(&["heartbeat"])
                        .inc();
                    tracing::warn!(%node, %error, "heartbeat not renewed");
                    if last_renewal.elapsed() >= settings.lease.mul_f64(FENCE_AFTER)
                        && !shared.fenced.swap(true, Ordering::AcqRel)
                    {
                        shared.metrics.cluster_fencing.inc();
                        tracing::error!(%node, "cannot prove the lease: fencing this node's calls");
                        crate::engine::fence_all(&shared);
                    }
                    continue;
                }
            }
        }
        let live = match shared.nodes.live().await {
            Ok(live) => live,
            Err(error) => {
                shared
                    .metrics
                    .cluster_redis_errors
                    .with_label_values(&["live"])
                    .inc();
                tracing::warn!(%error, "live nodes not read");
                continue;
            }
        };
        let live_ids: Vec<String> = live.iter().map(|n| n.id.clone()).collect();
        shared.set_live_nodes(live_ids.clone(), live);
        if shared.fenced.load(Ordering::Acquire) || shared.leaving.load(Ordering::Acquire) {
            continue;
        }
        for id in &live_ids {
            seen.insert(id.clone(), None);
        }
        let now = Instant::now();
        let dead: Vec<(String, Instant)> = seen
            .iter_mut()
            .filter(|(id, _)| !live_ids.contains(id) && **id != node)
            .map(|(id, since)| (id.clone(), *since.get_or_insert(now)))
            .collect();
        for (dead_node, since) in dead {
            let calls = match shared
                .ownership
                .calls_of_node(&dead_node, TAKEOVER_BATCH)
                .await
            {
                Ok(calls) => calls,
                Err(error) => {
                    // TimedOwnership has counted the error.
                    tracing::warn!(node = %dead_node, %error, "calls of a dead node not read");
                    continue;
                }
            };
            if calls.is_empty() {
                seen.remove(&dead_node);
                continue;
            }
            // The best-ranked survivor adopts at once, the next ones only if it has not.
            let mine = calls
                .into_iter()
                .filter(|call| {
                    let position = rendezvous_rank(&call.call_id, &live_ids)
                        .iter()
                        .position(|n| *n == node)
                        .unwrap_or(0);
                    since.elapsed() >= settings.claim_grace * position as u32
                })
                .collect();
            adopt_all(&shared, mine).await;
        }
    }
}

/// Adopts `calls` side by side (each is a few Redis and switch round trips), so a node's
/// thousands of calls resume within the lease, not one after another.
async fn adopt_all(shared: &Arc<Shared>, calls: Vec<CallOwner>) {
    let mut adopting = tokio::task::JoinSet::new();
    for call in calls {
        if adopting.len() >= ADOPT_CONCURRENCY {
            let _ = adopting.join_next().await;
        }
        let shared = Arc::clone(shared);
        adopting.spawn(async move { adopt(&shared, call).await });
    }
    while adopting.join_next().await.is_some() {}
}

async fn adopt(shared: &Arc<Shared>, call: CallOwner) {
    if shared.has_call(&call.call_id) {
        return;
    }
    let node = shared.config.node_id.clone();
    let (lease, checkpoint) = match shared
        .ownership
        .adopt_and_load(&call.call_id, &node, call.epoch)
        .await
    {
        Ok(Some(adopted)) => adopted,
        Ok(None) => return,
        Err(error) => {
            tracing::debug!(call_id = %call.call_id, %error, "not adopted");
            return;
        }
    };
    tracing::info!(call_id = %call.call_id, from = %call.node, epoch = lease.epoch, "adopting call");
    resume(shared, lease, checkpoint, call.released).await;
}
