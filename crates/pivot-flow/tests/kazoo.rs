//! KAZOO callflow JSON: every module's fields, defaults and limits, the examples from KAZOO's
//! pivot documentation, branches, and the document-level limits.

// Test helpers outside #[test] functions unwrap too: a failure there is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use pivot_flow::{
    AudioFormat, BodyFormat, Branch, ChannelScope, CollectDtmf, Conference, Diagnostic, Dial,
    DialStrategy, DialTarget, Document, ErrorKind, Flow, Hangup, HttpMethod, Limits, Location,
    Media, Menu, Node, Park, ParkAction, ParseError, Pause, Pivot, Play, Record, RequestFormat,
    Respond, Say, SendDtmf, SetChannelVariable, SetVariables, Severity, Step, StorageMethod,
    Terminators, Transfer, TransferType, UnknownModule, Variable, VariableScope, Webhook,
    parse_kazoo, parse_kazoo_value,
};
use serde_json::{Value, json};

// --- Helpers ---------------------------------------------------------------------------------

fn parse(value: &Value) -> Result<Document, ParseError> {
    parse_kazoo(value.to_string().as_bytes(), &Limits::default())
}

fn root(doc: &Document) -> &Node {
    match &doc.flow {
        Flow::Kazoo { root } => root,
        other => panic!("not a KAZOO flow: {other:?}"),
    }
}

/// The step of a single node `{module, data}`, which must parse without warnings.
fn step(module: &str, data: Value) -> Step {
    let doc = parse(&json!({"module": module, "data": data})).unwrap();
    assert_eq!(doc.warnings, vec![], "unexpected warnings");
    root(&doc).step.clone()
}

/// The node placed two levels deep, at `children._.children.1`.
fn nested(inner: Value) -> Value {
    json!({
        "module": "answer",
        "data": {},
        "children": {"_": {"module": "noop", "data": {}, "children": {"1": inner}}}
    })
}

const NESTED: &str = "children._.children.1";

/// Asserts that the document is refused as invalid with `message` at `path`.
fn assert_rejected(value: &Value, path: &str, message: &str) {
    let err = parse(value).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Invalid, "{err:?}");
    assert!(
        err.errors().any(|d| d.location
            == Location::Path {
                path: path.to_owned()
            }
            && d.message.contains(message)),
        "no error at {path} containing {message:?} in {:#?}",
        err.diagnostics
    );
}

/// Rejected when nested two levels deep: the message names the full path.
fn assert_nested_rejected(module: &str, data: Value, field: &str, message: &str) {
    let value = nested(json!({"module": module, "data": data}));
    assert_rejected(&value, &format!("{NESTED}.data.{field}"), message);
}

fn warnings_at<'d>(doc: &'d Document, path: &str) -> Vec<&'d Diagnostic> {
    doc.warnings
        .iter()
        .filter(|d| {
            d.severity == Severity::Warning
                && d.location
                    == Location::Path {
                        path: path.to_owned(),
                    }
        })
        .collect()
}

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

fn var(key: &str, value: &str) -> Variable {
    Variable {
        key: key.into(),
        value: value.into(),
    }
}

// --- KAZOO's documentation examples ----------------------------------------------------------

/// `applications/pivot/doc/README.md`, the `resp_body` of the debug example, unescaped.
const README_SAY_RECORD: &str = "\n    {\"module\":\"say\"\n     ,\"data\":{\"text\":\"Please leave your message after the beep\"}\n     ,\"children\":{\n         \"_\":{\n           \"module\":\"record_caller\"\n           ,\"data\":{\n               \"format\":\"mp3\"\n               ,\"url\":\"http://your.pivot.server/recordings\"\n               ,\"time_limit\":360\n           }\n         }\n        }\n    }\n";

/// `applications/pivot/doc/README.md`, "Failback" (a `"flow": {...}` member, here in braces).
const README_FAILBACK: &str = r#"{
"flow": {
    "data": {
        "method": "GET",
        "req_timeout": "5",
        "req_format": "kazoo",
        "voice_url": "{SERVER_URL}"
    },
    "module": "pivot",
    "children": {
        "_": {
            "module": "play",
            "data": {
                "id": "{MEDIA_ID}"
            },
            "children": {}
        }
    }
}
}"#;

#[test]
fn readme_say_then_record_caller() {
    let doc = parse_kazoo(README_SAY_RECORD.as_bytes(), &Limits::default()).unwrap();
    assert_eq!(doc.warnings, vec![]);
    let record = Node {
        step: Step::Record(Record {
            max_length_s: 360,
            silence_timeout_s: None,
            terminators: Terminators("#".into()),
            beep: false,
            action: None,
            method: HttpMethod::Post,
            storage_url: Some("http://your.pivot.server/recordings".into()),
            storage_method: StorageMethod::Put,
            format: AudioFormat::Mp3,
        }),
        skip_module: false,
        children: BTreeMap::new(),
    };
    let expected = Node {
        step: Step::Say(Say {
            text: "Please leave your message after the beep".into(),
            voice: Some("female".into()),
            language: None,
            engine: None,
            loops: 1,
            terminators: Terminators::all(),
        }),
        skip_module: false,
        children: BTreeMap::from([(Branch::Default, record)]),
    };
    assert_eq!(doc.flow, Flow::Kazoo { root: expected });
}

#[test]
fn readme_failback_placeholder_url_is_refused_at_flow_path() {
    let callflow: Value = serde_json::from_str(README_FAILBACK).unwrap();
    let err = parse_kazoo_value(&callflow["flow"], "flow", &Limits::default()).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Invalid);
    assert_eq!(
        err.to_string(),
        "flow.data.voice_url: must be an http(s) URL, got \"{SERVER_URL}\""
    );
}

