//! [`CallflowStore`] on Redis: callflows per account in hashes, number uniqueness enforced by
//! the put script, patterns compiled in-process and cached until their version moves.

use std::collections::HashMap;
use std::sync::Arc;

use regex::Regex;

use super::{RedisCluster, Unavailable, corrupt};
use crate::callflows::{MAX_KEY_BYTES, MAX_PATTERNS_PER_CALLFLOW, compile, validate};
use crate::{BoxFuture, Callflow, CallflowStore, StoreError, lock, new_id};

/// A fresh id that happens to exist already is astronomically unlikely; a few tries are plenty.
const FRESH_ID_TRIES: usize = 3;

/// The compiled patterns of every callflow that has any, as of one patterns version.
#[derive(Debug, Default)]
pub(crate) struct PatternCache {
    version: Option<String>,
    entries: Arc<Vec<PatternEntry>>,
}

#[derive(Debug)]
struct PatternEntry {
    account_id: String,
    id: String,
    patterns: Vec<Regex>,
}

/// The `[account, id]` JSON that names a callflow in the numbers and patterns indexes; JSON so
/// that any characters in either part stay unambiguous, and the Lua side can decode it.
fn owner_of(account_id: &str, id: &str) -> Result<String, StoreError> {
    encode(&(account_id, id))
}

fn parse_owner(op: &'static str, owner: &str) -> Result<(String, String), Unavailable> {
    serde_json::from_str(owner).map_err(|_| corrupt(op, format!("owner {owner:?}")))
}

fn parse_callflow(op: &'static str, json: &str) -> Result<Callflow, Unavailable> {
    serde_json::from_str(json).map_err(|e| corrupt(op, format!("callflow: {e}")))
}

impl RedisCluster {
    /// The keys every callflow write touches, in the scripts' KEYS order.
    fn callflow_keys(&self, account_id: &str) -> [String; 6] {
        let keys = &self.inner.keys;
        [
            keys.callflows(account_id),
            keys.callflow_numbers(account_id),
            keys.numbers(),
            keys.callflow_index(),
            keys.patterns(),
            keys.patterns_version(),
        ]
    }

    async fn put_now(&self, mut callflow: Callflow) -> Result<Callflow, StoreError> {
        // Compiled here only to refuse what does not compile; readers compile from the store.
        validate(&callflow, self.inner.options.max_callflow_bytes)?;
        let fresh = callflow.id.is_empty();
        let max_callflows = self.inner.options.max_callflows;
        for _ in 0..FRESH_ID_TRIES {
            if fresh {
                callflow.id = new_id();
            }
            let owner = owner_of(&callflow.account_id, &callflow.id)?;
            let json = encode(&callflow)?;
            let numbers = encode(&callflow.numbers)?;
            let patterns = if callflow.patterns.is_empty() {
                String::new()
            } else {
                encode(&callflow.patterns)?
            };
            let keys = self.callflow_keys(&callflow.account_id);
            let (id, owner, numbers_list) = (&callflow.id, &owner, &callflow.numbers);
            let answer: Vec<String> = self
                .run("callflow put", |mut con| async move {
                    let mut invocation = self.inner.scripts.callflow_put.prepare_invoke();
                    for key in keys {
                        invocation.key(key);
                    }
                    invocation
                        .arg(id)
                        .arg(owner)
                        .arg(json)
                        .arg(max_callflows)
                        .arg(if fresh { "1" } else { "0" })
                        .arg(patterns)
                        .arg(numbers);
                    for number in numbers_list {
                        invocation.arg(number);
                    }
                    invocation.invoke_async(&mut con).await
                })
                .await?;
            match answer.as_slice() {
                [ok] if ok == "ok" => return Ok(callflow),
                [exists] if exists == "exists" && fresh => continue,
                [taken, number, owner] if taken == "taken" => {
                    let (account_id, _) = parse_owner("callflow put", owner)?;
                    return Err(StoreError::NumberTaken {
                        number: number.clone(),
                        account_id,
                    });
                }
                [full] if full == "full" => {
                    return Err(StoreError::Full {
                        what: "callflows",
                        limit: max_callflows,
                    });
                }
                other => return Err(corrupt("callflow put", format!("answer {other:?}")).into()),
            }
        }
        Err(StoreError::Unavailable(
            "callflow put: no free id after several tries".to_owned(),
        ))
    }

