//! The simulator: a FreeSWITCH look-alike ESL server (DESIGN §5).
//!
//! It listens like FreeSWITCH's `mod_event_socket` (inbound mode), parks the calls a test or a
//! person places with [`Simulator::place_call`], runs the dialplan apps pivot sends with
//! `sendmsg` on simulated media with simulated durations, and emits the events real FreeSWITCH
//! 1.10.12 emits, in the same order (checked against `reference/esl-captures/`). The caller is
//! scripted: digits and hang-up at given (simulated) times, and how dialled legs answer.
//!
//! Layout:
//! - [`server`]: TCP accept loop, one ESL connection per client: auth, subscriptions, filters,
//!   command replies, and the event fan-out (`Hub`);
//! - `call`: one task per channel (FreeSWITCH's session thread): its private message queue,
//!   event-lock and nesting, the virtual clock, the caller script, hang-up sequence;
//! - `apps`: the dialplan applications; `api`: `api`/`bgapi` commands;
//! - `http_cache`: `http_put` (mod_http_cache) of the files `record` made, as generated WAVs;
//! - `media`: durations of files/tones/TTS, hang-up cause tables, a small regex matcher;
//! - `outbound`: the `socket` app — a call handed to a controller that listens (outbound mode).
//!
//! Time: every simulated duration is multiplied by `time_scale`. With `time_scale == 0` the
//! clock of each call is virtual: it only moves while an app "plays", so every event is still
//! emitted, in the same order, but instantly; a caller script step fires when the virtual clock
//! passes it.

mod api;
mod apps;
mod call;
mod http_cache;
mod media;
mod outbound;
mod server;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use call::Channel;
use server::Hub;

/// Live calls at once; further calls are refused (`SWITCH_CONGESTION`), like `max-sessions`.
pub const MAX_CALLS: usize = 10_000;
/// Ended calls kept for [`Simulator::call`] after they ended, oldest dropped first.
pub const MAX_ENDED_CALLS: usize = 2_000;
/// ESL connections at once; more are accepted and closed at once.
pub const MAX_CONNECTIONS: usize = 512;
/// Entries of [`Simulator::command_log`], oldest dropped first.
pub const MAX_COMMAND_LOG: usize = 100_000;
/// Keys of the `hash` API store (mod_hash), all realms together.
pub const MAX_HASH_KEYS: usize = 100_000;
/// Recorded files remembered for `http_put`, oldest forgotten first.
pub const MAX_RECORDINGS: usize = 10_000;

/// How to start a [`Simulator`].
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Where the ESL server listens; port 0 picks a free port ([`Simulator::esl_addr`]).
    pub esl_listen: SocketAddr,
    /// The `auth` password (FreeSWITCH's default is `ClueCon`).
    pub password: String,
    /// Multiplies every simulated duration: 1.0 is real time, 0 is instant.
    pub time_scale: f64,
    /// HEARTBEAT period (FreeSWITCH's default `event-heartbeat-interval` is 20 s); real time.
    pub heartbeat_interval: Duration,
    /// `FreeSWITCH-Hostname` / `FreeSWITCH-Switchname`.
    pub hostname: String,
    /// Live calls at once (`max-sessions`); beyond, new calls are refused.
    pub max_calls: usize,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            esl_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            password: "ClueCon".to_owned(),
            time_scale: 1.0,
            heartbeat_interval: Duration::from_secs(20),
            hostname: "pivot-sim".to_owned(),
            max_calls: MAX_CALLS,
        }
    }
}

/// The id of a simulated call: its channel `Unique-ID`.
pub type CallId = String;

/// A call to place: what `POST /sim/calls` takes (DESIGN §5).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct NewCall {
    pub to: String,
    pub from: String,
    pub caller_id_name: String,
    pub caller_id_number: String,
    #[serde(default)]
    pub account_id: Option<String>,
    #[serde(default)]
    pub script: Vec<ScriptStep>,
    #[serde(default)]
    pub dial_answer: DialAnswer,
}

/// One thing the caller does at `at_ms` (simulated ms after the call was placed).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct ScriptStep {
    pub at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtmf: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hangup: bool,
    /// With `hangup`: hang up once this many prompts (played files, spoken texts) have been
    /// heard, whenever that is, instead of at `at_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_prompt: Option<u32>,
}

/// How the far end of a `bridge` (or `originate`) from this call behaves.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DialAnswer {
    #[default]
    Answer,
    Busy,
    NoAnswer,
}

/// What `GET /sim/calls/{id}` returns.
#[derive(Debug, Clone, Serialize)]
pub struct CallView {
    pub call_id: CallId,
    /// `parked`, `answered`, `bridged` or `hungup`.
    pub state: &'static str,
    pub hangup_cause: Option<String>,
    pub events: Vec<TranscriptEvent>,
}

