//! The node registry through the trait object, for every backend: renewal, expiry, leaving,
//! bounds. Real time (TTLs of a few hundred milliseconds): both backends expire by the clock.

use std::time::Duration;

use pivot_cluster::{ClusterError, NodeInfo};

use super::Backend;

const TTL: Duration = Duration::from_millis(300);

fn node(id: &str, advertise: &str) -> NodeInfo {
    NodeInfo {
        id: id.into(),
        advertise: advertise.into(),
    }
}

pub async fn heartbeats_make_nodes_live_sorted_by_id(b: &impl Backend) {
    let nodes = b.nodes(8).await;
    assert!(nodes.live().await.unwrap().is_empty());
    nodes.heartbeat("n2", "http://n2:8080", TTL).await.unwrap();
    nodes.heartbeat("n1", "http://n1:8080", TTL).await.unwrap();
    assert_eq!(
        nodes.live().await.unwrap(),
        [node("n1", "http://n1:8080"), node("n2", "http://n2:8080")]
    );
    assert!(nodes.is_live("n1").await.unwrap());
    assert!(!nodes.is_live("n3").await.unwrap());
    // A renewal may change the advertised address.
    nodes.heartbeat("n1", "http://n1:9090", TTL).await.unwrap();
    assert_eq!(nodes.live().await.unwrap()[0], node("n1", "http://n1:9090"));
    // Absurd TTLs are clamped, not refused; zero is the shortest lease there is.
    nodes
        .heartbeat("n3", "http://n3", Duration::MAX)
        .await
        .unwrap();
    assert!(nodes.is_live("n3").await.unwrap());
    nodes
        .heartbeat("n4", "http://n4", Duration::ZERO)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(!nodes.is_live("n4").await.unwrap());
}

pub async fn a_heartbeat_expires_after_its_ttl_unless_renewed(b: &impl Backend) {
    let nodes = b.nodes(8).await;
    nodes.heartbeat("dying", "http://d", TTL).await.unwrap();
    nodes.heartbeat("renewed", "http://r", TTL).await.unwrap();
    for _ in 0..3 {
        tokio::time::sleep(TTL / 2).await;
        nodes.heartbeat("renewed", "http://r", TTL).await.unwrap();
    }
    // 450 ms after its only heartbeat, "dying" is gone; "renewed" was renewed 0 ms ago.
    assert!(!nodes.is_live("dying").await.unwrap());
    assert_eq!(nodes.live().await.unwrap(), [node("renewed", "http://r")]);
    tokio::time::sleep(TTL + TTL / 3).await;
    assert!(!nodes.is_live("renewed").await.unwrap());
    assert!(nodes.live().await.unwrap().is_empty());
}

pub async fn a_node_that_leaves_is_gone_at_once(b: &impl Backend) {
    let nodes = b.nodes(8).await;
    nodes
        .heartbeat("n1", "http://n1", Duration::from_secs(60))
        .await
        .unwrap();
    nodes.leave("n1").await.unwrap();
    nodes.leave("never-seen").await.unwrap();
    assert!(!nodes.is_live("n1").await.unwrap());
    assert!(nodes.live().await.unwrap().is_empty());
}

pub async fn the_registry_is_bounded_but_expired_nodes_free_room(b: &impl Backend) {
    let nodes = b.nodes(2).await;
    nodes.heartbeat("a", "http://a", TTL).await.unwrap();
    nodes
        .heartbeat("b", "http://b", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        nodes.heartbeat("c", "http://c", TTL).await,
        Err(ClusterError::Full {
            what: "nodes",
            limit: 2
        })
    );
    // Renewing a registered node is never refused.
    nodes.heartbeat("a", "http://a", TTL).await.unwrap();
    tokio::time::sleep(TTL + TTL / 3).await;
    nodes.heartbeat("c", "http://c", TTL).await.unwrap();
    let ids: Vec<String> = nodes
        .live()
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.id)
        .collect();
    assert_eq!(ids, ["b", "c"]);
}

pub async fn oversized_names_and_addresses_are_refused(b: &impl Backend) {
    let nodes = b.nodes(8).await;
    assert!(matches!(
        nodes.heartbeat(&"n".repeat(257), "http://x", TTL).await,
        Err(ClusterError::TooLarge { what: "node", .. })
    ));
    assert!(matches!(
        nodes.heartbeat("n", &"x".repeat(2000), TTL).await,
        Err(ClusterError::TooLarge {
            what: "advertise",
            ..
        })
    ));
    assert!(!nodes.is_live(&"n".repeat(257)).await.unwrap());
}
