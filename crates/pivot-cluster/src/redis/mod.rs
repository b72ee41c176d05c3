//! The Redis backend (DESIGN §7): one [`RedisCluster`] implements [`Ownership`](crate::Ownership),
//! [`Nodes`](crate::Nodes), [`CallflowStore`](crate::CallflowStore) and
//! [`DebugStore`](crate::DebugStore) over a standalone or Sentinel-managed Redis, shared by every
//! node of the cluster.
//!
//! Every state change is one Lua script (atomic on the server, compare-and-set on the call's
//! epoch where ownership is concerned); every operation is bounded by
//! [`RedisOptions::op_timeout`] and fails as `Unavailable` naming the operation, so a caller can
//! tell "Redis did not answer" from "you lost the call". Nothing is counted here: the engine
//! counts claims, takeovers and errors from these results.
//!
//! Key layout, all under `<key_prefix>:` (`P:` below):
//! - `P:call:<call>` hash `node epoch account released [state state_node state_epoch updated]`;
//!   `P:calls`, `P:account-calls:<account>`, `P:node-calls:<node>` zsets of call ids (score 0,
//!   so ordered by id), which `calls` and `calls_of_node` read without SCAN;
//! - `P:node:<node>` the advertised URL with a PX TTL (the node lease), `P:nodes` zset node →
//!   lease expiry (server ms), pruned on read;
//! - `P:callflows:<account>` hash id → JSON, `P:callflow-numbers:<account>` hash id → its
//!   numbers, `P:numbers` hash number → `[account, id]`, `P:callflow-index` set of
//!   `[account, id]` (the count), `P:patterns` hash `[account, id]` → patterns and
//!   `P:patterns-version` (bumped on every change, so nodes recompile only when it moves);
//! - `P:debug-calls` zset (scored by last append), `P:debug-members`, and per call
//!   `P:debug-summary:<ck>` hash and `P:debug-entries:<ck>` list, both with PEXPIRE =
//!   retention, and `P:debug-index:<account>` zset (newest-first paging); see the scripts.
//!
//! # URLs
//!
//! - `redis://[[username]:password@]host[:port][/db]`, or `rediss://…` for TLS (system roots):
//!   one server, parsed by the redis crate (so its query options, e.g. `?protocol=resp3`,
//!   apply);
//! - `redis+sentinel://[[username]:password@]host[:port][,host[:port]…]/<master-name>[/<db>]`
//!   `[?sentinel_username=…&sentinel_password=…]`: the master the Sentinels name (port 26379 by
//!   default, IPv6 hosts in brackets, parts percent-decoded). The credentials before `@` and the
//!   db are the master's; the Sentinels' own, if they need any, go in the query. Sentinels and
//!   master are reached over plain TCP. After an error that suggests the master moved (I/O,
//!   timeout, READONLY, MASTERDOWN, LOADING) the next operation asks the Sentinels again.

mod backend;
mod callflows;
mod debug;
mod nodes;
mod ownership;
mod scripts;
mod url;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::RedisResult;
use redis::aio::ConnectionManager;

use crate::callflows::DEFAULT_MAX_CALLFLOW_BYTES;
use crate::nodes::DEFAULT_MAX_NODES;
use crate::ownership::DEFAULT_MAX_CHECKPOINT_BYTES;
use crate::{ClusterError, DebugLimits, StoreError};
use backend::Backend;
use scripts::Scripts;

/// How to use the Redis behind a [`RedisCluster`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// Every key starts with `<key_prefix>:`, so several clusters (or tests) can share a server.
    pub key_prefix: String,
    /// The node lease the engine renews with [`Nodes::heartbeat`](crate::Nodes::heartbeat).
    /// An operation must be able to fail before a lease runs out, so `op_timeout` must be
    /// shorter.
    pub lease: Duration,
    /// The bound on every operation, connecting (and asking the Sentinels) included.
    pub op_timeout: Duration,
    /// Live calls in the whole cluster; a claim beyond is `Full`.
    pub max_calls: usize,
    pub max_checkpoint_bytes: usize,
    pub max_nodes: usize,
    /// Callflows of all accounts together.
    pub max_callflows: usize,
    pub max_callflow_bytes: usize,
    pub debug: DebugLimits,
}