/// One step of a call's transcript: what the caller experienced.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TranscriptEvent {
    /// Simulated ms since the call was placed.
    pub t_ms: u64,
    /// `parked`, `answered`, `played`, `spoke`, `recorded`, `collected`, `dialed`, `bridged`,
    /// `unbridged`, `dtmf_sent` (the controller sent DTMF), `dtmf` (the caller pressed),
    /// `conference`, `transferred`, `hangup`, `uploaded` (an `http_put` of the call's recording
    /// ended: `target` is the URL, `result` the HTTP status or why no response came).
    pub kind: &'static str,
    /// The `Event-UUID` the app causing this was sent with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_uuid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digits: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

impl TranscriptEvent {
    pub(crate) fn new(t_ms: u64, kind: &'static str, app_uuid: Option<String>) -> Self {
        TranscriptEvent {
            t_ms,
            kind,
            app_uuid,
            file: None,
            text: None,
            digits: None,
            target: None,
            cause: None,
            result: None,
            duration_ms: None,
        }
    }
}

/// One `sendmsg`, `api` or `bgapi` the simulator received, for tests that prove who drove what.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LoggedCommand {
    /// The ESL connection it came on (numbered from 1 per simulator).
    pub connection: u64,
    /// `sendmsg`, `api` or `bgapi`.
    pub kind: &'static str,
    /// The channel it addressed, when it names one.
    pub call_id: Option<String>,
    /// `Event-UUID` of a `sendmsg` (or `Job-UUID` of a `bgapi`).
    pub event_uuid: Option<String>,
    /// The app (`execute-app-name`, or `hangup` for `call-command: hangup`), or the api command.
    pub app: String,
    /// The app argument / hang-up cause / api arguments.
    pub arg: String,
}

/// A running simulator. Cheap to clone; every clone drives the same switch.
#[derive(Clone)]
pub struct Simulator {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("esl_addr", &self.inner.esl_addr)
            .finish_non_exhaustive()
    }
}

/// State shared by the server, the call tasks and the public handle.
pub(crate) struct Inner {
    config: SimConfig,
    esl_addr: SocketAddr,
    runtime: tokio::runtime::Handle,
    started: Instant,
    core_uuid: Mutex<String>,
    ids: IdGen,
    calls: Mutex<CallTable>,
    hub: Mutex<Hub>,
    hash: Mutex<HashMap<String, String>>,
    recordings: Mutex<http_cache::Recordings>,
    log: Mutex<VecDeque<LoggedCommand>>,
    sessions_since_startup: AtomicU64,
    /// `bgapi` jobs running, bounded by `api::MAX_JOBS`.
    jobs: std::sync::atomic::AtomicUsize,
    shutdown: tokio::sync::watch::Sender<bool>,
}

#[derive(Default)]
pub(crate) struct CallTable {
    /// Every channel we still know, live or ended, by `Unique-ID`.
    by_id: HashMap<String, Arc<Channel>>,
    /// Live channels' task handles, to end them on restart/shutdown.
    tasks: HashMap<String, tokio::task::AbortHandle>,
    /// Ended channels, oldest first, for eviction.
    ended: VecDeque<String>,
    /// Every id in creation order, for listings.
    order: VecDeque<String>,
}

/// Locks a mutex even if a panicking thread poisoned it: simulator state stays usable (each
/// critical section leaves it consistent), and library code must not panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Inner {
    pub(crate) fn core_uuid(&self) -> String {
        lock(&self.core_uuid).clone()
    }

    pub(crate) fn channel(&self, id: &str) -> Option<Arc<Channel>> {
        lock(&self.calls).by_id.get(id).cloned()
    }

    /// A channel that still exists for FreeSWITCH (not yet destroyed).
    pub(crate) fn live_channel(&self, id: &str) -> Option<Arc<Channel>> {
        self.channel(id).filter(|c| !c.is_destroyed())
    }

    pub(crate) fn live_count(&self) -> usize {
        lock(&self.calls).tasks.len()
    }

    pub(crate) fn log_command(&self, entry: LoggedCommand) {
        let mut log = lock(&self.log);
        if log.len() >= MAX_COMMAND_LOG {
            log.pop_front();
        }
        log.push_back(entry);
    }

    /// Registers a new channel and starts its task; `None` when at `max_calls`.
    pub(crate) fn spawn_channel(
        self: &Arc<Self>,
        channel: Arc<Channel>,
        start: call::Start,
    ) -> Option<()> {
        let mut calls = lock(&self.calls);
        if calls.tasks.len() >= self.config.max_calls {
            return None;
        }
        let id = channel.id.clone();
        let handle = self
            .runtime
            .spawn(call::run(self.clone(), channel.clone(), start));
        calls.tasks.insert(id.clone(), handle.abort_handle());
        calls.by_id.insert(id.clone(), channel);
        calls.order.push_back(id);
        self.sessions_since_startup.fetch_add(1, Ordering::Relaxed);
        Some(())
    }

    /// Called by a channel's task when it has sent CHANNEL_DESTROY.
    pub(crate) fn channel_ended(&self, id: &str) {
        let mut calls = lock(&self.calls);
        calls.tasks.remove(id);
        calls.ended.push_back(id.to_owned());
        while calls.ended.len() > MAX_ENDED_CALLS {
            if let Some(old) = calls.ended.pop_front() {
                calls.by_id.remove(&old);
                // Calls end roughly in the order they started, so the oldest ended call is
                // found near the front; a `retain` would scan every call each time.
                if let Some(pos) = calls.order.iter().position(|i| *i == old) {
                    calls.order.remove(pos);
                }
            }
        }
    }

    pub(crate) fn time_scale(&self) -> f64 {
        if self.config.time_scale.is_finite() && self.config.time_scale > 0.0 {
            self.config.time_scale
        } else {
            0.0
        }
    }
}

