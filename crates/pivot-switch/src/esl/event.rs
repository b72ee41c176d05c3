//! FreeSWITCH events: the body of a `text/event-json`, `text/event-plain` or `text/event-xml`
//! frame, decoded into one [`EslEvent`] whatever the format, and encoded back (the simulator
//! speaks all three).
//!
//! One model for all three formats, so that code above never cares which was subscribed:
//!
//! - Header values are fully decoded: no URL-encoding (plain, XML) and no XML escaping left.
//! - The event body is [`EslEvent::body`]. The `Content-Length` FreeSWITCH writes next to a body
//!   (JSON key, plain inner header, XML element) is framing, not an event header, and is dropped.
//!   Headers a client put into the event itself stay, such as the lower-case `content-length`
//!   that `sendevent` echoes.
//! - An empty body is no body. FreeSWITCH's plain and XML serialisers write nothing for an empty
//!   body, so only JSON could tell the two apart.
//! - Multi-valued (array) headers are one value in FreeSWITCH's own `ARRAY::v1|:v2` form, which
//!   is what the plain format carries. A JSON array is joined into that form, and adjacent
//!   repeated XML elements (how `switch_event_xmlize` writes an array) are merged into it; the
//!   encoders split it again. A one-element array therefore reads back as a plain value from XML.
//! - Plain `_undef_` (how FreeSWITCH writes an empty value) decodes to the empty string.
//!
//! The encoders write what FreeSWITCH writes, byte for byte against the captures, with one
//! deliberate difference: FreeSWITCH leaves a `%` that is already followed by two upper-case hex
//! digits unencoded (`double_encode = false`), so a value holding `%41` arrives as `A`. We encode
//! every `%`, so that every event survives `to_frame` → `from_frame` unchanged.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use percent_encoding::percent_decode_str;
use quick_xml::Reader;
use quick_xml::events::Event;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::frame::{Frame, Headers};

/// Most headers accepted in one event. A real CHANNEL_EXECUTE_COMPLETE has about 130, a channel
/// with many variables a few hundred; the bound keeps a hostile or broken peer from making one
/// event cost unbounded memory beyond the frame's own byte limit.
pub const MAX_EVENT_HEADERS: usize = 4096;

/// How FreeSWITCH marks a multi-valued header in the plain format, and the separator it puts
/// between the values.
const ARRAY_PREFIX: &str = "ARRAY::";
const ARRAY_SEPARATOR: &str = "|:";

/// Why an event frame's body could not be decoded. The connection can go on: the frame was
/// delimited correctly, only its content is wrong.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("text/event-json body is not a flat JSON object of strings: {0}")]
    Json(#[source] serde_json::Error),
    #[error("text/event-xml body is not well-formed XML: {0}")]
    Xml(#[source] quick_xml::Error),
    #[error("text/event-xml body has <{found}> where <{expected}> was expected")]
    XmlUnexpectedElement {
        expected: &'static str,
        found: String,
    },
    #[error("text/event-xml body ends inside an element")]
    XmlTruncated,
    #[error("text/event-xml body has an unknown entity &{0};")]
    XmlUnknownEntity(String),
    #[error("text/event-plain header line {0:?} has no ':'")]
    PlainMalformedLine(String),
    #[error("inner Content-Length {0:?} is not a number")]
    BadContentLength(String),
    #[error("inner Content-Length is {declared} but only {available} body bytes follow")]
    TruncatedBody { declared: usize, available: usize },
    #[error("event has more than {limit} headers")]
    TooManyHeaders { limit: usize },
}

/// One event: its headers (values decoded: no URL-encoding left) in wire order, and its body.
///
/// A real event has 20 to 200 headers. Rather than two strings per header, all names and values
/// live in one buffer, with offsets per header: decoding an event costs a few allocations instead
/// of a few hundred, which is most of the decoding time otherwise.
#[derive(Clone, Default)]
pub struct EslEvent {
    /// Header names and values, back to back (plus stale values that `set` replaced).
    text: String,
    /// Per header in wire order: the name's and the value's byte ranges in `text`.
    spans: Vec<Span>,
    body: Option<String>,
}

/// `(name_start, name_end, value_start, value_end)` in [`EslEvent::text`].
type Span = (usize, usize, usize, usize);

impl PartialEq for EslEvent {
    /// Same headers in the same order and the same body; how the buffer is laid out does not
    /// matter.
    fn eq(&self, other: &EslEvent) -> bool {
        self.spans.len() == other.spans.len()
            && self.body == other.body
            && self.headers().eq(other.headers())
    }
}

impl Eq for EslEvent {}

impl fmt::Debug for EslEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EslEvent")
            .field("headers", &self.headers().collect::<Vec<_>>())
            .field("body", &self.body)
            .finish()
    }
}

/// The event serialisations FreeSWITCH offers (`event json|plain|xml ...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventFormat {
    Json,
    Plain,
    Xml,
}

impl EventFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            EventFormat::Json => "text/event-json",
            EventFormat::Plain => "text/event-plain",
            EventFormat::Xml => "text/event-xml",
        }
    }

    pub fn keyword(self) -> &'static str {
        match self {
            EventFormat::Json => "json",
            EventFormat::Plain => "plain",
            EventFormat::Xml => "xml",
        }
    }

    pub fn from_keyword(keyword: &str) -> Option<EventFormat> {
        match keyword.to_ascii_lowercase().as_str() {
            "json" => Some(EventFormat::Json),
            "plain" => Some(EventFormat::Plain),
            "xml" => Some(EventFormat::Xml),
            _ => None,
        }
    }

    pub fn from_content_type(content_type: &str) -> Option<EventFormat> {
        match content_type {
            "text/event-json" => Some(EventFormat::Json),
            "text/event-plain" => Some(EventFormat::Plain),
            "text/event-xml" => Some(EventFormat::Xml),
            _ => None,
        }
    }
}

