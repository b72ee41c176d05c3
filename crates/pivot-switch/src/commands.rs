//! Typed call commands and their outcomes: what the engine asks of a switch, and what came of
//! it. The engine sees only these; which dialplan application runs a command and how its
//! outcome is read from FreeSWITCH's events is this module's business (freeswitch-esl.md §4).

use serde::{Deserialize, Serialize};

use crate::esl::EslEvent;

/// Identifies one command to one call: `<call-id>:<epoch>:<seq>`. Sent as the `Event-UUID`,
/// it comes back as `Application-UUID` on the command's events, so a completion is matched to
/// its command, and to the owner epoch that sent it (fencing).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CommandId(pub String);

impl CommandId {
    pub fn new(call_id: &str, epoch: u64, seq: u64) -> CommandId {
        CommandId(format!("{call_id}:{epoch}:{seq}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The owner epoch encoded in the id, if it is one of ours.
    pub fn epoch(&self) -> Option<u64> {
        let mut parts = self.0.rsplitn(3, ':');
        let _seq = parts.next()?;
        parts.next()?.parse().ok()
    }
}

impl std::fmt::Display for CommandId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Something a call should do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    Answer,
    /// Play a file, `http(s)` URL (through mod_http_cache) or `tone_stream://`.
    Play {
        media: String,
        loops: u32,
        /// DTMF keys that stop playback; empty for none.
        terminators: String,
    },
    /// Text to speech.
    Speak {
        engine: String,
        voice: String,
        text: String,
        terminators: String,
    },
    /// Record the caller to a file on the switch.
    Record {
        path: String,
        time_limit_s: u32,
        /// Seconds of silence that end the recording; `None` never stops on silence.
        silence_s: Option<u32>,
        terminators: String,
    },
    /// Prompt and collect digits (`play_and_get_digits`); the result is read from `variable`.
    Collect {
        prompt: String,
        min_digits: u32,
        max_digits: u32,
        tries: u32,
        timeout_ms: u64,
        digit_timeout_ms: u64,
        terminators: String,
        /// A fresh variable name per collection, so a value from an earlier collection can
        /// never be read as this one's result.
        variable: String,
    },
    /// Bridge the call to dial strings (`,` rings together, `|` in sequence).
    Dial {
        targets: Vec<String>,
        sequential: bool,
        timeout_s: u32,
        caller_id_number: Option<String>,
        caller_id_name: Option<String>,
        time_limit_s: Option<u32>,
        /// Keep the caller up when the bridge fails (FreeSWITCH hangs it up otherwise).
        continue_on_fail: bool,
    },
    Hangup {
        cause: String,
    },
    /// A SIP response on an unanswered call (`486`, `503 Service Unavailable`).
    Respond {
        code: u16,
        reason: Option<String>,
    },
    SendDtmf {
        digits: String,
        duration_ms: u32,
    },
    Sleep {
        ms: u64,
    },
    SetVars {
        vars: Vec<(String, String)>,
        /// Also set them on legs bridged later.
        export: bool,
    },
    Transfer {
        extension: String,
        dialplan: Option<String>,
        context: Option<String>,
    },
    Conference {
        name: String,
    },
}

/// Every application name [`Command::app`] returns: the closed label set of per-app metrics.
pub const APPS: &[&str] = &[
    "answer",
    "playback",
    "speak",
    "record",
    "play_and_get_digits",
    "bridge",
    "hangup",
    "respond",
    "send_dtmf",
    "sleep",
    "export",
    "multiset",
    "transfer",
    "conference",
];

impl Command {
    /// The dialplan application and argument that carry out this command.
    pub fn app(&self) -> (&'static str, String) {
        match self {
            Command::Answer => ("answer", String::new()),
            Command::Play { media, .. } => ("playback", media.clone()),
            Command::Speak {
                engine,
                voice,
                text,
                ..
            } => ("speak", format!("{engine}|{voice}|{text}")),
            Command::Record {
                path,
                time_limit_s,
                silence_s,
                ..
            } => match silence_s {
                // Threshold 200 as KAZOO records; hits are seconds of silence.
                Some(hits) => ("record", format!("{path} {time_limit_s} 200 {hits}")),
                None => ("record", format!("{path} {time_limit_s}")),
            },
            Command::Collect {
                prompt,
                min_digits,
                max_digits,
                tries,
                timeout_ms,
                digit_timeout_ms,
                terminators,
                variable,
            } => {
                // An empty terminator argument means `#` to FreeSWITCH; `none` disables it.
                let terms = if terminators.is_empty() {
                    "none"
                } else {
                    terminators
                };
                (
                    "play_and_get_digits",
                    format!(
                        "{min_digits} {max_digits} {tries} {timeout_ms} {terms} {prompt} silence_stream://250 {variable} \\d+ {digit_timeout_ms}"
                    ),
                )
            }
            Command::Dial {
                targets,
                sequential,
                timeout_s,
                caller_id_number,
                caller_id_name,
                time_limit_s,
                continue_on_fail,
            } => {
                let mut vars = vec![
                    format!("call_timeout={timeout_s}"),
                    format!("continue_on_fail={continue_on_fail}"),
                    "hangup_after_bridge=false".to_owned(),
                ];
                if let Some(n) = caller_id_number {
                    vars.push(format!("origination_caller_id_number={n}"));
                }
                if let Some(n) = caller_id_name {
                    vars.push(format!("origination_caller_id_name='{n}'"));
                }
                if let Some(limit) = time_limit_s {
                    vars.push(format!(
                        "execute_on_answer='sched_hangup +{limit} ALLOTTED_TIMEOUT'"
                    ));
                }
                let separator = if *sequential { "|" } else { "," };
                (
                    "bridge",
                    format!("{{{}}}{}", vars.join(","), targets.join(separator)),
                )
            }
            Command::Hangup { cause } => ("hangup", cause.clone()),
            Command::Respond { code, reason } => match reason {
                Some(r) => ("respond", format!("{code} {r}")),
                None => ("respond", code.to_string()),
            },
            Command::SendDtmf {
                digits,
                duration_ms,
            } => ("send_dtmf", format!("{digits}@{duration_ms}")),
            Command::Sleep { ms } => ("sleep", ms.to_string()),
            Command::SetVars { vars, export } => {
                let app = if *export { "export" } else { "multiset" };
                let arg = vars
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ");
                (app, arg)
            }
            Command::Transfer {
                extension,
                dialplan,
                context,
            } => {
                let mut arg = extension.clone();
                for part in [dialplan, context].into_iter().flatten() {
                    arg.push(' ');
                    arg.push_str(part);
                }
                ("transfer", arg)
            }
            Command::Conference { name } => ("conference", name.clone()),
        }
    }

    /// Variables that must be set on the channel before the app runs (as `playback_terminators`
    /// for prompt interruption).
    pub fn preset_vars(&self) -> Vec<(&'static str, String)> {
        let terminators = |t: &str| {
            if t.is_empty() {
                "none".to_owned()
            } else {
                t.to_owned()
            }
        };
        match self {
            Command::Play { terminators: t, .. }
            | Command::Speak { terminators: t, .. }
            | Command::Record { terminators: t, .. } => {
                vec![("playback_terminators", terminators(t))]
            }
            _ => Vec::new(),
        }
    }

    /// How many times the app runs (`loops` header of `sendmsg`).
    pub fn loops(&self) -> u32 {
        match self {
            Command::Play { loops, .. } => *loops,
            _ => 1,
        }
    }
}

/// How `read`-style collection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadResult {
    Success,
    Timeout,
    Failure,
}

/// What came of a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Ran to its end.
    Done,
    /// Prompt stopped early: by a terminator key, or by `uuid_break`.
    Interrupted { key: Option<char> },
    /// Digits collected (possibly none).
    Digits {
        digits: String,
        terminator: Option<char>,
        result: ReadResult,
    },
    Recorded {
        duration_ms: u64,
        terminator: Option<char>,
        /// Ended by silence rather than a key or the time limit.
        silence: bool,
    },
    /// A bridge that was answered and has ended.
    Bridged {
        /// Cause with which the far end hung up (`NORMAL_CLEARING`).
        hangup_cause: Option<String>,
    },
    /// A bridge that never connected: `USER_BUSY`, `NO_ANSWER`, `CALL_REJECTED`...
    DialFailed { cause: String },
    /// The app could not do its work (`FILE NOT FOUND`).
    Failed { reason: String },
    /// The call hung up before or while the command ran.
    HungUp { cause: String },
}