#[test]
fn readme_failback_with_a_real_url() {
    let text = README_FAILBACK.replace("{SERVER_URL}", "https://pivot.example.com/start");
    let callflow: Value = serde_json::from_str(&text).unwrap();
    let doc = parse_kazoo_value(&callflow["flow"], "flow", &Limits::default()).unwrap();
    assert_eq!(doc.warnings, vec![]);
    let play = Node {
        step: Step::Play(Play {
            media: Media::Path("{MEDIA_ID}".into()),
            loops: 1,
            terminators: Terminators::all(),
            answer: true,
        }),
        skip_module: false,
        children: BTreeMap::new(),
    };
    let expected = Node {
        step: Step::Pivot(Pivot {
            voice_url: "https://pivot.example.com/start".into(),
            method: HttpMethod::Get,
            req_format: RequestFormat::Kazoo,
            req_body_format: BodyFormat::Form,
            // The legacy `req_timeout` is seconds.
            req_timeout_ms: 5000,
            debug: false,
            cdr_url: None,
            custom_request_headers: BTreeMap::new(),
        }),
        skip_module: false,
        children: BTreeMap::from([(Branch::Default, play)]),
    };
    assert_eq!(doc.flow, Flow::Kazoo { root: expected });
}

// --- Modules ---------------------------------------------------------------------------------

#[test]
fn tts_and_say() {
    for module in ["tts", "say"] {
        let full = step(
            module,
            json!({"text": "Hello", "voice": "Man", "language": "en-US", "engine": "flite",
                   "terminators": ["#", "*"], "endless_playback": true, "skip_module": false}),
        );
        assert_eq!(
            full,
            Step::Say(Say {
                text: "Hello".into(),
                voice: Some("male".into()),
                language: Some("en-US".into()),
                engine: Some("flite".into()),
                loops: 0,
                terminators: Terminators("#*".into()),
            })
        );
        assert_eq!(
            step(module, json!({"text": "Hi"})),
            Step::Say(Say {
                text: "Hi".into(),
                voice: Some("female".into()),
                language: None,
                engine: None,
                loops: 1,
                terminators: Terminators::all(),
            })
        );
        assert_nested_rejected(module, json!({}), "text", "required");
        assert_nested_rejected(
            module,
            json!({"text": "x".repeat(1001)}),
            "text",
            "must be at most 1000 characters, got 1001 characters",
        );
        assert_nested_rejected(
            module,
            json!({"text": "x", "voice": 5}),
            "voice",
            "must be a string, got 5",
        );
    }
    // Voices: case-insensitive man/woman, provider names as written; text counts characters.
    let Step::Say(say) = step("tts", json!({"text": "é".repeat(1000), "voice": "WOMAN"})) else {
        panic!()
    };
    assert_eq!(say.voice.as_deref(), Some("female"));
    let Step::Say(say) = step("tts", json!({"text": "x", "voice": "Polly.Joanna"})) else {
        panic!()
    };
    assert_eq!(say.voice.as_deref(), Some("Polly.Joanna"));
}

#[test]
fn play() {
    assert_eq!(
        step(
            "play",
            json!({"id": "https://media.example.com/a.wav", "loop_count": 3,
                   "endless_playback": false, "terminators": ["1"], "answer": false})
        ),
        Step::Play(Play {
            media: Media::Url("https://media.example.com/a.wav".into()),
            loops: 3,
            terminators: Terminators("1".into()),
            answer: false,
        })
    );
    assert_eq!(
        step("play", json!({"id": "media-1"})),
        Step::Play(Play {
            media: Media::Path("media-1".into()),
            loops: 1,
            terminators: Terminators::all(),
            answer: true,
        })
    );
    let Step::Play(p) = step(
        "play",
        json!({"id": "tone_stream://%(200,0,440)", "loop_count": 5, "endless_playback": true,
               "terminators": []}),
    ) else {
        panic!()
    };
    assert_eq!(p.loops, 0);
    assert_eq!(p.media, Media::Tone("tone_stream://%(200,0,440)".into()));
    assert_eq!(p.terminators, Terminators::none());
    // A multi-byte character where a scheme prefix would end must not upset media parsing.
    let Step::Play(p) = step("play", json!({"id": "abcd€xyzabcdefgh"})) else {
        panic!()
    };
    assert_eq!(p.media, Media::Path("abcd€xyzabcdefgh".into()));

    assert_nested_rejected("play", json!({}), "id", "required");
    assert_nested_rejected("play", json!({"id": ""}), "id", "must not be empty");
    assert_nested_rejected(
        "play",
        json!({"id": "m", "loop_count": 0}),
        "loop_count",
        "must be between 1 and 1000, got 0",
    );
    assert_nested_rejected(
        "play",
        json!({"id": "m", "answer": "yes"}),
        "answer",
        "must be true or false, got \"yes\"",
    );
}

#[test]
fn record_caller() {
    assert_eq!(
        step(
            "record_caller",
            json!({"url": "http://rec.example.com/up", "format": "wav", "method": "POST",
                   "time_limit": 60})
        ),
        Step::Record(Record {
            max_length_s: 60,
            silence_timeout_s: None,
            terminators: Terminators("#".into()),
            beep: false,
            action: None,
            method: HttpMethod::Post,
            storage_url: Some("http://rec.example.com/up".into()),
            storage_method: StorageMethod::Post,
            format: AudioFormat::Wav,
        })
    );
    assert_eq!(
        step("record_caller", json!({})),
        Step::Record(Record {
            max_length_s: 3600,
            silence_timeout_s: None,
            terminators: Terminators("#".into()),
            beep: false,
            action: None,
            method: HttpMethod::Post,
            storage_url: None,
            storage_method: StorageMethod::Put,
            format: AudioFormat::Mp3,
        })
    );
    let err = parse(&nested(
        json!({"module": "record_caller", "data": {"time_limit": 2}}),
    ))
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "children._.children.1.data.time_limit: must be between 5 and 10800 seconds, got 2"
    );
    assert_nested_rejected(
        "record_caller",
        json!({"format": "ogg"}),
        "format",
        "must be one of \"mp3\", \"wav\", got \"ogg\"",
    );
    assert_nested_rejected(
        "record_caller",
        json!({"url": "ftp://x"}),
        "url",
        "must be an http(s) URL, got \"ftp://x\"",
    );
}

