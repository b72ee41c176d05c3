//! TwiML → `Flow::Twiml`.
//!
//! Two passes:
//! 1. [`read_tree`] streams the bytes through quick-xml into a small tree of elements that
//!    borrows from the body. Well-formedness, the DOCTYPE ban, the root check and the limits
//!    (element count, nesting depth) are enforced there, and any failure stops the parse:
//!    nothing after broken XML can be trusted.
//! 2. [`Interp`] turns the tree into [`Step`]s, collecting every semantic problem — errors and
//!    warnings, each at the line and column of its element — before deciding.
//!
//! Pass 1 bounds nesting by [`MAX_NESTING`], so the recursion of pass 2 (verb → noun → SSML)
//! and the drop of the tree are bounded whatever the input.
//!
//! KAZOO's TwiML defects are fixed on purpose (reference §5): `<Set>` works, any `voice` or
//! `language` is accepted, an empty `<Gather>` or whitespace-only `<Pause>` is fine, and
//! attributes on `<Hangup>` are a warning, not an abort.

use std::borrow::Cow;
use std::fmt::Display;
use std::ops::Range;

use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::attributes::Attributes;
use quick_xml::events::{BytesDecl, BytesRef, BytesStart, Event};
use quick_xml::{Reader, XmlVersion};

use crate::diag::{Diagnostics, ErrorKind, Location, position_of};
use crate::model::{
    AudioFormat, Conference, Dial, DialStrategy, DialTarget, Flow, Gather, Hangup, HttpMethod,
    Media, Pause, Play, Record, Redirect, Reject, RejectReason, Say, SendDtmf, SetVariables, Step,
    StorageMethod, Terminators, Variable, VariableScope, is_dtmf,
};
use crate::{Document, Limits, ParseError};

/// Deepest element nesting, `<Response>` being depth 1. Real documents stay under 6
/// (`Response` › `Gather` › `Say` › SSML › SSML); the bound keeps pass 2's recursion small.
const MAX_NESTING: usize = 16;
/// Longest `<Say>` text, in characters, after SSML reduction.
const MAX_SAY_CHARS: usize = 4096;
/// Longest digit string of `<Play digits>` and `<Number sendDigits>`.
const MAX_DIGITS: usize = 128;
/// Longest name of a `<Dial><Conference>` room.
const MAX_ROOM_CHARS: usize = 128;
/// Most attributes on one element; Twilio's busiest verb has about twenty.
const MAX_ATTRIBUTES: usize = 64;
/// Longest excerpt of the document quoted in a message.
const MAX_QUOTED_CHARS: usize = 64;
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Twilio verbs pivot knows but does not run: named as unsupported rather than unknown.
const UNSUPPORTED_VERBS: &[&str] = &[
    "Connect",
    "Pay",
    "Enqueue",
    "Leave",
    "Message",
    "Sms",
    "Start",
    "Stop",
    "Refer",
    "Prompt",
    "Echo",
    "Queue",
    "Stream",
    "Siprec",
    "Transcription",
];

/// The verbs pivot runs, for the "did you mean" hint on a mis-cased name.
const VERBS: &[&str] = &[
    "Say", "Play", "Pause", "Gather", "Record", "Dial", "Redirect", "Hangup", "Reject", "Set",
];

/// Nouns that only mean something inside `<Dial>`.
const DIAL_NOUNS: &[&str] = &["Number", "Sip", "Conference", "Device", "User", "Client"];

/// `<Dial>` nouns Twilio has and pivot cannot ring.
const UNSUPPORTED_NOUNS: &[&str] = &["Client", "Queue", "Application", "Sim"];

/// Twilio attributes apps commonly send that pivot accepts and ignores (with a warning).
const IGNORED_ATTRIBUTES: &[&str] = &[
    "statusCallback",
    "statusCallbackEvent",
    "statusCallbackMethod",
    "answerOnBridge",
    "ringTone",
    "transcribe",
    "transcribeCallback",
    "recordingStatusCallback",
    "recordingStatusCallbackEvent",
    "recordingStatusCallbackMethod",
    "recordingChannels",
    "recordingTrack",
    "trim",
    "speechTimeout",
    "hints",
    "partialResultCallback",
    "partialResultCallbackMethod",
    "profanityFilter",
    "enhanced",
    "speechModel",
    "coach",
    "waitMethod",
    "jitterBufferSize",
    "participantLabel",
    "region",
    "sequential",
    "referUrl",
    "events",
    "requireMatchingInputs",
];

/// SSML tags whose text `<Say>` keeps (`break` and `sub` are handled on their own).
const SSML_TAGS: &[&str] = &[
    "speak", "prosody", "emphasis", "say-as", "phoneme", "lang", "w", "voice", "mark", "audio",
];

pub(crate) fn parse(body: &[u8], limits: &Limits) -> Result<Document, ParseError> {
    let mut diagnostics = Diagnostics::default();
    let tree = match read_tree(body, limits, &mut diagnostics) {
        Ok(tree) => tree,
        Err(kind) => return Err(refusal(diagnostics, kind)),
    };
    let mut interp = Interp {
        body,
        d: diagnostics,
        cursor: Cursor::default(),
    };
    // Pass 1 only returns a tree that starts with its `<Response>`.
    let steps = tree
        .root()
        .map(|root| interp.response(root))
        .unwrap_or_default();
    let warnings = interp.d.finish(ErrorKind::Invalid)?;
    Ok(Document {
        flow: Flow::Twiml { steps },
        warnings,
    })
}

/// The refusal for a parse that stopped; pass 1 always records its error before stopping.
fn refusal(diagnostics: Diagnostics, kind: ErrorKind) -> ParseError {
    match diagnostics.finish(kind) {
        Err(error) => error,
        Ok(_) => ParseError::single(kind, Location::Document, "the document could not be read"),
    }
}

// ---------------------------------------------------------------------------------------------
// Pass 1: bytes → tree.

/// The document as one flat list of nodes in document order, plus all attributes: two vectors
/// for the whole document rather than several per element. An element's content is the nodes
/// after it, up to its `end`.
#[derive(Debug, Default)]
struct Tree<'a> {
    nodes: Vec<Node<'a>>,
    attrs: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

#[derive(Debug)]
enum Node<'a> {
    Element {
        name: Cow<'a, str>,
        /// Byte offset of its `<` in the body.
        offset: usize,
        /// Its attributes in `Tree::attrs`, unescaped.
        attrs: Range<usize>,
        /// Index of the first node after its content.
        end: usize,
    },
    /// Character data (text, CDATA and references merged), and the offset where it starts.
    Text { text: Cow<'a, str>, offset: usize },
}

impl<'t> Tree<'t> {
    fn root(&'t self) -> Option<El<'t>> {
        match self.item(0)? {
            Content::Child(root) => Some(root),
            Content::Text(..) => None,
        }
    }

    fn item(&'t self, index: usize) -> Option<Content<'t>> {
        Some(match self.nodes.get(index)? {
            Node::Element {
                name,
                offset,
                attrs,
                end,
            } => Content::Child(El {
                tree: self,
                index,
                name,
                offset: *offset,
                attrs: self.attrs.get(attrs.clone()).unwrap_or_default(),
                // Always past the element itself, so iterating content makes progress.
                end: (*end).max(index + 1),
            }),
            Node::Text { text, offset } => Content::Text(text, *offset),
        })
    }
}

/// One element of the tree, with what pass 2 reads of it.
#[derive(Debug, Clone, Copy)]
struct El<'t> {
    tree: &'t Tree<'t>,
    index: usize,
    name: &'t str,
    offset: usize,
    attrs: &'t [(Cow<'t, str>, Cow<'t, str>)],
    end: usize,
}

/// One item of an element's content.
#[derive(Debug, Clone, Copy)]
enum Content<'t> {
    Text(&'t str, usize),
    Child(El<'t>),
}

impl<'t> El<'t> {
    /// Its text and child elements, in order (not the grandchildren).
    fn content(self) -> impl Iterator<Item = Content<'t>> {
        let mut next = self.index + 1;
        std::iter::from_fn(move || {
            if next >= self.end {
                return None;
            }
            let item = self.tree.item(next)?;
            next = match item {
                Content::Child(child) => child.end,
                Content::Text(..) => next + 1,
            };
            Some(item)
        })
    }

    /// The unescaped value of an attribute, without marking it read (for SSML tags, whose
    /// attributes are not checked).
    fn attr(self, name: &str) -> Option<&'t str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_ref())
    }
}

