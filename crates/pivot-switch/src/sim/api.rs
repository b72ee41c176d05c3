//! `api` / `bgapi` commands (mod_commands, mod_hash) with FreeSWITCH's output texts
//! (freeswitch-esl.md §2.7, capture 00b). Output is the `api/response` body.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::oneshot;

use super::call::{Channel, Exec, Start};
use super::server::{base_event, emit};
use super::{Inner, MAX_HASH_KEYS, lock, media};

/// `bgapi` jobs running at once; beyond it a job fails at once with `-ERR`.
pub(crate) const MAX_JOBS: usize = 1_000;
pub(crate) const VERSION: &str = "1.10.12-release+pivot-sim~64bit";

/// An api command's output, and for `originate` a hold on the new leg: the leg goes on
/// (EXECUTE park, CHANNEL_PARK) only once this is dropped, so a BACKGROUND_JOB reporting it
/// comes first, as in capture 09.
pub(crate) struct Output {
    pub text: String,
    pub hold: Option<oneshot::Sender<()>>,
}

pub(crate) async fn execute(inner: &Arc<Inner>, name: &str, args: &str) -> Output {
    let mut hold = None;
    let out = run(inner, name, args, &mut hold).await;
    // ES:1559-1600: an empty output is sent as `-ERR no reply`.
    let text = if out.is_empty() {
        "-ERR no reply\n".to_owned()
    } else {
        out
    };
    Output { text, hold }
}

/// Starts a `bgapi` job; its result comes as BACKGROUND_JOB.
/// `owner`: the channel of the outbound connection that started it (`Job-Owner-UUID`).
pub(crate) fn spawn_job(
    inner: &Arc<Inner>,
    job: String,
    owner: Option<String>,
    name: String,
    args: String,
) {
    let inner = inner.clone();
    let admitted = inner.jobs.fetch_add(1, Ordering::AcqRel) < MAX_JOBS;
    let runtime = inner.runtime.clone();
    runtime.spawn(async move {
        let out = if admitted {
            execute(&inner, &name, &args).await
        } else {
            Output {
                text: "-ERR too many background jobs\n".to_owned(),
                hold: None,
            }
        };
        inner.jobs.fetch_sub(1, Ordering::AcqRel);
        let mut ev = base_event(&inner, "BACKGROUND_JOB", "mod_event_socket.c", "api_exec");
        ev.set("Job-UUID", job);
        if let Some(owner) = owner {
            ev.set("Job-Owner-UUID", owner);
        }
        ev.set("Job-Command", name);
        if !args.is_empty() {
            ev.set("Job-Command-Arg", args);
        }
        ev.set_body(out.text);
        emit(&inner, ev);
        drop(out.hold);
    });
}

