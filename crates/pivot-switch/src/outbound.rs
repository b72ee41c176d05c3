//! Outbound socket mode: FreeSWITCH's `socket <host:port> async full` dialplan app connects to
//! pivot, one TCP connection per call (freeswitch-esl.md §3). The second way calls reach the
//! engine, producing the same [`SwitchEvent`]s as the inbound [`crate::SwitchClient`].
//!
//! Per connection, as capture 11 shows: FreeSWITCH says nothing until we send `connect`; the
//! reply is the channel's CHANNEL_DATA serialised as one URL-encoded header block (no
//! `Content-Length`, `Content-Type: command/reply` near the end), read into a [`CallInfo`] and
//! offered as [`SwitchEvent::Parked`]. Before that offer the connection subscribes —
//! `myevents json`, `linger <n>`, `event json BACKGROUND_JOB CHANNEL_EXECUTE_COMPLETE` plus the
//! PLAYBACK/RECORD events `myevents` lacks and that outcomes need — so that nothing the engine
//! sends can outrun the subscription. The connection's events then go through the same
//! [`Tracker`] as the inbound client's. Commands travel on the call's own connection
//! (`sendmsg` without a uuid addresses the controlled channel), with one FIFO of reply waiters
//! per connection.
//!
//! End of a call: with linger, FreeSWITCH sends a `text/disconnect-notice` with
//! `Content-Disposition: linger` after the hang-up and keeps delivering the final events; the
//! `disconnect` notice (or EOF) ends the connection. Whatever has not been reported by then is:
//! every command still pending completes `HungUp`, then [`SwitchEvent::Hangup`] — so a call
//! always ends for the engine, also when the connection just drops.
//!
//! Bounds: connections at once ([`OutboundConfig::max_connections`]; further ones are closed
//! at accept, and FreeSWITCH's dialplan moves on past `socket`), and per connection the
//! tracker's and the reply FIFO's bounds.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_util::codec::FramedRead;

use crate::client::{Connection, SwitchError, api_output, background_job, lock, sendmsg_execute};
use crate::commands::{Command, CommandId};
use crate::esl::{Direction, EslEvent, Frame, FrameDecoder, Headers};
use crate::events::SwitchEvent;
use crate::tracker::Tracker;

/// Events asked for on top of `myevents` (which lacks PLAYBACK_*, RECORD_* and BACKGROUND_JOB,
/// freeswitch-esl.md §3.3). CHANNEL_EXECUTE_COMPLETE is in `myevents` already; capture 11
/// names it again, harmlessly.
const EXTRA_EVENTS: &str = "BACKGROUND_JOB CHANNEL_EXECUTE_COMPLETE PLAYBACK_START PLAYBACK_STOP \
     RECORD_START RECORD_STOP";
/// The cause reported for a call whose connection ended before its hang-up was seen: with
/// nothing after `socket` in the dialplan, FreeSWITCH hangs it up `NORMAL_CLEARING` (§3.5).
const LOST_CAUSE: &str = "NORMAL_CLEARING";

/// How to listen for FreeSWITCH's outbound connections.
#[derive(Debug, Clone)]
pub struct OutboundConfig {
    /// Where to listen (FreeSWITCH's default target port is 8084); port 0 picks a free port,
    /// see [`OutboundServer::local_addr`].
    pub listen: SocketAddr,
    /// The switch name for [`crate::CallInfo::switch`] and errors.
    pub name: String,
    /// `linger <n>` seconds after the hang-up, so the final events are not lost (§3.4);
    /// 0 sends no `linger` (FreeSWITCH then closes at the hang-up, racing the last events).
    pub linger_s: u32,
    /// How long a reply (`+OK`, an api result) may take.
    pub reply_timeout: Duration,
    /// Connections (calls) at once.
    pub max_connections: usize,
}

impl OutboundConfig {
    pub fn new(name: impl Into<String>, listen: SocketAddr) -> OutboundConfig {
        OutboundConfig {
            listen,
            name: name.into(),
            linger_s: 10,
            reply_timeout: Duration::from_secs(10),
            max_connections: 10_000,
        }
    }
}

/// Accepts FreeSWITCH's outbound connections and drives each call on its own connection.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct OutboundServer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    config: OutboundConfig,
    local_addr: SocketAddr,
    events: mpsc::Sender<SwitchEvent>,
    /// Live connections by the call they control; bounded by `max_connections`.
    calls: Mutex<HashMap<String, Arc<CallConn>>>,
    job_seq: AtomicU64,
    shutdown: watch::Sender<bool>,
}

