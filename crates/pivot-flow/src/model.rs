//! The typed flow both formats parse into.
//!
//! One step vocabulary serves KAZOO callflow JSON and TwiML: a KAZOO document is a tree of
//! [`Node`]s (a step plus branches keyed by `_`, digits, `timeout`, `max_retries`), a TwiML
//! document is a sequence of [`Step`]s run top to bottom. Every value here has already been
//! validated and carries its default, so an executor never re-checks ranges.
//!
//! Durations carry their unit in the field name. Everything is plain data: `Serialize` for the
//! JSON that `pivotd check` prints and that checkpoints store, `Deserialize` to read it back
//! (see [`Flow::from_json`]).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[cfg(feature = "arbitrary")]
use arbitrary::Arbitrary;

/// A parsed, validated document from a pivot app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
#[serde(tag = "format", rename_all = "snake_case")]
pub enum Flow {
    /// A KAZOO callflow: the response body is one node whose children are further nodes.
    Kazoo { root: Node },
    /// A TwiML `<Response>`: verbs run in order; the end of the list hangs up.
    Twiml { steps: Vec<Step> },
}

/// Which of the two formats a body is (or is claimed to be).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Kazoo,
    Twiml,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Kazoo => "kazoo",
            Format::Twiml => "twiml",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One KAZOO callflow node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct Node {
    pub step: Step,
    /// KAZOO's generic `skip_module` flag: the node is not run and execution follows `_`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub skip_module: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub children: BTreeMap<Branch, Node>,
}

impl Node {
    /// The child taken for `branch`, falling back to `_` as KAZOO's executor does.
    pub fn child(&self, branch: &Branch) -> Option<&Node> {
        self.children
            .get(branch)
            .or_else(|| self.children.get(&Branch::Default))
    }
}

/// A key of a node's `children`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Branch {
    /// `_`: the next node, and the failure branch of `pivot`.
    Default,
    /// Digits a caller pressed in a `menu` (`"1"`, `"0#"`, `"*"`).
    Digits(String),
    /// `timeout`: a `menu` got no input.
    Timeout,
    /// `max_retries`: a `menu` ran out of retries.
    MaxRetries,
    /// Any other key; only modules pivot does not know use these, so they are kept as written.
    Other(String),
}

impl Branch {
    /// Reads a `children` key as KAZOO writes it.
    pub fn parse(key: &str) -> Branch {
        match key {
            "_" => Branch::Default,
            "timeout" => Branch::Timeout,
            "max_retries" => Branch::MaxRetries,
            k if !k.is_empty() && k.chars().all(is_dtmf) => Branch::Digits(k.to_owned()),
            k => Branch::Other(k.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Branch::Default => "_",
            Branch::Digits(d) => d,
            Branch::Timeout => "timeout",
            Branch::MaxRetries => "max_retries",
            Branch::Other(k) => k,
        }
    }
}

/// Built from an arbitrary key through [`Branch::parse`], so that every generated branch is one
/// a document could contain (a `Digits("_")` could not be written and read back).
#[cfg(feature = "arbitrary")]
impl<'a> Arbitrary<'a> for Branch {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        let key: String = u.arbitrary()?;
        Ok(Branch::parse(&key))
    }
}

impl fmt::Display for Branch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Branch {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Branch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let key = String::deserialize(deserializer)?;
        Ok(Branch::parse(&key))
    }
}

/// True for the sixteen DTMF symbols pivot accepts: `0`-`9`, `*`, `#` and `A`-`D`.
pub fn is_dtmf(c: char) -> bool {
    c.is_ascii_digit() || matches!(c, '*' | '#' | 'A'..='D')
}

