//! [`Ownership`] on Redis: the same contract as [`MemoryOwnership`](crate::MemoryOwnership),
//! every change one compare-and-set script.

use redis::aio::ConnectionManager;

use super::{RedisCluster, corrupt, parse_u64};
use crate::ownership::{MAX_KEY_BYTES, check_key};
use crate::{
    Adopted, BoxFuture, CallOwner, Checkpoint, ClusterError, Lease, Ownership, now_unix_ms,
};

const WON: i64 = 1;
const FULL: i64 = -1;
const NOT_FOUND: i64 = -2;
/// The most calls one `calls`/`calls_of_node` answer carries, whatever the caller asks.
const MAX_LIST: usize = 1 << 20;

fn not_found(call_id: &str) -> ClusterError {
    ClusterError::NotFound {
        call_id: call_id.to_owned(),
    }
}

/// Maps a fenced write's `{status, epoch}` answer.
fn fenced_write(lease: &Lease, (status, current): (i64, u64)) -> Result<(), ClusterError> {
    match status {
        WON => Ok(()),
        NOT_FOUND => Err(not_found(&lease.call_id)),
        _ => Err(ClusterError::Fenced {
            call_id: lease.call_id.clone(),
            held_epoch: lease.epoch,
            current_epoch: current,
        }),
    }
}

/// A call id no claim accepted cannot name a record; answering locally keeps oversized input
/// away from Redis key names.
fn unknown(call_id: &str) -> bool {
    call_id.len() > MAX_KEY_BYTES
}

impl RedisCluster {
    /// A claim, and with `state` the call's first checkpoint in the same script.
    async fn claim_now(
        &self,
        call_id: &str,
        account_id: &str,
        node: &str,
        state: Option<&str>,
    ) -> Result<Option<Lease>, ClusterError> {
        check_key("call_id", call_id)?;
        check_key("account_id", account_id)?;
        check_key("node", node)?;
        if let Some(state) = state {
            self.check_checkpoint_size(state)?;
        }
        let keys = &self.inner.keys;
        let max_calls = self.inner.options.max_calls;
        let (status, epoch): (i64, u64) = self
            .run("claim", |mut con| async move {
                let mut invocation = self.inner.scripts.claim.key(keys.call(call_id));
                invocation
                    .key(keys.calls())
                    .key(keys.account_calls(account_id))
                    .key(keys.node_calls(node))
                    .arg(call_id)
                    .arg(account_id)
                    .arg(node)
                    .arg(max_calls)
                    .arg(keys.node_calls_prefix());
                if let Some(state) = state {
                    invocation.arg(state).arg(now_unix_ms());
                }
                invocation.invoke_async(&mut con).await
            })
            .await?;
        match status {
            WON => Ok(Some(Lease {
                call_id: call_id.to_owned(),
                node: node.to_owned(),
                epoch,
            })),
            FULL => Err(ClusterError::Full {
                what: "calls",
                limit: max_calls,
            }),
            _ => Ok(None),
        }
    }

