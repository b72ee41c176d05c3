//! ESL framing, both directions: a block of `Name: value` lines ended by an empty line, then
//! exactly `Content-Length` bytes of body when that header is present.
//!
//! FreeSWITCH writes `\n` only; we write `\n` and read `\r\n` too, as FreeSWITCH itself does.
//! Decoding is streaming: a frame may be split at any byte, and [`FrameDecoder::decode`] returns
//! `Ok(None)` until the whole frame is buffered. The header block is scanned once; while the body
//! is still arriving the parsed headers are kept, so a large body is not re-scanned per read.
//! Both the header block and the body are bounded.

use bytes::{Buf, Bytes, BytesMut};

/// Largest header block accepted. FreeSWITCH's own bound is about 10 MB, but no real frame is
/// near it: the biggest in the captures (an outbound `connect` reply) is under 8 KiB.
pub const MAX_HEADER_BYTES: usize = 256 * 1024;
/// Largest body accepted: FreeSWITCH's `MAX_CONTENT_LENGTH` for commands.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// A frame's headers in wire order, values as received (not URL-decoded).
///
/// All names and values live in one byte buffer with a span per header, rather than two
/// `String`s per header: a decoded frame's headers are the header block itself, sliced out of
/// the read buffer without a copy, so framing allocates nothing per header. The buffer is only
/// ever filled from `&str`s or from a block made UTF-8 as a whole (invalid bytes replaced in
/// place, see [`FrameDecoder`]), and every span
/// starts and ends next to an ASCII byte (`:`, ` `, `\n`, `\r`) or at the block's ends, so each
/// span is UTF-8 as well.
#[derive(Debug, Clone, Default)]
pub struct Headers {
    text: BytesMut,
    /// Per header: the name's and the value's byte ranges in `text`. Frames from FreeSWITCH
    /// carry two or three headers (events: `Content-Length` and `Content-Type`), kept inline.
    spans: SpanList,
}

type SpanList = smallvec::SmallVec<[HeaderSpan; 4]>;

/// `(name_start, name_end, value_start, value_end)` in [`Headers::text`]; `u32` because the
/// block is bounded far below 4 GiB ([`MAX_HEADER_BYTES`]), which halves the vector.
type HeaderSpan = (u32, u32, u32, u32);

impl PartialEq for Headers {
    /// Same headers in the same order; how the buffer is laid out does not matter.
    fn eq(&self, other: &Headers) -> bool {
        self.spans.len() == other.spans.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Headers {}

impl Headers {
    pub fn new() -> Headers {
        Headers::default()
    }

    /// The text at `start..end`; the empty string for a range that is not UTF-8 (cannot
    /// happen, see the type's documentation).
    fn str_at(&self, start: u32, end: u32) -> &str {
        self.text
            .get(start as usize..end as usize)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or_default()
    }

    fn name_bytes(&self, span: &HeaderSpan) -> &[u8] {
        self.text
            .get(span.0 as usize..span.1 as usize)
            .unwrap_or_default()
    }

    /// The first value of `name`, compared case-insensitively as FreeSWITCH does.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.spans
            .iter()
            .find(|s| self.name_bytes(s).eq_ignore_ascii_case(name.as_bytes()))
            .map(|s| self.str_at(s.2, s.3))
    }

    pub fn push(&mut self, name: impl AsRef<str>, value: impl AsRef<str>) {
        let (name, value) = (name.as_ref(), value.as_ref());
        let name_start = self.text.len();
        self.text.extend_from_slice(name.as_bytes());
        let name_end = self.text.len();
        self.text.extend_from_slice(value.as_bytes());
        // Built frames are small; a header past 4 GiB could not be sent anyway (the decoder's
        // bound is far lower), so saturating is only a guard against wrapping.
        let at = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        self.spans.push((
            at(name_start),
            at(name_end),
            at(name_end),
            at(self.text.len()),
        ));
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.spans
            .iter()
            .map(|s| (self.str_at(s.0, s.1), self.str_at(s.2, s.3)))
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
}

impl<N: AsRef<str>, V: AsRef<str>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        let mut headers = Headers::new();
        for (n, v) in iter {
            headers.push(n, v);
        }
        headers
    }
}

/// One message: FreeSWITCH → client (a reply, an event, a notice), or, with a `line`,
/// client → FreeSWITCH (a command).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frame {
    /// The command line of a client → server frame (`sendmsg <uuid>`); `None` for
    /// server → client frames, whose every line is a header.
    pub line: Option<String>,
    pub headers: Headers,
    pub body: Bytes,
}

