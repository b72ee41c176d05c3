//! Callflows through the trait object, for every backend: ids, number uniqueness across
//! accounts, replacement, pattern and +/no-plus resolution, bounds.

use pivot_cluster::{Callflow, StoreError};
use serde_json::json;

use super::Backend;

fn callflow(account: &str, id: &str, numbers: &[&str], patterns: &[&str]) -> Callflow {
    Callflow {
        id: id.into(),
        account_id: account.into(),
        name: Some(format!("{account}/{id}")),
        numbers: numbers.iter().map(|n| (*n).to_owned()).collect(),
        patterns: patterns.iter().map(|p| (*p).to_owned()).collect(),
        flow: json!({"module": "pivot", "data": {"voice_url": format!("http://{id}.example/")}}),
    }
}

pub async fn an_empty_id_gets_a_fresh_32_hex_id(b: &impl Backend) {
    let store = b.callflows(10, None).await;
    let a = store
        .put(callflow("acct", "", &["100"], &[]))
        .await
        .unwrap();
    let b = store
        .put(callflow("acct", "", &["101"], &[]))
        .await
        .unwrap();
    for id in [&a.id, &b.id] {
        assert_eq!(id.len(), 32);
        assert!(
            id.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
    }
    assert_ne!(a.id, b.id);
    assert_eq!(store.get("acct", &a.id).await.unwrap(), Some(a.clone()));
    let listed = store.list("acct").await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.windows(2).all(|w| w[0].id < w[1].id));
}

pub async fn numbers_are_unique_across_accounts(b: &impl Backend) {
    let store = b.callflows(10, None).await;
    store
        .put(callflow("a", "cf1", &["+15551234567"], &[]))
        .await
        .unwrap();
    let err = store
        .put(callflow("b", "cf2", &["200", "+15551234567"], &[]))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        StoreError::NumberTaken {
            number: "+15551234567".into(),
            account_id: "a".into()
        }
    );
    // The refused write left nothing behind, not even its other numbers.
    assert!(store.list("b").await.unwrap().is_empty());
    assert_eq!(store.resolve("200", None).await.unwrap(), None);
    // Within one account, too.
    assert!(matches!(
        store
            .put(callflow("a", "cf3", &["+15551234567"], &[]))
            .await,
        Err(StoreError::NumberTaken { .. })
    ));
}

pub async fn replacing_a_callflow_frees_the_numbers_it_dropped(b: &impl Backend) {
    let store = b.callflows(10, None).await;
    store
        .put(callflow("a", "cf1", &["100", "101"], &[]))
        .await
        .unwrap();
    // Same id: a replacement, which may keep its own numbers.
    store
        .put(callflow("a", "cf1", &["101", "102"], &[]))
        .await
        .unwrap();
    assert_eq!(store.list("a").await.unwrap().len(), 1);
    assert_eq!(store.resolve("100", None).await.unwrap(), None);
    assert_eq!(store.resolve("102", None).await.unwrap().unwrap().id, "cf1");
    store
        .put(callflow("b", "cf9", &["100"], &[]))
        .await
        .unwrap();
    assert!(matches!(
        store.put(callflow("b", "cf8", &["101"], &[])).await,
        Err(StoreError::NumberTaken { account_id, .. }) if account_id == "a"
    ));
}

pub async fn delete_frees_numbers_and_reports_existence(b: &impl Backend) {
    let store = b.callflows(10, None).await;
    store
        .put(callflow("a", "cf1", &["100"], &[]))
        .await
        .unwrap();
    assert!(!store.delete("b", "cf1").await.unwrap());
    assert!(store.delete("a", "cf1").await.unwrap());
    assert!(!store.delete("a", "cf1").await.unwrap());
    assert_eq!(store.get("a", "cf1").await.unwrap(), None);
    store
        .put(callflow("b", "cf2", &["100"], &[]))
        .await
        .unwrap();
}

pub async fn accounts_do_not_see_each_others_callflows(b: &impl Backend) {
    let store = b.callflows(10, None).await;
    store
        .put(callflow("a", "same", &["100"], &[]))
        .await
        .unwrap();
    store
        .put(callflow("b", "same", &["200"], &[]))
        .await
        .unwrap();
    assert_eq!(
        store.get("a", "same").await.unwrap().unwrap().numbers,
        ["100"]
    );
    assert_eq!(
        store.get("b", "same").await.unwrap().unwrap().numbers,
        ["200"]
    );
    assert_eq!(store.resolve("100", Some("b")).await.unwrap(), None);
    assert_eq!(
        store
            .resolve("100", Some("a"))
            .await
            .unwrap()
            .unwrap()
            .account_id,
        "a"
    );
}

