//! The Redis backend through Redis Sentinel: a primary, a Sentinel watching it (quorum 1), the
//! client connecting with `redis+sentinel://…/mymaster`, and a failover to a replica that the
//! client follows by asking the Sentinel again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use pivot_cluster::{ClusterError, Nodes, Ownership, RedisCluster, RedisOptions};

fn options() -> RedisOptions {
    RedisOptions {
        op_timeout: Duration::from_millis(500),
        ..RedisOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_work_through_a_sentinel() {
    let primary = pivot_redis_test::RedisServer::start();
    let Some(sentinel) = pivot_redis_test::Sentinel::start(primary.port()) else {
        return;
    };
    let url = format!("redis+sentinel://127.0.0.1:{}/mymaster", sentinel.port());
    let cluster = RedisCluster::connect(&url, options()).await.unwrap();
    let lease = cluster.claim("c", "acct", "a").await.unwrap().unwrap();
    cluster.checkpoint(&lease, "s".into()).await.unwrap();
    cluster
        .heartbeat("a", "http://a", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(cluster.live().await.unwrap()[0].id, "a");
    // The data is on the primary itself.
    assert!(
        primary
            .ask("EXISTS pivot:call:c")
            .unwrap()
            .starts_with(":1")
    );
    // An unknown master name fails, naming the operation.
    let wrong = format!("redis+sentinel://127.0.0.1:{}/nope", sentinel.port());
    assert!(matches!(
        RedisCluster::connect(&wrong, options()).await,
        Err(ClusterError::Unavailable(m)) if m.starts_with("ping")
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_to_the_replica_is_followed() {
    let primary = pivot_redis_test::RedisServer::start();
    let replica = pivot_redis_test::RedisServer::start_with(&[
        "--replicaof",
        "127.0.0.1",
        &primary.port().to_string(),
    ]);
    let Some(sentinel) = pivot_redis_test::Sentinel::start(primary.port()) else {
        return;
    };
    let url = format!("redis+sentinel://127.0.0.1:{}/mymaster", sentinel.port());
    let cluster = RedisCluster::connect(&url, options()).await.unwrap();
    let lease = cluster.claim("c", "acct", "a").await.unwrap().unwrap();
    cluster.checkpoint(&lease, "before".into()).await.unwrap();
    // Replication is asynchronous: wait until the replica has the call before failing over.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !replica
        .ask("EXISTS pivot:call:c")
        .unwrap_or_default()
        .starts_with(":1")
    {
        assert!(Instant::now() < deadline, "the replica never synced");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Forced failover: needs no quorum, only a replica the Sentinel knows (it learns of it from
    // the primary's INFO, which can take a few seconds).
    let started = Instant::now();
    loop {
        let answer = sentinel
            .ask("SENTINEL FAILOVER mymaster")
            .unwrap_or_default();
        if answer.starts_with("+OK") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the Sentinel would not fail over: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let replica_port = replica.port().to_string();
    while !sentinel
        .ask("SENTINEL get-master-addr-by-name mymaster")
        .unwrap_or_default()
        .contains(&replica_port)
    {
        assert!(started.elapsed() < Duration::from_secs(30), "no new master");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The Sentinel demotes the old primary only when its next INFO round notices it (up to
    // 10 s); doing it now is the same step, sooner. From then on the client's connection to it
    // fails (READONLY, or closed by the demotion), the client asks the Sentinel again, and the
    // next write lands on the new master, which has the replicated call.
    let demote = format!("REPLICAOF 127.0.0.1 {replica_port}");
    assert!(primary.ask(&demote).unwrap().starts_with("+OK"));
    let first = cluster.checkpoint(&lease, "after".into()).await;
    assert!(
        matches!(&first, Err(ClusterError::Unavailable(_))),
        "a write to the demoted primary: {first:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match cluster.checkpoint(&lease, "after".into()).await {
            Ok(()) => break,
            Err(ClusterError::Unavailable(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(other) => panic!("the failover was not followed: {other:?}"),
        }
    }
    assert_eq!(cluster.load("c").await.unwrap().unwrap().state, "after");
    assert!(
        replica
            .ask("HGET pivot:call:c state")
            .unwrap()
            .contains("after")
    );
    println!("failover followed in {:?}", started.elapsed());
}
