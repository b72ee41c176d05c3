//! One simulated channel: its state (shared with the server and the public API) and the task
//! that plays FreeSWITCH's session thread — the park loop that dequeues `sendmsg` messages,
//! runs apps, honours event-lock, nests unlocked messages inside running apps (capture 10),
//! fires the caller's script, and hangs up in FreeSWITCH's order (captures 01, 07, 14).
//!
//! Every event about a channel is emitted from its own task, so they leave in one order.
//! Other tasks only set flags (kill, break, digits) and wake the channel.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, oneshot};

use super::server::{base_event, emit};
use super::{DialAnswer, Inner, NewCall, ScriptStep, TranscriptEvent, apps, lock, media};
use crate::esl::EslEvent;

/// Messages queued on one channel (FreeSWITCH's private event queue).
const MAX_QUEUE: usize = 512;
/// Caller digits not yet taken by the channel.
const MAX_PENDING_DTMF: usize = 256;
/// Transcript entries per call.
const MAX_TRANSCRIPT: usize = 2_000;
/// Channel variables per call.
const MAX_VARS: usize = 1_024;
/// Nesting depth of apps (SWITCH_MAX_STACKS).
const MAX_DEPTH: u32 = 32;
/// `loops: -1` runs forever on FreeSWITCH; the simulator stops after this many.
const MAX_LOOPS: i64 = 1_000;
/// At time_scale 0, how long a parked call with nothing queued waits (real time) before its
/// virtual clock jumps to the caller's next scripted action.
const IDLE_SETTLE: Duration = Duration::from_millis(250);

pub(crate) type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A `call-command: execute`.
#[derive(Debug, Clone)]
pub(crate) struct Exec {
    pub app: String,
    pub arg: String,
    pub event_uuid: Option<String>,
    pub lock: bool,
    pub loops: i64,
}

#[derive(Debug, Clone)]
pub(crate) enum Msg {
    Execute(Exec),
    /// `call-command: hangup` with its cause.
    Hangup(String),
}

/// Who ended the call: decides `PLAYBACK ERROR` vs `FILE PLAYED` and the SIP disposition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Who {
    Caller,
    Switch,
}

/// How a channel's task begins.
pub(crate) enum Start {
    /// A call from the caller: created, routed, parked.
    Inbound,
    /// A call from the caller routed to `socket <target> async full`: handed to the controller
    /// listening there, parked once it sent `connect` (freeswitch-esl.md §3).
    Socket(std::net::SocketAddr),
    /// `originate`: rings the far end, answers (or not), then parks or runs `then`.
    Outbound {
        /// The originate result, and a hold the leg waits on before it parks.
        result: oneshot::Sender<(String, oneshot::Sender<()>)>,
        answer: DialAnswer,
        timeout_ms: u64,
        then: Option<Exec>,
    },
}

pub(crate) struct Channel {
    pub id: String,
    state: Mutex<ChanState>,
    notify: Notify,
}

pub(crate) struct ChanState {
    pub outbound: bool,
    pub name: String,
    pub cid_name: String,
    pub cid_num: String,
    pub dest: String,
    pub username: String,
    pub created_us: u64,
    pub answered_us: u64,
    pub progress_us: u64,
    pub hangup_us: u64,
    pub vars: Vec<(String, String)>,
    pub answer: &'static str,
    pub call_state: &'static str,
    pub chan_state: &'static str,
    pub chan_state_num: u8,
    pub hangup_cause: Option<String>,
    pub hangup_by: Option<Who>,
    pub hung_up: bool,
    pub destroyed: bool,
    pub bridged: bool,
    pub parked: bool,
    pub transcript: Vec<TranscriptEvent>,
    queue: VecDeque<Msg>,
    break_req: bool,
    kill: Option<(String, Who)>,
    dtmf_in: VecDeque<char>,
    /// The virtual clock at time_scale 0 (ms since creation).
    vt_ms: u64,
    script: VecDeque<ScriptStep>,
    /// The caller hangs up after hearing this many prompts (a script's `after_prompt`).
    hangup_after_prompts: Option<u32>,
    prompts_heard: u32,
    pub dial_answer: DialAnswer,
    /// Stale `Application-Response` that park's COMPLETE repeats (captures 07, 08).
    last_response: String,
    answered_vt: Option<u64>,
}

impl ChanState {
    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn set_var(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        if let Some(slot) = self.vars.iter_mut().find(|(n, _)| n == name) {
            slot.1 = value;
        } else if self.vars.len() < MAX_VARS {
            self.vars.push((name.to_owned(), value));
        }
    }

    pub fn unset_var(&mut self, name: &str) {
        self.vars.retain(|(n, _)| n != name);
    }
}

impl Channel {
    fn with_state(id: String, state: ChanState) -> Channel {
        Channel {
            id,
            state: Mutex::new(state),
            notify: Notify::new(),
        }
    }

