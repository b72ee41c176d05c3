//! KAZOO callflow JSON → `Flow::Kazoo`.
//!
//! A response body is one node `{"module", "data", "children"}`. Every node is checked against
//! the rules of its module (types, ranges, defaults, the fields KAZOO documents), and every
//! problem is collected with its JSON path, so that an app developer sees all of them at once.
//! Unknown modules are kept as written and skipped to `_` at run time, with a warning.
//!
//! The walk is plain recursion: `read_bounded` has already bounded the JSON nesting, and the
//! node depth is checked against [`Limits::max_depth`] before descending.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::diag::{Diagnostics, ErrorKind, Location, ParseError};
use crate::model::{
    AudioFormat, BodyFormat, Branch, ChannelScope, CollectDtmf, Conference, Dial, DialStrategy,
    DialTarget, Flow, Hangup, HttpMethod, Media, Menu, Node, Park, ParkAction, Pause, Pivot, Play,
    Record, RequestFormat, Respond, Say, SendDtmf, SetChannelVariable, SetVariables, Step,
    StorageMethod, Terminators, Transfer, TransferType, UnknownModule, Variable, VariableScope,
    Webhook, is_dtmf,
};
use crate::{Document, Limits};

/// Longest URL accepted anywhere in a flow.
const MAX_URL_CHARS: usize = 2048;
/// Longest media reference (KAZOO's menus schema uses the same bound).
const MAX_MEDIA_CHARS: usize = 2048;
/// Longest short name: voices, languages, engines, ids, variable names.
const MAX_NAME_CHARS: usize = 128;
/// Bad values are quoted in messages up to this many characters.
const QUOTE_CHARS: usize = 60;
/// One day, the longest `sleep` KAZOO's schema allows.
const DAY_MS: i64 = 86_400_000;
/// Most `custom_request_headers` on one pivot.
const MAX_HEADERS: usize = 64;

pub(crate) fn parse(body: &[u8], limits: &Limits) -> Result<Document, ParseError> {
    // Room for two JSON levels per node (the node and its `children`) plus the data objects.
    let value = crate::json::read_bounded::<Value>(body, limits.max_depth.saturating_mul(2) + 16)?;
    parse_value(&value, "", limits)
}

pub(crate) fn parse_value(
    value: &Value,
    base_path: &str,
    limits: &Limits,
) -> Result<Document, ParseError> {
    let mut walk = Walk {
        limits,
        diags: Diagnostics::default(),
        nodes: 0,
        too_large: false,
    };
    let root = walk.node(value, &Path::root(base_path), 1);
    // A limit error says why the rest was not looked at, so it decides the kind.
    let kind = if walk.too_large {
        ErrorKind::TooLarge
    } else {
        ErrorKind::Invalid
    };
    let warnings = walk.diags.finish(kind)?;
    match root {
        Some(root) => Ok(Document {
            flow: Flow::Kazoo { root },
            warnings,
        }),
        // Unreachable in practice: every `None` records an error first.
        None => Err(ParseError::single(
            ErrorKind::Invalid,
            Path::root(base_path).location(),
            "not a callflow node",
        )),
    }
}

/// State of one walk over a document.
struct Walk<'l> {
    limits: &'l Limits,
    diags: Diagnostics,
    nodes: usize,
    too_large: bool,
}

impl Walk<'_> {
    /// Reads the node at `path`; `None` when it could not be read at all (an error was recorded).
    fn node(&mut self, value: &Value, path: &Path<'_>, depth: usize) -> Option<Node> {
        if depth > self.limits.max_depth {
            self.too_large = true;
            self.diags.error(
                path.location(),
                format!(
                    "the flow nests deeper than {} nodes; the rest is not read",
                    self.limits.max_depth
                ),
            );
            return None;
        }
        self.nodes += 1;
        if self.nodes > self.limits.max_nodes {
            // Happens once: from here on every ancestor stops reading its children.
            self.too_large = true;
            self.diags.error(
                path.location(),
                format!(
                    "the flow has more than {} nodes; the rest is not read",
                    self.limits.max_nodes
                ),
            );
            return None;
        }
        let Value::Object(obj) = value else {
            self.diags.error(
                path.location(),
                format!(
                    "must be a callflow node (an object with \"module\" and \"data\"), got {}",
                    describe(value)
                ),
            );
            return None;
        };
        for key in obj.keys() {
            if !matches!(key.as_str(), "module" | "data" | "children") {
                self.diags.warning(
                    path.child(key).location(),
                    "unknown node key, ignored (a node has \"module\", \"data\" and \"children\")",
                );
            }
        }

        let module = self.module(obj.get("module"), path);
        let empty = Map::new();
        let data = match obj.get("data") {
            None | Some(Value::Null) => Some(&empty),
            Some(Value::Object(data)) => Some(data),
            Some(other) => {
                self.diags.error(
                    path.child("data").location(),
                    format!("must be an object, got {}", describe(other)),
                );
                None
            }
        };
        let mut step = None;
        let mut skip_module = false;
        if let (Some(module), Some(data)) = (module, data) {
            let mut fields = Fields::new(data, path.child("data"), &mut self.diags);
            skip_module = fields.bool("skip_module").unwrap_or(false);
            step = module_step(module, &mut fields, path);
        }

        let children = self.children(obj.get("children"), path, depth);
        Some(Node {
            // A placeholder only when errors were recorded, so the document is refused anyway.
            step: step.unwrap_or(Step::Noop),
            skip_module,
            children,
        })
    }

    fn module<'v>(&mut self, value: Option<&'v Value>, path: &Path<'_>) -> Option<&'v str> {
        let message = match value {
            None | Some(Value::Null) => {
                "required (the name of a callflow module, e.g. \"tts\")".into()
            }
            Some(Value::String(m)) if m.is_empty() => "must not be empty".into(),
            Some(Value::String(m)) if m.chars().count() > 64 => {
                format!("must be at most 64 characters, got {}", quote(m))
            }
            Some(Value::String(m)) => return Some(m),
            Some(other) => format!("must be a string, got {}", describe(other)),
        };
        self.diags.error(path.child("module").location(), message);
        None
    }

    fn children(
        &mut self,
        value: Option<&Value>,
        path: &Path<'_>,
        depth: usize,
    ) -> BTreeMap<Branch, Node> {
        let mut children = BTreeMap::new();
        let path = path.child("children");
        let map = match value {
            None | Some(Value::Null) => return children,
            Some(Value::Object(map)) => map,
            Some(other) => {
                self.diags.error(
                    path.location(),
                    format!(
                        "must be an object of branch keys to nodes, got {}",
                        describe(other)
                    ),
                );
                return children;
            }
        };
        for (key, child) in map {
            let child_path = path.child(key);
            if key.is_empty() {
                self.diags
                    .error(child_path.location(), "a branch key must not be empty");
                continue;
            }
            if self.nodes > self.limits.max_nodes {
                break;
            }
            if let Some(node) = self.node(child, &child_path, depth + 1) {
                children.insert(Branch::parse(key), node);
            }
        }
        children
    }
}

