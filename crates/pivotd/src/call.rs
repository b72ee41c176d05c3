//! `pivotd call`: places a simulated call through a node's `/sim` API (DESIGN §5, §10) and
//! prints what the caller hears while it happens.
//!
//! The transcript is polled: the API has no push channel, and 100 ms is well under what a
//! person watching notices. In prose, an event is printed as soon as it appears (a prompt shows
//! when it starts playing, not when it ends) and an outcome the simulator fills in later (a
//! dial's result, a recording's length) follows on its own `↳` line. With `--json` each event
//! is printed once, when it is complete, so every line is the event's final shape.

use std::future::Future;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use pivot_switch::sim::{NewCall, ScriptStep};
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::time::Instant;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The number to call (a callflow number, e.g. 3004).
    pub number: String,
    /// Keys to press: `DIGITS[@MS]`, repeatable; MS is simulated ms after the call starts
    /// (default: 2 s after the previous press, the first at 2 s). Example: `--digits 1
    /// --digits 1234#@9000`.
    #[arg(long = "digits")]
    pub digits: Vec<String>,
    /// Hang up after this many seconds of simulated time (default: wait for the far end to
    /// hang up).
    #[arg(long)]
    pub hangup_after: Option<f64>,
    /// The node's API (default http://127.0.0.1:8080, env PIVOT_API).
    #[arg(long, env = "PIVOT_API", default_value = "http://127.0.0.1:8080")]
    pub api: String,
    /// The calling user (the simulated channel's username).
    #[arg(long, default_value = "user_demo")]
    pub from: String,
    #[arg(long, default_value = "+15551230000")]
    pub caller_id_number: String,
    #[arg(long, default_value = "Demo Caller")]
    pub caller_id_name: String,
    /// Give up after this many seconds of real time.
    #[arg(long, default_value_t = 120.0)]
    pub timeout: f64,
    /// Print the transcript events as JSON lines instead of prose.
    #[arg(long)]
    pub json: bool,
}

/// How a followed call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSummary {
    pub call_id: String,
    pub hangup_cause: Option<String>,
    /// Transcript events printed.
    pub events: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("invalid --digits {spec:?}: {reason}")]
    InvalidDigits { spec: String, reason: String },
    #[error("invalid {option}: {reason}")]
    InvalidOption {
        option: &'static str,
        reason: String,
    },
    #[error("cannot reach pivotd at {api}: {reason} (is pivotd running? start it with `make run`)")]
    Connect { api: String, reason: String },
    #[error("the API answered {status}: {message}")]
    Api { status: u16, message: String },
    #[error("unexpected answer from the API: {reason}")]
    BadResponse { reason: String },
    #[error("cannot build the HTTP client: {reason}")]
    Client { reason: String },
    #[error("gave up after {secs} s of real time; the call was hung up")]
    Timeout { secs: f64 },
    #[error("interrupted; the call was hung up")]
    Interrupted,
    #[error("cannot write the transcript: {0}")]
    Output(#[from] std::io::Error),
}

impl CallError {
    /// 2 for a usage error (as clap uses), 130 for Ctrl-C (as shells report SIGINT), else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            CallError::InvalidDigits { .. } | CallError::InvalidOption { .. } => 2,
            CallError::Interrupted => 130,
            _ => 1,
        }
    }
}

const POLL_EVERY: Duration = Duration::from_millis(100);
/// Gap between key presses whose time is not given (and before the first).
const DEFAULT_GAP_MS: u64 = 2_000;
/// What `POST /sim/calls/{id}/dtmf` accepts at once; a script step is held to the same.
const MAX_KEYS: usize = 128;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// After we hang up (timeout, Ctrl-C), how long to keep watching so the hang-up is printed.
const DRAIN_FOR: Duration = Duration::from_secs(3);
/// The simulator marks a call hung up a moment before it appends the `hangup` event; this long
/// we wait for the event before printing the hang-up from the call's state alone.
const HANGUP_EVENT_GRACE: Duration = Duration::from_secs(1);
/// Of a non-envelope error body, what is worth showing.
const MAX_ERROR_TEXT: usize = 300;