/// Builds the tree while quick-xml streams events.
struct Builder<'a, 'l> {
    body: &'a [u8],
    /// The body after any byte-order mark; quick-xml's offsets are into this.
    text: &'a str,
    /// Length of the byte-order mark: body offset = text offset + `base`.
    base: usize,
    limits: &'l Limits,
    tree: Tree<'a>,
    /// Indices of the elements opened and not yet closed, outermost first.
    open: Vec<usize>,
    /// `</Response>` has been read: only whitespace and comments may follow.
    root_done: bool,
    /// The last node is text of the innermost open element, so more text extends it.
    in_text: bool,
    /// Elements inside `<Response>`, counted against `limits.max_verbs`.
    elements: usize,
}

/// Reads the document into a tree, or records why it cannot and returns the refusal's kind.
fn read_tree<'a>(
    body: &'a [u8],
    limits: &Limits,
    d: &mut Diagnostics,
) -> Result<Tree<'a>, ErrorKind> {
    // A byte-order mark is allowed, as `classify` allows it.
    let base = if body.starts_with(BOM) { BOM.len() } else { 0 };
    let text = match std::str::from_utf8(body.get(base..).unwrap_or_default()) {
        Ok(text) => text,
        Err(e) => {
            let at = position_of(body, base + e.valid_up_to());
            d.error(at, "the document is not valid UTF-8");
            return Err(ErrorKind::Syntax);
        }
    };
    // Sized once from the body rather than grown and copied; capped by what the limits allow
    // (text nodes only sit between tags, so at most two per element).
    let elements = limits.max_verbs.saturating_add(1);
    let tree = Tree {
        nodes: Vec::with_capacity((body.len() / 16).min(elements.saturating_mul(3))),
        attrs: Vec::with_capacity((body.len() / 24).min(elements.saturating_mul(4))),
    };
    let mut builder = Builder {
        body,
        text,
        base,
        limits,
        tree,
        open: Vec::new(),
        root_done: false,
        in_text: false,
        elements: 0,
    };
    // XML 1.0 line-end normalisation only rewrites `\r`. One scan of the whole document (most
    // have none) saves asking again for every text event.
    let has_cr = text.as_bytes().contains(&b'\r');
    let mut reader = Reader::from_str(text);
    loop {
        // Text events are not trimmed, so the position before a read is where the event starts.
        let start = offset(reader.buffer_position());
        let event = match reader.read_event() {
            Ok(event) => event,
            Err(e) => {
                let at = base + offset(reader.error_position());
                let message = format!("malformed XML: {}", clip(&e.to_string()));
                return Err(builder.stop(d, at, ErrorKind::Syntax, message));
            }
        };
        match event {
            Event::Start(e) => builder.open(d, &e, start, false)?,
            Event::Empty(e) => builder.open(d, &e, start, true)?,
            Event::End(_) => builder.close(),
            // Without a `\r` the event's own (borrowed) text is already normalised.
            Event::Text(t) if !has_cr => {
                builder.text(d, t.into_inner(), start)?;
            }
            Event::Text(t) => builder.text(d, t.xml10_content(), start)?,
            Event::CData(t) => builder.text(d, t.xml10_content(), start)?,
            Event::GeneralRef(r) => {
                let resolved = builder.reference(d, &r, start)?;
                builder.text(d, resolved, start)?;
            }
            Event::Decl(decl) => builder.declaration(d, &decl, start)?,
            Event::DocType(_) => {
                let message = "<!DOCTYPE> is not allowed in TwiML";
                return Err(builder.stop(d, base + start, ErrorKind::Invalid, message));
            }
            Event::Comment(_) | Event::PI(_) => {}
            Event::Eof => return builder.finish(d),
        }
    }
}

impl<'a> Builder<'a, '_> {
    /// Records the error that ends pass 1 and returns its kind.
    fn stop(
        &self,
        d: &mut Diagnostics,
        body_offset: usize,
        kind: ErrorKind,
        message: impl Into<String>,
    ) -> ErrorKind {
        d.error(position_of(self.body, body_offset), message);
        kind
    }

    fn open(
        &mut self,
        d: &mut Diagnostics,
        e: &BytesStart<'_>,
        start: usize,
        empty: bool,
    ) -> Result<(), ErrorKind> {
        let at = self.base + start;
        let first_attr = self.tree.attrs.len();
        let name = self
            .start_tag(e, start)
            .map_err(|(kind, message)| self.stop(d, at, kind, message))?;
        if self.open.is_empty() {
            self.check_root(d, &name, at)?;
        } else {
            self.elements += 1;
            if self.elements > self.limits.max_verbs {
                let message = format!(
                    "more than {} elements (verbs, nouns, <Variable> and SSML tags) in the document",
                    self.limits.max_verbs
                );
                return Err(self.stop(d, at, ErrorKind::TooLarge, message));
            }
            if self.open.len() >= MAX_NESTING {
                let message = format!("{} nests more than {MAX_NESTING} elements deep", tag(&name));
                return Err(self.stop(d, at, ErrorKind::TooLarge, message));
            }
        }
        let index = self.tree.nodes.len();
        self.tree.nodes.push(Node::Element {
            name,
            offset: at,
            attrs: first_attr..self.tree.attrs.len(),
            end: index + 1,
        });
        self.in_text = false;
        if empty {
            self.root_done |= self.open.is_empty();
        } else {
            self.open.push(index);
        }
        Ok(())
    }

    fn check_root(&self, d: &mut Diagnostics, name: &str, at: usize) -> Result<(), ErrorKind> {
        if self.root_done {
            let message = format!("a second root element {} follows </Response>", tag(name));
            return Err(self.stop(d, at, ErrorKind::Syntax, message));
        }
        if name != "Response" {
            let message = format!(
                "the root element is {}; a TwiML document's root must be <Response>",
                tag(name)
            );
            return Err(self.stop(d, at, ErrorKind::Invalid, message));
        }
        Ok(())
    }

    /// Reads a start tag: appends its attributes to the tree and returns its name. Both are
    /// borrowed from the body when quick-xml's event borrows from it (always, for a `&str`
    /// reader); the owned fallback only guards that assumption.
    fn start_tag(
        &mut self,
        e: &BytesStart<'_>,
        start: usize,
    ) -> Result<Cow<'a, str>, (ErrorKind, String)> {
        let name_len = e.name().0.len();
        let tag_text: &str = e;
        let borrowed = self
            .text
            .get(start + 1..)
            .and_then(|rest| rest.get(..tag_text.len()))
            .filter(|raw| raw.as_ptr() == tag_text.as_ptr());
        match borrowed {
            Some(raw) => {
                read_attributes(raw, name_len, &mut self.tree.attrs)?;
                Ok(Cow::Borrowed(raw.get(..name_len).unwrap_or(raw)))
            }
            None => {
                let mut attrs = Vec::new();
                read_attributes(tag_text, name_len, &mut attrs)?;
                let owned = attrs
                    .into_iter()
                    .map(|(k, v)| (Cow::Owned(k.into_owned()), Cow::Owned(v.into_owned())));
                self.tree.attrs.extend(owned);
                Ok(Cow::Owned(
                    tag_text.get(..name_len).unwrap_or(tag_text).to_owned(),
                ))
            }
        }
    }

    fn close(&mut self) {
        // quick-xml has checked that the end tag matches the innermost open element.
        let end = self.tree.nodes.len();
        if let Some(index) = self.open.pop()
            && let Some(Node::Element { end: e, .. }) = self.tree.nodes.get_mut(index)
        {
            *e = end;
        }
        self.root_done |= self.open.is_empty();
        self.in_text = false;
    }

    fn text(
        &mut self,
        d: &mut Diagnostics,
        piece: Cow<'a, str>,
        start: usize,
    ) -> Result<(), ErrorKind> {
        if self.open.is_empty() {
            if is_blank(&piece) {
                return Ok(());
            }
            let message = format!("text {} outside the root element", quote(piece.trim_fast()));
            return Err(self.stop(d, self.base + start, ErrorKind::Syntax, message));
        }
        // Text, CDATA and references arrive as separate events; keep one run of character data.
        if self.in_text
            && let Some(Node::Text { text, .. }) = self.tree.nodes.last_mut()
        {
            text.to_mut().push_str(&piece);
        } else {
            self.tree.nodes.push(Node::Text {
                text: piece,
                offset: self.base + start,
            });
            self.in_text = true;
        }
        Ok(())
    }

    /// Resolves `&name;` and `&#N;`; only XML's five predefined entities exist (no DTD).
    fn reference(
        &self,
        d: &mut Diagnostics,
        r: &BytesRef<'_>,
        start: usize,
    ) -> Result<Cow<'a, str>, ErrorKind> {
        let resolved = match r.resolve_char_ref() {
            Ok(Some(c)) => Some(Cow::Owned(c.to_string())),
            Ok(None) => resolve_predefined_entity(r).map(Cow::Borrowed),
            Err(_) => None,
        };
        resolved.ok_or_else(|| {
            let name: &str = r;
            let message = format!("unknown entity or character reference &{};", clip(name));
            self.stop(d, self.base + start, ErrorKind::Syntax, message)
        })
    }

    fn declaration(
        &self,
        d: &mut Diagnostics,
        decl: &BytesDecl<'_>,
        start: usize,
    ) -> Result<(), ErrorKind> {
        let at = self.base + start;
        if start != 0 {
            let message = "the XML declaration must come first in the document";
            return Err(self.stop(d, at, ErrorKind::Syntax, message));
        }
        match decl.encoding() {
            None => Ok(()),
            Some(Ok(encoding)) if is_utf8_label(&encoding) => Ok(()),
            Some(Ok(encoding)) => {
                // The bytes already decoded as UTF-8, so reading can go on; the label is wrong.
                let message = format!(
                    "encoding {} is not supported; TwiML must be UTF-8",
                    quote(&encoding)
                );
                d.error(position_of(self.body, at), message);
                Ok(())
            }
            Some(Err(e)) => {
                let message = format!("malformed XML declaration: {}", clip(&e.to_string()));
                Err(self.stop(d, at, ErrorKind::Syntax, message))
            }
        }
    }

    fn finish(self, d: &mut Diagnostics) -> Result<Tree<'a>, ErrorKind> {
        let end = self.body.len();
        if let Some(&index) = self.open.last() {
            let name = match self.tree.nodes.get(index) {
                Some(Node::Element { name, .. }) => name.as_ref(),
                _ => "",
            };
            let message = format!("the document ends before {} is closed", tag(name));
            return Err(self.stop(d, end, ErrorKind::Syntax, message));
        }
        if self.tree.nodes.is_empty() {
            let message = "the document has no root element; TwiML needs <Response>";
            return Err(self.stop(d, end, ErrorKind::Syntax, message));
        }
        Ok(self.tree)
    }
}

