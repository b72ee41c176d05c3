//! Who drives which call: claims, adoption, fencing epochs, checkpoints and drain (DESIGN §7).
//!
//! A call's record holds its owner node, its epoch and its latest checkpoint. The epoch is the
//! fencing token: it grows by one whenever the call changes hands (claim after a release,
//! adoption), and every write must present the current one.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::{BoxFuture, ClusterError, lock, now_unix_ms};

/// The default bound on one checkpoint's state: an engine's state is a flow position and a
/// few variables, so anything near this is a bug worth surfacing rather than storing.
pub const DEFAULT_MAX_CHECKPOINT_BYTES: usize = 256 * 1024;

/// Call ids, account ids and node names are map keys; bounding them bounds the maps' memory
/// together with the entry counts.
pub const MAX_KEY_BYTES: usize = 256;

/// The right to drive one call, valid while `epoch` is the call's current epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub call_id: String,
    pub node: String,
    pub epoch: u64,
}

/// The last state an owner saved for a call, with the owner and epoch that saved it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub call_id: String,
    pub node: String,
    pub epoch: u64,
    /// Opaque JSON from the engine.
    pub state: String,
    pub updated_unix_ms: u64,
}

/// An adoption's lease and the checkpoint it resumes from (`None`: nothing readable).
pub type Adopted = (Lease, Option<Checkpoint>);

/// A live call's ownership as the API and the adoption sweep see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallOwner {
    pub call_id: String,
    pub node: String,
    pub epoch: u64,
    pub account_id: String,
    /// Handed over by a draining owner: any node may adopt it at once.
    pub released: bool,
}

/// Call ownership shared by the nodes of a cluster.
///
/// Node liveness is not this trait's concern: the caller decides that an owner is gone (its node
/// lease expired) before it calls [`adopt`](Ownership::adopt); the epoch CAS only guarantees
/// that exactly one of several adopters wins.
pub trait Ownership: Send + Sync + std::fmt::Debug + 'static {
    /// Atomically claims an unowned call: creates its record with epoch 1 (or the previous
    /// epoch + 1 if a released record exists), owner = `node`. `Ok(None)` when another node owns
    /// it (not released).
    fn claim<'a>(
        &'a self,
        call_id: &'a str,
        account_id: &'a str,
        node: &'a str,
    ) -> BoxFuture<'a, Result<Option<Lease>, ClusterError>>;

    /// [`claim`](Ownership::claim) with the call's first checkpoint written by the same
    /// operation, so a new call costs one round trip less; the checkpoint is only written when
    /// the claim is won, and a checkpoint refused (too large) refuses the claim. The default
    /// makes the two calls in turn.
    fn claim_with_checkpoint<'a>(
        &'a self,
        call_id: &'a str,
        account_id: &'a str,
        node: &'a str,
        state: String,
    ) -> BoxFuture<'a, Result<Option<Lease>, ClusterError>> {
        Box::pin(async move {
            let Some(lease) = self.claim(call_id, account_id, node).await? else {
                return Ok(None);
            };
            // Both or neither: a claim whose checkpoint is refused is undone.
            if let Err(error) = self.checkpoint(&lease, state).await {
                let _ = self.finish(&lease).await;
                return Err(error);
            }
            Ok(Some(lease))
        })
    }

    /// Takes over a call whose owner is gone or which was released: compare-and-set on
    /// `expected_epoch` (the epoch the caller saw), bumping the epoch. `Ok(None)` if the epoch
    /// moved on (someone else won); `NotFound` if the call ended.
    fn adopt<'a>(
        &'a self,
        call_id: &'a str,
        node: &'a str,
        expected_epoch: u64,
    ) -> BoxFuture<'a, Result<Option<Lease>, ClusterError>>;

    /// [`adopt`](Ownership::adopt), and on success the checkpoint to resume from (as
    /// [`load`](Ownership::load) would read it) in the same operation. The default makes the
    /// two calls in turn.
    fn adopt_and_load<'a>(
        &'a self,
        call_id: &'a str,
        node: &'a str,
        expected_epoch: u64,
    ) -> BoxFuture<'a, Result<Option<Adopted>, ClusterError>> {
        Box::pin(async move {
            let Some(lease) = self.adopt(call_id, node, expected_epoch).await? else {
                return Ok(None);
            };
            let checkpoint = self.load(call_id).await?;
            Ok(Some((lease, checkpoint)))
        })
    }

    /// Writes the call's checkpoint only if `lease.epoch` is still the current epoch (else
    /// `Fenced`). The state's size is bounded (`TooLarge`).
    fn checkpoint<'a>(
        &'a self,
        lease: &'a Lease,
        state: String,
    ) -> BoxFuture<'a, Result<(), ClusterError>>;

    /// The call's latest checkpoint, if it has one.
    fn load<'a>(
        &'a self,
        call_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Checkpoint>, ClusterError>>;

    /// Hands the call over (drain): keeps the checkpoint and marks the call released so a peer
    /// may adopt it at once. `Fenced` if the lease is not current.
    fn release<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), ClusterError>>;

    /// The call ended: forgets its record and checkpoint. `Fenced` if the lease is not current.
    fn finish<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), ClusterError>>;

    fn owner<'a>(
        &'a self,
        call_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<CallOwner>, ClusterError>>;

    /// Live calls (released ones included), optionally only one account's, sorted by call id;
    /// at most `limit`.
    fn calls<'a>(
        &'a self,
        account_id: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<CallOwner>, ClusterError>>;

    /// Live calls owned by `node` (released ones included), sorted by call id; at most `limit`.
    /// What survivors read to find a dead node's calls, without scanning every call.
    fn calls_of_node<'a>(
        &'a self,
        node: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<CallOwner>, ClusterError>>;
}

