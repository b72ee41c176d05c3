//! The dialplan applications the simulator runs, with FreeSWITCH's outcomes
//! (freeswitch-esl.md §4 and the captures). Each returns its `Application-Response`
//! (`None` = `_none_`).

use super::call::{Actor, Exec, WaitOpts, Wake, Who};
use super::media;
use crate::sim::DialAnswer;

const APPS: &[&str] = &[
    "answer",
    "pre_answer",
    "ring_ready",
    "playback",
    "speak",
    "record",
    "play_and_get_digits",
    "read",
    "bridge",
    "hangup",
    "respond",
    "sleep",
    "set",
    "export",
    "multiset",
    "unset",
    "send_dtmf",
    "transfer",
    "conference",
    "park",
    "break",
    "log",
    "info",
    "echo",
];

pub(crate) fn exists(app: &str) -> bool {
    APPS.contains(&app)
}

const MEDIA: WaitOpts = WaitOpts {
    breakable: true,
    digits: true,
    nest: true,
};

pub(crate) async fn run(a: &mut Actor, ex: &Exec) -> Option<String> {
    let uuid = ex.event_uuid.as_deref();
    match ex.app.as_str() {
        "answer" => {
            a.answer(uuid);
            None
        }
        "pre_answer" => {
            a.pre_answer();
            None
        }
        "ring_ready" => {
            a.emit_channel("CHANNEL_PROGRESS", &[], &[]);
            None
        }
        "playback" => Some(playback(a, ex).await),
        "speak" => {
            speak(a, ex).await;
            None
        }
        "record" => {
            record(a, ex).await;
            None
        }
        "play_and_get_digits" => {
            play_and_get_digits(a, ex).await;
            None
        }
        "read" => {
            read(a, ex).await;
            None
        }
        "bridge" => {
            bridge(a, ex).await;
            None
        }
        "hangup" => {
            let cause = ex.arg.trim();
            a.hangup_now(
                if cause.is_empty() {
                    "NORMAL_CLEARING"
                } else {
                    cause
                },
                Who::Switch,
            );
            None
        }
        "respond" => {
            respond(a, ex);
            None
        }
        "sleep" => {
            let ms = ex.arg.trim().parse::<u64>().unwrap_or(0);
            let opts = WaitOpts {
                breakable: true,
                digits: false,
                nest: true,
            };
            a.wait(Some(ms), opts).await;
            None
        }
        "set" | "export" => {
            let arg = ex.arg.strip_prefix("nolocal:").unwrap_or(&ex.arg);
            set_pair(a, arg);
            None
        }
        "multiset" => {
            // `^^<sep>a=1<sep>b=2`, or space separated.
            let (sep, rest) = match ex.arg.strip_prefix("^^") {
                Some(r) => {
                    let mut chars = r.chars();
                    let sep = chars.next().unwrap_or(' ');
                    (sep, chars.as_str().to_owned())
                }
                None => (' ', ex.arg.clone()),
            };
            for pair in rest.split(sep).filter(|p| !p.is_empty()) {
                set_pair(a, pair);
            }
            None
        }
        "unset" => {
            a.ch.state().unset_var(ex.arg.trim());
            None
        }
        "send_dtmf" => {
            let digits: String = ex
                .arg
                .split('@')
                .next()
                .unwrap_or("")
                .chars()
                .filter(|c| media::is_dtmf(*c))
                .collect();
            let mut ev = a.note("dtmf_sent", uuid);
            ev.digits = Some(digits.clone());
            a.transcript(ev);
            let opts = WaitOpts {
                breakable: true,
                digits: false,
                nest: false,
            };
            a.wait(Some(100 * digits.len() as u64), opts).await;
            None
        }
        "transfer" => {
            transfer(a, ex);
            None
        }
        "conference" => {
            a.ensure_media();
            let mut ev = a.note("conference", uuid);
            ev.target = Some(ex.arg.clone());
            a.transcript(ev);
            // A member stays until it leaves: here, until the call hangs up (node-esl #50).
            let opts = WaitOpts {
                breakable: false,
                digits: false,
                nest: false,
            };
            a.wait(None, opts).await;
            None
        }
        // park/break/log/info/echo complete at once: the channel is already parked, there is
        // nothing nested to break, and the rest have no effect a caller would notice.
        _ => None,
    }
}