/// Appends the attributes of `name attr="value" …` (the text between `<` and `>`) to `out`,
/// unescaped.
fn read_attributes<'x>(
    raw: &'x str,
    name_len: usize,
    out: &mut Vec<(Cow<'x, str>, Cow<'x, str>)>,
) -> Result<(), (ErrorKind, String)> {
    let first = out.len();
    if read_plain_attributes(raw, name_len, out).is_some() {
        return Ok(());
    }
    // Something unusual: start over with quick-xml, which reads and reports it exactly.
    out.truncate(first);
    read_attributes_in_full(raw, name_len, out)
}

/// [`read_attributes`] through quick-xml's attribute iterator: any syntax, every refusal.
fn read_attributes_in_full<'x>(
    raw: &'x str,
    name_len: usize,
    out: &mut Vec<(Cow<'x, str>, Cow<'x, str>)>,
) -> Result<(), (ErrorKind, String)> {
    let name = raw.get(..name_len).unwrap_or(raw);
    let first = out.len();
    // quick-xml's duplicate check allocates for every tag; with the count bounded, a scan of
    // this tag's attributes does the same job.
    for attr in Attributes::new(raw, name_len).with_checks(false) {
        let syntax = |detail: String| {
            let message = format!("malformed attribute in {}: {}", tag(name), clip(&detail));
            (ErrorKind::Syntax, message)
        };
        let attr = attr.map_err(|e| syntax(e.to_string()))?;
        let key = attr.key.0;
        // Only references and line breaks/tabs change under normalisation (the bytes quick-xml
        // itself looks for); most values have none and are kept borrowed without the call.
        let value = if attr
            .value
            .bytes()
            .any(|b| matches!(b, b'&' | b'\t' | b'\r' | b'\n'))
        {
            attr.normalized_value(XmlVersion::Implicit1_0)
                .map_err(|e| syntax(format!("{}: {e}", quote(key))))?
        } else {
            attr.value
        };
        let seen = out.get(first..).unwrap_or_default();
        if seen.iter().any(|(k, _)| k == key) {
            return Err(syntax(format!("{} is repeated", quote(key))));
        }
        if seen.len() >= MAX_ATTRIBUTES {
            let message = format!("{} has more than {MAX_ATTRIBUTES} attributes", tag(name));
            return Err((ErrorKind::TooLarge, message));
        }
        out.push((Cow::Borrowed(key), value));
    }
    Ok(())
}

/// The common case of [`read_attributes`] without quick-xml's general iterator: every attribute
/// written `key="value"` (or with `'`), whitespace-separated, and no value needing
/// normalisation (`&`, tab, CR, LF). On such input quick-xml finds the same keys and values, so
/// the result is the same; on anything else this returns `None` having maybe pushed some
/// attributes, and the caller truncates and re-reads with quick-xml. Duplicate and count checks
/// are left to that reader too, so every refusal is worded in one place.
fn read_plain_attributes<'x>(
    raw: &'x str,
    name_len: usize,
    out: &mut Vec<(Cow<'x, str>, Cow<'x, str>)>,
) -> Option<()> {
    let first = out.len();
    let bytes = raw.as_bytes();
    let mut at = name_len;
    loop {
        // quick-xml's whitespace: space, CR, LF, tab.
        while bytes
            .get(at)
            .is_some_and(|&b| matches!(b, b' ' | b'\r' | b'\n' | b'\t'))
        {
            at += 1;
        }
        if at >= bytes.len() {
            return Some(());
        }
        let key_start = at;
        while bytes
            .get(at)
            .is_some_and(|&b| !matches!(b, b'=' | b' ' | b'\r' | b'\n' | b'\t'))
        {
            at += 1;
        }
        if at == key_start || bytes.get(at) != Some(&b'=') {
            return None;
        }
        let key = raw.get(key_start..at)?;
        let delimiter = *bytes.get(at + 1).filter(|&&q| q == b'"' || q == b'\'')?;
        let value_start = at + 2;
        let value_len = bytes
            .get(value_start..)?
            .iter()
            .position(|&b| b == delimiter)?;
        let value = raw.get(value_start..value_start + value_len)?;
        if value
            .bytes()
            .any(|b| matches!(b, b'&' | b'\t' | b'\r' | b'\n'))
        {
            return None;
        }
        // A repeat or one too many is an error: left to the full reader, which words it.
        let seen = out.get(first..).unwrap_or_default();
        if seen.len() >= MAX_ATTRIBUTES || seen.iter().any(|(k, _)| k == key) {
            return None;
        }
        out.push((Cow::Borrowed(key), Cow::Borrowed(value)));
        at = value_start + value_len + 1;
    }
}

fn offset(position: u64) -> usize {
    usize::try_from(position).unwrap_or(usize::MAX)
}

fn is_utf8_label(encoding: &str) -> bool {
    encoding.eq_ignore_ascii_case("utf-8") || encoding.eq_ignore_ascii_case("utf8")
}

// ---------------------------------------------------------------------------------------------
// ---------------------------------------------------------------------------------------------
// Pass 2: tree → steps.

/// Line and column of a byte offset, advanced incrementally: diagnostics come in document order,
/// so locating all of them costs one scan of the body instead of one scan each.
/// Matches [`position_of`] on the character boundaries it is given.
#[derive(Debug)]
struct Cursor {
    offset: usize,
    line: u32,
    column: u32,
}

impl Default for Cursor {
    fn default() -> Self {
        Cursor {
            offset: 0,
            line: 1,
            column: 1,
        }
    }
}