impl EslEvent {
    pub fn new(name: &str) -> EslEvent {
        let mut event = EslEvent::default();
        event.push("Event-Name", name);
        event
    }

    /// Appends a header, whatever headers already exist (FreeSWITCH repeats some).
    pub fn push(&mut self, name: &str, value: &str) {
        let name_start = self.text.len();
        self.text.push_str(name);
        let name_end = self.text.len();
        self.text.push_str(value);
        self.spans
            .push((name_start, name_end, name_end, self.text.len()));
    }

    /// An empty event with room for `text` bytes of names and values and `headers` headers:
    /// the simulator builds ~100-header events, and growing the buffers step by step costs a
    /// copy per doubling.
    pub(crate) fn with_capacity(text: usize, headers: usize) -> EslEvent {
        EslEvent {
            text: String::with_capacity(text),
            spans: Vec::with_capacity(headers),
            body: None,
        }
    }

    /// Appends a header named `prefix` + `name` (`variable_<name>`) without building the name
    /// as a string of its own first.
    pub(crate) fn push_prefixed(&mut self, prefix: &str, name: &str, value: &str) {
        let name_start = self.text.len();
        self.text.push_str(prefix);
        self.text.push_str(name);
        let name_end = self.text.len();
        self.text.push_str(value);
        self.spans
            .push((name_start, name_end, name_end, self.text.len()));
    }

    /// Appends a header with a decimal value, formatted straight into the buffer.
    pub(crate) fn push_u64(&mut self, name: &str, value: u64) {
        let mut digits = [0u8; 20];
        self.push(name, format_u64(value, &mut digits));
    }

    /// The text at `start..end`; the empty string for a range that is not one (cannot happen:
    /// spans are only made from pushed text).
    fn slice(&self, start: usize, end: usize) -> &str {
        self.text.get(start..end).unwrap_or_default()
    }

    fn name_at(&self, span: &Span) -> &str {
        self.slice(span.0, span.1)
    }

    fn value_at(&self, span: &Span) -> &str {
        self.slice(span.2, span.3)
    }

    /// `Event-Name`.
    pub fn name(&self) -> Option<&str> {
        self.get("Event-Name")
    }