/// One thing the call does. Shared by both formats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Step {
    /// Answer the channel (KAZOO `answer`).
    Answer,
    /// Do nothing and continue (KAZOO `noop`).
    Noop,
    /// Text to speech (KAZOO `tts`/`say`, TwiML `<Say>`).
    Say(Say),
    /// Play media (KAZOO `play`, TwiML `<Play>`).
    Play(Play),
    /// Silence (KAZOO `sleep`, TwiML `<Pause>`).
    Pause(Pause),
    /// Collect digits, then request `action` (TwiML `<Gather>`).
    Gather(Gather),
    /// Collect digits into a named collection sent as `Digits[name]` (KAZOO `collect_dtmf`).
    CollectDtmf(CollectDtmf),
    /// Prompt and branch on the digits pressed (KAZOO `menu`, inline).
    Menu(Menu),
    /// Record the caller (KAZOO `record_caller`, TwiML `<Record>`).
    Record(Record),
    /// Call out and bridge (KAZOO `resources`/`offnet`/`device`/`user`, TwiML `<Dial>`).
    Dial(Dial),
    /// Join an ad-hoc conference by name (KAZOO `conference`).
    Conference(Conference),
    /// Fetch the next document from a URL (TwiML `<Redirect>`).
    Redirect(Redirect),
    /// End the call (KAZOO `hangup`, TwiML `<Hangup>`).
    Hangup(Hangup),
    /// Refuse the call without answering (TwiML `<Reject>`).
    Reject(Reject),
    /// Answer with a SIP response / hangup cause (KAZOO `response`).
    Respond(Respond),
    /// Remember variables sent on later requests (KAZOO `set_variables`, TwiML `<Set>`).
    SetVariables(SetVariables),
    /// Set one channel variable on the switch (KAZOO `set_variable`).
    SetChannelVariable(SetChannelVariable),
    /// Send DTMF tones into the call (KAZOO `send_dtmf`, TwiML `<Play digits>`).
    SendDtmf(SendDtmf),
    /// Transfer the caller to an extension (KAZOO `transfer`).
    Transfer(Transfer),
    /// Park the caller in a slot (KAZOO `park`).
    Park(Park),
    /// Fire-and-forget HTTP notification (KAZOO `webhook`).
    Webhook(Webhook),
    /// Ask a pivot app what to do next (KAZOO `pivot`).
    Pivot(Pivot),
    /// A KAZOO module pivot does not run: kept as written, reported, skipped to `_`.
    Unknown(UnknownModule),
}

impl Step {
    /// The name used in metrics (`pivot_flow_steps_total{module}`) and diagnostics.
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Answer => "answer",
            Step::Noop => "noop",
            Step::Say(_) => "say",
            Step::Play(_) => "play",
            Step::Pause(_) => "pause",
            Step::Gather(_) => "gather",
            Step::CollectDtmf(_) => "collect_dtmf",
            Step::Menu(_) => "menu",
            Step::Record(_) => "record",
            Step::Dial(_) => "dial",
            Step::Conference(_) => "conference",
            Step::Redirect(_) => "redirect",
            Step::Hangup(_) => "hangup",
            Step::Reject(_) => "reject",
            Step::Respond(_) => "respond",
            Step::SetVariables(_) => "set_variables",
            Step::SetChannelVariable(_) => "set_channel_variable",
            Step::SendDtmf(_) => "send_dtmf",
            Step::Transfer(_) => "transfer",
            Step::Park(_) => "park",
            Step::Webhook(_) => "webhook",
            Step::Pivot(_) => "pivot",
            Step::Unknown(_) => "unknown",
        }
    }
}

/// HTTP method of a pivot request or a TwiML follow-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
#[serde(rename_all = "lowercase")]
pub enum HttpMethod {
    Get,
    Post,
}

impl HttpMethod {
    /// `get`/`post` in any case.
    pub fn parse(s: &str) -> Option<HttpMethod> {
        if s.eq_ignore_ascii_case("get") {
            Some(HttpMethod::Get)
        } else if s.eq_ignore_ascii_case("post") {
            Some(HttpMethod::Post)
        } else {
            None
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Post => "POST",
        }
    }
}

/// DTMF keys that end a prompt or a recording, e.g. `"#"` or `"0123456789*#"`. Empty means none.
///
/// Invariant: every char satisfies [`is_dtmf`] and none repeats (checked by the parsers).
///
/// A `Cow` so that the defaults every prompt carries ([`all`](Terminators::all), `"#"`, …) are
/// borrowed constants rather than one allocation per step; parsed sets are owned. Either way
/// the JSON form is the same plain string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Terminators(pub Cow<'static, str>);

impl Terminators {
    /// KAZOO's default for prompts: any key stops playback.
    pub fn all() -> Terminators {
        Terminators(Cow::Borrowed("1234567890*#"))
    }

    pub fn none() -> Terminators {
        Terminators(Cow::Borrowed(""))
    }