impl Cursor {
    fn locate(&mut self, body: &[u8], offset: usize) -> Location {
        let offset = offset.min(body.len());
        if offset < self.offset {
            *self = Cursor::default();
        }
        for &b in body.get(self.offset..offset).unwrap_or_default() {
            if b == b'\n' {
                self.line = self.line.saturating_add(1);
                self.column = 1;
            } else if b & 0xC0 != 0x80 {
                // Count characters, not bytes: skip UTF-8 continuation bytes.
                self.column = self.column.saturating_add(1);
            }
        }
        self.offset = offset;
        Location::Position {
            line: self.line,
            column: self.column,
        }
    }
}

/// Interprets the tree, collecting diagnostics.
struct Interp<'b> {
    body: &'b [u8],
    d: Diagnostics,
    cursor: Cursor,
}

impl Interp<'_> {
    fn error(&mut self, offset: usize, message: impl Into<String>) {
        let at = self.cursor.locate(self.body, offset);
        self.d.error(at, message);
    }

    fn warning(&mut self, offset: usize, message: impl Into<String>) {
        let at = self.cursor.locate(self.body, offset);
        self.d.warning(at, message);
    }

    fn response(&mut self, root: El<'_>) -> Vec<Step> {
        Attrs::of(root).finish(self);
        let verbs = root
            .content()
            .filter(|item| matches!(item, Content::Child(_)))
            .count();
        let mut steps = Vec::with_capacity(verbs);
        for item in root.content() {
            match item {
                Content::Text(text, at) if !is_blank(text) => {
                    let message = format!(
                        "text {} directly inside <Response> is ignored",
                        quote(text.trim_fast())
                    );
                    self.warning(at, message);
                }
                Content::Text(..) => {}
                Content::Child(el) => self.verb(el, &mut steps),
            }
        }
        steps
    }

    fn verb(&mut self, el: El<'_>, steps: &mut Vec<Step>) {
        match el.name {
            "Say" => steps.extend(self.say(el).map(Step::Say)),
            "Play" => self.play(el, steps),
            "Pause" => steps.push(Step::Pause(self.pause(el))),
            "Gather" => steps.push(Step::Gather(self.gather(el))),
            "Record" => steps.push(Step::Record(self.record(el))),
            "Dial" => steps.push(Step::Dial(self.dial(el))),
            "Redirect" => steps.push(Step::Redirect(self.redirect(el))),
            "Hangup" => steps.push(Step::Hangup(self.hangup(el))),
            "Reject" => steps.push(Step::Reject(self.reject(el))),
            "Set" => steps.extend(self.set(el)),
            _ => self.not_a_verb(el),
        }
    }

    fn not_a_verb(&mut self, el: El<'_>) {
        let name = el.name;
        let message = if UNSUPPORTED_VERBS.contains(&name) {
            format!("{} is not supported by pivot", tag(name))
        } else if name == "Variable" {
            "<Variable> is only allowed inside <Redirect> or <Set>".to_owned()
        } else if DIAL_NOUNS.contains(&name) {
            format!("{} is only allowed inside <Dial>", tag(name))
        } else if let Some(verb) = VERBS.iter().find(|v| v.eq_ignore_ascii_case(name)) {
            format!(
                "unknown verb {} (TwiML names are case-sensitive: did you mean <{verb}>?)",
                tag(name)
            )
        } else {
            format!("unknown verb {}", tag(name))
        };
        self.error(el.offset, message);
    }

    /// `<Say>`; `None` when there is nothing to say (warned, and the step is left out).
    fn say(&mut self, el: El<'_>) -> Option<Say> {
        let mut a = Attrs::of(el);
        let voice = a.raw("voice").and_then(normalize_voice);
        let language = a.text("language");
        let engine = a.text("engine");
        let loops = a.loops(self);
        let terminators = a.terminators(self, "terminators", Terminators::all());
        a.finish(self);
        let mut speech = Speech::default();
        self.ssml_text(el, &mut speech);
        let text = speech.text;
        if text.is_empty() {
            self.warning(el.offset, "<Say> has no text; skipped");
            return None;
        }
        // A character is at least one byte: only a long text needs counting.
        let chars = if text.len() > MAX_SAY_CHARS {
            text.chars().count()
        } else {
            0
        };
        if chars > MAX_SAY_CHARS {
            let message =
                format!("<Say> text is {chars} characters long; the limit is {MAX_SAY_CHARS}");
            self.error(el.offset, message);
        }
        Some(Say {
            text,
            voice,
            language,
            engine,
            loops,
            terminators,
        })
    }

    /// Appends the spoken text of `el`, reducing SSML children to the text they would say.
    fn ssml_text(&mut self, el: El<'_>, out: &mut Speech) {
        for item in el.content() {
            let child = match item {
                Content::Text(text, _) => {
                    out.push(text);
                    continue;
                }
                Content::Child(child) => child,
            };
            match child.name {
                "break" => out.space(),
                "sub" => match child.attr("alias") {
                    Some(alias) => out.push(alias),
                    None => self.ssml_text(child, out),
                },
                // Paragraphs and sentences are separate words even when written back to back.
                "p" | "s" => {
                    out.space();
                    self.ssml_text(child, out);
                    out.space();
                }
                name if SSML_TAGS.contains(&name) || name.starts_with("amazon:") => {
                    self.ssml_text(child, out);
                }
                name => {
                    let message = format!(
                        "{} inside <Say> is not SSML; only its text is spoken",
                        tag(name)
                    );
                    self.warning(child.offset, message);
                    self.ssml_text(child, out);
                }
            }
        }
    }

    /// `<Play>`: a `Play` step, preceded by a `SendDtmf` step for Twilio's `digits`.
    fn play(&mut self, el: El<'_>, steps: &mut Vec<Step>) {
        let mut a = Attrs::of(el);
        let loops = a.loops(self);
        let terminators = a.terminators(self, "terminators", Terminators::all());
        let has_digits = a.has("digits");
        let digits = a.dtmf_digits(self, "digits");
        a.finish(self);
        let text = self.text_only(el);
        let media = text.trim_fast();
        if let Some(digits) = digits {
            steps.push(Step::SendDtmf(SendDtmf {
                digits,
                duration_ms: 250,
            }));
        }
        if !media.is_empty() {
            steps.push(Step::Play(Play {
                media: Media::parse(media),
                loops,
                terminators,
                answer: true,
            }));
        } else if !has_digits {
            let message = "<Play> has no media: give a URL as its text, or a digits attribute";
            self.error(el.offset, message);
        }
    }

    fn pause(&mut self, el: El<'_>) -> Pause {
        let mut a = Attrs::of(el);
        let length = a.int_capped(self, "length", 0, 3600, 1);
        a.finish(self);
        self.no_content(el);
        Pause {
            duration_ms: u64::from(length) * 1000,
        }
    }

    fn gather(&mut self, el: El<'_>) -> Gather {
        let mut a = Attrs::of(el);
        let action = a.url(self, "action");
        let method = a.method(self);
        let timeout_s = a.int_capped(self, "timeout", 1, 3600, 5);
        let finish_on_key = a.key(self, "finishOnKey", Some('#'));
        let num_digits = a.opt_int(self, "numDigits", 1, 128);
        let action_on_empty_result = a.bool(self, "actionOnEmptyResult", false);
        a.input(self);
        a.finish(self);
        let mut prompts = Vec::new();
        for item in el.content() {
            match item {
                Content::Text(text, at) if !is_blank(text) => {
                    let message = format!(
                        "text {} inside <Gather> is ignored",
                        quote(text.trim_fast())
                    );
                    self.warning(at, message);
                }
                Content::Text(..) => {}
                Content::Child(child) => self.prompt(child, &mut prompts),
            }
        }
        Gather {
            prompts,
            timeout_s,
            finish_on_key,
            num_digits,
            action,
            method,
            action_on_empty_result,
        }
    }

    fn prompt(&mut self, el: El<'_>, prompts: &mut Vec<Step>) {
        match el.name {
            "Say" => prompts.extend(self.say(el).map(Step::Say)),
            "Play" => self.play(el, prompts),
            "Pause" => prompts.push(Step::Pause(self.pause(el))),
            name => {
                let message = format!("{} is not allowed inside <Gather>", tag(name));
                self.error(el.offset, message);
            }
        }
    }

    fn record(&mut self, el: El<'_>) -> Record {
        let mut a = Attrs::of(el);
        let action = a.url(self, "action");
        let method = a.method(self);
        let silence = a.int(self, "timeout", 0, 3600, 5);
        let terminators = a.terminators(self, "finishOnKey", Terminators::all());
        let max_length_s = a.int(self, "maxLength", 1, 3600, 3600);
        let beep = a.bool(self, "playBeep", true);
        let storage_url = a.url(self, "recordingUrl");
        a.finish(self);
        self.no_content(el);
        Record {
            max_length_s,
            // Twilio's timeout="0" means "never stop on silence".
            silence_timeout_s: (silence > 0).then_some(silence),
            terminators,
            beep,
            action,
            method,
            storage_url,
            storage_method: StorageMethod::Put,
            format: AudioFormat::Mp3,
        }
    }

    fn dial(&mut self, el: El<'_>) -> Dial {
        let mut a = Attrs::of(el);
        let action = a.url(self, "action");
        let method = a.method(self);
        let timeout_s = a.int(self, "timeout", 1, 3600, 30);
        let caller_id = a.text("callerId");
        let record = a.choice(self, "record", RECORD_MODES, false);
        let hangup_on_star = a.bool(self, "hangupOnStar", false);
        // KAZOO's hangupOn names any key, so it wins over Twilio's star-only flag.
        let hangup_on = a
            .key(self, "hangupOn", None)
            .or(hangup_on_star.then_some('*'));
        let time_limit_s = a.int(self, "timeLimit", 1, 86_400, 14_400);
        let continue_on_fail = a.bool(self, "continueOnFail", true);
        let strategy = a.choice(self, "strategy", STRATEGIES, DialStrategy::Simultaneous);
        let collect_dtmf = a.bool(self, "collect_dtmf", false);
        a.finish(self);
        Dial {
            targets: self.dial_targets(el),
            timeout_s,
            caller_id,
            time_limit_s,
            action,
            method,
            record,
            hangup_on,
            continue_on_fail,
            strategy,
            collect_dtmf,
        }
    }

    /// What `<Dial>` rings: its text as a number, or its nouns — never both.
    fn dial_targets(&mut self, el: El<'_>) -> Vec<DialTarget> {
        // The indentation around nouns is the usual text: joined only when something is not
        // blank, since trimmed blank text is empty however it is joined.
        let mut has_text = false;
        let mut targets = Vec::new();
        let mut nouns = 0;
        let mut conference_at = None;
        for item in el.content() {
            match item {
                Content::Text(piece, _) => has_text |= !is_blank(piece),
                Content::Child(noun) => {
                    nouns += 1;
                    if noun.name == "Conference" {
                        conference_at = Some(noun.offset);
                    }
                    targets.extend(self.dial_noun(noun));
                }
            }
        }
        let mut text = Cow::Borrowed("");
        if has_text {
            for item in el.content() {
                if let Content::Text(piece, _) = item {
                    append(&mut text, piece);
                }
            }
        }
        let text = text.trim_fast();
        if nouns == 0 {
            if text.is_empty() {
                let message = "<Dial> has nothing to dial: give a number as its text, or nouns";
                self.error(el.offset, message);
            } else {
                targets.extend(self.number(el, text, None));
            }
        } else if !text.is_empty() {
            let message = format!(
                "<Dial> mixes text {} with nouns; put the number in a <Number>",
                quote(text)
            );
            self.error(el.offset, message);
        }
        if let Some(at) = conference_at.filter(|_| nouns > 1) {
            self.error(at, "<Conference> must be the only noun in its <Dial>");
        }
        targets
    }

    fn dial_noun(&mut self, noun: El<'_>) -> Option<DialTarget> {
        match noun.name {
            "Number" => {
                let mut a = Attrs::of(noun);
                let send_digits = a.dtmf_digits(self, "sendDigits");
                a.finish(self);
                let text = self.text_only(noun);
                self.number(noun, &text, send_digits)
            }
            "Sip" => self.sip(noun),
            "Conference" => self.conference(noun).map(DialTarget::Conference),
            "Device" => self.endpoint_id(noun).map(|id| DialTarget::Device { id }),
            "User" => self.endpoint_id(noun).map(|id| DialTarget::User { id }),
            name if UNSUPPORTED_NOUNS.contains(&name) => {
                let message = format!("{} is not supported by pivot inside <Dial>", tag(name));
                self.error(noun.offset, message);
                None
            }
            name => {
                let message = format!("{} is not allowed inside <Dial>", tag(name));
                self.error(noun.offset, message);
                None
            }
        }
    }

    /// A number as KAZOO cleans it: only `0-9` and `+` are kept.
    fn number(
        &mut self,
        el: El<'_>,
        text: &str,
        send_digits: Option<String>,
    ) -> Option<DialTarget> {
        let mut number = String::with_capacity(text.len());
        number.extend(text.chars().filter(|c| c.is_ascii_digit() || *c == '+'));
        if !number.bytes().any(|b| b.is_ascii_digit()) {
            let message = format!(
                "{} number {} has no digits",
                tag(el.name),
                quote(text.trim_fast())
            );
            self.error(el.offset, message);
            return None;
        }
        Some(DialTarget::Number {
            number: Some(number),
            send_digits,
        })
    }

    fn sip(&mut self, el: El<'_>) -> Option<DialTarget> {
        let mut a = Attrs::of(el);
        let username = a
            .raw("username")
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        let password = a
            .raw("password")
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        a.finish(self);
        let text = self.text_only(el);
        let uri = text.trim_fast();
        let scheme_ok =
            starts_with_ignore_case(uri, "sip:") || starts_with_ignore_case(uri, "sips:");
        if !scheme_ok || uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
            let message = format!("<Sip> needs a sip: or sips: URI, not {}", quote(uri));
            self.error(el.offset, message);
            return None;
        }
        Some(DialTarget::Sip {
            uri: uri.to_owned(),
            username,
            password,
        })
    }

    fn conference(&mut self, el: El<'_>) -> Option<Conference> {
        let mut a = Attrs::of(el);
        let start_on_enter = a.bool(self, "startConferenceOnEnter", true);
        let end_on_exit = a.bool(self, "endConferenceOnExit", false);
        let beep = a.choice(self, "beep", BEEP_MODES, true);
        let muted = a.bool(self, "muted", false);
        let max_participants = a.int(self, "maxParticipants", 2, 250, 250);
        let wait_media = a.text("waitUrl").map(|url| Media::parse(&url));
        a.finish(self);
        let text = self.text_only(el);
        let name = text.trim_fast();
        let chars = name.chars().count();
        if chars == 0 || chars > MAX_ROOM_CHARS {
            let message = format!(
                "<Conference> needs a room name of 1 to {MAX_ROOM_CHARS} characters as its text"
            );
            self.error(el.offset, message);
            return None;
        }
        Some(Conference {
            name: name.to_owned(),
            start_on_enter,
            end_on_exit,
            beep,
            muted,
            max_participants,
            wait_media,
        })
    }

    /// The id of a `<Device>` or `<User>` noun (KAZOO's own nouns).
    fn endpoint_id(&mut self, el: El<'_>) -> Option<String> {
        Attrs::of(el).finish(self);
        let text = self.text_only(el);
        let id = text.trim_fast();
        if id.is_empty() {
            let message = format!("{} needs an id as its text", tag(el.name));
            self.error(el.offset, message);
            return None;
        }
        Some(id.to_owned())
    }

    fn redirect(&mut self, el: El<'_>) -> Redirect {
        let mut a = Attrs::of(el);
        let method = a.method(self);
        a.finish(self);
        let mut text = Cow::Borrowed("");
        let mut variables = Vec::new();
        for item in el.content() {
            match item {
                Content::Text(piece, _) => append(&mut text, piece),
                Content::Child(child) if child.name == "Variable" => {
                    variables.extend(self.variable(child));
                }
                Content::Child(child) => {
                    let message = format!("{} is not allowed inside <Redirect>", tag(child.name));
                    self.error(child.offset, message);
                }
            }
        }
        let url = match check_url(&text) {
            Ok(url) => url,
            Err(why) => {
                self.error(el.offset, format!("<Redirect> URL {why}"));
                String::new()
            }
        };
        Redirect {
            url,
            method,
            variables,
        }
    }

    fn variable(&mut self, el: El<'_>) -> Option<Variable> {
        let mut a = Attrs::of(el);
        let key = a.raw("key").map(TrimFast::trim_fast);
        let value = a.raw("value");
        a.finish(self);
        self.no_content(el);
        match (key, value) {
            (Some(key), Some(value)) if !key.is_empty() => Some(Variable {
                key: key.to_owned(),
                value: value.to_owned(),
            }),
            (key, value) => {
                if key.is_none_or(str::is_empty) {
                    self.error(el.offset, "<Variable> needs a non-empty key attribute");
                }
                if value.is_none() {
                    let message = "<Variable> needs a value attribute (it may be empty)";
                    self.error(el.offset, message);
                }
                None
            }
        }
    }

    fn hangup(&mut self, el: El<'_>) -> Hangup {
        // Every attribute is unknown here: a warning, where KAZOO aborted the document.
        Attrs::of(el).finish(self);
        self.no_content(el);
        Hangup::default()
    }

    fn reject(&mut self, el: El<'_>) -> Reject {
        let mut a = Attrs::of(el);
        let reason = a.choice(self, "reason", REJECT_REASONS, RejectReason::Rejected);
        let prompt = a.text("prompt").map(|p| Media::parse(&p));
        a.finish(self);
        self.no_content(el);
        Reject { reason, prompt }
    }

    /// KAZOO's `<Set>`: user variables for later requests; `None` when it sets none.
    fn set(&mut self, el: El<'_>) -> Option<Step> {
        Attrs::of(el).finish(self);
        let mut variables = Vec::new();
        let mut children = 0;
        for item in el.content() {
            match item {
                Content::Text(text, at) if !is_blank(text) => {
                    let message = format!(
                        "<Set> contains text {}; only <Variable> children are allowed",
                        quote(text.trim_fast())
                    );
                    self.error(at, message);
                }
                Content::Text(..) => {}
                Content::Child(child) if child.name == "Variable" => {
                    children += 1;
                    variables.extend(self.variable(child));
                }
                Content::Child(child) => {
                    children += 1;
                    let message = format!("{} is not allowed inside <Set>", tag(child.name));
                    self.error(child.offset, message);
                }
            }
        }
        if children == 0 {
            self.warning(el.offset, "<Set> has no <Variable>; skipped");
            return None;
        }
        Some(Step::SetVariables(SetVariables {
            scope: VariableScope::User,
            variables,
            export: false,
        }))
    }

    /// The text of an element that may hold only text (`<Play>`, `<Number>`, …); borrowed
    /// from the tree when it is one run, as it nearly always is.
    fn text_only<'t>(&mut self, el: El<'t>) -> Cow<'t, str> {
        let mut text = Cow::Borrowed("");
        for item in el.content() {
            match item {
                Content::Text(piece, _) => append(&mut text, piece),
                Content::Child(child) => {
                    let message = format!("{} cannot contain {}", tag(el.name), tag(child.name));
                    self.error(child.offset, message);
                }
            }
        }
        text
    }

    /// Checks that an element holds nothing but whitespace.
    fn no_content(&mut self, el: El<'_>) {
        let text = self.text_only(el);
        if !is_blank(&text) {
            let message = format!(
                "{} must be empty, but contains text {}",
                tag(el.name),
                quote(text.trim_fast())
            );
            self.error(el.offset, message);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Attributes.

const RECORD_MODES: &[(&str, bool)] = &[
    ("true", true),
    ("false", false),
    ("record-from-answer", true),
    ("record-from-ringing", true),
    ("record-from-answer-dual", true),
    ("record-from-ringing-dual", true),
    ("do-not-record", false),
];

const BEEP_MODES: &[(&str, bool)] = &[
    ("true", true),
    ("false", false),
    ("onEnter", true),
    ("onExit", true),
];

const STRATEGIES: &[(&str, DialStrategy)] = &[
    ("simultaneous", DialStrategy::Simultaneous),
    ("single", DialStrategy::Single),
];

const REJECT_REASONS: &[(&str, RejectReason)] = &[
    ("rejected", RejectReason::Rejected),
    ("busy", RejectReason::Busy),
];

/// Terminator sets written often enough to share rather than allocate.
const COMMON_TERMINATORS: &[&str] = &["#", "*", "", "#*", "*#", "1234567890*#"];

/// Reads one element's attributes, remembering which were read so that
/// [`finish`](Attrs::finish) can warn about the rest.
struct Attrs<'t> {
    el: El<'t>,
    /// Bit `i` is set once attribute `i` has been read (pass 1 allows at most 64).
    used: u64,
}

impl<'t> Attrs<'t> {
    fn of(el: El<'t>) -> Self {
        Attrs { el, used: 0 }
    }

    fn has(&self, name: &str) -> bool {
        self.el.attrs.iter().any(|(k, _)| k == name)
    }

    /// The unescaped value as written, marked as read.
    fn raw(&mut self, name: &str) -> Option<&'t str> {
        let index = self.el.attrs.iter().position(|(k, _)| k == name)?;
        self.used |= 1u64.checked_shl(u32::try_from(index).ok()?).unwrap_or(0);
        self.el.attrs.get(index).map(|(_, v)| v.as_ref())
    }

    /// A free-form value, trimmed; empty counts as absent.
    fn text(&mut self, name: &str) -> Option<String> {
        let value = self.raw(name)?.trim_fast();
        (!value.is_empty()).then(|| value.to_owned())
    }

    fn bad(&self, cx: &mut Interp<'_>, name: &str, value: &str, expected: impl Display) {
        let message = format!(
            "{} attribute {} must be {expected}, not {}",
            tag(self.el.name),
            quote(name),
            quote(value)
        );
        cx.error(self.el.offset, message);
    }

    fn bool(&mut self, cx: &mut Interp<'_>, name: &str, default: bool) -> bool {
        self.choice(cx, name, &[("true", true), ("false", false)], default)
    }

    /// One of a fixed set of values, in any case.
    fn choice<T: Copy>(
        &mut self,
        cx: &mut Interp<'_>,
        name: &str,
        choices: &[(&str, T)],
        default: T,
    ) -> T {
        let Some(raw) = self.raw(name) else {
            return default;
        };
        let value = raw.trim_fast();
        if let Some((_, chosen)) = choices.iter().find(|(v, _)| v.eq_ignore_ascii_case(value)) {
            return *chosen;
        }
        let names: Vec<String> = choices.iter().map(|(v, _)| format!("{v:?}")).collect();
        self.bad(cx, name, raw, format_args!("one of {}", names.join(", ")));
        default
    }

    /// An integer in `min..=max`.
    fn int(&mut self, cx: &mut Interp<'_>, name: &str, min: u32, max: u32, default: u32) -> u32 {
        self.opt_int(cx, name, min, max).unwrap_or(default)
    }

    fn opt_int(&mut self, cx: &mut Interp<'_>, name: &str, min: u32, max: u32) -> Option<u32> {
        let raw = self.raw(name)?;
        match parse_int(raw) {
            Some(n) if (i64::from(min)..=i64::from(max)).contains(&n) => u32::try_from(n).ok(),
            Some(_) => {
                self.bad(cx, name, raw, format_args!("from {min} to {max}"));
                None
            }
            None => {
                self.bad(cx, name, raw, "a whole number");
                None
            }
        }
    }

    /// An integer of at least `min`; above `cap` it is capped with a warning, as KAZOO caps.
    fn int_capped(
        &mut self,
        cx: &mut Interp<'_>,
        name: &str,
        min: u32,
        cap: u32,
        default: u32,
    ) -> u32 {
        let Some(raw) = self.raw(name) else {
            return default;
        };
        match parse_int(raw) {
            Some(n) if n > i64::from(cap) => {
                let message = format!(
                    "{} attribute {} is {}; capped at {cap}",
                    tag(self.el.name),
                    quote(name),
                    quote(raw)
                );
                cx.warning(self.el.offset, message);
                cap
            }
            Some(n) if n >= i64::from(min) => u32::try_from(n).unwrap_or(default),
            Some(_) => {
                self.bad(cx, name, raw, format_args!("at least {min}"));
                default
            }
            None => {
                self.bad(cx, name, raw, "a whole number");
                default
            }
        }
    }

    fn loops(&mut self, cx: &mut Interp<'_>) -> u32 {
        self.int(cx, "loop", 0, 1000, 1)
    }

    /// `method`: GET or POST in any case, POST by default (KAZOO's code, not its docs).
    fn method(&mut self, cx: &mut Interp<'_>) -> HttpMethod {
        let Some(raw) = self.raw("method") else {
            return HttpMethod::Post;
        };
        HttpMethod::parse(raw.trim_fast()).unwrap_or_else(|| {
            self.bad(cx, "method", raw, "GET or POST");
            HttpMethod::Post
        })
    }

    /// A URL, absolute or relative to the document (the webhook layer resolves it).
    fn url(&mut self, cx: &mut Interp<'_>, name: &str) -> Option<String> {
        let raw = self.raw(name)?;
        match check_url(raw) {
            Ok(url) => Some(url),
            Err(why) => {
                let message = format!("{} attribute {} {why}", tag(self.el.name), quote(name));
                cx.error(self.el.offset, message);
                None
            }
        }
    }

    /// A set of DTMF keys; `""` is none. Repeats are dropped to keep [`Terminators`]' invariant.
    fn terminators(
        &mut self,
        cx: &mut Interp<'_>,
        name: &str,
        default: Terminators,
    ) -> Terminators {
        let Some(raw) = self.raw(name) else {
            return default;
        };
        let keys = raw.trim_fast();
        if !keys.chars().all(is_dtmf) {
            self.bad(cx, name, raw, "keys from 0-9, *, #, A-D");
            return default;
        }
        let distinct = keys
            .char_indices()
            .all(|(i, key)| !keys.get(..i).unwrap_or_default().contains(key));
        if distinct {
            // The usual sets are shared constants, so most steps need no allocation here.
            let common = COMMON_TERMINATORS.iter().find(|common| **common == keys);
            return Terminators(
                common.map_or_else(|| Cow::Owned(keys.to_owned()), |c| Cow::Borrowed(*c)),
            );
        }
        let mut set = String::new();
        for key in keys.chars() {
            if !set.contains(key) {
                set.push(key);
            }
        }
        Terminators(Cow::Owned(set))
    }

    /// A single DTMF key; `""` is none.
    fn key(&mut self, cx: &mut Interp<'_>, name: &str, default: Option<char>) -> Option<char> {
        let Some(raw) = self.raw(name) else {
            return default;
        };
        let mut chars = raw.trim_fast().chars();
        match (chars.next(), chars.next()) {
            (None, _) => None,
            (Some(key), None) if is_dtmf(key) => Some(key),
            _ => {
                self.bad(cx, name, raw, "one key from 0-9, *, #, A-D, or \"\"");
                default
            }
        }
    }

    /// Digits to send as tones: DTMF keys plus Twilio's `w` (0.5 s) and `W` (1 s) pauses.
    fn dtmf_digits(&mut self, cx: &mut Interp<'_>, name: &str) -> Option<String> {
        let raw = self.raw(name)?;
        let digits = raw.trim_fast();
        let count = digits.chars().count();
        let valid = digits.chars().all(|c| is_dtmf(c) || c == 'w' || c == 'W');
        if !valid || count == 0 || count > MAX_DIGITS {
            let expected = format_args!("1 to {MAX_DIGITS} of 0-9, *, #, A-D, w, W");
            self.bad(cx, name, raw, expected);
            return None;
        }
        Some(digits.to_owned())
    }

    /// `<Gather input>`: only DTMF is collected; speech recognition is not available.
    fn input(&mut self, cx: &mut Interp<'_>) {
        let Some(raw) = self.raw("input") else {
            return;
        };
        let modes: Vec<&str> = raw.split_whitespace().collect();
        let known = |m: &&str| m.eq_ignore_ascii_case("dtmf") || m.eq_ignore_ascii_case("speech");
        if modes.is_empty() || !modes.iter().all(known) {
            self.bad(cx, "input", raw, "\"dtmf\", \"speech\" or \"dtmf speech\"");
        } else if !modes.iter().any(|m| m.eq_ignore_ascii_case("dtmf")) {
            let message = "<Gather input=\"speech\"> is not supported by pivot: speech \
                           recognition is unavailable; use input=\"dtmf\"";
            cx.error(self.el.offset, message);
        } else if modes.len() > 1 {
            let message = "<Gather> attribute \"input\": speech is not supported by pivot and is \
                           ignored; only DTMF is collected";
            cx.warning(self.el.offset, message);
        }
    }

    /// Warns about every attribute no reader asked for.
    fn finish(self, cx: &mut Interp<'_>) {
        for (index, (name, _)) in self.el.attrs.iter().enumerate() {
            let used = u32::try_from(index)
                .ok()
                .and_then(|i| 1u64.checked_shl(i))
                .is_some_and(|bit| self.used & bit != 0);
            // Namespace declarations are XML plumbing, not TwiML.
            if used || name == "xmlns" || name.starts_with("xmlns:") {
                continue;
            }
            let why = if is_ignored_twilio_attribute(self.el.name, name) {
                "is not supported by pivot; ignored"
            } else {
                "is not known; ignored"
            };
            let message = format!("{} attribute {} {why}", tag(self.el.name), quote(name));
            cx.warning(self.el.offset, message);
        }
    }
}