impl Outcome {
    /// Reads a command's outcome from its `CHANNEL_EXECUTE_COMPLETE` event, with the last
    /// `PLAYBACK_STOP` seen on the call since the command started (to tell done from break)
    /// and the last key pressed since it started.
    ///
    /// Which key stopped a prompt or a recording comes from the DTMF seen during the command,
    /// not from `playback_terminator_used`: FreeSWITCH never clears that variable (capture 13
    /// shows it on every later event), so it names a key from an earlier prompt just as well.
    pub fn from_completion(
        command: &Command,
        complete: &EslEvent,
        playback_stop: Option<&EslEvent>,
        key_pressed: Option<char>,
    ) -> Outcome {
        let response = complete.get("Application-Response").unwrap_or("_none_");
        let hung_up = complete.get("Answer-State") == Some("hangup")
            || complete.get("Channel-State") == Some("CS_HANGUP")
            || complete.get("Hangup-Cause").is_some();
        let hangup = || Outcome::HungUp {
            cause: complete
                .get("Hangup-Cause")
                .or_else(|| complete.variable("hangup_cause"))
                .unwrap_or("NORMAL_CLEARING")
                .to_owned(),
        };
        let first_char = |s: Option<&str>| s.and_then(|s| s.chars().next());
        match command {
            Command::Play { .. } | Command::Speak { .. } => {
                if response == "FILE NOT FOUND" {
                    return Outcome::Failed {
                        reason: response.to_owned(),
                    };
                }
                if response == "PLAYBACK ERROR" || hung_up {
                    return hangup();
                }
                let broke = playback_stop.and_then(|e| e.get("Playback-Status")) == Some("break");
                let key = terminator(command, key_pressed);
                if broke || key.is_some() {
                    Outcome::Interrupted { key }
                } else {
                    Outcome::Done
                }
            }
            Command::Collect { variable, .. } => {
                if hung_up {
                    return hangup();
                }
                let digits = complete.variable(variable).unwrap_or("").to_owned();
                let result = match complete.variable("read_result") {
                    Some("success") if !digits.is_empty() => ReadResult::Success,
                    Some("timeout") => ReadResult::Timeout,
                    _ if digits.is_empty() => ReadResult::Timeout,
                    _ => ReadResult::Failure,
                };
                Outcome::Digits {
                    digits,
                    terminator: first_char(complete.variable("read_terminator_used")),
                    result,
                }
            }
            Command::Record { .. } => Outcome::Recorded {
                duration_ms: complete
                    .variable("record_ms")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
                terminator: terminator(command, key_pressed),
                silence: complete.variable("silence_hits_exhausted") == Some("true"),
            },
            Command::Dial { .. } => {
                let disposition = complete.variable("originate_disposition");
                match disposition {
                    Some("call accepted") | Some("SUCCESS") => Outcome::Bridged {
                        hangup_cause: complete
                            .variable("bridge_hangup_cause")
                            .or_else(|| complete.variable("last_bridge_hangup_cause"))
                            .map(str::to_owned),
                    },
                    _ if hung_up => hangup(),
                    Some(cause) => Outcome::DialFailed {
                        cause: cause.to_owned(),
                    },
                    None => Outcome::DialFailed {
                        cause: complete
                            .variable("originate_failed_cause")
                            .unwrap_or("NORMAL_TEMPORARY_FAILURE")
                            .to_owned(),
                    },
                }
            }
            _ if hung_up
                && !matches!(command, Command::Hangup { .. } | Command::Respond { .. }) =>
            {
                hangup()
            }
            _ => Outcome::Done,
        }
    }
}

