//! Pivot debug logs (DESIGN §8: `GET /v2/accounts/{account_id}/pivot/debug[/{call_id}]`).
//!
//! Entries are kept per (account, call): an account can only ever reach its own calls. Every
//! dimension is bounded — retention, entries per call, calls, bytes per record — and whatever a
//! bound removes is either reported to the caller (dropped entries) or marked in the record
//! (truncated strings, the `too_large` marker).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::json::serialized_len;
use crate::{BoxFuture, StoreError, lock, new_id, now_unix_ms};

/// The largest page [`DebugStore::list`] returns.
pub const MAX_PAGE_SIZE: usize = 100;
/// Account and call ids are map keys.
pub const MAX_KEY_BYTES: usize = 256;
/// Strings are never truncated below this: shorter ones carry the record's meaning (method,
/// status code, cause), and a record that needs them cut further becomes the marker instead.
const MIN_STRING_BYTES: usize = 64;

/// One debug entry: a request, response or error record from the engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DebugEntry {
    /// Unique per entry; an empty one gets a fresh id on append.
    pub id: String,
    pub call_id: String,
    pub iteration: u32,
    pub created_unix_ms: u64,
    /// The engine's request/response/error object (`uri`, `resp_status_code`, `error`, …).
    pub record: Value,
}

/// One call in the account's debug listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebugSummary {
    pub call_id: String,
    /// Of the call's first entry.
    pub created_unix_ms: u64,
    /// The first request's `uri`.
    pub uri: Option<String>,
    /// The last `resp_status_code` seen.
    pub status_code: Option<String>,
    /// The node that appended last: the one driving the call most recently.
    pub node: String,
    /// The highest iteration seen.
    pub iteration: u32,
    /// Whether any record has an `error` field.
    pub has_errors: bool,
}

/// One page of an account's debug listing, newest call first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebugPage {
    pub summaries: Vec<DebugSummary>,
    /// Pass back as `start_key` for the next page; `None` on the last page.
    pub next_start_key: Option<String>,
}

/// The bounds of a debug store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebugLimits {
    /// A call is forgotten this long after its last entry.
    pub retention: Duration,
    /// Further entries of a call are dropped (and counted in `append`'s answer).
    pub max_entries_per_call: usize,
    /// Beyond this, the call with the oldest last entry is evicted first.
    pub max_calls: usize,
    /// Larger records have string fields truncated, or are replaced by a
    /// `{"error":"too_large",…}` marker when truncation is not enough.
    pub max_record_bytes: usize,
}

impl Default for DebugLimits {
    fn default() -> DebugLimits {
        DebugLimits {
            retention: Duration::from_secs(7 * 24 * 3600),
            max_entries_per_call: 200,
            max_calls: 10_000,
            max_record_bytes: 128 * 1024,
        }
    }
}

/// Debug logs of all accounts.
pub trait DebugStore: Send + Sync + std::fmt::Debug + 'static {
    /// Appends entries for one call of one account, from node `node`. Entries beyond
    /// `max_entries_per_call` are dropped; the answer is how many were.
    fn append<'a>(
        &'a self,
        account_id: &'a str,
        call_id: &'a str,
        node: &'a str,
        entries: Vec<DebugEntry>,
    ) -> BoxFuture<'a, Result<usize, StoreError>>;

    /// The account's calls, newest first (by their first entry), at most `page_size` (capped at
    /// [`MAX_PAGE_SIZE`]), starting after `start_key` (from a previous page's `next_start_key`).
    fn list<'a>(
        &'a self,
        account_id: &'a str,
        page_size: usize,
        start_key: Option<&'a str>,
    ) -> BoxFuture<'a, Result<DebugPage, StoreError>>;

    /// One call's entries in append order; `None` if unknown or another account's.
    fn entries<'a>(
        &'a self,
        account_id: &'a str,
        call_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<DebugEntry>>, StoreError>>;
}

/// Milliseconds since the Unix epoch; injectable so retention can be tested without sleeping.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

type CallKey = (String, String);