fn set_pair(a: &Actor, pair: &str) {
    let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
    let name = name.trim();
    if name.is_empty() {
        return;
    }
    let mut st = a.ch.state();
    if value.is_empty() {
        st.unset_var(name);
    } else {
        st.set_var(name, value);
    }
}

/// How a played file ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PlayEnd {
    Done,
    Break,
    /// A `playback_terminators` digit stopped it.
    Terminator(char),
    /// Any digit stopped it (a prompt of a digit collection); the digit is the first input.
    Digit(char),
    Hangup(Who),
    NotFound,
}

/// Plays one file with PLAYBACK_START/STOP and the playback variables.
pub(crate) async fn play_file(
    a: &mut Actor,
    file: &str,
    app_uuid: Option<&str>,
    any_digit_stops: bool,
) -> PlayEnd {
    let (params, file) = media::split_params(file);
    if media::is_missing(file) {
        return PlayEnd::NotFound;
    }
    a.ensure_media();
    let duration = media::duration_ms(file);
    let path = media::resolve_path(file);
    let mut post: Vec<(&str, String)> = Vec::new();
    if let Some(kind) = media::file_type(file) {
        post.push(("Playback-File-Type", kind.to_owned()));
    }
    post.push(("Playback-File-Path", path));
    let extra: Vec<(String, String)> = params;
    let mut start_headers = post.clone();
    for (n, v) in &extra {
        start_headers.push((n.as_str(), v.clone()));
    }
    a.emit_channel("PLAYBACK_START", &[], &start_headers);
    let mut ev = a.note("played", app_uuid);
    ev.file = Some(file.to_owned());
    let idx = a.transcript(ev);
    let terms = media::Terminators::parse(a.var("playback_terminators").as_deref());
    let mut played: u64 = 0;
    let end = loop {
        let left = duration.map(|d| d.saturating_sub(played));
        let (wake, used) = a.wait(left, MEDIA).await;
        played = played.saturating_add(used);
        match wake {
            Wake::Elapsed => break PlayEnd::Done,
            Wake::Break => break PlayEnd::Break,
            Wake::Hangup => {
                let who = a.ch.state().hangup_by.unwrap_or(Who::Switch);
                break PlayEnd::Hangup(who);
            }
            Wake::Digit(d) if any_digit_stops => break PlayEnd::Digit(d),
            Wake::Digit(d) if terms.contains(d) => break PlayEnd::Terminator(d),
            Wake::Digit(_) => continue,
        }
    };
    let played = duration.map_or(played, |d| played.min(d));
    {
        let mut st = a.ch.state();
        st.set_var("playback_last_offset_pos", (played * 8).to_string());
        st.set_var("playback_seconds", (played / 1000).to_string());
        st.set_var("playback_ms", played.to_string());
        st.set_var("playback_samples", (played * 8).to_string());
        if let PlayEnd::Terminator(d) = end {
            st.set_var("playback_terminator_used", d.to_string());
        }
    }
    let status = match end {
        PlayEnd::Break | PlayEnd::Terminator(_) | PlayEnd::Digit(_) => "break",
        _ => "done",
    };
    let mut stop = post;
    stop.push(("Playback-Status", status.to_owned()));
    for (n, v) in &extra {
        stop.push((n.as_str(), v.clone()));
    }
    a.emit_channel("PLAYBACK_STOP", &[], &stop);
    a.prompt_heard();
    a.transcript_update(idx, |e| {
        e.duration_ms = Some(played);
        if let PlayEnd::Terminator(d) | PlayEnd::Digit(d) = end {
            e.result = Some(format!("terminated:{d}"));
        }
    });
    end
}

