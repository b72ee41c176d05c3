//! Ownership through the trait object, as nodes use it: claim races, fencing, drain and adoption.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Barrier};

use pivot_cluster::{ClusterError, Lease, MemoryOwnership, Ownership};

fn store(max_calls: usize) -> Arc<dyn Ownership> {
    Arc::new(MemoryOwnership::new(max_calls))
}

#[test]
fn exactly_one_of_eight_racing_threads_claims() {
    for round in 0..20 {
        let ownership = store(100);
        let barrier = Arc::new(Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|n| {
                let ownership = Arc::clone(&ownership);
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .build()
                        .unwrap();
                    barrier.wait();
                    runtime
                        .block_on(ownership.claim("call-1", "acct", &format!("node-{n}")))
                        .unwrap()
                })
            })
            .collect();
        let winners: Vec<Lease> = handles
            .into_iter()
            .filter_map(|h| h.join().unwrap())
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        assert_eq!(winners[0].epoch, 1);
        let owner = futures_block(ownership.owner("call-1")).unwrap().unwrap();
        assert_eq!(owner.node, winners[0].node);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_one_of_eight_racing_tasks_claims() {
    let ownership = store(100);
    let tasks: Vec<_> = (0..8)
        .map(|n| {
            let ownership = Arc::clone(&ownership);
            tokio::spawn(async move {
                ownership
                    .claim("call-2", "acct", &format!("node-{n}"))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        winners += usize::from(task.await.unwrap().is_some());
    }
    assert_eq!(winners, 1);
}

#[tokio::test]
async fn a_stale_checkpoint_is_fenced_with_both_epochs() {
    let ownership = store(10);
    let old = ownership.claim("c", "acct", "a").await.unwrap().unwrap();
    ownership
        .checkpoint(&old, "{\"step\":1}".into())
        .await
        .unwrap();
    // Node a is presumed dead; b adopts at the epoch it saw.
    let new = ownership.adopt("c", "b", 1).await.unwrap().unwrap();
    assert_eq!(new.epoch, 2);
    let err = ownership
        .checkpoint(&old, "{\"step\":2}".into())
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ClusterError::Fenced {
            call_id: "c".into(),
            held_epoch: 1,
            current_epoch: 2
        }
    );
    // The adopter resumes from the last checkpoint the old owner managed to write.
    let checkpoint = ownership.load("c").await.unwrap().unwrap();
    assert_eq!(checkpoint.state, "{\"step\":1}");
    assert_eq!((checkpoint.node.as_str(), checkpoint.epoch), ("a", 1));
    ownership
        .checkpoint(&new, "{\"step\":3}".into())
        .await
        .unwrap();
    let checkpoint = ownership.load("c").await.unwrap().unwrap();
    assert_eq!((checkpoint.node.as_str(), checkpoint.epoch), ("b", 2));
    assert!(checkpoint.updated_unix_ms > 0);
    assert!(matches!(
        ownership.release(&old).await,
        Err(ClusterError::Fenced { .. })
    ));
    assert!(matches!(
        ownership.finish(&old).await,
        Err(ClusterError::Fenced { .. })
    ));
}

#[tokio::test]
async fn a_second_claim_of_an_owned_call_gets_none() {
    let ownership = store(10);
    assert!(ownership.claim("c", "acct", "a").await.unwrap().is_some());
    assert_eq!(ownership.claim("c", "acct", "b").await.unwrap(), None);
    assert_eq!(ownership.claim("c", "acct", "a").await.unwrap(), None);
}

#[tokio::test]
async fn release_then_adopt_bumps_the_epoch_and_fences_the_releaser() {
    let ownership = store(10);
    let old = ownership.claim("c", "acct", "a").await.unwrap().unwrap();
    ownership.checkpoint(&old, "state-a".into()).await.unwrap();
    ownership.release(&old).await.unwrap();
    let owner = ownership.owner("c").await.unwrap().unwrap();
    assert!(owner.released);
    assert_eq!((owner.node.as_str(), owner.epoch), ("a", 1));

    let new = ownership
        .adopt("c", "b", owner.epoch)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        new,
        Lease {
            call_id: "c".into(),
            node: "b".into(),
            epoch: 2
        }
    );
    assert_eq!(ownership.load("c").await.unwrap().unwrap().state, "state-a");
    let owner = ownership.owner("c").await.unwrap().unwrap();
    assert!(!owner.released);
    assert_eq!(owner.node, "b");
    let err = ownership.checkpoint(&old, "late".into()).await.unwrap_err();
    assert!(matches!(
        err,
        ClusterError::Fenced {
            held_epoch: 1,
            current_epoch: 2,
            ..
        }
    ));
    // A second adopter that saw the same epoch lost the race.
    assert_eq!(ownership.adopt("c", "z", 1).await.unwrap(), None);
}

#[tokio::test]
async fn claiming_a_released_call_takes_the_next_epoch_and_keeps_the_checkpoint() {
    let ownership = store(10);
    let old = ownership.claim("c", "acct", "a").await.unwrap().unwrap();
    ownership.checkpoint(&old, "s".into()).await.unwrap();
    ownership.release(&old).await.unwrap();
    let new = ownership.claim("c", "acct", "b").await.unwrap().unwrap();
    assert_eq!(new.epoch, 2);
    assert_eq!(ownership.load("c").await.unwrap().unwrap().state, "s");
}

#[tokio::test]
async fn finish_forgets_the_call() {
    let ownership = store(10);
    let lease = ownership.claim("c", "acct", "a").await.unwrap().unwrap();
    ownership.checkpoint(&lease, "s".into()).await.unwrap();
    ownership.finish(&lease).await.unwrap();
    assert_eq!(ownership.owner("c").await.unwrap(), None);
    assert_eq!(ownership.load("c").await.unwrap(), None);
    assert!(ownership.calls(None, 10).await.unwrap().is_empty());
    assert_eq!(
        ownership.finish(&lease).await,
        Err(ClusterError::NotFound {
            call_id: "c".into()
        })
    );
    assert!(matches!(
        ownership.adopt("c", "b", 1).await,
        Err(ClusterError::NotFound { .. })
    ));
    // A new call with the same id starts over.
    assert_eq!(
        ownership
            .claim("c", "acct", "b")
            .await
            .unwrap()
            .unwrap()
            .epoch,
        1
    );
}

#[tokio::test]
async fn the_old_owner_may_finish_a_released_call_nobody_adopted_yet() {
    let ownership = store(10);
    let lease = ownership.claim("c", "acct", "a").await.unwrap().unwrap();
    ownership.release(&lease).await.unwrap();
    ownership.finish(&lease).await.unwrap();
    assert_eq!(ownership.owner("c").await.unwrap(), None);
}

#[tokio::test]
async fn claims_beyond_max_calls_are_full_and_finishing_frees_room() {
    let ownership = store(2);
    let first = ownership.claim("c1", "acct", "a").await.unwrap().unwrap();
    ownership.claim("c2", "acct", "a").await.unwrap().unwrap();
    assert_eq!(
        ownership.claim("c3", "acct", "a").await,
        Err(ClusterError::Full {
            what: "calls",
            limit: 2
        })
    );
    // An existing call is still answered, not refused.
    assert_eq!(ownership.claim("c1", "acct", "b").await.unwrap(), None);
    ownership.finish(&first).await.unwrap();
    assert!(ownership.claim("c3", "acct", "a").await.unwrap().is_some());
}

#[tokio::test]
async fn oversized_checkpoints_are_too_large_and_keep_the_previous_one() {
    let ownership: Arc<dyn Ownership> =
        Arc::new(MemoryOwnership::new(10).with_max_checkpoint_bytes(16));
    let lease = ownership.claim("c", "acct", "a").await.unwrap().unwrap();
    ownership.checkpoint(&lease, "x".repeat(16)).await.unwrap();
    assert_eq!(
        ownership.checkpoint(&lease, "y".repeat(17)).await,
        Err(ClusterError::TooLarge {
            what: "checkpoint",
            size: 17,
            limit: 16
        })
    );
    assert_eq!(
        ownership.load("c").await.unwrap().unwrap().state,
        "x".repeat(16)
    );
}

#[tokio::test]
async fn the_default_checkpoint_bound_is_256_kib() {
    let ownership = store(10);
    let lease = ownership.claim("c", "acct", "a").await.unwrap().unwrap();
    ownership
        .checkpoint(&lease, "x".repeat(256 * 1024))
        .await
        .unwrap();
    assert!(matches!(
        ownership
            .checkpoint(&lease, "x".repeat(256 * 1024 + 1))
            .await,
        Err(ClusterError::TooLarge { .. })
    ));
}

#[tokio::test]
async fn oversized_ids_are_refused() {
    let ownership = store(10);
    assert!(matches!(
        ownership.claim(&"c".repeat(257), "acct", "a").await,
        Err(ClusterError::TooLarge {
            what: "call_id",
            ..
        })
    ));
}

#[tokio::test]
async fn calls_filter_by_account_sort_by_id_and_respect_the_limit() {
    let ownership = store(10);
    for (call, account) in [("c3", "x"), ("c1", "x"), ("c2", "y"), ("c0", "x")] {
        ownership.claim(call, account, "a").await.unwrap().unwrap();
    }
    let ids = |calls: Vec<pivot_cluster::CallOwner>| {
        calls.into_iter().map(|c| c.call_id).collect::<Vec<_>>()
    };
    assert_eq!(
        ids(ownership.calls(None, 10).await.unwrap()),
        ["c0", "c1", "c2", "c3"]
    );
    assert_eq!(
        ids(ownership.calls(Some("x"), 10).await.unwrap()),
        ["c0", "c1", "c3"]
    );
    assert_eq!(
        ids(ownership.calls(Some("x"), 2).await.unwrap()),
        ["c0", "c1"]
    );
    assert!(ownership.calls(Some("none"), 10).await.unwrap().is_empty());
    let c2 = &ownership.calls(Some("y"), 10).await.unwrap()[0];
    assert_eq!(
        (c2.account_id.as_str(), c2.node.as_str(), c2.epoch),
        ("y", "a", 1)
    );
}

fn futures_block<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(future)
}