/// One call's connection and its bookkeeping.
#[derive(Debug)]
struct CallConn {
    connection: Connection,
    tracker: Mutex<Tracker>,
}

impl OutboundServer {
    /// Binds the listener and starts accepting; events of every call go to `events`.
    pub async fn bind(
        config: OutboundConfig,
        events: mpsc::Sender<SwitchEvent>,
    ) -> std::io::Result<OutboundServer> {
        let listener = TcpListener::bind(config.listen).await?;
        let local_addr = listener.local_addr()?;
        let (shutdown, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            config,
            local_addr,
            events,
            calls: Mutex::new(HashMap::new()),
            job_seq: AtomicU64::new(0),
            shutdown,
        });
        tokio::spawn(accept_loop(Arc::clone(&shared), listener));
        Ok(OutboundServer { shared })
    }

    /// The address actually listened on.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    pub fn name(&self) -> &str {
        &self.shared.config.name
    }

    /// Whether it still accepts connections: from [`OutboundServer::bind`] until
    /// [`OutboundServer::shutdown`].
    pub fn is_listening(&self) -> bool {
        !*self.shared.shutdown.borrow()
    }

    /// Calls currently connected (until their connection closes, lingering included).
    pub fn connections(&self) -> usize {
        lock(&self.shared.calls).len()
    }

    /// Runs `command` on `call_id`. Returns once the switch has queued it; its outcome comes
    /// later as [`SwitchEvent::Completed`] with `id`.
    pub async fn execute(
        &self,
        call_id: &str,
        id: &CommandId,
        command: &Command,
    ) -> Result<(), SwitchError> {
        let call = self.call(call_id)?;
        for (name, value) in command.preset_vars() {
            let preset = bound_sendmsg(sendmsg_execute(
                call_id,
                &format!("{id}/{name}"),
                "set",
                &format!("{name}={value}"),
                1,
            ));
            self.request(&call, preset).await?;
        }
        let (app, arg) = command.app();
        let frame = bound_sendmsg(sendmsg_execute(
            call_id,
            id.as_str(),
            app,
            &arg,
            command.loops(),
        ));
        {
            // Checked and registered under one lock: a hang-up processed after this drains
            // the command; one processed before refuses it.
            let mut tracker = lock(&call.tracker);
            if tracker.is_over(call_id) {
                return Err(SwitchError::Refused(format!("-ERR call {call_id} is over")));
            }
            tracker.register(call_id, id.clone(), command.clone())?;
        }
        let reply = self.request(&call, frame).await;
        if reply.is_err() {
            lock(&call.tracker).unregister(call_id, id);
        }
        reply.map(drop)
    }

    /// Hangs the call up with `cause` (a FreeSWITCH cause name such as `NORMAL_CLEARING`).
    pub async fn hangup(&self, call_id: &str, cause: &str) -> Result<(), SwitchError> {
        let call = self.call(call_id)?;
        let mut headers = Headers::new();
        headers.push("call-command", "hangup");
        headers.push("hangup-cause", cause);
        let frame = Frame {
            line: Some("sendmsg".into()),
            headers,
            body: Bytes::new(),
        };
        self.request(&call, frame).await.map(drop)
    }

    /// Stops what the call is doing and discards everything queued on it
    /// (`api uuid_break <uuid> all` on the call's connection).
    pub async fn break_all(&self, call_id: &str) -> Result<(), SwitchError> {
        self.api(call_id, &format!("uuid_break {call_id} all"))
            .await
            .map(drop)
    }

    /// A blocking `api` command on the call's connection (needs `full`); the output, or
    /// `Refused` when it starts with `-ERR`.
    pub async fn api(&self, call_id: &str, command: &str) -> Result<String, SwitchError> {
        let call = self.call(call_id)?;
        let reply = self
            .request(
                &call,
                Frame {
                    line: Some(format!("api {command}")),
                    ..Frame::default()
                },
            )
            .await?;
        api_output(&reply)
    }

    /// A `bgapi` command on the call's connection with a Job-UUID of ours; waits for its
    /// `BACKGROUND_JOB` (delivered to this connection as it owns the job).
    pub async fn bgapi(&self, call_id: &str, command: &str) -> Result<String, SwitchError> {
        let call = self.call(call_id)?;
        let seq = self.shared.job_seq.fetch_add(1, Ordering::Relaxed);
        let job_id = format!("pivot-outbound-job-{}-{seq}", std::process::id());
        background_job(
            &call.connection,
            &call.tracker,
            (&self.shared.config.name, self.shared.config.reply_timeout),
            job_id,
            command,
        )
        .await
    }

    /// Stops accepting and closes every connection. FreeSWITCH then continues each call's
    /// dialplan after `socket` (freeswitch-esl.md §3.5); each call is reported hung up.
    pub fn shutdown(&self) {
        // `send_replace`, not `send`: `send` stores nothing while no task subscribes yet (a
        // shutdown right after `bind`, before the accept loop ran), and would be lost.
        self.shared.shutdown.send_replace(true);
    }

    fn call(&self, call_id: &str) -> Result<Arc<CallConn>, SwitchError> {
        lock(&self.shared.calls)
            .get(call_id)
            .cloned()
            .ok_or_else(|| {
                SwitchError::NotConnected(format!("{}/{call_id}", self.shared.config.name))
            })
    }

    async fn request(&self, call: &CallConn, frame: Frame) -> Result<Frame, SwitchError> {
        call.connection
            .command(frame, self.shared.config.reply_timeout)
            .await
    }
}