    pub(crate) fn inbound(inner: &Inner, id: String, call: NewCall) -> Channel {
        let host = "127.0.0.1";
        // Prompt-triggered hang-ups are not timed: they wait for the prompts, not the clock.
        let (after_prompt, mut script): (Vec<ScriptStep>, Vec<ScriptStep>) = call
            .script
            .iter()
            .cloned()
            .partition(|s| s.hangup && s.after_prompt.is_some());
        script.sort_by_key(|s| s.at_ms);
        let name = format!("sofia/external/{}@{host}:5060", call.from);
        let mut st = blank_state(name.clone(), false);
        st.cid_name = call.caller_id_name.clone();
        st.cid_num = call.caller_id_number.clone();
        st.dest = call.to.clone();
        st.username = call.from.clone();
        st.script = script.into();
        st.hangup_after_prompts = after_prompt.iter().filter_map(|s| s.after_prompt).min();
        st.dial_answer = call.dial_answer;
        let session = inner
            .sessions_since_startup
            .load(std::sync::atomic::Ordering::Relaxed)
            + 1;
        let vars: [(&str, String); 38] = [
            ("direction", "inbound".into()),
            ("uuid", id.clone()),
            ("session_id", session.to_string()),
            ("sip_from_user", call.from.clone()),
            ("sip_from_port", "5060".into()),
            ("sip_from_uri", format!("{}@{host}:5060", call.from)),
            ("sip_from_host", host.into()),
            ("channel_name", name),
            ("sip_call_id", format!("{id}@{host}")),
            ("sip_local_network_addr", host.into()),
            ("sip_network_ip", host.into()),
            ("sip_network_port", "5060".into()),
            ("sip_received_ip", host.into()),
            ("sip_received_port", "5060".into()),
            ("sip_via_protocol", "udp".into()),
            (
                "sip_from_user_stripped",
                call.from.trim_start_matches('+').to_owned(),
            ),
            ("sofia_profile_name", "external".into()),
            ("sip_from_display", call.caller_id_name.clone()),
            (
                "sip_full_from",
                format!(
                    "\"{}\" <sip:{}@{host}:5060>",
                    call.caller_id_name, call.from
                ),
            ),
            ("sip_full_to", format!("<sip:{}@{host}:5080>", call.to)),
            ("sip_req_user", call.to.clone()),
            ("sip_req_port", "5080".into()),
            ("sip_req_uri", format!("{}@{host}:5080", call.to)),
            ("sip_req_host", host.into()),
            ("sip_to_user", call.to.clone()),
            ("sip_to_port", "5080".into()),
            ("sip_to_uri", format!("{}@{host}:5080", call.to)),
            ("sip_to_host", host.into()),
            ("sip_user_agent", "pivot-sim".into()),
            ("max_forwards", "70".into()),
            ("read_codec", "PCMA".into()),
            ("read_rate", "8000".into()),
            ("write_codec", "PCMA".into()),
            ("write_rate", "8000".into()),
            ("dtmf_type", "rfc2833".into()),
            ("endpoint_disposition", "RECEIVED".into()),
            ("call_uuid", id.clone()),
            ("sip_invite_stamp", st.created_us.to_string()),
        ];
        for (n, v) in vars {
            st.set_var(n, v);
        }
        if let Some(account) = &call.account_id {
            st.set_var("pivot_account_id", account.clone());
        }
        Channel::with_state(id, st)
    }

    pub(crate) fn outbound(
        id: String,
        dest: &str,
        dial: &str,
        vars: &[(String, String)],
    ) -> Channel {
        let mut st = blank_state(format!("sofia/external/{dest}"), true);
        st.dest = dest.to_owned();
        let get = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        st.cid_num = get("origination_caller_id_number").unwrap_or_else(|| "0000000000".into());
        st.cid_name = get("origination_caller_id_name").unwrap_or_else(|| "Outbound Call".into());
        st.username = st.cid_num.clone();
        st.set_var("direction", "outbound");
        st.set_var("uuid", id.clone());
        st.set_var("call_uuid", id.clone());
        st.set_var(
            "originate_endpoint",
            dial.split('/').next().unwrap_or("sofia"),
        );
        st.set_var("sip_to_user", dest);
        st.set_var("sip_req_user", dest);
        for (n, v) in vars {
            st.set_var(n, v.clone());
        }
        Channel::with_state(id, st)
    }

    pub(crate) fn state(&self) -> std::sync::MutexGuard<'_, ChanState> {
        lock(&self.state)
    }

    pub(crate) fn is_destroyed(&self) -> bool {
        self.state().destroyed
    }

    pub(crate) fn wake(&self) {
        self.notify.notify_one();
    }

    /// Queues a `sendmsg`; `false` when the queue is full. Messages to a channel that is
    /// already hanging up are accepted and never run, as on FreeSWITCH.
    pub(crate) fn enqueue(&self, msg: Msg) -> bool {
        let mut st = self.state();
        if st.hung_up {
            return true;
        }
        if st.queue.len() >= MAX_QUEUE {
            return false;
        }
        st.queue.push_back(msg);
        true
    }

    /// `uuid_break [all]`: stop the running playback-like app; `all` also drops every
    /// queued message without a trace (capture 08).
    pub(crate) fn break_app(&self, all: bool) {
        {
            let mut st = self.state();
            if all {
                st.queue.clear();
            }
            st.break_req = true;
        }
        self.wake();
    }

    /// `uuid_kill`, `hupall`: the switch hangs the call up.
    pub(crate) fn kill(&self, cause: &str) {
        {
            let mut st = self.state();
            if st.hung_up || st.kill.is_some() {
                return;
            }
            st.kill = Some((cause.to_owned(), Who::Switch));
        }
        self.wake();
    }

    pub(crate) fn caller_hangup(&self) -> bool {
        {
            let mut st = self.state();
            if st.hung_up || st.destroyed {
                return false;
            }
            if st.kill.is_none() {
                st.kill = Some(("NORMAL_CLEARING".to_owned(), Who::Caller));
            }
        }
        self.wake();
        true
    }

    pub(crate) fn caller_dtmf(&self, digits: &str) -> bool {
        {
            let mut st = self.state();
            if st.hung_up {
                return false;
            }
            for d in digits.chars().filter(|c| media::is_dtmf(*c)) {
                if st.dtmf_in.len() < MAX_PENDING_DTMF {
                    st.dtmf_in.push_back(d);
                }
            }
        }
        self.wake();
        true
    }

    /// A call that never got a task (refused, or ended by a restart): reported hung up.
    pub(crate) fn refuse(&self, cause: &str) {
        let mut st = self.state();
        if !st.destroyed {
            st.hung_up = true;
            st.destroyed = true;
            st.answer = "hangup";
            st.hangup_cause = Some(cause.to_owned());
            let t = st.vt_ms;
            let mut ev = TranscriptEvent::new(t, "hangup", None);
            ev.cause = Some(cause.to_owned());
            st.transcript.push(ev);
        }
    }

    /// A transcript entry made outside the channel's task (an upload of its recording ended,
    /// perhaps after the call did), stamped with the channel's own simulated clock so it
    /// sorts with the entries the task made.
    pub(crate) fn note_external(
        &self,
        scale: f64,
        kind: &'static str,
        fill: impl FnOnce(&mut TranscriptEvent),
    ) {
        let mut st = self.state();
        if st.transcript.len() >= MAX_TRANSCRIPT {
            return;
        }
        let t_ms = if scale > 0.0 {
            let real_ms = super::now_micros().saturating_sub(st.created_us) as f64 / 1000.0;
            (real_ms / scale) as u64
        } else {
            st.vt_ms
        };
        let mut ev = TranscriptEvent::new(t_ms, kind, None);
        fill(&mut ev);
        st.transcript.push(ev);
    }

    pub(crate) fn view(&self) -> super::CallView {
        let st = self.state();
        let state = if st.hung_up {
            "hungup"
        } else if st.bridged {
            "bridged"
        } else if st.answer == "answered" {
            "answered"
        } else {
            "parked"
        };
        super::CallView {
            call_id: self.id.clone(),
            state,
            hangup_cause: st.hangup_cause.clone(),
            events: st.transcript.clone(),
        }
    }
}