    /// A header by its exact name, falling back to a case-insensitive match (FreeSWITCH emits
    /// some logical headers in more than one case).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.spans
            .iter()
            .find(|s| self.name_at(s) == name)
            .or_else(|| {
                self.spans
                    .iter()
                    .find(|s| self.name_at(s).eq_ignore_ascii_case(name))
            })
            .map(|s| self.value_at(s))
    }

    /// A channel variable: the `variable_<name>` header.
    pub fn variable(&self, name: &str) -> Option<&str> {
        let key = format!("variable_{name}");
        self.get(&key)
    }

    /// `Unique-ID`: the channel the event is about.
    pub fn unique_id(&self) -> Option<&str> {
        self.get("Unique-ID")
    }

    pub fn body(&self) -> Option<&str> {
        self.body.as_deref()
    }

    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.spans
            .iter()
            .map(|s| (self.name_at(s), self.value_at(s)))
    }

    /// Sets a header, replacing an existing one of the same name.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        let value = value.into();
        match self.spans.iter().position(|s| self.name_at(s) == name) {
            Some(i) => {
                // The old value stays in the buffer, unreferenced; `set` is for building
                // events, not for rewriting one in a loop.
                let start = self.text.len();
                self.text.push_str(&value);
                let end = self.text.len();
                if let Some(span) = self.spans.get_mut(i) {
                    (span.2, span.3) = (start, end);
                }
            }
            None => self.push(&name, &value),
        }
    }

    /// Sets the body; an empty one clears it (see the module documentation).
    pub fn set_body(&mut self, body: impl Into<String>) {
        let body = body.into();
        self.body = (!body.is_empty()).then_some(body);
    }

    /// Builds an event from decoded parts (used by the decoders). An empty body is no body.
    pub fn from_parts(headers: Vec<(String, String)>, body: Option<String>) -> EslEvent {
        let mut event = EslEvent {
            text: String::with_capacity(headers.iter().map(|(n, v)| n.len() + v.len()).sum()),
            spans: Vec::with_capacity(headers.len()),
            body: None,
        };
        for (n, v) in &headers {
            event.push(n, v);
        }
        event.body = body.filter(|b| !b.is_empty());
        event
    }

    /// The event a frame carries: `Ok(None)` when its `Content-Type` is not one of the three
    /// event types (replies, notices, logs, anything unknown).
    pub fn from_frame(frame: &Frame) -> Result<Option<EslEvent>, EventError> {
        let Some(format) = frame
            .content_type()
            .and_then(EventFormat::from_content_type)
        else {
            return Ok(None);
        };
        EslEvent::decode(format, &frame.body).map(Some)
    }

    /// Decodes an event body in the given format.
    pub fn decode(format: EventFormat, body: &[u8]) -> Result<EslEvent, EventError> {
        match format {
            EventFormat::Json => decode_json(body),
            EventFormat::Plain => decode_plain(body),
            EventFormat::Xml => decode_xml(body),
        }
    }

    /// The event serialised into the headers of an outbound-socket `connect` reply (a
    /// CHANNEL_DATA event whose values are URL-encoded, framing headers included). Every header
    /// is kept, `Content-Type`, `Reply-Text`, `Socket-Mode` and `Control` too.
    pub fn from_encoded_headers(headers: &Headers) -> Result<EslEvent, EventError> {
        if headers.len() > MAX_EVENT_HEADERS {
            return Err(EventError::TooManyHeaders {
                limit: MAX_EVENT_HEADERS,
            });
        }
        let mut event = EslEvent::default();
        for (n, v) in headers.iter() {
            event.push_decoded(n, v);
        }
        Ok(event)
    }

    /// Appends a header whose value is URL-encoded, decoding it straight into the buffer.
    fn push_decoded(&mut self, name: &str, encoded: &str) {
        let name_start = self.text.len();
        self.text.push_str(name);
        let name_end = self.text.len();
        push_url_decoded(&mut self.text, encoded);
        self.spans
            .push((name_start, name_end, name_end, self.text.len()));
    }

    /// The frame FreeSWITCH would send for this event in `format`: `Content-Length` and
    /// `Content-Type` in FreeSWITCH's order, then the serialised event.
    pub fn to_frame(&self, format: EventFormat) -> Frame {
        let body = match format {
            EventFormat::Json => self.encode_json(String::new()),
            EventFormat::Plain => self.encode_plain(String::new()),
            EventFormat::Xml => self.encode_xml(String::new()),
        };
        let mut headers = Headers::new();
        headers.push("Content-Length", body.len().to_string());
        headers.push("Content-Type", format.content_type());
        Frame {
            line: None,
            headers,
            body: Bytes::from(body),
        }
    }

    /// The whole frame [`EslEvent::to_frame`] describes, as wire bytes, built in one buffer:
    /// the body is serialised after room left for the two framing headers, which are written
    /// into that room once the body's length is known, so the body is never copied.
    pub fn to_wire(&self, format: EventFormat) -> Bytes {
        // `Content-Length: ` + 20 digits + `\nContent-Type: text/event-plain\n\n`.
        const ROOM: usize = 16 + 20 + 15 + 16 + 2;
        let mut out = String::with_capacity(ROOM + 4096);
        out.extend(std::iter::repeat_n(' ', ROOM));
        let out = match format {
            EventFormat::Json => self.encode_json(out),
            EventFormat::Plain => self.encode_plain(out),
            EventFormat::Xml => self.encode_xml(out),
        };
        let body_len = out.len().saturating_sub(ROOM);
        let mut digits = [0u8; 20];
        let head = [
            "Content-Length: ",
            format_u64(body_len as u64, &mut digits),
            "\nContent-Type: ",
            format.content_type(),
            "\n\n",
        ];
        let head_len: usize = head.iter().map(|p| p.len()).sum();
        let start = ROOM.saturating_sub(head_len);
        let mut bytes = out.into_bytes();
        let mut at = start;
        for part in head {
            if let Some(dst) = bytes.get_mut(at..at + part.len()) {
                dst.copy_from_slice(part.as_bytes());
            }
            at += part.len();
        }
        Bytes::from(bytes).slice(start..)
    }

    /// `cJSON_PrintUnformatted` of the event: one flat object in header order, arrays for
    /// `ARRAY::` values, and the body under `_body` after its `Content-Length`.
    fn encode_json(&self, mut out: String) -> String {
        let size = self.text.len() + 6 * self.spans.len();
        out.reserve(size + self.body.as_ref().map_or(0, |b| b.len() + 40));
        out.push('{');
        for (i, (n, v)) in self.headers().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_json_str(&mut out, n);
            out.push(':');
            match v.strip_prefix(ARRAY_PREFIX) {
                Some(items) => {
                    out.push('[');
                    for (j, item) in items.split(ARRAY_SEPARATOR).enumerate() {
                        if j > 0 {
                            out.push(',');
                        }
                        push_json_str(&mut out, item);
                    }
                    out.push(']');
                }
                None => push_json_str(&mut out, v),
            }
        }
        if let Some(body) = &self.body {
            if !self.spans.is_empty() {
                out.push(',');
            }
            out.push_str("\"Content-Length\":\"");
            out.push_str(&body.len().to_string());
            out.push_str("\",\"_body\":");
            push_json_str(&mut out, body);
        }
        out.push('}');
        out
    }

    /// `switch_event_serialize`: `Name: url-encoded-value` lines (`_undef_` for an empty
    /// value), then either an empty line, or `Content-Length: n`, an empty line and the body.
    fn encode_plain(&self, mut out: String) -> String {
        let size = self.text.len() + 3 * self.spans.len();
        out.reserve(size + self.body.as_ref().map_or(1, |b| b.len() + 32));
        for (n, v) in self.headers() {
            out.push_str(n);
            out.push_str(": ");
            if v.is_empty() {
                out.push_str("_undef_");
            } else {
                push_url_encoded(&mut out, v);
            }
            out.push('\n');
        }
        match &self.body {
            Some(body) => {
                out.push_str("Content-Length: ");
                out.push_str(&body.len().to_string());
                out.push_str("\n\n");
                out.push_str(body);
            }
            None => out.push('\n'),
        }
        out
    }

    /// `switch_event_xmlize` as `switch_xml_toxml` prints it: two-space indents, one element
    /// per header (one per value for an `ARRAY::` header), URL-encoded text, and the body
    /// XML-escaped after its `Content-Length`.
    fn encode_xml(&self, mut out: String) -> String {
        let size = 2 * self.text.len() + 10 * self.spans.len();
        out.reserve(size + 64 + self.body.as_ref().map_or(0, |b| b.len()));
        out.push_str("<event>\n  <headers>\n");
        for (n, v) in self.headers() {
            match v.strip_prefix(ARRAY_PREFIX) {
                Some(items) => {
                    for item in items.split(ARRAY_SEPARATOR) {
                        push_xml_header(&mut out, n, item);
                    }
                }
                None => push_xml_header(&mut out, n, v),
            }
        }
        out.push_str("  </headers>\n");
        if let Some(body) = &self.body {
            out.push_str("  <Content-Length>");
            out.push_str(&body.len().to_string());
            out.push_str("</Content-Length>\n  <body>");
            push_xml_escaped(&mut out, body);
            out.push_str("</body>\n");
        }
        out.push_str("</event>\n");
        out
    }
}

