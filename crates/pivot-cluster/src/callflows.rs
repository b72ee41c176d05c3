//! KAZOO-shaped callflows per account (DESIGN §8): which flow answers a dialled number.
//!
//! A callflow lists exact `numbers` (unique across all accounts, so a dialled number never has
//! two owners) and regex `patterns` (KAZOO style, e.g. `^\+?1?(\d{10})$`). Resolution tries
//! exact numbers first, then patterns, each with and without a leading `+`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};

use crate::json::serialized_len;
use crate::{BoxFuture, StoreError, lock, new_id};

/// The default bound on one callflow, serialized: KAZOO callflows are a few KiB.
pub const DEFAULT_MAX_CALLFLOW_BYTES: usize = 1024 * 1024;
/// Numbers in one callflow; the number index grows with their sum.
pub const MAX_NUMBERS_PER_CALLFLOW: usize = 1000;
/// Patterns in one callflow; every resolution that misses the exact numbers tries them all.
pub const MAX_PATTERNS_PER_CALLFLOW: usize = 50;
/// A pattern's source length, checked before compiling it.
pub const MAX_PATTERN_BYTES: usize = 1024;
/// The compiled size of one pattern (regex's own default is 10 MiB); KAZOO's patterns compile
/// to a few KiB, and cached patterns stay in memory for the callflow's lifetime.
pub const PATTERN_SIZE_LIMIT: usize = 256 * 1024;
/// Account ids, callflow ids and numbers are map keys.
pub const MAX_KEY_BYTES: usize = 256;

/// One callflow, as the API reads and writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Callflow {
    /// Empty on create: the store assigns one.
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub account_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub numbers: Vec<String>,
    #[serde(default)]
    pub patterns: Vec<String>,
    /// The KAZOO callflow tree (a `pivot` node at its root for pivot calls); validated by the
    /// API layer, stored as is here.
    #[serde(default)]
    pub flow: serde_json::Value,
}

/// Callflows of all accounts.
pub trait CallflowStore: Send + Sync + std::fmt::Debug + 'static {
    /// Inserts or replaces (by account and id; an empty id gets a fresh 32-hex-char id) and
    /// returns the stored callflow. Numbers are unique across all accounts (`NumberTaken`);
    /// patterns must compile (`InvalidPattern` naming the index).
    fn put<'a>(&'a self, callflow: Callflow) -> BoxFuture<'a, Result<Callflow, StoreError>>;

    fn get<'a>(
        &'a self,
        account_id: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Callflow>, StoreError>>;

    /// The account's callflows, sorted by id.
    fn list<'a>(&'a self, account_id: &'a str) -> BoxFuture<'a, Result<Vec<Callflow>, StoreError>>;

    /// Whether it existed.
    fn delete<'a>(
        &'a self,
        account_id: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// The callflow for a dialled number: exact number match first, then patterns (the longest
    /// match wins, as in KAZOO); each tried as dialled, then with the leading `+` removed or
    /// added. With `account_id`, only that account's callflows are considered.
    fn resolve<'a>(
        &'a self,
        number: &'a str,
        account_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<Callflow>, StoreError>>;
}

#[derive(Debug)]
struct Stored {
    callflow: Callflow,
    /// Compiled once on write, in the order of `callflow.patterns`.
    patterns: Vec<Regex>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Account id → callflow id → callflow. Ordered so that listing, and pattern resolution
    /// when several callflows match equally well, are deterministic.
    accounts: BTreeMap<String, BTreeMap<String, Stored>>,
    /// Number → (account id, callflow id): the uniqueness index and the exact-match path.
    numbers: HashMap<String, (String, String)>,
    count: usize,
}

/// The in-memory [`CallflowStore`].
#[derive(Debug)]
pub struct MemoryCallflows {
    inner: Mutex<Inner>,
    max_callflows: usize,
    max_callflow_bytes: usize,
}

impl MemoryCallflows {
    /// At most `max_callflows` across all accounts; creating one more is `Full`.
    pub fn new(max_callflows: usize) -> MemoryCallflows {
        MemoryCallflows {
            inner: Mutex::new(Inner::default()),
            max_callflows,
            max_callflow_bytes: DEFAULT_MAX_CALLFLOW_BYTES,
        }
    }

    /// Overrides [`DEFAULT_MAX_CALLFLOW_BYTES`].
    #[must_use]
    pub fn with_max_callflow_bytes(mut self, max_callflow_bytes: usize) -> MemoryCallflows {
        self.max_callflow_bytes = max_callflow_bytes;
        self
    }

    fn put_now(&self, mut callflow: Callflow) -> Result<Callflow, StoreError> {
        // Compiling is the expensive part: done before taking the lock.
        let patterns = validate(&callflow, self.max_callflow_bytes)?;

        let mut inner = lock(&self.inner);
        if callflow.id.is_empty() {
            callflow.id = loop {
                let id = new_id();
                if !inner.contains(&callflow.account_id, &id) {
                    break id;
                }
            };
        }
        let key = (callflow.account_id.clone(), callflow.id.clone());
        for number in &callflow.numbers {
            if let Some(owner) = inner.numbers.get(number)
                && *owner != key
            {
                return Err(StoreError::NumberTaken {
                    number: number.clone(),
                    account_id: owner.0.clone(),
                });
            }
        }
        let replaced = inner.remove(&key.0, &key.1);
        if replaced.is_none() && inner.count >= self.max_callflows {
            return Err(StoreError::Full {
                what: "callflows",
                limit: self.max_callflows,
            });
        }
        for number in &callflow.numbers {
            inner.numbers.insert(number.clone(), key.clone());
        }
        inner.count += 1;
        inner.accounts.entry(key.0).or_default().insert(
            key.1,
            Stored {
                callflow: callflow.clone(),
                patterns,
            },
        );
        Ok(callflow)
    }

