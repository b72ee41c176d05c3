//! The inbound ESL client: pivot connects to a FreeSWITCH (or the simulator) and drives calls.
//!
//! Per switch, two connections: an **event** connection subscribed to the call-control events,
//! and a **command** connection for `sendmsg`, `api` and `bgapi`, so that a blocking `api` never
//! stalls event delivery. On each connection replies come back in command order, so one FIFO of
//! pending replies per connection matches them (freeswitch-esl.md §1.6). A supervisor task
//! reconnects with jittered backoff, watches liveness (any frame, HEARTBEAT at least every 20 s),
//! notices a FreeSWITCH restart by its `Core-UUID`, resyncs live channels with
//! `show channels as json`, and fails every pending operation cleanly when a connection drops.
//!
//! Completions: every execute carries `Event-UUID: <call>:<epoch>:<seq>` and `event-lock: true`;
//! the command is registered before it is sent (its events may overtake the `+OK`), completed by
//! the `CHANNEL_EXECUTE_COMPLETE` with that `Application-UUID`, or by the call's hangup — an
//! execute can vanish without a completion (unknown app, `uuid_break all`, dead channel).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::commands::{Command, CommandId};
use crate::esl::{Direction, EslEvent, Frame, FrameDecoder, FrameEncoder, Headers};
use crate::events::{ChannelSummary, SwitchEvent};
use crate::tracker::Tracker;

/// The events the event connection subscribes to: only those the tracker reads, since every
/// event costs FreeSWITCH and us a hundred-odd headers to encode and decode.
const SUBSCRIPTION: &str = "CHANNEL_PARK CHANNEL_ANSWER CHANNEL_EXECUTE_COMPLETE CHANNEL_BRIDGE \
     CHANNEL_UNBRIDGE CHANNEL_HANGUP CHANNEL_HANGUP_COMPLETE DTMF PLAYBACK_START PLAYBACK_STOP \
     HEARTBEAT BACKGROUND_JOB";
/// Replies awaited on one connection at once; more is a caller bug or a dead peer.
const MAX_PENDING_REPLIES: usize = 4096;
/// Non-reply frames (events, notices) buffered per connection before its reader waits.
const FRAME_QUEUE: usize = 16 * 1024;
/// Arguments longer than this go in a body, as FreeSWITCH's header form is limited.
const MAX_HEADER_ARG: usize = 1024;

/// How to reach one switch.
#[derive(Debug, Clone)]
pub struct SwitchConfig {
    /// A name for logs, metrics (`pivot_switch_connected{switch}`) and [`CallInfo::switch`].
    pub name: String,
    /// `host:port` of its event socket.
    pub address: String,
    pub password: String,
    /// No frame at all for this long means the switch is dead (HEARTBEAT comes every 20 s).
    pub liveness_timeout: Duration,
    /// First reconnect delay; doubles up to `reconnect_max`, with jitter.
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// How long a reply (`+OK`, an api result) may take.
    pub reply_timeout: Duration,
}

impl SwitchConfig {
    pub fn new(
        name: impl Into<String>,
        address: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        SwitchConfig {
            name: name.into(),
            address: address.into(),
            password: password.into(),
            liveness_timeout: Duration::from_secs(60),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(10),
            reply_timeout: Duration::from_secs(10),
        }
    }
}

/// Why a switch operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SwitchError {
    #[error("not connected to switch {0}")]
    NotConnected(String),
    #[error("the connection to switch {0} dropped before the reply")]
    Disconnected(String),
    #[error("switch {switch} did not reply within {timeout_ms} ms")]
    Timeout { switch: String, timeout_ms: u64 },
    #[error("switch refused: {0}")]
    Refused(String),
    #[error("too many operations pending on switch {0}")]
    Overloaded(String),
    #[error("cannot connect to {address}: {reason}")]
    Connect { address: String, reason: String },
}

/// A client for one switch. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SwitchClient {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    config: SwitchConfig,
    /// The command connection while connected.
    command: Mutex<Option<Connection>>,
    tracker: Mutex<Tracker>,
    connected: AtomicBool,
    core_uuid: Mutex<Option<String>>,
    events: mpsc::Sender<SwitchEvent>,
    job_seq: AtomicU64,
    shutdown: watch::Sender<bool>,
}