async fn playback(a: &mut Actor, ex: &Exec) -> String {
    let uuid = ex.event_uuid.clone();
    let files = media::file_string_parts(&ex.arg);
    let mut response = "FILE PLAYED";
    for file in files {
        match play_file(a, &file, uuid.as_deref(), false).await {
            PlayEnd::NotFound => {
                response = "FILE NOT FOUND";
                break;
            }
            // Capture 07: the caller hanging up mid-file; capture 08: uuid_kill → FILE PLAYED.
            PlayEnd::Hangup(Who::Caller) => {
                response = "PLAYBACK ERROR";
                break;
            }
            PlayEnd::Done => {}
            _ => break,
        }
    }
    response.to_owned()
}

async fn speak(a: &mut Actor, ex: &Exec) {
    // `engine|voice|text`, `voice|text` or `text`: at most three fields (DP:2417-2478).
    let mut parts = ex.arg.splitn(3, '|');
    let fields: Vec<&str> = parts.by_ref().collect();
    let text = fields.last().copied().unwrap_or("").to_owned();
    a.ensure_media();
    let mut ev = a.note("spoke", ex.event_uuid.as_deref());
    ev.text = Some(text.clone());
    let idx = a.transcript(ev);
    let total = media::speak_ms(&text);
    let terms = media::Terminators::parse(a.var("playback_terminators").as_deref());
    let mut spoken = 0;
    loop {
        let (wake, used) = a.wait(Some(total.saturating_sub(spoken)), MEDIA).await;
        spoken += used;
        match wake {
            Wake::Digit(d) if terms.contains(d) => {
                a.set_var("playback_terminator_used", d.to_string());
                break;
            }
            Wake::Digit(_) => continue,
            _ => break,
        }
    }
    a.prompt_heard();
    a.transcript_update(idx, |e| e.duration_ms = Some(spoken.min(total)));
}

async fn record(a: &mut Actor, ex: &Exec) {
    let mut args = ex.arg.split_whitespace();
    let path = args.next().unwrap_or("").to_owned();
    let limit_ms = args
        .next()
        .map(|l| l.trim_start_matches('+'))
        .and_then(|l| l.parse::<u64>().ok())
        .filter(|l| *l > 0)
        .map(|l| l * 1000);
    a.ensure_media();
    a.set_var("silence_hits_exhausted", "false");
    a.emit_channel("RECORD_START", &[], &[("Record-File-Path", path.clone())]);
    let mut ev = a.note("recorded", ex.event_uuid.as_deref());
    ev.file = Some(path.clone());
    let idx = a.transcript(ev);
    let terms = media::Terminators::parse(a.var("playback_terminators").as_deref());
    let mut recorded = 0;
    let mut terminator = None;
    loop {
        let left = limit_ms.map(|l| l.saturating_sub(recorded));
        let (wake, used) = a.wait(left, MEDIA).await;
        recorded += used;
        match wake {
            Wake::Digit(d) if terms.contains(d) => {
                terminator = Some(d);
                break;
            }
            Wake::Digit(_) => continue,
            _ => break,
        }
    }
    {
        let mut st = a.ch.state();
        let samples = recorded * 8;
        st.set_var("record_file_size", (samples * 2 + 44).to_string());
        st.set_var("record_seconds", (recorded / 1000).to_string());
        st.set_var("record_ms", recorded.to_string());
        st.set_var("record_samples", samples.to_string());
        if let Some(d) = terminator {
            st.set_var("playback_terminator_used", d.to_string());
        }
    }
    super::http_cache::remember(&a.inner, &path, recorded, &a.ch.id);
    a.emit_channel("RECORD_STOP", &[], &[("Record-File-Path", path)]);
    a.transcript_update(idx, |e| {
        e.duration_ms = Some(recorded);
        e.result = terminator.map(|d| format!("terminated:{d}"));
    });
}

/// Parameters of a digit collection (play_and_get_digits / read).
struct Collect {
    min: usize,
    max: usize,
    tries: u32,
    timeout: u64,
    digit_timeout: u64,
    terminators: String,
    file: String,
    invalid: String,
    var: String,
    regex: String,
    /// `read` reports `timeout` when nothing came; play_and_get_digits says `failure`.
    read_app: bool,
}