impl Frame {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    pub fn content_type(&self) -> Option<&str> {
        self.header("Content-Type")
    }

    /// `command/reply` and `api/response` complete the oldest pending command; everything else
    /// (events, notices, logs) does not.
    pub fn is_reply(&self) -> bool {
        matches!(
            self.content_type(),
            Some("command/reply") | Some("api/response")
        )
    }

    /// The text a reply carries: `Reply-Text` of a `command/reply`, the body of an
    /// `api/response`.
    pub fn reply_text(&self) -> Option<&str> {
        match self.content_type()? {
            "command/reply" => self.header("Reply-Text"),
            "api/response" => std::str::from_utf8(&self.body).ok(),
            _ => None,
        }
    }

    /// Appends the frame's wire form to `out`: the line (for commands), the headers with a
    /// `Content-Length` added when there is a body, an empty line, the body.
    pub fn encode(&self, out: &mut BytesMut) {
        if let Some(line) = &self.line {
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\n");
        }
        for (name, value) in self.headers.iter() {
            if name.eq_ignore_ascii_case("Content-Length") {
                continue;
            }
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\n");
        }
        if !self.body.is_empty() {
            out.extend_from_slice(b"Content-Length: ");
            out.extend_from_slice(self.body.len().to_string().as_bytes());
            out.extend_from_slice(b"\n");
        }
        out.extend_from_slice(b"\n");
        out.extend_from_slice(&self.body);
    }

    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(256 + self.body.len());
        self.encode(&mut out);
        out.freeze()
    }
}

/// Why a byte stream is not ESL; the connection cannot continue after any of these.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("header block over {limit} bytes without an end")]
    HeadersTooLarge { limit: usize },
    #[error("Content-Length {length} is over the {limit}-byte limit")]
    BodyTooLarge { length: usize, limit: usize },
    #[error("Content-Length {0:?} is not a number")]
    BadContentLength(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Which side's frames a decoder reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// FreeSWITCH → client: every line is a header.
    FromServer,
    /// Client → FreeSWITCH: the first line is the command.
    FromClient,
}

/// A streaming decoder for one direction of an ESL connection.
///
/// One pass per header line: each line is split into its span and checked for
/// `Content-Length` as the search for the empty line reaches it, and a header block that
/// arrives in pieces is resumed at its first unscanned line. The head stays in the buffer until
/// the body is complete, so a frame costs two splits of the read buffer and no copy; the
/// decoder's state between reads is a few integers and a scratch list of spans that keeps its
/// capacity from frame to frame.
#[derive(Debug)]
pub struct FrameDecoder {
    direction: Direction,
    max_header_bytes: usize,
    max_body_bytes: usize,
    /// Where the next unscanned line of the current header block starts.
    scan_from: usize,
    /// The command line of a client frame, once scanned: its end (it starts at 0).
    line_end: Option<usize>,
    /// Spans of the header lines scanned so far.
    spans: Vec<HeaderSpan>,
    body_len: usize,
    /// Set once the empty line is found: the head's length; the body is still arriving.
    head_len: Option<usize>,
}

impl FrameDecoder {
    pub fn new(direction: Direction) -> FrameDecoder {
        FrameDecoder::with_limits(direction, MAX_HEADER_BYTES, MAX_BODY_BYTES)
    }

    pub fn with_limits(
        direction: Direction,
        max_header_bytes: usize,
        max_body_bytes: usize,
    ) -> FrameDecoder {
        FrameDecoder {
            direction,
            max_header_bytes,
            max_body_bytes,
            scan_from: 0,
            line_end: None,
            spans: Vec::with_capacity(8),
            body_len: 0,
            head_len: None,
        }
    }