impl SwitchClient {
    /// Starts connecting (and reconnecting, for as long as the client lives); events for every
    /// call of this switch go to `events`.
    pub fn start(config: SwitchConfig, events: mpsc::Sender<SwitchEvent>) -> SwitchClient {
        let (shutdown, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            config,
            command: Mutex::new(None),
            tracker: Mutex::new(Tracker::default()),
            connected: AtomicBool::new(false),
            core_uuid: Mutex::new(None),
            events,
            job_seq: AtomicU64::new(0),
            shutdown,
        });
        tokio::spawn(supervise(Arc::clone(&shared)));
        SwitchClient { shared }
    }

    pub fn name(&self) -> &str {
        &self.shared.config.name
    }

    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::Acquire)
    }

    pub fn core_uuid(&self) -> Option<String> {
        lock(&self.shared.core_uuid).clone()
    }

    /// Runs `command` on `call_id`. Returns once the switch has queued it; its outcome comes
    /// later as [`SwitchEvent::Completed`] with `id`.
    pub async fn execute(
        &self,
        call_id: &str,
        id: &CommandId,
        command: &Command,
    ) -> Result<(), SwitchError> {
        for (name, value) in command.preset_vars() {
            let preset = sendmsg_execute(
                call_id,
                &format!("{id}/{name}"),
                "set",
                &format!("{name}={value}"),
                1,
            );
            self.request(preset).await?;
        }
        let (app, arg) = command.app();
        let frame = sendmsg_execute(call_id, id.as_str(), app, &arg, command.loops());
        lock(&self.shared.tracker).register(call_id, id.clone(), command.clone())?;
        let reply = self.request(frame).await;
        if reply.is_err() {
            lock(&self.shared.tracker).unregister(call_id, id);
        }
        reply.map(drop)
    }

    /// Hangs the call up with `cause` (a FreeSWITCH cause name such as `NORMAL_CLEARING`).
    pub async fn hangup(&self, call_id: &str, cause: &str) -> Result<(), SwitchError> {
        let mut headers = Headers::new();
        headers.push("call-command", "hangup");
        headers.push("hangup-cause", cause);
        let frame = Frame {
            line: Some(format!("sendmsg {call_id}")),
            headers,
            body: Bytes::new(),
        };
        self.request(frame).await.map(drop)
    }

    /// Stops what the call is doing and discards everything queued on it (`uuid_break all`):
    /// what a node adopting a call does first.
    pub async fn break_all(&self, call_id: &str) -> Result<(), SwitchError> {
        self.api(&format!("uuid_break {call_id} all"))
            .await
            .map(drop)
    }

    /// A blocking `api` command on the command connection; the output, or `Refused` when it
    /// starts with `-ERR`.
    pub async fn api(&self, command: &str) -> Result<String, SwitchError> {
        let reply = self
            .request(Frame {
                line: Some(format!("api {command}")),
                ..Frame::default()
            })
            .await?;
        api_output(&reply)
    }

    /// A `bgapi` command with a Job-UUID of ours; waits for its `BACKGROUND_JOB` result.
    pub async fn bgapi(&self, command: &str) -> Result<String, SwitchError> {
        let seq = self.shared.job_seq.fetch_add(1, Ordering::Relaxed);
        let job_id = format!("pivot-job-{}-{seq}", std::process::id());
        let connection = lock(&self.shared.command)
            .clone()
            .ok_or_else(|| SwitchError::NotConnected(self.shared.config.name.clone()))?;
        background_job(
            &connection,
            &self.shared.tracker,
            (&self.shared.config.name, self.shared.config.reply_timeout),
            job_id,
            command,
        )
        .await
    }

    /// Stops reconnecting and closes the connections.
    pub fn shutdown(&self) {
        // `send_replace`, not `send`: `send` stores nothing while the supervisor task has not
        // subscribed yet (a shutdown right after `start`), and would be lost.
        self.shared.shutdown.send_replace(true);
    }

    async fn request(&self, frame: Frame) -> Result<Frame, SwitchError> {
        let connection = lock(&self.shared.command)
            .clone()
            .ok_or_else(|| SwitchError::NotConnected(self.shared.config.name.clone()))?;
        connection
            .command(frame, self.shared.config.reply_timeout)
            .await
    }
}