#[test]
fn collect_dtmf() {
    assert_eq!(
        step(
            "collect_dtmf",
            json!({"max_digits": 4, "timeout": 3000, "interdigit_timeout": 1000,
                   "terminator": "*", "terminators": ["#", "0"], "collection_name": "pin"})
        ),
        Step::CollectDtmf(CollectDtmf {
            max_digits: 4,
            timeout_ms: 3000,
            interdigit_timeout_ms: 1000,
            terminators: Terminators("#0".into()),
            collection_name: "pin".into(),
        })
    );
    assert_eq!(
        step("collect_dtmf", json!({})),
        Step::CollectDtmf(CollectDtmf {
            max_digits: 1,
            timeout_ms: 5000,
            interdigit_timeout_ms: 2000,
            terminators: Terminators("#".into()),
            collection_name: "default".into(),
        })
    );
    let Step::CollectDtmf(c) = step("collect_dtmf", json!({"terminator": "*"})) else {
        panic!()
    };
    assert_eq!(c.terminators, Terminators("*".into()));

    assert_nested_rejected(
        "collect_dtmf",
        json!({"terminators": ["#", "#"]}),
        "terminators.1",
        "\"#\" is listed twice",
    );
    assert_nested_rejected(
        "collect_dtmf",
        json!({"terminators": ["#", "ab"]}),
        "terminators.1",
        "must be one DTMF key",
    );
    assert_nested_rejected(
        "collect_dtmf",
        json!({"max_digits": 129}),
        "max_digits",
        "must be between 1 and 128, got 129",
    );
    assert_nested_rejected(
        "collect_dtmf",
        json!({"timeout": 0}),
        "timeout",
        "must be between 1 and 3600000 ms, got 0",
    );
    assert_nested_rejected(
        "collect_dtmf",
        json!({"timeout": 2.5}),
        "timeout",
        "must be an integer, got 2.5",
    );
    assert_nested_rejected(
        "collect_dtmf",
        json!({"collection_name": ""}),
        "collection_name",
        "must not be empty",
    );
}

#[test]
fn menu() {
    let value = json!({
        "module": "menu",
        "data": {
            "media": {"greeting": "tts://Press one for sales", "invalid_media": false,
                      "exit_media": true, "transfer_media": "x.wav"},
            "retries": 2, "timeout": 5000, "interdigit_timeout": 1500,
            "max_extension_length": 2, "name": "main", "hunt": false, "hunt_allow": "^1",
            "hunt_deny": "^9", "allow_record_from_offnet": false, "record_pin": "1234"
        },
        "children": {
            "1": {"module": "tts", "data": {"text": "sales"}},
            "0#": {"module": "tts", "data": {"text": "operator"}},
            "timeout": {"module": "hangup", "data": {}},
            "max_retries": {"module": "hangup", "data": {}}
        }
    });
    let doc = parse(&value).unwrap();
    assert_eq!(doc.warnings, vec![]);
    let node = root(&doc);
    assert_eq!(
        node.step,
        Step::Menu(Menu {
            greeting: Some(Media::Tts("Press one for sales".into())),
            invalid_media: None,
            exit_media: Some(Media::Path("menu-exit".into())),
            retries: 2,
            timeout_ms: 5000,
            interdigit_timeout_ms: 1500,
            max_extension_length: 2,
        })
    );
    let keys: Vec<&Branch> = node.children.keys().collect();
    assert_eq!(
        keys,
        [
            &Branch::Digits("0#".into()),
            &Branch::Digits("1".into()),
            &Branch::Timeout,
            &Branch::MaxRetries,
        ]
    );

    assert_eq!(
        step("menu", json!({})),
        Step::Menu(Menu {
            greeting: None,
            invalid_media: Some(Media::Path("menu-invalid_entry".into())),
            exit_media: None,
            retries: 3,
            timeout_ms: 10_000,
            interdigit_timeout_ms: 2000,
            max_extension_length: 4,
        })
    );
    let Step::Menu(m) = step(
        "menu",
        json!({"media": {"invalid_media": "http://m/bad.wav"}, "suppress_media": true}),
    ) else {
        panic!()
    };
    assert_eq!(m.invalid_media, None);
    let Step::Menu(m) = step(
        "menu",
        json!({"media": {"invalid_media": "http://m/bad.wav"}}),
    ) else {
        panic!()
    };
    assert_eq!(m.invalid_media, Some(Media::Url("http://m/bad.wav".into())));

    // A stored menu cannot be loaded: the id is ignored, with a warning.
    let doc = parse(&json!({"module": "menu", "data": {"id": "abc123"}})).unwrap();
    let w = warnings_at(&doc, "data.id");
    assert_eq!(w.len(), 1);
    assert!(w[0].message.contains("stored menu documents"), "{}", w[0]);

    assert_nested_rejected(
        "menu",
        json!({"media": {"greeting": "ab"}}),
        "media.greeting",
        "must be at least 3 characters",
    );
    assert_nested_rejected(
        "menu",
        json!({"media": {"exit_media": 3}}),
        "media.exit_media",
        "must be a media reference or a boolean, got 3",
    );
    assert_nested_rejected(
        "menu",
        json!({"retries": 11}),
        "retries",
        "between 1 and 10",
    );
    assert_nested_rejected(
        "menu",
        json!({"timeout": 60_001}),
        "timeout",
        "between 1 and 60000 ms",
    );
    assert_nested_rejected(
        "menu",
        json!({"interdigit_timeout": 10_001}),
        "interdigit_timeout",
        "between 1 and 10000 ms",
    );
    assert_nested_rejected(
        "menu",
        json!({"max_extension_length": 7}),
        "max_extension_length",
        "between 1 and 6",
    );
    assert_nested_rejected("menu", json!({"media": []}), "media", "must be an object");
}