#[derive(Debug)]
struct Record {
    node: String,
    epoch: u64,
    account_id: String,
    released: bool,
    checkpoint: Option<Saved>,
}

#[derive(Debug)]
struct Saved {
    node: String,
    epoch: u64,
    state: String,
    updated_unix_ms: u64,
}

/// The in-memory [`Ownership`]: one process, so a mutex is the atomicity the Redis backend gets
/// from Lua scripts.
#[derive(Debug)]
pub struct MemoryOwnership {
    calls: Mutex<HashMap<String, Record>>,
    max_calls: usize,
    max_checkpoint_bytes: usize,
}

impl MemoryOwnership {
    /// At most `max_calls` records at once; a claim beyond that is `Full`.
    pub fn new(max_calls: usize) -> MemoryOwnership {
        MemoryOwnership {
            calls: Mutex::new(HashMap::new()),
            max_calls,
            max_checkpoint_bytes: DEFAULT_MAX_CHECKPOINT_BYTES,
        }
    }

    /// Overrides [`DEFAULT_MAX_CHECKPOINT_BYTES`].
    #[must_use]
    pub fn with_max_checkpoint_bytes(mut self, max_checkpoint_bytes: usize) -> MemoryOwnership {
        self.max_checkpoint_bytes = max_checkpoint_bytes;
        self
    }

    fn claim_now(
        &self,
        call_id: &str,
        account_id: &str,
        node: &str,
    ) -> Result<Option<Lease>, ClusterError> {
        check_key("call_id", call_id)?;
        check_key("account_id", account_id)?;
        check_key("node", node)?;
        let mut calls = lock(&self.calls);
        let epoch = match calls.get_mut(call_id) {
            Some(record) if !record.released => return Ok(None),
            Some(record) => {
                // A released call keeps its account and checkpoint: claiming it is a handover,
                // and the new owner resumes from where the drained one stopped.
                record.epoch = record.epoch.saturating_add(1);
                record.node = node.to_owned();
                record.released = false;
                record.epoch
            }
            None => {
                if calls.len() >= self.max_calls {
                    return Err(ClusterError::Full {
                        what: "calls",
                        limit: self.max_calls,
                    });
                }
                calls.insert(
                    call_id.to_owned(),
                    Record {
                        node: node.to_owned(),
                        epoch: 1,
                        account_id: account_id.to_owned(),
                        released: false,
                        checkpoint: None,
                    },
                );
                1
            }
        };
        Ok(Some(Lease {
            call_id: call_id.to_owned(),
            node: node.to_owned(),
            epoch,
        }))
    }

    fn adopt_now(
        &self,
        call_id: &str,
        node: &str,
        expected_epoch: u64,
    ) -> Result<Option<Lease>, ClusterError> {
        check_key("node", node)?;
        let mut calls = lock(&self.calls);
        let Some(record) = calls.get_mut(call_id) else {
            return Err(not_found(call_id));
        };
        if record.epoch != expected_epoch {
            return Ok(None);
        }
        record.epoch = record.epoch.saturating_add(1);
        record.node = node.to_owned();
        record.released = false;
        Ok(Some(Lease {
            call_id: call_id.to_owned(),
            node: node.to_owned(),
            epoch: record.epoch,
        }))
    }

    fn checkpoint_now(&self, lease: &Lease, state: String) -> Result<(), ClusterError> {
        if state.len() > self.max_checkpoint_bytes {
            return Err(ClusterError::TooLarge {
                what: "checkpoint",
                size: state.len(),
                limit: self.max_checkpoint_bytes,
            });
        }
        let mut calls = lock(&self.calls);
        let record = current(&mut calls, lease)?;
        record.checkpoint = Some(Saved {
            node: lease.node.clone(),
            epoch: lease.epoch,
            state,
            updated_unix_ms: now_unix_ms(),
        });
        Ok(())
    }

