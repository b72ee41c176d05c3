//! Ownership through the trait object, as nodes use it, for every backend: claim races,
//! fencing, drain, adoption and the per-node index survivors read.

use std::sync::Arc;

use pivot_cluster::{ClusterError, Lease};

use super::Backend;

pub async fn exactly_one_of_eight_racing_tasks_claims(b: &impl Backend) {
    let ownership = b.ownership(100, None).await;
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

pub async fn a_stale_checkpoint_is_fenced_with_both_epochs(b: &impl Backend) {
    let ownership = b.ownership(10, None).await;
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

pub async fn a_second_claim_of_an_owned_call_gets_none(b: &impl Backend) {
    let ownership = b.ownership(10, None).await;
    assert!(ownership.claim("c", "acct", "a").await.unwrap().is_some());
    assert_eq!(ownership.claim("c", "acct", "b").await.unwrap(), None);
    assert_eq!(ownership.claim("c", "acct", "a").await.unwrap(), None);
}

pub async fn release_then_adopt_bumps_the_epoch_and_fences_the_releaser(b: &impl Backend) {
    let ownership = b.ownership(10, None).await;
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

pub async fn claiming_a_released_call_takes_the_next_epoch_and_keeps_the_checkpoint(
    b: &impl Backend,
) {
    let ownership = b.ownership(10, None).await;
    let old = ownership.claim("c", "acct", "a").await.unwrap().unwrap();
    ownership.checkpoint(&old, "s".into()).await.unwrap();
    ownership.release(&old).await.unwrap();
    let new = ownership.claim("c", "acct", "b").await.unwrap().unwrap();
    assert_eq!(new.epoch, 2);
    assert_eq!(ownership.load("c").await.unwrap().unwrap().state, "s");
}

pub async fn a_claim_with_its_first_checkpoint_writes_it_only_when_won(b: &impl Backend) {
    let ownership = b.ownership(10, None).await;
    let lease = ownership
        .claim_with_checkpoint("c", "acct", "a", "first".into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lease.epoch, 1);
    let checkpoint = ownership.load("c").await.unwrap().unwrap();
    assert_eq!(checkpoint.state, "first");
    assert_eq!((checkpoint.node.as_str(), checkpoint.epoch), ("a", 1));
    // A lost claim writes nothing.
    let lost = ownership
        .claim_with_checkpoint("c", "acct", "b", "intruder".into())
        .await
        .unwrap();
    assert_eq!(lost, None);
    assert_eq!(ownership.load("c").await.unwrap().unwrap().state, "first");
    // Claiming a released call takes the next epoch, its checkpoint that epoch's.
    ownership.release(&lease).await.unwrap();
    let next = ownership
        .claim_with_checkpoint("c", "acct", "b", "again".into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next.epoch, 2);
    let checkpoint = ownership.load("c").await.unwrap().unwrap();
    assert_eq!(
        (
            checkpoint.state.as_str(),
            checkpoint.node.as_str(),
            checkpoint.epoch
        ),
        ("again", "b", 2)
    );
    // The checkpoint bound holds for the claim's checkpoint too, and refuses the claim.
    let big = "x".repeat(300 * 1024);
    assert!(matches!(
        ownership.claim_with_checkpoint("d", "acct", "a", big).await,
        Err(ClusterError::TooLarge { .. })
    ));
    assert_eq!(ownership.owner("d").await.unwrap(), None);
}

pub async fn an_adoption_brings_the_checkpoint_to_resume_from(b: &impl Backend) {
    let ownership = b.ownership(10, None).await;
    let old = ownership.claim("c", "acct", "a").await.unwrap().unwrap();
    let bare = ownership.claim("bare", "acct", "a").await.unwrap().unwrap();
    ownership.checkpoint(&old, "step-3".into()).await.unwrap();
    let (lease, checkpoint) = ownership
        .adopt_and_load("c", "b", old.epoch)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((lease.node.as_str(), lease.epoch), ("b", 2));
    let checkpoint = checkpoint.unwrap();
    assert_eq!(
        (
            checkpoint.state.as_str(),
            checkpoint.node.as_str(),
            checkpoint.epoch
        ),
        ("step-3", "a", 1)
    );
    assert!(checkpoint.updated_unix_ms > 0);
    // A lost race brings nothing; a call never checkpointed is adopted with none.
    assert_eq!(ownership.adopt_and_load("c", "z", 1).await.unwrap(), None);
    let (_, none) = ownership
        .adopt_and_load("bare", "b", bare.epoch)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(none, None);
    assert!(matches!(
        ownership.adopt_and_load("gone", "b", 1).await,
        Err(ClusterError::NotFound { .. })
    ));
}

pub async fn finish_forgets_the_call(b: &impl Backend) {
    let ownership = b.ownership(10, None).await;
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

pub async fn the_old_owner_may_finish_a_released_call_nobody_adopted_yet(b: &impl Backend) {
    let ownership = b.ownership(10, None).await;
    let lease = ownership.claim("c", "acct", "a").await.unwrap().unwrap();
    ownership.release(&lease).await.unwrap();
    ownership.finish(&lease).await.unwrap();
    assert_eq!(ownership.owner("c").await.unwrap(), None);
}

pub async fn claims_beyond_max_calls_are_full_and_finishing_frees_room(b: &impl Backend) {
    let ownership = b.ownership(2, None).await;
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

pub async fn oversized_checkpoints_are_too_large_and_keep_the_previous_one(b: &impl Backend) {
    let ownership = b.ownership(10, Some(16)).await;
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

pub async fn the_default_checkpoint_bound_is_256_kib(b: &impl Backend) {
    let ownership = b.ownership(10, None).await;
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

pub async fn oversized_ids_are_refused(b: &impl Backend) {
    let ownership = b.ownership(10, None).await;
    assert!(matches!(
        ownership.claim(&"c".repeat(257), "acct", "a").await,
        Err(ClusterError::TooLarge {
            what: "call_id",
            ..
        })
    ));
}

pub async fn calls_filter_by_account_sort_by_id_and_respect_the_limit(b: &impl Backend) {
    let ownership = b.ownership(10, None).await;
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
    assert_eq!(ownership.calls(None, usize::MAX).await.unwrap().len(), 4);
    let c2 = &ownership.calls(Some("y"), 10).await.unwrap()[0];
    assert_eq!(
        (c2.account_id.as_str(), c2.node.as_str(), c2.epoch),
        ("y", "a", 1)
    );
}

pub async fn calls_of_node_follow_claims_adoptions_releases_and_finishes(b: &impl Backend) {
    let ownership = b.ownership(10, None).await;
    let ids = |calls: Vec<pivot_cluster::CallOwner>| {
        calls.into_iter().map(|c| c.call_id).collect::<Vec<_>>()
    };
    for (call, node) in [("c3", "a"), ("c1", "a"), ("c2", "b"), ("c0", "a")] {
        ownership.claim(call, "acct", node).await.unwrap().unwrap();
    }
    assert_eq!(
        ids(ownership.calls_of_node("a", 10).await.unwrap()),
        ["c0", "c1", "c3"]
    );
    assert_eq!(
        ids(ownership.calls_of_node("a", 2).await.unwrap()),
        ["c0", "c1"]
    );
    assert!(ownership.calls_of_node("a", 0).await.unwrap().is_empty());
    assert_eq!(
        ownership
            .calls_of_node("a", usize::MAX)
            .await
            .unwrap()
            .len(),
        3
    );
    assert!(ownership.calls_of_node("z", 10).await.unwrap().is_empty());

    // b adopts one of a's calls (a is presumed dead) and a releases another: the released call
    // stays a's until someone takes it.
    let adopted = ownership.adopt("c1", "b", 1).await.unwrap().unwrap();
    let c3 = Lease {
        call_id: "c3".into(),
        node: "a".into(),
        epoch: 1,
    };
    ownership.release(&c3).await.unwrap();
    let of_a = ownership.calls_of_node("a", 10).await.unwrap();
    assert_eq!(ids(of_a.clone()), ["c0", "c3"]);
    assert!(of_a[1].released && !of_a[0].released);
    assert_eq!(
        ids(ownership.calls_of_node("b", 10).await.unwrap()),
        ["c1", "c2"]
    );
    let c1 = &ownership.calls_of_node("b", 10).await.unwrap()[0];
    assert_eq!(
        (c1.node.as_str(), c1.epoch, c1.account_id.as_str()),
        ("b", 2, "acct")
    );

    // Claiming the released call moves it; finishing removes it from its node.
    ownership.claim("c3", "acct", "b").await.unwrap().unwrap();
    ownership.finish(&adopted).await.unwrap();
    assert_eq!(ids(ownership.calls_of_node("a", 10).await.unwrap()), ["c0"]);
    assert_eq!(
        ids(ownership.calls_of_node("b", 10).await.unwrap()),
        ["c2", "c3"]
    );
}