fn blank_state(name: String, outbound: bool) -> ChanState {
    ChanState {
        outbound,
        name,
        cid_name: String::new(),
        cid_num: String::new(),
        dest: String::new(),
        username: String::new(),
        created_us: super::now_micros(),
        answered_us: 0,
        progress_us: 0,
        hangup_us: 0,
        vars: Vec::new(),
        answer: "ringing",
        call_state: "DOWN",
        chan_state: "CS_NEW",
        chan_state_num: 0,
        hangup_cause: None,
        hangup_by: None,
        hung_up: false,
        destroyed: false,
        bridged: false,
        parked: false,
        transcript: Vec::new(),
        queue: VecDeque::new(),
        break_req: false,
        kill: None,
        dtmf_in: VecDeque::new(),
        vt_ms: 0,
        script: VecDeque::new(),
        hangup_after_prompts: None,
        prompts_heard: 0,
        dial_answer: DialAnswer::Answer,
        last_response: "_none_".to_owned(),
        answered_vt: None,
    }
}

/// What ended a [`Actor::wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    Elapsed,
    Break,
    Hangup,
    Digit(char),
}

/// What may interrupt a wait.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WaitOpts {
    /// `uuid_break` ends it.
    pub breakable: bool,
    /// Caller digits end it (otherwise they are announced and dropped).
    pub digits: bool,
    /// Unlocked queued messages run nested inside it (playback-like apps parse events).
    pub nest: bool,
}

/// The channel's task.
pub(crate) struct Actor {
    pub inner: Arc<Inner>,
    pub ch: Arc<Channel>,
    created: Instant,
    scale: f64,
    depth: u32,
    lock_depth: u32,
    park_uuid: String,
    /// The dialplan app the call waits in: `park`, or `socket` with its argument.
    park_app: (&'static str, String),
    /// The outbound connection controlling this call, for a `socket` call.
    socket: Option<super::outbound::Link>,
}

pub(crate) async fn run(inner: Arc<Inner>, ch: Arc<Channel>, start: Start) {
    let park_uuid = inner.ids.uuid();
    let mut actor = Actor {
        scale: inner.time_scale(),
        inner,
        ch,
        created: Instant::now(),
        depth: 0,
        lock_depth: 0,
        park_uuid,
        park_app: ("park", String::new()),
        socket: None,
    };
    match start {
        Start::Inbound => actor.start_inbound(),
        Start::Socket(target) => actor.start_socket(target).await,
        Start::Outbound {
            result,
            answer,
            timeout_ms,
            then,
        } => actor.start_outbound(result, answer, timeout_ms, then).await,
    }
    actor.park_loop().await;
    actor.finalize().await;
}

impl Actor {
    pub fn id(&self) -> &str {
        &self.ch.id
    }

    /// Simulated ms since the channel was created.
    pub fn vnow(&self) -> u64 {
        if self.scale > 0.0 {
            (self.created.elapsed().as_secs_f64() * 1000.0 / self.scale) as u64
        } else {
            self.ch.state().vt_ms
        }
    }

    pub fn var(&self, name: &str) -> Option<String> {
        self.ch.state().var(name).map(str::to_owned)
    }

    pub fn set_var(&self, name: &str, value: impl Into<String>) {
        self.ch.state().set_var(name, value);
    }

    pub fn hung_up(&self) -> bool {
        self.ch.state().hung_up
    }

    /// Appends to the transcript; returns its index for later updates.
    pub fn transcript(&self, ev: TranscriptEvent) -> Option<usize> {
        let mut st = self.ch.state();
        if st.transcript.len() >= MAX_TRANSCRIPT {
            return None;
        }
        st.transcript.push(ev);
        Some(st.transcript.len() - 1)
    }

    pub fn transcript_update(&self, idx: Option<usize>, f: impl FnOnce(&mut TranscriptEvent)) {
        if let Some(i) = idx
            && let Some(ev) = self.ch.state().transcript.get_mut(i)
        {
            f(ev);
        }
    }

    /// A prompt ended (however it ended): a caller scripted to hang up after so many prompts
    /// does so now, before the next app starts.
    pub fn prompt_heard(&self) {
        let mut st = self.ch.state();
        st.prompts_heard = st.prompts_heard.saturating_add(1);
        if st
            .hangup_after_prompts
            .is_some_and(|n| st.prompts_heard >= n)
            && !st.hung_up
            && st.kill.is_none()
        {
            st.hangup_after_prompts = None;
            st.kill = Some(("NORMAL_CLEARING".to_owned(), Who::Caller));
        }
    }

