//! `http_put {param=val}<url> <file>` (mod_http_cache, DESIGN §5): how pivot gets a
//! recording off the switch. The simulator has no audio on disk, so it remembers what `record`
//! "wrote" and PUTs a WAV of silence of that length instead, the way mod_http_cache PUTs the
//! file: one HTTP/1.1 request, `Content-Type: application/octet-stream`, and `+OK <status>`.
//!
//! Replies follow FreeSWITCH's `+OK %ld` / `-ERR %ld` (the HTTP status, 0 when no response
//! came), with a reason appended after a failure's status because FreeSWITCH only logs it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Inner, MAX_RECORDINGS, lock};

const SYNTAX: &str = "{param=val}<url> <file>";
/// The whole upload (connect, send, response) is bounded: a `bgapi` job must end, and an
/// `api` holds its connection's reader meanwhile.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Longer recordings are sent as this much silence, so one upload stays small and quick.
const MAX_WAV_MS: u64 = 60_000;
const SAMPLE_RATE: u32 = 8_000;
const WAV_HEADER_LEN: usize = 44;
/// Bytes of the response read while looking for its status line.
const MAX_RESPONSE_HEAD: usize = 8 * 1024;
const MAX_REASON_CHARS: usize = 128;
/// The body is streamed from this instead of being built: memory per upload stays constant
/// however many jobs run.
static SILENCE: [u8; 8 * 1024] = [0; 8 * 1024];

/// A file the `record` app made.
#[derive(Debug, Clone)]
pub(crate) struct Recording {
    pub duration_ms: u64,
    pub call_id: String,
    generation: u64,
}

/// Recorded files by path, at most [`MAX_RECORDINGS`], oldest forgotten first.
#[derive(Default)]
pub(crate) struct Recordings {
    by_path: HashMap<String, Recording>,
    /// Paths in recording order with the generation they were recorded at: a path recorded
    /// again gets a new entry and its old one is skipped at eviction, so re-recording costs
    /// O(1) instead of a search of the queue.
    order: VecDeque<(String, u64)>,
    next_generation: u64,
}

impl Recordings {
    fn insert(&mut self, path: &str, duration_ms: u64, call_id: &str) {
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1);
        self.order.push_back((path.to_owned(), generation));
        self.by_path.insert(
            path.to_owned(),
            Recording {
                duration_ms,
                call_id: call_id.to_owned(),
                generation,
            },
        );
        while self.order.len() > MAX_RECORDINGS {
            if let Some((old, generation)) = self.order.pop_front()
                && self
                    .by_path
                    .get(&old)
                    .is_some_and(|r| r.generation == generation)
            {
                self.by_path.remove(&old);
            }
        }
    }

    fn get(&self, path: &str) -> Option<Recording> {
        self.by_path.get(path).cloned()
    }
}

/// Called by `record` before RECORD_STOP, so a controller that uploads on RECORD_STOP (or on
/// the app's completion) finds the file.
pub(crate) fn remember(inner: &Inner, path: &str, duration_ms: u64, call_id: &str) {
    lock(&inner.recordings).insert(path, duration_ms, call_id);
}

pub(crate) async fn http_put(inner: &Arc<Inner>, args: &str) -> String {
    let argv: Vec<&str> = args.split_whitespace().collect();
    let [url_arg, path] = argv[..] else {
        // FreeSWITCH prints `USAGE: ...` without `-ERR`, which a client would take for
        // success; the simulator marks it as the failure it is.
        return format!("-ERR USAGE: {SYNTAX}\n");
    };
    // `{profile=...}` picks credentials (S3, Azure) on FreeSWITCH; plain PUTs need none.
    let url = match url_arg.strip_prefix('{') {
        Some(rest) => rest.split_once('}').map_or("", |(_, u)| u),
        None => url_arg,
    };
    // FreeSWITCH opens the file before it looks at the URL, so a missing file wins.
    let Some(recording) = lock(&inner.recordings).get(path) else {
        return format!("-ERR 0 {path} does not exist\n");
    };
    let target = match Target::parse(url) {
        Ok(t) => t,
        Err(why) => return format!("-ERR 0 {why}\n"),
    };
    let outcome = tokio::time::timeout(UPLOAD_TIMEOUT, put(&target, recording.duration_ms)).await;
    let (reply, result) = match outcome {
        // mod_http_cache counts exactly these as saved (`http_put`), not every 2xx.
        Ok(Ok((status @ (200 | 201 | 202 | 204), _))) => {
            (format!("+OK {status}\n"), status.to_string())
        }
        Ok(Ok((status, reason))) => (format!("-ERR {status} {reason}\n"), status.to_string()),
        Ok(Err(why)) => (format!("-ERR 0 {why}\n"), format!("failed: {why}")),
        Err(_) => {
            let why = format!(
                "no response from {} within {} s",
                target.authority,
                UPLOAD_TIMEOUT.as_secs()
            );
            (format!("-ERR 0 {why}\n"), format!("failed: {why}"))
        }
    };
    if let Some(channel) = inner.channel(&recording.call_id) {
        channel.note_external(inner.time_scale(), "uploaded", |ev| {
            ev.file = Some(path.to_owned());
            ev.target = Some(url.to_owned());
            ev.result = Some(result);
        });
    }
    reply
}