/// On an outbound connection `sendmsg` needs no uuid: it addresses the controlled channel.
fn bound_sendmsg(mut frame: Frame) -> Frame {
    frame.line = Some("sendmsg".into());
    frame
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let mut shutdown = shared.shutdown.subscribe();
    let slots = Arc::new(Semaphore::new(shared.config.max_connections));
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let Ok((stream, _peer)) = accepted else {
            // EMFILE and the like: back off briefly instead of spinning.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        // Over the bound: closed at once; FreeSWITCH's `socket` app returns and the dialplan
        // moves on (to a fallback, if there is one).
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            drop(stream);
            continue;
        };
        tokio::spawn(serve(Arc::clone(&shared), stream, permit));
    }
}

/// One call's connection, from `connect` to close.
async fn serve(shared: Arc<Shared>, stream: TcpStream, _permit: OwnedSemaphorePermit) {
    let name = shared.config.name.clone();
    let mut shutdown = shared.shutdown.subscribe();
    // Accepted just before a shutdown this task did not subscribe in time to see.
    if *shutdown.borrow_and_update() {
        return;
    }
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let reader = FramedRead::new(read, FrameDecoder::new(Direction::FromServer));
    let (connection, mut frames) = Connection::start(name.clone(), reader, write);
    let Some((call_id, parked, tracker)) = handshake(&shared, &connection).await else {
        return;
    };
    let call = Arc::new(CallConn {
        connection,
        tracker: Mutex::new(tracker),
    });
    {
        let mut calls = lock(&shared.calls);
        // The semaphore bounds the map; a second connection for the same call (FreeSWITCH
        // never makes one) replaces the first.
        calls.insert(call_id.clone(), Arc::clone(&call));
    }
    let mut open = shared.events.send(parked).await.is_ok();
    while open {
        let frame = tokio::select! {
            frame = frames.recv() => frame,
            _ = shutdown.changed() => None,
        };
        let Some(frame) = frame else { break };
        if frame.content_type() == Some("text/disconnect-notice") {
            if frame.header("Content-Disposition") == Some("linger") {
                // The call is over; its final events follow until the `disconnect` notice.
                continue;
            }
            break;
        }
        let Ok(Some(event)) = EslEvent::from_frame(&frame) else {
            continue;
        };
        let typed = lock(&call.tracker).on_event(&name, &event);
        for event in typed {
            if shared.events.send(event).await.is_err() {
                open = false;
                break;
            }
        }
    }
    {
        let mut calls = lock(&shared.calls);
        if calls.get(&call_id).is_some_and(|c| Arc::ptr_eq(c, &call)) {
            calls.remove(&call_id);
        }
    }
    let (ended, jobs) = {
        let mut tracker = lock(&call.tracker);
        (tracker.end_call(&call_id, LOST_CAUSE), tracker.fail_jobs())
    };
    for job in jobs {
        let _ = job.send(Err(SwitchError::Disconnected(name.clone())));
    }
    for event in ended {
        if shared.events.send(event).await.is_err() {
            break;
        }
    }
    // Dropping the last handle on the connection closes our side.
}