/// Sends `bgapi <command>` with our `job_id` on `connection` and waits for its
/// `BACKGROUND_JOB`, which `tracker` resolves; the job is forgotten if it cannot be sent or
/// times out.
pub(crate) async fn background_job(
    connection: &Connection,
    tracker: &Mutex<Tracker>,
    (switch, reply_timeout): (&str, Duration),
    job_id: String,
    command: &str,
) -> Result<String, SwitchError> {
    let (tx, rx) = oneshot::channel();
    lock(tracker).add_job(switch, job_id.clone(), tx)?;
    let mut headers = Headers::new();
    headers.push("Job-UUID", job_id.clone());
    let frame = Frame {
        line: Some(format!("bgapi {command}")),
        headers,
        body: Bytes::new(),
    };
    if let Err(e) = connection.command(frame, reply_timeout).await {
        lock(tracker).jobs.remove(&job_id);
        return Err(e);
    }
    let timeout = reply_timeout * 6;
    match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(SwitchError::Disconnected(switch.to_owned())),
        Err(_) => {
            lock(tracker).jobs.remove(&job_id);
            Err(SwitchError::Timeout {
                switch: switch.to_owned(),
                timeout_ms: millis(timeout),
            })
        }
    }
}

/// The output of an `api` command, or `Refused` when it starts with `-ERR`/`-USAGE` (api
/// output is free-form, so only its first characters say it failed).
pub(crate) fn api_output(reply: &Frame) -> Result<String, SwitchError> {
    let text = reply.reply_text().unwrap_or_default();
    if text.starts_with("-ERR") || text.starts_with("-USAGE") {
        return Err(SwitchError::Refused(text.trim_end().to_owned()));
    }
    Ok(text.to_owned())
}

pub(crate) fn sendmsg_execute(
    call_id: &str,
    event_uuid: &str,
    app: &str,
    arg: &str,
    loops: u32,
) -> Frame {
    let mut headers = Headers::new();
    headers.push("call-command", "execute");
    headers.push("execute-app-name", app);
    let mut body = Bytes::new();
    if arg.len() > MAX_HEADER_ARG || arg.contains('\n') {
        // Long or multi-line arguments travel in the body (freeswitch-esl.md §2.6).
        headers.push("content-type", "text/plain");
        body = Bytes::from(arg.to_owned());
    } else if !arg.is_empty() {
        headers.push("execute-app-arg", arg);
    }
    headers.push("event-lock", "true");
    headers.push("Event-UUID", event_uuid);
    if loops != 1 {
        headers.push("loops", loops.to_string());
    }
    Frame {
        line: Some(format!("sendmsg {call_id}")),
        headers,
        body,
    }
}

/// One ESL connection: a writer and a FIFO of reply waiters behind one lock (so the order of
/// waiters is the order of commands on the wire), and a reader task. Shared with the outbound
/// socket server, whose connections are accepted rather than opened.
#[derive(Debug, Clone)]
pub(crate) struct Connection {
    name: String,
    inner: Arc<tokio::sync::Mutex<Writer>>,
    /// Requests waiting for the writer lock. A request that sees others waiting leaves its
    /// frame buffered for the last of them to flush: a burst of commands goes out in one write
    /// instead of a syscall (and a segment) per command.
    queued: Arc<AtomicUsize>,
}

/// Counts a request as waiting for the writer lock until it gets it. A request dropped while
/// waiting (its caller gave up) may have been counted on to flush frames buffered ahead of it,
/// so it hands that flush to a task of its own.
struct QueuedGuard<'a> {
    connection: &'a Connection,
    acquired: bool,
}

impl Drop for QueuedGuard<'_> {
    fn drop(&mut self) {
        self.connection.queued.fetch_sub(1, Ordering::AcqRel);
        if !self.acquired {
            let inner = Arc::clone(&self.connection.inner);
            tokio::spawn(async move {
                let _ = flush(&mut inner.lock().await.sink).await;
            });
        }
    }
}

#[derive(Debug)]
struct Writer {
    sink: FramedWrite<OwnedWriteHalf, FrameEncoder>,
    waiters: Arc<Mutex<VecDeque<oneshot::Sender<Frame>>>>,
}

impl Connection {
    /// A request whose `command/reply` starting `-ERR` is a refusal; `api/response` bodies are
    /// left to the caller, since `api` output is free-form.
    pub(crate) async fn command(
        &self,
        frame: Frame,
        timeout: Duration,
    ) -> Result<Frame, SwitchError> {
        let reply = self.request(frame, timeout).await?;
        if reply.content_type() == Some("command/reply")
            && reply.reply_text().is_some_and(|t| t.starts_with("-ERR"))
        {
            return Err(SwitchError::Refused(
                reply.reply_text().unwrap_or_default().to_owned(),
            ));
        }
        Ok(reply)
    }

