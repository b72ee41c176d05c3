//! The `socket <host:port> async full` dialplan app (freeswitch-esl.md §3): the simulated
//! FreeSWITCH connects to a controller that listens, and that connection controls one channel.
//!
//! As on FreeSWITCH (capture 11): nothing is sent until the controller's `connect`, whose reply
//! is the channel's CHANNEL_DATA as one URL-encoded header block ending in
//! `Content-Type: command/reply`, `Reply-Text: %2BOK%0A`, `Socket-Mode: async`,
//! `Control: full`. The call then parks. Every later command goes through the inbound server's
//! own handling ([`server::handle`]), with the connection registered in the hub as controlling
//! the channel: `myevents` without a uuid binds it, `sendmsg` without a uuid addresses it,
//! `linger` is allowed, `bgapi` jobs are owned by it (`Job-Owner-UUID`). At hang-up, after
//! CHANNEL_HANGUP_COMPLETE: with linger, a `linger` disconnect notice, the linger time (scaled
//! by `time_scale`), then the `disconnect` notice and close; without, the `disconnect` notice
//! and close at once. Only then is the channel destroyed, so the connection never sees its
//! CHANNEL_DESTROY. If the controller goes away first, the `socket` app returns and, nothing
//! following it in the dialplan, the call is hung up `NORMAL_CLEARING` (§3.5).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::codec::FramedRead;

use super::Inner;
use super::call::Channel;
use super::server::{self, After};
use crate::esl::event::url_encode;
use crate::esl::{Direction, EslEvent, Frame, FrameDecoder, Headers};

/// How long the TCP connect to the controller may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long FreeSWITCH waits for `connect` (ES:2712).
const CONNECT_WAIT: Duration = Duration::from_secs(25);

/// The channel's side of its controlling connection.
pub(crate) struct Link {
    hung_up: Option<oneshot::Sender<()>>,
    released: oneshot::Receiver<()>,
}

impl Link {
    /// The channel has sent CHANNEL_HANGUP_COMPLETE: the connection lingers (or not) and
    /// closes; returns once it has, so the channel can be destroyed.
    pub(crate) async fn hung_up(mut self) {
        if let Some(tx) = self.hung_up.take() {
            let _ = tx.send(());
        }
        // An error means the connection is already gone.
        let _ = self.released.await;
    }
}

/// Connects to the controller at `target` and waits for its `connect`; `None` when it cannot
/// be reached, sends something else first or nothing in time (the `socket` app then returns).
pub(crate) async fn connect(
    inner: &Arc<Inner>,
    ch: &Arc<Channel>,
    target: SocketAddr,
    channel_data: EslEvent,
) -> Option<Link> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target))
        .await
        .ok()?
        .ok()?;
    let _ = stream.set_nodelay(true);
    let (id, tx, rx, mut kill) = server::register(inner, Some(ch.id.clone()))?;
    let (read, write) = stream.into_split();
    inner.runtime.spawn(server::writer(write, rx, kill.clone()));
    let mut frames = FramedRead::new(read, FrameDecoder::new(Direction::FromClient));
    // FreeSWITCH says nothing first, and writes no reply to a first command other than
    // `connect` (freeswitch-esl.md §3.2).
    let deadline = tokio::time::Instant::now() + CONNECT_WAIT;
    let connected = loop {
        let next = tokio::select! {
            _ = kill.changed() => break false,
            next = tokio::time::timeout_at(deadline, frames.next()) => next,
        };
        match next {
            Ok(Some(Ok(frame))) if frame.line.as_deref().map(str::trim) == Some("connect") => {
                break true;
            }
            Ok(Some(Ok(_))) => {}
            _ => break false,
        }
    };
    if !connected || tx.send(connect_reply(inner, channel_data)).await.is_err() {
        server::unregister(inner, id);
        return None;
    }
    let (hung_tx, hung_rx) = oneshot::channel();
    let (released_tx, released_rx) = oneshot::channel();
    let session = Session {
        inner: inner.clone(),
        ch: ch.clone(),
        id,
        tx,
    };
    inner
        .runtime
        .spawn(session.run(frames, kill, hung_rx, released_tx));
    Some(Link {
        hung_up: Some(hung_tx),
        released: released_rx,
    })
}

struct Session {
    inner: Arc<Inner>,
    ch: Arc<Channel>,
    id: u64,
    tx: mpsc::Sender<Bytes>,
}