/// `connect`, then the subscriptions; the call id, its `Parked` offer and the tracker that
/// knows the call. `None` (the connection is dropped) when FreeSWITCH does not answer as a
/// `socket ... async full` connection does.
async fn handshake(
    shared: &Shared,
    connection: &Connection,
) -> Option<(String, SwitchEvent, Tracker)> {
    let config = &shared.config;
    let connect = Frame {
        line: Some("connect".into()),
        ..Frame::default()
    };
    let reply = connection
        .request(connect, config.reply_timeout)
        .await
        .ok()?;
    let (call_id, parked, tracker) = read_connect_reply(&config.name, &reply)?;
    let mut commands = vec!["myevents json".to_owned()];
    if config.linger_s > 0 {
        commands.push(format!("linger {}", config.linger_s));
    }
    commands.push(format!("event json {EXTRA_EVENTS}"));
    for command in commands {
        let frame = Frame {
            line: Some(command),
            ..Frame::default()
        };
        let reply = connection.request(frame, config.reply_timeout).await.ok()?;
        if !reply.reply_text().is_some_and(|t| t.starts_with("+OK")) {
            return None;
        }
    }
    Some((call_id, parked, tracker))
}

/// Reads the `connect` reply (a URL-encoded CHANNEL_DATA header block) into the call's
/// `Parked` offer and a tracker that knows the call, so the CHANNEL_PARK that follows is not
/// offered twice.
fn read_connect_reply(switch: &str, reply: &Frame) -> Option<(String, SwitchEvent, Tracker)> {
    let event = EslEvent::from_encoded_headers(&reply.headers).ok()?;
    if !event
        .get("Reply-Text")
        .is_some_and(|t| t.starts_with("+OK"))
    {
        return None;
    }
    let mut tracker = Tracker::default();
    let parked = tracker.offer(switch, &event)?;
    let call_id = parked.call_id()?.to_owned();
    Some((call_id, parked, tracker))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::CallInfo;
    use bytes::BytesMut;

    const CAPTURE_11: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/reference/esl-captures/11-outbound-socket-async-full.s2c.raw"
    );

    #[test]
    fn capture_11_connect_reply_parses_into_call_info() {
        let raw = std::fs::read(CAPTURE_11).unwrap();
        let mut buf = BytesMut::from(&raw[..]);
        let mut decoder = FrameDecoder::new(Direction::FromServer);
        let reply = decoder.decode(&mut buf).unwrap().unwrap();
        assert!(reply.is_reply(), "the connect reply is a command/reply");
        // A URL-encoded reply text: the outer header as sent.
        assert_eq!(reply.header("Reply-Text"), Some("%2BOK%0A"));
        let (call_id, parked, mut tracker) = read_connect_reply("fs1", &reply).unwrap();
        assert_eq!(call_id, "e3067e5e-e3fc-4e3f-a239-f7ffd5785d4f");
        let SwitchEvent::Parked(info) = parked else {
            panic!("not a Parked: {parked:?}");
        };
        assert_eq!(
            info,
            CallInfo {
                call_id: call_id.clone(),
                switch: "fs1".into(),
                core_uuid: "f8ca36f1-31e8-4097-8ab3-20cba242e133".into(),
                from_user: "+15550001111".into(),
                from_host: "127.0.0.1".into(),
                to_user: "1500".into(),
                to_host: "127.0.0.1".into(),
                caller_id_name: "ESL Lab".into(),
                caller_id_number: "+15550001111".into(),
                direction: "inbound".into(),
                answered: false,
                variables: Default::default(),
            }
        );
        // The CHANNEL_PARK that follows on the connection is not offered again, and the rest
        // of the capture's events go through the tracker as on an inbound connection.
        let mut typed = Vec::new();
        while let Some(frame) = decoder.decode(&mut buf).unwrap() {
            if let Ok(Some(event)) = EslEvent::from_frame(&frame) {
                typed.extend(tracker.on_event("fs1", &event));
            }
        }
        assert!(
            !typed.iter().any(|e| matches!(e, SwitchEvent::Parked(_))),
            "{typed:?}"
        );
        assert!(typed.contains(&SwitchEvent::Answered {
            call_id: call_id.clone()
        }));
        assert!(typed.contains(&SwitchEvent::Hangup {
            call_id,
            cause: "NORMAL_CLEARING".into()
        }));
    }

    #[test]
    fn a_refused_connect_is_no_call() {
        let mut headers = Headers::new();
        headers.push("Content-Type", "command/reply");
        headers.push("Reply-Text", "-ERR%20nope");
        let reply = Frame {
            line: None,
            headers,
            body: Bytes::new(),
        };
        assert!(read_connect_reply("fs1", &reply).is_none());
    }
}