async fn run(
    inner: &Arc<Inner>,
    name: &str,
    args: &str,
    hold: &mut Option<oneshot::Sender<()>>,
) -> String {
    let mut words = args.split_whitespace();
    match name {
        "status" => status(inner),
        "version" => format!("FreeSWITCH Version {VERSION} (pivot simulator)\n"),
        "uptime" => inner.started.elapsed().as_secs().to_string(),
        "hostname" | "switchname" => inner.config.hostname.clone(),
        "global_getvar" => match words.next() {
            Some("hostname") | Some("switchname") => inner.config.hostname.clone(),
            Some("core_uuid") => inner.core_uuid(),
            _ => String::new(),
        },
        "uuid_exists" => match words.next().and_then(|u| inner.live_channel(u)) {
            Some(_) => "true".to_owned(),
            None => "false".to_owned(),
        },
        "uuid_kill" => with_channel(inner, words.next(), |c| {
            c.kill(words.next().unwrap_or("NORMAL_CLEARING"));
            "+OK\n".to_owned()
        }),
        "uuid_break" => with_channel(inner, words.next(), |c| {
            c.break_app(words.next() == Some("all"));
            "+OK\n".to_owned()
        }),
        "uuid_setvar" => {
            let uuid = words.next();
            let var = words.next().unwrap_or("").to_owned();
            let value: Vec<&str> = words.collect();
            let value = value.join(" ");
            with_channel(inner, uuid, |c| {
                if var.is_empty() {
                    return "-USAGE: <uuid> <var> [value]\n".to_owned();
                }
                let mut st = c.state();
                if value.is_empty() {
                    st.unset_var(&var);
                } else {
                    st.set_var(&var, value);
                }
                "+OK".to_owned()
            })
        }
        "uuid_setvar_multi" => {
            let uuid = words.next();
            let rest = words.collect::<Vec<_>>().join(" ");
            with_channel(inner, uuid, |c| {
                let mut st = c.state();
                for pair in rest.split(';') {
                    if let Some((k, v)) = pair.split_once('=') {
                        if v.is_empty() {
                            st.unset_var(k.trim());
                        } else {
                            st.set_var(k.trim(), v);
                        }
                    }
                }
                "+OK".to_owned()
            })
        }
        "uuid_getvar" => {
            let uuid = words.next();
            let var = words.next().unwrap_or("").to_owned();
            with_channel(inner, uuid, |c| {
                c.state()
                    .var(&var)
                    .map_or_else(|| "_undef_".to_owned(), str::to_owned)
            })
        }
        "uuid_dump" => {
            let uuid = words.next();
            let json = words.next() == Some("json");
            with_channel(inner, uuid, |c| dump(c, json))
        }
        "hupall" => {
            let cause = words.next().unwrap_or("MANAGER_REQUEST").to_owned();
            let live: Vec<Arc<Channel>> = {
                let calls = lock(&inner.calls);
                calls
                    .tasks
                    .keys()
                    .filter_map(|id| calls.by_id.get(id).cloned())
                    .collect()
            };
            for c in live {
                c.kill(&cause);
            }
            "+OK\n".to_owned()
        }
        "show" => show(inner, args),
        "hash" => hash(inner, args),
        "originate" => originate(inner, args, hold).await,
        "http_put" => super::http_cache::http_put(inner, args).await,
        _ => format!("-ERR {name} Command not found!\n"),
    }
}

fn with_channel(
    inner: &Inner,
    uuid: Option<&str>,
    f: impl FnOnce(&Arc<Channel>) -> String,
) -> String {
    match uuid.and_then(|u| inner.live_channel(u)) {
        Some(c) if !c.state().hung_up => f(&c),
        _ => "-ERR No such channel!\n".to_owned(),
    }
}

fn status(inner: &Inner) -> String {
    let up = inner.started.elapsed();
    let s = up.as_secs();
    let sessions = inner.live_count();
    format!(
        "UP 0 years, {} days, {} hours, {} minutes, {} seconds, {} milliseconds, 0 microseconds\n\
         FreeSWITCH (Version {VERSION}) is ready\n\
         {} session(s) since startup\n\
         {sessions} session(s) - peak {sessions}, last 5min {sessions} \n\
         0 session(s) per Sec out of max 30, peak 0, last 5min 0 \n\
         {} session(s) max\n\
         min idle cpu 0.00/99.00\n\
         Current Stack Size/Max 240K/8192K\n",
        s / 86_400,
        (s / 3600) % 24,
        (s / 60) % 60,
        s % 60,
        up.subsec_millis(),
        inner.sessions_since_startup.load(Ordering::Relaxed),
        inner.config.max_calls,
    )
}

fn dump(c: &Channel, json: bool) -> String {
    let st = c.state();
    let mut pairs: Vec<(String, String)> = vec![
        ("Unique-ID".into(), c.id.clone()),
        ("Channel-State".into(), st.chan_state.into()),
        ("Channel-Call-State".into(), st.call_state.into()),
        ("Answer-State".into(), st.answer.into()),
        ("Channel-Name".into(), st.name.clone()),
        ("Caller-Caller-ID-Name".into(), st.cid_name.clone()),
        ("Caller-Caller-ID-Number".into(), st.cid_num.clone()),
        ("Caller-Destination-Number".into(), st.dest.clone()),
    ];
    for (n, v) in &st.vars {
        pairs.push((format!("variable_{n}"), v.clone()));
    }
    if json {
        let map: serde_json::Map<String, serde_json::Value> = pairs
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect();
        serde_json::Value::Object(map).to_string()
    } else {
        pairs
            .iter()
            .map(|(k, v)| format!("{k}: {}\n", crate::esl::event::url_encode(v)))
            .collect()
    }
}