pub fn run(args: Args) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pivotd call: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout();
    let result = rt.block_on(async {
        let ctrl_c = async {
            // Without a SIGINT handler we cannot hang up on Ctrl-C; then never "interrupt",
            // and the default disposition (exit) still applies.
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        follow_until(&args, &mut stdout, ctrl_c).await
    });
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pivotd call: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Places the call, prints its transcript to `out` until it is hung up, and says how it ended.
/// On timeout the call is hung up (the caller hangs up) before returning.
#[cfg_attr(
    not(test),
    expect(
        dead_code,
        reason = "`run` also hangs up on Ctrl-C, through `follow_until`"
    )
)]
pub async fn place_and_follow(
    args: &Args,
    out: &mut (dyn Write + Send),
) -> Result<CallSummary, CallError> {
    follow_until(args, out, std::future::pending()).await
}

async fn follow_until(
    args: &Args,
    out: &mut (dyn Write + Send),
    cancel: impl Future<Output = ()>,
) -> Result<CallSummary, CallError> {
    let call = build_call(args)?;
    let timeout = real_timeout(args.timeout)?;
    let api = Api::new(&args.api)?;
    let deadline = Instant::now() + timeout;
    tokio::pin!(cancel);

    let call_id = tokio::select! {
        placed = api.place(&call) => placed?,
        () = tokio::time::sleep_until(deadline) => {
            return Err(CallError::Timeout { secs: args.timeout });
        }
        () = &mut cancel => return Err(CallError::Interrupted),
    };
    let mut printer = Printer::new(args.json, &call_id);
    let followed = match printer.calling(out, &args.number) {
        Err(e) => Err(CallError::from(e)),
        Ok(()) => tokio::select! {
            r = follow(&api, &call_id, &mut printer, out) => r,
            () = tokio::time::sleep_until(deadline) => {
                Err(CallError::Timeout { secs: args.timeout })
            }
            () = &mut cancel => Err(CallError::Interrupted),
        },
    };
    match followed {
        Ok(hangup_cause) => Ok(CallSummary {
            call_id,
            hangup_cause,
            events: printer.printed(),
        }),
        Err(e @ (CallError::Timeout { .. } | CallError::Interrupted)) => {
            abandon(&api, &call_id, &mut printer, out).await;
            Err(e)
        }
        Err(e @ CallError::Output(_)) => {
            // Nobody sees the call any more: do not leave it running.
            let _ = tokio::time::timeout(DRAIN_FOR, api.delete(&call_id)).await;
            Err(e)
        }
        Err(e) => Err(e),
    }
}

/// Polls until the call is hung up; returns its hang-up cause.
async fn follow(
    api: &Api,
    call_id: &str,
    printer: &mut Printer,
    out: &mut (dyn Write + Send),
) -> Result<Option<String>, CallError> {
    let mut hung_up_since: Option<Instant> = None;
    loop {
        let view = api.view(call_id).await?;
        let hung_up = view.state == "hungup";
        printer.show(out, &view.events, hung_up)?;
        if hung_up {
            let since = *hung_up_since.get_or_insert_with(Instant::now);
            if printer.saw_hangup || since.elapsed() >= HANGUP_EVENT_GRACE {
                printer.finish(out, view.hangup_cause.as_deref())?;
                return Ok(view.hangup_cause);
            }
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Hangs up as the caller and, briefly, keeps printing so the hang-up shows.
async fn abandon(api: &Api, call_id: &str, printer: &mut Printer, out: &mut (dyn Write + Send)) {
    let _ = tokio::time::timeout(DRAIN_FOR, async {
        // A 404 here means it already ended; following still prints how.
        let _ = api.delete(call_id).await;
        let _ = follow(api, call_id, printer, out).await;
    })
    .await;
}

fn build_call(args: &Args) -> Result<NewCall, CallError> {
    let to = args.number.trim();
    if to.is_empty() {
        return Err(CallError::InvalidOption {
            option: "NUMBER",
            reason: "the number to call is empty".into(),
        });
    }
    let mut script = parse_digits(&args.digits)?;
    if let Some(secs) = args.hangup_after {
        if !(secs.is_finite() && secs >= 0.0) {
            return Err(CallError::InvalidOption {
                option: "--hangup-after",
                reason: format!("expected seconds >= 0, got {secs}"),
            });
        }
        script.push(ScriptStep {
            // Saturating cast: an absurdly late hang-up is simply never reached.
            at_ms: (secs * 1000.0).round() as u64,
            hangup: true,
            ..ScriptStep::default()
        });
    }
    Ok(NewCall {
        to: to.to_owned(),
        from: args.from.clone(),
        caller_id_name: args.caller_id_name.clone(),
        caller_id_number: args.caller_id_number.clone(),
        account_id: None,
        script,
        dial_answer: Default::default(),
    })
}

fn real_timeout(secs: f64) -> Result<Duration, CallError> {
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| CallError::InvalidOption {
            option: "--timeout",
            reason: format!("expected seconds > 0, got {secs}"),
        })
}

/// `DIGITS[@MS]` specs to script steps; a step without a time comes [`DEFAULT_GAP_MS`] after
/// the previous one.
fn parse_digits(specs: &[String]) -> Result<Vec<ScriptStep>, CallError> {
    let mut steps = Vec::with_capacity(specs.len());
    let mut next_at = DEFAULT_GAP_MS;
    for spec in specs {
        let bad = |reason: String| CallError::InvalidDigits {
            spec: spec.clone(),
            reason,
        };
        let (keys, at) = match spec.split_once('@') {
            Some((keys, ms)) => {
                if ms.is_empty() || !ms.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad(format!(
                        "{ms:?} is not a time in ms (a non-negative integer)"
                    )));
                }
                let ms = ms
                    .parse::<u64>()
                    .map_err(|e| bad(format!("time {ms}: {e}")))?;
                (keys, Some(ms))
            }
            None => (spec.as_str(), None),
        };
        if keys.is_empty() {
            return Err(bad("no keys to press".into()));
        }
        if let Some(c) = keys.chars().find(|c| !is_dtmf(*c)) {
            return Err(bad(format!("{c:?} is not a key (0-9 * # A-D)")));
        }
        if keys.len() > MAX_KEYS {
            return Err(bad(format!("at most {MAX_KEYS} keys at once")));
        }
        let at_ms = at.unwrap_or(next_at);
        next_at = at_ms.saturating_add(DEFAULT_GAP_MS);
        steps.push(ScriptStep {
            at_ms,
            dtmf: Some(keys.to_owned()),
            ..ScriptStep::default()
        });
    }
    Ok(steps)
}