fn is_ignored_twilio_attribute(element: &str, name: &str) -> bool {
    IGNORED_ATTRIBUTES.contains(&name)
        || matches!(
            (element, name),
            ("Gather", "language")
                | ("Number" | "Sip", "url" | "method")
                | ("Conference", "record")
        )
}

// ---------------------------------------------------------------------------------------------
// Small helpers.

/// A plain decimal integer (optional sign). Too many digits is still a number, just out of
/// every range, so it saturates instead of being "not a number".
fn parse_int(value: &str) -> Option<i64> {
    // Fast path for what documents nearly always hold: a few bare digits.
    let bytes = value.as_bytes();
    if !bytes.is_empty() && bytes.len() <= 9 && bytes.iter().all(u8::is_ascii_digit) {
        return Some(bytes.iter().fold(0, |n, &b| n * 10 + i64::from(b - b'0')));
    }
    let value = value.trim_fast();
    let (negative, digits) = match value.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, value.strip_prefix('+').unwrap_or(value)),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = digits.parse::<i64>().unwrap_or(i64::MAX);
    Some(if negative { -n } else { n })
}

/// A URL as written, trimmed; relative URLs are kept for the webhook layer to resolve.
fn check_url(value: &str) -> Result<String, String> {
    let url = value.trim_fast();
    if url.is_empty() {
        return Err("is missing or empty".to_owned());
    }
    // Printable ASCII is the common case; only other text needs the Unicode checks.
    let printable = |b: u8| (0x21..0x7F).contains(&b);
    if !url.bytes().all(printable) && url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{} contains whitespace or control characters",
            quote(url)
        ));
    }
    Ok(url.to_owned())
}

