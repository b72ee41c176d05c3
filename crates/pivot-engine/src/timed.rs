//! Ownership operations timed and counted: wraps whichever backend the node uses, so Redis
//! latency and errors show in `pivot_cluster_op_duration_seconds{op}` and
//! `pivot_cluster_redis_errors_total{op}` without the backend knowing about metrics.

use std::sync::Arc;
use std::time::Instant;

use pivot_cluster::{Adopted, BoxFuture, CallOwner, Checkpoint, ClusterError, Lease, Ownership};

use crate::metrics::Metrics;

#[derive(Debug)]
pub(crate) struct TimedOwnership {
    inner: Arc<dyn Ownership>,
    metrics: Metrics,
}

impl TimedOwnership {
    pub(crate) fn wrap(inner: Arc<dyn Ownership>, metrics: Metrics) -> Arc<dyn Ownership> {
        Arc::new(TimedOwnership { inner, metrics })
    }

    fn time<'a, T: Send + 'a>(
        &'a self,
        op: &'static str,
        future: BoxFuture<'a, Result<T, ClusterError>>,
    ) -> BoxFuture<'a, Result<T, ClusterError>> {
        Box::pin(async move {
            let started = Instant::now();
            let result = future.await;
            self.metrics
                .cluster_op_duration
                .with_label_values(&[op])
                .observe(started.elapsed().as_secs_f64());
            // A fenced write is the protocol working, not the backend failing.
            if let Err(ClusterError::Unavailable(_)) = &result {
                self.metrics
                    .cluster_redis_errors
                    .with_label_values(&[op])
                    .inc();
            }
            result
        })
    }
}

impl Ownership for TimedOwnership {
    fn claim<'a>(
        &'a self,
        call_id: &'a str,
        account_id: &'a str,
        node: &'a str,
    ) -> BoxFuture<'a, Result<Option<Lease>, ClusterError>> {
        self.time("claim", self.inner.claim(call_id, account_id, node))
    }

    fn claim_with_checkpoint<'a>(
        &'a self,
        call_id: &'a str,
        account_id: &'a str,
        node: &'a str,
        state: String,
    ) -> BoxFuture<'a, Result<Option<Lease>, ClusterError>> {
        self.time(
            "claim",
            self.inner
                .claim_with_checkpoint(call_id, account_id, node, state),
        )
    }

    fn adopt<'a>(
        &'a self,
        call_id: &'a str,
        node: &'a str,
        expected_epoch: u64,
    ) -> BoxFuture<'a, Result<Option<Lease>, ClusterError>> {
        self.time("adopt", self.inner.adopt(call_id, node, expected_epoch))
    }

    fn adopt_and_load<'a>(
        &'a self,
        call_id: &'a str,
        node: &'a str,
        expected_epoch: u64,
    ) -> BoxFuture<'a, Result<Option<Adopted>, ClusterError>> {
        self.time(
            "adopt",
            self.inner.adopt_and_load(call_id, node, expected_epoch),
        )
    }

    fn checkpoint<'a>(
        &'a self,
        lease: &'a Lease,
        state: String,
    ) -> BoxFuture<'a, Result<(), ClusterError>> {
        self.time("checkpoint", self.inner.checkpoint(lease, state))
    }

    fn load<'a>(
        &'a self,
        call_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Checkpoint>, ClusterError>> {
        self.time("load", self.inner.load(call_id))
    }

    fn release<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), ClusterError>> {
        self.time("release", self.inner.release(lease))
    }

    fn finish<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), ClusterError>> {
        self.time("finish", self.inner.finish(lease))
    }

    fn owner<'a>(
        &'a self,
        call_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<CallOwner>, ClusterError>> {
        self.time("owner", self.inner.owner(call_id))
    }

    fn calls<'a>(
        &'a self,
        account_id: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<CallOwner>, ClusterError>> {
        self.time("calls", self.inner.calls(account_id, limit))
    }

    fn calls_of_node<'a>(
        &'a self,
        node: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<CallOwner>, ClusterError>> {
        self.time("calls_of_node", self.inner.calls_of_node(node, limit))
    }
}
