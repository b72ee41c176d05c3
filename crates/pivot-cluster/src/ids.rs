//! Fresh ids for callflows and debug entries, without a random-number dependency.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);
static SEED: OnceLock<u64> = OnceLock::new();

/// splitmix64's finaliser: a bijection on u64, so distinct inputs never collide.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn seed() -> u64 {
    *SEED.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        // Time and pid differ between processes and restarts, so ids from two nodes (or two
        // runs of one) are unlikely to meet; within the process the counter guarantees it.
        #[allow(clippy::cast_possible_truncation)]
        let folded = (nanos as u64) ^ ((nanos >> 64) as u64);
        mix(folded ^ (u64::from(std::process::id()) << 32))
    })
}

/// A fresh id: 32 lowercase hex characters, like KAZOO document ids. Unique within the process
/// (the low half is a bijection of a counter); the high half varies with time so ids from
/// different processes look unrelated.
pub fn new_id() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let seed = seed();
    let low = mix(n ^ seed);
    let high = mix(low ^ crate::now_unix_ms().rotate_left(17) ^ seed.rotate_left(29));
    format!("{high:016x}{low:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_32_lowercase_hex_and_distinct() {
        let ids: std::collections::HashSet<String> = (0..10_000).map(|_| new_id()).collect();
        assert_eq!(ids.len(), 10_000);
        for id in &ids {
            assert_eq!(id.len(), 32);
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            );
        }
    }
}