#[derive(Debug)]
struct CallLog {
    summary: DebugSummary,
    entries: Vec<DebugEntry>,
    /// The store clock at the last append, and the sequence number that orders equal times.
    last: (u64, u64),
}

#[derive(Debug, Default)]
struct Inner {
    calls: HashMap<CallKey, CallLog>,
    /// (last append time, sequence, key), oldest first: what expires or is evicted next.
    by_last: BTreeSet<(u64, u64, CallKey)>,
    /// Account → (created, call id): the listing order, newest last.
    by_account: HashMap<String, BTreeSet<(u64, String)>>,
    seq: u64,
}

/// The in-memory [`DebugStore`].
pub struct MemoryDebugStore {
    limits: DebugLimits,
    clock: Clock,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for MemoryDebugStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryDebugStore")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl MemoryDebugStore {
    pub fn new(limits: DebugLimits) -> MemoryDebugStore {
        MemoryDebugStore::with_clock(limits, Arc::new(now_unix_ms))
    }

    pub fn with_clock(limits: DebugLimits, clock: Clock) -> MemoryDebugStore {
        MemoryDebugStore {
            limits,
            clock,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn retention_ms(&self) -> u64 {
        u64::try_from(self.limits.retention.as_millis()).unwrap_or(u64::MAX)
    }

    fn append_now(
        &self,
        account_id: &str,
        call_id: &str,
        node: &str,
        entries: Vec<DebugEntry>,
    ) -> Result<usize, StoreError> {
        check_key("account_id", account_id)?;
        check_key("call_id", call_id)?;
        check_key("node", node)?;
        let now = (self.clock)();
        // Bounding the records before the lock keeps the critical section short.
        let mut entries = prepare(call_id, entries, self.limits.max_record_bytes);

        let mut inner = lock(&self.inner);
        inner.purge(now, self.retention_ms());
        let key = (account_id.to_owned(), call_id.to_owned());
        let room = self
            .limits
            .max_entries_per_call
            .saturating_sub(inner.calls.get(&key).map_or(0, |log| log.entries.len()));
        let dropped = entries.len().saturating_sub(room);
        entries.truncate(room);
        if entries.is_empty() {
            return Ok(dropped);
        }
        inner.seq += 1;
        let last = (now, inner.seq);
        let mut log = match inner.calls.remove(&key) {
            Some(log) => {
                inner.by_last.remove(&(log.last.0, log.last.1, key.clone()));
                log
            }
            None => {
                let created = entries.first().map_or(now, |e| e.created_unix_ms);
                inner
                    .by_account
                    .entry(key.0.clone())
                    .or_default()
                    .insert((created, key.1.clone()));
                CallLog {
                    summary: DebugSummary {
                        call_id: call_id.to_owned(),
                        created_unix_ms: created,
                        uri: None,
                        status_code: None,
                        node: String::new(),
                        iteration: 0,
                        has_errors: false,
                    },
                    entries: Vec::new(),
                    last,
                }
            }
        };
        log.last = last;
        log.summary.node = node.to_owned();
        for entry in &entries {
            summarise(&mut log.summary, entry);
        }
        log.entries.append(&mut entries);
        inner.by_last.insert((last.0, last.1, key.clone()));
        inner.calls.insert(key, log);
        while inner.calls.len() > self.limits.max_calls {
            if !inner.evict_oldest() {
                break;
            }
        }
        Ok(dropped)
    }

    fn list_now(
        &self,
        account_id: &str,
        page_size: usize,
        start_key: Option<&str>,
    ) -> Result<DebugPage, StoreError> {
        let after = start_key.map(parse_start_key).transpose()?;
        let page_size = page_size.clamp(1, MAX_PAGE_SIZE);
        let now = (self.clock)();
        let mut inner = lock(&self.inner);
        inner.purge(now, self.retention_ms());
        let Some(index) = inner.by_account.get(account_id) else {
            return Ok(DebugPage {
                summaries: Vec::new(),
                next_start_key: None,
            });
        };
        let mut keys: Vec<&(u64, String)> = match &after {
            Some(after) => index.range(..after).rev().take(page_size + 1).collect(),
            None => index.iter().rev().take(page_size + 1).collect(),
        };
        let more = keys.len() > page_size;
        keys.truncate(page_size);
        let next_start_key = if more {
            keys.last()
                .map(|(created, call_id)| start_key_of(*created, call_id))
        } else {
            None
        };
        let summaries = keys
            .into_iter()
            .filter_map(|(_, call_id)| {
                inner
                    .calls
                    .get(&(account_id.to_owned(), call_id.clone()))
                    .map(|log| log.summary.clone())
            })
            .collect();
        Ok(DebugPage {
            summaries,
            next_start_key,
        })
    }

    fn entries_now(&self, account_id: &str, call_id: &str) -> Option<Vec<DebugEntry>> {
        let now = (self.clock)();
        let mut inner = lock(&self.inner);
        inner.purge(now, self.retention_ms());
        inner
            .calls
            .get(&(account_id.to_owned(), call_id.to_owned()))
            .map(|log| log.entries.clone())
    }
}

impl Inner {
    fn purge(&mut self, now: u64, retention_ms: u64) {
        while let Some((last, _, _)) = self.by_last.first() {
            if last.saturating_add(retention_ms) > now {
                break;
            }
            self.evict_oldest();
        }
    }

    /// Whether there was anything to evict.
    fn evict_oldest(&mut self) -> bool {
        let Some((_, _, key)) = self.by_last.pop_first() else {
            return false;
        };
        if let Some(log) = self.calls.remove(&key)
            && let Some(index) = self.by_account.get_mut(&key.0)
        {
            index.remove(&(log.summary.created_unix_ms, key.1));
            if index.is_empty() {
                self.by_account.remove(&key.0);
            }
        }
        true
    }
}

impl DebugStore for MemoryDebugStore {
    fn append<'a>(
        &'a self,
        account_id: &'a str,
        call_id: &'a str,
        node: &'a str,
        entries: Vec<DebugEntry>,
    ) -> BoxFuture<'a, Result<usize, StoreError>> {
        Box::pin(async move { self.append_now(account_id, call_id, node, entries) })
    }