pub async fn exact_numbers_win_over_patterns_then_the_longest_pattern_match(b: &impl Backend) {
    let store = b.callflows(10, None).await;
    store
        .put(callflow("a", "catchall", &[], &["^\\d+$"]))
        .await
        .unwrap();
    store
        .put(callflow("a", "us", &[], &["^\\+?1?(\\d{10})$"]))
        .await
        .unwrap();
    store
        .put(callflow("b", "exact", &["15551234567"], &[]))
        .await
        .unwrap();
    assert_eq!(
        store
            .resolve("15551234567", None)
            .await
            .unwrap()
            .unwrap()
            .id,
        "exact"
    );
    // Restricted to account a, the exact number of b does not count; both patterns match
    // "15551234567" entirely, so the first in order wins.
    assert_eq!(
        store
            .resolve("15551234567", Some("a"))
            .await
            .unwrap()
            .unwrap()
            .id,
        "catchall"
    );
    // Only the US pattern accepts the plus form.
    assert_eq!(
        store
            .resolve("+15559876543", None)
            .await
            .unwrap()
            .unwrap()
            .id,
        "us"
    );
    assert_eq!(store.resolve("abc", None).await.unwrap(), None);
    assert_eq!(store.resolve("", None).await.unwrap(), None);
}

pub async fn the_longest_pattern_match_wins(b: &impl Backend) {
    let store = b.callflows(10, None).await;
    store
        .put(callflow("a", "a-short", &[], &["^55"]))
        .await
        .unwrap();
    store
        .put(callflow("a", "b-long", &[], &["^555\\d"]))
        .await
        .unwrap();
    assert_eq!(
        store.resolve("55512", None).await.unwrap().unwrap().id,
        "b-long"
    );
}

pub async fn numbers_resolve_with_and_without_a_leading_plus(b: &impl Backend) {
    let store = b.callflows(10, None).await;
    store
        .put(callflow("a", "plus", &["+4930123"], &[]))
        .await
        .unwrap();
    store
        .put(callflow("a", "bare", &["4940123"], &[]))
        .await
        .unwrap();
    store
        .put(callflow("a", "pat", &[], &["^\\+33\\d+$"]))
        .await
        .unwrap();
    assert_eq!(
        store.resolve("4930123", None).await.unwrap().unwrap().id,
        "plus"
    );
    assert_eq!(
        store.resolve("+4930123", None).await.unwrap().unwrap().id,
        "plus"
    );
    assert_eq!(
        store.resolve("+4940123", None).await.unwrap().unwrap().id,
        "bare"
    );
    assert_eq!(
        store.resolve("33123", None).await.unwrap().unwrap().id,
        "pat"
    );
}

pub async fn an_invalid_pattern_is_named_by_its_index(b: &impl Backend) {
    let store = b.callflows(10, None).await;
    let err = store
        .put(callflow("a", "cf", &["100"], &["^1\\d+$", "^(unclosed"]))
        .await
        .unwrap_err();
    match err {
        StoreError::InvalidPattern {
            index,
            pattern,
            reason,
        } => {
            assert_eq!(index, 1);
            assert_eq!(pattern, "^(unclosed");
            assert!(!reason.is_empty());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(store.get("a", "cf").await.unwrap(), None);
    assert_eq!(store.resolve("100", None).await.unwrap(), None);
}

pub async fn patterns_that_compile_too_large_are_invalid(b: &impl Backend) {
    let store = b.callflows(10, None).await;
    let err = store
        .put(callflow("a", "cf", &[], &["\\w{1000}\\w{1000}"]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::InvalidPattern { index: 0, .. }),
        "{err:?}"
    );
}

pub async fn the_callflow_count_is_bounded_but_replacing_is_not_refused(b: &impl Backend) {
    let store = b.callflows(2, None).await;
    store.put(callflow("a", "1", &[], &[])).await.unwrap();
    store.put(callflow("b", "2", &[], &[])).await.unwrap();
    assert_eq!(
        store.put(callflow("a", "3", &[], &[])).await,
        Err(StoreError::Full {
            what: "callflows",
            limit: 2
        })
    );
    store.put(callflow("a", "1", &["9"], &[])).await.unwrap();
    store.delete("b", "2").await.unwrap();
    store.put(callflow("a", "3", &[], &[])).await.unwrap();
}

pub async fn an_oversized_flow_is_too_large(b: &impl Backend) {
    let store = b.callflows(10, Some(1024)).await;
    let mut big = callflow("a", "cf", &["100"], &[]);
    big.flow = json!({"module": "pivot", "data": {"voice_url": "x".repeat(2000)}});
    assert!(matches!(
        store.put(big).await,
        Err(StoreError::TooLarge {
            what: "callflow",
            limit: 1024,
            ..
        })
    ));
    assert_eq!(store.resolve("100", None).await.unwrap(), None);
}

pub async fn the_default_flow_bound_is_one_mib(b: &impl Backend) {
    let store = b.callflows(10, None).await;
    let mut big = callflow("a", "cf", &[], &[]);
    big.flow = json!({"data": "x".repeat(1024 * 1024)});
    assert!(matches!(
        store.put(big).await,
        Err(StoreError::TooLarge { .. })
    ));
}
