//! Ownership on a real redis-server: the same behaviour cases as the memory backend.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod cases;
mod support;

ownership_cases!(support::RedisBackend::start());

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use pivot_cluster::{ClusterError, Lease, Ownership, RedisCluster};

/// Several clients of one key space, as several nodes would have: each its own connection.
async fn nodes(backend: &support::RedisBackend, count: usize) -> Vec<Arc<dyn Ownership>> {
    let options = backend.options();
    let mut clients: Vec<Arc<dyn Ownership>> = Vec::new();
    for _ in 0..count {
        clients.push(Arc::new(
            RedisCluster::connect(&backend.server.url(), options.clone())
                .await
                .unwrap(),
        ));
    }
    clients
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_racing_claims_of_one_call_from_sixteen_tasks_have_one_winner() {
    let backend = support::RedisBackend::start();
    let clients = nodes(&backend, 4).await;
    let start = Arc::new(tokio::sync::Barrier::new(16));
    let tasks: Vec<_> = (0..16)
        .map(|task| {
            let ownership = Arc::clone(&clients[task % clients.len()]);
            let start = Arc::clone(&start);
            tokio::spawn(async move {
                start.wait().await;
                let mut won = Vec::new();
                // 1 000 claims in all: tasks 0..8 make 63, the others 62.
                for attempt in (task..1000).step_by(16) {
                    let node = format!("node-{task}-{attempt}");
                    if let Some(lease) = ownership.claim("race", "acct", &node).await.unwrap() {
                        won.push(lease);
                    }
                }
                won
            })
        })
        .collect();
    let mut winners: Vec<Lease> = Vec::new();
    for task in tasks {
        winners.extend(task.await.unwrap());
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(winners[0].epoch, 1);
    let owner = clients[3].owner("race").await.unwrap().unwrap();
    assert_eq!(
        (owner.node.as_str(), owner.epoch),
        (winners[0].node.as_str(), 1)
    );
    assert_eq!(clients[1].calls(None, 10).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_then_adopt_under_concurrency_has_one_adopter_and_fences_the_old_lease() {
    let backend = support::RedisBackend::start();
    let clients = nodes(&backend, 4).await;
    for round in 0..10u64 {
        let call = format!("call-{round}");
        let old = clients[0]
            .claim(&call, "acct", "old")
            .await
            .unwrap()
            .unwrap();
        clients[0].checkpoint(&old, "old-0".into()).await.unwrap();
        clients[0].release(&old).await.unwrap();

        // The old owner keeps writing while 16 adopters race for the epoch it released.
        let adopted = Arc::new(AtomicBool::new(false));
        let writer = {
            let ownership = Arc::clone(&clients[1]);
            let (old, adopted) = (old.clone(), Arc::clone(&adopted));
            tokio::spawn(async move {
                let mut fenced_after_adoption = 0;
                // Until fenced 20 times: the adopters always win eventually.
                for n in 1.. {
                    let seen_adopted = adopted.load(Ordering::SeqCst);
                    match ownership.checkpoint(&old, format!("old-{n}")).await {
                        Ok(()) => assert!(!seen_adopted, "an old write landed after adoption"),
                        Err(ClusterError::Fenced {
                            held_epoch: 1,
                            current_epoch: 2,
                            ..
                        }) => fenced_after_adoption += 1,
                        Err(other) => panic!("{other:?}"),
                    }
                    if fenced_after_adoption >= 20 {
                        break;
                    }
                }
                fenced_after_adoption
            })
        };
        let adopters: Vec<_> = (0..16)
            .map(|n| {
                let ownership = Arc::clone(&clients[n % 4]);
                let (call, adopted) = (call.clone(), Arc::clone(&adopted));
                tokio::spawn(async move {
                    let lease = ownership
                        .adopt(&call, &format!("new-{n}"), 1)
                        .await
                        .unwrap();
                    if lease.is_some() {
                        adopted.store(true, Ordering::SeqCst);
                    }
                    lease
                })
            })
            .collect();
        let mut winners = Vec::new();
        for adopter in adopters {
            winners.extend(adopter.await.unwrap());
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        let new = &winners[0];
        assert_eq!(new.epoch, 2);
        assert_eq!(writer.await.unwrap(), 20, "the old lease was fenced");

        // The adopter resumes from whatever the old owner last managed to write, then owns it.
        let resumed = clients[2].load(&call).await.unwrap().unwrap();
        assert_eq!((resumed.node.as_str(), resumed.epoch), ("old", 1));
        assert!(resumed.state.starts_with("old-"));
        clients[3].checkpoint(new, "new-1".into()).await.unwrap();
        let saved = clients[0].load(&call).await.unwrap().unwrap();
        assert_eq!((saved.node.as_str(), saved.epoch), (new.node.as_str(), 2));
        assert!(matches!(
            clients[0].release(&old).await,
            Err(ClusterError::Fenced { .. })
        ));
        assert!(matches!(
            clients[0].finish(&old).await,
            Err(ClusterError::Fenced { .. })
        ));
        let owner = clients[1].owner(&call).await.unwrap().unwrap();
        assert_eq!(
            (owner.node.as_str(), owner.epoch, owner.released),
            (new.node.as_str(), 2, false)
        );
        assert!(
            clients[2]
                .calls_of_node("old", 100)
                .await
                .unwrap()
                .is_empty()
        );
        clients[2].finish(new).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_prefixes_keep_clusters_apart() {
    let backend = support::RedisBackend::start();
    let one = backend.cluster(backend.options()).await;
    let two = backend.cluster(backend.options()).await;
    one.claim("c", "acct", "a").await.unwrap().unwrap();
    assert_eq!(two.owner("c").await.unwrap(), None);
    assert!(two.claim("c", "acct", "b").await.unwrap().is_some());
    assert_eq!(one.owner("c").await.unwrap().unwrap().node, "a");
}