    pub fn note(&self, kind: &'static str, app_uuid: Option<&str>) -> TranscriptEvent {
        TranscriptEvent::new(self.vnow(), kind, app_uuid.map(str::to_owned))
    }

    /// A channel event with FreeSWITCH's header layout: common headers, `pre` headers, the
    /// channel state block, `post` headers, codec and caller profile, then every variable for
    /// the event types that carry them (CH:2759-2800).
    pub fn channel_event(
        &self,
        name: &str,
        pre: &[(&str, String)],
        post: &[(&str, String)],
    ) -> EslEvent {
        // `push`, not `set`: the names below are distinct by construction, and a `set` per
        // header would make building an event quadratic in its ~100 headers.
        let mut ev = base_event(
            &self.inner,
            name,
            "switch_channel.c",
            "switch_channel_event",
        );
        for (n, v) in pre {
            ev.push(n, v);
        }
        let st = self.ch.state();
        let dir = if st.outbound { "outbound" } else { "inbound" };
        ev.push("Channel-State", st.chan_state);
        ev.push("Channel-Call-State", st.call_state);
        ev.push_u64("Channel-State-Number", u64::from(st.chan_state_num));
        ev.push("Channel-Name", &st.name);
        ev.push("Unique-ID", &self.ch.id);
        ev.push("Call-Direction", dir);
        ev.push("Presence-Call-Direction", dir);
        ev.push(
            "Channel-HIT-Dialplan",
            if st.outbound { "false" } else { "true" },
        );
        ev.push("Channel-Call-UUID", &self.ch.id);
        ev.push("Answer-State", st.answer);
        if let Some(cause) = &st.hangup_cause {
            ev.push("Hangup-Cause", cause);
        }
        for (n, v) in post {
            ev.push(n, v);
        }
        for (n, v) in [
            ("Channel-Read-Codec-Name", "PCMA"),
            ("Channel-Read-Codec-Rate", "8000"),
            ("Channel-Read-Codec-Bit-Rate", "64000"),
            ("Channel-Write-Codec-Name", "PCMA"),
            ("Channel-Write-Codec-Rate", "8000"),
            ("Channel-Write-Codec-Bit-Rate", "64000"),
        ] {
            ev.push(n, v);
        }
        // The caller profile, pushed from borrowed state: no `String` per value.
        for (n, v) in [
            ("Caller-Direction", dir),
            ("Caller-Logical-Direction", dir),
            ("Caller-Username", &st.username),
            ("Caller-Dialplan", "XML"),
            ("Caller-Caller-ID-Name", &st.cid_name),
            ("Caller-Caller-ID-Number", &st.cid_num),
            ("Caller-Orig-Caller-ID-Name", &st.cid_name),
            ("Caller-Orig-Caller-ID-Number", &st.cid_num),
            ("Caller-Network-Addr", "127.0.0.1"),
            ("Caller-ANI", &st.cid_num),
            ("Caller-Destination-Number", &st.dest),
            ("Caller-Unique-ID", &self.ch.id),
            ("Caller-Source", "mod_sofia"),
            ("Caller-Context", "public"),
            ("Caller-Channel-Name", &st.name),
            ("Caller-Profile-Index", "1"),
        ] {
            ev.push(n, v);
        }
        ev.push_u64("Caller-Profile-Created-Time", st.created_us);
        ev.push_u64("Caller-Channel-Created-Time", st.created_us);
        ev.push_u64("Caller-Channel-Answered-Time", st.answered_us);
        ev.push_u64("Caller-Channel-Progress-Time", st.progress_us);
        ev.push("Caller-Channel-Progress-Media-Time", "0");
        ev.push_u64("Caller-Channel-Hangup-Time", st.hangup_us);
        for (n, v) in [
            ("Caller-Channel-Transfer-Time", "0"),
            ("Caller-Channel-Resurrect-Time", "0"),
            ("Caller-Channel-Bridged-Time", "0"),
            ("Caller-Channel-Last-Hold", "0"),
            ("Caller-Channel-Hold-Accum", "0"),
            ("Caller-Screen-Bit", "true"),
            ("Caller-Privacy-Hide-Name", "false"),
            ("Caller-Privacy-Hide-Number", "false"),
        ] {
            ev.push(n, v);
        }
        if carries_variables(name) {
            for (n, v) in &st.vars {
                ev.push_prefixed("variable_", n, v);
            }
        }
        ev
    }

    pub fn emit_channel(&self, name: &str, pre: &[(&str, String)], post: &[(&str, String)]) {
        if !super::server::anyone_wants(&self.inner, name) {
            return;
        }
        let ev = self.channel_event(name, pre, post);
        emit(&self.inner, ev);
    }

    pub fn emit(&self, ev: EslEvent) {
        emit(&self.inner, ev);
    }

    fn set_state(&self, name: &'static str, num: u8) {
        let mut st = self.ch.state();
        st.chan_state = name;
        st.chan_state_num = num;
    }

    fn emit_state(&self, name: &'static str, num: u8) {
        self.set_state(name, num);
        self.emit_channel("CHANNEL_STATE", &[], &[]);
    }

    fn emit_callstate(&self, call_state: &'static str) {
        let original = {
            let mut st = self.ch.state();
            std::mem::replace(&mut st.call_state, call_state)
        };
        self.emit_channel(
            "CHANNEL_CALLSTATE",
            &[("Original-Channel-Call-State", original.to_owned())],
            &[],
        );
    }

    fn start_inbound(&mut self) {
        self.route();
        self.enter_park();
    }