fn is_dtmf(c: char) -> bool {
    matches!(c, '0'..='9' | '*' | '#' | 'A'..='D')
}

/// The part of `GET /sim/calls/{id}` we read; events stay JSON objects so that fields this
/// version does not know are still printed.
#[derive(Debug, Deserialize)]
struct View {
    state: String,
    #[serde(default)]
    hangup_cause: Option<String>,
    #[serde(default)]
    events: Vec<Map<String, Value>>,
}

struct Api {
    http: reqwest::Client,
    /// As given, for messages.
    shown: String,
    base: Url,
}

impl Api {
    fn new(api: &str) -> Result<Api, CallError> {
        let invalid = |reason: String| CallError::InvalidOption {
            option: "--api",
            reason,
        };
        let base = Url::parse(api).map_err(|e| invalid(format!("{api:?}: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(invalid(format!(
                "{api:?}: expected an http:// or https:// URL"
            )));
        }
        // reqwest is built without a bundled crypto provider and builds its TLS config even
        // for plain http; another client in this process may have installed one already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            // The node is local or addressed directly; a proxy from the environment would
            // only misroute `127.0.0.1`.
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("pivotd-call/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CallError::Client {
                reason: innermost(&e),
            })?;
        Ok(Api {
            http,
            shown: api.to_owned(),
            base,
        })
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        // `Err` only for cannot-be-a-base URLs, refused in `new`.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    async fn place(&self, call: &NewCall) -> Result<String, CallError> {
        let body = serde_json::to_vec(call).map_err(|e| CallError::BadResponse {
            reason: format!("cannot encode the call: {e}"),
        })?;
        let url = self.url(&["sim", "calls"]);
        let req = self
            .http
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        let bytes = match self.send(req).await {
            Err(CallError::Api {
                status: 404,
                message,
            }) if message.is_empty() => {
                return Err(CallError::Api {
                    status: 404,
                    message: format!("no simulator at {url} (is the node's switch.kind \"sim\"?)"),
                });
            }
            other => other?,
        };
        #[derive(Deserialize)]
        struct Placed {
            call_id: String,
        }
        let placed: Placed = parse_body(&bytes)?;
        Ok(placed.call_id)
    }

    async fn view(&self, call_id: &str) -> Result<View, CallError> {
        let bytes = self
            .send(self.http.get(self.url(&["sim", "calls", call_id])))
            .await?;
        parse_body(&bytes)
    }

    async fn delete(&self, call_id: &str) -> Result<(), CallError> {
        self.send(self.http.delete(self.url(&["sim", "calls", call_id])))
            .await
            .map(drop)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Vec<u8>, CallError> {
        let connect = |e: reqwest::Error| CallError::Connect {
            api: self.shown.clone(),
            reason: innermost(&e),
        };
        let resp = req.send().await.map_err(connect)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(connect)?;
        if status.is_success() {
            Ok(bytes.to_vec())
        } else {
            Err(CallError::Api {
                status: status.as_u16(),
                message: error_message(status, &bytes),
            })
        }
    }
}