    pub fn contains(&self, key: char) -> bool {
        self.0.contains(key)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Generated from an arbitrary string, as the derive did when the field was a `String` (the
/// derive cannot produce a `Cow<'static, _>` from borrowed fuzz input).
#[cfg(feature = "arbitrary")]
impl<'a> Arbitrary<'a> for Terminators {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        let keys: String = u.arbitrary()?;
        Ok(Terminators(Cow::Owned(keys)))
    }

    fn arbitrary_take_rest(u: arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        let keys = String::arbitrary_take_rest(u)?;
        Ok(Terminators(Cow::Owned(keys)))
    }

    fn size_hint(depth: usize) -> (usize, Option<usize>) {
        <String as Arbitrary<'a>>::size_hint(depth)
    }
}

/// What a `play` plays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Media {
    /// An absolute `http`/`https` URL, fetched by the switch (through its HTTP cache).
    Url(String),
    /// A `tone_stream://` definition played by the switch.
    Tone(String),
    /// `tts://<text>`: KAZOO's way of putting speech where media is expected.
    Tts(String),
    /// Anything else: a file or sound name the switch resolves, or a reference relative to the
    /// document's URL (resolved by the webhook layer, which knows that URL).
    Path(String),
}

impl Media {
    /// Classifies a media reference as KAZOO and TwiML write them.
    pub fn parse(reference: &str) -> Media {
        // `get` rather than slicing: a prefix length may fall inside a multi-byte character.
        let lower_prefix = |p: &str| {
            reference
                .get(..p.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(p))
        };
        if lower_prefix("http://") || lower_prefix("https://") {
            Media::Url(reference.to_owned())
        } else if lower_prefix("tone_stream://") {
            Media::Tone(reference.to_owned())
        } else if lower_prefix("tts://") {
            Media::Tts(
                reference
                    .get("tts://".len()..)
                    .unwrap_or_default()
                    .to_owned(),
            )
        } else {
            Media::Path(reference.to_owned())
        }
    }
}

/// `Say`: speak text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct Say {
    pub text: String,
    /// `male`, `female`, or a provider voice name (`alice`, `Polly.Joanna`); mapped through the
    /// node's TTS configuration at run time, unknown names falling back to the default voice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// TTS engine (KAZOO extension), e.g. `flite`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// Times to speak it; 0 repeats until the caller hangs up or presses a terminator.
    pub loops: u32,
    pub terminators: Terminators,
}

/// `Play`: play media.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct Play {
    pub media: Media,
    /// Times to play it; 0 repeats until the caller hangs up or presses a terminator.
    pub loops: u32,
    pub terminators: Terminators,
    /// Answer the call first (KAZOO `answer`, default true).
    pub answer: bool,
}

/// `Pause`/`sleep`: silence for a while.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct Pause {
    pub duration_ms: u64,
}

/// TwiML `<Gather>`: play nested prompts while collecting digits, then request `action`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct Gather {
    /// `Say`, `Play`, `Pause` and `SendDtmf` steps; the first key pressed stops them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prompts: Vec<Step>,
    /// Seconds to wait for the first key after the prompts, and between keys.
    pub timeout_s: u32,
    /// The key that ends input (not included in `Digits`); `None` when `finishOnKey=""`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_on_key: Option<char>,
    /// Stop after this many digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_digits: Option<u32>,
    /// Where the digits go; `None` re-requests the current document URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    pub method: HttpMethod,
    /// Twilio's `actionOnEmptyResult`: request `action` even when nothing was pressed.
    #[serde(default, skip_serializing_if = "is_false")]
    pub action_on_empty_result: bool,
}

/// KAZOO `collect_dtmf`: gather digits into a collection for the next pivot request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct CollectDtmf {
    pub max_digits: u32,
    /// Wait for the first digit.
    pub timeout_ms: u64,
    /// Wait between digits.
    pub interdigit_timeout_ms: u64,
    pub terminators: Terminators,
    /// Sent as `Digits[<collection_name>]`.
    pub collection_name: String,
}

/// KAZOO `menu`, defined inline: prompt, collect, branch on the digits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct Menu {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub greeting: Option<Media>,
    /// Played after a key with no branch; `None` plays nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_media: Option<Media>,
    /// Played when retries run out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_media: Option<Media>,
    /// Attempts before the `max_retries` branch.
    pub retries: u32,
    /// Wait for the first key after the greeting.
    pub timeout_ms: u64,
    pub interdigit_timeout_ms: u64,
    /// Longest key sequence a branch can have.
    pub max_extension_length: u32,
}