async fn play_and_get_digits(a: &mut Actor, ex: &Exec) {
    let args: Vec<&str> = ex.arg.split_whitespace().collect();
    let num = |i: usize, d: u64| args.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(d);
    let timeout = num(3, 5000).max(1000);
    let c = Collect {
        min: num(0, 1) as usize,
        max: (num(1, 128) as usize).clamp(1, 128),
        tries: num(2, 1).clamp(1, 100) as u32,
        timeout,
        digit_timeout: num(9, timeout),
        terminators: args.get(4).copied().unwrap_or("#").to_owned(),
        file: args.get(5).copied().unwrap_or("silence").to_owned(),
        invalid: args.get(6).copied().unwrap_or("").to_owned(),
        var: args.get(7).copied().unwrap_or("").to_owned(),
        regex: args.get(8).copied().unwrap_or("").to_owned(),
        read_app: false,
    };
    collect(a, ex, c).await;
}

async fn read(a: &mut Actor, ex: &Exec) {
    // read <min> <max> <file> <var> <timeout> <terminators> [<digit_timeout>]
    let args: Vec<&str> = ex.arg.split_whitespace().collect();
    let num = |i: usize, d: u64| args.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(d);
    let timeout = num(4, 5000).max(1000);
    let c = Collect {
        min: (num(0, 1) as usize).max(1),
        max: (num(1, 128) as usize).clamp(1, 128),
        tries: 1,
        timeout,
        digit_timeout: num(6, timeout),
        terminators: args.get(5).copied().unwrap_or("#").to_owned(),
        file: args.get(2).copied().unwrap_or("silence").to_owned(),
        invalid: String::new(),
        var: args.get(3).copied().unwrap_or("").to_owned(),
        regex: String::new(),
        read_app: true,
    };
    collect(a, ex, c).await;
}

async fn collect(a: &mut Actor, ex: &Exec, c: Collect) {
    let uuid = ex.event_uuid.as_deref();
    let terms: Vec<char> = {
        let t = c.terminators.trim_start_matches(['=', '+', 'x']);
        if t.is_empty() || t == "none" {
            if c.terminators == "none" {
                Vec::new()
            } else {
                vec!['#']
            }
        } else {
            t.chars().collect()
        }
    };
    // The named variable never keeps a value from an earlier read.
    if !c.var.is_empty() {
        let mut st = a.ch.state();
        st.unset_var(&c.var);
        st.unset_var(&format!("{}_invalid", c.var));
    }
    // FreeSWITCH clears the outcome of the previous read as this one starts (capture 03): an
    // interrupted collection must not report the last one's `success`.
    a.ch.state().unset_var("read_result");
    a.ensure_media();
    let mut outcome = ("failure", String::new());
    for attempt in 0..c.tries {
        let mut digits = String::new();
        let mut terminator = None;
        let mut timed_out = false;
        if c.file != "silence" && !c.file.is_empty() {
            match play_file(a, &c.file, uuid, true).await {
                PlayEnd::Hangup(_) => return,
                PlayEnd::Digit(d) if terms.contains(&d) => terminator = Some(d),
                PlayEnd::Digit(d) => digits.push(d),
                _ => {}
            }
        }
        let opts = WaitOpts {
            breakable: true,
            digits: true,
            nest: false,
        };
        while terminator.is_none() && digits.len() < c.max {
            let wait = if digits.is_empty() {
                c.timeout
            } else {
                c.digit_timeout
            };
            match a.wait(Some(wait), opts).await.0 {
                Wake::Digit(d) if terms.contains(&d) => terminator = Some(d),
                Wake::Digit(d) => digits.push(d),
                Wake::Elapsed => {
                    timed_out = true;
                    break;
                }
                Wake::Break => break,
                Wake::Hangup => return,
            }
        }
        if let Some(t) = terminator {
            a.set_var("read_terminator_used", t.to_string());
        }
        let valid = digits.len() >= c.min
            && !digits.is_empty()
            && (c.regex.is_empty() || media::regex_search(&c.regex, &digits));
        if valid {
            a.set_var("read_result", "success");
            if !c.var.is_empty() {
                a.set_var(&c.var, digits.clone());
            }
            outcome = ("success", digits);
            break;
        }
        if !digits.is_empty() && !c.var.is_empty() {
            a.set_var(&format!("{}_invalid", c.var), digits.clone());
        }
        let result = if timed_out && digits.is_empty() && c.read_app {
            "timeout"
        } else {
            "failure"
        };
        a.set_var("read_result", result);
        outcome = (result, digits);
        // The invalid-input prompt follows every failed try, the last one too (capture 03).
        if !c.invalid.is_empty()
            && c.invalid != "silence"
            && let PlayEnd::Hangup(_) = play_file(a, &c.invalid, uuid, true).await
        {
            return;
        }
        if a.hung_up() || attempt + 1 == c.tries {
            break;
        }
    }
    let mut ev = a.note("collected", uuid);
    ev.digits = Some(outcome.1);
    ev.result = Some(outcome.0.to_owned());
    a.transcript(ev);
}

