//! The metrics of DESIGN §9, in one registry per process (never the global default, so tests can
//! run many engines in one process). Labels are closed sets — never a call id, URL or account.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use pivot_webhook::FailureCause;

/// Webhook latency buckets: customer servers are slow, and timeouts reach 30 s.
const WEBHOOK_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0,
];
/// Lease operations: a Redis round trip, 0.5 ms … 250 ms (and beyond: a struggling Redis).
const CLUSTER_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];
/// Setup (park → first command) is mostly one webhook round trip.
const SETUP_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Every metric the engine and the binary update. Cheap to clone (the prometheus handles are
/// reference counted).
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    pub webhook_duration: HistogramVec,
    pub webhook_failures: IntCounterVec,
    pub calls_active: IntGauge,
    pub calls_total: IntCounterVec,
    pub call_setup: Histogram,
    pub flow_steps: IntCounterVec,
    pub switch_commands: IntCounterVec,
    pub switch_connected: IntGaugeVec,
    pub cluster_claims: IntCounterVec,
    pub cluster_takeovers: IntCounter,
    pub cluster_handovers: IntCounter,
    pub cluster_fencing: IntCounter,
    pub cluster_redis_errors: IntCounterVec,
    pub cluster_op_duration: HistogramVec,
    pub cdr_posts: IntCounterVec,
    pub actor_restarts: IntCounter,
    pub stalled_steps: IntCounterVec,
    pub loops_cut: IntCounter,
    pub mailbox_overflows: IntCounter,
    pub debug_entries_dropped: IntCounter,
    pub api_requests: IntCounterVec,
}

/// A metric could not be registered: only possible when two definitions collide, a programming
/// error the tests catch.
#[derive(Debug, thiserror::Error)]
#[error("cannot register metric: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

/// The `op` labels of `pivot_cluster_op_duration_seconds` and
/// `pivot_cluster_redis_errors_total` for the ownership calls [`crate::timed`] times.
pub const OWNERSHIP_OPS: &[&str] = &[
    "claim",
    "adopt",
    "checkpoint",
    "load",
    "release",
    "finish",
    "owner",
    "calls",
    "calls_of_node",
];
/// The further `op` labels of `pivot_cluster_redis_errors_total`: the node registry calls of
/// [`crate::cluster`].
pub const NODE_OPS: &[&str] = &["heartbeat", "live"];