/// File format of a recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
#[serde(rename_all = "lowercase")]
pub enum AudioFormat {
    Mp3,
    Wav,
}

/// How a recording is uploaded to its storage URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
#[serde(rename_all = "lowercase")]
pub enum StorageMethod {
    Put,
    Post,
}

/// `Record`: record the caller, store the file, optionally request `action`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct Record {
    pub max_length_s: u32,
    /// Seconds of silence that end the recording; `None` never stops on silence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silence_timeout_s: Option<u32>,
    pub terminators: Terminators,
    pub beep: bool,
    /// TwiML follow-up URL; `None` for KAZOO (continue to `_`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    pub method: HttpMethod,
    /// Where the file is uploaded (KAZOO `url`, TwiML `recordingUrl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_url: Option<String>,
    pub storage_method: StorageMethod,
    pub format: AudioFormat,
}

/// How several dial targets ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
#[serde(rename_all = "snake_case")]
pub enum DialStrategy {
    Simultaneous,
    Single,
}

/// Something a `Dial` rings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DialTarget {
    /// A phone number through the configured gateway; `None` dials the number the caller
    /// dialled (KAZOO `resources` without `to_did`).
    Number {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        number: Option<String>,
        /// DTMF sent once the far end answers (`w` waits half a second).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        send_digits: Option<String>,
    },
    /// A SIP URI.
    Sip {
        uri: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        username: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        password: Option<String>,
    },
    /// A configured SIP endpoint by id (KAZOO `device`, TwiML `<Device>`).
    Device { id: String },
    /// A configured user's endpoints (KAZOO `user`, TwiML `<User>`).
    User { id: String },
    /// An ad-hoc conference room (TwiML `<Dial><Conference>`); always the only target.
    Conference(Conference),
}

/// `Dial`: ring targets and bridge the caller to whoever answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct Dial {
    pub targets: Vec<DialTarget>,
    /// Seconds to wait for an answer.
    pub timeout_s: u32,
    /// Caller-id number presented to the far end; `None` keeps the caller's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller_id: Option<String>,
    /// Longest bridged duration.
    pub time_limit_s: u32,
    /// TwiML follow-up; `None` continues with the next step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    pub method: HttpMethod,
    pub record: bool,
    /// Key the caller presses to leave the bridge (`hangupOnStar` is `*`, KAZOO `hangupOn`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hangup_on: Option<char>,
    /// Continue after a failed bridge rather than hanging up (KAZOO extension, default true).
    pub continue_on_fail: bool,
    pub strategy: DialStrategy,
    /// Collect the caller's DTMF during the bridge and send it as `Digits` (KAZOO extension).
    #[serde(default, skip_serializing_if = "is_false")]
    pub collect_dtmf: bool,
}

/// An ad-hoc conference room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct Conference {
    pub name: String,
    /// The conference starts when this participant enters (a moderator).
    pub start_on_enter: bool,
    /// The conference ends when this participant leaves.
    pub end_on_exit: bool,
    /// Tone on entry and exit.
    pub beep: bool,
    pub muted: bool,
    pub max_participants: u32,
    /// Music while waiting for the conference to start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_media: Option<Media>,
}

/// A key/value remembered for later requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct Variable {
    pub key: String,
    pub value: String,
}

/// TwiML `<Redirect>`: fetch the next document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct Redirect {
    pub url: String,
    pub method: HttpMethod,
    /// `<Variable>` children, stored as user variables before the request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variables: Vec<Variable>,
}

/// End the call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct Hangup {
    /// Hangup cause to signal, e.g. `NORMAL_CLEARING`; `None` is a normal clearing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
}

/// Why a `<Reject>` refuses the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// SIP 503; `CallStatus=no-answer`.
    Rejected,
    /// SIP 486; `CallStatus=busy`.
    Busy,
}

impl RejectReason {
    pub fn sip_code(self) -> u16 {
        match self {
            RejectReason::Rejected => 503,
            RejectReason::Busy => 486,
        }
    }
}