impl Default for RedisOptions {
    fn default() -> RedisOptions {
        RedisOptions {
            key_prefix: "pivot".to_owned(),
            lease: Duration::from_secs(5),
            op_timeout: Duration::from_secs(1),
            max_calls: 100_000,
            max_checkpoint_bytes: DEFAULT_MAX_CHECKPOINT_BYTES,
            max_nodes: DEFAULT_MAX_NODES,
            max_callflows: 100_000,
            max_callflow_bytes: DEFAULT_MAX_CALLFLOW_BYTES,
            debug: DebugLimits::default(),
        }
    }
}

/// The Redis backend of every cluster trait; cheap to clone (clones share one connection).
/// Put it behind each trait object: `Arc::new(cluster.clone()) as Arc<dyn Ownership>`.
#[derive(Clone)]
pub struct RedisCluster {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Backend,
    options: RedisOptions,
    keys: Keys,
    scripts: Scripts,
    patterns: Mutex<callflows::PatternCache>,
}

impl std::fmt::Debug for RedisCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCluster")
            .field("backend", &self.inner.backend)
            .field("key_prefix", &self.inner.options.key_prefix)
            .finish_non_exhaustive()
    }
}

impl RedisCluster {
    /// Connects and checks that the server answers (PING within `op_timeout`). `url` is one of
    /// the [forms above](self#urls): `redis://`, `rediss://` or `redis+sentinel://`.
    /// `Config` for an unusable URL or options, `Unavailable` if Redis does not answer.
    pub async fn connect(url: &str, options: RedisOptions) -> Result<RedisCluster, ClusterError> {
        let cluster = RedisCluster::connect_lazy(url, options).await?;
        cluster.ping().await?;
        Ok(cluster)
    }

    /// As [`connect`](Self::connect) without waiting for Redis: the first operation connects.
    /// For a node that must start (and report itself unready) while Redis is down.
    pub async fn connect_lazy(
        url: &str,
        options: RedisOptions,
    ) -> Result<RedisCluster, ClusterError> {
        if options.op_timeout.is_zero() || options.op_timeout >= options.lease {
            return Err(ClusterError::Config(format!(
                "op_timeout ({:?}) must be positive and shorter than the lease ({:?})",
                options.op_timeout, options.lease
            )));
        }
        let backend = if url.starts_with(url::SENTINEL_SCHEME) {
            let parsed = url::parse_sentinel(url)
                .map_err(|e| ClusterError::Config(format!("redis url: {e}")))?;
            Backend::sentinel(parsed, options.op_timeout)
        } else if url.starts_with("redis://") || url.starts_with("rediss://") {
            if url.starts_with("rediss://") {
                // The workspace builds rustls with ring only; installing it explicitly keeps
                // TLS working should another dependency ever enable a second provider. An
                // error means a provider is installed already, which is just as good.
                let _ = rustls::crypto::ring::default_provider().install_default();
            }
            redis::Client::open(url).and_then(|c| Backend::standalone(c, options.op_timeout))
        } else {
            return Err(ClusterError::Config(
                "redis url must start with redis://, rediss:// or redis+sentinel://".to_owned(),
            ));
        }
        .map_err(|e| ClusterError::Config(format!("redis url: {e}")))?;
        Ok(RedisCluster {
            inner: Arc::new(Inner {
                backend,
                keys: Keys::new(&options.key_prefix),
                options,
                scripts: Scripts::new(),
                patterns: Mutex::new(callflows::PatternCache::default()),
            }),
        })
    }

    pub fn options(&self) -> &RedisOptions {
        &self.inner.options
    }

    /// One round trip: what readiness checks ask.
    pub async fn ping(&self) -> Result<(), ClusterError> {
        self.run("ping", |mut con| async move {
            redis::cmd("PING").query_async::<String>(&mut con).await
        })
        .await
        .map(|_| ())
        .map_err(ClusterError::from)
    }