    /// Starts the reader task. Reply frames complete waiters in order; every other frame goes
    /// to the returned (bounded) receiver. When the peer closes, every waiter is dropped, which
    /// fails its request with `Disconnected`, and the receiver ends.
    pub(crate) fn start(
        name: String,
        reader: FramedRead<OwnedReadHalf, FrameDecoder>,
        write: OwnedWriteHalf,
    ) -> (Connection, mpsc::Receiver<Frame>) {
        let waiters = Arc::new(Mutex::new(VecDeque::new()));
        let connection = Connection {
            name,
            inner: Arc::new(tokio::sync::Mutex::new(Writer {
                sink: FramedWrite::new(write, FrameEncoder),
                waiters: Arc::clone(&waiters),
            })),
            queued: Arc::new(AtomicUsize::new(0)),
        };
        let (frames_tx, frames_rx) = mpsc::channel(FRAME_QUEUE);
        tokio::spawn(read_frames(reader, waiters, frames_tx));
        (connection, frames_rx)
    }

    /// Sends `frame` and waits (up to `timeout`) for its reply.
    pub(crate) async fn request(
        &self,
        frame: Frame,
        timeout: Duration,
    ) -> Result<Frame, SwitchError> {
        let (tx, rx) = oneshot::channel();
        {
            self.queued.fetch_add(1, Ordering::AcqRel);
            let mut guard = QueuedGuard {
                connection: self,
                acquired: false,
            };
            let mut writer = self.inner.lock().await;
            guard.acquired = true;
            drop(guard);
            let overloaded = {
                let mut waiters = lock(&writer.waiters);
                let full = waiters.len() >= MAX_PENDING_REPLIES;
                if !full {
                    waiters.push_back(tx);
                }
                full
            };
            if overloaded {
                // Frames fed by earlier holders may be counting on this one to flush.
                let _ = flush(&mut writer.sink).await;
                return Err(SwitchError::Overloaded(self.name.clone()));
            }
            // `feed` only buffers (writing out once the buffer passes its high-water mark);
            // the flush is skipped when another request is already waiting for the lock, as
            // that one (or the last of a burst) flushes both frames in one write.
            if writer.sink.feed(frame).await.is_err() {
                return Err(SwitchError::Disconnected(self.name.clone()));
            }
            if self.queued.load(Ordering::Acquire) == 0 && flush(&mut writer.sink).await.is_err() {
                return Err(SwitchError::Disconnected(self.name.clone()));
            }
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(SwitchError::Disconnected(self.name.clone())),
            Err(_) => Err(SwitchError::Timeout {
                switch: self.name.clone(),
                timeout_ms: millis(timeout),
            }),
        }
    }
}

/// Writes out whatever frames are buffered.
async fn flush(
    sink: &mut FramedWrite<OwnedWriteHalf, FrameEncoder>,
) -> Result<(), crate::esl::CodecError> {
    SinkExt::<Frame>::flush(sink).await
}

/// Connects, authenticates, and returns the connection plus its stream of non-reply frames.
/// Reply frames complete waiters in order; when the peer closes, every waiter is dropped, which
/// fails its request with `Disconnected`.
async fn open(config: &SwitchConfig) -> Result<(Connection, mpsc::Receiver<Frame>), SwitchError> {
    let (reader, write) = connect_authed(config).await?;
    Ok(Connection::start(config.name.clone(), reader, write))
}

/// An authenticated connection, still read by its owner rather than a reader task.
type RawConnection = (FramedRead<OwnedReadHalf, FrameDecoder>, OwnedWriteHalf);