impl Simulator {
    /// Binds the ESL listener and starts serving. Must be called inside a tokio runtime; the
    /// simulator keeps that runtime's handle for the tasks it starts later.
    pub async fn start(config: SimConfig) -> std::io::Result<Simulator> {
        let listener = tokio::net::TcpListener::bind(config.esl_listen).await?;
        let esl_addr = listener.local_addr()?;
        let ids = IdGen::new();
        let core_uuid = ids.uuid();
        let (shutdown, _) = tokio::sync::watch::channel(false);
        let inner = Arc::new(Inner {
            config,
            esl_addr,
            runtime: tokio::runtime::Handle::current(),
            started: Instant::now(),
            core_uuid: Mutex::new(core_uuid),
            ids,
            calls: Mutex::new(CallTable::default()),
            hub: Mutex::new(Hub::default()),
            hash: Mutex::new(HashMap::new()),
            recordings: Mutex::new(http_cache::Recordings::default()),
            log: Mutex::new(VecDeque::new()),
            sessions_since_startup: AtomicU64::new(0),
            jobs: std::sync::atomic::AtomicUsize::new(0),
            shutdown,
        });
        tokio::spawn(server::accept_loop(inner.clone(), listener));
        tokio::spawn(server::heartbeat_loop(inner.clone()));
        Ok(Simulator { inner })
    }

    pub fn esl_addr(&self) -> SocketAddr {
        self.inner.esl_addr
    }

    /// The current `Core-UUID`; changes on [`Simulator::restart`].
    pub fn core_uuid(&self) -> String {
        self.inner.core_uuid()
    }

    /// Places an inbound call: CHANNEL_CREATE … CHANNEL_PARK go to subscribers, then the call
    /// waits in park for a controller. Beyond [`MAX_CALLS`] live calls the call is refused:
    /// it is reported hung up with `SWITCH_CONGESTION` and no event is sent.
    pub fn place_call(&self, call: NewCall) -> CallId {
        self.place(call, call::Start::Inbound)
    }

    /// Places an inbound call whose dialplan is `socket <target> async full` (outbound socket
    /// mode, freeswitch-esl.md §3): the simulator connects to the controller listening at
    /// `target`, waits for its `connect`, replies with the channel data (a URL-encoded
    /// CHANNEL_DATA header block, as capture 11 shows), parks the call and takes commands for
    /// it on that connection. At hang-up the connection gets the disconnect notices (`linger`,
    /// then `disconnect` after the linger time scaled by `time_scale`) and is closed. If
    /// nothing listens at `target`, the call is hung up (`NORMAL_CLEARING`).
    pub fn place_socket_call(&self, call: NewCall, target: SocketAddr) -> CallId {
        self.place(call, call::Start::Socket(target))
    }

    fn place(&self, call: NewCall, start: call::Start) -> CallId {
        let id = self.inner.ids.uuid();
        let channel = Arc::new(Channel::inbound(&self.inner, id.clone(), call));
        if self.inner.spawn_channel(channel.clone(), start).is_none() {
            channel.refuse("SWITCH_CONGESTION");
            let mut calls = lock(&self.inner.calls);
            calls.by_id.insert(id.clone(), channel);
            calls.order.push_back(id.clone());
            calls.ended.push_back(id.clone());
        }
        id
    }

    pub fn call(&self, id: &str) -> Option<CallView> {
        self.inner.channel(id).map(|c| c.view())
    }

    /// Every call still known (live, then recently ended), oldest first.
    pub fn calls(&self) -> Vec<CallView> {
        let channels: Vec<Arc<Channel>> = {
            let calls = lock(&self.inner.calls);
            calls
                .order
                .iter()
                .filter_map(|id| calls.by_id.get(id).cloned())
                .collect()
        };
        channels.iter().map(|c| c.view()).collect()
    }

