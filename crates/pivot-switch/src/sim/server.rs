//! The ESL server side: connections, command parsing and replies, subscriptions and filters,
//! and the event fan-out. Reply texts are FreeSWITCH's, byte for byte (captures 00a, 00b).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{mpsc, watch};
use tokio_util::codec::FramedRead;

use super::{Inner, LoggedCommand, MAX_CONNECTIONS, api, lock};
use crate::esl::{Direction, EslEvent, EventFormat, Frame, FrameDecoder, Headers};

/// Frames waiting to be written to one connection. FreeSWITCH queues 100,000 events per
/// listener; a simulator needs fewer, and the bound is what matters.
const OUT_QUEUE: usize = 20_000;
/// Consecutive events dropped for a full queue before the listener is killed (`MAX_MISSED`).
const MAX_MISSED: u32 = 500;
/// The `text/disconnect-notice` body FreeSWITCH sends (67 bytes, capture 00a).
pub(crate) const GOODBYE: &str =
    "Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n";

/// Every connection's outgoing queue and subscription, and the global event sequence.
#[derive(Default)]
pub(crate) struct Hub {
    conns: HashMap<u64, Conn>,
    next_conn: u64,
    seq: u64,
}

struct Conn {
    tx: mpsc::Sender<Bytes>,
    kill: watch::Sender<bool>,
    sub: Subscription,
    /// Events lost in a row (the queue was full); shared so that delivery, which happens
    /// outside the hub lock, can count without taking it.
    missed: Arc<AtomicU32>,
}

/// What one listener receives (mod_event_socket's listener flags, event table and filters).
#[derive(Default)]
struct Subscription {
    authed: bool,
    format: Option<EventFormat>,
    events: HashSet<String>,
    custom: HashSet<String>,
    all_custom: bool,
    /// `(header, value)`; a value starting `-` excludes, `+` or nothing includes.
    filters: Vec<(String, String)>,
    /// `myevents <uuid>`: only this channel's events.
    bound: Option<String>,
    /// The channel an outbound (`socket` app) connection controls: the default of
    /// `myevents`, `sendmsg` and the owner of its `bgapi` jobs.
    session: Option<String>,
    /// `linger [secs]`: `Some(-1)` forever, `None` off.
    linger: Option<i64>,
}

impl Subscription {
    fn any(&self) -> bool {
        !self.events.is_empty() || !self.custom.is_empty() || self.all_custom
    }

    fn wants(&self, ev: &EslEvent) -> bool {
        if !self.authed {
            return false;
        }
        let Some(name) = ev.name() else { return false };
        let subscribed = if name == "CUSTOM" {
            self.all_custom
                || ev
                    .get("Event-Subclass")
                    .is_some_and(|s| self.custom.contains(s))
        } else {
            self.events.contains(name)
        };
        if !subscribed {
            return false;
        }
        if let Some(bound) = &self.bound {
            let mine = ev.unique_id() == Some(bound.as_str())
                || (name == "BACKGROUND_JOB" && ev.get("Job-Owner-UUID") == Some(bound.as_str()));
            if !mine {
                return false;
            }
        }
        if self.filters.is_empty() {
            return true;
        }
        // ES:317-369: an exclusion that matches drops the event; otherwise some include must
        // match. An event without the header matches nothing.
        let mut included = false;
        for (header, value) in &self.filters {
            let Some(actual) = ev.get(header) else {
                continue;
            };
            if let Some(excl) = value.strip_prefix('-') {
                if filter_match(excl, actual) {
                    return false;
                }
            } else if filter_match(value.strip_prefix('+').unwrap_or(value), actual) {
                included = true;
            }
        }
        included
    }
}

/// `strcasecmp`, or a `/regex/` through the small matcher.
fn filter_match(pattern: &str, actual: &str) -> bool {
    if pattern.len() >= 2 && pattern.starts_with('/') {
        let body = pattern.trim_start_matches('/');
        let body = body.rsplit_once('/').map_or(body, |(b, _)| b);
        return super::media::regex_search(body, actual);
    }
    pattern.eq_ignore_ascii_case(actual)
}

/// Whether any listener is subscribed to events named `name`: building a full channel event
/// (a hundred headers, like FreeSWITCH's) is most of the simulator's work, so events nobody
/// listens to are not built at all. Filters and `myevents` bindings are still applied by
/// [`emit`] to the events that are built.
pub(crate) fn anyone_wants(inner: &Inner, name: &str) -> bool {
    lock(&inner.hub)
        .conns
        .values()
        .any(|conn| conn.sub.authed && conn.sub.events.contains(name))
}

