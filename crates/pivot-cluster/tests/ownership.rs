//! Ownership on the in-memory backend: the shared behaviour cases, plus a race between OS
//! threads each with its own runtime (the memory store's mutex, not just the async path).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod cases;

use std::sync::{Arc, Barrier};

use pivot_cluster::{Lease, MemoryOwnership, Ownership};

ownership_cases!(cases::Memory::new());

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

fn futures_block<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(future)
}