/// Where an `http://` URL points.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    /// For connecting: a name or an address, IPv6 without brackets.
    host: String,
    port: u16,
    /// For the `Host` header: as the URL wrote it.
    authority: String,
    /// The request target: path and query, never empty.
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, String> {
        if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err("invalid URL".to_owned());
        }
        let scheme_end = url.find("://").unwrap_or(0);
        let scheme = url[..scheme_end].to_ascii_lowercase();
        if scheme == "https" {
            return Err(format!(
                "{url}: the simulator only uploads over plain http, not https"
            ));
        }
        if scheme != "http" {
            return Err(format!("{url}: not an http:// URL"));
        }
        let rest = &url[scheme_end + 3..];
        let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(split);
        let tail = tail.split('#').next().unwrap_or("");
        let path = if tail.starts_with('/') {
            tail.to_owned()
        } else {
            format!("/{tail}")
        };
        if authority.contains('@') {
            return Err(format!(
                "{url}: credentials in the URL are not supported by the simulator"
            ));
        }
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6
                    .split_once(']')
                    .ok_or_else(|| format!("{url}: bad host"))?;
                (host, after.strip_prefix(':'))
            }
            None => match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        let port = match port {
            Some(p) => p.parse::<u16>().map_err(|_| format!("{url}: bad port"))?,
            None => 80,
        };
        if host.is_empty() || port == 0 {
            return Err(format!("{url}: bad host"));
        }
        Ok(Target {
            host: host.to_owned(),
            port,
            authority: authority.to_owned(),
            path,
        })
    }
}

/// One PUT; the final status and reason, or why there is none. No redirect is followed
/// (mod_http_cache lets curl follow them; a controller's upload URL does not redirect).
async fn put(t: &Target, duration_ms: u64) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect((t.host.as_str(), t.port))
        .await
        .map_err(|e| format!("connect to {} failed: {e}", t.authority))?;
    let samples = duration_ms.min(MAX_WAV_MS) * u64::from(SAMPLE_RATE) / 1000;
    let data_len = samples * 2;
    let content_length = WAV_HEADER_LEN as u64 + data_len;
    let mut head = format!(
        "PUT {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: freeswitch-http-cache/1.0\r\nAccept: */*\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {content_length}\r\n\
         Connection: close\r\n\r\n",
        t.path, t.authority
    )
    .into_bytes();
    head.extend_from_slice(&wav_header(data_len));
    let sent = send(&mut stream, &head, data_len).await;
    // Read even when sending failed: a server may answer (413, 401...) and close before it
    // took the whole body, and its status says more than a broken pipe.
    match (read_status(&mut stream).await, sent) {
        (Ok(Some(status)), _) => Ok(status),
        (_, Err(e)) => Err(format!("sending to {} failed: {e}", t.authority)),
        (Err(e), Ok(())) => Err(format!(
            "reading the response of {} failed: {e}",
            t.authority
        )),
        (Ok(None), Ok(())) => Err(format!("no HTTP response from {}", t.authority)),
    }
}

async fn send(stream: &mut TcpStream, head: &[u8], data_len: u64) -> std::io::Result<()> {
    stream.write_all(head).await?;
    let mut left = data_len;
    while left > 0 {
        let n = left.min(SILENCE.len() as u64) as usize;
        stream.write_all(&SILENCE[..n]).await?;
        left -= n as u64;
    }
    stream.flush().await
}

/// The first final (non-1xx) status line; `None` if the peer closed first, sent something
/// else, or sent more than [`MAX_RESPONSE_HEAD`] bytes without one.
async fn read_status(stream: &mut TcpStream) -> std::io::Result<Option<(u16, String)>> {
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(line_end) = buf.iter().position(|b| *b == b'\n') {
            match parse_status_line(&buf[..line_end]) {
                None => return Ok(None),
                Some((code, _)) if code < 200 => {
                    // An interim response (100 Continue): skip its head, the final one follows.
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        continue;
                    }
                }
                Some(status) => return Ok(Some(status)),
            }
        }
        let room = MAX_RESPONSE_HEAD.saturating_sub(buf.len()).min(chunk.len());
        if room == 0 {
            return Ok(None);
        }
        let n = stream.read(&mut chunk[..room]).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// `HTTP/1.1 201 Created` → `(201, "Created")`; the reason is cleaned up to go in a one-line
