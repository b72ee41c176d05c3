//! TwiML → `Flow::Twiml`: every verb and noun, the documents Twilio apps really send, KAZOO's
//! defects fixed (reference §5), and errors that name the element and where it is.

// Test helpers outside #[test] functions unwrap too: a failure there is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// A failed unwrap is a failed test, with its message.

use pivot_flow::{
    AudioFormat, Conference, Dial, DialStrategy, DialTarget, Document, ErrorKind, Flow, Gather,
    Hangup, HttpMethod, Limits, Location, Media, ParseError, Pause, Play, Record, Redirect, Reject,
    RejectReason, Say, SendDtmf, SetVariables, Severity, Step, StorageMethod, Terminators,
    Variable, VariableScope, parse_twiml,
};

fn parse(xml: &str) -> Result<Document, ParseError> {
    parse_twiml(xml.as_bytes(), &Limits::default())
}

fn doc(xml: &str) -> Document {
    match parse(xml) {
        Ok(doc) => doc,
        Err(e) => panic!("refused: {:#?}\n{xml}", e.diagnostics),
    }
}

fn steps(xml: &str) -> Vec<Step> {
    let Flow::Twiml { steps } = doc(xml).flow else {
        panic!("not TwiML")
    };
    steps
}

/// The only step of a document that must parse without warnings.
fn only_step(xml: &str) -> Step {
    let doc = doc(xml);
    assert_eq!(doc.warnings, vec![], "{xml}");
    let Flow::Twiml { mut steps } = doc.flow else {
        panic!("not TwiML")
    };
    assert_eq!(steps.len(), 1, "{steps:?}");
    steps.remove(0)
}

fn refused(xml: &str) -> ParseError {
    match parse(xml) {
        Ok(doc) => panic!("accepted: {doc:#?}\n{xml}"),
        Err(e) => e,
    }
}

/// The single error of a refused document: its kind, location and message.
fn the_error(xml: &str) -> (ErrorKind, Location, String) {
    let err = refused(xml);
    let errors: Vec<_> = err.errors().collect();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    (
        err.kind,
        errors[0].location.clone(),
        errors[0].message.clone(),
    )
}

fn at(line: u32, column: u32) -> Location {
    Location::Position { line, column }
}

fn warnings(xml: &str) -> Vec<(Location, String)> {
    doc(xml)
        .warnings
        .into_iter()
        .inspect(|w| assert_eq!(w.severity, Severity::Warning))
        .map(|w| (w.location, w.message))
        .collect()
}

fn say(text: &str) -> Say {
    Say {
        text: text.to_owned(),
        voice: None,
        language: None,
        engine: None,
        loops: 1,
        terminators: Terminators::all(),
    }
}

fn play(url: &str) -> Play {
    Play {
        media: Media::parse(url),
        loops: 1,
        terminators: Terminators::all(),
        answer: true,
    }
}

fn number(n: &str) -> DialTarget {
    DialTarget::Number {
        number: Some(n.to_owned()),
        send_digits: None,
    }
}

fn dial(targets: Vec<DialTarget>) -> Dial {
    Dial {
        targets,
        timeout_s: 30,
        caller_id: None,
        time_limit_s: 14_400,
        action: None,
        method: HttpMethod::Post,
        record: false,
        hangup_on: None,
        continue_on_fail: true,
        strategy: DialStrategy::Simultaneous,
        collect_dtmf: false,
    }
}

