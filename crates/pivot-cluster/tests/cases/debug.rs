//! Debug logs through the trait object, for every backend: summaries, account isolation,
//! paging, retention (on the backend's clock), and every bound.

use std::time::Duration;

use pivot_cluster::{DebugEntry, DebugLimits, StoreError};
use serde_json::{Value, json};

use super::Backend;

fn entry(iteration: u32, created: u64, record: Value) -> DebugEntry {
    DebugEntry {
        id: String::new(),
        call_id: String::new(),
        iteration,
        created_unix_ms: created,
        record,
    }
}

fn request(uri: &str) -> Value {
    json!({"method": "get", "uri": uri, "req_headers": {}, "req_body": ""})
}

fn response(code: &str) -> Value {
    json!({"resp_status_code": code, "resp_headers": {}, "resp_body": "{}"})
}

pub async fn summaries_reflect_the_entries(b: &impl Backend) {
    let store = b.debug(DebugLimits::default()).await;
    let dropped = store
        .append(
            "acct",
            "call-1",
            "node-a",
            vec![
                entry(1, 100, request("http://app/first")),
                entry(1, 101, response("302")),
                entry(2, 102, request("http://app/second")),
                entry(2, 103, response("200")),
            ],
        )
        .await
        .unwrap();
    assert_eq!(dropped, 0);
    store
        .append(
            "acct",
            "call-1",
            "node-b",
            vec![entry(
                3,
                104,
                json!({"error": "timeout", "message": "slow"}),
            )],
        )
        .await
        .unwrap();
    let page = store.list("acct", 10, None).await.unwrap();
    assert_eq!(page.next_start_key, None);
    let summary = &page.summaries[0];
    assert_eq!(summary.call_id, "call-1");
    assert_eq!(summary.created_unix_ms, 100);
    assert_eq!(summary.uri.as_deref(), Some("http://app/first"));
    assert_eq!(summary.status_code.as_deref(), Some("200"));
    assert_eq!(summary.node, "node-b");
    assert_eq!(summary.iteration, 3);
    assert!(summary.has_errors);

    let entries = store.entries("acct", "call-1").await.unwrap().unwrap();
    assert_eq!(entries.len(), 5);
    assert!(
        entries
            .iter()
            .all(|e| e.call_id == "call-1" && e.id.len() == 32)
    );
    let ids: std::collections::HashSet<_> = entries.iter().map(|e| &e.id).collect();
    assert_eq!(ids.len(), 5);
    assert_eq!(
        entries
            .iter()
            .map(|e| e.created_unix_ms)
            .collect::<Vec<_>>(),
        [100, 101, 102, 103, 104]
    );
}

pub async fn a_call_without_errors_says_so_and_given_ids_are_kept(b: &impl Backend) {
    let store = b.debug(DebugLimits::default()).await;
    let mut e = entry(1, 5, response("200"));
    e.id = "mine".into();
    store.append("acct", "c", "n", vec![e]).await.unwrap();
    let page = store.list("acct", 10, None).await.unwrap();
    assert!(!page.summaries[0].has_errors);
    assert_eq!(page.summaries[0].uri, None);
    assert_eq!(
        store.entries("acct", "c").await.unwrap().unwrap()[0].id,
        "mine"
    );
}

pub async fn an_account_never_sees_another_accounts_calls(b: &impl Backend) {
    let store = b.debug(DebugLimits::default()).await;
    store
        .append("a", "call-a", "n", vec![entry(1, 1, request("http://a/"))])
        .await
        .unwrap();
    store
        .append("b", "call-b", "n", vec![entry(1, 2, request("http://b/"))])
        .await
        .unwrap();
    assert_eq!(store.entries("b", "call-a").await.unwrap(), None);
    assert_eq!(store.entries("a", "call-b").await.unwrap(), None);
    assert_eq!(store.entries("a", "unknown").await.unwrap(), None);
    assert!(store.entries("a", "call-a").await.unwrap().is_some());
    let listed: Vec<_> = store
        .list("a", 100, None)
        .await
        .unwrap()
        .summaries
        .into_iter()
        .map(|s| s.call_id)
        .collect();
    assert_eq!(listed, ["call-a"]);
    assert!(
        store
            .list("c", 100, None)
            .await
            .unwrap()
            .summaries
            .is_empty()
    );
}

