//! The Redis backend when Redis misbehaves: down (every operation fails as Unavailable, naming
//! itself, within op_timeout), back (the ConnectionManager reconnects and the scripts are
//! loaded again), scripts flushed, and unusable configuration.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use pivot_cluster::{
    Callflow, CallflowStore, ClusterError, DebugStore, Nodes, Ownership, RedisCluster,
    RedisOptions, StoreError,
};

const OP_TIMEOUT: Duration = Duration::from_millis(300);
/// What a loaded 2-core machine may add to a timed-out operation.
const SLACK: Duration = Duration::from_millis(400);

fn options(prefix: &str) -> RedisOptions {
    RedisOptions {
        key_prefix: prefix.to_owned(),
        op_timeout: OP_TIMEOUT,
        ..RedisOptions::default()
    }
}

fn assert_unavailable<T: std::fmt::Debug>(
    result: Result<T, ClusterError>,
    op: &str,
    started: Instant,
) {
    let elapsed = started.elapsed();
    match result {
        Err(ClusterError::Unavailable(message)) => {
            assert!(message.starts_with(op), "{op}: {message}");
        }
        other => panic!("{op}: expected Unavailable, got {other:?}"),
    }
    assert!(elapsed < OP_TIMEOUT + SLACK, "{op} took {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_redis_fails_ops_within_op_timeout_then_serves_them_again() {
    let mut server = pivot_redis_test::RedisServer::start();
    let cluster = RedisCluster::connect(&server.url(), options("r"))
        .await
        .unwrap();
    let lease = cluster.claim("c1", "acct", "a").await.unwrap().unwrap();
    cluster
        .heartbeat("a", "http://a", Duration::from_secs(5))
        .await
        .unwrap();

    server.kill();
    for round in 0..2 {
        let started = Instant::now();
        assert_unavailable(
            cluster.claim(&format!("c{round}"), "acct", "a").await,
            "claim",
            started,
        );
        let started = Instant::now();
        assert_unavailable(
            cluster.checkpoint(&lease, "s".into()).await,
            "checkpoint",
            started,
        );
        let started = Instant::now();
        assert_unavailable(cluster.owner("c1").await, "owner", started);
        let started = Instant::now();
        assert_unavailable(
            cluster
                .heartbeat("a", "http://a", Duration::from_secs(5))
                .await,
            "heartbeat",
            started,
        );
        let started = Instant::now();
        assert_unavailable(cluster.ping().await, "ping", started);
    }
    let started = Instant::now();
    assert!(matches!(
        cluster.resolve("100", None).await,
        Err(StoreError::Unavailable(m)) if m.starts_with("callflow resolve")
    ));
    assert!(started.elapsed() < OP_TIMEOUT + SLACK);

    // Back, empty (no persistence), without the scripts: the same client recovers by itself.
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    let lease = loop {
        match cluster.claim("c1", "acct", "b").await {
            Ok(lease) => break lease.unwrap(),
            Err(ClusterError::Unavailable(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(other) => panic!("not back within 10 s: {other:?}"),
        }
    };
    assert_eq!(lease.epoch, 1);
    cluster.checkpoint(&lease, "after".into()).await.unwrap();
    assert_eq!(cluster.load("c1").await.unwrap().unwrap().state, "after");
    cluster
        .heartbeat("b", "http://b", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(cluster.live().await.unwrap().len(), 1);
    cluster.append("acct", "c1", "b", Vec::new()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushed_scripts_are_loaded_again() {
    let server = pivot_redis_test::RedisServer::start();
    let cluster = RedisCluster::connect(&server.url(), options("s"))
        .await
        .unwrap();
    let lease = cluster.claim("c", "acct", "a").await.unwrap().unwrap();
    assert!(server.ask("SCRIPT FLUSH").unwrap().starts_with("+OK"));
    cluster.checkpoint(&lease, "s".into()).await.unwrap();
    assert!(server.ask("SCRIPT FLUSH").unwrap().starts_with("+OK"));
    cluster
        .put(Callflow {
            id: "cf".into(),
            account_id: "acct".into(),
            name: None,
            numbers: vec!["100".into()],
            patterns: vec!["^2\\d+$".into()],
            flow: serde_json::json!({}),
        })
        .await
        .unwrap();
    assert!(server.ask("SCRIPT FLUSH").unwrap().starts_with("+OK"));
    assert_eq!(
        cluster.resolve("200", None).await.unwrap().unwrap().id,
        "cf"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_nothing_is_unavailable_within_op_timeout() {
    // A port nobody listens on (bound and released; nothing else binds it this fast).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}");
    let started = Instant::now();
    assert_unavailable(
        RedisCluster::connect(&url, options("n")).await,
        "ping",
        started,
    );

    // Lazily: the node starts, and each operation reports the outage.
    let lazy = RedisCluster::connect_lazy(&url, options("n"))
        .await
        .unwrap();
    let started = Instant::now();
    assert_unavailable(lazy.calls(None, 10).await, "calls", started);
    let started = Instant::now();
    assert_unavailable(lazy.live().await, "live", started);
}

#[tokio::test]
async fn unusable_urls_and_options_are_config_errors() {
    for url in [
        "http://127.0.0.1:6379",
        "redis+sentinel://127.0.0.1:26379",
        "redis+sentinel://127.0.0.1:26379/m?nonsense=1",
        "redis://127.0.0.1:6379/not-a-db",
    ] {
        assert!(
            matches!(
                RedisCluster::connect_lazy(url, RedisOptions::default()).await,
                Err(ClusterError::Config(_))
            ),
            "{url}"
        );
    }
    let slow = RedisOptions {
        op_timeout: Duration::from_secs(5),
        lease: Duration::from_secs(5),
        ..RedisOptions::default()
    };
    assert!(matches!(
        RedisCluster::connect_lazy("redis://127.0.0.1:6379", slow).await,
        Err(ClusterError::Config(m)) if m.contains("shorter than the lease")
    ));
    // Well-formed URLs of every scheme are accepted without connecting.
    for url in [
        "redis://127.0.0.1:6379/2",
        "rediss://localhost:6380",
        "redis+sentinel://:pw@127.0.0.1:26379,127.0.0.1:26380/mymaster/1",
    ] {
        RedisCluster::connect_lazy(url, RedisOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
    }
}