#[test]
fn pivot() {
    assert_eq!(
        step(
            "pivot",
            json!({"voice_url": "https://app.example.com/ivr", "method": "Post",
                   "req_format": "twiml", "req_body_format": "json", "req_timeout_ms": 2500,
                   "debug": true, "cdr_url": "http://cdr.example.com/",
                   "custom_request_headers": {"X-Token": "abc", "x-b": "d e"}})
        ),
        Step::Pivot(Pivot {
            voice_url: "https://app.example.com/ivr".into(),
            method: HttpMethod::Post,
            req_format: RequestFormat::Twiml,
            req_body_format: BodyFormat::Json,
            req_timeout_ms: 2500,
            debug: true,
            cdr_url: Some("http://cdr.example.com/".into()),
            custom_request_headers: BTreeMap::from([
                ("X-Token".to_owned(), "abc".to_owned()),
                ("x-b".to_owned(), "d e".to_owned()),
            ]),
        })
    );
    assert_eq!(
        step("pivot", json!({"voice_url": "HTTP://x"})),
        Step::Pivot(Pivot {
            voice_url: "HTTP://x".into(),
            method: HttpMethod::Get,
            req_format: RequestFormat::Kazoo,
            req_body_format: BodyFormat::Form,
            req_timeout_ms: 5000,
            debug: false,
            cdr_url: None,
            custom_request_headers: BTreeMap::new(),
        })
    );
    // Legacy `req_timeout`, in seconds, as a string or a number.
    for (legacy, ms) in [(json!("2.5"), 2500), (json!(3), 3000), (json!(" 5 "), 5000)] {
        let Step::Pivot(p) = step(
            "pivot",
            json!({"voice_url": "http://x/", "req_timeout": legacy}),
        ) else {
            panic!()
        };
        assert_eq!(p.req_timeout_ms, ms);
    }
    let doc = parse(
        &json!({"module": "pivot", "data": {"voice_url": "http://x/",
        "req_timeout": "9", "req_timeout_ms": 1000}}),
    )
    .unwrap();
    let Step::Pivot(p) = &root(&doc).step else {
        panic!()
    };
    assert_eq!(p.req_timeout_ms, 1000);
    assert_eq!(warnings_at(&doc, "data.req_timeout").len(), 1);

    let err = parse(&nested(
        json!({"module": "pivot", "data": {"voice_url": "ftp://x"}}),
    ))
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "children._.children.1.data.voice_url: must be an http(s) URL, got \"ftp://x\""
    );
    assert_nested_rejected("pivot", json!({}), "voice_url", "required");
    for bad in [
        "http://",
        "http://a b/",
        "http://x/\u{7}",
        "https:/x",
        "//x/y",
    ] {
        assert_nested_rejected(
            "pivot",
            json!({"voice_url": bad}),
            "voice_url",
            "http(s) URL",
        );
    }
    assert_nested_rejected(
        "pivot",
        json!({"voice_url": format!("http://x/{}", "a".repeat(2048))}),
        "voice_url",
        "must be at most 2048 characters",
    );
    assert_nested_rejected(
        "pivot",
        json!({"voice_url": "http://x/", "method": "put"}),
        "method",
        "must be one of \"get\", \"post\", got \"put\"",
    );
    assert_nested_rejected(
        "pivot",
        json!({"voice_url": "http://x/", "req_format": "xml"}),
        "req_format",
        "must be one of",
    );
    assert_nested_rejected(
        "pivot",
        json!({"voice_url": "http://x/", "req_timeout_ms": 30_001}),
        "req_timeout_ms",
        "must be between 1 and 30000 ms, got 30001",
    );
    assert_nested_rejected(
        "pivot",
        json!({"voice_url": "http://x/", "req_timeout": "soon"}),
        "req_timeout",
        "must be a number of seconds",
    );
    assert_nested_rejected(
        "pivot",
        json!({"voice_url": "http://x/", "req_timeout": "31"}),
        "req_timeout",
        "got \"31\"",
    );
    assert_nested_rejected(
        "pivot",
        json!({"voice_url": "http://x/", "custom_request_headers": {"Bad Header": "x"}}),
        "custom_request_headers.Bad Header",
        "not a valid HTTP header name",
    );
    assert_nested_rejected(
        "pivot",
        json!({"voice_url": "http://x/", "custom_request_headers": {"X-A": "a\r\nX-B: b"}}),
        "custom_request_headers.X-A",
        "CR, LF or NUL",
    );
    assert_nested_rejected(
        "pivot",
        json!({"voice_url": "http://x/", "custom_request_headers": {"X-A": 1}}),
        "custom_request_headers.X-A",
        "must be a string, got 1",
    );
    let many: serde_json::Map<String, Value> =
        (0..65).map(|i| (format!("X-{i}"), json!("v"))).collect();
    assert_nested_rejected(
        "pivot",
        json!({"voice_url": "http://x/", "custom_request_headers": many}),
        "custom_request_headers",
        "at most 64 headers, got 65",
    );
    assert_nested_rejected(
        "pivot",
        json!({"voice_url": "http://x/", "cdr_url": "mailto:a@b"}),
        "cdr_url",
        "http(s) URL",
    );
}

#[test]
fn response() {
    assert_eq!(
        step(
            "response",
            json!({"code": "503", "message": "NORMAL_TEMPORARY_FAILURE",
                   "media": "http://m.example.com/busy.wav"})
        ),
        Step::Respond(Respond {
            code: 503,
            message: Some("NORMAL_TEMPORARY_FAILURE".into()),
            media: Some(Media::Url("http://m.example.com/busy.wav".into())),
        })
    );
    assert_eq!(
        step("response", json!({})),
        Step::Respond(Respond {
            code: 486,
            message: None,
            media: None,
        })
    );
    let Step::Respond(r) = step("response", json!({"code": 404})) else {
        panic!()
    };
    assert_eq!(r.code, 404);
    assert_nested_rejected(
        "response",
        json!({"code": 700}),
        "code",
        "must be between 100 and 699, got 700",
    );
    assert_nested_rejected(
        "response",
        json!({"code": "busy"}),
        "code",
        "must be an integer or a string of digits, got \"busy\"",
    );
    assert_nested_rejected(
        "response",
        json!({"media": "m".repeat(2049)}),
        "media",
        "at most 2048 characters",
    );
}

#[test]
fn hangup() {
    assert_eq!(step("hangup", json!({})), Step::Hangup(Hangup::default()));
    assert_eq!(
        step("hangup", json!({"hangup_cause": "USER_BUSY"})),
        Step::Hangup(Hangup {
            cause: Some("USER_BUSY".into())
        })
    );
    // `data` may be left out or null.
    let doc = parse(&json!({"module": "hangup"})).unwrap();
    assert_eq!(root(&doc).step, Step::Hangup(Hangup::default()));
    let doc = parse(&json!({"module": "hangup", "data": null})).unwrap();
    assert_eq!(root(&doc).step, Step::Hangup(Hangup::default()));
    assert_nested_rejected(
        "hangup",
        json!({"hangup_cause": 5}),
        "hangup_cause",
        "must be a string",
    );
}