/// Twilio's generic voices map to KAZOO's genders; provider voices are kept for the TTS
/// configuration to map (unknown ones fall back to the default voice at run time).
/// ASCII text whose only whitespace is single spaces between words.
fn is_plain_prose(text: &str) -> bool {
    let bytes = text.as_bytes();
    let edges_ok = !bytes.first().is_some_and(u8::is_ascii_whitespace)
        && !bytes.last().is_some_and(u8::is_ascii_whitespace);
    if !edges_ok {
        return false;
    }
    // This runs over every byte of every `<Say>`: eight bytes at a time while they are plain
    // printable ASCII, the exact byte loop below for the tail and for anything else.
    let mut chunks = bytes.chunks_exact(8);
    let mut previous_space = false;
    for chunk in chunks.by_ref() {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGH: u64 = 0x8080_8080_8080_8080;
        if w & HIGH != 0 {
            return false;
        }
        // Some byte below 0x20: control characters, of which only some are refused.
        if w.wrapping_sub(ONES * 0x20) & !w & HIGH != 0 {
            return is_plain_prose_bytes(bytes, false);
        }
        // High bit of each byte set exactly where the byte is a space.
        let y = w ^ (ONES * 0x20);
        let spaces = !(((y & !HIGH).wrapping_add(!HIGH)) | y | !HIGH);
        if spaces & (spaces >> 8) != 0 || (previous_space && spaces & 0x80 != 0) {
            return false;
        }
        previous_space = spaces >> 63 != 0;
    }
    is_plain_prose_bytes(chunks.remainder(), previous_space)
}