/// The step of a module, or `None` when its data had errors (they are recorded).
fn module_step(module: &str, f: &mut Fields<'_, '_>, node_path: &Path<'_>) -> Option<Step> {
    let step = match module {
        "tts" | "say" => say(f),
        "play" => play(f),
        "record_caller" => record_caller(f),
        "collect_dtmf" => collect_dtmf(f),
        "menu" => menu(f),
        "pivot" => pivot(f),
        "response" => response(f),
        "hangup" => {
            let cause = f.string("hangup_cause", 1, MAX_NAME_CHARS);
            Some(Step::Hangup(Hangup { cause }))
        }
        "set_variables" => set_variables(f),
        "set_variable" => set_variable(f),
        "sleep" => sleep(f),
        "answer" => Some(Step::Answer),
        "noop" => Some(Step::Noop),
        "send_dtmf" => send_dtmf(f),
        "resources" | "offnet" => resources(f),
        "device" => device(f),
        "user" => user(f),
        "transfer" => transfer(f),
        "conference" => conference(f),
        "park" => park(f),
        "webhook" => webhook(f),
        _ => {
            f.diags.warning(
                node_path.child("module").location(),
                format!(
                    "module {} is not supported by pivot; the call follows \"_\"",
                    quote(module)
                ),
            );
            // Kept as written so it can be reported; none of its fields are ours to judge.
            return Some(Step::Unknown(UnknownModule {
                module: module.to_owned(),
                data: Value::Object(f.obj.clone()),
            }));
        }
    };
    f.warn_unknown();
    step
}

// --- Modules -------------------------------------------------------------------------------

fn say(f: &mut Fields<'_, '_>) -> Option<Step> {
    let text = f.required_string("text", 1, 1000);
    let voice = f
        .string("voice", 1, MAX_NAME_CHARS)
        .map(|v| normalise_voice(&v));
    let language = f.string("language", 1, MAX_NAME_CHARS);
    let engine = f.string("engine", 1, MAX_NAME_CHARS);
    let terminators = f.terminators("terminators");
    let endless = f.bool("endless_playback").unwrap_or(false);
    Some(Step::Say(Say {
        text: text?,
        voice: Some(voice.unwrap_or_else(|| "female".to_owned())),
        language,
        engine,
        loops: if endless { 0 } else { 1 },
        terminators: terminators.unwrap_or_else(Terminators::all),
    }))
}

/// KAZOO's TTS speaks of `male`/`female`; `man`/`woman` are what TwiML apps write.
fn normalise_voice(voice: &str) -> String {
    let is = |name: &str| voice.eq_ignore_ascii_case(name);
    if is("man") || is("male") {
        "male".to_owned()
    } else if is("woman") || is("female") {
        "female".to_owned()
    } else {
        voice.to_owned()
    }
}

fn play(f: &mut Fields<'_, '_>) -> Option<Step> {
    let id = f.required_string("id", 1, MAX_MEDIA_CHARS);
    let loop_count = f.u32("loop_count", 1, 1000, "");
    let endless = f.bool("endless_playback").unwrap_or(false);
    let terminators = f.terminators("terminators");
    let answer = f.bool("answer");
    Some(Step::Play(Play {
        media: Media::parse(&id?),
        loops: if endless { 0 } else { loop_count.unwrap_or(1) },
        terminators: terminators.unwrap_or_else(Terminators::all),
        answer: answer.unwrap_or(true),
    }))
}

fn record_caller(f: &mut Fields<'_, '_>) -> Option<Step> {
    let url = f.url("url");
    let format = f.choice(
        "format",
        &[("mp3", AudioFormat::Mp3), ("wav", AudioFormat::Wav)],
        false,
    );
    let method = f.choice(
        "method",
        &[("put", StorageMethod::Put), ("post", StorageMethod::Post)],
        true,
    );
    let time_limit = f.u32("time_limit", 5, 10_800, " seconds");
    Some(Step::Record(Record {
        max_length_s: time_limit.unwrap_or(3600),
        silence_timeout_s: None,
        terminators: Terminators("#".into()),
        beep: false,
        action: None,
        method: HttpMethod::Post,
        storage_url: url,
        storage_method: method.unwrap_or(StorageMethod::Put),
        format: format.unwrap_or(AudioFormat::Mp3),
    }))
}

