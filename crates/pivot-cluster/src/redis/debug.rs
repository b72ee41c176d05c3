//! [`DebugStore`] on Redis: per-call entry lists and summaries that expire after the retention
//! (PEXPIRE, renewed by every append), a per-account index for newest-first paging, and a
//! cluster-wide bound on calls enforced by the append script.

use super::{Keys, RedisCluster, corrupt, parse_u64};
use crate::debug::{
    MAX_KEY_BYTES, MAX_PAGE_SIZE, check_key, parse_start_key, prepare, start_key_of, summarise,
};
use crate::{BoxFuture, DebugEntry, DebugPage, DebugStore, DebugSummary, StoreError};

/// One entry's contribution to its call's summary, worked out here so the script needs no JSON.
struct Contribution {
    json: String,
    iteration: u32,
    uri: Option<String>,
    status_code: Option<String>,
    has_error: bool,
}

fn contribution(entry: &DebugEntry) -> Result<Contribution, StoreError> {
    let mut alone = DebugSummary {
        call_id: String::new(),
        created_unix_ms: 0,
        uri: None,
        status_code: None,
        node: String::new(),
        iteration: 0,
        has_errors: false,
    };
    summarise(&mut alone, entry);
    Ok(Contribution {
        json: serde_json::to_string(entry)
            .map_err(|e| StoreError::Unavailable(format!("debug append: {e}")))?,
        iteration: alone.iteration,
        uri: alone.uri,
        status_code: alone.status_code,
        has_error: alone.has_errors,
    })
}

fn flag(on: bool) -> &'static str {
    if on { "1" } else { "0" }
}

impl RedisCluster {
    fn retention_ms(&self) -> u64 {
        u64::try_from(self.inner.options.debug.retention.as_millis())
            .unwrap_or(u64::MAX)
            .min(super::nodes::MAX_TTL_MS)
    }

    async fn append_now(
        &self,
        account_id: &str,
        call_id: &str,
        node: &str,
        entries: Vec<DebugEntry>,
    ) -> Result<usize, StoreError> {
        check_key("account_id", account_id)?;
        check_key("call_id", call_id)?;
        check_key("node", node)?;
        let limits = &self.inner.options.debug;
        let entries = prepare(call_id, entries, limits.max_record_bytes);
        let Some(first) = entries.first() else {
            return Ok(0);
        };
        let created = first.created_unix_ms;
        let contributions = entries
            .iter()
            .map(contribution)
            .collect::<Result<Vec<_>, _>>()?;
        let keys = &self.inner.keys;
        let account_part = Keys::debug_account_part(account_id);
        let ck = format!("{account_part}{call_id}");
        let retention = self.retention_ms();
        let dropped: u64 = self
            .run("debug append", |mut con| async move {
                let mut invocation = self.inner.scripts.debug_append.prepare_invoke();
                invocation
                    .key(keys.debug_calls())
                    .key(keys.debug_members())
                    .key(keys.debug_summary(&ck))
                    .key(keys.debug_entries(&ck))
                    .key(keys.debug_index(account_id))
                    .arg(&keys.p)
                    .arg(retention)
                    .arg(limits.max_entries_per_call)
                    .arg(limits.max_calls)
                    .arg(&ck)
                    .arg(&account_part)
                    .arg(call_id)
                    .arg(node)
                    .arg(created)
                    .arg(format!("{created:016x}"))
                    .arg(contributions.len());
                for c in &contributions {
                    invocation
                        .arg(&c.json)
                        .arg(c.iteration)
                        .arg(flag(c.uri.is_some()))
                        .arg(c.uri.as_deref().unwrap_or_default())
                        .arg(flag(c.status_code.is_some()))
                        .arg(c.status_code.as_deref().unwrap_or_default())
                        .arg(flag(c.has_error));
                }
                invocation.invoke_async(&mut con).await
            })
            .await?;
        Ok(usize::try_from(dropped).unwrap_or(usize::MAX))
    }