impl Metrics {
    pub fn new() -> Result<Metrics, MetricsError> {
        let registry = Registry::new();
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let metric = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(metric.clone()))?;
            Ok::<_, prometheus::Error>(metric)
        };
        let counter = |name: &str, help: &str| {
            let metric = IntCounter::new(name, help)?;
            registry.register(Box::new(metric.clone()))?;
            Ok::<_, prometheus::Error>(metric)
        };
        let webhook_duration = HistogramVec::new(
            HistogramOpts::new(
                "pivot_webhook_request_duration_seconds",
                "Duration of pivot requests to customer web servers, redirects included.",
            )
            .buckets(WEBHOOK_BUCKETS.to_vec()),
            &["format", "method", "outcome"],
        )?;
        registry.register(Box::new(webhook_duration.clone()))?;
        let cluster_op_duration = HistogramVec::new(
            HistogramOpts::new(
                "pivot_cluster_op_duration_seconds",
                "Duration of call-ownership operations on the cluster backend (Redis), by operation.",
            )
            .buckets(CLUSTER_BUCKETS.to_vec()),
            &["op"],
        )?;
        registry.register(Box::new(cluster_op_duration.clone()))?;
        let call_setup = Histogram::with_opts(
            HistogramOpts::new(
                "pivot_call_setup_seconds",
                "Time from a call's park to its first switch command.",
            )
            .buckets(SETUP_BUCKETS.to_vec()),
        )?;
        registry.register(Box::new(call_setup.clone()))?;
        let calls_active = IntGauge::new("pivot_calls_active", "Calls driven by this node now.")?;
        registry.register(Box::new(calls_active.clone()))?;
        let switch_connected = IntGaugeVec::new(
            Opts::new(
                "pivot_switch_connected",
                "1 while the event socket of a switch is connected.",
            ),
            &["switch"],
        )?;
        registry.register(Box::new(switch_connected.clone()))?;
        let build_info = IntGaugeVec::new(
            Opts::new("pivot_build_info", "The running pivot version."),
            &["version"],
        )?;
        registry.register(Box::new(build_info.clone()))?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);

        let metrics = Metrics {
            webhook_duration,
            webhook_failures: counter_vec(
                "pivot_webhook_failures_total",
                "Failed pivot requests by cause.",
                &["cause"],
            )?,
            calls_active,
            calls_total: counter_vec(
                "pivot_calls_total",
                "Calls ended, by how they ended.",
                &["result"],
            )?,
            call_setup,
            flow_steps: counter_vec(
                "pivot_flow_steps_total",
                "Flow steps executed, by module.",
                &["module"],
            )?,
            switch_commands: counter_vec(
                "pivot_switch_commands_total",
                "Switch commands by dialplan application and outcome.",
                &["app", "outcome"],
            )?,
            switch_connected,
            cluster_claims: counter_vec(
                "pivot_cluster_claims_total",
                "Call ownership claims by result.",
                &["result"],
            )?,
            cluster_takeovers: counter(
                "pivot_cluster_takeovers_total",
                "Calls this node adopted and resumed from their checkpoint because the node \
                 driving them died, was cut off from Redis, or is this node before it fenced \
                 itself.",
            )?,
            cluster_handovers: counter(
                "pivot_cluster_handovers_total",
                "Calls this node adopted from a draining peer that handed them over (rollouts).",
            )?,
            cluster_fencing: counter(
                "pivot_cluster_fencing_total",
                "Times this node fenced itself: its lease could not be proven, so it stopped \
                 commanding its calls before a peer could adopt them.",
            )?,
            cluster_op_duration,
            cluster_redis_errors: counter_vec(
                "pivot_cluster_redis_errors_total",
                "Errors from the cluster backend by operation.",
                &["op"],
            )?,
            cdr_posts: counter_vec(
                "pivot_cdr_posts_total",
                "End-of-call records posted to cdr_url, by outcome.",
                &["outcome"],
            )?,
            actor_restarts: counter(
                "pivot_engine_actor_restarts_total",
                "Call actors restarted from their checkpoint after a panic.",
            )?,
            stalled_steps: counter_vec(
                "pivot_engine_stalled_steps_total",
                "Steps that missed their deadline and took the failure path, by app.",
                &["app"],
            )?,
            loops_cut: counter(
                "pivot_flow_request_loops_cut_total",
                "Calls hung up for requesting documents in a loop without playing anything.",
            )?,
            mailbox_overflows: counter(
                "pivot_engine_mailbox_overflows_total",
                "Switch events that found a call's mailbox full.",
            )?,
            debug_entries_dropped: counter(
                "pivot_debug_entries_dropped_total",
                "Debug log entries dropped by the per-call bound.",
            )?,
            api_requests: counter_vec(
                "pivot_api_requests_total",
                "HTTP API requests by route pattern and status class.",
                &["route", "status"],
            )?,
            registry,
        };
        // Zero series for the closed label sets, so dashboards and alerts see them from start.
        for cause in FailureCause::ALL {
            metrics
                .webhook_failures
                .with_label_values(&[cause.as_str()]);
        }
        for result in [
            "completed",
            "caller_hangup",
            "failed",
            "rejected",
            "handed_over",
        ] {
            metrics.calls_total.with_label_values(&[result]);
        }
        for result in ["won", "lost", "error"] {
            metrics.cluster_claims.with_label_values(&[result]);
        }
        for outcome in ["delivered", "failed"] {
            metrics.cdr_posts.with_label_values(&[outcome]);
        }
        for op in OWNERSHIP_OPS.iter().chain(NODE_OPS) {
            metrics.cluster_redis_errors.with_label_values(&[op]);
        }
        for app in pivot_switch::commands::APPS {
            metrics.stalled_steps.with_label_values(&[app]);
        }
        Ok(metrics)
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        // Encoding gathered families into a Vec cannot fail short of a metric with an invalid
        // name, which registration would have refused.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8_lossy(&buffer).into_owned()
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Alerts and dashboards query these families before anything failed; a label vector
    /// without a series is not rendered at all, so each closed label set starts at zero.
    #[test]
    fn closed_label_sets_are_rendered_before_their_first_event() {
        let text = Metrics::new().unwrap().render();
        for line in [
            r#"pivot_cluster_redis_errors_total{op="heartbeat"} 0"#,
            r#"pivot_cluster_redis_errors_total{op="checkpoint"} 0"#,
            r#"pivot_engine_stalled_steps_total{app="playback"} 0"#,
            r#"pivot_webhook_failures_total{cause="timeout"} 0"#,
            r#"pivot_cluster_claims_total{result="won"} 0"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing");
        }
    }
}