/// Connects, waits for `auth/request` and authenticates.
async fn connect_authed(config: &SwitchConfig) -> Result<RawConnection, SwitchError> {
    let connect_error = |reason: String| SwitchError::Connect {
        address: config.address.clone(),
        reason,
    };
    let stream = tokio::time::timeout(config.reply_timeout, TcpStream::connect(&config.address))
        .await
        .map_err(|_| connect_error("timed out".into()))?
        .map_err(|e| connect_error(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    let (read, mut write) = stream.into_split();
    let mut reader = FramedRead::new(read, FrameDecoder::new(Direction::FromServer));
    let greeting = tokio::time::timeout(config.reply_timeout, reader.next())
        .await
        .map_err(|_| connect_error("no auth/request".into()))?;
    match greeting {
        Some(Ok(frame)) if frame.content_type() == Some("auth/request") => {}
        Some(Ok(frame)) => {
            let what = frame
                .content_type()
                .unwrap_or("a frame without Content-Type");
            return Err(connect_error(format!("expected auth/request, got {what}")));
        }
        Some(Err(e)) => return Err(connect_error(e.to_string())),
        None => return Err(connect_error("closed before auth/request".into())),
    }
    let auth = Frame {
        line: Some(format!("auth {}", config.password)),
        ..Frame::default()
    };
    let auth = exchange(config, &mut reader, &mut write, &auth).await?;
    if auth.reply_text() != Some("+OK accepted") {
        let text = auth.reply_text().unwrap_or("no reply text");
        return Err(connect_error(format!("authentication refused: {text}")));
    }
    Ok((reader, write))
}

/// Sends `frame` on a connection nobody else reads yet and waits for its reply. Used only
/// during setup, when nothing but the reply can arrive (no events are subscribed yet); any
/// other frame is skipped.
async fn exchange(
    config: &SwitchConfig,
    reader: &mut FramedRead<OwnedReadHalf, FrameDecoder>,
    write: &mut OwnedWriteHalf,
    frame: &Frame,
) -> Result<Frame, SwitchError> {
    let disconnected = || SwitchError::Disconnected(config.name.clone());
    write
        .write_all(&frame.to_bytes())
        .await
        .map_err(|_| disconnected())?;
    let deadline = tokio::time::Instant::now() + config.reply_timeout;
    loop {
        match tokio::time::timeout_at(deadline, reader.next()).await {
            Ok(Some(Ok(frame))) if frame.is_reply() => return Ok(frame),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) => return Err(disconnected()),
            Err(_) => {
                return Err(SwitchError::Timeout {
                    switch: config.name.clone(),
                    timeout_ms: millis(config.reply_timeout),
                });
            }
        }
    }
}

async fn read_frames(
    mut reader: FramedRead<OwnedReadHalf, FrameDecoder>,
    waiters: Arc<Mutex<VecDeque<oneshot::Sender<Frame>>>>,
    frames: mpsc::Sender<Frame>,
) {
    while let Some(Ok(frame)) = reader.next().await {
        if frame.is_reply() {
            let waiter = lock(&waiters).pop_front();
            if let Some(waiter) = waiter {
                let _ = waiter.send(frame);
            }
        } else if frames.send(frame).await.is_err() {
            break;
        }
    }
    // Dropping the waiters fails every pending request with `Disconnected`.
    lock(&waiters).clear();
}

/// Connects, runs until a connection is lost, reconnects; forever until shutdown.
async fn supervise(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    let mut backoff = shared.config.reconnect_min;
    loop {
        if *shutdown.borrow() {
            break;
        }
        match connect_and_run(&shared, &mut shutdown).await {
            Ok(()) => break,
            Err(reason) => {
                let was_up = shared.connected.swap(false, Ordering::AcqRel);
                *lock(&shared.command) = None;
                let orphans = lock(&shared.tracker).fail_jobs();
                for job in orphans {
                    let _ = job.send(Err(SwitchError::Disconnected(shared.config.name.clone())));
                }
                if was_up {
                    backoff = shared.config.reconnect_min;
                    let _ = shared
                        .events
                        .send(SwitchEvent::SwitchDown {
                            switch: shared.config.name.clone(),
                            reason,
                        })
                        .await;
                }
            }
        }
        let delay = jitter(backoff);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => {}
        }
        backoff = (backoff * 2).min(shared.config.reconnect_max);
    }
    shared.connected.store(false, Ordering::Release);
    *lock(&shared.command) = None;
}