/// Fills in the per-switch headers and sends `ev` to every listener that wants it.
pub(crate) fn emit(inner: &Inner, mut ev: EslEvent) {
    let core = inner.core_uuid();
    // Under the hub lock: the sequence number and who wants the event. Encoding (the costly
    // part) happens after the lock is released, so call actors on other threads are not held
    // up by it. Each actor emits its own channel's events in order, so a channel's events keep
    // their Event-Sequence order on the wire; events of different channels may interleave, as
    // they can on a FreeSWITCH with several dispatch threads (freeswitch-esl.md §7.1).
    let targets = {
        let mut hub = lock(&inner.hub);
        hub.seq += 1;
        ev.set("Core-UUID", core);
        let mut digits = [0u8; 20];
        ev.set(
            "Event-Sequence",
            crate::esl::event::format_u64(hub.seq, &mut digits),
        );
        hub.conns
            .iter()
            .filter(|(_, conn)| conn.sub.wants(&ev))
            .map(|(id, conn)| {
                let format = conn.sub.format.unwrap_or(EventFormat::Plain);
                (*id, conn.tx.clone(), format, Arc::clone(&conn.missed))
            })
            .collect::<Vec<_>>()
    };
    let mut encoded: [Option<Bytes>; 3] = [None, None, None];
    let mut dead = Vec::new();
    for (id, tx, format, missed) in targets {
        let slot = match format {
            EventFormat::Json => 0,
            EventFormat::Plain => 1,
            EventFormat::Xml => 2,
        };
        let bytes = encoded[slot]
            .get_or_insert_with(|| encode_event(&ev, format))
            .clone();
        match tx.try_send(bytes) {
            Ok(()) => missed.store(0, Ordering::Relaxed),
            Err(mpsc::error::TrySendError::Full(_)) => {
                // "killed listener because of lost events" (ES:388-407).
                if missed.fetch_add(1, Ordering::Relaxed) + 1 >= MAX_MISSED {
                    dead.push(id);
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => dead.push(id),
        }
    }
    if !dead.is_empty() {
        let mut hub = lock(&inner.hub);
        for id in dead {
            if let Some(conn) = hub.conns.remove(&id) {
                let _ = conn.kill.send(true);
            }
        }
    }
}

/// An event frame as FreeSWITCH writes it: `Content-Length` first, then `Content-Type`.
fn encode_event(ev: &EslEvent, format: EventFormat) -> Bytes {
    ev.to_wire(format)
}

/// Base event with the common headers in FreeSWITCH's order; `emit` fills Core-UUID and the
/// sequence.
pub(crate) fn base_event(inner: &Inner, name: &str, file: &str, func: &str) -> EslEvent {
    // Room for a full channel event (about 4 KB of names and values, ~130 headers with the
    // variables), so building one never regrows the buffers.
    let mut ev = EslEvent::with_capacity(4096, 160);
    ev.push("Event-Name", name);
    let micros = super::now_micros();
    // `push`, not `set`: these names are distinct, and `emit` `set`s the two placeholders.
    ev.push("Core-UUID", "");
    ev.push("FreeSWITCH-Hostname", &inner.config.hostname);
    ev.push("FreeSWITCH-Switchname", &inner.config.hostname);
    ev.push("FreeSWITCH-IPv4", "127.0.0.1");
    ev.push("FreeSWITCH-IPv6", "::1");
    with_dates(micros / 1_000_000, |local, gmt| {
        ev.push("Event-Date-Local", local);
        ev.push("Event-Date-GMT", gmt);
    });
    ev.push_u64("Event-Date-Timestamp", micros);
    ev.push("Event-Calling-File", file);
    ev.push("Event-Calling-Function", func);
    ev.push("Event-Calling-Line-Number", "1");
    ev.push("Event-Sequence", "0");
    ev
}

/// Calls `f` with the two date strings of `secs`, formatted once per second per thread: every
/// event carries them, and thousands of events a second share the same second.
fn with_dates(secs: u64, f: impl FnOnce(&str, &str)) {
    thread_local! {
        static DATES: std::cell::RefCell<(u64, String, String)> =
            const { std::cell::RefCell::new((u64::MAX, String::new(), String::new())) };
    }
    DATES.with(|cell| {
        let Ok(mut cached) = cell.try_borrow_mut() else {
            // Only reachable if `f` re-entered; format afresh rather than panic.
            let (local, gmt) = super::format_dates(secs);
            return f(&local, &gmt);
        };
        if cached.0 != secs {
            let (local, gmt) = super::format_dates(secs);
            *cached = (secs, local, gmt);
        }
        f(&cached.1, &cached.2)
    })
}

/// Cuts every connection at once (no notice: like a network failure).
pub(crate) fn drop_all(inner: &Inner) {
    let conns: Vec<Conn> = lock(&inner.hub).conns.drain().map(|(_, c)| c).collect();
    for conn in conns {
        let _ = conn.kill.send(true);
    }
}

pub(crate) async fn accept_loop(inner: Arc<Inner>, listener: TcpListener) {
    let mut shutdown = inner.shutdown.subscribe();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let Ok((stream, _peer)) = accepted else {
            // EMFILE and the like: back off briefly instead of spinning.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let Some((id, tx, rx, kill_rx)) = register(&inner, None) else {
            drop(stream);
            continue;
        };
        let (read, write) = stream.into_split();
        tokio::spawn(writer(write, rx, kill_rx.clone()));
        tokio::spawn(connection(inner.clone(), id, read, tx, kill_rx));
    }
}

/// A connection's id, outgoing queue (sender and the writer's receiver) and kill switch.
pub(crate) type Registered = (
    u64,
    mpsc::Sender<Bytes>,
    mpsc::Receiver<Bytes>,
    watch::Receiver<bool>,
);

/// A new connection in the hub: its id, its outgoing queue and its kill switch; `None` at
/// [`MAX_CONNECTIONS`]. `session`: the channel an outbound (`socket`) connection controls; such
/// a connection needs no `auth`.
pub(crate) fn register(inner: &Inner, session: Option<String>) -> Option<Registered> {
    let (tx, rx) = mpsc::channel(OUT_QUEUE);
    let (kill, kill_rx) = watch::channel(false);
    let mut hub = lock(&inner.hub);
    if hub.conns.len() >= MAX_CONNECTIONS {
        return None;
    }
    hub.next_conn += 1;
    let id = hub.next_conn;
    let sub = Subscription {
        authed: session.is_some(),
        session,
        ..Subscription::default()
    };
    hub.conns.insert(
        id,
        Conn {
            tx: tx.clone(),
            kill,
            sub,
            missed: Arc::new(AtomicU32::new(0)),
        },
    );
    Some((id, tx, rx, kill_rx))
}

/// Takes a connection out of the hub: it gets no more events, and its writer ends once the
/// queued frames are written.
pub(crate) fn unregister(inner: &Inner, id: u64) {
    lock(&inner.hub).conns.remove(&id);
}

/// The connection's `linger` setting: `Some(-1)` forever, `Some(secs)`, `None` off.
pub(crate) fn linger(inner: &Inner, id: u64) -> Option<i64> {
    with_sub(inner, id, |s| s.linger).flatten()
}

/// Writes queued frames in order; stops on kill or when every sender is gone.
/// Bytes gathered into one write when several frames are queued.
const WRITE_BATCH_BYTES: usize = 64 * 1024;

pub(crate) async fn writer(
    mut write: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Bytes>,
    mut kill: watch::Receiver<bool>,
) {
    // The kill sender disappearing (the connection closing itself after `exit`) is not a
    // kill: what is queued (the reply, the disconnect notice) must still go out.
    let mut watching = true;
    loop {
        let next = if watching {
            tokio::select! {
                biased;
                changed = kill.changed() => {
                    match changed {
                        Ok(()) if *kill.borrow() => break,
                        Ok(()) => continue,
                        Err(_) => {
                            watching = false;
                            continue;
                        }
                    }
                }
                n = rx.recv() => n,
            }
        } else {
            rx.recv().await
        };
        let Some(bytes) = next else { break };
        // Whatever else is already queued goes out in the same write: one syscall for a burst
        // of events instead of one each, as FreeSWITCH's own buffered writes do.
        if rx.is_empty() {
            if write.write_all(&bytes).await.is_err() {
                break;
            }
            continue;
        }
        let mut batch = BytesMut::with_capacity(WRITE_BATCH_BYTES.max(bytes.len()));
        batch.extend_from_slice(&bytes);
        while batch.len() < WRITE_BATCH_BYTES {
            match rx.try_recv() {
                Ok(more) => batch.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        if write.write_all(&batch).await.is_err() {
            break;
        }
    }
    let _ = write.shutdown().await;
}

pub(crate) enum After {
    Continue,
    /// Send what is queued, then close (exit, failed auth).
    Close,
}

async fn connection(
    inner: Arc<Inner>,
    id: u64,
    read: tokio::net::tcp::OwnedReadHalf,
    tx: mpsc::Sender<Bytes>,
    mut kill: watch::Receiver<bool>,
) {
    let mut frames = FramedRead::new(read, FrameDecoder::new(Direction::FromClient));
    if tx
        .send(reply_frame("auth/request", None, &[]))
        .await
        .is_err()
    {
        return;
    }
    loop {
        let next = tokio::select! {
            _ = kill.changed() => break,
            f = frames.next() => f,
        };
        // A decode error (oversized command, bad Content-Length) ends the connection, as
        // FreeSWITCH drops a listener whose input it cannot parse.
        let Some(Ok(frame)) = next else { break };
        match handle(&inner, id, &frame, &tx).await {
            After::Continue => {}
            After::Close => {
                let _ = tx.send(goodbye()).await;
                // Let the writer drain (it ends when every sender is dropped).
                lock(&inner.hub).conns.remove(&id);
                return;
            }
        }
    }
    lock(&inner.hub).conns.remove(&id);
}

pub(crate) fn goodbye() -> Bytes {
    let frame = Frame {
        line: None,
        headers: [("Content-Type", "text/disconnect-notice")]
            .into_iter()
            .collect(),
        body: Bytes::from_static(GOODBYE.as_bytes()),
    };
    frame.to_bytes()
}

fn reply_frame(content_type: &str, reply: Option<&str>, extra: &[(&str, &str)]) -> Bytes {
    let mut headers = Headers::new();
    headers.push("Content-Type", content_type);
    if let Some(text) = reply {
        headers.push("Reply-Text", text);
    }
    for (n, v) in extra {
        headers.push(*n, *v);
    }
    Frame {
        line: None,
        headers,
        body: Bytes::new(),
    }
    .to_bytes()
}

fn reply(text: &str) -> Bytes {
    reply_frame("command/reply", Some(text), &[])
}

fn api_response(body: &str) -> Bytes {
    Frame {
        line: None,
        headers: [("Content-Type", "api/response")].into_iter().collect(),
        body: Bytes::copy_from_slice(body.as_bytes()),
    }
    .to_bytes()
}

fn with_sub<R>(inner: &Inner, id: u64, f: impl FnOnce(&mut Subscription) -> R) -> Option<R> {
    lock(&inner.hub).conns.get_mut(&id).map(|c| f(&mut c.sub))
}

pub(crate) async fn handle(
    inner: &Arc<Inner>,
    id: u64,
    frame: &Frame,
    tx: &mpsc::Sender<Bytes>,
) -> After {
    let line = frame.line.as_deref().unwrap_or("").trim();
    let (cmd, rest) = line
        .split_once(' ')
        .map_or((line, ""), |(c, r)| (c, r.trim()));
    let authed = with_sub(inner, id, |s| s.authed).unwrap_or(false);
    let send = |bytes: Bytes| async move {
        let _ = tx.send(bytes).await;
    };
    if !authed {
        if cmd == "auth" {
            // Compared exactly (`strcmp`), so no trimming of the password.
            let given = line.strip_prefix("auth ").unwrap_or("");
            if given == inner.config.password {
                with_sub(inner, id, |s| s.authed = true);
                send(reply("+OK accepted")).await;
                return After::Continue;
            }
            send(reply("-ERR invalid")).await;
            return After::Close;
        }
        send(reply("-ERR command not found")).await;
        return After::Continue;
    }
    match cmd {
        "exit" | "..." => {
            send(reply("+OK bye")).await;
            After::Close
        }
        "auth" => {
            send(reply("+OK accepted")).await;
            After::Continue
        }
        c if c.starts_with("event") => {
            send(reply(&subscribe(inner, id, rest))).await;
            After::Continue
        }
        "nixevent" => {
            with_sub(inner, id, |s| {
                for name in rest.split_whitespace() {
                    if name.eq_ignore_ascii_case("ALL") {
                        s.events.clear();
                        s.custom.clear();
                        s.all_custom = false;
                    } else if name == "CUSTOM" {
                        s.all_custom = false;
                    } else {
                        s.events.remove(name);
                        s.custom.remove(name);
                    }
                }
            });
            send(reply("+OK events nixed")).await;
            After::Continue
        }
        "noevents" => {
            let was = with_sub(inner, id, |s| {
                let was = s.any();
                s.events.clear();
                s.custom.clear();
                s.all_custom = false;
                was
            })
            .unwrap_or(false);
            send(reply(if was {
                "+OK no longer listening for events"
            } else {
                "-ERR not listening for events"
            }))
            .await;
            After::Continue
        }
        "filter" => {
            send(reply(&filter(inner, id, rest))).await;
            After::Continue
        }
        "myevents" => {
            send(reply(&myevents(inner, id, rest))).await;
            After::Continue
        }
        "divert_events" => {
            send(reply("-ERR not controlling a session.")).await;
            After::Continue
        }
        "linger" | "nolinger" => {
            let secs = rest.parse::<i64>().ok().filter(|s| *s > 0).unwrap_or(-1);
            let bound = with_sub(inner, id, |s| {
                let bound = s.bound.is_some() || s.session.is_some();
                if bound {
                    s.linger = (cmd == "linger").then_some(secs);
                }
                bound
            })
            .unwrap_or(false);
            let text = match (bound, cmd) {
                (false, _) => "-ERR not controlling a session".to_owned(),
                (true, "linger") if secs > 0 => format!("+OK will linger {secs} seconds"),
                (true, "linger") => "+OK will linger".to_owned(),
                (true, _) => "+OK will not linger".to_owned(),
            };
            send(reply(&text)).await;
            After::Continue
        }
        "log" => {
            let level = if rest.is_empty() { "7" } else { rest };
            send(reply(&format!("+OK log level {level} [{level}]"))).await;
            After::Continue
        }
        "nolog" => {
            send(reply("+OK no longer logging")).await;
            After::Continue
        }
        "sendevent" => {
            send(reply(&sendevent(inner, rest, frame))).await;
            After::Continue
        }
        "sendmsg" => {
            let (text, wake) = sendmsg(inner, id, rest, frame);
            send(reply(&text)).await;
            // Wake the channel only after the `+OK` is queued, so the reply comes before the
            // app's first event, as it does on FreeSWITCH (the park loop polls ~20 ms later).
            if let Some(channel) = wake {
                channel.wake();
            }
            After::Continue
        }
        "api" => {
            let (name, args) = split_cmd(rest);
            inner.log_command(LoggedCommand {
                connection: id,
                kind: "api",
                call_id: first_call_arg(inner, args),
                event_uuid: None,
                app: name.to_owned(),
                arg: args.to_owned(),
            });
            // Runs in the listener, like FreeSWITCH's `api`: this connection reads nothing
            // else until the command returns.
            let out = api::execute(inner, name, args).await;
            send(api_response(&out.text)).await;
            drop(out.hold);
            After::Continue
        }
        "bgapi" => {
            let (name, args) = split_cmd(rest);
            let job = frame
                .header("Job-UUID")
                .map(str::to_owned)
                .unwrap_or_else(|| inner.ids.uuid());
            let owner = with_sub(inner, id, |s| s.session.clone()).flatten();
            inner.log_command(LoggedCommand {
                connection: id,
                kind: "bgapi",
                call_id: first_call_arg(inner, args),
                event_uuid: Some(job.clone()),
                app: name.to_owned(),
                arg: args.to_owned(),
            });
            send(reply_frame(
                "command/reply",
                Some(&format!("+OK Job-UUID: {job}")),
                &[("Job-UUID", &job)],
            ))
            .await;
            api::spawn_job(inner, job, owner, name.to_owned(), args.to_owned());
            After::Continue
        }
        _ => {
            send(reply("-ERR command not found")).await;
            After::Continue
        }
    }
}

fn split_cmd(rest: &str) -> (&str, &str) {
    rest.split_once(' ')
        .map_or((rest, ""), |(c, a)| (c, a.trim()))
}

/// The call an api command names: its first argument when that is a known channel.
fn first_call_arg(inner: &Inner, args: &str) -> Option<String> {
    let first = args.split_whitespace().next()?;
    inner.channel(first).map(|_| first.to_owned())
}

/// `event [plain|json|xml] <NAME ...|ALL|CUSTOM sub ...>` (ES:2465-2545).
fn subscribe(inner: &Inner, id: u64, rest: &str) -> String {
    with_sub(inner, id, |s| {
        let mut keys = 0;
        let mut custom = false;
        for (i, token) in rest.split_whitespace().enumerate() {
            if i == 0
                && let Some(f) = EventFormat::from_keyword(token)
            {
                s.format = Some(f);
                continue;
            }
            if custom {
                s.custom.insert(token.to_owned());
                keys += 1;
            } else if token == "CUSTOM" {
                custom = true;
                keys += 1;
            } else if token.eq_ignore_ascii_case("ALL") {
                for name in EVENT_NAMES {
                    s.events.insert((*name).to_owned());
                }
                s.all_custom = true;
                keys += 1;
            } else if EVENT_NAMES.contains(&token) {
                s.events.insert(token.to_owned());
                keys += 1;
            }
        }
        if keys == 0 {
            return "-ERR no keywords supplied".to_owned();
        }
        let format = *s.format.get_or_insert(EventFormat::Plain);
        format!("+OK event listener enabled {}", format.keyword())
    })
    .unwrap_or_else(|| "-ERR command not found".to_owned())
}

/// `filter [add] <H> <v>`, `filter delete <H> [<v>]`, `filter delete all` (ES:1961-2006).
fn filter(inner: &Inner, id: u64, rest: &str) -> String {
    let (first, tail) = split_cmd(rest);
    with_sub(inner, id, |s| {
        if first.eq_ignore_ascii_case("delete") {
            let (h, v) = split_cmd(tail);
            if h.eq_ignore_ascii_case("all") {
                s.filters.clear();
            } else if v.is_empty() {
                s.filters.retain(|(fh, _)| fh != h);
            } else {
                s.filters.retain(|(fh, fv)| !(fh == h && fv == v));
            }
            return format!("+OK filter deleted. [{h}][{v}]");
        }
        let (h, v) = if first.eq_ignore_ascii_case("add") {
            split_cmd(tail)
        } else {
            (first, tail)
        };
        if h.is_empty() || v.is_empty() {
            return "-ERR invalid syntax".to_owned();
        }
        // Bounded like everything else: a client adding filters in a loop gets refused.
        if s.filters.len() >= 1024 {
            return "-ERR too many filters".to_owned();
        }
        s.filters.push((h.to_owned(), v.to_owned()));
        format!("+OK filter added. [{h}]=[{v}]")
    })
    .unwrap_or_else(|| "-ERR command not found".to_owned())
}

/// `myevents [fmt] <uuid>`: the channel events of one call (the set of ES:2108-2130).
fn myevents(inner: &Inner, id: u64, rest: &str) -> String {
    let mut tokens = rest.split_whitespace();
    let mut format = None;
    let mut uuid = None;
    for t in tokens.by_ref() {
        match EventFormat::from_keyword(t) {
            Some(f) if format.is_none() && uuid.is_none() => format = Some(f),
            _ => uuid = Some(t.to_owned()),
        }
    }
    // On an outbound connection, `myevents` without a uuid means the controlled channel.
    let uuid = uuid.or_else(|| with_sub(inner, id, |s| s.session.clone()).flatten());
    let exists = uuid
        .as_deref()
        .is_some_and(|u| inner.live_channel(u).is_some());
    with_sub(inner, id, |s| {
        if s.bound.is_some() {
            return "-ERR aready enabled.".to_owned();
        }
        if let Some(f) = format {
            s.format = Some(f);
        }
        s.format.get_or_insert(EventFormat::Plain);
        if exists {
            s.bound = uuid;
        }
        for name in MYEVENTS {
            s.events.insert((*name).to_owned());
        }
        "+OK Events Enabled".to_owned()
    })
    .unwrap_or_else(|| "-ERR command not found".to_owned())
}

/// `sendevent <NAME>` with headers and an optional body: fired as given, reply `+OK <uuid>`.
fn sendevent(inner: &Inner, rest: &str, frame: &Frame) -> String {
    let name = rest.split_whitespace().next().unwrap_or("CUSTOM");
    let event_uuid = inner.ids.uuid();
    let mut ev = EslEvent::new(name);
    for (n, v) in frame.headers.iter() {
        if !n.eq_ignore_ascii_case("Content-Length") {
            ev.set(n, v);
        }
    }
    ev.set("Event-UUID", event_uuid.clone());
    let base = base_event(inner, name, "mod_event_socket.c", "parse_command");
    for (n, v) in base.headers() {
        ev.set(n, v);
    }
    if !frame.body.is_empty() {
        ev.set_body(String::from_utf8_lossy(&frame.body).into_owned());
    }
    emit(inner, ev);
    format!("+OK {event_uuid}")
}

/// `sendmsg <uuid>`: queue an execute or hangup on the channel (IVR:503-790).
fn sendmsg(
    inner: &Inner,
    conn: u64,
    rest: &str,
    frame: &Frame,
) -> (String, Option<Arc<super::call::Channel>>) {
    let uuid = rest
        .split_whitespace()
        .next()
        .map(str::to_owned)
        .or_else(|| frame.header("session-id").map(str::to_owned))
        .or_else(|| {
            lock(&inner.hub)
                .conns
                .get(&conn)
                .and_then(|c| c.sub.bound.clone().or_else(|| c.sub.session.clone()))
        })
        .unwrap_or_default();
    let command = frame
        .header("call-command")
        .unwrap_or("")
        .to_ascii_lowercase();
    let event_uuid = frame.header("Event-UUID").map(str::to_owned);
    let (app, arg) = match command.as_str() {
        "execute" => {
            let app = frame.header("execute-app-name").unwrap_or("").to_owned();
            let arg = match frame.header("execute-app-arg") {
                Some(a) => a.to_owned(),
                // IVR:566-568: without an app-arg, a text/plain body is the argument.
                None if frame
                    .header("content-type")
                    .is_some_and(|t| t.eq_ignore_ascii_case("text/plain")) =>
                {
                    String::from_utf8_lossy(&frame.body).into_owned()
                }
                None => String::new(),
            };
            (app, arg)
        }
        "hangup" => (
            "hangup".to_owned(),
            frame
                .header("hangup-cause")
                .unwrap_or("NORMAL_CLEARING")
                .to_owned(),
        ),
        other => (other.to_owned(), String::new()),
    };
    let channel = inner.live_channel(&uuid);
    inner.log_command(LoggedCommand {
        connection: conn,
        kind: "sendmsg",
        call_id: channel.as_ref().map(|_| uuid.clone()),
        event_uuid: event_uuid.clone(),
        app: app.clone(),
        arg: arg.clone(),
    });
    let Some(channel) = channel else {
        return (format!("-ERR invalid session id [{uuid}]"), None);
    };
    let msg = match command.as_str() {
        "execute" => super::call::Msg::Execute(super::call::Exec {
            app,
            arg,
            event_uuid,
            lock: frame
                .header("event-lock")
                .is_some_and(|v| v.eq_ignore_ascii_case("true")),
            loops: frame
                .header("loops")
                .and_then(|l| l.trim().parse::<i64>().ok())
                .unwrap_or(1),
        }),
        "hangup" => super::call::Msg::Hangup(arg),
        // unicast, nomedia, xferext: accepted and ignored (pivot does not use them).
        _ => return ("+OK".to_owned(), None),
    };
    if channel.enqueue(msg) {
        ("+OK".to_owned(), Some(channel))
    } else {
        ("-ERR queue full".to_owned(), None)
    }
}

pub(crate) async fn heartbeat_loop(inner: Arc<Inner>) {
    let period = inner
        .config
        .heartbeat_interval
        .max(std::time::Duration::from_millis(10));
    let mut shutdown = inner.shutdown.subscribe();
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => return,
        }
        let up = inner.started.elapsed();
        let secs = up.as_secs();
        let mut ev = base_event(&inner, "HEARTBEAT", "switch_core.c", "send_heartbeat");
        ev.set("Event-Info", "System Ready");
        ev.set(
            "Up-Time",
            format!(
                "0 years, {} days, {} hours, {} minutes, {} seconds, {} milliseconds, 0 microseconds",
                secs / 86_400,
                (secs / 3600) % 24,
                (secs / 60) % 60,
                secs % 60,
                up.subsec_millis()
            ),
        );
        ev.set("FreeSWITCH-Version", api::VERSION);
        ev.set("Uptime-msec", up.as_millis().to_string());
        let sessions = inner.live_count();
        ev.set("Session-Count", sessions.to_string());
        ev.set("Max-Sessions", inner.config.max_calls.to_string());
        ev.set("Session-Per-Sec", "30");
        ev.set("Session-Per-Sec-Last", "0");
        ev.set("Session-Per-Sec-Max", "0");
        ev.set("Session-Per-Sec-FiveMin", "0");
        ev.set(
            "Session-Since-Startup",
            inner
                .sessions_since_startup
                .load(Ordering::Relaxed)
                .to_string(),
        );
        ev.set("Session-Peak-Max", sessions.to_string());
        ev.set("Session-Peak-FiveMin", sessions.to_string());
        ev.set("Idle-CPU", "99.000000");
        emit(&inner, ev);
    }
}

/// Events `myevents` turns on (ES:2108-2130).
const MYEVENTS: &[&str] = &[
    "CHANNEL_ANSWER",
    "CHANNEL_APPLICATION",
    "CHANNEL_BRIDGE",
    "CHANNEL_CREATE",
    "CHANNEL_DATA",
    "CHANNEL_DESTROY",
    "CHANNEL_EXECUTE",
    "CHANNEL_EXECUTE_COMPLETE",
    "CHANNEL_HANGUP",
    "CHANNEL_HANGUP_COMPLETE",
    "CHANNEL_ORIGINATE",
    "CHANNEL_UUID",
    "CHANNEL_OUTGOING",
    "CHANNEL_PARK",
    "CHANNEL_PROGRESS",
    "CHANNEL_PROGRESS_MEDIA",
    "CHANNEL_STATE",
    "CHANNEL_UNBRIDGE",
    "CHANNEL_UNPARK",
    "DETECTED_SPEECH",
    "DTMF",
    "TALK",
    "NOTALK",
];

/// FreeSWITCH's event type names (EV `EVENT_NAMES`), `CUSTOM` and `ALL` handled apart.
const EVENT_NAMES: &[&str] = &[
    "CLONE",
    "CHANNEL_CREATE",
    "CHANNEL_DESTROY",
    "CHANNEL_STATE",
    "CHANNEL_CALLSTATE",
    "CHANNEL_ANSWER",
    "CHANNEL_HANGUP",
    "CHANNEL_HANGUP_COMPLETE",
    "CHANNEL_EXECUTE",
    "CHANNEL_EXECUTE_COMPLETE",
    "CHANNEL_HOLD",
    "CHANNEL_UNHOLD",
    "CHANNEL_BRIDGE",
    "CHANNEL_UNBRIDGE",
    "CHANNEL_PROGRESS",
    "CHANNEL_PROGRESS_MEDIA",
    "CHANNEL_OUTGOING",
    "CHANNEL_PARK",
    "CHANNEL_UNPARK",
    "CHANNEL_APPLICATION",
    "CHANNEL_ORIGINATE",
    "CHANNEL_UUID",
    "API",
    "LOG",
    "INBOUND_CHAN",
    "OUTBOUND_CHAN",
    "STARTUP",
    "SHUTDOWN",
    "PUBLISH",
    "UNPUBLISH",
    "TALK",
    "NOTALK",
    "SESSION_CRASH",
    "MODULE_LOAD",
    "MODULE_UNLOAD",
    "DTMF",
    "MESSAGE",
    "PRESENCE_IN",
    "NOTIFY_IN",
    "PRESENCE_OUT",
    "PRESENCE_PROBE",
    "MESSAGE_WAITING",
    "MESSAGE_QUERY",
    "ROSTER",
    "CODEC",
    "BACKGROUND_JOB",
    "DETECTED_SPEECH",
    "DETECTED_TONE",
    "PRIVATE_COMMAND",
    "HEARTBEAT",
    "TRAP",
    "ADD_SCHEDULE",
    "DEL_SCHEDULE",
    "EXE_SCHEDULE",
    "RE_SCHEDULE",
    "RELOADXML",
    "NOTIFY",
    "PHONE_FEATURE",
    "PHONE_FEATURE_SUBSCRIBE",
    "SEND_MESSAGE",
    "RECV_MESSAGE",
    "REQUEST_PARAMS",
    "CHANNEL_DATA",
    "GENERAL",
    "COMMAND",
    "SESSION_HEARTBEAT",
    "CLIENT_DISCONNECTED",
    "SERVER_DISCONNECTED",
    "SEND_INFO",
    "RECV_INFO",
    "RECV_RTCP_MESSAGE",
    "SEND_RTCP_MESSAGE",
    "CALL_SECURE",
    "NAT",
    "RECORD_START",
    "RECORD_STOP",
    "PLAYBACK_START",
    "PLAYBACK_STOP",
    "CALL_UPDATE",
    "FAILURE",
    "SOCKET_DATA",
    "MEDIA_BUG_START",
    "MEDIA_BUG_STOP",
    "CONFERENCE_DATA_QUERY",
    "CONFERENCE_DATA",
    "CALL_SETUP_REQ",
    "CALL_SETUP_RESULT",
    "CALL_DETAIL",
    "DEVICE_STATE",
    "TEXT",
    "SHUTDOWN_REQUESTED",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(pairs: &[(&str, &str)]) -> EslEvent {
        let mut e = EslEvent::new(pairs[0].1);
        for (n, v) in &pairs[1..] {
            e.set(*n, *v);
        }
        e
    }

    #[test]
    fn filters_or_and_missing_header_never_matches() {
        let mut s = Subscription {
            authed: true,
            ..Default::default()
        };
        s.events.insert("CHANNEL_PARK".into());
        s.events.insert("HEARTBEAT".into());
        let park = ev(&[("Event-Name", "CHANNEL_PARK"), ("Unique-ID", "A")]);
        let hb = ev(&[("Event-Name", "HEARTBEAT")]);
        assert!(s.wants(&park) && s.wants(&hb));
        s.filters.push(("Unique-ID".into(), "A".into()));
        assert!(s.wants(&park));
        assert!(!s.wants(&hb), "HEARTBEAT has no Unique-ID");
        s.filters.push(("Event-Name".into(), "HEARTBEAT".into()));
        assert!(s.wants(&hb));
        s.filters
            .push(("Event-Name".into(), "-CHANNEL_PARK".into()));
        assert!(!s.wants(&park));
    }
}