    fn list<'a>(
        &'a self,
        account_id: &'a str,
        page_size: usize,
        start_key: Option<&'a str>,
    ) -> BoxFuture<'a, Result<DebugPage, StoreError>> {
        Box::pin(async move { self.list_now(account_id, page_size, start_key) })
    }

    fn entries<'a>(
        &'a self,
        account_id: &'a str,
        call_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<DebugEntry>>, StoreError>> {
        Box::pin(async move { Ok(self.entries_now(account_id, call_id)) })
    }
}

/// Gives each entry an id and the call's id, and bounds its record: what both backends store.
pub(crate) fn prepare(
    call_id: &str,
    entries: Vec<DebugEntry>,
    max_record_bytes: usize,
) -> Vec<DebugEntry> {
    entries
        .into_iter()
        .map(|mut entry| {
            if entry.id.is_empty() {
                entry.id = new_id();
            }
            entry.call_id = call_id.to_owned();
            entry.record = bound_record(entry.record, max_record_bytes);
            entry
        })
        .collect()
}

pub(crate) fn check_key(what: &'static str, value: &str) -> Result<(), StoreError> {
    if value.len() > MAX_KEY_BYTES {
        return Err(StoreError::TooLarge {
            what,
            size: value.len(),
            limit: MAX_KEY_BYTES,
        });
    }
    Ok(())
}

pub(crate) fn summarise(summary: &mut DebugSummary, entry: &DebugEntry) {
    summary.iteration = summary.iteration.max(entry.iteration);
    let Value::Object(record) = &entry.record else {
        return;
    };
    if summary.uri.is_none()
        && let Some(Value::String(uri)) = record.get("uri")
    {
        summary.uri = Some(uri.clone());
    }
    match record.get("resp_status_code") {
        Some(Value::String(code)) => summary.status_code = Some(code.clone()),
        Some(Value::Number(code)) => summary.status_code = Some(code.to_string()),
        _ => {}
    }
    if record.contains_key("error") {
        summary.has_errors = true;
    }
}