pub async fn listing_pages_newest_first_across_three_pages(b: &impl Backend) {
    let store = b.debug(DebugLimits::default()).await;
    for n in 0..7u64 {
        store
            .append(
                "acct",
                &format!("call-{n}"),
                "n",
                vec![entry(1, 1000 + n, request("u"))],
            )
            .await
            .unwrap();
    }
    // Another account's calls are interleaved and must not appear.
    store
        .append("other", "call-x", "n", vec![entry(1, 1003, request("u"))])
        .await
        .unwrap();

    let first = store.list("acct", 3, None).await.unwrap();
    let second = store
        .list("acct", 3, first.next_start_key.as_deref())
        .await
        .unwrap();
    let third = store
        .list("acct", 3, second.next_start_key.as_deref())
        .await
        .unwrap();
    let ids = |page: &pivot_cluster::DebugPage| {
        page.summaries
            .iter()
            .map(|s| s.call_id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&first), ["call-6", "call-5", "call-4"]);
    assert_eq!(ids(&second), ["call-3", "call-2", "call-1"]);
    assert_eq!(ids(&third), ["call-0"]);
    assert!(first.next_start_key.is_some() && second.next_start_key.is_some());
    assert_eq!(third.next_start_key, None);

    // Exactly a page's worth left: no dangling empty page.
    let exact = store.list("acct", 7, None).await.unwrap();
    assert_eq!(exact.summaries.len(), 7);
    assert_eq!(exact.next_start_key, None);
}

pub async fn page_size_is_capped_at_100_and_bad_keys_are_refused(b: &impl Backend) {
    let store = b.debug(DebugLimits::default()).await;
    for n in 0..150u64 {
        store
            .append(
                "acct",
                &format!("c{n:03}"),
                "n",
                vec![entry(1, n, request("u"))],
            )
            .await
            .unwrap();
    }
    let page = store.list("acct", 1000, None).await.unwrap();
    assert_eq!(page.summaries.len(), 100);
    let rest = store
        .list("acct", 1000, page.next_start_key.as_deref())
        .await
        .unwrap();
    assert_eq!(rest.summaries.len(), 50);
    assert_eq!(rest.next_start_key, None);
    assert!(matches!(
        store.list("acct", 10, Some("nonsense")).await,
        Err(StoreError::InvalidStartKey { .. })
    ));
}

/// Short enough for a real server's clock: the Redis backend sleeps where memory's clock jumps.
pub async fn calls_expire_after_retention_since_their_last_entry(b: &impl Backend) {
    let limits = DebugLimits {
        retention: Duration::from_millis(600),
        ..DebugLimits::default()
    };
    let store = b.debug(limits).await;
    store
        .append("acct", "old", "n", vec![entry(1, 1, request("u"))])
        .await
        .unwrap();
    store
        .append("acct", "busy", "n", vec![entry(1, 2, request("u"))])
        .await
        .unwrap();
    b.advance(450).await;
    // A new entry renews "busy" but not "old".
    store
        .append("acct", "busy", "n", vec![entry(2, 3, response("200"))])
        .await
        .unwrap();
    b.advance(250).await;
    assert_eq!(store.entries("acct", "old").await.unwrap(), None);
    assert_eq!(
        store.entries("acct", "busy").await.unwrap().unwrap().len(),
        2
    );
    let page = store.list("acct", 10, None).await.unwrap();
    assert_eq!(page.summaries.len(), 1);
    b.advance(600).await;
    assert!(
        store
            .list("acct", 10, None)
            .await
            .unwrap()
            .summaries
            .is_empty()
    );
    assert_eq!(store.entries("acct", "busy").await.unwrap(), None);
}