fn parse_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, CallError> {
    serde_json::from_slice(bytes).map_err(|e| CallError::BadResponse {
        reason: e.to_string(),
    })
}

/// The crossbar envelope's `message` (with its `error` code), or the start of whatever else
/// came back; empty when nothing did.
fn error_message(status: StatusCode, body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Envelope {
        #[serde(default)]
        error: Option<String>,
        message: String,
    }
    if let Ok(env) = serde_json::from_slice::<Envelope>(body) {
        return match env.error {
            Some(code) if !code.is_empty() => clean(&format!("{code}: {}", env.message)),
            _ => clean(&env.message),
        };
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return if status == StatusCode::NOT_FOUND {
            String::new()
        } else {
            status.canonical_reason().unwrap_or_default().to_owned()
        };
    }
    clean(&text.chars().take(MAX_ERROR_TEXT).collect::<String>())
}

/// The root cause: reqwest's own message only repeats the URL ("error sending request").
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// The outcome fields the simulator fills in after an event was first appended.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    result: Option<String>,
    cause: Option<String>,
    duration_ms: Option<u64>,
}

impl Outcome {
    fn of(ev: &Map<String, Value>) -> Outcome {
        Outcome {
            result: text(ev, "result").map(str::to_owned),
            cause: text(ev, "cause").map(str::to_owned),
            duration_ms: number(ev, "duration_ms"),
        }
    }
}

struct Printer {
    json: bool,
    call_id: String,
    /// One entry per event printed, as it was when last printed.
    seen: Vec<Outcome>,
    saw_hangup: bool,
    last_t_ms: Option<u64>,
}

impl Printer {
    fn new(json: bool, call_id: &str) -> Printer {
        Printer {
            json,
            call_id: call_id.to_owned(),
            seen: Vec::new(),
            saw_hangup: false,
            last_t_ms: None,
        }
    }

    fn printed(&self) -> usize {
        self.seen.len()
    }

    fn calling(&self, out: &mut (dyn Write + Send), number: &str) -> std::io::Result<()> {
        if self.json {
            // Every JSON line is an event, and each carries the call id.
            return Ok(());
        }
        writeln!(
            out,
            "calling {} (call {})",
            clean(number.trim()),
            clean(&self.call_id)
        )?;
        out.flush()
    }

    /// Prints what is new in `events` (the call's whole transcript so far).
    fn show(
        &mut self,
        out: &mut (dyn Write + Send),
        events: &[Map<String, Value>],
        hung_up: bool,
    ) -> std::io::Result<()> {
        if !self.json {
            for (ev, seen) in events.iter().zip(self.seen.iter_mut()) {
                let now = Outcome::of(ev);
                if now != *seen {
                    if let Some(line) = follow_up(ev, seen, &now) {
                        writeln!(out, "{}  ↳ {line}", stamp(None))?;
                    }
                    *seen = now;
                }
            }
        }
        for ev in events.iter().skip(self.seen.len()) {
            if self.json && !hung_up && !complete(ev) {
                // Later events wait too, to keep the lines in transcript order.
                break;
            }
            let t_ms = number(ev, "t_ms");
            if self.json {
                let mut obj = ev.clone();
                obj.insert("call_id".into(), Value::String(self.call_id.clone()));
                writeln!(out, "{}", Value::Object(obj))?;
            } else {
                writeln!(out, "{}  {}", stamp(t_ms), describe(ev))?;
            }
            self.saw_hangup |= text(ev, "kind") == Some("hangup");
            self.last_t_ms = t_ms.or(self.last_t_ms);
            self.seen.push(Outcome::of(ev));
        }
        out.flush()
    }

    /// Prints the hang-up when the transcript had no room or no time for it.
    fn finish(&mut self, out: &mut (dyn Write + Send), cause: Option<&str>) -> std::io::Result<()> {
        if self.saw_hangup {
            return Ok(());
        }
        self.saw_hangup = true;
        if self.json {
            let mut obj = Map::new();
            obj.insert("call_id".into(), Value::String(self.call_id.clone()));
            if let Some(t) = self.last_t_ms {
                obj.insert("t_ms".into(), Value::from(t));
            }
            obj.insert("kind".into(), Value::from("hangup"));
            if let Some(cause) = cause {
                obj.insert("cause".into(), Value::from(cause));
            }
            writeln!(out, "{}", Value::Object(obj))?;
        } else {
            writeln!(out, "{}  {}", stamp(self.last_t_ms), hung_up_line(cause))?;
        }
        out.flush()
    }
}