/// `respond <code> [reason]`: ≥ 400 rejects the call with the mapped cause (SOF:2284-2460).
fn respond(a: &mut Actor, ex: &Exec) {
    let code = ex
        .arg
        .split_whitespace()
        .next()
        .and_then(|c| c.parse::<u16>().ok())
        .unwrap_or(0);
    match code {
        180 => a.emit_channel("CHANNEL_PROGRESS", &[], &[]),
        183 => a.pre_answer(),
        200 => a.answer(ex.event_uuid.as_deref()),
        c if c >= 400 => {
            {
                let mut st = a.ch.state();
                st.set_var("sip_term_status", c.to_string());
                st.set_var("proto_specific_hangup_cause", format!("sip:{c}"));
            }
            a.hangup_now(media::sip_to_cause(c), Who::Switch);
        }
        _ => {}
    }
}

/// `transfer <exten> [dialplan context]`: back through routing into park, as the vanilla
/// dialplan for a controlled number does; the controller sees a new CHANNEL_PARK.
fn transfer(a: &mut Actor, ex: &Exec) {
    let exten = ex
        .arg
        .split_whitespace()
        .find(|t| !t.starts_with('-'))
        .unwrap_or("")
        .to_owned();
    let mut ev = a.note("transferred", ex.event_uuid.as_deref());
    ev.target = Some(exten.clone());
    a.transcript(ev);
    {
        let mut st = a.ch.state();
        st.dest = exten;
        let max = st
            .var("max_forwards")
            .and_then(|m| m.parse::<u32>().ok())
            .unwrap_or(70);
        st.set_var("max_forwards", max.saturating_sub(1).to_string());
    }
    a.emit_channel("CHANNEL_UNPARK", &[], &[]);
    a.emit_channel("CHANNEL_PARK", &[], &[]);
}

/// A simulated far end of a `bridge`.
struct BLeg {
    id: String,
    dest: String,
    answer: &'static str,
    cause: Option<String>,
}

fn bleg_event(a: &Actor, name: &str, b: &BLeg, extra: &[(&str, String)]) -> crate::esl::EslEvent {
    let mut ev =
        super::server::base_event(&a.inner, name, "switch_channel.c", "switch_channel_event");
    let (cid_name, cid_num) = {
        let st = a.ch.state();
        (st.cid_name.clone(), st.cid_num.clone())
    };
    let chan_name = format!("sofia/external/{}", b.dest);
    let pairs: Vec<(&str, String)> = vec![
        ("Channel-State", "CS_CONSUME_MEDIA".into()),
        (
            "Channel-Call-State",
            if b.answer == "answered" {
                "ACTIVE"
            } else {
                "DOWN"
            }
            .into(),
        ),
        ("Channel-Name", chan_name.clone()),
        ("Unique-ID", b.id.clone()),
        ("Call-Direction", "outbound".into()),
        ("Presence-Call-Direction", "outbound".into()),
        ("Channel-HIT-Dialplan", "false".into()),
        ("Channel-Call-UUID", a.id().to_owned()),
        ("Answer-State", b.answer.into()),
    ];
    for (n, v) in pairs {
        ev.set(n, v);
    }
    if let Some(c) = &b.cause {
        ev.set("Hangup-Cause", c.clone());
    }
    for (n, v) in extra {
        ev.set(*n, v.clone());
    }
    let tail: Vec<(&str, String)> = vec![
        ("Other-Type", "originator".into()),
        ("Other-Leg-Unique-ID", a.id().to_owned()),
        ("Caller-Direction", "outbound".into()),
        ("Caller-Caller-ID-Name", cid_name),
        ("Caller-Caller-ID-Number", cid_num),
        ("Caller-Destination-Number", b.dest.clone()),
        ("Caller-Unique-ID", b.id.clone()),
        ("Caller-Channel-Name", chan_name),
    ];
    for (n, v) in tail {
        ev.set(n, v);
    }
    ev
}