pub async fn entries_beyond_the_per_call_bound_are_dropped_and_counted(b: &impl Backend) {
    let limits = DebugLimits {
        max_entries_per_call: 5,
        ..DebugLimits::default()
    };
    let store = b.debug(limits).await;
    let batch = |from: u64, n: u64| {
        (from..from + n)
            .map(|i| entry(1, i, request("u")))
            .collect()
    };
    assert_eq!(
        store.append("acct", "c", "n", batch(0, 3)).await.unwrap(),
        0
    );
    assert_eq!(
        store.append("acct", "c", "n", batch(3, 4)).await.unwrap(),
        2
    );
    assert_eq!(
        store.append("acct", "c", "n", batch(7, 1)).await.unwrap(),
        1
    );
    let kept = store.entries("acct", "c").await.unwrap().unwrap();
    assert_eq!(
        kept.iter().map(|e| e.created_unix_ms).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );
}

pub async fn the_oldest_call_is_evicted_beyond_max_calls(b: &impl Backend) {
    let limits = DebugLimits {
        max_calls: 3,
        ..DebugLimits::default()
    };
    let store = b.debug(limits).await;
    for call in ["c1", "c2", "c3"] {
        store
            .append("acct", call, "n", vec![entry(1, 1, request("u"))])
            .await
            .unwrap();
        // Several milliseconds, so a real server's clock orders the appends too.
        b.advance(5).await;
    }
    // c1 was written to last, so c2 is now the oldest.
    store
        .append("acct", "c1", "n", vec![entry(2, 2, response("200"))])
        .await
        .unwrap();
    store
        .append("acct", "c4", "n", vec![entry(1, 3, request("u"))])
        .await
        .unwrap();
    assert_eq!(store.entries("acct", "c2").await.unwrap(), None);
    for call in ["c1", "c3", "c4"] {
        assert!(
            store.entries("acct", call).await.unwrap().is_some(),
            "{call}"
        );
    }
    assert_eq!(
        store.list("acct", 10, None).await.unwrap().summaries.len(),
        3
    );
}

pub async fn oversized_records_are_truncated_or_replaced_by_a_marker(b: &impl Backend) {
    let limits = DebugLimits {
        max_record_bytes: 2048,
        ..DebugLimits::default()
    };
    let store = b.debug(limits).await;
    let big_body = json!({"resp_status_code": "200", "resp_body": "x".repeat(100_000)});
    let many_fields: serde_json::Map<String, Value> = (0..1000)
        .map(|i| (format!("header-{i}"), json!(i)))
        .collect();
    store
        .append(
            "acct",
            "c",
            "n",
            vec![
                entry(1, 1, big_body),
                entry(1, 2, Value::Object(many_fields)),
            ],
        )
        .await
        .unwrap();
    let kept = store.entries("acct", "c").await.unwrap().unwrap();
    assert_eq!(kept.len(), 2, "nothing is dropped silently");
    for e in &kept {
        assert!(serde_json::to_vec(&e.record).unwrap().len() <= 2048);
    }
    assert_eq!(kept[0].record["resp_status_code"], "200");
    assert_eq!(kept[0].record["truncated"], true);
    assert_eq!(kept[1].record["error"], "too_large");
    assert!(
        store.list("acct", 1, None).await.unwrap().summaries[0].has_errors,
        "a replaced record shows up as an error"
    );
}

pub async fn oversized_ids_are_refused_and_empty_appends_create_nothing(b: &impl Backend) {
    let store = b.debug(DebugLimits::default()).await;
    assert!(matches!(
        store
            .append(
                "acct",
                &"c".repeat(300),
                "n",
                vec![entry(1, 1, request("u"))]
            )
            .await,
        Err(StoreError::TooLarge {
            what: "call_id",
            ..
        })
    ));
    assert_eq!(store.append("acct", "c", "n", Vec::new()).await.unwrap(), 0);
    assert_eq!(store.entries("acct", "c").await.unwrap(), None);
}