/// Whether the simulator is done filling in an event (so `--json` prints its final shape).
fn complete(ev: &Map<String, Value>) -> bool {
    match text(ev, "kind") {
        Some("played" | "spoke" | "recorded" | "bridged") => ev.contains_key("duration_ms"),
        Some("dialed") => ev.contains_key("result"),
        _ => true,
    }
}

fn stamp(t_ms: Option<u64>) -> String {
    match t_ms {
        Some(t) => format!("{:>6.2}s", t as f64 / 1000.0),
        None => " ".repeat(7),
    }
}

fn hung_up_line(cause: Option<&str>) -> String {
    match cause {
        Some(cause) => format!("hung up ({})", clean(cause)),
        None => "hung up".into(),
    }
}

/// The prose for one event, as far as it is known yet.
fn describe(ev: &Map<String, Value>) -> String {
    let kind = text(ev, "kind").unwrap_or("");
    let field = |k: &str| text(ev, k).map(clean);
    let line = match kind {
        "parked" => Some("ringing… parked".to_owned()),
        "answered" => Some("answered".to_owned()),
        "spoke" => field("text").map(|t| format!("🔊 \"{t}\"{}", result_suffix(ev))),
        "played" => field("file").map(|f| format!("♪ played {f}{}", result_suffix(ev))),
        "dtmf" => field("digits").map(|d| format!("☎ you pressed {d}")),
        "dtmf_sent" => field("digits").map(|d| format!("☎ pivot sent {d}")),
        "collected" => Some(match (field("digits"), field("result")) {
            (Some(d), Some(r)) if !d.is_empty() => format!("⌨ collected \"{d}\" ({r})"),
            (Some(d), None) if !d.is_empty() => format!("⌨ collected \"{d}\""),
            (_, Some(r)) => format!("⌨ collected nothing ({r})"),
            (_, None) => "⌨ collected nothing".to_owned(),
        }),
        "recorded" => Some(match number(ev, "duration_ms") {
            Some(ms) => format!(
                "● recorded {:.1} s{}",
                ms as f64 / 1000.0,
                result_suffix(ev)
            ),
            None => "● recording…".to_owned(),
        }),
        "dialed" => field("target").map(|t| match field("result") {
            Some(r) => format!("☏ dialed {t} → {r}{}", cause_suffix(ev)),
            None => format!("☏ dialing {t}…"),
        }),
        "bridged" => field("target").map(|t| format!("⇄ bridged to {t}")),
        "unbridged" => field("target").map(|t| format!("⇄ unbridged from {t}")),
        "conference" => field("target").map(|t| format!("joined conference {t}")),
        "transferred" => field("target").map(|t| format!("↪ transferred to {t}")),
        "hangup" => Some(hung_up_line(text(ev, "cause"))),
        _ => None,
    };
    line.unwrap_or_else(|| generic(ev))
}

/// What changed in an event already printed, when a person would want to know.
fn follow_up(ev: &Map<String, Value>, before: &Outcome, now: &Outcome) -> Option<String> {
    let kind = text(ev, "kind").unwrap_or("");
    if kind == "recorded"
        && before.duration_ms.is_none()
        && let Some(ms) = now.duration_ms
    {
        return Some(format!(
            "recorded {:.1} s{}",
            ms as f64 / 1000.0,
            result_suffix(ev)
        ));
    }
    if (before.result == now.result && before.cause == now.cause)
        || (now.result.is_none() && now.cause.is_none())
    {
        // Only a duration moved (a prompt or a bridge ran its course): nothing to tell.
        return None;
    }
    let outcome = [now.result.as_deref(), now.cause.as_deref()]
        .into_iter()
        .flatten()
        .map(clean)
        .collect::<Vec<_>>();
    let outcome = match outcome.as_slice() {
        [one] => one.clone(),
        [result, cause] => format!("{result} ({cause})"),
        _ => String::new(),
    };
    Some(match (kind, text(ev, "target")) {
        ("dialed", Some(target)) => format!("{} → {outcome}", clean(target)),
        _ => format!("{kind}: {outcome}"),
    })
}