    /// Created and routed: the dialplan starts executing.
    fn route(&mut self) {
        self.emit_state("CS_NEW", 0);
        self.emit_state("CS_INIT", 1);
        self.emit_channel("CHANNEL_CREATE", &[], &[]);
        self.emit_callstate("RINGING");
        self.emit_state("CS_ROUTING", 2);
        self.emit_state("CS_EXECUTE", 4);
    }

    /// The dialplan's `socket <target> async full` (ES:415-551): connect to the controller,
    /// wait for its `connect`, answer with the channel data, then park. If the controller
    /// cannot be reached the app returns and, nothing following it, the call is hung up.
    async fn start_socket(&mut self, target: std::net::SocketAddr) {
        self.route();
        let data = format!("{target} async full");
        {
            let mut st = self.ch.state();
            st.set_var("current_application_data", data.clone());
            st.set_var("current_application", "socket");
            st.set_var("socket_host", target.ip().to_string());
        }
        let app_uuid = self.inner.ids.uuid();
        let app_headers = vec![
            ("Application", "socket".to_owned()),
            ("Application-Data", data.clone()),
            ("Application-UUID", app_uuid.clone()),
        ];
        self.emit_channel("CHANNEL_EXECUTE", &[], &app_headers);
        let channel_data = self.channel_event("CHANNEL_DATA", &[], &[]);
        let link = super::outbound::connect(&self.inner, &self.ch, target, channel_data).await;
        match link {
            Some(link) => {
                self.socket = Some(link);
                self.park_uuid = app_uuid;
                self.park_app = ("socket", data);
                self.ch.state().parked = true;
                self.emit_channel("CHANNEL_PARK", &[], &[]);
                let ev = self.note("parked", None);
                self.transcript(ev);
            }
            None => {
                let mut headers = app_headers;
                headers.insert(2, ("Application-Response", "_none_".to_owned()));
                self.emit_channel("CHANNEL_EXECUTE_COMPLETE", &[], &headers);
                self.hangup_now("NORMAL_CLEARING", Who::Switch);
            }
        }
    }

    /// The dialplan's `park`: EXECUTE park (random Application-UUID), CHANNEL_PARK.
    fn enter_park(&mut self) {
        self.set_var("current_application", "park");
        self.emit_channel(
            "CHANNEL_EXECUTE",
            &[],
            &[
                ("Application", "park".into()),
                ("Application-Data", String::new()),
                ("Application-UUID", self.park_uuid.clone()),
            ],
        );
        self.ch.state().parked = true;
        self.emit_channel("CHANNEL_PARK", &[], &[]);
        let ev = self.note("parked", None);
        self.transcript(ev);
    }

    async fn start_outbound(
        &mut self,
        result: oneshot::Sender<(String, oneshot::Sender<()>)>,
        answer: DialAnswer,
        timeout_ms: u64,
        then: Option<Exec>,
    ) {
        let (hold_tx, hold_rx) = oneshot::channel();
        self.emit_channel("CHANNEL_OUTGOING", &[], &[]);
        self.emit_state("CS_INIT", 1);
        self.emit_channel("CHANNEL_CREATE", &[], &[]);
        self.emit_channel("CHANNEL_ORIGINATE", &[], &[]);
        self.set_state("CS_CONSUME_MEDIA", 7);
        self.ch.state().progress_us = super::now_micros();
        self.emit_channel("CHANNEL_PROGRESS", &[], &[]);
        let ring = match answer {
            DialAnswer::Answer => 500,
            DialAnswer::Busy => 20,
            DialAnswer::NoAnswer => timeout_ms,
        };
        let opts = WaitOpts {
            breakable: false,
            digits: false,
            nest: false,
        };
        let (wake, _) = self.wait(Some(ring), opts).await;
        if wake == Wake::Hangup {
            let cause = self.ch.state().hangup_cause.clone().unwrap_or_default();
            let _ = result.send((format!("-ERR {cause}\n"), hold_tx));
            return;
        }
        match answer {
            DialAnswer::Answer => {
                self.answer(None);
                let _ = result.send((format!("+OK {}\n", self.ch.id), hold_tx));
                // The job's result goes out before the leg parks (capture 09); bounded in
                // case the requester vanished.
                let _ = tokio::time::timeout(Duration::from_secs(5), hold_rx).await;
                self.set_state("CS_EXECUTE", 4);
                self.enter_park();
                if let Some(exec) = then {
                    self.ch.enqueue(Msg::Execute(exec));
                    self.ch.enqueue(Msg::Hangup("NORMAL_CLEARING".into()));
                }
            }
            DialAnswer::Busy => {
                {
                    let mut st = self.ch.state();
                    st.set_var("sip_hangup_disposition", "recv_refuse");
                    st.set_var("sip_term_status", "486");
                    st.set_var("proto_specific_hangup_cause", "sip:486");
                }
                self.hangup_now("USER_BUSY", Who::Caller);
                let _ = result.send(("-ERR USER_BUSY\n".to_owned(), hold_tx));
            }
            DialAnswer::NoAnswer => {
                self.hangup_now("NO_ANSWER", Who::Switch);
                let _ = result.send(("-ERR NO_ANSWER\n".to_owned(), hold_tx));
            }
        }
    }

    /// Answers if not answered yet: CHANNEL_ANSWER, CHANNEL_CALLSTATE ACTIVE.
    pub fn answer(&self, app_uuid: Option<&str>) {
        let now = self.vnow();
        {
            let mut st = self.ch.state();
            if st.answer == "answered" || st.hung_up {
                return;
            }
            st.answer = "answered";
            st.answered_us = super::now_micros();
            st.answered_vt = Some(now);
        }
        self.emit_channel("CHANNEL_ANSWER", &[], &[]);
        self.emit_callstate("ACTIVE");
        let ev = self.note("answered", app_uuid);
        self.transcript(ev);
    }