fn variable(key: &str, value: &str) -> Variable {
    Variable {
        key: key.to_owned(),
        value: value.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// <Say>

#[test]
fn say_with_every_attribute() {
    let step = only_step(
        r##"<Response><Say voice="Polly.Joanna" language="en-GB" engine="flite" loop="3" terminators="#*">Hi &amp; bye</Say></Response>"##,
    );
    assert_eq!(
        step,
        Step::Say(Say {
            text: "Hi & bye".into(),
            voice: Some("Polly.Joanna".into()),
            language: Some("en-GB".into()),
            engine: Some("flite".into()),
            loops: 3,
            terminators: Terminators("#*".into()),
        })
    );
}

#[test]
fn say_defaults_and_whitespace_collapse() {
    let step = only_step("<Response><Say>\n   Hello,\n\t  world   </Say></Response>");
    assert_eq!(step, Step::Say(say("Hello, world")));
}

#[test]
fn say_generic_voices_map_to_genders() {
    for (voice, expected) in [
        ("man", "male"),
        ("MALE", "male"),
        ("Woman", "female"),
        ("female", "female"),
    ] {
        let xml = format!(r#"<Response><Say voice="{voice}">x</Say></Response>"#);
        let Step::Say(s) = only_step(&xml) else {
            panic!()
        };
        assert_eq!(s.voice.as_deref(), Some(expected), "{voice}");
    }
}

/// KAZOO crashed on any voice but man/woman and any language outside its six; pivot keeps them.
#[test]
fn kazoo_defect_fixed_say_accepts_any_voice_and_language() {
    let step = only_step(r#"<Response><Say voice="alice" language="en-US">Hello</Say></Response>"#);
    let Step::Say(s) = step else { panic!() };
    assert_eq!(s.voice.as_deref(), Some("alice"));
    assert_eq!(s.language.as_deref(), Some("en-US"));
    let step = only_step(
        r#"<Response><Say voice="Google.en-US-Neural2-F" language="x-klingon">Hi</Say></Response>"#,
    );
    let Step::Say(s) = step else { panic!() };
    assert_eq!(s.voice.as_deref(), Some("Google.en-US-Neural2-F"));
    assert_eq!(s.language.as_deref(), Some("x-klingon"));
}

#[test]
fn say_loop_zero_is_forever_and_bad_loops_are_refused() {
    let Step::Say(s) = only_step(r#"<Response><Say loop="0">x</Say></Response>"#) else {
        panic!()
    };
    assert_eq!(s.loops, 0);
    let (kind, location, message) =
        the_error("<Response>\n  <Say loop=\"many\">x</Say>\n</Response>");
    assert_eq!(kind, ErrorKind::Invalid);
    assert_eq!(location, at(2, 3));
    assert_eq!(
        message,
        r#"<Say> attribute "loop" must be a whole number, not "many""#
    );
    let (_, _, message) = the_error(r#"<Response><Say loop="1001">x</Say></Response>"#);
    assert!(message.contains("from 0 to 1000"), "{message}");
}

#[test]
fn say_bad_terminators_are_refused_and_repeats_dropped() {
    let (_, location, message) =
        the_error(r##"<Response><Say terminators="#x">x</Say></Response>"##);
    assert_eq!(location, at(1, 11));
    assert!(
        message.contains(r#"<Say> attribute "terminators""#),
        "{message}"
    );
    let Step::Say(s) = only_step("<Response><Say terminators=\"##1\">x</Say></Response>") else {
        panic!()
    };
    assert_eq!(s.terminators, Terminators("#1".into()));
    let Step::Say(s) = only_step(r#"<Response><Say terminators="">x</Say></Response>"#) else {
        panic!()
    };
    assert_eq!(s.terminators, Terminators::none());
}

#[test]
fn ssml_is_reduced_to_text() {
    let xml = r#"<Response><Say voice="Polly.Joanna">
        <prosody rate="slow">Hello</prosody><break time="1s"/>there,
        <emphasis level="strong">dear</emphasis> <say-as interpret-as="characters">abc</say-as>
        <sub alias="World Wide Web Consortium">W3C</sub><p>New paragraph.</p><s>Sentence</s>
        <amazon:effect name="whispered">quiet</amazon:effect> <phoneme alphabet="ipa" ph="x">tomato</phoneme>
        <lang xml:lang="fr-FR">bonjour</lang> <w role="amazon:VB">read</w>
    </Say></Response>"#;
    let Step::Say(s) = only_step(xml) else {
        panic!()
    };
    assert_eq!(
        s.text,
        "Hello there, dear abc World Wide Web Consortium New paragraph. Sentence quiet tomato \
         bonjour read"
    );
}

#[test]
fn ssml_joins_words_only_where_the_text_does() {
    let cases = [
        ("Hel<emphasis>lo</emphasis>!", "Hello!"),
        ("a<break/><sub alias=\"\">x</sub>b", "a b"),
        ("<s>one</s><s>two</s>", "one two"),
        (" <prosody> a </prosody> ", "a"),
    ];
    for (ssml, text) in cases {
        let xml = format!("<Response><Say>{ssml}</Say></Response>");
        assert_eq!(only_step(&xml), Step::Say(say(text)), "{ssml}");
    }
}

#[test]
fn say_non_ssml_children_are_spoken_with_a_warning() {
    let w = warnings("<Response><Say>a <Foo>b</Foo></Say></Response>");
    assert_eq!(
        w,
        vec![(
            at(1, 18),
            "<Foo> inside <Say> is not SSML; only its text is spoken".into()
        )]
    );
}

#[test]
fn empty_say_is_skipped_with_a_warning() {
    let doc = doc("<Response><Say>  </Say><Say/><Hangup/></Response>");
    assert_eq!(
        doc.flow,
        Flow::Twiml {
            steps: vec![Step::Hangup(Hangup::default())]
        }
    );
    assert_eq!(doc.warnings.len(), 2);
    assert_eq!(doc.warnings[0].message, "<Say> has no text; skipped");
    assert_eq!(doc.warnings[1].location, at(1, 24));
}

#[test]
fn say_longer_than_4096_characters_is_refused() {
    let ok = format!("<Response><Say>{}</Say></Response>", "é".repeat(4096));
    assert!(parse(&ok).is_ok());
    let long = format!("<Response><Say>{}</Say></Response>", "é".repeat(4097));
    let (_, location, message) = the_error(&long);
    assert_eq!(location, at(1, 11));
    assert_eq!(
        message,
        "<Say> text is 4097 characters long; the limit is 4096"
    );
}

// ---------------------------------------------------------------------------------------------
// <Play>

#[test]
fn play_with_every_attribute() {
    let step = only_step(
        r#"<Response><Play loop="2" terminators="*">https://example.com/a.mp3</Play></Response>"#,
    );
    assert_eq!(
        step,
        Step::Play(Play {
            media: Media::Url("https://example.com/a.mp3".into()),
            loops: 2,
            terminators: Terminators("*".into()),
            answer: true,
        })
    );
}

#[test]
fn play_media_kinds() {
    let cases = [
        (" http://x/y.wav ", Media::Url("http://x/y.wav".into())),
        (
            "tone_stream://%(200,0,500)",
            Media::Tone("tone_stream://%(200,0,500)".into()),
        ),
        ("/media/hold.mp3", Media::Path("/media/hold.mp3".into())),
    ];
    for (text, media) in cases {
        let step = only_step(&format!("<Response><Play>{text}</Play></Response>"));
        assert_eq!(step, Step::Play(Play { media, ..play("x") }));
    }
}

#[test]
fn play_digits_sends_dtmf_before_the_media() {
    let step = only_step(r#"<Response><Play digits="ww1234#"/></Response>"#);
    assert_eq!(
        step,
        Step::SendDtmf(SendDtmf {
            digits: "ww1234#".into(),
            duration_ms: 250
        })
    );
    let steps = steps(r#"<Response><Play digits="9">http://x/a.wav</Play></Response>"#);
    assert_eq!(
        steps,
        vec![
            Step::SendDtmf(SendDtmf {
                digits: "9".into(),
                duration_ms: 250
            }),
            Step::Play(play("http://x/a.wav")),
        ]
    );
}

#[test]
fn play_without_media_or_with_bad_digits_is_refused() {
    let (_, location, message) = the_error("<Response>\n<Play>  </Play></Response>");
    assert_eq!(location, at(2, 1));
    assert!(message.starts_with("<Play> has no media"), "{message}");
    let (_, _, message) = the_error(r#"<Response><Play digits="12x"/></Response>"#);
    assert!(
        message.starts_with(r#"<Play> attribute "digits" must be"#),
        "{message}"
    );
    let err = refused(r#"<Response><Play><Say>x</Say></Play></Response>"#);
    let first = err.errors().next().unwrap();
    assert_eq!(
        (first.location.clone(), first.message.as_str()),
        (at(1, 17), "<Play> cannot contain <Say>")
    );
}

// ---------------------------------------------------------------------------------------------
// <Pause>

#[test]
fn pause_length_default_and_cap() {
    assert_eq!(
        only_step("<Response><Pause/></Response>"),
        Step::Pause(Pause { duration_ms: 1000 })
    );
    assert_eq!(
        only_step(r#"<Response><Pause length="0"/></Response>"#),
        Step::Pause(Pause { duration_ms: 0 })
    );
    let doc = doc(r#"<Response><Pause length="7200"/></Response>"#);
    assert_eq!(
        doc.flow,
        Flow::Twiml {
            steps: vec![Step::Pause(Pause {
                duration_ms: 3_600_000
            })]
        }
    );
    assert_eq!(
        doc.warnings[0].message,
        r#"<Pause> attribute "length" is "7200"; capped at 3600"#
    );
}

/// KAZOO matched `<Pause>` only with no content at all: whitespace aborted the document.
#[test]
fn kazoo_defect_fixed_pause_with_whitespace() {
    assert_eq!(
        only_step("<Response><Pause length=\"2\"> \n </Pause></Response>"),
        Step::Pause(Pause { duration_ms: 2000 })
    );
}

#[test]
fn pause_bad_length_and_content_are_refused() {
    let (_, location, message) = the_error(r#"<Response><Pause length="-1"/></Response>"#);
    assert_eq!(location, at(1, 11));
    assert_eq!(
        message,
        r#"<Pause> attribute "length" must be at least 0, not "-1""#
    );
    let (_, _, message) = the_error(r#"<Response><Pause length="1.5"/></Response>"#);
    assert!(message.contains("a whole number"), "{message}");
    let (_, _, message) = the_error("<Response><Pause>wait</Pause></Response>");
    assert_eq!(
        message,
        r#"<Pause> must be empty, but contains text "wait""#
    );
}

// ---------------------------------------------------------------------------------------------
// <Gather>

#[test]
fn gather_with_every_attribute_and_prompts() {
    let xml = r#"<Response>
  <Gather action="/menu?x=1&amp;y=2" method="get" timeout="10" finishOnKey="*" numDigits="4"
          actionOnEmptyResult="TRUE" input="dtmf">
    <Say>Enter your PIN</Say>
    <Pause length="2"/>
    <Play digits="1">http://x/beep.wav</Play>
  </Gather>
</Response>"#;
    assert_eq!(
        only_step(xml),
        Step::Gather(Gather {
            prompts: vec![
                Step::Say(say("Enter your PIN")),
                Step::Pause(Pause { duration_ms: 2000 }),
                Step::SendDtmf(SendDtmf {
                    digits: "1".into(),
                    duration_ms: 250
                }),
                Step::Play(play("http://x/beep.wav")),
            ],
            timeout_s: 10,
            finish_on_key: Some('*'),
            num_digits: Some(4),
            action: Some("/menu?x=1&y=2".into()),
            method: HttpMethod::Get,
            action_on_empty_result: true,
        })
    );
}

/// KAZOO's self-closing `<Gather/>` left the digit buffer undefined and crashed on input.
#[test]
fn kazoo_defect_fixed_gather_without_children() {
    let expected = Step::Gather(Gather {
        prompts: vec![],
        timeout_s: 5,
        finish_on_key: Some('#'),
        num_digits: None,
        action: None,
        method: HttpMethod::Post,
        action_on_empty_result: false,
    });
    assert_eq!(only_step("<Response><Gather/></Response>"), expected);
    assert_eq!(
        only_step("<Response><Gather>\n</Gather></Response>"),
        expected
    );
}

#[test]
fn gather_finish_on_key_empty_is_none_and_timeout_is_capped() {
    let doc = doc(r#"<Response><Gather finishOnKey="" timeout="9999"/></Response>"#);
    let Flow::Twiml { steps } = doc.flow else {
        panic!()
    };
    let Step::Gather(g) = &steps[0] else { panic!() };
    assert_eq!(g.finish_on_key, None);
    assert_eq!(g.timeout_s, 3600);
    assert!(doc.warnings[0].message.contains("capped at 3600"));
}

#[test]
fn gather_bad_values_are_all_reported() {
    let xml = r##"<Response>
  <Gather timeout="0" finishOnKey="#1" numDigits="0" method="PUT" actionOnEmptyResult="yes">
    <Dial>123</Dial>
  </Gather>
</Response>"##;
    let err = refused(xml);
    let messages: Vec<_> = err
        .errors()
        .map(|e| (e.location.clone(), e.message.clone()))
        .collect();
    assert_eq!(
        messages,
        vec![
            (at(2, 3), r#"<Gather> attribute "method" must be GET or POST, not "PUT""#.into()),
            (at(2, 3), r#"<Gather> attribute "timeout" must be at least 1, not "0""#.into()),
            (
                at(2, 3),
                "<Gather> attribute \"finishOnKey\" must be one key from 0-9, *, #, A-D, or \"\", not \"#1\""
                    .into()
            ),
            (at(2, 3), r#"<Gather> attribute "numDigits" must be from 1 to 128, not "0""#.into()),
            (
                at(2, 3),
                r#"<Gather> attribute "actionOnEmptyResult" must be one of "true", "false", not "yes""#
                    .into()
            ),
            (at(3, 5), "<Dial> is not allowed inside <Gather>".into()),
        ]
    );
}

#[test]
fn gather_speech_input() {
    let w = warnings(
        r#"<Response><Gather input="speech dtmf" hints="a,b" language="en-US"/></Response>"#,
    );
    let messages: Vec<_> = w.iter().map(|(_, m)| m.as_str()).collect();
    assert_eq!(
        messages,
        vec![
            "<Gather> attribute \"input\": speech is not supported by pivot and is ignored; only DTMF is collected",
            "<Gather> attribute \"hints\" is not supported by pivot; ignored",
            "<Gather> attribute \"language\" is not supported by pivot; ignored",
        ]
    );
    let (_, _, message) = the_error(r#"<Response><Gather input="speech"/></Response>"#);
    assert!(
        message.contains("speech recognition is unavailable"),
        "{message}"
    );
}

// ---------------------------------------------------------------------------------------------
// <Record>

#[test]
fn record_with_every_attribute() {
    let xml = r##"<Response><Record action="/done" method="GET" timeout="0" finishOnKey="#*"
        maxLength="120" playBeep="false" recordingUrl="https://store.example.com/rec"/></Response>"##;
    assert_eq!(
        only_step(xml),
        Step::Record(Record {
            max_length_s: 120,
            silence_timeout_s: None,
            terminators: Terminators("#*".into()),
            beep: false,
            action: Some("/done".into()),
            method: HttpMethod::Get,
            storage_url: Some("https://store.example.com/rec".into()),
            storage_method: StorageMethod::Put,
            format: AudioFormat::Mp3,
        })
    );
}

#[test]
fn record_defaults() {
    assert_eq!(
        only_step("<Response><Record/></Response>"),
        Step::Record(Record {
            max_length_s: 3600,
            silence_timeout_s: Some(5),
            terminators: Terminators::all(),
            beep: true,
            action: None,
            method: HttpMethod::Post,
            storage_url: None,
            storage_method: StorageMethod::Put,
            format: AudioFormat::Mp3,
        })
    );
    let Step::Record(r) = only_step(r#"<Response><Record finishOnKey=""/></Response>"#) else {
        panic!()
    };
    assert_eq!(r.terminators, Terminators::none());
}

#[test]
fn record_bad_values_are_refused() {
    let (_, location, message) =
        the_error("<Response>\n\n    <Record maxLength=\"3601\"/></Response>");
    assert_eq!(location, at(3, 5));
    assert_eq!(
        message,
        r#"<Record> attribute "maxLength" must be from 1 to 3600, not "3601""#
    );
    let (_, _, message) = the_error(r#"<Response><Record action="/a b"/></Response>"#);
    assert_eq!(
        message,
        r#"<Record> attribute "action" "/a b" contains whitespace or control characters"#
    );
    let (_, _, message) = the_error("<Response><Record>x</Record></Response>");
    assert!(message.starts_with("<Record> must be empty"), "{message}");
    let w = warnings(r#"<Response><Record transcribe="true" trim="trim-silence"/></Response>"#);
    assert_eq!(w.len(), 2);
    assert_eq!(
        w[0].1,
        r#"<Record> attribute "transcribe" is not supported by pivot; ignored"#
    );
}

// ---------------------------------------------------------------------------------------------
// <Dial>

#[test]
fn dial_plain_number_is_cleaned_as_kazoo_does() {
    // KAZOO's own test vector for cleanup_dial_me.
    assert_eq!(
        only_step("<Response><Dial>+1 (415) 886-7900</Dial></Response>"),
        Step::Dial(dial(vec![number("+14158867900")]))
    );
}

#[test]
fn dial_with_every_attribute() {
    let xml = r#"<Response><Dial action="https://app/after" method="GET" timeout="20"
        callerId="+15551230000" record="record-from-answer" hangupOnStar="true" timeLimit="600"
        continueOnFail="false" strategy="single" collect_dtmf="true">5551234</Dial></Response>"#;
    assert_eq!(
        only_step(xml),
        Step::Dial(Dial {
            targets: vec![number("5551234")],
            timeout_s: 20,
            caller_id: Some("+15551230000".into()),
            time_limit_s: 600,
            action: Some("https://app/after".into()),
            method: HttpMethod::Get,
            record: true,
            hangup_on: Some('*'),
            continue_on_fail: false,
            strategy: DialStrategy::Single,
            collect_dtmf: true,
        })
    );
}

#[test]
fn dial_hangup_on_wins_over_hangup_on_star_and_record_modes() {
    let Step::Dial(d) =
        only_step(r##"<Response><Dial hangupOnStar="true" hangupOn="#">1</Dial></Response>"##)
    else {
        panic!()
    };
    assert_eq!(d.hangup_on, Some('#'));
    for (mode, expected) in [
        ("true", true),
        ("false", false),
        ("record-from-ringing-dual", true),
        ("do-not-record", false),
    ] {
        let xml = format!(r#"<Response><Dial record="{mode}">1</Dial></Response>"#);
        let Step::Dial(d) = only_step(&xml) else {
            panic!()
        };
        assert_eq!(d.record, expected, "{mode}");
    }
}

#[test]
fn dial_nouns() {
    let xml = r#"<Response>
  <Dial>
    <Number sendDigits="ww1234">+1 (415) 886-7900</Number>
    <Sip username="agent" password="s3cret">sip:agent@pbx.example.com;transport=tls</Sip>
    <Device>dev-1</Device>
    <User> user-7 </User>
  </Dial>
</Response>"#;
    assert_eq!(
        only_step(xml),
        Step::Dial(dial(vec![
            DialTarget::Number {
                number: Some("+14158867900".into()),
                send_digits: Some("ww1234".into()),
            },
            DialTarget::Sip {
                uri: "sip:agent@pbx.example.com;transport=tls".into(),
                username: Some("agent".into()),
                password: Some("s3cret".into()),
            },
            DialTarget::Device { id: "dev-1".into() },
            DialTarget::User {
                id: "user-7".into()
            },
        ]))
    );
}

#[test]
fn dial_conference_with_every_attribute() {
    let xml = r#"<Response><Dial><Conference startConferenceOnEnter="false" endConferenceOnExit="true"
        beep="onExit" muted="true" maxParticipants="10" waitUrl="http://x/hold.mp3"
        statusCallback="http://x/cb" statusCallbackEvent="start end"> Room 42 </Conference></Dial></Response>"#;
    let doc = doc(xml);
    let Flow::Twiml { steps } = doc.flow else {
        panic!()
    };
    assert_eq!(
        steps,
        vec![Step::Dial(dial(vec![DialTarget::Conference(Conference {
            name: "Room 42".into(),
            start_on_enter: false,
            end_on_exit: true,
            beep: true,
            muted: true,
            max_participants: 10,
            wait_media: Some(Media::Url("http://x/hold.mp3".into())),
        })]))]
    );
    let messages: Vec<_> = doc.warnings.iter().map(|w| w.message.as_str()).collect();
    assert_eq!(
        messages,
        vec![
            r#"<Conference> attribute "statusCallback" is not supported by pivot; ignored"#,
            r#"<Conference> attribute "statusCallbackEvent" is not supported by pivot; ignored"#,
        ]
    );
    assert_eq!(doc.warnings[0].location, at(1, 17));
}

#[test]
fn dial_conference_defaults() {
    let step =
        only_step(r#"<Response><Dial><Conference waitUrl="">lobby</Conference></Dial></Response>"#);
    assert_eq!(
        step,
        Step::Dial(dial(vec![DialTarget::Conference(Conference {
            name: "lobby".into(),
            start_on_enter: true,
            end_on_exit: false,
            beep: true,
            muted: false,
            max_participants: 250,
            wait_media: None,
        })]))
    );
}

#[test]
fn dial_errors_name_noun_and_position() {
    let cases: &[(&str, (u32, u32), &str)] = &[
        (
            "<Response><Dial/></Response>",
            (1, 11),
            "<Dial> has nothing to dial: give a number as its text, or nouns",
        ),
        (
            "<Response><Dial>call me</Dial></Response>",
            (1, 11),
            r#"<Dial> number "call me" has no digits"#,
        ),
        (
            "<Response><Dial>123<Number>456</Number></Dial></Response>",
            (1, 11),
            r#"<Dial> mixes text "123" with nouns; put the number in a <Number>"#,
        ),
        (
            "<Response><Dial><Client>bob</Client></Dial></Response>",
            (1, 17),
            "<Client> is not supported by pivot inside <Dial>",
        ),
        (
            "<Response><Dial><Queue>q</Queue></Dial></Response>",
            (1, 17),
            "<Queue> is not supported by pivot inside <Dial>",
        ),
        (
            "<Response><Dial><Say>x</Say></Dial></Response>",
            (1, 17),
            "<Say> is not allowed inside <Dial>",
        ),
        (
            "<Response><Dial><Sip>tel:123</Sip></Dial></Response>",
            (1, 17),
            r#"<Sip> needs a sip: or sips: URI, not "tel:123""#,
        ),
        (
            "<Response><Dial><Device> </Device></Dial></Response>",
            (1, 17),
            "<Device> needs an id as its text",
        ),
        (
            "<Response><Dial><Number>1</Number><Conference>r</Conference></Dial></Response>",
            (1, 35),
            "<Conference> must be the only noun in its <Dial>",
        ),
        (
            "<Response><Dial><Conference maxParticipants=\"1\">r</Conference></Dial></Response>",
            (1, 17),
            r#"<Conference> attribute "maxParticipants" must be from 2 to 250, not "1""#,
        ),
        (
            "<Response><Dial><Conference></Conference></Dial></Response>",
            (1, 17),
            "<Conference> needs a room name of 1 to 128 characters as its text",
        ),
        (
            "<Response><Dial><Number sendDigits=\"12#x\">1</Number></Dial></Response>",
            (1, 17),
            r#"<Number> attribute "sendDigits" must be 1 to 128 of 0-9, *, #, A-D, w, W, not "12#x""#,
        ),
        (
            "<Response><Dial strategy=\"round-robin\">1</Dial></Response>",
            (1, 11),
            r#"<Dial> attribute "strategy" must be one of "simultaneous", "single", not "round-robin""#,
        ),
        (
            "<Response><Dial timeLimit=\"0\">1</Dial></Response>",
            (1, 11),
            r#"<Dial> attribute "timeLimit" must be from 1 to 86400, not "0""#,
        ),
        (
            "<Response><Dial record=\"always\">1</Dial></Response>",
            (1, 11),
            r#"<Dial> attribute "record" must be one of "true", "false", "record-from-answer", "record-from-ringing", "record-from-answer-dual", "record-from-ringing-dual", "do-not-record", not "always""#,
        ),
    ];
    for (xml, (line, column), expected) in cases {
        let (kind, location, message) = the_error(xml);
        assert_eq!(kind, ErrorKind::Invalid, "{xml}");
        assert_eq!(location, at(*line, *column), "{xml}");
        assert_eq!(message, *expected, "{xml}");
    }
}

#[test]
fn dial_twilio_extras_are_ignored_with_warnings() {
    let xml = r#"<Response><Dial answerOnBridge="true" ringTone="us">
        <Number url="http://x/whisper" method="GET" statusCallback="http://x/s">1</Number>
    </Dial></Response>"#;
    let w = warnings(xml);
    let messages: Vec<_> = w.iter().map(|(_, m)| m.as_str()).collect();
    assert_eq!(
        messages,
        vec![
            r#"<Dial> attribute "answerOnBridge" is not supported by pivot; ignored"#,
            r#"<Dial> attribute "ringTone" is not supported by pivot; ignored"#,
            r#"<Number> attribute "url" is not supported by pivot; ignored"#,
            r#"<Number> attribute "method" is not supported by pivot; ignored"#,
            r#"<Number> attribute "statusCallback" is not supported by pivot; ignored"#,
        ]
    );
    assert_eq!(w[2].0, at(2, 9));
}

// ---------------------------------------------------------------------------------------------
// <Redirect>, <Hangup>, <Reject>, <Set>

#[test]
fn redirect_with_variables() {
    let xml = r#"<Response>
  <Redirect method="GET">
    https://app.example.com/next?a=1&amp;b=2
    <Variable key="lang" value="en"/>
    <Variable key=" step " value=""/>
  </Redirect>
</Response>"#;
    assert_eq!(
        only_step(xml),
        Step::Redirect(Redirect {
            url: "https://app.example.com/next?a=1&b=2".into(),
            method: HttpMethod::Get,
            variables: vec![variable("lang", "en"), variable("step", "")],
        })
    );
    assert_eq!(
        only_step("<Response><Redirect>/start</Redirect></Response>"),
        Step::Redirect(Redirect {
            url: "/start".into(),
            method: HttpMethod::Post,
            variables: vec![],
        })
    );
}

#[test]
fn redirect_errors() {
    let (_, location, message) = the_error("<Response>\n <Redirect/></Response>");
    assert_eq!(location, at(2, 2));
    assert_eq!(message, "<Redirect> URL is missing or empty");
    let (_, _, message) = the_error("<Response><Redirect>/a b</Redirect></Response>");
    assert_eq!(
        message,
        r#"<Redirect> URL "/a b" contains whitespace or control characters"#
    );
    let (_, location, message) =
        the_error("<Response><Redirect>/a<Say>x</Say></Redirect></Response>");
    assert_eq!(
        (location, message.as_str()),
        (at(1, 23), "<Say> is not allowed inside <Redirect>")
    );
    let err = refused(
        r#"<Response><Redirect>/a<Variable value="1"/><Variable key="k"/></Redirect></Response>"#,
    );
    let messages: Vec<_> = err.errors().map(|e| e.message.as_str()).collect();
    assert_eq!(
        messages,
        vec![
            "<Variable> needs a non-empty key attribute",
            "<Variable> needs a value attribute (it may be empty)",
        ]
    );
}

#[test]
fn hangup() {
    assert_eq!(
        only_step("<Response><Hangup/></Response>"),
        Step::Hangup(Hangup::default())
    );
    let (_, _, message) = the_error("<Response><Hangup>now</Hangup></Response>");
    assert_eq!(
        message,
        r#"<Hangup> must be empty, but contains text "now""#
    );
}

/// KAZOO matched `<Hangup>` only without attributes: anything else aborted the document.
#[test]
fn kazoo_defect_fixed_hangup_with_attributes_warns() {
    let doc = doc(r#"<Response><Hangup foo="1"/></Response>"#);
    assert_eq!(
        doc.flow,
        Flow::Twiml {
            steps: vec![Step::Hangup(Hangup::default())]
        }
    );
    assert_eq!(doc.warnings.len(), 1);
    assert_eq!(doc.warnings[0].location, at(1, 11));
    assert_eq!(
        doc.warnings[0].message,
        r#"<Hangup> attribute "foo" is not known; ignored"#
    );
}

#[test]
fn reject() {
    assert_eq!(
        only_step("<Response><Reject/></Response>"),
        Step::Reject(Reject {
            reason: RejectReason::Rejected,
            prompt: None
        })
    );
    assert_eq!(
        only_step(r#"<Response><Reject reason="busy" prompt="http://x/closed.mp3"/></Response>"#),
        Step::Reject(Reject {
            reason: RejectReason::Busy,
            prompt: Some(Media::Url("http://x/closed.mp3".into()))
        })
    );
    let (_, location, message) = the_error(r#"<Response><Reject reason="nope"/></Response>"#);
    assert_eq!(location, at(1, 11));
    assert_eq!(
        message,
        r#"<Reject> attribute "reason" must be one of "rejected", "busy", not "nope""#
    );
}

/// KAZOO's `<Set>` returned the wrong shape and crashed the worker; here it works.
#[test]
fn kazoo_defect_fixed_set_variables() {
    let xml = r#"<Response><Set>
        <Variable key="customer" value="42"/>
        <Variable key="note" value="a &lt;b&gt; &quot;c&quot;"/>
    </Set></Response>"#;
    assert_eq!(
        only_step(xml),
        Step::SetVariables(SetVariables {
            scope: VariableScope::User,
            variables: vec![variable("customer", "42"), variable("note", "a <b> \"c\"")],
            export: false,
        })
    );
}

#[test]
fn set_errors_and_stray_variables() {
    let (_, _, message) = the_error("<Response><Set><Say>x</Say></Set></Response>");
    assert_eq!(message, "<Say> is not allowed inside <Set>");
    let (_, location, message) =
        the_error("<Response>\n  <Variable key=\"a\" value=\"b\"/>\n</Response>");
    assert_eq!(location, at(2, 3));
    assert_eq!(
        message,
        "<Variable> is only allowed inside <Redirect> or <Set>"
    );
    let w = warnings("<Response><Set/></Response>");
    assert_eq!(
        w,
        vec![(at(1, 11), "<Set> has no <Variable>; skipped".into())]
    );
}

// ---------------------------------------------------------------------------------------------
// Unknown and unsupported verbs

#[test]
fn unsupported_verbs_are_named_with_line_and_column() {
    let xml = "<?xml version=\"1.0\"?>\n<Response>\n    <Connect><Stream url=\"wss://x\"/></Connect>\n</Response>";
    let err = refused(xml);
    assert_eq!(err.kind, ErrorKind::Invalid);
    assert_eq!(err.kind.cause(), "invalid_flow");
    assert_eq!(
        err.to_string(),
        "line 3, column 5: <Connect> is not supported by pivot"
    );
    for verb in [
        "Pay", "Enqueue", "Leave", "Message", "Sms", "Start", "Stop", "Refer", "Echo", "Queue",
    ] {
        let (_, location, message) = the_error(&format!("<Response><{verb}/></Response>"));
        assert_eq!(location, at(1, 11));
        assert_eq!(message, format!("<{verb}> is not supported by pivot"));
    }
}

#[test]
fn unknown_verbs_and_case_mistakes() {
    let (_, _, message) = the_error("<Response><Foo/></Response>");
    assert_eq!(message, "unknown verb <Foo>");
    let (_, _, message) = the_error("<Response><say>x</say></Response>");
    assert_eq!(
        message,
        "unknown verb <say> (TwiML names are case-sensitive: did you mean <Say>?)"
    );
    let (_, _, message) = the_error("<Response><Number>1</Number></Response>");
    assert_eq!(message, "<Number> is only allowed inside <Dial>");
}

#[test]
fn every_problem_is_collected() {
    let xml = "<Response>\n<Connect/>\n<Say loop=\"x\">a</Say>\n<Pay/>\n<Hangup bogus=\"1\"/>\n</Response>";
    let err = refused(xml);
    let found: Vec<_> = err
        .diagnostics
        .iter()
        .map(|d| (d.severity, d.location.clone()))
        .collect();
    assert_eq!(
        found,
        vec![
            (Severity::Error, at(2, 1)),
            (Severity::Error, at(3, 1)),
            (Severity::Error, at(4, 1)),
            (Severity::Warning, at(5, 1)),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Document structure

#[test]
fn real_world_document() {
    let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<!-- IVR entry point -->
<Response>
  <Say voice="alice" language="en-US">Welcome to <emphasis>Example Corp</emphasis>.</Say>
  <Gather action="/ivr/menu" numDigits="1" timeout="6">
    <!-- prompts -->
    <Say>For sales, press 1.<break time="500ms"/>For support, press 2.</Say>
    <Pause length="1"/>
    <Play>https://media.example.com/prompts/repeat.wav</Play>
  </Gather>
  <Say><![CDATA[We didn't get that & we'll connect you.]]></Say>
  <Dial action="/ivr/after-dial" timeout="20" callerId="+15551230000">
    <Number>+1 (415) 886-7900</Number>
    <Sip>sip:agent@pbx.example.com</Sip>
  </Dial>
  <Record action="/ivr/voicemail" maxLength="120" playBeep="true"/>
  <Redirect>/ivr/start<Variable key="loop" value="2"/></Redirect>
</Response>
<!-- trailing comment -->
"#;
    let doc = doc(xml);
    assert_eq!(doc.warnings, vec![]);
    let Flow::Twiml { steps } = doc.flow else {
        panic!()
    };
    let kinds: Vec<_> = steps.iter().map(Step::kind).collect();
    assert_eq!(
        kinds,
        ["say", "gather", "say", "dial", "record", "redirect"]
    );
    assert_eq!(
        steps[0],
        Step::Say(Say {
            voice: Some("alice".into()),
            language: Some("en-US".into()),
            ..say("Welcome to Example Corp.")
        })
    );
    let Step::Gather(g) = &steps[1] else { panic!() };
    assert_eq!(
        g.prompts[0],
        Step::Say(say("For sales, press 1. For support, press 2."))
    );
    assert_eq!(g.prompts.len(), 3);
    assert_eq!(
        steps[2],
        Step::Say(say("We didn't get that & we'll connect you."))
    );
    let Step::Dial(d) = &steps[3] else { panic!() };
    assert_eq!(d.targets.len(), 2);
    assert_eq!(d.targets[0], number("+14158867900"));
}

#[test]
fn bench_fixtures_parse_without_warnings() {
    for body in [
        &include_bytes!("../benches/fixtures/twiml-1k.xml")[..],
        include_bytes!("../benches/fixtures/twiml-10k.xml"),
    ] {
        let doc = parse_twiml(body, &Limits::default()).unwrap();
        assert_eq!(doc.warnings, vec![]);
    }
}

#[test]
fn empty_response_and_byte_order_mark() {
    assert_eq!(doc("<Response/>").flow, Flow::Twiml { steps: vec![] });
    let with_bom = b"\xEF\xBB\xBF<?xml version=\"1.0\"?><Response><Hangup/></Response>";
    let doc = parse_twiml(with_bom, &Limits::default()).unwrap();
    assert_eq!(
        doc.flow,
        Flow::Twiml {
            steps: vec![Step::Hangup(Hangup::default())]
        }
    );
}

#[test]
fn text_and_attributes_on_response_are_warnings() {
    let w = warnings("<Response xmlns=\"urn:x\" foo=\"1\">\n  hello <Hangup/></Response>");
    assert_eq!(
        w,
        vec![
            (
                at(1, 1),
                r#"<Response> attribute "foo" is not known; ignored"#.into()
            ),
            (
                at(1, 33),
                r#"text "hello" directly inside <Response> is ignored"#.into()
            ),
        ]
    );
}

#[test]
fn wrong_root_is_refused() {
    let (kind, location, message) =
        the_error("<?xml version=\"1.0\"?>\n<response><Say>x</Say></response>");
    assert_eq!(kind, ErrorKind::Invalid);
    assert_eq!(location, at(2, 1));
    assert_eq!(
        message,
        "the root element is <response>; a TwiML document's root must be <Response>"
    );
    let (_, _, message) = the_error("<html><body>Error</body></html>");
    assert!(message.contains("<html>"), "{message}");
}

#[test]
fn doctype_is_refused() {
    let xml = "<?xml version=\"1.0\"?>\n<!DOCTYPE r [<!ENTITY x \"boom\">]>\n<Response><Say>&x;</Say></Response>";
    let (kind, location, message) = the_error(xml);
    assert_eq!(kind, ErrorKind::Invalid);
    assert_eq!(location, at(2, 1));
    assert_eq!(message, "<!DOCTYPE> is not allowed in TwiML");
}

#[test]
fn encoding_must_be_utf8() {
    let (kind, location, message) =
        the_error("<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><Response/>");
    assert_eq!(kind, ErrorKind::Invalid);
    assert_eq!(location, at(1, 1));
    assert!(
        message.contains("\"ISO-8859-1\" is not supported"),
        "{message}"
    );
    assert!(parse("<?xml version=\"1.0\" encoding=\"utf-8\"?><Response/>").is_ok());
}

#[test]
fn malformed_xml_is_a_syntax_error_with_position() {
    let cases: &[(&[u8], (u32, u32))] = &[
        (b"<Response>\n  <Say>hi</Play>\n</Response>", (2, 10)),
        (b"<Response>\n<Say>", (2, 6)),
        (b"<Response><Say>&bogus;</Say></Response>", (1, 16)),
        (
            b"<Response><Say a=\"1\" a=\"2\">x</Say></Response>",
            (1, 11),
        ),
        (
            b"<Response>\n  <Say>caf\xC3\xA9 \xFF</Say></Response>",
            (2, 13),
        ),
        (b"<Response/>\n<Response/>", (2, 1)),
        (b"<Response/>trailing", (1, 12)),
        (b"junk<Response/>", (1, 1)),
        (b"<!-- only a comment -->", (1, 24)),
        (b"<Response><Say x=1>y</Say></Response>", (1, 11)),
    ];
    for (body, (line, column)) in cases {
        let err = parse_twiml(body, &Limits::default()).unwrap_err();
        let shown = String::from_utf8_lossy(body);
        assert_eq!(err.kind, ErrorKind::Syntax, "{shown}: {err}");
        assert_eq!(err.kind.cause(), "parse");
        let first = err.errors().next().unwrap();
        assert_eq!(first.location, at(*line, *column), "{shown}: {err}");
    }
}

#[test]
fn too_many_elements_is_too_large() {
    let ok = format!("<Response>{}</Response>", "<Hangup/>".repeat(1000));
    assert!(parse(&ok).is_ok());
    let body = format!("<Response>{}</Response>", "<Pause/>".repeat(1001));
    let (kind, location, message) = the_error(&body);
    assert_eq!(kind, ErrorKind::TooLarge);
    assert_eq!(kind.cause(), "too_large");
    assert_eq!(location, at(1, 11 + 8 * 1000));
    assert!(message.contains("more than 1000 elements"), "{message}");
    // Nested elements count too, and the limit is configurable.
    let limits = Limits {
        max_verbs: 2,
        ..Limits::default()
    };
    let nested = b"<Response><Gather><Say>a</Say><Say>b</Say></Gather></Response>";
    assert_eq!(
        parse_twiml(nested, &limits).unwrap_err().kind,
        ErrorKind::TooLarge
    );
}

#[test]
fn too_large_takes_precedence_over_semantic_errors() {
    let body = format!("<Response><Connect/>{}</Response>", "<Bogus/>".repeat(1001));
    assert_eq!(refused(&body).kind, ErrorKind::TooLarge);
}

#[test]
fn deep_nesting_is_refused_without_recursion() {
    let depth = 100_000;
    let body = format!(
        "<Response><Say>{}x{}</Say></Response>",
        "<p>".repeat(depth),
        "</p>".repeat(depth)
    );
    let limits = Limits {
        max_verbs: usize::MAX,
        max_body_bytes: usize::MAX,
        ..Limits::default()
    };
    let err = parse_twiml(body.as_bytes(), &limits).unwrap_err();
    assert_eq!(err.kind, ErrorKind::TooLarge);
    assert!(err.to_string().contains("nests more than 16"), "{err}");
    // Within the bound, SSML nesting is fine.
    let ok = format!(
        "<Response><Say>{}x{}</Say></Response>",
        "<s>".repeat(10),
        "</s>".repeat(10)
    );
    assert!(parse(&ok).is_ok());
}

#[test]
fn attributes_per_element_are_bounded() {
    let attrs: String = (0..65).map(|i| format!(" a{i}=\"1\"")).collect();
    let (kind, location, message) = the_error(&format!("<Response><Hangup{attrs}/></Response>"));
    assert_eq!(kind, ErrorKind::TooLarge);
    assert_eq!(location, at(1, 11));
    assert_eq!(message, "<Hangup> has more than 64 attributes");
}

#[test]
fn hostile_values_are_quoted_briefly() {
    let long = "é".repeat(10_000);
    let (_, _, message) = the_error(&format!(
        r#"<Response><Say loop="{long}">x</Say></Response>"#
    ));
    assert!(message.chars().count() < 200, "{message}");
    let (_, _, message) = the_error(&format!("<Response><{long}/></Response>"));
    assert!(message.chars().count() < 200, "{message}");
}

#[test]
fn arbitrary_prefixes_never_panic() {
    let xml = r#"<?xml version="1.0"?><Response><Gather action="/a" numDigits="1"><Say voice="alice">Hi<break/>there</Say></Gather><Dial><Number sendDigits="w1">+1 415</Number><Conference>r</Conference></Dial><Redirect>/x<Variable key="a" value="b"/></Redirect></Response>"#;
    for end in 0..=xml.len() {
        let _ = parse_twiml(&xml.as_bytes()[..end], &Limits::default());
    }
}
