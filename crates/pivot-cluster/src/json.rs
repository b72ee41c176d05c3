//! Measuring JSON without materialising it.

use serde::Serialize;

struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 = self.0.saturating_add(buf.len());
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The compact serialized size of `value`, counted rather than allocated so that checking a
/// bound never costs the memory the bound protects.
pub(crate) fn serialized_len<T: Serialize + ?Sized>(value: &T) -> usize {
    let mut counter = Counter(0);
    // Serializing a `serde_json::Value` or our plain structs into a writer that never fails
    // cannot fail; should it ever, the partial count is still a lower bound worth using.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_like_to_vec() {
        let value = serde_json::json!({"a": [1, "x\"y", null], "b": {"c": true}});
        let expected = serde_json::to_vec(&value).map(|v| v.len()).unwrap_or(0);
        assert_eq!(serialized_len(&value), expected);
    }
}