/// `show channels [as json]`, `show calls count`, `show channels count` (CMD:5716, 5984-6020).
fn show(inner: &Inner, args: &str) -> String {
    let lower = args.to_ascii_lowercase();
    let channels: Vec<Arc<Channel>> = {
        let calls = lock(&inner.calls);
        calls
            .order
            .iter()
            .filter(|id| calls.tasks.contains_key(*id))
            .filter_map(|id| calls.by_id.get(id).cloned())
            .collect()
    };
    let live: Vec<Arc<Channel>> = channels
        .into_iter()
        .filter(|c| !c.state().destroyed)
        .collect();
    if lower.contains("count") {
        return format!("\n{} total.\n", live.len());
    }
    let hostname = inner.config.hostname.clone();
    let rows: Vec<Vec<(&str, String)>> = live
        .iter()
        .map(|c| {
            let st = c.state();
            let created_s = st.created_us / 1_000_000;
            let (local, _) = super::format_dates(created_s);
            let app = st.var("current_application").unwrap_or("park").to_owned();
            let app_data = st.var("current_application_data").unwrap_or("").to_owned();
            vec![
                ("uuid", c.id.clone()),
                (
                    "direction",
                    if st.outbound { "outbound" } else { "inbound" }.into(),
                ),
                ("created", local),
                ("created_epoch", created_s.to_string()),
                ("name", st.name.clone()),
                ("state", st.chan_state.into()),
                ("cid_name", st.cid_name.clone()),
                ("cid_num", st.cid_num.clone()),
                ("ip_addr", "127.0.0.1".into()),
                ("dest", st.dest.clone()),
                ("application", app),
                ("application_data", app_data),
                ("dialplan", "XML".into()),
                ("context", "public".into()),
                ("read_codec", "PCMA".into()),
                ("read_rate", "8000".into()),
                ("read_bit_rate", "64000".into()),
                ("write_codec", "PCMA".into()),
                ("write_rate", "8000".into()),
                ("write_bit_rate", "64000".into()),
                ("secure", String::new()),
                ("hostname", hostname.clone()),
                ("presence_id", String::new()),
                ("presence_data", String::new()),
                ("accountcode", String::new()),
                ("callstate", st.call_state.into()),
                ("callee_name", String::new()),
                ("callee_num", String::new()),
                ("callee_direction", String::new()),
                ("call_uuid", c.id.clone()),
                ("sent_callee_name", String::new()),
                ("sent_callee_num", String::new()),
                ("initial_cid_name", st.cid_name.clone()),
                ("initial_cid_num", st.cid_num.clone()),
                ("initial_ip_addr", "127.0.0.1".into()),
                ("initial_dest", st.dest.clone()),
                ("initial_dialplan", "XML".into()),
                ("initial_context", "public".into()),
            ]
        })
        .collect();
    if lower.contains("as json") {
        if rows.is_empty() {
            // Capture 00b, byte for byte.
            return "{\"row_count\": 0}\n".to_owned();
        }
        let rows_json: Vec<serde_json::Value> = rows
            .into_iter()
            .map(|r| {
                serde_json::Value::Object(
                    r.into_iter()
                        .map(|(k, v)| (k.to_owned(), serde_json::Value::String(v)))
                        .collect(),
                )
            })
            .collect();
        let count = rows_json.len();
        let body = serde_json::json!({ "row_count": count, "rows": rows_json });
        return format!("{body}\n");
    }
    let mut out = String::new();
    if let Some(first) = rows.first() {
        let header: Vec<&str> = first.iter().map(|(k, _)| *k).collect();
        out.push_str(&header.join(","));
        out.push('\n');
    }
    for r in &rows {
        let line: Vec<&str> = r.iter().map(|(_, v)| v.as_str()).collect();
        out.push_str(&line.join(","));
        out.push('\n');
    }
    out.push_str(&format!("\n{} total.\n", rows.len()));
    out
}