/// api reply.
fn parse_status_line(line: &[u8]) -> Option<(u16, String)> {
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end_matches('\r').splitn(3, ' ');
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    let code = code
        .parse::<u16>()
        .ok()
        .filter(|c| (100..=599).contains(c))?;
    let reason: String = parts
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_REASON_CHARS)
        .collect();
    Some((code, reason.trim().to_owned()))
}

/// A canonical 44-byte RIFF/WAVE header: PCM, 16-bit, mono, 8 kHz. An `.mp3` path gets these
/// WAV bytes too: the simulator has no encoder, and the upload only has to carry a playable
/// file of the right length.
fn wav_header(data_len: u64) -> [u8; WAV_HEADER_LEN] {
    // At most MAX_WAV_MS of audio, far below u32::MAX bytes.
    let data_len = u32::try_from(data_len).unwrap_or(u32::MAX - 36);
    let channels: u16 = 1;
    let bits: u16 = 16;
    let block_align = channels * bits / 8;
    let byte_rate = SAMPLE_RATE * u32::from(block_align);
    let mut h = [0u8; WAV_HEADER_LEN];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&(36 + data_len).to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes());
    h[22..24].copy_from_slice(&channels.to_le_bytes());
    h[24..28].copy_from_slice(&SAMPLE_RATE.to_le_bytes());
    h[28..32].copy_from_slice(&byte_rate.to_le_bytes());
    h[32..34].copy_from_slice(&block_align.to_le_bytes());
    h[34..36].copy_from_slice(&bits.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data_len.to_le_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_like_curl_would_use_them() {
        let t = Target::parse("http://127.0.0.1:8080/rec.wav?a=1#frag").unwrap();
        assert_eq!(
            t,
            Target {
                host: "127.0.0.1".into(),
                port: 8080,
                authority: "127.0.0.1:8080".into(),
                path: "/rec.wav?a=1".into(),
            }
        );
        let t = Target::parse("HTTP://[::1]/").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 80));
        assert_eq!(Target::parse("http://example.com?x").unwrap().path, "/?x");
        assert!(
            Target::parse("https://example.com/x")
                .unwrap_err()
                .contains("plain http")
        );
        assert!(Target::parse("ftp://example.com/x").is_err());
        assert!(Target::parse("http://u:p@example.com/x").is_err());
        assert!(Target::parse("http://example.com:99999/x").is_err());
        assert!(Target::parse("http:///x").is_err());
    }

    #[test]
    fn status_lines() {
        assert_eq!(
            parse_status_line(b"HTTP/1.1 201 Created\r"),
            Some((201, "Created".into()))
        );
        assert_eq!(
            parse_status_line(b"HTTP/1.0 204\r"),
            Some((204, String::new()))
        );
        assert_eq!(parse_status_line(b"SSH-2.0-OpenSSH"), None);
        assert_eq!(parse_status_line(b"HTTP/1.1 2000 x"), None);
    }

    #[test]
    fn wav_header_is_canonical() {
        let h = wav_header(16_000);
        assert_eq!(&h[0..4], b"RIFF");
        assert_eq!(u32::from_le_bytes([h[4], h[5], h[6], h[7]]), 36 + 16_000);
        assert_eq!(&h[8..16], b"WAVEfmt ");
        assert_eq!(u32::from_le_bytes([h[24], h[25], h[26], h[27]]), 8_000);
        assert_eq!(u32::from_le_bytes([h[28], h[29], h[30], h[31]]), 16_000);
        assert_eq!(u32::from_le_bytes([h[40], h[41], h[42], h[43]]), 16_000);
    }

    #[test]
    fn recordings_are_bounded_and_rerecording_refreshes() {
        let mut r = Recordings::default();
        r.insert("/keep", 1, "c");
        for i in 0..MAX_RECORDINGS {
            if i == MAX_RECORDINGS / 2 {
                r.insert("/keep", 2, "c");
            }
            r.insert(&format!("/f{i}"), 1, "c");
        }
        assert!(r.by_path.len() <= MAX_RECORDINGS);
        assert!(r.order.len() <= MAX_RECORDINGS);
        assert_eq!(r.get("/keep").map(|x| x.duration_ms), Some(2));
        assert!(r.get("/f0").is_none());
        assert!(r.get(&format!("/f{}", MAX_RECORDINGS - 1)).is_some());
    }
}