impl Session {
    async fn run(
        self,
        mut frames: FramedRead<OwnedReadHalf, FrameDecoder>,
        mut kill: watch::Receiver<bool>,
        mut hung: oneshot::Receiver<()>,
        released: oneshot::Sender<()>,
    ) {
        let mut hung_up = false;
        // While lingering for a number of seconds: when to disconnect.
        let mut linger_until: Option<tokio::time::Instant> = None;
        loop {
            let lingering = linger_until.is_some();
            let until = linger_until.unwrap_or_else(tokio::time::Instant::now);
            tokio::select! {
                // A network failure (drop_connections, restart): cut without a notice.
                _ = kill.changed() => break,
                signal = &mut hung, if !hung_up => {
                    hung_up = true;
                    if signal.is_err() {
                        // The channel's task is gone (restart, shutdown).
                        break;
                    }
                    match server::linger(&self.inner, self.id) {
                        None => {
                            self.send(self.disconnect_notice()).await;
                            break;
                        }
                        Some(secs) => {
                            self.send(self.linger_notice(secs)).await;
                            if secs > 0 {
                                let real = secs as f64 * self.inner.time_scale();
                                let real = Duration::try_from_secs_f64(real)
                                    .unwrap_or(Duration::ZERO);
                                linger_until = Some(tokio::time::Instant::now() + real);
                            }
                            // Forever: until the controller closes.
                        }
                    }
                }
                _ = tokio::time::sleep_until(until), if lingering => {
                    self.send(self.disconnect_notice()).await;
                    break;
                }
                next = frames.next() => {
                    // The controller closed, or sent what is not ESL.
                    let Some(Ok(frame)) = next else { break };
                    if let After::Close = server::handle(&self.inner, self.id, &frame, &self.tx).await {
                        self.send(server::goodbye()).await;
                        break;
                    }
                }
            }
        }
        server::unregister(&self.inner, self.id);
        if !hung_up {
            // The controller is gone while the call is up: park returns, the `socket` app
            // returns, nothing follows it in the dialplan (§3.5).
            self.ch.kill("NORMAL_CLEARING");
        }
        // The writer ends once the queued frames are out and every sender is gone.
        drop(self.tx);
        let _ = released.send(());
    }

    async fn send(&self, bytes: Bytes) {
        let _ = self.tx.send(bytes).await;
    }

    /// `Content-Disposition: linger` (capture 11 frame 26; ES:1466-1492).
    fn linger_notice(&self, secs: i64) -> Bytes {
        let name = self.ch.state().name.clone();
        let mut out = String::with_capacity(256);
        out.push_str("Content-Type: text/disconnect-notice\n");
        out.push_str(&format!("Controlled-Session-UUID: {}\n", self.ch.id));
        out.push_str("Content-Disposition: linger\n");
        out.push_str(&format!("Channel-Name: {name}\n"));
        out.push_str(&format!("Linger-Time: {secs}\n"));
        // Unlike `Frame::encode`, FreeSWITCH writes an explicit zero length here.
        out.push_str("Content-Length: 0\n\n");
        Bytes::from(out)
    }

    /// `Content-Disposition: disconnect` with the goodbye body (capture 11 frame 27).
    fn disconnect_notice(&self) -> Bytes {
        let mut headers = Headers::new();
        headers.push("Content-Type", "text/disconnect-notice");
        headers.push("Controlled-Session-UUID", self.ch.id.clone());
        headers.push("Content-Disposition", "disconnect");
        Frame {
            line: None,
            headers,
            body: Bytes::from_static(server::GOODBYE.as_bytes()),
        }
        .to_bytes()
    }
}

/// The `connect` reply: the channel data as URL-encoded headers, then the reply headers
/// (ES:2023-2047; capture 11 frame 1). No `Content-Length`, `Content-Type` near the end.
fn connect_reply(inner: &Inner, mut ev: EslEvent) -> Bytes {
    ev.set("Core-UUID", inner.core_uuid());
    ev.set("Event-Calling-File", "mod_event_socket.c");
    ev.set("Event-Calling-Function", "parse_command");
    ev.set("Event-Calling-Line-Number", "2021");
    let mut out = String::with_capacity(8 * 1024);
    for (name, value) in ev.headers() {
        out.push_str(name);
        out.push_str(": ");
        out.push_str(&url_encode(value));
        out.push('\n');
    }
    out.push_str("Content-Type: command/reply\n");
    out.push_str("Reply-Text: %2BOK%0A\n");
    out.push_str("Socket-Mode: async\n");
    out.push_str("Control: full\n\n");
    Bytes::from(out)
}