    /// Runs one operation on the current connection within `op_timeout`. The closure gets its
    /// own handle (a clone of the multiplexed connection), so concurrent operations pipeline.
    async fn run<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, Unavailable>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = RedisResult<T>>,
    {
        let backend = &self.inner.backend;
        let timeout = self.inner.options.op_timeout;
        let attempt = async {
            let handle = backend.handle().await.map_err(|e| (None, e))?;
            let generation = handle.generation();
            f(handle.manager).await.map_err(|e| (Some(generation), e))
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err((generation, error))) => {
                if let Some(generation) = generation {
                    backend.failed(generation, &error);
                }
                Err(Unavailable(format!("{op}: {error}")))
            }
            Err(_) => {
                backend.timed_out();
                Err(Unavailable(format!("{op}: no answer within {timeout:?}")))
            }
        }
    }
}

/// Redis did not answer (or answered nonsense); the message names the operation.
#[derive(Debug)]
pub(crate) struct Unavailable(String);

impl From<Unavailable> for ClusterError {
    fn from(e: Unavailable) -> ClusterError {
        ClusterError::Unavailable(e.0)
    }
}

impl From<Unavailable> for StoreError {
    fn from(e: Unavailable) -> StoreError {
        StoreError::Unavailable(e.0)
    }
}

/// A field that Redis holds but that does not parse: only another program (or a bug) writes
/// such data, and refusing the call is safer than guessing.
fn corrupt(op: &'static str, what: impl std::fmt::Display) -> Unavailable {
    Unavailable(format!("{op}: corrupt data in redis: {what}"))
}

fn parse_u64(op: &'static str, field: &str, value: &str) -> Result<u64, Unavailable> {
    value
        .parse()
        .map_err(|_| corrupt(op, format!("{field} = {value:?}")))
}

/// Key names, all under the prefix.
#[derive(Debug)]
struct Keys {
    /// `<key_prefix>:`
    p: String,
}

impl Keys {
    fn new(prefix: &str) -> Keys {
        Keys {
            p: format!("{prefix}:"),
        }
    }

    fn call(&self, call_id: &str) -> String {
        format!("{}call:{call_id}", self.p)
    }
    fn call_prefix(&self) -> String {
        format!("{}call:", self.p)
    }
    fn calls(&self) -> String {
        format!("{}calls", self.p)
    }
    fn account_calls(&self, account_id: &str) -> String {
        format!("{}account-calls:{account_id}", self.p)
    }
    fn account_calls_prefix(&self) -> String {
        format!("{}account-calls:", self.p)
    }
    fn node_calls(&self, node: &str) -> String {
        format!("{}node-calls:{node}", self.p)
    }
    fn node_calls_prefix(&self) -> String {
        format!("{}node-calls:", self.p)
    }
    fn node(&self, node: &str) -> String {
        format!("{}node:{node}", self.p)
    }
    fn node_prefix(&self) -> String {
        format!("{}node:", self.p)
    }
    fn nodes(&self) -> String {
        format!("{}nodes", self.p)
    }
    fn callflows(&self, account_id: &str) -> String {
        format!("{}callflows:{account_id}", self.p)
    }
    fn callflows_prefix(&self) -> String {
        format!("{}callflows:", self.p)
    }
    fn callflow_numbers(&self, account_id: &str) -> String {
        format!("{}callflow-numbers:{account_id}", self.p)
    }
    fn numbers(&self) -> String {
        format!("{}numbers", self.p)
    }
    fn callflow_index(&self) -> String {
        format!("{}callflow-index", self.p)
    }
    fn patterns(&self) -> String {
        format!("{}patterns", self.p)
    }
    fn patterns_version(&self) -> String {
        format!("{}patterns-version", self.p)
    }
    fn debug_calls(&self) -> String {
        format!("{}debug-calls", self.p)
    }
    fn debug_members(&self) -> String {
        format!("{}debug-members", self.p)
    }
    /// `<len>:<account>:`: the length keeps ("a:b", "c") and ("a", "b:c") apart.
    fn debug_account_part(account_id: &str) -> String {
        format!("{}:{account_id}:", account_id.len())
    }
    fn debug_summary(&self, ck: &str) -> String {
        format!("{}debug-summary:{ck}", self.p)
    }
    fn debug_entries(&self, ck: &str) -> String {
        format!("{}debug-entries:{ck}", self.p)
    }
    fn debug_index(&self, account_id: &str) -> String {
        format!("{}debug-index:{account_id}", self.p)
    }
}