fn collect_dtmf(f: &mut Fields<'_, '_>) -> Option<Step> {
    let max_digits = f.u32("max_digits", 1, 128, "");
    let timeout = f.u64("timeout", 1, 3_600_000, " ms");
    let interdigit = f.u64("interdigit_timeout", 1, 3_600_000, " ms");
    let terminator = f.get("terminator").and_then(|v| match dtmf_key(v) {
        Ok(c) => Some(Terminators(c.to_string().into())),
        Err(message) => {
            f.error("terminator", message);
            None
        }
    });
    // KAZOO reads the list first and falls back to the single key.
    let terminators = f.terminators("terminators").or(terminator);
    let name = f.string("collection_name", 1, MAX_NAME_CHARS);
    Some(Step::CollectDtmf(CollectDtmf {
        max_digits: max_digits.unwrap_or(1),
        timeout_ms: timeout.unwrap_or(5000),
        interdigit_timeout_ms: interdigit.unwrap_or(2000),
        terminators: terminators.unwrap_or_else(|| Terminators("#".into())),
        collection_name: name.unwrap_or_else(|| "default".to_owned()),
    }))
}

fn menu(f: &mut Fields<'_, '_>) -> Option<Step> {
    let retries = f.u32("retries", 1, 10, "");
    let timeout = f.u64("timeout", 1, 60_000, " ms");
    let interdigit = f.u64("interdigit_timeout", 1, 10_000, " ms");
    let max_len = f.u32("max_extension_length", 1, 6, "");
    let suppress = f.bool("suppress_media").unwrap_or(false);
    // Fields of KAZOO's menus document that only matter to features pivot does not have.
    f.ignore(&[
        "name",
        "hunt",
        "hunt_allow",
        "hunt_deny",
        "allow_record_from_offnet",
        "record_pin",
    ]);
    let has_media = f.present("media");
    if f.present("id") && !has_media {
        f.warn(
            "id",
            "stored menu documents are not available to pivot; id ignored (define the menu \
             inline with \"media\")",
        );
    }
    f.ignore(&["id"]);

    let mut greeting = None;
    let mut invalid = Some(Media::Path("menu-invalid_entry".to_owned()));
    let mut exit = None;
    if let Some(mut m) = f.object("media") {
        greeting = m
            .string("greeting", 3, MAX_MEDIA_CHARS)
            .map(|g| Media::parse(&g));
        if let Some(choice) = m.media_or_bool("invalid_media") {
            invalid = choice.resolve("menu-invalid_entry");
        }
        if let Some(choice) = m.media_or_bool("exit_media") {
            exit = choice.resolve("menu-exit");
        }
        // Transfers out of a menu are not something pivot's menus do.
        m.ignore(&["transfer_media"]);
        m.warn_unknown();
    }
    if suppress {
        invalid = None;
    }
    Some(Step::Menu(Menu {
        greeting,
        invalid_media: invalid,
        exit_media: exit,
        retries: retries.unwrap_or(3),
        timeout_ms: timeout.unwrap_or(10_000),
        interdigit_timeout_ms: interdigit.unwrap_or(2000),
        max_extension_length: max_len.unwrap_or(4),
    }))
}

fn pivot(f: &mut Fields<'_, '_>) -> Option<Step> {
    let voice_url = if f.require("voice_url") {
        f.url("voice_url")
    } else {
        None
    };
    let method = f.choice(
        "method",
        &[("get", HttpMethod::Get), ("post", HttpMethod::Post)],
        true,
    );
    let req_format = f.choice(
        "req_format",
        &[
            ("kazoo", RequestFormat::Kazoo),
            ("twiml", RequestFormat::Twiml),
        ],
        false,
    );
    let body_format = f.choice(
        "req_body_format",
        &[("form", BodyFormat::Form), ("json", BodyFormat::Json)],
        false,
    );
    let timeout_ms = if f.present("req_timeout_ms") {
        if f.present("req_timeout") {
            f.warn(
                "req_timeout",
                "ignored: req_timeout_ms is set (req_timeout is the legacy name, in seconds)",
            );
        }
        f.ignore(&["req_timeout"]);
        f.u64("req_timeout_ms", 1, 30_000, " ms")
    } else {
        f.legacy_timeout("req_timeout")
    };
    let debug = f.bool("debug").unwrap_or(false);
    let cdr_url = f.url("cdr_url");
    let headers = f.headers("custom_request_headers");
    Some(Step::Pivot(Pivot {
        voice_url: voice_url?,
        method: method.unwrap_or(HttpMethod::Get),
        req_format: req_format.unwrap_or(RequestFormat::Kazoo),
        req_body_format: body_format.unwrap_or(BodyFormat::Form),
        req_timeout_ms: timeout_ms.unwrap_or(5000),
        debug,
        cdr_url,
        custom_request_headers: headers.unwrap_or_default(),
    }))
}

fn response(f: &mut Fields<'_, '_>) -> Option<Step> {
    let code = f.int_or_text("code", 100, 699, "");
    let message = f.string("message", 1, MAX_NAME_CHARS);
    let media_ref = f.string("media", 1, MAX_MEDIA_CHARS);
    Some(Step::Respond(Respond {
        code: code.and_then(|c| u16::try_from(c).ok()).unwrap_or(486),
        message,
        media: media_ref.map(|m| Media::parse(&m)),
    }))
}

fn set_variables(f: &mut Fields<'_, '_>) -> Option<Step> {
    let key = if f.present("custom_application_vars") {
        if f.present("custom_channel_vars") {
            f.warn(
                "custom_channel_vars",
                "ignored: custom_application_vars is set (custom_channel_vars is its legacy name)",
            );
        }
        f.ignore(&["custom_channel_vars"]);
        "custom_application_vars"
    } else if f.present("custom_channel_vars") {
        f.warn(
            "custom_channel_vars",
            "legacy name, read as custom_application_vars",
        );
        "custom_channel_vars"
    } else {
        f.require("custom_application_vars");
        return None;
    };
    let variables = f.variables(key, true);
    let export = f.bool("export").unwrap_or(false);
    Some(Step::SetVariables(SetVariables {
        scope: VariableScope::CustomApplication,
        variables: variables?,
        export,
    }))
}