    /// An adoption, and the checkpoint it resumes from, in one script.
    async fn adopt_now(
        &self,
        call_id: &str,
        node: &str,
        expected_epoch: u64,
    ) -> Result<Option<Adopted>, ClusterError> {
        check_key("node", node)?;
        if unknown(call_id) {
            return Err(not_found(call_id));
        }
        let keys = &self.inner.keys;
        type Reply = (
            i64,
            u64,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let (status, epoch, state, state_node, state_epoch, updated): Reply = self
            .run("adopt", |mut con| async move {
                self.inner
                    .scripts
                    .adopt
                    .key(keys.call(call_id))
                    .key(keys.node_calls(node))
                    .arg(call_id)
                    .arg(node)
                    .arg(expected_epoch)
                    .arg(keys.node_calls_prefix())
                    .invoke_async(&mut con)
                    .await
            })
            .await?;
        match status {
            WON => {
                let lease = Lease {
                    call_id: call_id.to_owned(),
                    node: node.to_owned(),
                    epoch,
                };
                let checkpoint = match (state, state_node, state_epoch, updated) {
                    (Some(state), Some(node), Some(epoch), Some(updated)) => Some(Checkpoint {
                        call_id: call_id.to_owned(),
                        node,
                        epoch: parse_u64("adopt", "state_epoch", &epoch)?,
                        state,
                        updated_unix_ms: parse_u64("adopt", "updated", &updated)?,
                    }),
                    _ => None,
                };
                Ok(Some((lease, checkpoint)))
            }
            NOT_FOUND => Err(not_found(call_id)),
            _ => Ok(None),
        }
    }

    fn check_checkpoint_size(&self, state: &str) -> Result<(), ClusterError> {
        let limit = self.inner.options.max_checkpoint_bytes;
        if state.len() > limit {
            return Err(ClusterError::TooLarge {
                what: "checkpoint",
                size: state.len(),
                limit,
            });
        }
        Ok(())
    }

    async fn checkpoint_now(&self, lease: &Lease, state: String) -> Result<(), ClusterError> {
        self.check_checkpoint_size(&state)?;
        if unknown(&lease.call_id) {
            return Err(not_found(&lease.call_id));
        }
        let key = self.inner.keys.call(&lease.call_id);
        let state = &state;
        let answer = self
            .run("checkpoint", |mut con| async move {
                self.inner
                    .scripts
                    .checkpoint
                    .key(key)
                    .arg(lease.epoch)
                    .arg(&lease.node)
                    .arg(state)
                    .arg(now_unix_ms())
                    .invoke_async(&mut con)
                    .await
            })
            .await?;
        fenced_write(lease, answer)
    }

    async fn release_now(&self, lease: &Lease) -> Result<(), ClusterError> {
        if unknown(&lease.call_id) {
            return Err(not_found(&lease.call_id));
        }
        let key = self.inner.keys.call(&lease.call_id);
        let answer = self
            .run("release", |mut con| async move {
                self.inner
                    .scripts
                    .release
                    .key(key)
                    .arg(lease.epoch)
                    .invoke_async(&mut con)
                    .await
            })
            .await?;
        fenced_write(lease, answer)
    }

    async fn finish_now(&self, lease: &Lease) -> Result<(), ClusterError> {
        if unknown(&lease.call_id) {
            return Err(not_found(&lease.call_id));
        }
        let keys = &self.inner.keys;
        let answer = self
            .run("finish", |mut con| async move {
                self.inner
                    .scripts
                    .finish
                    .key(keys.call(&lease.call_id))
                    .key(keys.calls())
                    .arg(lease.epoch)
                    .arg(&lease.call_id)
                    .arg(keys.account_calls_prefix())
                    .arg(keys.node_calls_prefix())
                    .invoke_async(&mut con)
                    .await
            })
            .await?;
        fenced_write(lease, answer)
    }

    async fn load_now(&self, call_id: &str) -> Result<Option<Checkpoint>, ClusterError> {
        if unknown(call_id) {
            return Ok(None);
        }
        let key = self.inner.keys.call(call_id);
        let fields: Vec<Option<String>> = self
            .run("load", |mut con| async move {
                hmget(
                    &mut con,
                    key,
                    &["state", "state_node", "state_epoch", "updated"],
                )
                .await
            })
            .await?;
        let [Some(state), Some(node), Some(epoch), Some(updated)] =
            <[Option<String>; 4]>::try_from(fields).map_err(|_| corrupt("load", "HMGET"))?
        else {
            return Ok(None);
        };
        Ok(Some(Checkpoint {
            call_id: call_id.to_owned(),
            node,
            epoch: parse_u64("load", "state_epoch", &epoch)?,
            state,
            updated_unix_ms: parse_u64("load", "updated", &updated)?,
        }))
    }

    async fn owner_now(&self, call_id: &str) -> Result<Option<CallOwner>, ClusterError> {
        if unknown(call_id) {
            return Ok(None);
        }
        let key = self.inner.keys.call(call_id);
        let fields: Vec<Option<String>> = self
            .run("owner", |mut con| async move {
                hmget(&mut con, key, &["node", "epoch", "account", "released"]).await
            })
            .await?;
        let [Some(node), Some(epoch), Some(account_id), released] =
            <[Option<String>; 4]>::try_from(fields).map_err(|_| corrupt("owner", "HMGET"))?
        else {
            return Ok(None);
        };
        Ok(Some(CallOwner {
            call_id: call_id.to_owned(),
            node,
            epoch: parse_u64("owner", "epoch", &epoch)?,
            account_id,
            released: released.as_deref() == Some("1"),
        }))
    }

    /// The calls an index zset names, by id, at most `limit`.
    async fn calls_in(
        &self,
        op: &'static str,
        index: String,
        limit: usize,
    ) -> Result<Vec<CallOwner>, ClusterError> {
        // There are never more than max_calls records; the cap also keeps the count a small
        // integer for Lua, whose numbers are doubles.
        let limit = limit.min(self.inner.options.max_calls).min(MAX_LIST);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let call_prefix = self.inner.keys.call_prefix();
        let flat: Vec<String> = self
            .run(op, |mut con| async move {
                self.inner
                    .scripts
                    .calls
                    .key(index)
                    .arg(limit)
                    .arg(call_prefix)
                    .invoke_async(&mut con)
                    .await
            })
            .await?;
        flat.chunks(5)
            .map(|row| match row {
                [call_id, node, epoch, account_id, released] => Ok(CallOwner {
                    call_id: call_id.clone(),
                    node: node.clone(),
                    epoch: parse_u64(op, "epoch", epoch)?,
                    account_id: account_id.clone(),
                    released: released == "1",
                }),
                _ => Err(corrupt(op, "a short row").into()),
            })
            .collect()
    }
}

async fn hmget(
    con: &mut ConnectionManager,
    key: String,
    fields: &[&str],
) -> redis::RedisResult<Vec<Option<String>>> {
    redis::cmd("HMGET")
        .arg(key)
        .arg(fields)
        .query_async(con)
        .await
}

impl Ownership for RedisCluster {
    fn claim<'a>(
        &'a self,
        call_id: &'a str,
        account_id: &'a str,
        node: &'a str,
    ) -> BoxFuture<'a, Result<Option<Lease>, ClusterError>> {
        Box::pin(self.claim_now(call_id, account_id, node, None))
    }

    fn claim_with_checkpoint<'a>(
        &'a self,
        call_id: &'a str,
        account_id: &'a str,
        node: &'a str,
        state: String,
    ) -> BoxFuture<'a, Result<Option<Lease>, ClusterError>> {
        Box::pin(async move {
            self.claim_now(call_id, account_id, node, Some(&state))
                .await
        })
    }

    fn adopt<'a>(
        &'a self,
        call_id: &'a str,
        node: &'a str,
        expected_epoch: u64,
    ) -> BoxFuture<'a, Result<Option<Lease>, ClusterError>> {
        Box::pin(async move {
            let adopted = self.adopt_now(call_id, node, expected_epoch).await?;
            Ok(adopted.map(|(lease, _)| lease))
        })
    }

    fn adopt_and_load<'a>(
        &'a self,
        call_id: &'a str,
        node: &'a str,
        expected_epoch: u64,
    ) -> BoxFuture<'a, Result<Option<Adopted>, ClusterError>> {
        Box::pin(self.adopt_now(call_id, node, expected_epoch))
    }

    fn checkpoint<'a>(
        &'a self,
        lease: &'a Lease,
        state: String,
    ) -> BoxFuture<'a, Result<(), ClusterError>> {
        Box::pin(self.checkpoint_now(lease, state))
    }

    fn load<'a>(
        &'a self,
        call_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Checkpoint>, ClusterError>> {
        Box::pin(self.load_now(call_id))
    }

    fn release<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), ClusterError>> {
        Box::pin(self.release_now(lease))
    }

    fn finish<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), ClusterError>> {
        Box::pin(self.finish_now(lease))
    }

    fn owner<'a>(
        &'a self,
        call_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<CallOwner>, ClusterError>> {
        Box::pin(self.owner_now(call_id))
    }

    fn calls<'a>(
        &'a self,
        account_id: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<CallOwner>, ClusterError>> {
        Box::pin(async move {
            let index = match account_id {
                Some(account) if unknown(account) => return Ok(Vec::new()),
                Some(account) => self.inner.keys.account_calls(account),
                None => self.inner.keys.calls(),
            };
            self.calls_in("calls", index, limit).await
        })
    }

    fn calls_of_node<'a>(
        &'a self,
        node: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<CallOwner>, ClusterError>> {
        Box::pin(async move {
            if unknown(node) {
                return Ok(Vec::new());
            }
            let index = self.inner.keys.node_calls(node);
            self.calls_in("calls_of_node", index, limit).await
        })
    }
}
