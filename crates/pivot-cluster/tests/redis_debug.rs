//! Debug on a real redis-server: the same behaviour cases as the memory backend.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod cases;
mod support;

debug_cases!(support::RedisBackend::start());

use pivot_cluster::{DebugEntry, DebugLimits, DebugStore};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_share_debug_logs_and_redis_expires_them() {
    let backend = support::RedisBackend::start();
    let options = pivot_cluster::RedisOptions {
        debug: DebugLimits {
            retention: std::time::Duration::from_secs(30),
            ..DebugLimits::default()
        },
        ..backend.options()
    };
    let prefix = options.key_prefix.clone();
    let one = backend.cluster(options.clone()).await;
    let two = backend.cluster(options).await;
    let entry = |iteration: u32| DebugEntry {
        id: String::new(),
        call_id: String::new(),
        iteration,
        created_unix_ms: 5,
        record: json!({"uri": "http://app/", "resp_status_code": 200}),
    };
    one.append("ac:ct", "c:1", "n1", vec![entry(1)])
        .await
        .unwrap();
    two.append("ac:ct", "c:1", "n2", vec![entry(2)])
        .await
        .unwrap();
    let page = one.list("ac:ct", 10, None).await.unwrap();
    let summary = &page.summaries[0];
    assert_eq!(
        (
            summary.call_id.as_str(),
            summary.node.as_str(),
            summary.iteration
        ),
        ("c:1", "n2", 2)
    );
    assert_eq!(summary.status_code.as_deref(), Some("200"));
    assert_eq!(two.entries("ac:ct", "c:1").await.unwrap().unwrap().len(), 2);
    // ':' in account and call ids cannot make two accounts' keys meet.
    assert_eq!(one.entries("ac", "ct:c:1").await.unwrap(), None);
    assert!(one.list("ac", 10, None).await.unwrap().summaries.is_empty());
    // Both of the call's keys carry the retention as their TTL.
    for key in ["debug-entries", "debug-summary"] {
        let answer = backend
            .server
            .ask(&format!("PTTL {prefix}:{key}:5:ac:ct:c:1"))
            .unwrap();
        let ttl: i64 = answer.trim_start_matches(':').trim().parse().unwrap();
        assert!((25_000..=30_000).contains(&ttl), "{key}: {answer}");
    }
}