#[test]
fn set_variables() {
    assert_eq!(
        step(
            "set_variables",
            json!({"custom_application_vars": {"b-2": "two", "a_1": 1, "c": true}, "export": true})
        ),
        Step::SetVariables(SetVariables {
            scope: VariableScope::CustomApplication,
            variables: vec![var("a_1", "1"), var("b-2", "two"), var("c", "true")],
            export: true,
        })
    );
    assert_eq!(
        step("set_variables", json!({"custom_application_vars": {}})),
        Step::SetVariables(SetVariables {
            scope: VariableScope::CustomApplication,
            variables: vec![],
            export: false,
        })
    );
    // The legacy name still works, with a warning.
    let doc = parse(&json!({"module": "set_variables",
        "data": {"custom_channel_vars": {"x": "1"}}}))
    .unwrap();
    let Step::SetVariables(s) = &root(&doc).step else {
        panic!()
    };
    assert_eq!(s.variables, vec![var("x", "1")]);
    assert_eq!(warnings_at(&doc, "data.custom_channel_vars").len(), 1);

    assert_nested_rejected(
        "set_variables",
        json!({}),
        "custom_application_vars",
        "required",
    );
    assert_nested_rejected(
        "set_variables",
        json!({"custom_application_vars": {"bad key": "x"}}),
        "custom_application_vars.bad key",
        "may contain only letters, digits",
    );
    assert_nested_rejected(
        "set_variables",
        json!({"custom_application_vars": {"k": {"nested": 1}}}),
        "custom_application_vars.k",
        "must be a string, number or boolean, got an object",
    );
    assert_nested_rejected(
        "set_variables",
        json!({"custom_application_vars": {"k": null}}),
        "custom_application_vars.k",
        "got null",
    );
    assert_nested_rejected(
        "set_variables",
        json!({"custom_application_vars": "x=1"}),
        "custom_application_vars",
        "must be an object",
    );
}

#[test]
fn set_variable() {
    assert_eq!(
        step(
            "set_variable",
            json!({"variable": "hold_music", "value": "local_stream://moh", "channel": "both"})
        ),
        Step::SetChannelVariable(SetChannelVariable {
            variable: "hold_music".into(),
            value: "local_stream://moh".into(),
            channel: ChannelScope::Both,
        })
    );
    assert_eq!(
        step("set_variable", json!({"variable": "x"})),
        Step::SetChannelVariable(SetChannelVariable {
            variable: "x".into(),
            value: String::new(),
            channel: ChannelScope::A,
        })
    );
    assert_nested_rejected("set_variable", json!({}), "variable", "required");
    assert_nested_rejected(
        "set_variable",
        json!({"variable": "x", "channel": "b"}),
        "channel",
        "must be one of \"a\", \"both\", got \"b\"",
    );
}

#[test]
fn sleep() {
    assert_eq!(
        step("sleep", json!({"duration": 500, "unit": "ms"})),
        Step::Pause(Pause { duration_ms: 500 })
    );
    assert_eq!(
        step("sleep", json!({})),
        Step::Pause(Pause { duration_ms: 0 })
    );
    assert_eq!(
        step("sleep", json!({"duration": 3})),
        Step::Pause(Pause { duration_ms: 3000 })
    );
    assert_eq!(
        step("sleep", json!({"duration": 2, "unit": "m"})),
        Step::Pause(Pause {
            duration_ms: 120_000
        })
    );
    assert_eq!(
        step("sleep", json!({"duration": 24, "unit": "h"})),
        Step::Pause(Pause {
            duration_ms: 86_400_000
        })
    );
    assert_nested_rejected(
        "sleep",
        json!({"duration": 25, "unit": "h"}),
        "duration",
        "must be at most one day (86400000 ms), got 25 h",
    );
    assert_nested_rejected(
        "sleep",
        json!({"duration": -1}),
        "duration",
        "must be between 0 and 86400000, got -1",
    );
    assert_nested_rejected(
        "sleep",
        json!({"unit": "d"}),
        "unit",
        "must be one of \"ms\", \"s\", \"m\", \"h\", got \"d\"",
    );
}

#[test]
fn answer_and_noop() {
    assert_eq!(step("answer", json!({})), Step::Answer);
    assert_eq!(step("noop", json!({})), Step::Noop);
    let doc = parse(&nested(
        json!({"module": "noop", "data": {"skip_module": true}}),
    ))
    .unwrap();
    let inner = &root(&doc).children[&Branch::Default].children[&Branch::Digits("1".into())];
    assert!(inner.skip_module);
    assert_eq!(inner.step, Step::Noop);
    // Fields these modules do not have are reported, since they are usually typos.
    let doc = parse(&json!({"module": "answer", "data": {"delay": 1}})).unwrap();
    let w = warnings_at(&doc, "data.delay");
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].message, "unknown field, ignored");
    assert_nested_rejected(
        "answer",
        json!({"skip_module": "yes"}),
        "skip_module",
        "must be true or false",
    );
}

#[test]
fn send_dtmf() {
    assert_eq!(
        step(
            "send_dtmf",
            json!({"digits": "12w#AW*", "duration_ms": "500"})
        ),
        Step::SendDtmf(SendDtmf {
            digits: "12w#AW*".into(),
            duration_ms: 500,
        })
    );
    assert_eq!(
        step("send_dtmf", json!({"digits": "1"})),
        Step::SendDtmf(SendDtmf {
            digits: "1".into(),
            duration_ms: 2000,
        })
    );
    let Step::SendDtmf(s) = step("send_dtmf", json!({"digits": "9", "duration_ms": 100})) else {
        panic!()
    };
    assert_eq!(s.duration_ms, 100);
    assert_nested_rejected("send_dtmf", json!({}), "digits", "required");
    assert_nested_rejected(
        "send_dtmf",
        json!({"digits": "12x"}),
        "digits",
        "must be DTMF keys (0-9, *, #, A-D) or w/W pauses, got \"12x\"",
    );
    assert_nested_rejected(
        "send_dtmf",
        json!({"digits": "1", "duration_ms": 0}),
        "duration_ms",
        "must be between 1 and 10000 ms, got 0",
    );
    assert_nested_rejected(
        "send_dtmf",
        json!({"digits": "1".repeat(129)}),
        "digits",
        "at most 128 characters",
    );
}