/// The key is the last listed call's position, so a page boundary stays put when calls are
/// added or expire. Hex-encoded creation time first (fixed width), then the call id.
pub(crate) fn start_key_of(created: u64, call_id: &str) -> String {
    format!("{created:016x}{call_id}")
}

pub(crate) fn parse_start_key(key: &str) -> Result<(u64, String), StoreError> {
    let invalid = || StoreError::InvalidStartKey {
        key: key.to_owned(),
    };
    let (created, call_id) = key.split_at_checked(16).ok_or_else(invalid)?;
    if call_id.is_empty() || !created.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid());
    }
    let created = u64::from_str_radix(created, 16).map_err(|_| invalid())?;
    Ok((created, call_id.to_owned()))
}

/// Fits a record into `limit` serialized bytes: first by truncating its longest strings (bodies,
/// headers) to ever smaller caps, each cut marked; if even the smallest cap is not enough, the
/// record becomes a small marker saying how large it was.
fn bound_record(record: Value, limit: usize) -> Value {
    let size = serialized_len(&record);
    if size <= limit {
        return record;
    }
    let mut cap = limit / 2;
    while cap >= MIN_STRING_BYTES {
        let mut truncated = record.clone();
        truncate_strings(&mut truncated, cap);
        if let Value::Object(fields) = &mut truncated {
            fields.insert("truncated".to_owned(), Value::Bool(true));
        }
        if serialized_len(&truncated) <= limit {
            return truncated;
        }
        cap /= 2;
    }
    serde_json::json!({
        "error": "too_large",
        "message": format!("debug record of {size} bytes exceeds the limit of {limit}"),
        "size": size,
        "limit": limit,
    })
}

fn truncate_strings(value: &mut Value, cap: usize) {
    match value {
        Value::String(text) if text.len() > cap => {
            let keep = floor_char_boundary(text, cap);
            let cut = text.len() - keep;
            text.truncate(keep);
            text.push_str(&format!("…[{cut} bytes truncated]"));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| truncate_strings(v, cap)),
        Value::Object(fields) => fields.values_mut().for_each(|v| truncate_strings(v, cap)),
        _ => {}
    }
}

fn floor_char_boundary(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn small_records_are_untouched() {
        let record = json!({"uri": "http://x/", "method": "get"});
        assert_eq!(bound_record(record.clone(), 1024), record);
    }

    #[test]
    fn long_strings_are_truncated_on_char_boundaries_and_marked() {
        let body = "é".repeat(10_000);
        let record = json!({"resp_status_code": "200", "resp_body": body});
        let bounded = bound_record(record, 4096);
        assert!(serialized_len(&bounded) <= 4096);
        assert_eq!(bounded["resp_status_code"], "200");
        assert_eq!(bounded["truncated"], true);
        let text = bounded["resp_body"].as_str().unwrap_or_default();
        assert!(text.ends_with("bytes truncated]"), "{text}");
        assert!(text.starts_with("éé"));
    }

    #[test]
    fn records_that_cannot_be_truncated_become_markers() {
        let many: serde_json::Map<String, Value> =
            (0..1000).map(|i| (format!("k{i}"), json!(i))).collect();
        let bounded = bound_record(Value::Object(many), 512);
        assert_eq!(bounded["error"], "too_large");
        assert_eq!(bounded["limit"], 512);
        assert!(bounded["size"].as_u64().unwrap_or(0) > 512);
    }

    #[test]
    fn start_keys_round_trip_and_reject_garbage() {
        let key = start_key_of(1_700_000_000_123, "call-1");
        assert_eq!(
            parse_start_key(&key),
            Ok((1_700_000_000_123, "call-1".to_owned()))
        );
        for bad in ["", "short", "zzzzzzzzzzzzzzzzcall", "0000000000000001"] {
            assert!(
                matches!(
                    parse_start_key(bad),
                    Err(StoreError::InvalidStartKey { .. })
                ),
                "{bad}"
            );
        }
    }
}