/// The byte loop of [`is_plain_prose`], after a space when `previous_space`.
fn is_plain_prose_bytes(bytes: &[u8], mut previous_space: bool) -> bool {
    for &b in bytes {
        if b == b' ' {
            if previous_space {
                return false;
            }
            previous_space = true;
        } else if b.is_ascii() && !b.is_ascii_whitespace() {
            previous_space = false;
        } else {
            return false;
        }
    }
    true
}

/// An empty voice is no voice.
fn normalize_voice(voice: &str) -> Option<String> {
    let voice = voice.trim_fast();
    let normalized = if voice.eq_ignore_ascii_case("man") || voice.eq_ignore_ascii_case("male") {
        "male"
    } else if voice.eq_ignore_ascii_case("woman") || voice.eq_ignore_ascii_case("female") {
        "female"
    } else {
        voice
    };
    (!normalized.is_empty()).then(|| normalized.to_owned())
}

/// `<Say>` text being assembled from pieces: whitespace runs collapse to one space, and the
/// ends are trimmed, in one pass.
#[derive(Debug, Default)]
struct Speech {
    text: String,
    /// A word boundary was seen since the last word.
    space: bool,
}

impl Speech {
    fn push(&mut self, piece: &str) {
        if piece.starts_with(char::is_whitespace) {
            self.space();
        }
        self.text.reserve(piece.len());
        if is_plain_prose(piece) {
            // Nothing to collapse: the common case, copied in one go.
            if self.space && !self.text.is_empty() {
                self.text.push(' ');
            }
            self.text.push_str(piece);
            self.space = false;
            return;
        }
        // The byte-wise split is much faster and gives the same words on ASCII text.
        if piece.is_ascii() {
            self.push_words(piece.split_ascii_whitespace());
        } else {
            self.push_words(piece.split_whitespace());
        }
        if !piece.is_empty() {
            self.space = piece.ends_with(char::is_whitespace);
        }
    }