    async fn debug_list_now(
        &self,
        account_id: &str,
        page_size: usize,
        start_key: Option<&str>,
    ) -> Result<DebugPage, StoreError> {
        // Re-encoded from the parsed key: the index compares bytes, the key's hex may not be
        // in the lowercase the index uses.
        let upper = match start_key.map(parse_start_key).transpose()? {
            Some((created, call_id)) => format!("({}", start_key_of(created, &call_id)),
            None => "+".to_owned(),
        };
        let page_size = page_size.clamp(1, MAX_PAGE_SIZE);
        let empty = DebugPage {
            summaries: Vec::new(),
            next_start_key: None,
        };
        if account_id.len() > MAX_KEY_BYTES {
            return Ok(empty);
        }
        let keys = &self.inner.keys;
        let summary_prefix = keys.debug_summary(&Keys::debug_account_part(account_id));
        let retention = self.retention_ms();
        let flat: Vec<Option<String>> = self
            .run("debug list", |mut con| async move {
                self.inner
                    .scripts
                    .debug_list
                    .key(keys.debug_calls())
                    .key(keys.debug_members())
                    .key(keys.debug_index(account_id))
                    .arg(&keys.p)
                    .arg(retention)
                    .arg(upper)
                    .arg(page_size + 1)
                    .arg(summary_prefix)
                    .invoke_async(&mut con)
                    .await
            })
            .await?;
        let mut rows: Vec<(String, DebugSummary)> = Vec::with_capacity(page_size + 1);
        for row in flat.chunks(7) {
            let [member, created, uri, status_code, node, iteration, errors] = row else {
                return Err(corrupt("debug list", "a short row").into());
            };
            let (Some(member), Some(created)) = (member, created) else {
                return Err(corrupt("debug list", "a row without its member").into());
            };
            let call_id = member
                .get(16..)
                .ok_or_else(|| corrupt("debug list", format!("member {member:?}")))?;
            let iteration = iteration.as_deref().unwrap_or("0");
            let summary = DebugSummary {
                call_id: call_id.to_owned(),
                created_unix_ms: parse_u64("debug list", "created", created)?,
                uri: uri.clone(),
                status_code: status_code.clone(),
                node: node.clone().unwrap_or_default(),
                iteration: u32::try_from(parse_u64("debug list", "iteration", iteration)?)
                    .unwrap_or(u32::MAX),
                has_errors: errors.as_deref() == Some("1"),
            };
            rows.push((member.clone(), summary));
        }
        let more = rows.len() > page_size;
        rows.truncate(page_size);
        let next_start_key = if more {
            rows.last().map(|(member, _)| member.clone())
        } else {
            None
        };
        Ok(DebugPage {
            summaries: rows.into_iter().map(|(_, summary)| summary).collect(),
            next_start_key,
        })
    }

    async fn entries_now(
        &self,
        account_id: &str,
        call_id: &str,
    ) -> Result<Option<Vec<DebugEntry>>, StoreError> {
        if account_id.len() > MAX_KEY_BYTES || call_id.len() > MAX_KEY_BYTES {
            return Ok(None);
        }
        let ck = format!("{}{call_id}", Keys::debug_account_part(account_id));
        let key = self.inner.keys.debug_entries(&ck);
        let all: Vec<String> = self
            .run("debug entries", |mut con| async move {
                redis::cmd("LRANGE")
                    .arg(key)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut con)
                    .await
            })
            .await?;
        if all.is_empty() {
            return Ok(None);
        }
        all.iter()
            .map(|json| {
                serde_json::from_str(json)
                    .map_err(|e| corrupt("debug entries", format!("entry: {e}")).into())
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}

impl DebugStore for RedisCluster {
    fn append<'a>(
        &'a self,
        account_id: &'a str,
        call_id: &'a str,
        node: &'a str,
        entries: Vec<DebugEntry>,
    ) -> BoxFuture<'a, Result<usize, StoreError>> {
        Box::pin(self.append_now(account_id, call_id, node, entries))
    }

    fn list<'a>(
        &'a self,
        account_id: &'a str,
        page_size: usize,
        start_key: Option<&'a str>,
    ) -> BoxFuture<'a, Result<DebugPage, StoreError>> {
        Box::pin(self.debug_list_now(account_id, page_size, start_key))
    }

    fn entries<'a>(
        &'a self,
        account_id: &'a str,
        call_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<DebugEntry>>, StoreError>> {
        Box::pin(self.entries_now(account_id, call_id))
    }
}