/// TwiML `<Reject>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct Reject {
    pub reason: RejectReason,
    /// Media played before the rejection (KAZOO extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<Media>,
}

/// KAZOO `response`: a SIP response code (and optional media first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct Respond {
    pub code: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<Media>,
}

/// Where [`SetVariables`] puts its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
#[serde(rename_all = "snake_case")]
pub enum VariableScope {
    /// TwiML user variables, sent as `key=value` on later requests.
    User,
    /// KAZOO `Custom-Application-Vars`, sent as `Custom-Application-Vars[key]=value`.
    CustomApplication,
}

/// Remember variables for later requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct SetVariables {
    pub scope: VariableScope,
    pub variables: Vec<Variable>,
    /// KAZOO `export`: also set them on the bridged leg.
    #[serde(default, skip_serializing_if = "is_false")]
    pub export: bool,
}

/// Which legs a channel variable is set on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
#[serde(rename_all = "snake_case")]
pub enum ChannelScope {
    /// The caller's leg only.
    A,
    Both,
}

/// KAZOO `set_variable`: one channel variable on the switch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct SetChannelVariable {
    pub variable: String,
    pub value: String,
    pub channel: ChannelScope,
}

/// Send DTMF into the call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct SendDtmf {
    /// DTMF symbols; `w` waits 0.5 s and `W` waits 1 s, as in Twilio's `<Play digits>`.
    pub digits: String,
    /// Tone length of each digit.
    pub duration_ms: u32,
}

/// How a KAZOO `transfer` hands the caller over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
#[serde(rename_all = "snake_case")]
pub enum TransferType {
    Blind,
    Attended,
}

/// KAZOO `transfer`: send the caller to another extension.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct Transfer {
    /// Extension or number the caller is sent to.
    pub target: String,
    pub transfer_type: TransferType,
}

/// What a KAZOO `park` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
#[serde(rename_all = "snake_case")]
pub enum ParkAction {
    Park,
    DirectPark,
    Retrieve,
    Auto,
}

/// KAZOO `park`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct Park {
    pub action: ParkAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<String>,
    /// How long a parked call waits before ringing back whoever parked it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ringback_timeout_ms: Option<u64>,
}

/// KAZOO `webhook`: notify a URL and continue without waiting for the answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct Webhook {
    pub uri: String,
    pub method: HttpMethod,
    pub retries: u32,
    /// Extra form fields sent with the call's details.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom_data: Vec<Variable>,
}

/// Parameter naming of the pivot request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
#[serde(rename_all = "snake_case")]
pub enum RequestFormat {
    Kazoo,
    Twiml,
}

/// Encoding of a POST body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
#[serde(rename_all = "snake_case")]
pub enum BodyFormat {
    Form,
    Json,
}

/// KAZOO `pivot`: ask a web server for the rest of the call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct Pivot {
    pub voice_url: String,
    pub method: HttpMethod,
    pub req_format: RequestFormat,
    pub req_body_format: BodyFormat,
    /// Total deadline of each request.
    pub req_timeout_ms: u64,
    /// Record every request and response in the debug log, not only failures.
    #[serde(default, skip_serializing_if = "is_false")]
    pub debug: bool,
    /// Where the end-of-call record is POSTed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cdr_url: Option<String>,
    /// Extra headers sent with every request of this pivot.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub custom_request_headers: BTreeMap<String, String>,
}

/// A KAZOO module pivot does not run, kept so it can be reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct UnknownModule {
    pub module: String,
    #[cfg_attr(feature = "arbitrary", arbitrary(with = crate::arbitrary_json::object))]
    pub data: serde_json::Value,
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_never_slices_inside_a_character() {
        assert_eq!(Media::parse("abcd€xyz"), Media::Path("abcd€xyz".into()));
        assert_eq!(
            Media::parse("abcde€xyzabcdefgh"),
            Media::Path("abcde€xyzabcdefgh".into())
        );
        assert_eq!(Media::parse("TTS://héllo"), Media::Tts("héllo".into()));
        assert_eq!(
            Media::parse("Http://x/a.wav"),
            Media::Url("Http://x/a.wav".into())
        );
        assert_eq!(
            Media::parse("tone_stream://%(1,0,440)"),
            Media::Tone("tone_stream://%(1,0,440)".into())
        );
    }
}
