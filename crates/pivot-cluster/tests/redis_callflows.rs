//! Callflows on a real redis-server: the same behaviour cases as the memory backend.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod cases;
mod support;

callflow_cases!(support::RedisBackend::start());

use std::sync::Arc;

use pivot_cluster::{Callflow, CallflowStore, StoreError};

fn flow(account: &str, id: &str, numbers: &[&str], patterns: &[&str]) -> Callflow {
    Callflow {
        id: id.into(),
        account_id: account.into(),
        name: None,
        numbers: numbers.iter().map(|n| (*n).to_owned()).collect(),
        patterns: patterns.iter().map(|p| (*p).to_owned()).collect(),
        flow: serde_json::json!({"module": "pivot"}),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_sees_another_nodes_pattern_changes() {
    let backend = support::RedisBackend::start();
    let options = backend.options();
    let writer = backend.cluster(options.clone()).await;
    let reader = backend.cluster(options).await;
    writer
        .put(flow("a", "cf", &[], &["^1\\d+$"]))
        .await
        .unwrap();
    assert_eq!(reader.resolve("123", None).await.unwrap().unwrap().id, "cf");
    // Replaced: the reader's cached patterns are stale and must not be used.
    writer
        .put(flow("a", "cf", &[], &["^2\\d+$"]))
        .await
        .unwrap();
    assert_eq!(reader.resolve("123", None).await.unwrap(), None);
    assert_eq!(reader.resolve("234", None).await.unwrap().unwrap().id, "cf");
    // Patterns removed by a replacement, then a new callflow with one.
    writer.put(flow("a", "cf", &["9"], &[])).await.unwrap();
    assert_eq!(reader.resolve("234", None).await.unwrap(), None);
    writer.put(flow("b", "other", &[], &["^2"])).await.unwrap();
    assert_eq!(
        reader.resolve("234", None).await.unwrap().unwrap().id,
        "other"
    );
    assert_eq!(reader.resolve("234", Some("a")).await.unwrap(), None);
    writer.delete("b", "other").await.unwrap();
    assert_eq!(reader.resolve("234", None).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_puts_of_one_number_have_one_winner() {
    let backend = support::RedisBackend::start();
    let options = backend.options();
    let mut stores: Vec<Arc<dyn CallflowStore>> = Vec::new();
    for _ in 0..4 {
        stores.push(Arc::new(backend.cluster(options.clone()).await));
    }
    let tasks: Vec<_> = (0..16)
        .map(|n| {
            let store = Arc::clone(&stores[n % 4]);
            tokio::spawn(async move {
                store
                    .put(flow(
                        &format!("acct-{n}"),
                        "cf",
                        &[&format!("own-{n}"), "+15550000"],
                        &[],
                    ))
                    .await
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(stored) => winners.push(stored.account_id),
            Err(StoreError::NumberTaken { number, .. }) => assert_eq!(number, "+15550000"),
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let resolved = stores[0].resolve("15550000", None).await.unwrap().unwrap();
    assert_eq!(resolved.account_id, winners[0]);
    // The losers left none of their own numbers behind.
    let own: Vec<_> = (0..16).map(|n| format!("own-{n}")).collect();
    let mut found = 0;
    for number in &own {
        found += usize::from(stores[1].resolve(number, None).await.unwrap().is_some());
    }
    assert_eq!(found, 1);
}