fn push_xml_header(out: &mut String, name: &str, value: &str) {
    out.push_str("    <");
    out.push_str(name);
    out.push('>');
    push_url_encoded(out, value);
    out.push_str("</");
    out.push_str(name);
    out.push_str(">\n");
}

/// `switch_xml_ampencode` for element text: `&`, `<`, `>` and `\r` are escaped, quotes and
/// `\n` are not.
fn push_xml_escaped(out: &mut String, text: &str) {
    let mut rest = text;
    while let Some(i) = rest.find(['&', '<', '>', '\r']) {
        out.push_str(&rest[..i]);
        out.push_str(match rest.as_bytes()[i] {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            _ => "&#xD;",
        });
        rest = &rest[i + 1..];
    }
    out.push_str(rest);
}

/// A JSON string literal the way cJSON writes it: `"` and `\\` escaped, the usual short escapes
/// for control characters and `\u00XX` for the others; `/` and non-ASCII left as they are.
fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    // Almost every value needs no escape at all: check 16 bytes at a time without an early
    // exit (so the check vectorises), then copy the whole string at once.
    if !needs_json_escape(s.as_bytes()) {
        out.push_str(s);
        out.push('"');
        return;
    }
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Whether any byte of `bytes` must be escaped in a JSON string (a control, `"` or `\\`).
fn needs_json_escape(bytes: &[u8]) -> bool {
    let special = |b: u8| b < 0x20 || b == b'"' || b == b'\\';
    let mut chunks = bytes.chunks_exact(16);
    for chunk in &mut chunks {
        if chunk.iter().fold(false, |acc, &b| acc | special(b)) {
            return true;
        }
    }
    chunks.remainder().iter().any(|&b| special(b))
}

/// `value` in decimal, written into `buf`; no allocation.
pub(crate) fn format_u64(mut value: u64, buf: &mut [u8; 20]) -> &str {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[at..]).unwrap_or_default()
}

/// FreeSWITCH's `switch_url_encode` character set: controls, non-ASCII and
/// ``\r\n #%&+:;<=>?@[\]^`{|}"`` become `%XX`. (Unlike FreeSWITCH we always encode `%`; see the
/// module documentation.)
pub fn url_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    push_url_encoded(&mut out, value);
    out
}

fn push_url_encoded(out: &mut String, value: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let bytes = value.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if is_url_safe(b) {
            continue;
        }
        // A non-empty `start..i` holds only safe bytes, which are ASCII, so it lies on char
        // boundaries; an empty one may sit inside a multi-byte character and is skipped.
        if let Some(run) = value.get(start..i) {
            out.push_str(run);
        }
        out.push('%');
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
        start = i + 1;
    }
    if let Some(run) = value.get(start..) {
        out.push_str(run);
    }
}

fn is_url_safe(b: u8) -> bool {
    const UNSAFE: &[u8] = b"\r\n #%&+:;<=>?@[\\]^`{|}\"";
    (0x20..=0x7e).contains(&b) && !UNSAFE.contains(&b)
}

/// Percent-decoding as `switch_url_decode` does it: `%XX` becomes the byte, everything else,
/// `+` included, stays as it is. Bytes that are not UTF-8 once decoded are replaced (lossy).
pub fn url_decode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    push_url_decoded(&mut out, value);
    out
}

fn push_url_decoded(out: &mut String, value: &str) {
    // Most values (UUIDs, numbers, names) hold no escape at all: one copy, no decoding pass.
    if !value.contains('%') {
        out.push_str(value);
        return;
    }
    out.push_str(&percent_decode_str(value).decode_utf8_lossy());
}

// ---------------------------------------------------------------------------------------------
// text/event-plain

fn decode_plain(body: &[u8]) -> Result<EslEvent, EventError> {
    // The header block ends at the first empty line; without one (a truncated or hand-written
    // body) every line is a header.
    let (head, rest) = match find_empty_line(body) {
        Some((head_end, rest_start)) => (&body[..head_end], &body[rest_start..]),
        None => (body, &body[body.len()..]),
    };
    let head = String::from_utf8_lossy(head);
    let mut event = EslEvent {
        text: String::with_capacity(head.len()),
        spans: Vec::with_capacity(estimate_lines(head.len())),
        body: None,
    };
    for line in head.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(EventError::PlainMalformedLine(line.to_owned()));
        };
        if event.spans.len() == MAX_EVENT_HEADERS {
            return Err(EventError::TooManyHeaders {
                limit: MAX_EVENT_HEADERS,
            });
        }
        match value.trim_start_matches(' ') {
            "_undef_" => event.push(name, ""),
            value => event.push_decoded(name, value),
        }
    }
    // FreeSWITCH writes the body's `Content-Length` last, exact case, right before the empty
    // line. An event header of that name (sendevent echoes the client's own) comes earlier:
    // FreeSWITCH appends its standard headers after the client's.
    if let Some(last) = event.spans.last().copied()
        && event.name_at(&last) == "Content-Length"
    {
        event.spans.pop();
        let declared = event.value_at(&last);
        let len = declared
            .trim()
            .parse::<usize>()
            .map_err(|_| EventError::BadContentLength(declared.to_owned()))?;
        let inner = rest.get(..len).ok_or(EventError::TruncatedBody {
            declared: len,
            available: rest.len(),
        })?;
        event.set_body(String::from_utf8_lossy(inner));
    }
    Ok(event)
}

/// The end of the first line of the header block that is followed by an empty line, and where
/// the bytes after that empty line start. An empty block (the body starts with `\n`) counts.
fn find_empty_line(body: &[u8]) -> Option<(usize, usize)> {
    match body.first() {
        Some(b'\n') => return Some((0, 1)),
        Some(b'\r') if body.get(1) == Some(&b'\n') => return Some((0, 2)),
        _ => {}
    }
    let mut from = 0;
    while let Some(off) = body[from..].iter().position(|&b| b == b'\n') {
        let nl = from + off;
        match &body[nl + 1..] {
            [b'\n', ..] => return Some((nl, nl + 2)),
            [b'\r', b'\n', ..] => return Some((nl, nl + 3)),
            _ => from = nl + 1,
        }
    }
    None
}