fn set_variable(f: &mut Fields<'_, '_>) -> Option<Step> {
    let variable = f.required_string("variable", 1, MAX_NAME_CHARS);
    let value = f.string("value", 0, MAX_MEDIA_CHARS);
    let channel = f.choice(
        "channel",
        &[("a", ChannelScope::A), ("both", ChannelScope::Both)],
        false,
    );
    Some(Step::SetChannelVariable(SetChannelVariable {
        variable: variable?,
        value: value.unwrap_or_default(),
        channel: channel.unwrap_or(ChannelScope::A),
    }))
}

fn sleep(f: &mut Fields<'_, '_>) -> Option<Step> {
    let duration = f.int("duration", 0, DAY_MS, "");
    let unit = f.choice(
        "unit",
        &[("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000)],
        false,
    );
    let duration = duration.unwrap_or(0);
    let ms = duration.checked_mul(unit.unwrap_or(1000));
    match ms {
        Some(ms) if ms <= DAY_MS => Some(Step::Pause(Pause {
            duration_ms: u64::try_from(ms).unwrap_or(0),
        })),
        _ => {
            let unit_name = f
                .obj
                .get("unit")
                .and_then(Value::as_str)
                .unwrap_or("s")
                .to_owned();
            f.error(
                "duration",
                format!("must be at most one day ({DAY_MS} ms), got {duration} {unit_name}"),
            );
            None
        }
    }
}

fn send_dtmf(f: &mut Fields<'_, '_>) -> Option<Step> {
    let digits = f.required_string("digits", 1, 128);
    let duration = f.int_or_text("duration_ms", 1, 10_000, " ms");
    let digits = digits?;
    if !digits.chars().all(|c| is_dtmf(c) || matches!(c, 'w' | 'W')) {
        f.error(
            "digits",
            format!(
                "must be DTMF keys (0-9, *, #, A-D) or w/W pauses, got {}",
                quote(&digits)
            ),
        );
        return None;
    }
    Some(Step::SendDtmf(SendDtmf {
        digits,
        duration_ms: duration.and_then(|d| u32::try_from(d).ok()).unwrap_or(2000),
    }))
}

fn resources(f: &mut Fields<'_, '_>) -> Option<Step> {
    let number = f.string("to_did", 1, MAX_NAME_CHARS).and_then(|did| {
        let cleaned = clean_number(&did);
        if cleaned.chars().any(|c| c.is_ascii_digit()) {
            Some(cleaned)
        } else {
            f.error(
                "to_did",
                format!("must be a phone number with digits, got {}", quote(&did)),
            );
            None
        }
    });
    let timeout = f.u32("timeout", 1, 3600, " seconds");
    // offnet writes it as a string enum, resources as a boolean.
    if let Some(v) = f.get("ignore_early_media") {
        let ok = match v {
            Value::Bool(_) => true,
            Value::String(s) => matches!(s.as_str(), "true" | "false" | "consume"),
            _ => false,
        };
        if !ok {
            f.error(
                "ignore_early_media",
                format!(
                    "must be true, false, \"true\", \"false\" or \"consume\", got {}",
                    describe(v)
                ),
            );
        }
    }
    // Documented routing details that the configured gateway decides in pivot.
    f.ignore(&[
        "bypass_e164",
        "caller_id_type",
        "custom_sip_headers",
        "do_not_normalize",
        "dynamic_flags",
        "emit_account_id",
        "format_from_uri",
        "from_uri_realm",
        "hunt_account_id",
        "outbound_flags",
        "resource_type",
        "ringback",
        "use_local_resources",
    ]);
    Some(dial(
        DialTarget::Number {
            number,
            send_digits: None,
        },
        timeout.unwrap_or(30),
        DialStrategy::Simultaneous,
    ))
}

/// Keeps the digits of a number and a leading `+`: `+1 (415) 886-7900` → `+14158867900`.
fn clean_number(number: &str) -> String {
    let trimmed = number.trim_start();
    let plus = trimmed.starts_with('+');
    let digits = trimmed.chars().filter(char::is_ascii_digit);
    if plus {
        std::iter::once('+').chain(digits).collect()
    } else {
        digits.collect()
    }
}

/// Ignored `device`/`user` fields: endpoint details owned by the configured endpoint.
const ENDPOINT_IGNORED: &[&str] = &[
    "delay",
    "can_call_self",
    "can_text_self",
    "custom_sip_headers",
    "static_invite",
    "suppress_clid",
    "fail_on_single_reject",
];

const STRATEGIES: &[(&str, DialStrategy)] = &[
    ("simultaneous", DialStrategy::Simultaneous),
    ("single", DialStrategy::Single),
];

fn device(f: &mut Fields<'_, '_>) -> Option<Step> {
    let id = f.required_string("id", 1, MAX_NAME_CHARS);
    // KAZOO's device timeout defaults to 0, meaning "the endpoint's own", here 20 s.
    let timeout = f.u32("timeout", 0, 3600, " seconds").filter(|&t| t > 0);
    let strategy = f.choice("dial_strategy", STRATEGIES, false);
    f.ignore(ENDPOINT_IGNORED);
    Some(dial(
        DialTarget::Device { id: id? },
        timeout.unwrap_or(20),
        strategy.unwrap_or(DialStrategy::Simultaneous),
    ))
}

fn user(f: &mut Fields<'_, '_>) -> Option<Step> {
    let id = f.required_string("id", 1, MAX_NAME_CHARS);
    let timeout = f.u32("timeout", 0, 3600, " seconds").filter(|&t| t > 0);
    let strategy = f.choice("strategy", STRATEGIES, false);
    f.ignore(ENDPOINT_IGNORED);
    Some(dial(
        DialTarget::User { id: id? },
        timeout.unwrap_or(20),
        strategy.unwrap_or(DialStrategy::Simultaneous),
    ))
}

/// A KAZOO bridge: on failure the callflow continues to `_`, so `continue_on_fail` is set.
fn dial(target: DialTarget, timeout_s: u32, strategy: DialStrategy) -> Step {
    Step::Dial(Dial {
        targets: vec![target],
        timeout_s,
        caller_id: None,
        time_limit_s: 14_400,
        action: None,
        method: HttpMethod::Post,
        record: false,
        hangup_on: None,
        continue_on_fail: true,
        strategy,
        collect_dtmf: false,
    })
}

fn transfer(f: &mut Fields<'_, '_>) -> Option<Step> {
    let target = f.required_string("target", 1, MAX_NAME_CHARS);
    let kind = f.choice(
        "transfer_type",
        &[
            ("blind", TransferType::Blind),
            ("attended", TransferType::Attended),
        ],
        false,
    );
    f.ignore(&["leg", "captures"]);
    Some(Step::Transfer(Transfer {
        target: target?,
        transfer_type: kind.unwrap_or(TransferType::Blind),
    }))
}

fn conference(f: &mut Fields<'_, '_>) -> Option<Step> {
    let mut name = None;
    let mut max_participants = None;
    if let Some(mut config) = f.object("config") {
        name = config.string("name", 1, MAX_NAME_CHARS);
        max_participants = config.u32("max_participants", 2, 250, "");
        // The rest of KAZOO's conferences schema is not checked here: it is large and none of
        // it changes what pivot does.
    }
    let id = f.string("id", 1, MAX_NAME_CHARS);
    let moderator = f.bool("moderator").unwrap_or(false);
    let beep = match f.get("play_entry_tone") {
        None => Some(true),
        Some(Value::Bool(b)) => Some(*b),
        // A media reference for the tone: there is a tone.
        Some(Value::String(_)) => Some(true),
        Some(other) => {
            let message = format!(
                "must be a boolean or a media reference, got {}",
                describe(other)
            );
            f.error("play_entry_tone", message);
            None
        }
    };
    f.ignore(&["play_exit_tone", "welcome_prompt"]);
    // A bad config.name or id has been reported already; only a missing name is news.
    let config_named = f
        .obj
        .get("config")
        .and_then(|c| c.get("name"))
        .is_some_and(|n| !n.is_null());
    let Some(name) = name.or(id) else {
        if !config_named && !f.present("id") {
            f.diags.error(
                f.prefix.location(),
                "a conference needs a name: \"config.name\" (ad-hoc) or \"id\"",
            );
        }
        return None;
    };
    Some(Step::Conference(Conference {
        name,
        start_on_enter: true,
        end_on_exit: moderator,
        beep: beep.unwrap_or(true),
        muted: false,
        max_participants: max_participants.unwrap_or(250),
        wait_media: None,
    }))
}

fn park(f: &mut Fields<'_, '_>) -> Option<Step> {
    let action = f.choice(
        "action",
        &[
            ("park", ParkAction::Park),
            ("direct_park", ParkAction::DirectPark),
            ("retrieve", ParkAction::Retrieve),
            ("auto", ParkAction::Auto),
        ],
        false,
    );
    let slot = match f.get("slot") {
        None => None,
        Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= MAX_NAME_CHARS => {
            Some(s.clone())
        }
        // KAZOO keeps slot numbers as strings; apps often send a number.
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(other) => {
            let message = format!(
                "must be a slot number or name of 1 to {MAX_NAME_CHARS} characters, got {}",
                describe(other)
            );
            f.error("slot", message);
            None
        }
    };
    let ringback = f.u64("default_ringback_timeout", 0, 86_400_000, " ms");
    f.ignore(&[
        "custom_presence_id",
        "default_callback_timeout",
        "default_presence_type",
        "presence_id",
        "slots",
    ]);
    Some(Step::Park(Park {
        action: action.unwrap_or(ParkAction::Park),
        slot,
        ringback_timeout_ms: ringback,
    }))
}

fn webhook(f: &mut Fields<'_, '_>) -> Option<Step> {
    let uri = if f.require("uri") { f.url("uri") } else { None };
    let method = f.choice(
        "http_verb",
        &[("get", HttpMethod::Get), ("post", HttpMethod::Post)],
        true,
    );
    let retries = f.u32("retries", 0, 5, "");
    let custom_data = if f.present("custom_data") {
        f.variables("custom_data", false)
    } else {
        Some(Vec::new())
    };
    Some(Step::Webhook(Webhook {
        uri: uri?,
        method: method.unwrap_or(HttpMethod::Post),
        retries: retries.unwrap_or(3),
        custom_data: custom_data.unwrap_or_default(),
    }))
}

// --- Field readers ---------------------------------------------------------------------------

/// Reads the fields of one `data` object (or an object inside it), recording a diagnostic for
/// every bad value. Readers return `None` both when a field is absent and when it is invalid;
/// JSON `null` counts as absent. Every name read is remembered, so that the fields nobody read
/// can be reported as unknown (they are usually typos).
struct Fields<'a, 'p> {
    obj: &'a Map<String, Value>,
    /// Path of the object itself, e.g. `children._.data`.
    prefix: Path<'p>,
    /// Names read so far. A fixed array, as no module reads more than about twenty names
    /// (see `remember`), and a per-node allocation showed in the parse benchmark.
    seen: [&'static str; MAX_SEEN],
    seen_len: usize,
    diags: &'p mut Diagnostics,
}

/// Room for the names one module reads or ignores, with duplicates.
const MAX_SEEN: usize = 48;

/// A field that is either a media reference or a boolean switch (KAZOO's menus media).
enum MediaChoice {
    Media(Media),
    On,
    Off,
}

impl MediaChoice {
    fn resolve(self, default_sound: &str) -> Option<Media> {
        match self {
            MediaChoice::Media(m) => Some(m),
            MediaChoice::On => Some(Media::Path(default_sound.to_owned())),
            MediaChoice::Off => None,
        }
    }
}

impl<'a, 'p> Fields<'a, 'p> {
    fn new(obj: &'a Map<String, Value>, prefix: Path<'p>, diags: &'p mut Diagnostics) -> Self {
        Fields {
            obj,
            prefix,
            seen: [""; MAX_SEEN],
            seen_len: 0,
            diags,
        }
    }

    fn remember(&mut self, key: &'static str) {
        debug_assert!(self.seen_len < MAX_SEEN, "raise MAX_SEEN");
        if let Some(slot) = self.seen.get_mut(self.seen_len) {
            *slot = key;
            self.seen_len += 1;
        }
    }

    fn was_read(&self, key: &str) -> bool {
        self.seen
            .get(..self.seen_len)
            .is_some_and(|seen| seen.contains(&key))
    }

    /// `key` may itself be dotted, e.g. `terminators.2`.
    fn location(&self, key: &str) -> Location {
        self.prefix.child(key).location()
    }

    fn error(&mut self, key: &str, message: impl Into<String>) {
        let location = self.location(key);
        self.diags.error(location, message);
    }

    fn warn(&mut self, key: &str, message: impl Into<String>) {
        let location = self.location(key);
        self.diags.warning(location, message);
    }

    /// Accepts fields KAZOO documents but pivot has no use for, without a warning.
    fn ignore(&mut self, keys: &[&'static str]) {
        for key in keys {
            self.remember(key);
        }
    }

    fn present(&self, key: &str) -> bool {
        !matches!(self.obj.get(key), None | Some(Value::Null))
    }

    /// The field's value, `None` when absent or null.
    fn get(&mut self, key: &'static str) -> Option<&'a Value> {
        self.remember(key);
        self.obj.get(key).filter(|v| !v.is_null())
    }

    /// Records "required" when the field is absent.
    fn require(&mut self, key: &'static str) -> bool {
        if self.present(key) {
            return true;
        }
        self.remember(key);
        self.error(key, "required");
        false
    }

    /// Warns about every field no reader asked for.
    fn warn_unknown(&mut self) {
        let obj = self.obj;
        for key in obj.keys() {
            if key != "skip_module" && !self.was_read(key) {
                self.warn(key, "unknown field, ignored");
            }
        }
    }

    fn type_error(&mut self, key: &str, expected: &str, got: &Value) {
        self.error(key, format!("must be {expected}, got {}", describe(got)));
    }

    fn bool(&mut self, key: &'static str) -> Option<bool> {
        match self.get(key)? {
            Value::Bool(b) => Some(*b),
            other => {
                self.type_error(key, "true or false", other);
                None
            }
        }
    }

    /// A string of `min..=max` characters.
    fn string(&mut self, key: &'static str, min: usize, max: usize) -> Option<String> {
        let value = self.get(key)?;
        let Value::String(s) = value else {
            self.type_error(key, "a string", value);
            return None;
        };
        let chars = s.chars().count();
        if chars < min {
            let message = if chars == 0 {
                "must not be empty".to_owned()
            } else {
                format!("must be at least {min} characters, got {}", quote(s))
            };
            self.error(key, message);
            return None;
        }
        if chars > max {
            self.error(
                key,
                format!("must be at most {max} characters, got {chars} characters"),
            );
            return None;
        }
        Some(s.clone())
    }

    fn required_string(&mut self, key: &'static str, min: usize, max: usize) -> Option<String> {
        if self.require(key) {
            self.string(key, min, max)
        } else {
            None
        }
    }

    /// An integer in `lo..=hi`; `unit` (e.g. `" ms"`) is named in the range message.
    fn int(&mut self, key: &'static str, lo: i64, hi: i64, unit: &str) -> Option<i64> {
        let value = self.get(key)?;
        match as_integer(value) {
            Some(n) => self.in_range(key, n, lo, hi, unit, value),
            None => {
                self.type_error(key, "an integer", value);
                None
            }
        }
    }

    /// An integer, or a string holding one (KAZOO schemas that allow both).
    fn int_or_text(&mut self, key: &'static str, lo: i64, hi: i64, unit: &str) -> Option<i64> {
        let value = self.get(key)?;
        let n = match value {
            Value::String(s) => {
                let t = s.trim();
                let digits = t.strip_prefix('-').unwrap_or(t);
                // Digits that overflow i64 are out of range, not of the wrong type.
                (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| t.parse::<i64>().ok())
            }
            other => as_integer(other),
        };
        match n {
            Some(n) => self.in_range(key, n, lo, hi, unit, value),
            None => {
                self.type_error(key, "an integer or a string of digits", value);
                None
            }
        }
    }

    fn in_range(
        &mut self,
        key: &str,
        n: Option<i64>,
        lo: i64,
        hi: i64,
        unit: &str,
        value: &Value,
    ) -> Option<i64> {
        match n {
            Some(n) if (lo..=hi).contains(&n) => Some(n),
            _ => {
                self.error(
                    key,
                    format!(
                        "must be between {lo} and {hi}{unit}, got {}",
                        describe(value)
                    ),
                );
                None
            }
        }
    }

    fn u32(&mut self, key: &'static str, lo: u32, hi: u32, unit: &str) -> Option<u32> {
        self.int(key, lo.into(), hi.into(), unit)
            .and_then(|n| u32::try_from(n).ok())
    }

    fn u64(&mut self, key: &'static str, lo: u32, hi: u32, unit: &str) -> Option<u64> {
        self.int(key, lo.into(), hi.into(), unit)
            .and_then(|n| u64::try_from(n).ok())
    }

    /// One of `options`, matched exactly or, with `any_case`, ignoring ASCII case.
    fn choice<T: Copy>(
        &mut self,
        key: &'static str,
        options: &[(&str, T)],
        any_case: bool,
    ) -> Option<T> {
        let value = self.get(key)?;
        if let Value::String(s) = value {
            let found = options.iter().find(|(name, _)| {
                if any_case {
                    name.eq_ignore_ascii_case(s)
                } else {
                    name == s
                }
            });
            if let Some((_, t)) = found {
                return Some(*t);
            }
        }
        let names: Vec<String> = options
            .iter()
            .map(|(name, _)| format!("\"{name}\""))
            .collect();
        self.error(
            key,
            format!(
                "must be one of {}, got {}",
                names.join(", "),
                describe(value)
            ),
        );
        None
    }

    fn url(&mut self, key: &'static str) -> Option<String> {
        let value = self.get(key)?;
        let Value::String(s) = value else {
            self.type_error(key, "an http(s) URL", value);
            return None;
        };
        match check_url(s) {
            Ok(()) => Some(s.clone()),
            Err(message) => {
                self.error(key, message);
                None
            }
        }
    }

    /// An array of distinct DTMF keys; each bad item is reported at its own path.
    fn terminators(&mut self, key: &'static str) -> Option<Terminators> {
        let value = self.get(key)?;
        let Value::Array(items) = value else {
            self.type_error(key, "an array of DTMF keys such as [\"#\"]", value);
            return None;
        };
        let mut keys = String::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            // Item paths are built only for a diagnostic.
            let item_key = || format!("{key}.{i}");
            match dtmf_key(item) {
                Ok(c) if keys.contains(c) => {
                    ok = false;
                    self.error(&item_key(), format!("\"{c}\" is listed twice"));
                }
                Ok(c) => keys.push(c),
                Err(message) => {
                    ok = false;
                    self.error(&item_key(), message);
                }
            }
        }
        ok.then_some(Terminators(keys.into()))
    }

    /// An object inside this one, read with its own path.
    fn object(&mut self, key: &'static str) -> Option<Fields<'a, '_>> {
        let value = self.get(key)?;
        let Value::Object(obj) = value else {
            self.type_error(key, "an object", value);
            return None;
        };
        let prefix = self.prefix.child(key);
        Some(Fields::new(obj, prefix, &mut *self.diags))
    }

    fn media_or_bool(&mut self, key: &'static str) -> Option<MediaChoice> {
        match self.get(key)? {
            Value::Bool(true) => Some(MediaChoice::On),
            Value::Bool(false) => Some(MediaChoice::Off),
            Value::String(_) => self
                .string(key, 3, MAX_MEDIA_CHARS)
                .map(|s| MediaChoice::Media(Media::parse(&s))),
            other => {
                self.type_error(key, "a media reference or a boolean", other);
                None
            }
        }
    }

    /// An object of variables; scalar values are kept as their text. `strict_names` applies
    /// KAZOO's custom application variable naming (`^[A-Za-z0-9_-]+$`).
    fn variables(&mut self, key: &'static str, strict_names: bool) -> Option<Vec<Variable>> {
        let value = self.get(key)?;
        let Value::Object(map) = value else {
            self.type_error(key, "an object of names to values", value);
            return None;
        };
        let mut variables = Vec::with_capacity(map.len());
        let mut ok = true;
        for (name, v) in map {
            let item_key = || format!("{key}.{name}");
            let valid_name = if strict_names {
                !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
            } else {
                !name.is_empty()
            };
            if !valid_name {
                ok = false;
                let rule = if strict_names {
                    "may contain only letters, digits, \"_\" and \"-\""
                } else {
                    "must not be empty"
                };
                self.error(
                    &item_key(),
                    format!("variable name {rule}, got {}", quote(name)),
                );
                continue;
            }
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => {
                    ok = false;
                    self.type_error(&item_key(), "a string, number or boolean", other);
                    continue;
                }
            };
            variables.push(Variable {
                key: name.clone(),
                value: text,
            });
        }
        // serde_json's map is usually sorted already; the model promises sorted regardless.
        variables.sort_by(|a, b| a.key.cmp(&b.key));
        ok.then_some(variables)
    }

    /// Legacy pivot `req_timeout`: seconds, as a number or a string (`"5"`, `"2.5"`) → ms.
    fn legacy_timeout(&mut self, key: &'static str) -> Option<u64> {
        let value = self.get(key)?;
        let seconds = match value {
            Value::String(s) => s.trim().parse::<f64>().ok(),
            Value::Number(n) => n.as_f64(),
            _ => None,
        };
        let ms = seconds.map(|s| (s * 1000.0).round());
        match ms {
            // The range check makes the float → integer conversion exact.
            Some(ms) if (1.0..=30_000.0).contains(&ms) => Some(ms as u64),
            _ => {
                self.error(
                    key,
                    format!(
                        "must be a number of seconds between 0.001 and 30, got {}",
                        describe(value)
                    ),
                );
                None
            }
        }
    }

    /// HTTP headers: RFC 7230 token names, values without CR, LF or NUL.
    fn headers(&mut self, key: &'static str) -> Option<BTreeMap<String, String>> {
        let value = self.get(key)?;
        let Value::Object(map) = value else {
            self.type_error(key, "an object of header names to values", value);
            return None;
        };
        if map.len() > MAX_HEADERS {
            self.error(
                key,
                format!("must have at most {MAX_HEADERS} headers, got {}", map.len()),
            );
            return None;
        }
        let mut headers = BTreeMap::new();
        let mut ok = true;
        for (name, v) in map {
            let item_key = || format!("{key}.{name}");
            if name.is_empty() || !name.bytes().all(is_tchar) {
                ok = false;
                self.error(
                    &item_key(),
                    format!("is not a valid HTTP header name: {}", quote(name)),
                );
                continue;
            }
            match v {
                Value::String(s) if s.contains(['\r', '\n', '\0']) => {
                    ok = false;
                    self.error(
                        &item_key(),
                        "header values must not contain CR, LF or NUL characters",
                    );
                }
                Value::String(s) => {
                    headers.insert(name.clone(), s.clone());
                }
                other => {
                    ok = false;
                    self.type_error(&item_key(), "a string", other);
                }
            }
        }
        ok.then_some(headers)
    }
}

// --- Values ----------------------------------------------------------------------------------

/// An integer JSON number: `Some(Some(n))`, `Some(None)` when too large for i64, `None` when
/// not an integer at all. Whole floats (`5.0`) count as integers.
fn as_integer(value: &Value) -> Option<Option<i64>> {
    let Value::Number(n) = value else {
        return None;
    };
    if let Some(i) = n.as_i64() {
        return Some(Some(i));
    }
    if n.is_u64() {
        return Some(None);
    }
    let f = n.as_f64()?;
    if f.fract() != 0.0 || !f.is_finite() {
        return None;
    }
    // Out-of-range floats saturate, and the range check then rejects them.
    Some(Some(f as i64))
}

/// One DTMF key as KAZOO's terminator enums have them: `"0"`-`"9"`, `"*"`, `"#"`.
fn dtmf_key(value: &Value) -> Result<char, String> {
    if let Value::String(s) = value {
        let mut chars = s.chars();
        if let (Some(c), None) = (chars.next(), chars.next())
            && (c.is_ascii_digit() || matches!(c, '*' | '#'))
        {
            return Ok(c);
        }
    }
    Err(format!(
        "must be one DTMF key (\"0\"-\"9\", \"*\" or \"#\"), got {}",
        describe(value)
    ))
}

/// RFC 7230 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Checks an absolute http(s) URL with a host; the message says what is wrong.
fn check_url(s: &str) -> Result<(), String> {
    let chars = s.chars().count();
    if chars > MAX_URL_CHARS {
        return Err(format!(
            "must be at most {MAX_URL_CHARS} characters, got {chars} characters"
        ));
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "must be an http(s) URL without spaces or control characters, got {}",
            quote(s)
        ));
    }
    let not_http = || format!("must be an http(s) URL, got {}", quote(s));
    let Some((scheme, rest)) = s.split_once("://") else {
        return Err(not_http());
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(not_http());
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host_port)| host_port);
    // `[v6]:port` or `host:port`.
    let (host, port) = match host_port.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((host, after)) => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None if after.is_empty() => (host, None),
                None => ("", None),
            },
            None => ("", None),
        },
        None => match host_port.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        },
    };
    if host.is_empty() {
        return Err(format!(
            "must be an http(s) URL with a host, got {}",
            quote(s)
        ));
    }
    if let Some(port) = port
        && !port.is_empty()
        && !port.parse::<u16>().is_ok_and(|p| p > 0)
    {
        return Err(format!(
            "must be an http(s) URL with a valid port, got {}",
            quote(s)
        ));
    }
    Ok(())
}