    fn resolve_now(&self, number: &str, account_id: Option<&str>) -> Option<Callflow> {
        if number.is_empty() {
            return None;
        }
        let alternative = match number.strip_prefix('+') {
            Some(bare) => bare.to_owned(),
            None => format!("+{number}"),
        };
        let forms = [number, alternative.as_str()];
        let inner = lock(&self.inner);
        for form in forms {
            if let Some((account, id)) = inner.numbers.get(form)
                && account_id.is_none_or(|a| a == account)
                && let Some(stored) = inner.get(account, id)
            {
                return Some(stored.callflow.clone());
            }
        }
        for form in forms {
            if let Some(stored) = inner.best_pattern(form, account_id) {
                return Some(stored.callflow.clone());
            }
        }
        None
    }
}

impl Inner {
    fn get(&self, account_id: &str, id: &str) -> Option<&Stored> {
        self.accounts.get(account_id)?.get(id)
    }

    fn contains(&self, account_id: &str, id: &str) -> bool {
        self.get(account_id, id).is_some()
    }

    /// Removes the callflow and the index entries that point at it.
    fn remove(&mut self, account_id: &str, id: &str) -> Option<Stored> {
        let flows = self.accounts.get_mut(account_id)?;
        let stored = flows.remove(id)?;
        if flows.is_empty() {
            self.accounts.remove(account_id);
        }
        for number in &stored.callflow.numbers {
            if self
                .numbers
                .get(number)
                .is_some_and(|(a, i)| a == account_id && i == id)
            {
                self.numbers.remove(number);
            }
        }
        self.count = self.count.saturating_sub(1);
        Some(stored)
    }

    /// KAZOO prefers the pattern that matches the most of the number; ties go to the first in
    /// (account, id, pattern index) order.
    fn best_pattern(&self, number: &str, account_id: Option<&str>) -> Option<&Stored> {
        let mut best: Option<(usize, &Stored)> = None;
        let accounts: Box<dyn Iterator<Item = &BTreeMap<String, Stored>>> = match account_id {
            Some(account) => Box::new(self.accounts.get(account).into_iter()),
            None => Box::new(self.accounts.values()),
        };
        for stored in accounts.flat_map(BTreeMap::values) {
            for regex in &stored.patterns {
                if let Some(found) = regex.find(number) {
                    let length = found.len();
                    if best.is_none_or(|(best_length, _)| length > best_length) {
                        best = Some((length, stored));
                    }
                }
            }
        }
        best.map(|(_, stored)| stored)
    }
}

impl CallflowStore for MemoryCallflows {
    fn put<'a>(&'a self, callflow: Callflow) -> BoxFuture<'a, Result<Callflow, StoreError>> {
        Box::pin(async move { self.put_now(callflow) })
    }

    fn get<'a>(
        &'a self,
        account_id: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Callflow>, StoreError>> {
        Box::pin(async move {
            Ok(lock(&self.inner)
                .get(account_id, id)
                .map(|stored| stored.callflow.clone()))
        })
    }

    fn list<'a>(&'a self, account_id: &'a str) -> BoxFuture<'a, Result<Vec<Callflow>, StoreError>> {
        Box::pin(async move {
            Ok(lock(&self.inner)
                .accounts
                .get(account_id)
                .map(|flows| flows.values().map(|s| s.callflow.clone()).collect())
                .unwrap_or_default())
        })
    }

    fn delete<'a>(
        &'a self,
        account_id: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move { Ok(lock(&self.inner).remove(account_id, id).is_some()) })
    }

    fn resolve<'a>(
        &'a self,
        number: &'a str,
        account_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<Callflow>, StoreError>> {
        Box::pin(async move { Ok(self.resolve_now(number, account_id)) })
    }
}

/// Checks every bound of a callflow and compiles its patterns (in their order): what both
/// backends do before they store anything.
pub(crate) fn validate(
    callflow: &Callflow,
    max_callflow_bytes: usize,
) -> Result<Vec<Regex>, StoreError> {
    check_key("account_id", &callflow.account_id)?;
    check_key("id", &callflow.id)?;
    if callflow.numbers.len() > MAX_NUMBERS_PER_CALLFLOW {
        return Err(StoreError::Full {
            what: "numbers per callflow",
            limit: MAX_NUMBERS_PER_CALLFLOW,
        });
    }
    for number in &callflow.numbers {
        check_key("number", number)?;
    }
    if callflow.patterns.len() > MAX_PATTERNS_PER_CALLFLOW {
        return Err(StoreError::Full {
            what: "patterns per callflow",
            limit: MAX_PATTERNS_PER_CALLFLOW,
        });
    }
    let size = serialized_len(&callflow);
    if size > max_callflow_bytes {
        return Err(StoreError::TooLarge {
            what: "callflow",
            size,
            limit: max_callflow_bytes,
        });
    }
    callflow
        .patterns
        .iter()
        .enumerate()
        .map(|(index, pattern)| compile(index, pattern))
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

pub(crate) fn compile(index: usize, pattern: &str) -> Result<Regex, StoreError> {
    let invalid = |reason: String| StoreError::InvalidPattern {
        index,
        pattern: pattern.to_owned(),
        reason,
    };
    if pattern.len() > MAX_PATTERN_BYTES {
        return Err(invalid(format!(
            "{} bytes, the limit is {MAX_PATTERN_BYTES}",
            pattern.len()
        )));
    }
    RegexBuilder::new(pattern)
        .size_limit(PATTERN_SIZE_LIMIT)
        .dfa_size_limit(PATTERN_SIZE_LIMIT)
        .build()
        .map_err(|e| invalid(e.to_string()))
}