#[test]
fn resources_and_offnet() {
    for module in ["resources", "offnet"] {
        let early = if module == "offnet" {
            json!("consume")
        } else {
            json!(true)
        };
        assert_eq!(
            step(
                module,
                json!({"to_did": "+1 (415) 886-7900", "timeout": 45, "bypass_e164": true,
                       "caller_id_type": "external", "custom_sip_headers": {"X-A": "1"},
                       "do_not_normalize": false, "dynamic_flags": ["zone"],
                       "emit_account_id": true, "format_from_uri": false,
                       "from_uri_realm": "r.example.com", "hunt_account_id": "acc",
                       "ignore_early_media": early, "outbound_flags": ["fax"],
                       "resource_type": "audio", "ringback": "%(2000,4000,440,480)",
                       "use_local_resources": false})
            ),
            dial(
                DialTarget::Number {
                    number: Some("+14158867900".into()),
                    send_digits: None,
                },
                45,
                DialStrategy::Simultaneous,
            )
        );
        assert_eq!(
            step(module, json!({})),
            dial(
                DialTarget::Number {
                    number: None,
                    send_digits: None,
                },
                30,
                DialStrategy::Simultaneous,
            )
        );
        assert_nested_rejected(
            module,
            json!({"to_did": "call me"}),
            "to_did",
            "must be a phone number with digits, got \"call me\"",
        );
        assert_nested_rejected(
            module,
            json!({"timeout": 0}),
            "timeout",
            "must be between 1 and 3600 seconds, got 0",
        );
        assert_nested_rejected(
            module,
            json!({"ignore_early_media": "maybe"}),
            "ignore_early_media",
            "got \"maybe\"",
        );
    }
}

#[test]
fn device() {
    assert_eq!(
        step(
            "device",
            json!({"id": "dev1", "timeout": 15, "dial_strategy": "single", "delay": 0,
                   "can_call_self": true, "can_text_self": false, "static_invite": "sip:x@y",
                   "suppress_clid": true, "custom_sip_headers": {}})
        ),
        dial(
            DialTarget::Device { id: "dev1".into() },
            15,
            DialStrategy::Single
        )
    );
    assert_eq!(
        step("device", json!({"id": "d"})),
        dial(
            DialTarget::Device { id: "d".into() },
            20,
            DialStrategy::Simultaneous
        )
    );
    // KAZOO's 0 means "the default".
    assert_eq!(
        step("device", json!({"id": "d", "timeout": 0})),
        dial(
            DialTarget::Device { id: "d".into() },
            20,
            DialStrategy::Simultaneous
        )
    );
    assert_nested_rejected("device", json!({}), "id", "required");
    assert_nested_rejected(
        "device",
        json!({"id": "d", "timeout": 3601}),
        "timeout",
        "must be between 0 and 3600 seconds, got 3601",
    );
    assert_nested_rejected(
        "device",
        json!({"id": "d", "dial_strategy": "random"}),
        "dial_strategy",
        "must be one of \"simultaneous\", \"single\"",
    );
}

#[test]
fn user() {
    assert_eq!(
        step(
            "user",
            json!({"id": "u1", "timeout": 30, "strategy": "single",
                   "fail_on_single_reject": true, "delay": 2})
        ),
        dial(
            DialTarget::User { id: "u1".into() },
            30,
            DialStrategy::Single
        )
    );
    assert_eq!(
        step("user", json!({"id": "u"})),
        dial(
            DialTarget::User { id: "u".into() },
            20,
            DialStrategy::Simultaneous
        )
    );
    assert_nested_rejected("user", json!({"id": 7}), "id", "must be a string, got 7");
    assert_nested_rejected(
        "user",
        json!({"id": "u", "strategy": "weighted_random"}),
        "strategy",
        "got \"weighted_random\"",
    );
}

#[test]
fn transfer() {
    assert_eq!(
        step(
            "transfer",
            json!({"target": "2000", "transfer_type": "attended", "leg": "bleg",
                   "captures": ["no_match"]})
        ),
        Step::Transfer(Transfer {
            target: "2000".into(),
            transfer_type: TransferType::Attended,
        })
    );
    assert_eq!(
        step("transfer", json!({"target": "1"})),
        Step::Transfer(Transfer {
            target: "1".into(),
            transfer_type: TransferType::Blind,
        })
    );
    assert_nested_rejected("transfer", json!({}), "target", "required");
    assert_nested_rejected(
        "transfer",
        json!({"target": "1", "transfer_type": "warm"}),
        "transfer_type",
        "must be one of \"blind\", \"attended\", got \"warm\"",
    );
}

#[test]
fn conference() {
    assert_eq!(
        step(
            "conference",
            json!({"config": {"name": "room1", "max_participants": 10, "member": {}},
                   "moderator": true, "play_entry_tone": "tone_stream://%(100,0,800)",
                   "play_exit_tone": false, "welcome_prompt": {"play": false}})
        ),
        Step::Conference(Conference {
            name: "room1".into(),
            start_on_enter: true,
            end_on_exit: true,
            beep: true,
            muted: false,
            max_participants: 10,
            wait_media: None,
        })
    );
    assert_eq!(
        step(
            "conference",
            json!({"id": "0123456789abcdef0123456789abcdef"})
        ),
        Step::Conference(Conference {
            name: "0123456789abcdef0123456789abcdef".into(),
            start_on_enter: true,
            end_on_exit: false,
            beep: true,
            muted: false,
            max_participants: 250,
            wait_media: None,
        })
    );
    let Step::Conference(c) = step("conference", json!({"id": "r", "play_entry_tone": false}))
    else {
        panic!()
    };
    assert!(!c.beep);
    assert_rejected(
        &nested(json!({"module": "conference", "data": {}})),
        &format!("{NESTED}.data"),
        "a conference needs a name",
    );
    assert_rejected(
        &json!({"module": "conference", "data": {"config": {"name": null}}}),
        "data",
        "a conference needs a name",
    );
    assert_nested_rejected(
        "conference",
        json!({"config": {"name": "r", "max_participants": 1}}),
        "config.max_participants",
        "must be between 2 and 250, got 1",
    );
    assert_nested_rejected(
        "conference",
        json!({"id": "r", "play_entry_tone": 1}),
        "play_entry_tone",
        "must be a boolean or a media reference, got 1",
    );
}