    async fn get_now(&self, account_id: &str, id: &str) -> Result<Option<Callflow>, StoreError> {
        if account_id.len() > MAX_KEY_BYTES || id.len() > MAX_KEY_BYTES {
            return Ok(None);
        }
        let key = self.inner.keys.callflows(account_id);
        let json: Option<String> = self
            .run("callflow get", |mut con| async move {
                redis::cmd("HGET")
                    .arg(key)
                    .arg(id)
                    .query_async(&mut con)
                    .await
            })
            .await?;
        Ok(json
            .map(|json| parse_callflow("callflow get", &json))
            .transpose()?)
    }

    async fn callflow_list_now(&self, account_id: &str) -> Result<Vec<Callflow>, StoreError> {
        if account_id.len() > MAX_KEY_BYTES {
            return Ok(Vec::new());
        }
        let key = self.inner.keys.callflows(account_id);
        let all: Vec<String> = self
            .run("callflow list", |mut con| async move {
                redis::cmd("HVALS").arg(key).query_async(&mut con).await
            })
            .await?;
        let mut flows = all
            .iter()
            .map(|json| parse_callflow("callflow list", json))
            .collect::<Result<Vec<_>, _>>()?;
        flows.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        Ok(flows)
    }

    async fn delete_now(&self, account_id: &str, id: &str) -> Result<bool, StoreError> {
        if account_id.len() > MAX_KEY_BYTES || id.len() > MAX_KEY_BYTES {
            return Ok(false);
        }
        let owner = owner_of(account_id, id)?;
        let keys = self.callflow_keys(account_id);
        let deleted: i64 = self
            .run("callflow delete", |mut con| async move {
                let mut invocation = self.inner.scripts.callflow_delete.prepare_invoke();
                for key in keys {
                    invocation.key(key);
                }
                invocation.arg(id).arg(owner).invoke_async(&mut con).await
            })
            .await?;
        Ok(deleted == 1)
    }

    async fn resolve_now(
        &self,
        number: &str,
        account_id: Option<&str>,
    ) -> Result<Option<Callflow>, StoreError> {
        if number.is_empty() || number.len() > MAX_KEY_BYTES + 1 {
            return Ok(None);
        }
        let alternative = match number.strip_prefix('+') {
            Some(bare) => bare.to_owned(),
            None => format!("+{number}"),
        };
        let forms = [number, alternative.as_str()];
        let keys = &self.inner.keys;
        let answer: Vec<String> = self
            .run("callflow resolve", |mut con| async move {
                self.inner
                    .scripts
                    .callflow_resolve
                    .key(keys.numbers())
                    .key(keys.patterns_version())
                    .arg(keys.callflows_prefix())
                    .arg(if account_id.is_some() { "1" } else { "0" })
                    .arg(account_id.unwrap_or_default())
                    .arg(&forms[..])
                    .invoke_async(&mut con)
                    .await
            })
            .await?;
        let version = match answer.as_slice() {
            [exact, json] if exact == "exact" => {
                return Ok(Some(parse_callflow("callflow resolve", json)?));
            }
            [miss, version] if miss == "miss" => version,
            other => {
                return Err(corrupt("callflow resolve", format!("answer {other:?}")).into());
            }
        };
        let entries = self.patterns_at(version).await?;
        for form in forms {
            if let Some(best) = best_pattern(&entries, form, account_id) {
                // Deleted since the patterns were read: as if it had not matched.
                return self.get_now(&best.account_id, &best.id).await;
            }
        }
        Ok(None)
    }