    fn push_words<'w>(&mut self, words: impl Iterator<Item = &'w str>) {
        for word in words {
            if self.space && !self.text.is_empty() {
                self.text.push(' ');
            }
            self.text.push_str(word);
            // Words of one piece are separated by whitespace.
            self.space = true;
        }
    }

    fn space(&mut self) {
        self.space = true;
    }
}

/// `str::trim` with a shortcut: attribute values and texts rarely have whitespace at either
/// end, and a printable ASCII byte at each end means there is nothing to trim.
trait TrimFast {
    fn trim_fast(&self) -> &str;
}

impl TrimFast for str {
    fn trim_fast(&self) -> &str {
        let printable = |b: &u8| (0x21..0x7F).contains(b);
        let bytes = self.as_bytes();
        if bytes.first().is_some_and(printable) && bytes.last().is_some_and(printable) {
            self
        } else {
            self.trim()
        }
    }
}

/// Appends a run of character data, borrowing while there is only one.
fn append<'t>(text: &mut Cow<'t, str>, piece: &'t str) {
    if text.is_empty() {
        *text = Cow::Borrowed(piece);
    } else {
        text.to_mut().push_str(piece);
    }
}

fn starts_with_ignore_case(text: &str, prefix: &str) -> bool {
    text.get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

fn is_blank(text: &str) -> bool {
    // Indentation between elements is the common case: check its bytes before going Unicode.
    text.bytes().all(|b| b.is_ascii_whitespace()) || text.trim_fast().is_empty()
}

/// `<Name>`, with a hostile name shortened.
fn tag(name: &str) -> String {
    format!("<{}>", clip(name))
}

/// A value quoted for a message, shortened on a character boundary.
fn quote(value: &str) -> String {
    format!("{:?}", clip(value))
}

fn clip(text: &str) -> Cow<'_, str> {
    match text.char_indices().nth(MAX_QUOTED_CHARS) {
        Some((end, _)) => Cow::Owned(format!("{}…", text.get(..end).unwrap_or_default())),
        None => Cow::Borrowed(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_matches_position_of_in_any_order() {
        let body = "\u{feff}<a>\n  é<b/>\r\n\tx\n\n<c>ü</c>".as_bytes();
        let boundaries: Vec<usize> = (0..=body.len())
            .filter(|&i| i == body.len() || body[i] & 0xC0 != 0x80)
            .collect();
        let mut cursor = Cursor::default();
        for &i in boundaries.iter().chain(boundaries.iter().rev()) {
            assert_eq!(cursor.locate(body, i), position_of(body, i), "offset {i}");
        }
    }

    #[test]
    fn plain_attributes_read_as_quick_xml_reads_them() {
        let tags = [
            "Say",
            "Say ",
            "Say voice=\"alice\" language='en-US'",
            "Say  voice=\"a b\"\n\tloop=\"2\"  ",
            "Say a=\"1\"b=\"2\"",
            "Say a=\"\"",
            "Say a=\"it's\" b='say \"hi\"'",
            "Say a=\"x&amp;y\"",
            "Say a=\"line\nbreak\"",
            "Say a = \"1\"",
            "Say a=1",
            "Say a",
            "Say a=\"1",
            "Say =\"1\"",
            "Say a=\"1\" a=\"2\"",
            "Say x:y=\"1\" é=\"ü\"",
        ];
        for raw in tags {
            let mut fast = Vec::new();
            let mut full = Vec::new();
            let full_result = read_attributes_in_full(raw, 3, &mut full);
            if read_plain_attributes(raw, 3, &mut fast).is_some() {
                assert_eq!(full_result, Ok(()), "{raw}");
                assert_eq!(fast, full, "{raw}");
            }
            let mut combined = Vec::new();
            assert_eq!(read_attributes(raw, 3, &mut combined), full_result, "{raw}");
            assert_eq!(combined, full, "{raw}");
        }
    }

    #[test]
    fn plain_prose_word_at_a_time_matches_bytes() {
        let reference = |text: &str| {
            let bytes = text.as_bytes();
            let edges_ok = !bytes.first().is_some_and(u8::is_ascii_whitespace)
                && !bytes.last().is_some_and(u8::is_ascii_whitespace);
            let mut previous_space = false;
            edges_ok
                && bytes.iter().all(|&b| {
                    let space = b == b' ';
                    let ok = b.is_ascii()
                        && !(space && previous_space)
                        && (space || !b.is_ascii_whitespace());
                    previous_space = space;
                    ok
                })
        };
        let alphabet = [
            "a", " ", "  ", "\t", "\n", "\u{b}", "\u{1}", "é", "~", "\u{7f}", "Zz",
        ];
        // Every string of up to five pieces from a small seed, at every alignment.
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut text = String::new();
            let mut state = seed;
            for _ in 0..(seed % 24) {
                let index = usize::try_from(state % 11).unwrap_or(0);
                text.push_str(if state % 7 < 4 { "w" } else { alphabet[index] });
                state /= 13;
                if state == 0 {
                    state = seed.rotate_left(17);
                }
            }
            assert_eq!(is_plain_prose(&text), reference(&text), "{text:?}");
        }
        for text in [
            "",
            "a",
            "a b",
            "a  b",
            "abcdefg  h",
            "abcdefgh ij",
            "abcdefg h i",
            " a",
        ] {
            assert_eq!(is_plain_prose(text), reference(text), "{text:?}");
        }
    }

    #[test]
    fn integers_are_plain_decimal() {
        assert_eq!(parse_int(" 42 "), Some(42));
        assert_eq!(parse_int("-3"), Some(-3));
        assert_eq!(parse_int("99999999999999999999999"), Some(i64::MAX));
        assert_eq!(parse_int("1.5"), None);
        assert_eq!(parse_int("0x10"), None);
        assert_eq!(parse_int(""), None);
        assert_eq!(parse_int("-"), None);
    }

    #[test]
    fn clipping_respects_characters() {
        let long = "é".repeat(100);
        let clipped = clip(&long);
        assert_eq!(clipped.chars().count(), MAX_QUOTED_CHARS + 1);
        assert!(clipped.ends_with('…'));
        assert_eq!(clip("short"), "short");
    }
}