    /// `pre_answer`: early media (183), CHANNEL_PROGRESS_MEDIA.
    pub fn pre_answer(&self) {
        {
            let mut st = self.ch.state();
            if st.answer != "ringing" || st.hung_up {
                return;
            }
            st.answer = "early";
            st.progress_us = super::now_micros();
        }
        self.emit_channel("CHANNEL_PROGRESS_MEDIA", &[], &[]);
        self.emit_callstate("EARLY");
    }

    /// A media app on an unanswered inbound channel pre-answers it (CSS:2794-2800).
    pub fn ensure_media(&self) {
        let inbound_ringing = {
            let st = self.ch.state();
            !st.outbound && st.answer == "ringing"
        };
        if inbound_ringing {
            self.pre_answer();
        }
    }

    /// The hang-up moment: CHANNEL_HANGUP, queued messages dropped. Running apps then unwind
    /// (each sends its own COMPLETE) and [`Actor::finalize`] sends the rest.
    pub fn hangup_now(&self, cause: &str, who: Who) {
        let cause = {
            let mut st = self.ch.state();
            if st.hung_up {
                return;
            }
            let answered = st.answer == "answered";
            let cause =
                if who == Who::Caller && st.answer == "ringing" && cause == "NORMAL_CLEARING" {
                    // The caller gave up while it still rang: a CANCEL (capture 14). Once media
                    // flows (early or answered) the simulator reports NORMAL_CLEARING, the cause
                    // DESIGN §5 promises for a caller hang-up.
                    "ORIGINATOR_CANCEL".to_owned()
                } else {
                    media::normalize_cause(cause)
                };
            st.hung_up = true;
            st.answer = "hangup";
            st.chan_state_num = 10;
            st.hangup_us = super::now_micros();
            st.hangup_cause = Some(cause.clone());
            st.hangup_by = Some(who);
            st.queue.clear();
            st.kill = None;
            st.bridged = false;
            match (who, answered) {
                (Who::Caller, true) => {
                    st.set_var("sip_term_status", "200");
                    st.set_var("proto_specific_hangup_cause", "sip:200");
                    st.set_var("sip_hangup_disposition", "recv_bye");
                }
                (Who::Caller, false) if cause == "ORIGINATOR_CANCEL" => {
                    st.set_var("sip_hangup_disposition", "recv_cancel");
                    st.set_var("sip_term_status", "487");
                    st.set_var("proto_specific_hangup_cause", "sip:487");
                    st.set_var("sip_invite_failure_status", "487");
                }
                (Who::Caller, false) => {}
                (Who::Switch, true) => st.set_var("sip_hangup_disposition", "send_bye"),
                (Who::Switch, false) => {
                    st.set_var("sip_hangup_disposition", "send_refuse");
                    st.set_var("sip_term_status", media::cause_to_sip(&cause).to_string());
                }
            }
            cause
        };
        self.emit_channel("CHANNEL_HANGUP", &[], &[]);
        let mut ev = self.note("hangup", None);
        ev.cause = Some(cause);
        self.transcript(ev);
    }

    fn emit_dtmf(&self, digit: char) {
        self.emit_channel(
            "DTMF",
            &[],
            &[
                ("DTMF-Digit", digit.to_string()),
                ("DTMF-Duration", "2240".into()),
                ("DTMF-Source", "RTP".into()),
            ],
        );
        let mut ev = self.note("dtmf", None);
        ev.digits = Some(digit.to_string());
        self.transcript(ev);
    }

    /// A scripted caller action comes due.
    fn fire_step(&self, step: ScriptStep) {
        let mut st = self.ch.state();
        if let Some(digits) = &step.dtmf {
            for d in digits.chars().filter(|c| media::is_dtmf(*c)) {
                if st.dtmf_in.len() < MAX_PENDING_DTMF {
                    st.dtmf_in.push_back(d);
                }
            }
        }
        if step.hangup && !st.hung_up && st.kill.is_none() {
            st.kill = Some(("NORMAL_CLEARING".to_owned(), Who::Caller));
        }
    }

    fn next_hangup_at(&self) -> Option<u64> {
        self.ch
            .state()
            .script
            .iter()
            .find(|s| s.hangup)
            .map(|s| s.at_ms)
    }

    fn next_step_at(&self) -> Option<u64> {
        self.ch.state().script.front().map(|s| s.at_ms)
    }

    /// In real time (time_scale > 0): waits until simulated time `v_ms` (forever when `None`)
    /// or until the channel is woken, whichever comes first.
    async fn sleep_until_or(
        &self,
        notified: tokio::sync::futures::Notified<'_>,
        v_ms: Option<u64>,
    ) {
        match v_ms {
            Some(v) => {
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep_until(self.real_deadline(v)) => {}
                }
            }
            None => notified.await,
        }
    }

    /// The real instant at which simulated time `v_ms` is reached (time_scale > 0).
    fn real_deadline(&self, v_ms: u64) -> tokio::time::Instant {
        let secs = (v_ms as f64) * self.scale / 1000.0;
        let offset = Duration::try_from_secs_f64(secs).unwrap_or(Duration::from_secs(86_400 * 365));
        tokio::time::Instant::from_std(self.created) + offset
    }

