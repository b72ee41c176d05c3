//! The Redis backend for the shared cases, on real Redis processes from the workspace's test
//! support (a `redis-server` per test on a free port, optionally a Sentinel watching it).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use pivot_cluster::{
    CallflowStore, DebugLimits, DebugStore, Nodes, Ownership, RedisCluster, RedisOptions,
};

use pivot_redis_test::RedisServer;

use crate::cases::{Backend, sleep_ms};

/// The Redis backend for the shared cases: every store it makes is a new [`RedisCluster`]
/// under a fresh key prefix of one server, so stores are as fresh as memory ones.
pub struct RedisBackend {
    pub server: RedisServer,
    prefixes: AtomicUsize,
}

impl RedisBackend {
    pub fn start() -> RedisBackend {
        RedisBackend {
            server: RedisServer::start(),
            prefixes: AtomicUsize::new(0),
        }
    }

    pub fn options(&self) -> RedisOptions {
        RedisOptions {
            key_prefix: format!("t{}", self.prefixes.fetch_add(1, Ordering::SeqCst)),
            ..RedisOptions::default()
        }
    }

    pub async fn cluster(&self, options: RedisOptions) -> RedisCluster {
        RedisCluster::connect(&self.server.url(), options)
            .await
            .unwrap()
    }
}

impl Backend for RedisBackend {
    async fn ownership(
        &self,
        max_calls: usize,
        max_checkpoint_bytes: Option<usize>,
    ) -> Arc<dyn Ownership> {
        let defaults = self.options();
        let options = RedisOptions {
            max_calls,
            max_checkpoint_bytes: max_checkpoint_bytes.unwrap_or(defaults.max_checkpoint_bytes),
            ..defaults
        };
        Arc::new(self.cluster(options).await)
    }

    async fn callflows(
        &self,
        max_callflows: usize,
        max_callflow_bytes: Option<usize>,
    ) -> Arc<dyn CallflowStore> {
        let defaults = self.options();
        let options = RedisOptions {
            max_callflows,
            max_callflow_bytes: max_callflow_bytes.unwrap_or(defaults.max_callflow_bytes),
            ..defaults
        };
        Arc::new(self.cluster(options).await)
    }

    async fn debug(&self, limits: DebugLimits) -> Arc<dyn DebugStore> {
        let options = RedisOptions {
            debug: limits,
            ..self.options()
        };
        Arc::new(self.cluster(options).await)
    }

    async fn nodes(&self, max_nodes: usize) -> Arc<dyn Nodes> {
        let options = RedisOptions {
            max_nodes,
            ..self.options()
        };
        Arc::new(self.cluster(options).await)
    }

    async fn advance(&self, ms: u64) {
        sleep_ms(ms).await;
    }
}