/// `bridge <dial string>`: rings a simulated far end that answers, is busy or never answers,
/// per the call's `dial_answer` (captures 05, 06a, 06b).
async fn bridge(a: &mut Actor, ex: &Exec) {
    let uuid = ex.event_uuid.as_deref();
    let (vars, dial) = media::split_dial_vars(&ex.arg);
    let dest = media::dial_dest(&dial);
    let get = |k: &str, a: &Actor| -> Option<String> {
        vars.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .or_else(|| a.var(k))
    };
    let timeout_s = ["leg_timeout", "originate_timeout", "call_timeout"]
        .iter()
        .find_map(|k| get(k, a).and_then(|v| v.parse::<u64>().ok()))
        .unwrap_or(60);
    let answer = media::dial_answer_override(&dial, &vars).unwrap_or(a.ch.state().dial_answer);
    let mut b = BLeg {
        id: a.inner.ids.uuid(),
        dest,
        answer: "ringing",
        cause: None,
    };
    let mut note = a.note("dialed", uuid);
    note.target = Some(dial.clone());
    let idx = a.transcript(note);
    for name in [
        "CHANNEL_OUTGOING",
        "CHANNEL_CREATE",
        "CHANNEL_ORIGINATE",
        "CHANNEL_PROGRESS",
    ] {
        let ev = bleg_event(a, name, &b, &[]);
        a.emit(ev);
    }
    let ring = match answer {
        DialAnswer::Answer => 500,
        DialAnswer::Busy => 20,
        DialAnswer::NoAnswer => timeout_s * 1000,
    };
    let still = WaitOpts {
        breakable: false,
        digits: false,
        nest: false,
    };
    let (wake, _) = a.wait(Some(ring), still).await;
    if wake == Wake::Hangup {
        // The caller left while it rang: the far end is cancelled.
        b.answer = "hangup";
        b.cause = Some("ORIGINATOR_CANCEL".into());
        end_bleg(a, &b);
        {
            let mut st = a.ch.state();
            st.set_var("originate_disposition", "ORIGINATOR_CANCEL");
            st.set_var("DIALSTATUS", "CANCEL");
        }
        a.transcript_update(idx, |e| e.result = Some("cancel".into()));
        return;
    }
    match answer {
        DialAnswer::Busy | DialAnswer::NoAnswer => {
            let (cause, status, sip) = if answer == DialAnswer::Busy {
                ("USER_BUSY", "BUSY", Some(486))
            } else {
                ("NO_ANSWER", "NOANSWER", None)
            };
            b.answer = "hangup";
            b.cause = Some(cause.into());
            end_bleg(a, &b);
            {
                let mut st = a.ch.state();
                st.set_var("originate_disposition", cause);
                st.set_var("DIALSTATUS", status);
                st.set_var("last_bridge_hangup_cause", cause);
                st.set_var("originate_failed_cause", cause);
                if let Some(code) = sip {
                    st.set_var(
                        "last_bridge_proto_specific_hangup_cause",
                        format!("sip:{code}"),
                    );
                    st.set_var("sip_invite_failure_status", code.to_string());
                }
            }
            a.transcript_update(idx, |e| {
                e.result = Some(if sip.is_some() { "busy" } else { "no-answer" }.into());
                e.cause = Some(cause.into());
            });
            // CH:4879-5017: without continue_on_fail a failed bridge hangs up the A-leg with
            // the B cause, before the bridge's COMPLETE (06a). NO_ANSWER always continues.
            let cof = get("continue_on_fail", a).unwrap_or_default();
            let continues = answer == DialAnswer::NoAnswer
                || cof.eq_ignore_ascii_case("true")
                || cof.split(',').any(|c| c.trim().eq_ignore_ascii_case(cause));
            if !continues {
                a.hangup_now(cause, Who::Switch);
            }
        }
        DialAnswer::Answer => {
            b.answer = "answered";
            let ev = bleg_event(a, "CHANNEL_ANSWER", &b, &[]);
            a.emit(ev);
            a.answer(uuid);
            {
                let mut st = a.ch.state();
                st.set_var("originate_disposition", "SUCCESS");
                st.set_var("DIALSTATUS", "SUCCESS");
                st.set_var("bridge_to", b.id.clone());
                st.set_var("last_bridge_to", b.id.clone());
                st.set_var("bridge_channel", format!("sofia/external/{}", b.dest));
                st.set_var("bridge_uuid", b.id.clone());
                st.bridged = true;
            }
            let bridge_ids = [
                ("Bridge-A-Unique-ID", a.id().to_owned()),
                ("Bridge-B-Unique-ID", b.id.clone()),
            ];
            let other = [
                ("Other-Type", "originatee".to_owned()),
                ("Other-Leg-Unique-ID", b.id.clone()),
            ];
            a.emit_channel("CHANNEL_BRIDGE", &bridge_ids, &other);
            a.transcript_update(idx, |e| e.result = Some("answer".into()));
            let mut ev = a.note("bridged", uuid);
            ev.target = Some(dial.clone());
            let bridged_idx = a.transcript(ev);
            let started = a.vnow();
            let talk = a
                .var("sim_bridge_ms")
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(5000);
            let (wake, _) = a.wait(Some(talk), still).await;
            let talked = a.vnow().saturating_sub(started);
            b.answer = "hangup";
            b.cause = Some("NORMAL_CLEARING".into());
            end_bleg(a, &b);
            {
                let mut st = a.ch.state();
                st.bridged = false;
                if wake != Wake::Hangup {
                    st.set_var("last_bridge_hangup_cause", "NORMAL_CLEARING");
                    st.set_var("bridge_hangup_cause", "NORMAL_CLEARING");
                    st.set_var("last_bridge_proto_specific_hangup_cause", "sip:200");
                }
            }
            a.transcript_update(bridged_idx, |e| e.duration_ms = Some(talked));
            a.emit_channel("CHANNEL_UNBRIDGE", &bridge_ids, &other);
            let mut ev = a.note("unbridged", uuid);
            ev.target = Some(dial.clone());
            a.transcript(ev);
            if wake != Wake::Hangup
                && a.var("hangup_after_bridge")
                    .is_some_and(|v| v.eq_ignore_ascii_case("true"))
            {
                a.hangup_now("NORMAL_CLEARING", Who::Switch);
            }
        }
    }
}

/// The far end's hang-up: CHANNEL_HANGUP, HANGUP_COMPLETE, DESTROY.
fn end_bleg(a: &Actor, b: &BLeg) {
    let sip: Vec<(&str, String)> = match b.cause.as_deref() {
        Some("USER_BUSY") => vec![
            ("variable_sip_hangup_disposition", "recv_refuse".into()),
            ("variable_sip_term_status", "486".into()),
            ("variable_proto_specific_hangup_cause", "sip:486".into()),
        ],
        Some("NORMAL_CLEARING") => vec![
            ("variable_sip_hangup_disposition", "recv_bye".into()),
            ("variable_sip_term_status", "200".into()),
        ],
        _ => Vec::new(),
    };
    for name in [
        "CHANNEL_HANGUP",
        "CHANNEL_HANGUP_COMPLETE",
        "CHANNEL_DESTROY",
    ] {
        let ev = bleg_event(a, name, b, &sip);
        a.emit(ev);
    }
}