/// A capacity guess for the header vector: FreeSWITCH header lines average 40 to 60 bytes.
fn estimate_lines(bytes: usize) -> usize {
    (bytes / 40).clamp(8, MAX_EVENT_HEADERS)
}

// ---------------------------------------------------------------------------------------------
// text/event-json

fn decode_json(body: &[u8]) -> Result<EslEvent, EventError> {
    if let Some(event) = decode_json_flat(body) {
        return Ok(event);
    }
    decode_json_serde(body)
}

/// The fast path: FreeSWITCH's events are one flat object whose values are strings (or arrays
/// of strings), with few escapes. A direct scan of that shape, copying each name and value once
/// into the event's buffer, is several times cheaper than going through serde's visitor.
/// `None` for anything else (`\u` escapes, other value types, malformed text, too many
/// headers): the serde decoder then decodes it, or reports exactly what is wrong, so the two
/// paths cannot disagree on what is accepted.
fn decode_json_flat(body: &[u8]) -> Option<EslEvent> {
    let text = std::str::from_utf8(body).ok()?;
    let mut p = JsonScan {
        text,
        bytes: text.as_bytes(),
        at: 0,
    };
    // The decoded names and values are a little shorter than the JSON text.
    let mut event = EslEvent::with_capacity(body.len(), estimate_lines(body.len()));
    let mut event_body: Option<String> = None;
    // Where the `Content-Length` that goes with `_body` sits (see `JsonEvent::visit_map`).
    let mut body_length_at = None;
    p.ws();
    p.eat(b'{')?;
    p.ws();
    if p.peek() == Some(b'}') {
        p.at += 1;
    } else {
        loop {
            p.eat(b'"')?;
            let name_start = event.text.len();
            p.string_into(&mut event.text)?;
            let name_end = event.text.len();
            p.ws();
            p.eat(b':')?;
            p.ws();
            let name = event.text.get(name_start..name_end)?;
            if name == "_body" {
                event.text.truncate(name_start);
                p.eat(b'"')?;
                let mut value = String::new();
                p.string_into(&mut value)?;
                event_body = Some(value);
            } else {
                let is_length = name == "Content-Length";
                if event.spans.len() == MAX_EVENT_HEADERS {
                    return None;
                }
                match p.next()? {
                    b'"' => p.string_into(&mut event.text)?,
                    b'[' => p.array_into(&mut event.text)?,
                    _ => return None,
                }
                if is_length {
                    body_length_at = Some(event.spans.len());
                }
                event
                    .spans
                    .push((name_start, name_end, name_end, event.text.len()));
            }
            p.ws();
            match p.next()? {
                b',' => p.ws(),
                b'}' => break,
                _ => return None,
            }
        }
    }
    p.ws();
    if p.at != p.bytes.len() {
        return None;
    }
    if let (Some(_), Some(at)) = (&event_body, body_length_at) {
        event.spans.remove(at);
    }
    // `from_parts`'s rule: an empty body is no body.
    event.body = event_body.filter(|b| !b.is_empty());
    Some(event)
}

/// A cursor over JSON text already checked to be UTF-8.
struct JsonScan<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
}

impl JsonScan<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.at += 1;
        Some(b)
    }

    fn eat(&mut self, want: u8) -> Option<()> {
        (self.next()? == want).then_some(())
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// The rest of a string whose opening quote is consumed, unescaped onto `out`.
    fn string_into(&mut self, out: &mut String) -> Option<()> {
        loop {
            let rest = self.bytes.get(self.at..)?;
            let stop = self.at + memchr::memchr2(b'"', b'\\', rest)?;
            // `"` and `\\` are ASCII, so both ends of the run are character boundaries.
            let run = self.text.get(self.at..stop)?;
            // JSON forbids raw control characters in strings; serde reports them.
            if run.bytes().fold(false, |acc, b| acc | (b < 0x20)) {
                return None;
            }
            out.push_str(run);
            self.at = stop + 1;
            if self.bytes.get(stop) == Some(&b'"') {
                return Some(());
            }
            let unescaped = match self.next()? {
                b'"' => '"',
                b'\\' => '\\',
                b'/' => '/',
                b'b' => '\u{8}',
                b'f' => '\u{c}',
                b'n' => '\n',
                b'r' => '\r',
                b't' => '\t',
                // `\u` (surrogate pairs and all) is left to serde.
                _ => return None,
            };
            out.push(unescaped);
        }
    }

    /// The rest of an array of strings whose `[` is consumed, joined in the `ARRAY::` form.
    fn array_into(&mut self, out: &mut String) -> Option<()> {
        out.push_str(ARRAY_PREFIX);
        self.ws();
        if self.peek() == Some(b']') {
            self.at += 1;
            return Some(());
        }
        let mut first = true;
        loop {
            if !first {
                out.push_str(ARRAY_SEPARATOR);
            }
            first = false;
            self.eat(b'"')?;
            self.string_into(out)?;
            self.ws();
            match self.next()? {
                b',' => self.ws(),
                b']' => return Some(()),
                _ => return None,
            }
        }
    }
}

