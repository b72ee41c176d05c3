//! Behavioural tests shared by every backend: each case takes a [`Backend`] that makes fresh
//! stores with the bounds the case needs, and `*_cases!` macros instantiate every case as a
//! `#[tokio::test]` for one backend (`tests/ownership.rs` for memory, `tests/redis_*.rs` for
//! Redis), so both backends always run the same list.
#![allow(dead_code, unused_macros, clippy::unwrap_used, clippy::expect_used)]

pub mod callflows;
pub mod debug;
pub mod nodes;
pub mod ownership;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pivot_cluster::{
    CallflowStore, DebugLimits, DebugStore, MemoryCallflows, MemoryDebugStore, MemoryNodes,
    MemoryOwnership, Nodes, Ownership,
};

/// Makes fresh, empty stores; `None` bounds mean the backend's defaults.
#[allow(async_fn_in_trait)]
pub trait Backend {
    async fn ownership(
        &self,
        max_calls: usize,
        max_checkpoint_bytes: Option<usize>,
    ) -> Arc<dyn Ownership>;
    async fn callflows(
        &self,
        max_callflows: usize,
        max_callflow_bytes: Option<usize>,
    ) -> Arc<dyn CallflowStore>;
    async fn debug(&self, limits: DebugLimits) -> Arc<dyn DebugStore>;
    async fn nodes(&self, max_nodes: usize) -> Arc<dyn Nodes>;
    /// Moves the debug store's clock on by `ms`.
    async fn advance(&self, ms: u64);
}

/// The in-memory backend, with an injected debug clock that [`Backend::advance`] moves.
pub struct Memory {
    now: Arc<AtomicU64>,
}

impl Memory {
    pub fn new() -> Memory {
        Memory {
            now: Arc::new(AtomicU64::new(1_000_000)),
        }
    }
}

impl Backend for Memory {
    async fn ownership(
        &self,
        max_calls: usize,
        max_checkpoint_bytes: Option<usize>,
    ) -> Arc<dyn Ownership> {
        let store = MemoryOwnership::new(max_calls);
        Arc::new(match max_checkpoint_bytes {
            Some(max) => store.with_max_checkpoint_bytes(max),
            None => store,
        })
    }

    async fn callflows(
        &self,
        max_callflows: usize,
        max_callflow_bytes: Option<usize>,
    ) -> Arc<dyn CallflowStore> {
        let store = MemoryCallflows::new(max_callflows);
        Arc::new(match max_callflow_bytes {
            Some(max) => store.with_max_callflow_bytes(max),
            None => store,
        })
    }

    async fn debug(&self, limits: DebugLimits) -> Arc<dyn DebugStore> {
        let clock = Arc::clone(&self.now);
        Arc::new(MemoryDebugStore::with_clock(
            limits,
            Arc::new(move || clock.load(Ordering::SeqCst)),
        ))
    }

    async fn nodes(&self, max_nodes: usize) -> Arc<dyn Nodes> {
        Arc::new(MemoryNodes::new(max_nodes))
    }

    async fn advance(&self, ms: u64) {
        self.now.fetch_add(ms, Ordering::SeqCst);
    }
}

/// Real time for a backend whose clock is a server's.
pub async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// One `#[tokio::test]` per named case of `cases::$module`, each with a fresh `$backend`.
macro_rules! backend_tests {
    ($module:ident, $backend:expr, [$($case:ident),* $(,)?]) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let backend = $backend;
                crate::cases::$module::$case(&backend).await;
            }
        )*
    };
}

macro_rules! ownership_cases {
    ($backend:expr) => {
        backend_tests!(
            ownership,
            $backend,
            [
                exactly_one_of_eight_racing_tasks_claims,
                a_stale_checkpoint_is_fenced_with_both_epochs,
                a_second_claim_of_an_owned_call_gets_none,
                release_then_adopt_bumps_the_epoch_and_fences_the_releaser,
                claiming_a_released_call_takes_the_next_epoch_and_keeps_the_checkpoint,
                a_claim_with_its_first_checkpoint_writes_it_only_when_won,
                an_adoption_brings_the_checkpoint_to_resume_from,
                finish_forgets_the_call,
                the_old_owner_may_finish_a_released_call_nobody_adopted_yet,
                claims_beyond_max_calls_are_full_and_finishing_frees_room,
                oversized_checkpoints_are_too_large_and_keep_the_previous_one,
                the_default_checkpoint_bound_is_256_kib,
                oversized_ids_are_refused,
                calls_filter_by_account_sort_by_id_and_respect_the_limit,
                calls_of_node_follow_claims_adoptions_releases_and_finishes,
            ]
        );
    };
}

macro_rules! callflow_cases {
    ($backend:expr) => {
        backend_tests!(
            callflows,
            $backend,
            [
                an_empty_id_gets_a_fresh_32_hex_id,
                numbers_are_unique_across_accounts,
                replacing_a_callflow_frees_the_numbers_it_dropped,
                delete_frees_numbers_and_reports_existence,
                accounts_do_not_see_each_others_callflows,
                exact_numbers_win_over_patterns_then_the_longest_pattern_match,
                the_longest_pattern_match_wins,
                numbers_resolve_with_and_without_a_leading_plus,
                an_invalid_pattern_is_named_by_its_index,
                patterns_that_compile_too_large_are_invalid,
                the_callflow_count_is_bounded_but_replacing_is_not_refused,
                an_oversized_flow_is_too_large,
                the_default_flow_bound_is_one_mib,
            ]
        );
    };
}

macro_rules! debug_cases {
    ($backend:expr) => {
        backend_tests!(
            debug,
            $backend,
            [
                summaries_reflect_the_entries,
                a_call_without_errors_says_so_and_given_ids_are_kept,
                an_account_never_sees_another_accounts_calls,
                listing_pages_newest_first_across_three_pages,
                page_size_is_capped_at_100_and_bad_keys_are_refused,
                calls_expire_after_retention_since_their_last_entry,
                entries_beyond_the_per_call_bound_are_dropped_and_counted,
                the_oldest_call_is_evicted_beyond_max_calls,
                oversized_records_are_truncated_or_replaced_by_a_marker,
                oversized_ids_are_refused_and_empty_appends_create_nothing,
            ]
        );
    };
}

macro_rules! node_cases {
    ($backend:expr) => {
        backend_tests!(
            nodes,
            $backend,
            [
                heartbeats_make_nodes_live_sorted_by_id,
                a_heartbeat_expires_after_its_ttl_unless_renewed,
                a_node_that_leaves_is_gone_at_once,
                the_registry_is_bounded_but_expired_nodes_free_room,
                oversized_names_and_addresses_are_refused,
            ]
        );
    };
}