    /// The caller presses `digits` now. `false` if the call is unknown or over.
    pub fn send_dtmf(&self, id: &str, digits: &str) -> bool {
        match self.inner.live_channel(id) {
            Some(c) => c.caller_dtmf(digits),
            None => false,
        }
    }

    /// The caller hangs up now (`NORMAL_CLEARING`, or `ORIGINATOR_CANCEL` before answer, as
    /// FreeSWITCH reports a CANCEL — capture 14). `false` if the call is unknown or over.
    pub fn hangup(&self, id: &str) -> bool {
        match self.inner.live_channel(id) {
            Some(c) => c.caller_hangup(),
            None => false,
        }
    }

    /// Cuts every ESL connection, as a network failure would. Calls stay parked.
    pub fn drop_connections(&self) {
        server::drop_all(&self.inner);
    }

    /// Like a FreeSWITCH restart: connections cut, every call gone (no events; they are
    /// reported hung up with `SYSTEM_SHUTDOWN`), the hash store emptied, a new `Core-UUID`.
    pub fn restart(&self) {
        server::drop_all(&self.inner);
        let live: Vec<(String, tokio::task::AbortHandle)> = {
            let mut calls = lock(&self.inner.calls);
            calls.tasks.drain().collect()
        };
        for (id, task) in live {
            task.abort();
            if let Some(c) = self.inner.channel(&id) {
                c.refuse("SYSTEM_SHUTDOWN");
            }
            self.inner.channel_ended(&id);
        }
        lock(&self.inner.hash).clear();
        *lock(&self.inner.core_uuid) = self.inner.ids.uuid();
    }

    pub fn command_log(&self) -> Vec<LoggedCommand> {
        lock(&self.inner.log).iter().cloned().collect()
    }

    /// Stops listening, cuts connections and ends every call task.
    pub async fn shutdown(&self) {
        let _ = self.inner.shutdown.send(true);
        server::drop_all(&self.inner);
        let live: Vec<tokio::task::AbortHandle> = {
            let mut calls = lock(&self.inner.calls);
            calls.tasks.drain().map(|(_, t)| t).collect()
        };
        for task in live {
            task.abort();
        }
        tokio::task::yield_now().await;
    }
}

/// UUID-shaped ids without the `uuid` crate: a process-random seed and a counter, mixed by
/// splitmix64 so consecutive ids do not look alike (pivot must not rely on their order).
pub(crate) struct IdGen {
    seed: u64,
    counter: AtomicU64,
}

impl IdGen {
    fn new() -> IdGen {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        // The address of a fresh heap allocation adds per-process (ASLR) entropy.
        let probe = Box::new(0u8);
        let addr = &*probe as *const u8 as usize as u64;
        IdGen {
            seed: splitmix64(nanos ^ addr.rotate_left(32) ^ u64::from(std::process::id())),
            counter: AtomicU64::new(1),
        }
    }

    pub(crate) fn uuid(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let a = splitmix64(self.seed ^ n);
        let b = splitmix64(a ^ n.rotate_left(17));
        // Version 4 and RFC 4122 variant bits, so it parses as a random UUID.
        let a = (a & 0xffff_ffff_ffff_0fff) | 0x0000_0000_0000_4000;
        let b = (b & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xffff,
            b >> 48,
            b & 0xffff_ffff_ffff
        )
    }
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Microseconds since the Unix epoch (`Event-Date-Timestamp`).
pub(crate) fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// `(YYYY-MM-DD HH:MM:SS, "Mon, 23 Nov 2026 04:15:40 GMT")` for a Unix time in seconds (UTC;
/// the simulator's local time zone is UTC).
pub(crate) fn format_dates(secs: u64) -> (String, String) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let wd = WEEKDAYS[days.rem_euclid(7) as usize];
    let mon = MONTHS[((mo - 1).clamp(0, 11)) as usize];
    (
        format!("{y:04}-{mo:02}-{d:02} {h:02}:{m:02}:{s:02}"),
        format!("{wd}, {d:02} {mon} {y:04} {h:02}:{m:02}:{s:02} GMT"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_match_freeswitch_shape() {
        // 1795407340 s = the capture's Event-Date-Timestamp (2026-11-23 04:15:40 GMT).
        let (local, gmt) = format_dates(1_795_407_340);
        assert_eq!(local, "2026-11-23 04:15:40");
        assert_eq!(gmt, "Mon, 23 Nov 2026 04:15:40 GMT");
    }

    #[test]
    fn ids_are_uuid_shaped_and_distinct() {
        let ids = IdGen::new();
        let a = ids.uuid();
        let b = ids.uuid();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(a.as_bytes()[14], b'4');
    }
}