    fn load_now(&self, call_id: &str) -> Option<Checkpoint> {
        let calls = lock(&self.calls);
        let saved = calls.get(call_id)?.checkpoint.as_ref()?;
        Some(Checkpoint {
            call_id: call_id.to_owned(),
            node: saved.node.clone(),
            epoch: saved.epoch,
            state: saved.state.clone(),
            updated_unix_ms: saved.updated_unix_ms,
        })
    }

    fn release_now(&self, lease: &Lease) -> Result<(), ClusterError> {
        let mut calls = lock(&self.calls);
        // The releasing lease stays current until someone adopts: if the call hangs up during
        // the drain, its old owner can still finish it so nobody adopts a dead call.
        current(&mut calls, lease)?.released = true;
        Ok(())
    }

    fn finish_now(&self, lease: &Lease) -> Result<(), ClusterError> {
        let mut calls = lock(&self.calls);
        current(&mut calls, lease)?;
        calls.remove(&lease.call_id);
        Ok(())
    }

    fn owner_now(&self, call_id: &str) -> Option<CallOwner> {
        lock(&self.calls)
            .get(call_id)
            .map(|record| call_owner(call_id, record))
    }

    fn calls_now(&self, account_id: Option<&str>, limit: usize) -> Vec<CallOwner> {
        self.calls_where(limit, |record| {
            account_id.is_none_or(|a| record.account_id == a)
        })
    }

    fn calls_where(&self, limit: usize, keep: impl Fn(&Record) -> bool) -> Vec<CallOwner> {
        let calls = lock(&self.calls);
        let mut matching: Vec<(&String, &Record)> =
            calls.iter().filter(|(_, record)| keep(record)).collect();
        matching.sort_unstable_by(|a, b| a.0.cmp(b.0));
        matching
            .into_iter()
            .take(limit)
            .map(|(call_id, record)| call_owner(call_id, record))
            .collect()
    }
}

impl Ownership for MemoryOwnership {
    fn claim<'a>(
        &'a self,
        call_id: &'a str,
        account_id: &'a str,
        node: &'a str,
    ) -> BoxFuture<'a, Result<Option<Lease>, ClusterError>> {
        Box::pin(async move { self.claim_now(call_id, account_id, node) })
    }

    fn adopt<'a>(
        &'a self,
        call_id: &'a str,
        node: &'a str,
        expected_epoch: u64,
    ) -> BoxFuture<'a, Result<Option<Lease>, ClusterError>> {
        Box::pin(async move { self.adopt_now(call_id, node, expected_epoch) })
    }

    fn checkpoint<'a>(
        &'a self,
        lease: &'a Lease,
        state: String,
    ) -> BoxFuture<'a, Result<(), ClusterError>> {
        Box::pin(async move { self.checkpoint_now(lease, state) })
    }

    fn load<'a>(
        &'a self,
        call_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Checkpoint>, ClusterError>> {
        Box::pin(async move { Ok(self.load_now(call_id)) })
    }

    fn release<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), ClusterError>> {
        Box::pin(async move { self.release_now(lease) })
    }

    fn finish<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), ClusterError>> {
        Box::pin(async move { self.finish_now(lease) })
    }

    fn owner<'a>(
        &'a self,
        call_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<CallOwner>, ClusterError>> {
        Box::pin(async move { Ok(self.owner_now(call_id)) })
    }

    fn calls<'a>(
        &'a self,
        account_id: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<CallOwner>, ClusterError>> {
        Box::pin(async move { Ok(self.calls_now(account_id, limit)) })
    }

    fn calls_of_node<'a>(
        &'a self,
        node: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<CallOwner>, ClusterError>> {
        Box::pin(async move { Ok(self.calls_where(limit, |record| record.node == node)) })
    }
}

pub(crate) fn check_key(what: &'static str, value: &str) -> Result<(), ClusterError> {
    if value.len() > MAX_KEY_BYTES {
        return Err(ClusterError::TooLarge {
            what,
            size: value.len(),
            limit: MAX_KEY_BYTES,
        });
    }
    Ok(())
}

fn not_found(call_id: &str) -> ClusterError {
    ClusterError::NotFound {
        call_id: call_id.to_owned(),
    }
}

/// The call's record if `lease` holds its current epoch. The epoch alone decides: every change
/// of hands bumps it, so no two holders ever share one.
fn current<'m>(
    calls: &'m mut HashMap<String, Record>,
    lease: &Lease,
) -> Result<&'m mut Record, ClusterError> {
    let record = calls
        .get_mut(&lease.call_id)
        .ok_or_else(|| not_found(&lease.call_id))?;
    if record.epoch != lease.epoch {
        return Err(ClusterError::Fenced {
            call_id: lease.call_id.clone(),
            held_epoch: lease.epoch,
            current_epoch: record.epoch,
        });
    }
    Ok(record)
}

fn call_owner(call_id: &str, record: &Record) -> CallOwner {
    CallOwner {
        call_id: call_id.to_owned(),
        node: record.node.clone(),
        epoch: record.epoch,
        account_id: record.account_id.clone(),
        released: record.released,
    }
}