    /// The next whole frame from the front of `buf`, consuming its bytes; `Ok(None)` when more
    /// bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        let head_len = match self.head_len {
            Some(head_len) => head_len,
            None => {
                if self.scan_from == 0 {
                    skip_blank_lines(buf);
                }
                let Some(head_len) = self.scan_head(buf)? else {
                    return Ok(None);
                };
                self.head_len = Some(head_len);
                head_len
            }
        };
        let frame_len = head_len + self.body_len;
        if buf.len() < frame_len {
            // Room for the rest of the body, so it arrives without repeated reallocation.
            buf.reserve(frame_len - buf.len());
            return Ok(None);
        }
        let head = buf.split_to(head_len);
        let body = if self.body_len == 0 {
            Bytes::new()
        } else {
            buf.split_to(self.body_len).freeze()
        };
        let frame = self.finish(head, body);
        Ok(Some(frame))
    }

    /// Scans the header lines not scanned yet; the head's length (with its empty line) once
    /// the empty line is there.
    fn scan_head(&mut self, buf: &BytesMut) -> Result<Option<usize>, CodecError> {
        let mut at = self.scan_from;
        while let Some(offset) = memchr::memchr(b'\n', buf.get(at..).unwrap_or_default()) {
            let newline = at + offset;
            let line_start = at;
            at = newline + 1;
            let line_end = if newline > line_start && buf[newline - 1] == b'\r' {
                newline - 1
            } else {
                newline
            };
            if line_end == line_start {
                self.scan_from = 0;
                return Ok(Some(at));
            }
            if at > self.max_header_bytes {
                return Err(self.too_large());
            }
            if self.direction == Direction::FromClient && self.line_end.is_none() {
                self.line_end = Some(line_end);
                continue;
            }
            self.scan_line(&buf[..line_end], line_start)?;
        }
        self.scan_from = at;
        if buf.len() > self.max_header_bytes {
            return Err(self.too_large());
        }
        Ok(None)
    }

    /// Records the span of the header line `block[line_start..]` and reads `Content-Length`.
    /// The value is what follows the first ':', leading spaces removed (FreeSWITCH's own
    /// parse); a line without ':' is kept as a header with an empty value.
    fn scan_line(&mut self, block: &[u8], line_start: usize) -> Result<(), CodecError> {
        let line_end = block.len();
        let line = &block[line_start..];
        let (name_end, value_start) = match memchr::memchr(b':', line) {
            Some(colon) => {
                let spaces = line[colon + 1..].iter().take_while(|&&b| b == b' ').count();
                (line_start + colon, line_start + colon + 1 + spaces)
            }
            None => (line_end, line_end),
        };
        if block[line_start..name_end].eq_ignore_ascii_case(b"Content-Length") {
            let value = &block[value_start..];
            self.body_len =
                parse_length(value).ok_or_else(|| CodecError::BadContentLength(lossy(value)))?;
            if self.body_len > self.max_body_bytes {
                return Err(CodecError::BodyTooLarge {
                    length: self.body_len,
                    limit: self.max_body_bytes,
                });
            }
        }
        // Every offset is below `max_header_bytes` (checked per line before this), which the
        // conversion can only exceed for a limit configured past 4 GiB.
        let span = |n: usize| u32::try_from(n).map_err(|_| self.too_large());
        self.spans.push((
            span(line_start)?,
            span(name_end)?,
            span(value_start)?,
            span(line_end)?,
        ));
        Ok(())
    }

    /// Builds the frame from its head (the header block, kept as the headers' buffer, no
    /// copy) and body, and resets for the next frame.
    fn finish(&mut self, head: BytesMut, body: Bytes) -> Frame {
        let line = self.line_end.take().map(|end| lossy(&head[..end]));
        self.head_len = None;
        self.body_len = 0;
        let spans = SpanList::from_slice(&self.spans);
        self.spans.clear();
        // The headers hand out `&str`s; a block that is not UTF-8 is kept as its lossy form
        // rather than failing a connection over one odd byte in a header value (FreeSWITCH
        // passes such values through from SIP).
        let text = if head.is_ascii() || std::str::from_utf8(&head).is_ok() {
            head
        } else {
            BytesMut::from(lossy_same_length(&head).as_slice())
        };
        Frame {
            line,
            headers: Headers { text, spans },
            body,
        }
    }

    fn too_large(&self) -> CodecError {
        CodecError::HeadersTooLarge {
            limit: self.max_header_bytes,
        }
    }
}

/// A decimal length, surrounding spaces allowed.
fn parse_length(value: &[u8]) -> Option<usize> {
    let digits = value.trim_ascii();
    if digits.is_empty() || digits.len() > 12 {
        return None;
    }
    digits.iter().try_fold(0usize, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + usize::from(d - b'0'))
    })
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `bytes` with every byte of an invalid UTF-8 sequence replaced by `?`, so the spans into it
/// stay where they were.
fn lossy_same_length(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.extend_from_slice(chunk.valid().as_bytes());
        out.extend(std::iter::repeat_n(b'?', chunk.invalid().len()));
    }
    out
}

impl tokio_util::codec::Decoder for FrameDecoder {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        FrameDecoder::decode(self, buf)
    }
}

/// Writes frames with [`Frame::encode`].
#[derive(Debug, Default, Clone, Copy)]
pub struct FrameEncoder;

impl tokio_util::codec::Encoder<&Frame> for FrameEncoder {
    type Error = CodecError;

    fn encode(&mut self, frame: &Frame, out: &mut BytesMut) -> Result<(), CodecError> {
        frame.encode(out);
        Ok(())
    }
}