/// A value as quoted in a message: strings quoted and shortened, containers by kind only.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => quote(s),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

/// `s` quoted and escaped, cut to [`QUOTE_CHARS`] characters (on a character boundary).
fn quote(s: &str) -> String {
    if s.chars().count() <= QUOTE_CHARS {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(QUOTE_CHARS - 3).collect();
        format!("{head:?}...")
    }
}

/// A JSON path kept as a chain of borrowed segments on the stack, and only turned into text
/// when a diagnostic needs it: most documents have none, and building every node's path up
/// front cost as much as parsing the JSON.
#[derive(Clone, Copy)]
struct Path<'p> {
    parent: Option<&'p Path<'p>>,
    segment: &'p str,
}

impl<'p> Path<'p> {
    /// The base path; empty for a document's root.
    fn root(base: &'p str) -> Self {
        Path {
            parent: None,
            segment: base,
        }
    }

    fn child(&'p self, segment: &'p str) -> Path<'p> {
        Path {
            parent: Some(self),
            segment,
        }
    }

    /// `a.b.c`; an empty base adds no leading dot.
    fn render(&self) -> String {
        let mut segments = Vec::new();
        let mut at = Some(self);
        while let Some(p) = at {
            if p.parent.is_some() || !p.segment.is_empty() {
                segments.push(p.segment);
            }
            at = p.parent;
        }
        segments.reverse();
        segments.join(".")
    }

    fn location(&self) -> Location {
        Location::Path {
            path: self.render(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        for ok in [
            "http://x",
            "HTTPS://example.com:8443/a?b#c",
            "http://user:pw@host/",
            "http://[::1]:80/",
            "http://h:/",
        ] {
            assert_eq!(check_url(ok), Ok(()), "{ok}");
        }
        for bad in [
            "ftp://x",
            "http://",
            "http:///path",
            "http://a b",
            "http://x\n",
            "x",
            "http://h:99999/",
            "http://h:abc/",
            "http://[::1/",
            "http://@/",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn quotes_are_short_and_char_safe() {
        let long = "é".repeat(100);
        let q = quote(&long);
        assert!(q.chars().count() < 70, "{q}");
        assert!(q.ends_with("..."));
        assert_eq!(quote("a\"b"), "\"a\\\"b\"");
    }

    #[test]
    fn numbers_are_cleaned() {
        assert_eq!(clean_number("+1 (415) 886-7900"), "+14158867900");
        assert_eq!(clean_number("  4158867900"), "4158867900");
        assert_eq!(clean_number("1+2"), "12");
    }

    #[test]
    fn integers() {
        assert_eq!(as_integer(&serde_json::json!(5)), Some(Some(5)));
        assert_eq!(as_integer(&serde_json::json!(5.0)), Some(Some(5)));
        assert_eq!(as_integer(&serde_json::json!(5.5)), None);
        assert_eq!(as_integer(&serde_json::json!(u64::MAX)), Some(None));
        assert_eq!(as_integer(&serde_json::json!("5")), None);
    }
}