#[test]
fn park() {
    assert_eq!(
        step(
            "park",
            json!({"action": "retrieve", "slot": 101, "default_ringback_timeout": 120_000,
                   "presence_id": "p", "custom_presence_id": false, "slots": {},
                   "default_callback_timeout": 30, "default_presence_type": "early"})
        ),
        Step::Park(Park {
            action: ParkAction::Retrieve,
            slot: Some("101".into()),
            ringback_timeout_ms: Some(120_000),
        })
    );
    assert_eq!(
        step("park", json!({})),
        Step::Park(Park {
            action: ParkAction::Park,
            slot: None,
            ringback_timeout_ms: None,
        })
    );
    let Step::Park(p) = step("park", json!({"action": "direct_park", "slot": "7"})) else {
        panic!()
    };
    assert_eq!(
        (p.action, p.slot.as_deref()),
        (ParkAction::DirectPark, Some("7"))
    );
    assert_nested_rejected(
        "park",
        json!({"action": "unpark"}),
        "action",
        "got \"unpark\"",
    );
    assert_nested_rejected("park", json!({"slot": []}), "slot", "got an array");
    assert_nested_rejected(
        "park",
        json!({"default_ringback_timeout": -5}),
        "default_ringback_timeout",
        "got -5",
    );
}

#[test]
fn webhook() {
    assert_eq!(
        step(
            "webhook",
            json!({"uri": "https://hooks.example.com/x", "http_verb": "get", "retries": 1,
                   "custom_data": {"z": "1", "a": 2}})
        ),
        Step::Webhook(Webhook {
            uri: "https://hooks.example.com/x".into(),
            method: HttpMethod::Get,
            retries: 1,
            custom_data: vec![var("a", "2"), var("z", "1")],
        })
    );
    assert_eq!(
        step("webhook", json!({"uri": "http://h/"})),
        Step::Webhook(Webhook {
            uri: "http://h/".into(),
            method: HttpMethod::Post,
            retries: 3,
            custom_data: vec![],
        })
    );
    assert_nested_rejected("webhook", json!({}), "uri", "required");
    assert_nested_rejected(
        "webhook",
        json!({"uri": "http://h/", "retries": 6}),
        "retries",
        "must be between 0 and 5, got 6",
    );
    assert_nested_rejected(
        "webhook",
        json!({"uri": "http://h/", "custom_data": {"k": [1]}}),
        "custom_data.k",
        "got an array",
    );
}

// --- Unknown modules, nodes and branches -----------------------------------------------------

#[test]
fn unknown_module_is_kept_with_a_warning() {
    let doc = parse(&json!({
        "module": "voicemail",
        "data": {"id": "abc", "max_message_length": 60},
        "children": {"_": {"module": "hangup", "data": {}}}
    }))
    .unwrap();
    let node = root(&doc);
    assert_eq!(
        node.step,
        Step::Unknown(UnknownModule {
            module: "voicemail".into(),
            data: json!({"id": "abc", "max_message_length": 60}),
        })
    );
    assert_eq!(
        node.children[&Branch::Default].step,
        Step::Hangup(Hangup::default())
    );
    assert_eq!(
        doc.warnings,
        vec![Diagnostic {
            severity: Severity::Warning,
            location: Location::Path {
                path: "module".into()
            },
            message: "module \"voicemail\" is not supported by pivot; the call follows \"_\""
                .into(),
        }]
    );
    // Nested, without data.
    let doc = parse(&nested(json!({"module": "ring_group"}))).unwrap();
    let inner = &root(&doc).children[&Branch::Default].children[&Branch::Digits("1".into())];
    assert_eq!(
        inner.step,
        Step::Unknown(UnknownModule {
            module: "ring_group".into(),
            data: json!({}),
        })
    );
    assert_eq!(warnings_at(&doc, &format!("{NESTED}.module")).len(), 1);
}

#[test]
fn branch_keys() {
    let doc = parse(&json!({
        "module": "noop",
        "data": {},
        "children": {
            "_": {"module": "noop", "data": {}},
            "1": {"module": "noop", "data": {}},
            "0#": {"module": "noop", "data": {}},
            "*": {"module": "noop", "data": {}},
            "timeout": {"module": "noop", "data": {}},
            "max_retries": {"module": "noop", "data": {}},
            "nomatch": {"module": "noop", "data": {}}
        }
    }))
    .unwrap();
    let mut keys: Vec<Branch> = root(&doc).children.keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        vec![
            Branch::Default,
            Branch::Digits("*".into()),
            Branch::Digits("0#".into()),
            Branch::Digits("1".into()),
            Branch::Timeout,
            Branch::MaxRetries,
            Branch::Other("nomatch".into()),
        ]
    );
    assert_rejected(
        &json!({"module": "noop", "data": {}, "children": {"": {"module": "noop"}}}),
        "children.",
        "must not be empty",
    );
}

#[test]
fn node_shape_errors() {
    assert_rejected(&json!({"data": {}}), "module", "required");
    assert_rejected(&json!({"module": ""}), "module", "must not be empty");
    assert_rejected(&json!({"module": 3}), "module", "must be a string, got 3");
    assert_rejected(
        &json!({"module": "m".repeat(65)}),
        "module",
        "at most 64 characters",
    );
    assert_rejected(
        &json!({"module": "tts", "data": "hello"}),
        "data",
        "must be an object, got \"hello\"",
    );
    assert_rejected(
        &json!({"module": "noop", "children": []}),
        "children",
        "must be an object",
    );
    assert_rejected(
        &nested(json!("tts")),
        NESTED,
        "must be a callflow node (an object with \"module\" and \"data\"), got \"tts\"",
    );
    // Unknown node keys are only warnings.
    let doc = parse(&json!({"module": "noop", "data": {}, "id": "x"})).unwrap();
    assert_eq!(warnings_at(&doc, "id").len(), 1);
}

#[test]
fn all_problems_are_reported_at_once() {
    let err = parse(&json!({
        "module": "pivot",
        "data": {"voice_url": "ftp://x", "method": "put"},
        "children": {"_": {"module": "tts", "data": {}}}
    }))
    .unwrap_err();
    let paths: Vec<String> = err.errors().map(|d| d.location.to_string()).collect();
    assert_eq!(
        paths,
        ["data.voice_url", "data.method", "children._.data.text"]
    );
}

#[test]
fn top_level_array_is_refused_at_document() {
    let err = parse_kazoo(b"[{\"module\":\"noop\"}]", &Limits::default()).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Invalid);
    assert_eq!(err.diagnostics.len(), 1);
    assert_eq!(err.diagnostics[0].location.to_string(), "document");
    assert!(
        err.to_string()
            .starts_with("document: must be a callflow node")
    );
}