impl tokio_util::codec::Encoder<Frame> for FrameEncoder {
    type Error = CodecError;

    fn encode(&mut self, frame: Frame, out: &mut BytesMut) -> Result<(), CodecError> {
        frame.encode(out);
        Ok(())
    }
}

/// Empty lines before a frame are skipped, as FreeSWITCH skips them before a command.
fn skip_blank_lines(buf: &mut BytesMut) {
    let blank = buf
        .iter()
        .take_while(|&&b| b == b'\n' || b == b'\r')
        .count();
    // A lone trailing `\r` may be the start of a `\r\n` frame terminator split across reads;
    // it is harmless to skip either way.
    buf.advance(blank);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(direction: Direction, bytes: &[u8]) -> Vec<Frame> {
        let mut decoder = FrameDecoder::new(direction);
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        // One byte at a time: the hardest split there is.
        for &b in bytes {
            buf.extend_from_slice(&[b]);
            while let Some(frame) = decoder.decode(&mut buf).unwrap() {
                frames.push(frame);
            }
        }
        frames
    }

    #[test]
    fn replies_events_and_bodies_split_anywhere() {
        let wire = b"Content-Type: auth/request\n\nContent-Type: api/response\nContent-Length: 4\n\n+OK\nContent-Length: 2\nContent-Type: text/event-json\n\n{}";
        let frames = decode_all(Direction::FromServer, wire);
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[0].content_type(), Some("auth/request"));
        assert_eq!(frames[1].reply_text(), Some("+OK\n"));
        assert!(frames[1].is_reply());
        assert_eq!(&frames[2].body[..], b"{}");
        assert!(!frames[2].is_reply());
    }

    #[test]
    fn crlf_and_leading_blank_lines_are_accepted() {
        let frames = decode_all(
            Direction::FromClient,
            b"\r\n\nauth ClueCon\r\n\r\nsendmsg abc\r\ncall-command: execute\r\nContent-Length: 3\r\n\r\nxyz",
        );
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].line.as_deref(), Some("auth ClueCon"));
        assert_eq!(frames[1].line.as_deref(), Some("sendmsg abc"));
        assert_eq!(frames[1].header("Call-Command"), Some("execute"));
        assert_eq!(&frames[1].body[..], b"xyz");
    }

    #[test]
    fn encode_then_decode_is_identity() {
        let frame = Frame {
            line: Some("sendmsg 1234".into()),
            headers: [
                ("call-command", "execute"),
                ("execute-app-name", "playback"),
            ]
            .into_iter()
            .collect(),
            body: Bytes::from_static(b"multi\nline"),
        };
        let frames = decode_all(Direction::FromClient, &frame.to_bytes());
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].line, frame.line);
        assert_eq!(frames[0].header("execute-app-name"), Some("playback"));
        assert_eq!(frames[0].header("content-length"), Some("10"));
        assert_eq!(frames[0].body, frame.body);
    }

    #[test]
    fn a_header_that_is_not_utf8_is_kept_lossy_and_the_connection_goes_on() {
        let mut wire = b"Content-Type: command/reply\nReply-Text: +OK caf".to_vec();
        wire.extend_from_slice(&[0xe9, 0xff]);
        wire.extend_from_slice(b"\nX-After: yes\n\nContent-Type: auth/request\n\n");
        let frames = decode_all(Direction::FromServer, &wire);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].reply_text(), Some("+OK caf??"));
        assert_eq!(frames[0].header("x-after"), Some("yes"));
        assert_eq!(frames[1].content_type(), Some("auth/request"));
    }

    #[test]
    fn limits_are_errors_not_allocations() {
        let mut decoder = FrameDecoder::with_limits(Direction::FromServer, 64, 1024);
        let mut buf = BytesMut::from(&b"X-Long: "[..]);
        buf.extend_from_slice(&[b'a'; 100]);
        assert!(matches!(
            decoder.decode(&mut buf),
            Err(CodecError::HeadersTooLarge { limit: 64 })
        ));
        let mut decoder = FrameDecoder::with_limits(Direction::FromServer, 64, 1024);
        let mut buf = BytesMut::from(&b"Content-Length: 5000\n\n"[..]);
        assert!(matches!(
            decoder.decode(&mut buf),
            Err(CodecError::BodyTooLarge { length: 5000, .. })
        ));
        let mut buf = BytesMut::from(&b"Content-Length: five\n\n"[..]);
        assert!(matches!(
            FrameDecoder::new(Direction::FromServer).decode(&mut buf),
            Err(CodecError::BadContentLength(_))
        ));
    }
}