    /// Lets `dur` simulated ms pass (forever when `None`) unless something interrupts it.
    /// Returns why it ended and how much of its own time passed (nested apps excluded).
    pub fn wait(&mut self, dur: Option<u64>, opts: WaitOpts) -> BoxFut<'_, (Wake, u64)> {
        Box::pin(async move {
            let start = self.vnow();
            let mut target = dur.map(|d| start.saturating_add(d));
            let mut nested_total: u64 = 0;
            loop {
                enum Sig {
                    Kill(String, Who),
                    Hung,
                    Break,
                    Digit(char),
                    Nest(Msg),
                    Step(ScriptStep),
                    Nothing,
                }
                let now = self.vnow();
                let sig = {
                    let mut st = self.ch.state();
                    if let Some((cause, who)) = st.kill.take() {
                        Sig::Kill(cause, who)
                    } else if st.hung_up {
                        Sig::Hung
                    } else if opts.breakable && std::mem::take(&mut st.break_req) {
                        Sig::Break
                    } else if let Some(d) = st.dtmf_in.pop_front() {
                        Sig::Digit(d)
                    } else if opts.nest
                        && self.lock_depth == 0
                        && self.depth < MAX_DEPTH
                        && let Some(m) = st.queue.pop_front()
                    {
                        Sig::Nest(m)
                    } else if st.script.front().is_some_and(|s| s.at_ms <= now) {
                        st.script.pop_front().map_or(Sig::Nothing, Sig::Step)
                    } else {
                        Sig::Nothing
                    }
                };
                let consumed =
                    |a: &Actor| a.vnow().saturating_sub(start).saturating_sub(nested_total);
                match sig {
                    Sig::Kill(cause, who) => {
                        self.hangup_now(&cause, who);
                        return (Wake::Hangup, consumed(self));
                    }
                    Sig::Hung => return (Wake::Hangup, consumed(self)),
                    Sig::Break => return (Wake::Break, consumed(self)),
                    Sig::Digit(d) => {
                        self.emit_dtmf(d);
                        if opts.digits {
                            return (Wake::Digit(d), consumed(self));
                        }
                        continue;
                    }
                    Sig::Nest(msg) => {
                        // The running app pauses while the nested one plays (LIFO, capture 10).
                        let before = self.vnow();
                        self.run_msg(msg).await;
                        let spent = self.vnow().saturating_sub(before);
                        nested_total += spent;
                        target = target.map(|t| t.saturating_add(spent));
                        continue;
                    }
                    Sig::Step(step) => {
                        self.fire_step(step);
                        continue;
                    }
                    Sig::Nothing => {}
                }
                if target.is_some_and(|t| now >= t) {
                    return (Wake::Elapsed, consumed(self));
                }
                let next = match (target, self.next_step_at()) {
                    (Some(t), Some(s)) => Some(t.min(s)),
                    (t, s) => t.or(s),
                };
                if self.scale > 0.0 {
                    let notified = self.ch.notify.notified();
                    self.sleep_until_or(notified, next).await;
                } else {
                    match next {
                        Some(v) => {
                            {
                                let mut st = self.ch.state();
                                st.vt_ms = st.vt_ms.max(v);
                            }
                            // Zero-time media still lets API commands and other calls run.
                            tokio::task::yield_now().await;
                        }
                        None => self.ch.notify.notified().await,
                    }
                }
            }
        })
    }

    /// The park loop: run queued messages in order until the channel hangs up.
    async fn park_loop(&mut self) {
        loop {
            enum Next {
                Kill(String, Who),
                Hung,
                Msg(Msg),
                Digit(char),
                Step(ScriptStep),
                Idle,
            }
            let now = self.vnow();
            let next = {
                let mut st = self.ch.state();
                // Nothing is running: a break has nothing to stop (see the report: a stale
                // break must not cut the next prompt after an adoption's `uuid_break all`).
                st.break_req = false;
                if let Some((cause, who)) = st.kill.take() {
                    Next::Kill(cause, who)
                } else if st.hung_up {
                    Next::Hung
                } else if let Some(m) = st.queue.pop_front() {
                    Next::Msg(m)
                } else if let Some(d) = st.dtmf_in.pop_front() {
                    Next::Digit(d)
                } else if let Some(i) = st.script.iter().position(|s| s.hangup && s.at_ms <= now) {
                    // Scripted digits due before it were never heard; the hang-up happens.
                    let step = st.script.drain(..=i).next_back();
                    step.map_or(Next::Idle, Next::Step)
                } else {
                    Next::Idle
                }
            };
            match next {
                Next::Kill(cause, who) => {
                    self.hangup_now(&cause, who);
                    return;
                }
                Next::Hung => return,
                Next::Msg(m) => self.run_msg(m).await,
                // Park reads and drops digits nobody asked for.
                Next::Digit(d) => self.emit_dtmf(d),
                Next::Step(s) => self.fire_step(s),
                Next::Idle => {
                    let notified = self.ch.notify.notified();
                    // Scripted digits are not pressed into an idle park (FreeSWITCH would drop
                    // them): they wait for the next app, so a script does not depend on how
                    // fast the controller answers the park. Only a hang-up is timed here.
                    let step = self.next_hangup_at();
                    if self.scale > 0.0 {
                        self.sleep_until_or(notified, step).await;
                    } else {
                        match step {
                            Some(v) => {
                                let settled = tokio::select! {
                                    _ = notified => false,
                                    _ = tokio::time::sleep(IDLE_SETTLE) => true,
                                };
                                if settled {
                                    let mut st = self.ch.state();
                                    st.vt_ms = st.vt_ms.max(v);
                                }
                            }
                            None => notified.await,
                        }
                    }
                }
            }
        }
    }

    /// Runs one dequeued message (boxed: apps may nest messages inside their waits).
    pub fn run_msg(&mut self, msg: Msg) -> BoxFut<'_, ()> {
        Box::pin(async move {
            match msg {
                Msg::Hangup(cause) => self.hangup_now(&cause, Who::Switch),
                Msg::Execute(exec) => {
                    // CSS:2738-2763: nothing runs on a channel that is going down.
                    if self.hung_up() {
                        return;
                    }
                    if !apps::exists(&exec.app) {
                        // CSS:2769-2773: no EXECUTE, no COMPLETE; the call is torn down.
                        self.hangup_now("DESTINATION_OUT_OF_ORDER", Who::Switch);
                        return;
                    }
                    let loops = if exec.loops < 0 {
                        MAX_LOOPS
                    } else {
                        exec.loops.clamp(1, MAX_LOOPS)
                    };
                    for _ in 0..loops {
                        if self.hung_up() {
                            break;
                        }
                        self.execute(&exec).await;
                    }
                }
            }
        })
    }

    async fn execute(&mut self, exec: &Exec) {
        self.depth += 1;
        if exec.lock {
            self.lock_depth += 1;
        }
        let app_uuid = exec
            .event_uuid
            .clone()
            .unwrap_or_else(|| self.inner.ids.uuid());
        {
            let mut st = self.ch.state();
            st.set_var("current_application", exec.app.clone());
            st.set_var("current_application_data", exec.arg.clone());
        }
        let app_headers = |response: Option<&str>| {
            let mut h = vec![("Application", exec.app.clone())];
            // An app run without an argument has no Application-Data at all (every capture).
            if !exec.arg.is_empty() {
                h.push(("Application-Data", exec.arg.clone()));
            }
            if let Some(r) = response {
                h.push(("Application-Response", r.to_owned()));
            }
            h.push(("Application-UUID", app_uuid.clone()));
            h
        };
        self.emit_channel("CHANNEL_EXECUTE", &[], &app_headers(None));
        let response = apps::run(self, exec).await;
        let response = response.unwrap_or_else(|| "_none_".to_owned());
        self.ch.state().last_response = response.clone();
        self.emit_channel(
            "CHANNEL_EXECUTE_COMPLETE",
            &[],
            &app_headers(Some(&response)),
        );
        if exec.lock {
            self.lock_depth -= 1;
        }
        self.depth -= 1;
    }

    /// Everything after the hang-up moment, in FreeSWITCH's order (capture 01).
    async fn finalize(&mut self) {
        if !self.hung_up() {
            self.hangup_now("NORMAL_CLEARING", Who::Switch);
        }
        if self.ch.state().parked {
            self.emit_channel("CHANNEL_UNPARK", &[], &[]);
            let response = self.ch.state().last_response.clone();
            self.emit_channel(
                "CHANNEL_EXECUTE_COMPLETE",
                &[],
                &park_complete_headers(self.park_app.clone(), &self.park_uuid, response),
            );
        }
        self.emit_state("CS_HANGUP", 10);
        self.emit_callstate("HANGUP");
        self.set_state("CS_REPORTING", 11);
        self.emit_channel("CHANNEL_STATE", &[], &[]);
        let now = self.vnow();
        {
            let mut st = self.ch.state();
            let cause = st
                .hangup_cause
                .clone()
                .unwrap_or_else(|| "NORMAL_CLEARING".into());
            let q850 = media::cause_code(&cause);
            let answered_at = st.answered_vt;
            let bill_ms = answered_at.map_or(0, |a| now.saturating_sub(a));
            let vars: [(&str, String); 10] = [
                ("hangup_cause", cause),
                ("hangup_cause_q850", q850.to_string()),
                ("duration", (now / 1000).to_string()),
                ("billsec", (bill_ms / 1000).to_string()),
                ("answersec", answered_at.map_or(0, |a| a / 1000).to_string()),
                ("mduration", now.to_string()),
                ("billmsec", bill_ms.to_string()),
                ("answermsec", answered_at.unwrap_or(0).to_string()),
                ("uduration", (now * 1000).to_string()),
                ("billusec", (bill_ms * 1000).to_string()),
            ];
            for (n, v) in vars {
                st.set_var(n, v);
            }
            if st.var("sip_hangup_disposition").is_none() {
                st.set_var("sip_hangup_disposition", "send_bye");
            }
        }
        self.emit_channel("CHANNEL_HANGUP_COMPLETE", &[], &[]);
        // A controlling socket holds the session until it has lingered and closed: only then
        // can the channel be destroyed, so it never sees its own CHANNEL_DESTROY (§3.4).
        if let Some(link) = self.socket.take() {
            link.hung_up().await;
        }
        self.emit_channel("CHANNEL_DESTROY", &[], &[]);
        self.set_state("CS_DESTROY", 12);
        self.emit_channel("CHANNEL_STATE", &[], &[]);
        self.ch.state().destroyed = true;
        self.inner.channel_ended(&self.ch.id);
    }
}