/// The key pressed during a prompt or recording, if it is one of the command's terminators.
fn terminator(command: &Command, key_pressed: Option<char>) -> Option<char> {
    let terminators = match command {
        Command::Play { terminators, .. }
        | Command::Speak { terminators, .. }
        | Command::Record { terminators, .. } => terminators.as_str(),
        _ => "",
    };
    key_pressed.filter(|key| terminators.contains(*key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_app_is_listed() {
        let s = String::new;
        let commands = [
            Command::Answer,
            Command::Play {
                media: s(),
                loops: 1,
                terminators: s(),
            },
            Command::Speak {
                engine: s(),
                voice: s(),
                text: s(),
                terminators: s(),
            },
            Command::Record {
                path: s(),
                time_limit_s: 1,
                silence_s: None,
                terminators: s(),
            },
            Command::Collect {
                prompt: s(),
                min_digits: 1,
                max_digits: 1,
                tries: 1,
                timeout_ms: 1,
                digit_timeout_ms: 1,
                terminators: s(),
                variable: s(),
            },
            Command::Dial {
                targets: vec![],
                sequential: false,
                timeout_s: 1,
                caller_id_number: None,
                caller_id_name: None,
                time_limit_s: None,
                continue_on_fail: false,
            },
            Command::Hangup { cause: s() },
            Command::Respond {
                code: 486,
                reason: None,
            },
            Command::SendDtmf {
                digits: s(),
                duration_ms: 1,
            },
            Command::Sleep { ms: 1 },
            Command::SetVars {
                vars: vec![],
                export: true,
            },
            Command::SetVars {
                vars: vec![],
                export: false,
            },
            Command::Transfer {
                extension: s(),
                dialplan: None,
                context: None,
            },
            Command::Conference { name: s() },
        ];
        let mut seen: Vec<&str> = commands.iter().map(|c| c.app().0).collect();
        seen.sort_unstable();
        seen.dedup();
        let mut listed = APPS.to_vec();
        listed.sort_unstable();
        assert_eq!(seen, listed);
    }

    #[test]
    fn command_ids_carry_the_epoch() {
        let id = CommandId::new("a1b2-c3:d4", 7, 42);
        assert_eq!(id.as_str(), "a1b2-c3:d4:7:42");
        assert_eq!(id.epoch(), Some(7));
        assert_eq!(CommandId("random-uuid".into()).epoch(), None);
    }

    #[test]
    fn commands_map_to_dialplan_apps() {
        let speak = Command::Speak {
            engine: "flite".into(),
            voice: "kal".into(),
            text: "Hello | world".into(),
            terminators: String::new(),
        };
        assert_eq!(speak.app(), ("speak", "flite|kal|Hello | world".into()));
        assert_eq!(
            speak.preset_vars(),
            vec![("playback_terminators", "none".into())]
        );
        let collect = Command::Collect {
            prompt: "tone_stream://%(200,0,600)".into(),
            min_digits: 1,
            max_digits: 4,
            tries: 1,
            timeout_ms: 8000,
            digit_timeout_ms: 3000,
            terminators: "#".into(),
            variable: "pivot_digits_3".into(),
        };
        assert_eq!(
            collect.app().1,
            "1 4 1 8000 # tone_stream://%(200,0,600) silence_stream://250 pivot_digits_3 \\d+ 3000"
        );
        let dial = Command::Dial {
            targets: vec![
                "sofia/gateway/gw/+14155550100".into(),
                "user/1001@example.com".into(),
            ],
            sequential: false,
            timeout_s: 20,
            caller_id_number: Some("+15551230000".into()),
            caller_id_name: None,
            time_limit_s: None,
            continue_on_fail: true,
        };
        assert_eq!(
            dial.app().1,
            "{call_timeout=20,continue_on_fail=true,hangup_after_bridge=false,origination_caller_id_number=+15551230000}sofia/gateway/gw/+14155550100,user/1001@example.com"
        );
    }

    fn completion(pairs: &[(&str, &str)]) -> EslEvent {
        let mut e = EslEvent::new("CHANNEL_EXECUTE_COMPLETE");
        for (k, v) in pairs {
            e.set(*k, *v);
        }
        e
    }

    #[test]
    fn playback_outcomes_as_the_captures_show_them() {
        let play = Command::Play {
            media: "x.wav".into(),
            loops: 1,
            terminators: "#".into(),
        };
        let done = completion(&[("Application-Response", "FILE PLAYED")]);
        let mut stop = EslEvent::new("PLAYBACK_STOP");
        stop.set("Playback-Status", "done");
        assert_eq!(
            Outcome::from_completion(&play, &done, Some(&stop), None),
            Outcome::Done
        );
        stop.set("Playback-Status", "break");
        assert_eq!(
            Outcome::from_completion(&play, &done, Some(&stop), None),
            Outcome::Interrupted { key: None }
        );
        let keyed = completion(&[
            ("Application-Response", "FILE PLAYED"),
            ("variable_playback_terminator_used", "#"),
        ]);
        assert_eq!(
            Outcome::from_completion(&play, &keyed, None, Some('#')),
            Outcome::Interrupted { key: Some('#') }
        );
        // The variable is sticky on FreeSWITCH: without a key pressed during this prompt it
        // says nothing, and a key that is not a terminator does not stop the prompt.
        assert_eq!(
            Outcome::from_completion(&play, &keyed, None, None),
            Outcome::Done
        );
        assert_eq!(
            Outcome::from_completion(&play, &keyed, None, Some('5')),
            Outcome::Done
        );
        let gone = completion(&[
            ("Application-Response", "PLAYBACK ERROR"),
            ("Hangup-Cause", "NORMAL_CLEARING"),
        ]);
        assert_eq!(
            Outcome::from_completion(&play, &gone, None, None),
            Outcome::HungUp {
                cause: "NORMAL_CLEARING".into()
            }
        );
        let missing = completion(&[("Application-Response", "FILE NOT FOUND")]);
        assert_eq!(
            Outcome::from_completion(&play, &missing, None, None),
            Outcome::Failed {
                reason: "FILE NOT FOUND".into()
            }
        );
    }

    #[test]
    fn collected_digits_come_from_the_named_variable_only() {
        let collect = Command::Collect {
            prompt: "p".into(),
            min_digits: 1,
            max_digits: 4,
            tries: 1,
            timeout_ms: 5000,
            digit_timeout_ms: 3000,
            terminators: "#".into(),
            variable: "pivot_digits_2".into(),
        };
        let ok = completion(&[
            ("variable_pivot_digits_2", "123"),
            ("variable_read_result", "success"),
            ("variable_read_terminator_used", "#"),
            // A sticky value from an earlier collection must not be read.
            ("variable_pivot_digits_1", "999"),
        ]);
        assert_eq!(
            Outcome::from_completion(&collect, &ok, None, None),
            Outcome::Digits {
                digits: "123".into(),
                terminator: Some('#'),
                result: ReadResult::Success
            }
        );
        let none = completion(&[("variable_read_result", "failure")]);
        assert_eq!(
            Outcome::from_completion(&collect, &none, None, None),
            Outcome::Digits {
                digits: String::new(),
                terminator: None,
                result: ReadResult::Timeout
            }
        );
    }

    #[test]
    fn bridge_outcomes() {
        let dial = Command::Dial {
            targets: vec!["x".into()],
            sequential: false,
            timeout_s: 30,
            caller_id_number: None,
            caller_id_name: None,
            time_limit_s: None,
            continue_on_fail: true,
        };
        let busy = completion(&[("variable_originate_disposition", "USER_BUSY")]);
        assert_eq!(
            Outcome::from_completion(&dial, &busy, None, None),
            Outcome::DialFailed {
                cause: "USER_BUSY".into()
            }
        );
        let answered = completion(&[
            ("variable_originate_disposition", "call accepted"),
            ("variable_bridge_hangup_cause", "NORMAL_CLEARING"),
        ]);
        assert_eq!(
            Outcome::from_completion(&dial, &answered, None, None),
            Outcome::Bridged {
                hangup_cause: Some("NORMAL_CLEARING".into())
            }
        );
    }
}