/// One connected period. `Err` carries why it ended (to reconnect); `Ok` means shutdown.
async fn connect_and_run(
    shared: &Arc<Shared>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), String> {
    let config = &shared.config;
    // The event connection is read right here rather than by a reader task forwarding frames
    // through a channel: one task hop (and often a thread wake-up) less per event. Its write
    // half is kept only so the socket stays fully open.
    let (mut event_frames, mut event_write) =
        connect_authed(config).await.map_err(|e| e.to_string())?;
    let subscribe = Frame {
        line: Some(format!("event json {SUBSCRIPTION}")),
        ..Frame::default()
    };
    let reply = exchange(config, &mut event_frames, &mut event_write, &subscribe)
        .await
        .map_err(|e| e.to_string())?;
    if !reply.reply_text().is_some_and(|t| t.starts_with("+OK")) {
        return Err(format!("subscription refused: {:?}", reply.reply_text()));
    }
    let (command_conn, mut command_frames) = open(config).await.map_err(|e| e.to_string())?;
    let core_uuid = global_var(&command_conn, config, "core_uuid").await?;
    let channels = list_channels(&command_conn, config).await?;
    let previous = lock(&shared.core_uuid).replace(core_uuid.clone());
    let restarted = previous.is_some_and(|p| p != core_uuid);
    {
        let mut tracker = lock(&shared.tracker);
        if restarted {
            tracker.calls.clear();
        }
        let live: std::collections::HashSet<&str> =
            channels.iter().map(|c| c.call_id.as_str()).collect();
        // Calls that ended while we were away: their pending commands end as hung up.
        let gone: Vec<String> = tracker
            .calls
            .keys()
            .filter(|id| !live.contains(id.as_str()))
            .cloned()
            .collect();
        for id in gone {
            tracker.calls.remove(&id);
        }
    }
    *lock(&shared.command) = Some(command_conn);
    shared.connected.store(true, Ordering::Release);
    shared
        .events
        .send(SwitchEvent::SwitchUp {
            switch: config.name.clone(),
            core_uuid: core_uuid.clone(),
            restarted,
            channels,
        })
        .await
        .map_err(|_| "event receiver gone".to_owned())?;

    loop {
        tokio::select! {
            frame = tokio::time::timeout(config.liveness_timeout, event_frames.next()) => {
                match frame {
                    Ok(Some(Ok(frame))) => handle_frame(shared, &frame).await?,
                    Ok(Some(Err(_)) | None) => return Err("event connection closed".into()),
                    Err(_) => return Err(format!(
                        "no event for {} ms (HEARTBEAT missed)",
                        millis(config.liveness_timeout)
                    )),
                }
            }
            frame = command_frames.recv() => {
                match frame {
                    // Notices on the command connection (disconnect-notice): the peer is going.
                    Some(frame) if frame.content_type() == Some("text/disconnect-notice") => {
                        return Err("command connection: disconnect notice".into());
                    }
                    Some(_) => {}
                    None => return Err("command connection closed".into()),
                }
            }
            _ = shutdown.changed() => return Ok(()),
        }
    }
}

async fn global_var(
    conn: &Connection,
    config: &SwitchConfig,
    name: &str,
) -> Result<String, String> {
    let reply = conn
        .request(
            Frame {
                line: Some(format!("api global_getvar {name}")),
                ..Frame::default()
            },
            config.reply_timeout,
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(reply.reply_text().unwrap_or_default().trim().to_owned())
}

async fn list_channels(
    conn: &Connection,
    config: &SwitchConfig,
) -> Result<Vec<ChannelSummary>, String> {
    let reply = conn
        .request(
            Frame {
                line: Some("api show channels as json".into()),
                ..Frame::default()
            },
            config.reply_timeout,
        )
        .await
        .map_err(|e| e.to_string())?;
    let text = reply.reply_text().unwrap_or_default();
    let parsed: serde_json::Value = serde_json::from_str(text).unwrap_or(serde_json::Value::Null);
    let rows = parsed
        .get("rows")
        .and_then(|r| r.as_array())
        .cloned()
        .unwrap_or_default();
    let field = |row: &serde_json::Value, key: &str| {
        row.get(key)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    Ok(rows
        .iter()
        .map(|row| ChannelSummary {
            call_id: field(row, "uuid"),
            destination: field(row, "dest"),
            caller_id_number: field(row, "cid_num"),
            call_state: field(row, "callstate"),
        })
        .filter(|c| !c.call_id.is_empty())
        .collect())
}

/// Turns one event frame into typed events for the engine.
async fn handle_frame(shared: &Arc<Shared>, frame: &Frame) -> Result<(), String> {
    if frame.content_type() == Some("text/disconnect-notice") {
        return Err("event connection: disconnect notice".into());
    }
    let Ok(Some(event)) = EslEvent::from_frame(frame) else {
        return Ok(());
    };
    let switch = &shared.config.name;
    let typed = lock(&shared.tracker).on_event(switch, &event);
    for event in typed {
        shared
            .events
            .send(event)
            .await
            .map_err(|_| "event receiver gone".to_owned())?;
    }
    Ok(())
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these short locks leaves consistent data (every critical
    // section is a single map or queue operation), so poisoning is ignored.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `base` plus up to 50%, so a fleet of nodes does not reconnect in step.
fn jitter(base: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0);
    let unit = (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64;
    base + base.mul_f64(unit * 0.5)
}