fn result_suffix(ev: &Map<String, Value>) -> String {
    text(ev, "result")
        .map(|r| format!(" ({})", clean(r)))
        .unwrap_or_default()
}

fn cause_suffix(ev: &Map<String, Value>) -> String {
    text(ev, "cause")
        .map(|c| format!(" ({})", clean(c)))
        .unwrap_or_default()
}

/// `kind key=value…` for kinds this version does not know.
fn generic(ev: &Map<String, Value>) -> String {
    let mut line = clean(text(ev, "kind").unwrap_or("event"));
    for (k, v) in ev {
        if matches!(k.as_str(), "t_ms" | "kind" | "app_uuid") {
            continue;
        }
        let v = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        line.push_str(&format!(" {}={}", clean(k), clean(&v)));
    }
    line
}

fn text<'a>(ev: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    ev.get(key).and_then(Value::as_str)
}

fn number(ev: &Map<String, Value>, key: &str) -> Option<u64> {
    ev.get(key).and_then(Value::as_u64)
}

/// Escapes control characters: prompt texts and file names come from the pivot app's
/// response, and must not drive the operator's terminal (ANSI escapes, carriage returns).
fn clean(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::dev::ServerHandle;
    use actix_web::{App, HttpServer};
    use clap::Parser;
    use pivot_switch::sim::{SimConfig, Simulator};

    fn specs(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| (*s).to_owned()).collect()
    }

    fn steps(s: &[&str]) -> Vec<(u64, String)> {
        parse_digits(&specs(s))
            .expect("valid specs")
            .into_iter()
            .map(|st| {
                assert!(!st.hangup);
                (st.at_ms, st.dtmf.expect("dtmf"))
            })
            .collect()
    }

    #[test]
    fn digit_specs_default_to_two_seconds_after_the_previous_press() {
        assert_eq!(
            steps(&["1", "1234#@9000", "*", "A#@0", "D"]),
            vec![
                (2_000, "1".into()),
                (9_000, "1234#".into()),
                (11_000, "*".into()),
                (0, "A#".into()),
                (2_000, "D".into()),
            ]
        );
        assert!(steps(&[]).is_empty());
    }

    #[test]
    fn bad_digit_specs_are_named() {
        let long = "1".repeat(MAX_KEYS + 1);
        for spec in [
            "",
            "@100",
            "12x",
            "1a",
            "1@",
            "1@-5",
            "1@+5",
            "1@1.5",
            "1@99999999999999999999999",
            "1@2@3",
            long.as_str(),
        ] {
            let err = parse_digits(&specs(&["1", spec])).expect_err(spec);
            assert!(
                matches!(&err, CallError::InvalidDigits { spec: s, .. } if s == spec),
                "{spec}: {err:?}"
            );
            assert_eq!(err.exit_code(), 2);
            assert!(err.to_string().contains(&format!("{spec:?}")), "{err}");
        }
    }

    #[test]
    fn cli_flags_parse() {
        #[derive(Debug, Parser)]
        struct Cli {
            #[command(flatten)]
            args: Args,
        }
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "call",
            "3004",
            "--digits",
            "1",
            "--digits",
            "1234#@9000",
            "--hangup-after",
            "9.5",
            "--json",
        ])
        .expect("parses");
        assert_eq!(cli.args.number, "3004");
        assert_eq!(cli.args.digits, specs(&["1", "1234#@9000"]));
        assert_eq!(cli.args.hangup_after, Some(9.5));
        assert!(cli.args.json);
        assert_eq!(cli.args.timeout, 120.0);
    }

    fn args(api: &str) -> Args {
        Args {
            number: "3004".into(),
            digits: Vec::new(),
            hangup_after: Some(1.0),
            api: api.into(),
            from: "user_demo".into(),
            caller_id_number: "+15551230000".into(),
            caller_id_name: "Demo Caller".into(),
            timeout: 20.0,
            json: false,
        }
    }

    #[test]
    fn the_request_body_has_the_sim_shape() {
        let mut a = args("http://127.0.0.1:1");
        a.digits = specs(&["1", "2#@5000"]);
        a.hangup_after = Some(9.0);
        let body = serde_json::to_value(build_call(&a).expect("valid")).expect("json");
        assert_eq!(body["to"], "3004");
        assert_eq!(body["from"], "user_demo");
        assert_eq!(body["caller_id_name"], "Demo Caller");
        assert_eq!(body["caller_id_number"], "+15551230000");
        assert_eq!(
            body["script"],
            serde_json::json!([
                {"at_ms": 2000, "dtmf": "1"},
                {"at_ms": 5000, "dtmf": "2#"},
                {"at_ms": 9000, "hangup": true},
            ])
        );
    }

    #[test]
    fn bad_options_are_usage_errors() {
        for (f, option) in [
            (
                (|a: &mut Args| a.hangup_after = Some(-1.0)) as fn(&mut Args),
                "--hangup-after",
            ),
            (
                |a: &mut Args| a.hangup_after = Some(f64::NAN),
                "--hangup-after",
            ),
            (|a: &mut Args| a.number = " ".into(), "NUMBER"),
        ] {
            let mut a = args("http://127.0.0.1:1");
            f(&mut a);
            let err = build_call(&a).expect_err(option);
            assert!(matches!(&err, CallError::InvalidOption { option: o, .. } if *o == option));
            assert_eq!(err.exit_code(), 2);
        }
        for secs in [0.0, -1.0, f64::INFINITY] {
            assert!(real_timeout(secs).is_err(), "{secs}");
        }
        assert!(matches!(
            Api::new("not a url"),
            Err(CallError::InvalidOption {
                option: "--api",
                ..
            })
        ));
        assert!(matches!(
            Api::new("ftp://127.0.0.1"),
            Err(CallError::InvalidOption {
                option: "--api",
                ..
            })
        ));
    }

    #[test]
    fn api_errors_show_the_envelope_message() {
        let body =
            br#"{"status":"error","error":"invalid_body","message":"to: required","data":{}}"#;
        assert_eq!(
            error_message(StatusCode::BAD_REQUEST, body),
            "invalid_body: to: required"
        );
        assert_eq!(
            error_message(StatusCode::BAD_GATEWAY, b"upstream \x1b[31mdown"),
            "upstream \\u{1b}[31mdown"
        );
        assert_eq!(
            error_message(StatusCode::INTERNAL_SERVER_ERROR, b""),
            "Internal Server Error"
        );
    }

    #[test]
    fn prose_lines() {
        let ev = |v: Value| match v {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        let cases = [
            (
                serde_json::json!({"t_ms": 50, "kind": "spoke", "text": "Hi\u{1b}[2J"}),
                "🔊 \"Hi\\u{1b}[2J\"",
            ),
            (
                serde_json::json!({"kind": "collected", "digits": "1", "result": "success"}),
                "⌨ collected \"1\" (success)",
            ),
            (
                serde_json::json!({"kind": "collected", "digits": "", "result": "timeout"}),
                "⌨ collected nothing (timeout)",
            ),
            (
                serde_json::json!({"kind": "recorded", "duration_ms": 4000}),
                "● recorded 4.0 s",
            ),
            (
                serde_json::json!({"kind": "dialed", "target": "user/1001", "result": "busy", "cause": "USER_BUSY"}),
                "☏ dialed user/1001 → busy (USER_BUSY)",
            ),
            (
                serde_json::json!({"kind": "warp", "app_uuid": "x", "speed": 9, "to": "mars"}),
                "warp speed=9 to=mars",
            ),
            (serde_json::json!({"kind": "spoke"}), "spoke"),
        ];
        for (v, want) in cases {
            assert_eq!(describe(&ev(v)), want);
        }
        let dial = ev(serde_json::json!({"kind": "dialed", "target": "1001"}));
        let before = Outcome::of(&dial);
        let done = ev(
            serde_json::json!({"kind": "dialed", "target": "1001", "result": "no-answer", "cause": "NO_ANSWER"}),
        );
        assert_eq!(
            follow_up(&done, &before, &Outcome::of(&done)).as_deref(),
            Some("1001 → no-answer (NO_ANSWER)")
        );
        let played = ev(serde_json::json!({"kind": "played", "file": "a.wav"}));
        let timed = ev(serde_json::json!({"kind": "played", "file": "a.wav", "duration_ms": 10}));
        assert_eq!(
            follow_up(&timed, &Outcome::of(&played), &Outcome::of(&timed)),
            None
        );
        assert_eq!(stamp(Some(50)), "  0.05s");
    }

    async fn serve() -> (Simulator, ServerHandle, String) {
        let sim = Simulator::start(SimConfig {
            time_scale: 0.0,
            ..SimConfig::default()
        })
        .await
        .expect("simulator starts");
        let app_sim = sim.clone();
        let server = HttpServer::new(move || {
            App::new().configure(crate::sim_api::configure(app_sim.clone()))
        })
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", 0))
        .expect("binds");
        let addr = *server.addrs().first().expect("an address");
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        (sim, handle, format!("http://{addr}"))
    }

    fn lines(out: &[u8]) -> Vec<String> {
        String::from_utf8(out.to_vec())
            .expect("utf-8")
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[actix_web::test]
    async fn follows_a_call_until_the_scripted_hangup() {
        let (sim, server, api) = serve().await;
        let mut a = args(&api);
        a.digits = specs(&["12@500"]);
        let mut out = Vec::new();
        let summary = place_and_follow(&a, &mut out).await.expect("followed");
        let lines = lines(&out);
        let view = sim.call(&summary.call_id).expect("the call exists");
        assert_eq!(view.state, "hungup");
        assert_eq!(summary.hangup_cause, view.hangup_cause);
        assert!(summary.hangup_cause.is_some());
        assert_eq!(summary.events, view.events.len(), "{lines:#?}");
        assert_eq!(
            lines.first().map(String::as_str),
            Some(format!("calling 3004 (call {})", summary.call_id).as_str())
        );
        let count = |needle: &str| lines.iter().filter(|l| l.contains(needle)).count();
        assert_eq!(count("ringing… parked"), 1, "{lines:#?}");
        assert_eq!(count("hung up ("), 1, "{lines:#?}");
        assert!(
            lines
                .last()
                .is_some_and(|l| l.ends_with(&hung_up_line(view.hangup_cause.as_deref()))),
            "{lines:#?}"
        );
        // Every transcript event is one line, after the `calling` line.
        assert_eq!(lines.len(), 1 + view.events.len(), "{lines:#?}");
        server.stop(false).await;
        sim.shutdown().await;
    }

    #[actix_web::test]
    async fn json_lines_are_the_events() {
        let (sim, server, api) = serve().await;
        let mut a = args(&api);
        a.json = true;
        let mut out = Vec::new();
        let summary = place_and_follow(&a, &mut out).await.expect("followed");
        let parsed: Vec<Value> = lines(&out)
            .iter()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        let view = sim.call(&summary.call_id).expect("the call exists");
        assert_eq!(parsed.len(), view.events.len());
        for (line, ev) in parsed.iter().zip(&view.events) {
            assert_eq!(line["call_id"], summary.call_id.as_str());
            assert_eq!(line["kind"], ev.kind);
            assert_eq!(line["t_ms"], ev.t_ms);
        }
        assert_eq!(
            parsed.first().map(|l| &l["kind"]),
            Some(&Value::from("parked"))
        );
        assert_eq!(
            parsed.last().map(|l| &l["kind"]),
            Some(&Value::from("hangup"))
        );
        server.stop(false).await;
        sim.shutdown().await;
    }

    #[actix_web::test]
    async fn a_timeout_hangs_the_call_up() {
        let (sim, server, api) = serve().await;
        let mut a = args(&api);
        a.hangup_after = None;
        a.timeout = 0.5;
        let mut out = Vec::new();
        let err = place_and_follow(&a, &mut out).await.expect_err("times out");
        assert!(matches!(err, CallError::Timeout { .. }), "{err}");
        assert_eq!(err.exit_code(), 1);
        let calls = sim.calls();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].state, "hungup");
        let lines = lines(&out);
        assert!(lines.iter().any(|l| l.contains("ringing… parked")));
        assert!(
            lines.last().is_some_and(|l| l.contains("hung up")),
            "{lines:#?}"
        );
        server.stop(false).await;
        sim.shutdown().await;
    }

    #[actix_web::test]
    async fn a_node_without_the_simulator_says_so() {
        let (sim, server, api) = serve().await;
        let a = args(&format!("{api}/elsewhere/"));
        let err = place_and_follow(&a, &mut Vec::new())
            .await
            .expect_err("404");
        assert!(
            matches!(&err, CallError::Api { status: 404, message } if message.contains("switch.kind")),
            "{err}"
        );
        server.stop(false).await;
        sim.shutdown().await;
    }

    #[actix_web::test]
    async fn a_closed_port_gives_the_hint() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
            l.local_addr().expect("addr").port()
        };
        let err = place_and_follow(&args(&format!("http://127.0.0.1:{port}")), &mut Vec::new())
            .await
            .expect_err("nothing listens");
        assert!(matches!(err, CallError::Connect { .. }), "{err}");
        assert!(err.to_string().contains("make run"), "{err}");
        assert_eq!(err.exit_code(), 1);
    }
}