/// The general decoder, through serde_json: every shape serde accepts, and its error messages.
fn decode_json_serde(body: &[u8]) -> Result<EslEvent, EventError> {
    let mut event = JsonEvent {
        event: EslEvent {
            // The decoded names and values are a little shorter than the JSON text.
            text: String::with_capacity(body.len()),
            spans: Vec::with_capacity(estimate_lines(body.len())),
            body: None,
        },
        too_many: false,
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    match (&mut event).deserialize(&mut de).and_then(|()| de.end()) {
        Ok(()) => {
            let mut event = event.event;
            // `from_parts`'s rule: an empty body is no body.
            event.body = event.body.filter(|b| !b.is_empty());
            Ok(event)
        }
        // The visitor can only report through serde's string errors; the flag keeps the
        // typed one.
        Err(_) if event.too_many => Err(EventError::TooManyHeaders {
            limit: MAX_EVENT_HEADERS,
        }),
        Err(e) => Err(EventError::Json(e)),
    }
}

/// Decoding state for one JSON event, filled in place by a map visitor: no intermediate
/// `serde_json::Value` tree and no string per key or value. Each one is copied once, from the
/// JSON text (or serde_json's unescaping scratch) straight into the event's buffer.
struct JsonEvent {
    event: EslEvent,
    too_many: bool,
}

impl<'de> DeserializeSeed<'de> for &mut JsonEvent {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for &mut JsonEvent {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object of event headers")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let event = &mut self.event;
        // Where the `Content-Length` that goes with `_body` sits, to drop it once we know there
        // is a body (cJSON writes it just before `_body`).
        let mut body_length_at = None;
        loop {
            let name_start = event.text.len();
            if map
                .next_key_seed(AppendStr(&mut event.text, false))?
                .is_none()
            {
                break;
            }
            let name_end = event.text.len();
            if event.slice(name_start, name_end) == "_body" {
                event.text.truncate(name_start);
                let mut body = String::new();
                map.next_value_seed(AppendStr(&mut body, false))?;
                event.body = Some(body);
                continue;
            }
            if event.spans.len() == MAX_EVENT_HEADERS {
                self.too_many = true;
                return Err(de::Error::custom("too many headers"));
            }
            map.next_value_seed(AppendStr(&mut event.text, true))?;
            if event.slice(name_start, name_end) == "Content-Length" {
                body_length_at = Some(event.spans.len());
            }
            event
                .spans
                .push((name_start, name_end, name_end, event.text.len()));
        }
        if let (Some(_), Some(at)) = (&event.body, body_length_at) {
            event.spans.remove(at);
        }
        Ok(())
    }
}

/// Appends a JSON string to the buffer; with `arrays`, an array of strings too, joined into
/// the `ARRAY::` form.
struct AppendStr<'a>(&'a mut String, bool);

impl<'de> DeserializeSeed<'de> for AppendStr<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        if self.1 {
            deserializer.deserialize_any(self)
        } else {
            deserializer.deserialize_str(self)
        }
    }
}

impl<'de> Visitor<'de> for AppendStr<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(if self.1 {
            "a string or an array of strings"
        } else {
            "a string"
        })
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.0.push_str(v);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if !self.1 {
            return Err(de::Error::invalid_type(de::Unexpected::Seq, &self));
        }
        self.0.push_str(ARRAY_PREFIX);
        let mut first = true;
        while let Some(item) = seq.next_element::<Cow<'de, str>>()? {
            if !first {
                self.0.push_str(ARRAY_SEPARATOR);
            }
            first = false;
            self.0.push_str(&item);
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// text/event-xml

/// Which part of `<event>` the reader is in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum XmlSection {
    Headers,
    Body,
    /// `<Content-Length>` (redundant with the body itself) or an element we do not know.
    Skipped,
}

fn decode_xml(body: &[u8]) -> Result<EslEvent, EventError> {
    let text = String::from_utf8_lossy(body);
    let mut reader = Reader::from_str(&text);
    let mut event = EslEvent {
        text: String::with_capacity(text.len() / 2),
        spans: Vec::with_capacity(estimate_lines(text.len())),
        body: None,
    };
    let mut event_body = None;
    let mut depth = 0usize;
    let mut section = XmlSection::Skipped;
    // The header element being read and its text so far.
    let mut name = String::new();
    let mut value = String::new();
    // Whether the `<event>` root was opened: anything else at the top is not an event.
    let mut seen_event = false;
    loop {
        let capturing = (depth == 3 && section == XmlSection::Headers)
            || (depth == 2 && section == XmlSection::Body);
        match reader.read_event().map_err(EventError::Xml)? {
            Event::Start(e) => {
                depth += 1;
                let tag = e.name();
                let tag: &str = tag.as_ref();
                match depth {
                    1 if tag == "event" && !seen_event => seen_event = true,
                    1 => {
                        return Err(EventError::XmlUnexpectedElement {
                            expected: "event",
                            found: tag.to_owned(),
                        });
                    }
                    2 => {
                        section = match tag {
                            "headers" => XmlSection::Headers,
                            "body" => XmlSection::Body,
                            _ => XmlSection::Skipped,
                        };
                        value.clear();
                    }
                    3 if section == XmlSection::Headers => {
                        name.clear();
                        name.push_str(tag);
                        value.clear();
                    }
                    _ => {}
                }
            }
            Event::Empty(e) => {
                let tag = e.name();
                let tag: &str = tag.as_ref();
                if depth == 2 && section == XmlSection::Headers {
                    push_xml_value(&mut event, tag, "")?;
                } else if depth == 0 {
                    // `<event/>`: an event with nothing in it.
                    seen_event |= tag == "event";
                }
            }
            Event::Text(t) if capturing => value.push_str(&t.into_inner()),
            Event::CData(t) if capturing => value.push_str(&t.into_inner()),
            Event::GeneralRef(r) if capturing => {
                if let Some(c) = r.resolve_char_ref().map_err(EventError::Xml)? {
                    value.push(c);
                } else if let Some(s) = quick_xml::escape::resolve_predefined_entity(&r) {
                    value.push_str(s);
                } else {
                    return Err(EventError::XmlUnknownEntity(r.into_inner().into_owned()));
                }
            }
            Event::End(_) => {
                match depth {
                    3 if section == XmlSection::Headers => {
                        push_xml_value(&mut event, &name, &value)?;
                    }
                    2 if section == XmlSection::Body => {
                        event_body = Some(std::mem::take(&mut value));
                    }
                    _ => {}
                }
                if depth == 2 {
                    section = XmlSection::Skipped;
                }
                depth = depth.saturating_sub(1);
            }
            Event::Eof => break,
            // Whitespace between elements, declarations, comments.
            _ => {}
        }
    }
    if depth != 0 || !seen_event {
        return Err(EventError::XmlTruncated);
    }
    event.body = event_body.filter(|b: &String| !b.is_empty());
    Ok(event)
}