/// Event types that carry every channel variable (CH:2759-2800).
fn carries_variables(name: &str) -> bool {
    matches!(
        name,
        "CHANNEL_CREATE"
            | "CHANNEL_ORIGINATE"
            | "CHANNEL_UUID"
            | "CHANNEL_ANSWER"
            | "CHANNEL_PARK"
            | "CHANNEL_UNPARK"
            | "CHANNEL_BRIDGE"
            | "CHANNEL_UNBRIDGE"
            | "CHANNEL_PROGRESS"
            | "CHANNEL_PROGRESS_MEDIA"
            | "CHANNEL_HANGUP"
            | "CHANNEL_HANGUP_COMPLETE"
            | "CHANNEL_DATA"
            | "CHANNEL_EXECUTE"
            | "CHANNEL_EXECUTE_COMPLETE"
            | "CHANNEL_DESTROY"
            | "SESSION_HEARTBEAT"
            | "API"
            | "RECORD_START"
            | "RECORD_STOP"
            | "PLAYBACK_START"
            | "PLAYBACK_STOP"
            | "CALL_UPDATE"
    )
}

/// The headers of the park (or socket) app's EXECUTE_COMPLETE; an empty argument is left out,
/// as FreeSWITCH does.
fn park_complete_headers(
    (app, arg): (&'static str, String),
    uuid: &str,
    response: String,
) -> Vec<(&'static str, String)> {
    let mut headers = vec![("Application", app.to_owned())];
    if !arg.is_empty() {
        headers.push(("Application-Data", arg));
    }
    headers.push(("Application-Response", response));
    headers.push(("Application-UUID", uuid.to_owned()));
    headers
}
