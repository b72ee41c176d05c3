//! Which node should take a call: rendezvous (highest-random-weight) hashing (DESIGN §7).
//!
//! Every node computes the same ranking from the call id and the live node list alone, so the
//! first-ranked node claims at once and the others wait, without any coordination. When a node
//! joins or leaves, only the calls it ranks first for move. The hash is fixed here (FNV-1a 64
//! with a splitmix64 finaliser) rather than Rust's `DefaultHasher`, whose output may change
//! between Rust releases: nodes built by different toolchains must agree on the ranking.

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The nodes ordered by their weight for `call_id`, highest first; ties (only possible for
/// equal names) broken by name, duplicates removed.
pub fn rendezvous_rank(call_id: &str, nodes: &[String]) -> Vec<String> {
    let mut scored: Vec<(u64, &String)> = nodes
        .iter()
        .map(|node| (rendezvous_weight(call_id, node), node))
        .collect();
    scored.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    scored.dedup_by(|a, b| a.1 == b.1);
    scored.into_iter().map(|(_, node)| node.clone()).collect()
}

/// The weight of `node` for `call_id`. Public so that tests and tools can show why a node ranks
/// where it does.
pub fn rendezvous_weight(call_id: &str, node: &str) -> u64 {
    let mut hash = FNV_OFFSET;
    // 0xff never occurs in UTF-8, so ("ab", "c") and ("a", "bc") hash differently.
    for byte in node.bytes().chain([0xff]).chain(call_id.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    // FNV-1a's low avalanche would make node names that differ in one character rank together;
    // the finaliser spreads every input bit over the whole weight.
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    hash ^ (hash >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn every_node_appears_once_and_order_does_not_depend_on_input_order() {
        let a = rendezvous_rank("call", &nodes(&["n1", "n2", "n3", "n2"]));
        let b = rendezvous_rank("call", &nodes(&["n3", "n2", "n1"]));
        assert_eq!(a, b);
        assert_eq!(a.len(), 3);
        assert!(rendezvous_rank("call", &[]).is_empty());
    }

    #[test]
    fn removing_a_node_only_moves_the_calls_it_ranked_first() {
        let all = nodes(&["a", "b", "c", "d"]);
        let without_c = nodes(&["a", "b", "d"]);
        let mut moved = 0;
        for n in 0..1000 {
            let call = format!("call-{n}");
            let before = rendezvous_rank(&call, &all);
            let after = rendezvous_rank(&call, &without_c);
            if before[0] == "c" {
                moved += 1;
                assert_eq!(after[0], before[1]);
            } else {
                assert_eq!(after[0], before[0]);
            }
        }
        // Roughly a quarter of the calls were c's.
        assert!((150..350).contains(&moved), "{moved}");
    }
}