/// Adds one `<Name>url-encoded</Name>` header. A repeat of the previous element's name is the
/// next value of an array header, so it is merged into the `ARRAY::` form.
fn push_xml_value(event: &mut EslEvent, name: &str, encoded: &str) -> Result<(), EventError> {
    if let Some(last) = event.spans.last_mut()
        && event.text.get(last.0..last.1) == Some(name)
        && last.3 == event.text.len()
    {
        // The previous value is the last thing in the buffer (nothing is appended between two
        // header elements), so the array form can be built in place.
        if event
            .text
            .get(last.2..last.3)
            .is_some_and(|v| !v.starts_with(ARRAY_PREFIX))
        {
            event.text.insert_str(last.2, ARRAY_PREFIX);
        }
        event.text.push_str(ARRAY_SEPARATOR);
        push_url_decoded(&mut event.text, encoded);
        last.3 = event.text.len();
        return Ok(());
    }
    if event.spans.len() == MAX_EVENT_HEADERS {
        return Err(EventError::TooManyHeaders {
            limit: MAX_EVENT_HEADERS,
        });
    }
    event.push_decoded(name, encoded);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORMATS: [EventFormat; 3] = [EventFormat::Json, EventFormat::Plain, EventFormat::Xml];

    fn awkward_event() -> EslEvent {
        let mut ev = EslEvent::new("CUSTOM");
        ev.set("Event-Subclass", "esl::lab");
        ev.set("Application-Data", "tone_stream://%(500,500,440);loops=2");
        ev.set("Caller-Caller-ID-Number", "+15550001111");
        ev.set(
            "variable_sip_full_from",
            "\"ESL Lab\" <sip:+1@127.0.0.1>;tag=x&y",
        );
        ev.set(
            "variable_switch_r_sdp",
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n\t\u{1}",
        );
        ev.set("variable_literal_escape", "%41 stays %41, 100% done");
        ev.set("variable_unicode", "caf\u{e9} \u{1F4DE}");
        ev.set("variable_empty", "");
        ev.set("variable_multi", "ARRAY::one|:two words|:3");
        ev.set("content-length", "7");
        ev.set_body("line one\nline two: <xml> & \"json\" \r\n100% done");
        ev
    }

    #[test]
    fn every_format_round_trips() {
        let with_body = awkward_event();
        let mut without_body = with_body.clone();
        without_body.body = None;
        for ev in [with_body, without_body, EslEvent::new("HEARTBEAT")] {
            for format in FORMATS {
                let frame = ev.to_frame(format);
                assert_eq!(frame.content_type(), Some(format.content_type()));
                let back = EslEvent::from_frame(&frame).unwrap().unwrap();
                assert_eq!(back, ev, "{format:?}");
                // The one-buffer wire form: FreeSWITCH's header order, then the same body.
                let mut want = format!(
                    "Content-Length: {}\nContent-Type: {}\n\n",
                    frame.body.len(),
                    format.content_type()
                )
                .into_bytes();
                want.extend_from_slice(&frame.body);
                assert_eq!(ev.to_wire(format), want, "{format:?}");
            }
        }
    }

    #[test]
    fn plain_is_what_freeswitch_writes() {
        let mut ev = EslEvent::new("CUSTOM");
        ev.set("FreeSWITCH-IPv6", "fd00::2");
        ev.set("Application-Data", "tone_stream://%(500,500,440);loops=2");
        ev.set("Empty", "");
        ev.set_body("line one\nline two: plain & 100% done");
        let frame = ev.to_frame(EventFormat::Plain);
        assert_eq!(
            std::str::from_utf8(&frame.body).unwrap(),
            "Event-Name: CUSTOM\nFreeSWITCH-IPv6: fd00%3A%3A2\n\
             Application-Data: tone_stream%3A//%25(500,500,440)%3Bloops%3D2\nEmpty: _undef_\n\
             Content-Length: 36\n\nline one\nline two: plain & 100% done"
        );
        assert_eq!(
            frame.header("Content-Length"),
            Some(frame.body.len().to_string().as_str())
        );
    }

    #[test]
    fn xml_and_json_are_what_freeswitch_writes() {
        let mut ev = EslEvent::new("CUSTOM");
        ev.set("Lab-Header", "hello world & more/xml");
        ev.set_body("a & b");
        let xml = ev.to_frame(EventFormat::Xml);
        assert_eq!(
            std::str::from_utf8(&xml.body).unwrap(),
            "<event>\n  <headers>\n    <Event-Name>CUSTOM</Event-Name>\n    \
             <Lab-Header>hello%20world%20%26%20more/xml</Lab-Header>\n  </headers>\n  \
             <Content-Length>5</Content-Length>\n  <body>a &amp; b</body>\n</event>\n"
        );
        let json = ev.to_frame(EventFormat::Json);
        assert_eq!(
            std::str::from_utf8(&json.body).unwrap(),
            r#"{"Event-Name":"CUSTOM","Lab-Header":"hello world & more/xml","Content-Length":"5","_body":"a & b"}"#
        );
    }

    #[test]
    fn plus_is_not_a_space_and_bad_utf8_is_lossy() {
        let ev = EslEvent::decode(EventFormat::Plain, b"A: 1+1%3D2\nB: %FF%41\n\n").unwrap();
        assert_eq!(ev.get("A"), Some("1+1=2"));
        assert_eq!(ev.get("B"), Some("\u{FFFD}A"));
    }

    #[test]
    fn inner_content_length_is_not_the_echoed_one() {
        let body = b"content-length: 3\nEvent-Name: CUSTOM\nContent-Length: 5\n\nab\ncd";
        let ev = EslEvent::decode(EventFormat::Plain, body).unwrap();
        assert_eq!(ev.get("content-length"), Some("3"));
        assert_eq!(ev.headers().count(), 2);
        assert_eq!(ev.body(), Some("ab\ncd"));
    }

    #[test]
    fn json_arrays_join_into_the_plain_form() {
        let ev =
            EslEvent::decode(EventFormat::Json, br#"{"Event-Name":"X","M":["a","b\"c"]}"#).unwrap();
        assert_eq!(ev.get("M"), Some("ARRAY::a|:b\"c"));
    }

    #[test]
    fn the_json_fast_path_agrees_with_serde() {
        let fast_cases: [&[u8]; 8] = [
            br#"{"Event-Name":"X","M":["a","b\"c"]}"#,
            br#" { "A" : "1" , "B":[ ] ,"C":["x" , "y"] } "#,
            br#"{}"#,
            br#"{"A":"tab\there\/\\ \n\r\b\f","Content-Length":"3","_body":"abc"}"#,
            br#"{"content-length":"9","Content-Length":"2","_body":""}"#,
            b"{\"A\":\"caf\xc3\xa9\",\"_body\":\"x\",\"_body\":\"yz\"}",
            br#"{"Content-Length":"1"}"#,
            br#"{"A":"","":""}"#,
        ];
        for case in fast_cases {
            let fast = decode_json_flat(case);
            assert!(fast.is_some(), "{}", String::from_utf8_lossy(case));
            assert_eq!(fast, decode_json_serde(case).ok());
        }
        // Shapes left to serde: it decodes some, rejects the rest.
        let slow_cases: [&[u8]; 9] = [
            br#"{"A":"\u00e9\ud83d\ude00"}"#,
            br#"{"A":1}"#,
            br#"{"A":["a",2]}"#,
            br#"{"A":"b",}"#,
            br#"{"A":"b"} x"#,
            b"{\"A\":\"raw\ncontrol\"}",
            br#"{"_body":["a"]}"#,
            br#"["A"]"#,
            b"{\"A\":\"\xff\"}",
        ];
        for case in slow_cases {
            assert!(
                decode_json_flat(case).is_none(),
                "{}",
                String::from_utf8_lossy(case)
            );
        }
        assert_eq!(
            decode_json(slow_cases[0]).unwrap().get("A"),
            Some("\u{e9}\u{1f600}")
        );
        assert!(matches!(
            decode_json(slow_cases[1]),
            Err(EventError::Json(_))
        ));
    }

    #[test]
    fn non_event_frames_are_none() {
        let mut headers = Headers::new();
        headers.push("Content-Type", "command/reply");
        headers.push("Reply-Text", "+OK");
        let frame = Frame {
            line: None,
            headers,
            body: Bytes::new(),
        };
        assert_eq!(EslEvent::from_frame(&frame).unwrap(), None);
        assert_eq!(EslEvent::from_frame(&Frame::default()).unwrap(), None);
    }

    #[test]
    fn errors_name_the_problem() {
        let cases: [(EventFormat, &[u8]); 7] = [
            (EventFormat::Json, b"{\"A\":1}"),
            (EventFormat::Json, b"[\"A\"]"),
            (EventFormat::Plain, b"no colon here\n\n"),
            (EventFormat::Plain, b"A: b\nContent-Length: x\n\n"),
            (EventFormat::Plain, b"A: b\nContent-Length: 10\n\nshort"),
            (EventFormat::Xml, b"<event><headers><A>1</A></headers>"),
            (EventFormat::Xml, b"<notevent/>"),
        ];
        for (format, body) in cases {
            let err = EslEvent::decode(format, body).unwrap_err();
            assert!(!err.to_string().is_empty());
        }
        assert!(matches!(
            EslEvent::decode(EventFormat::Plain, b"A: b\nContent-Length: 10\n\nshort"),
            Err(EventError::TruncatedBody {
                declared: 10,
                available: 5
            })
        ));
    }

    #[test]
    fn header_count_is_bounded() {
        let mut plain = String::new();
        let mut json = String::from("{");
        let mut xml = String::from("<event><headers>");
        for i in 0..=MAX_EVENT_HEADERS {
            plain.push_str(&format!("H{i}: v\n"));
            json.push_str(&format!("\"H{i}\":\"v\","));
            xml.push_str(&format!("<H{i}>v</H{i}>"));
        }
        plain.push('\n');
        json.push_str("\"Z\":\"z\"}");
        xml.push_str("</headers></event>");
        for (format, body) in [
            (EventFormat::Plain, plain),
            (EventFormat::Json, json),
            (EventFormat::Xml, xml),
        ] {
            assert!(
                matches!(
                    EslEvent::decode(format, body.as_bytes()),
                    Err(EventError::TooManyHeaders { .. })
                ),
                "{format:?}"
            );
        }
    }

    #[test]
    fn connect_reply_headers_decode() {
        let headers: Headers = [
            ("Event-Name", "CHANNEL_DATA"),
            ("Channel-Name", "sofia/external/%2B1555%40127.0.0.1"),
            ("Content-Type", "command/reply"),
            ("Reply-Text", "%2BOK%0A"),
        ]
        .into_iter()
        .collect();
        let ev = EslEvent::from_encoded_headers(&headers).unwrap();
        assert_eq!(ev.get("Reply-Text"), Some("+OK\n"));
        assert_eq!(
            ev.get("Channel-Name"),
            Some("sofia/external/+1555@127.0.0.1")
        );
    }
}