#[test]
fn malformed_json_is_a_syntax_error_with_position() {
    let err = parse_kazoo(
        b"{\"module\": \"tts\",\n \"data\": {\"text\": }}",
        &Limits::default(),
    )
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Syntax);
    assert_eq!(
        err.diagnostics[0].location,
        Location::Position {
            line: 2,
            column: 19
        }
    );
}

// --- Limits ----------------------------------------------------------------------------------

/// A chain of `depth` nodes, each the `_` child of the one before.
fn chain(depth: usize) -> String {
    let mut text = String::new();
    for _ in 1..depth {
        text.push_str(r#"{"module":"noop","data":{},"children":{"_":"#);
    }
    text.push_str(r#"{"module":"hangup","data":{}}"#);
    for _ in 1..depth {
        text.push_str("}}");
    }
    text
}

#[test]
fn depth_64_is_accepted_and_65_is_too_large() {
    let limits = Limits::default();
    let doc = parse_kazoo(chain(64).as_bytes(), &limits).unwrap();
    let mut node = root(&doc);
    let mut depth = 1;
    while let Some(child) = node.children.get(&Branch::Default) {
        node = child;
        depth += 1;
    }
    assert_eq!(depth, 64);

    let err = parse_kazoo(chain(65).as_bytes(), &limits).unwrap_err();
    assert_eq!(err.kind, ErrorKind::TooLarge);
    let path = vec!["children._"; 64].join(".");
    let errors: Vec<&Diagnostic> = err.errors().collect();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].location, Location::Path { path: path.clone() });
    assert!(
        errors[0].message.contains("deeper than 64"),
        "{}",
        errors[0]
    );
    assert!(err.to_string().starts_with(&path));
}

#[test]
fn very_deep_json_is_refused_before_the_walk() {
    let err = parse_kazoo(chain(5000).as_bytes(), &Limits::default()).unwrap_err();
    assert_eq!(err.kind, ErrorKind::TooLarge);
}

#[test]
fn limit_errors_take_precedence_over_field_errors() {
    let mut value = json!({"module": "tts", "data": {}});
    for _ in 0..70 {
        value = json!({"module": "noop", "data": {}, "children": {"_": value}});
    }
    let value = json!({"module": "play", "data": {}, "children": {"_": value}});
    let err = parse_kazoo_value(&value, "", &Limits::default()).unwrap_err();
    assert_eq!(err.kind, ErrorKind::TooLarge);
    assert!(err.errors().any(|d| d.message == "required"));
}

fn wide(children: usize) -> String {
    let mut text = String::from(r#"{"module":"menu","data":{},"children":{"#);
    for i in 0..children {
        if i > 0 {
            text.push(',');
        }
        text.push_str(&format!(r#""{i}":{{"module":"noop","data":{{}}}}"#));
    }
    text.push_str("}}");
    text
}

#[test]
fn ten_thousand_nodes_are_accepted_and_one_more_is_too_large() {
    let limits = Limits::default();
    let doc = parse_kazoo(wide(9_999).as_bytes(), &limits).unwrap();
    assert_eq!(root(&doc).children.len(), 9_999);

    let err = parse_kazoo(wide(10_000).as_bytes(), &limits).unwrap_err();
    assert_eq!(err.kind, ErrorKind::TooLarge);
    let errors: Vec<&Diagnostic> = err.errors().collect();
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].message.contains("more than 10000 nodes"),
        "{}",
        errors[0]
    );
}

#[test]
fn smaller_limits_apply() {
    let limits = Limits {
        max_depth: 3,
        max_nodes: 2,
        ..Limits::default()
    };
    let err = parse_kazoo(chain(3).as_bytes(), &limits).unwrap_err();
    assert_eq!(err.kind, ErrorKind::TooLarge);
    assert_eq!(
        err.to_string().split(':').next(),
        Some("children._.children._")
    );
    let err = parse_kazoo(chain(4).as_bytes(), &limits).unwrap_err();
    assert_eq!(err.kind, ErrorKind::TooLarge);
}

// --- Base path ---------------------------------------------------------------------------------

#[test]
fn base_path_prefixes_every_diagnostic() {
    let flow = json!({
        "module": "tts",
        "data": {"text": "hi", "x": 1},
        "children": {"_": {"module": "tts", "data": {}}}
    });
    let err = parse_kazoo_value(&flow, "flow", &Limits::default()).unwrap_err();
    let located: Vec<(Severity, String)> = err
        .diagnostics
        .iter()
        .map(|d| (d.severity, d.location.to_string()))
        .collect();
    assert_eq!(
        located,
        [
            (Severity::Warning, "flow.data.x".to_owned()),
            (Severity::Error, "flow.children._.data.text".to_owned()),
        ]
    );
    let err = parse_kazoo_value(&json!(null), "flow", &Limits::default()).unwrap_err();
    assert_eq!(err.diagnostics[0].location.to_string(), "flow");
}

// --- Robustness -------------------------------------------------------------------------------

#[test]
fn odd_values_never_panic() {
    let odd = [
        json!(null),
        json!(true),
        json!(-1),
        json!(1e300),
        json!(u64::MAX),
        json!(""),
        json!("€€€€€€€€€€€€€€€€"),
        json!("\u{0}"),
        json!([]),
        json!({}),
        json!([1, "a", null]),
    ];
    let modules = [
        "tts",
        "say",
        "play",
        "record_caller",
        "collect_dtmf",
        "menu",
        "pivot",
        "response",
        "hangup",
        "set_variables",
        "set_variable",
        "sleep",
        "answer",
        "noop",
        "send_dtmf",
        "resources",
        "offnet",
        "device",
        "user",
        "transfer",
        "conference",
        "park",
        "webhook",
        "voicemail",
    ];
    let fields = [
        "text",
        "voice",
        "terminators",
        "id",
        "loop_count",
        "url",
        "time_limit",
        "terminator",
        "timeout",
        "media",
        "voice_url",
        "req_timeout",
        "req_timeout_ms",
        "code",
        "duration",
        "unit",
        "digits",
        "duration_ms",
        "to_did",
        "config",
        "slot",
        "custom_data",
        "custom_application_vars",
        "custom_request_headers",
        "play_entry_tone",
        "uri",
    ];
    for module in modules {
        for field in fields {
            for value in &odd {
                let _ = parse(&json!({"module": module, "data": {field: value}}));
            }
        }
    }
}