    /// The compiled patterns, from the cache if it holds `version`, else read and compiled
    /// again (reusing the regexes of patterns that did not change).
    async fn patterns_at(&self, version: &str) -> Result<Arc<Vec<PatternEntry>>, StoreError> {
        let previous = {
            let cache = lock(&self.inner.patterns);
            if cache.version.as_deref() == Some(version) {
                return Ok(Arc::clone(&cache.entries));
            }
            Arc::clone(&cache.entries)
        };
        let keys = &self.inner.keys;
        let flat: Vec<String> = self
            .run("callflow patterns", |mut con| async move {
                self.inner
                    .scripts
                    .callflow_patterns
                    .key(keys.patterns())
                    .key(keys.patterns_version())
                    .invoke_async(&mut con)
                    .await
            })
            .await?;
        let Some((fresh_version, pairs)) = flat.split_first() else {
            return Err(corrupt("callflow patterns", "an empty answer").into());
        };
        let mut compiled: HashMap<&str, &Regex> = HashMap::new();
        for entry in previous.iter() {
            for regex in &entry.patterns {
                compiled.insert(regex.as_str(), regex);
            }
        }
        let mut entries = Vec::with_capacity(pairs.len() / 2);
        for pair in pairs.chunks_exact(2) {
            let (account_id, id) = parse_owner("callflow patterns", &pair[0])?;
            let sources: Vec<String> = serde_json::from_str(&pair[1])
                .map_err(|_| corrupt("callflow patterns", format!("patterns of {id}")))?;
            let patterns = sources
                .iter()
                .take(MAX_PATTERNS_PER_CALLFLOW)
                .enumerate()
                // Every stored pattern compiled when it was written; one that no longer does
                // (a different regex version on this node) simply never matches.
                .filter_map(|(index, source)| match compiled.get(source.as_str()) {
                    Some(regex) => Some((*regex).clone()),
                    None => compile(index, source).ok(),
                })
                .collect();
            entries.push(PatternEntry {
                account_id,
                id,
                patterns,
            });
        }
        entries.sort_unstable_by(|a, b| (&a.account_id, &a.id).cmp(&(&b.account_id, &b.id)));
        let entries = Arc::new(entries);
        let mut cache = lock(&self.inner.patterns);
        cache.version = Some(fresh_version.clone());
        cache.entries = Arc::clone(&entries);
        Ok(entries)
    }
}

/// As the memory backend: the pattern that matches the most of the number wins; ties go to the
/// first in (account, id, pattern index) order.
fn best_pattern<'e>(
    entries: &'e [PatternEntry],
    number: &str,
    account_id: Option<&str>,
) -> Option<&'e PatternEntry> {
    let mut best: Option<(usize, &PatternEntry)> = None;
    for entry in entries
        .iter()
        .filter(|e| account_id.is_none_or(|a| e.account_id == a))
    {
        for regex in &entry.patterns {
            if let Some(found) = regex.find(number) {
                let length = found.len();
                if best.is_none_or(|(best_length, _)| length > best_length) {
                    best = Some((length, entry));
                }
            }
        }
    }
    best.map(|(_, entry)| entry)
}

fn encode<T: serde::Serialize + ?Sized>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Unavailable(format!("callflow put: {e}")))
}

impl CallflowStore for RedisCluster {
    fn put<'a>(&'a self, callflow: Callflow) -> BoxFuture<'a, Result<Callflow, StoreError>> {
        Box::pin(self.put_now(callflow))
    }

    fn get<'a>(
        &'a self,
        account_id: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Callflow>, StoreError>> {
        Box::pin(self.get_now(account_id, id))
    }

    fn list<'a>(&'a self, account_id: &'a str) -> BoxFuture<'a, Result<Vec<Callflow>, StoreError>> {
        Box::pin(self.callflow_list_now(account_id))
    }

    fn delete<'a>(
        &'a self,
        account_id: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(self.delete_now(account_id, id))
    }

    fn resolve<'a>(
        &'a self,
        number: &'a str,
        account_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<Callflow>, StoreError>> {
        Box::pin(self.resolve_now(number, account_id))
    }
}