/// `hash insert|insert_ifempty|delete|delete_ifmatch|select/<realm>/<key>[/<value>]`, atomic
/// under one lock (HASH:472-557).
fn hash(inner: &Inner, args: &str) -> String {
    let mut parts = args.trim().splitn(4, '/');
    let cmd = parts.next().unwrap_or("").to_ascii_lowercase();
    let (Some(realm), Some(key)) = (parts.next(), parts.next()) else {
        return "-ERR Usage: hash [insert|insert_ifempty|delete|delete_ifmatch|select]/<realm>/<key>[/<val>]\n"
            .to_owned();
    };
    let value = parts.next();
    let k = format!("{realm}/{key}");
    let mut store = lock(&inner.hash);
    match (cmd.as_str(), value) {
        ("insert", Some(v)) => {
            if store.len() >= MAX_HASH_KEYS && !store.contains_key(&k) {
                return "-ERR hash full\n".to_owned();
            }
            store.insert(k, v.to_owned());
            "+OK\n".to_owned()
        }
        ("insert_ifempty", Some(v)) => {
            if store.contains_key(&k) {
                return "-ERR key already exists\n".to_owned();
            }
            if store.len() >= MAX_HASH_KEYS {
                return "-ERR hash full\n".to_owned();
            }
            store.insert(k, v.to_owned());
            "+OK\n".to_owned()
        }
        ("delete", _) => match store.remove(&k) {
            Some(_) => "+OK\n".to_owned(),
            None => "-ERR Not found\n".to_owned(),
        },
        ("delete_ifmatch", Some(v)) => match store.get(&k) {
            Some(cur) if cur == v => {
                store.remove(&k);
                "+OK\n".to_owned()
            }
            Some(_) => "-ERR Doesn't match\n".to_owned(),
            None => "-ERR Not found\n".to_owned(),
        },
        ("select", _) => store.get(&k).cloned().unwrap_or_default(),
        _ => "-ERR Usage: hash [insert|insert_ifempty|delete|delete_ifmatch|select]/<realm>/<key>[/<val>]\n"
            .to_owned(),
    }
}

/// `originate <dial string> &<app>(<args>)|<exten> ...`: a new outbound leg. Blocks until it
/// answers or fails, like FreeSWITCH: `+OK <uuid>` / `-ERR <CAUSE>` (capture 09).
async fn originate(
    inner: &Arc<Inner>,
    args: &str,
    hold: &mut Option<oneshot::Sender<()>>,
) -> String {
    let mut split = args.trim().splitn(2, char::is_whitespace);
    let dial_full = split.next().unwrap_or("");
    let rest = split.next().unwrap_or("").trim();
    if dial_full.is_empty() {
        return "-USAGE: <call url> <exten>|&<application_name>(<app_args>) [<dialplan>] [<context>] [<cid_name>] [<cid_num>] [<timeout_sec>]\n".to_owned();
    }
    let (vars, dial) = media::split_dial_vars(dial_full);
    let get = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let id = get("origination_uuid").unwrap_or_else(|| inner.ids.uuid());
    if inner.channel(&id).is_some() {
        return "-ERR DESTINATION_OUT_OF_ORDER\n".to_owned();
    }
    let timeout_ms = get("originate_timeout")
        .or_else(|| get("leg_timeout"))
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(60)
        * 1000;
    let answer = media::dial_answer_override(&dial, &vars).unwrap_or_default();
    let then = rest
        .strip_prefix('&')
        .and_then(|app| {
            let (name, arg) = app.split_once('(')?;
            let arg = arg.split(')').next().unwrap_or("");
            Some((name.trim().to_owned(), arg.to_owned()))
        })
        .filter(|(name, _)| name != "park")
        .map(|(app, arg)| Exec {
            app,
            arg,
            event_uuid: None,
            lock: true,
            loops: 1,
        });
    let dest = media::dial_dest(&dial);
    let channel = Arc::new(Channel::outbound(id.clone(), &dest, &dial, &vars));
    let (tx, rx) = oneshot::channel();
    let start = Start::Outbound {
        result: tx,
        answer,
        timeout_ms,
        then,
    };
    if inner.spawn_channel(channel, start).is_none() {
        return "-ERR SWITCH_CONGESTION\n".to_owned();
    }
    match rx.await {
        Ok((text, leg_hold)) => {
            *hold = Some(leg_hold);
            text
        }
        Err(_) => "-ERR NORMAL_TEMPORARY_FAILURE\n".to_owned(),
    }
}
