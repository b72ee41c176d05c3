//! Rendezvous ranking, pinned: every node of a cluster (whatever Rust built it) must compute
//! the same order, so these exact orders and weights must never change. (The weights were
//! cross-checked against an independent Python implementation of FNV-1a 64 + splitmix64.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use pivot_cluster::{rendezvous_rank, rendezvous_weight};

fn nodes(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

#[test]
fn golden_weights() {
    assert_eq!(
        rendezvous_weight("call-1", "pivot-1"),
        0xcf3f_f9b6_192e_a1a7
    );
    assert_eq!(rendezvous_weight("", ""), 0x4f2d_b50f_1240_40cd);
}

#[test]
fn golden_rankings() {
    let fleet = nodes(&["pivot-1", "pivot-2", "pivot-3", "node-a", "node-b"]);
    let golden: [(&str, [&str; 5]); 4] = [
        (
            "call-1",
            ["pivot-1", "pivot-2", "pivot-3", "node-a", "node-b"],
        ),
        (
            "call-2",
            ["node-a", "node-b", "pivot-3", "pivot-2", "pivot-1"],
        ),
        (
            "a3f9c2e1-7b4d-4e8a-9c1f-2d5b6e7f8a90",
            ["pivot-3", "pivot-2", "node-a", "pivot-1", "node-b"],
        ),
        ("", ["pivot-2", "node-b", "node-a", "pivot-1", "pivot-3"]),
    ];
    for (call, expected) in golden {
        assert_eq!(rendezvous_rank(call, &fleet), expected, "{call:?}");
        // The input order never matters.
        let mut reversed = fleet.clone();
        reversed.reverse();
        assert_eq!(rendezvous_rank(call, &reversed), expected, "{call:?}");
    }
}

#[test]
fn first_choices_spread_evenly_over_the_nodes() {
    let fleet = nodes(&["pivot-1", "pivot-2", "pivot-3"]);
    let mut firsts = [0usize; 3];
    for n in 0..3000 {
        let first = rendezvous_rank(&format!("call-{n}"), &fleet).remove(0);
        firsts[fleet.iter().position(|f| *f == first).unwrap()] += 1;
    }
    assert!(
        firsts.iter().all(|&f| (850..1150).contains(&f)),
        "{firsts:?}"
    );
}
