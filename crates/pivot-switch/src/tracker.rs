//! Turning one switch's ESL events into typed [`SwitchEvent`]s, shared by the inbound client
//! ([`crate::client`]) and the outbound socket server ([`crate::outbound`]): which calls are
//! known, which commands await their completion (matched by `Application-UUID`), which
//! background jobs await their result. Every map is bounded.

use std::collections::HashMap;

use tokio::sync::oneshot;

use crate::client::SwitchError;
use crate::commands::{Command, CommandId, Outcome};
use crate::esl::EslEvent;
use crate::events::{CallInfo, SwitchEvent};

/// Calls tracked per switch.
pub(crate) const MAX_CALLS: usize = 200_000;
/// Commands awaiting completion per call.
pub(crate) const MAX_PENDING_PER_CALL: usize = 64;
/// Background jobs awaiting their result per switch.
pub(crate) const MAX_JOBS: usize = 10_000;

/// Per-switch bookkeeping of calls, pending commands and background jobs.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    pub(crate) calls: HashMap<String, CallTrack>,
    pub(crate) jobs: HashMap<String, oneshot::Sender<Result<String, SwitchError>>>,
}

#[derive(Debug, Default)]
pub(crate) struct CallTrack {
    /// Commands awaiting completion, by Event-UUID, oldest first.
    pending: Vec<(CommandId, Command)>,
    /// The last PLAYBACK_STOP, to tell a finished prompt from an interrupted one.
    last_playback_stop: Option<EslEvent>,
    /// The last key pressed since the last app started: which key stopped a prompt.
    last_key: Option<char>,
    hung_up: bool,
}

impl Tracker {
    pub(crate) fn register(
        &mut self,
        call_id: &str,
        id: CommandId,
        command: Command,
    ) -> Result<(), SwitchError> {
        if !self.calls.contains_key(call_id) && self.calls.len() >= MAX_CALLS {
            return Err(SwitchError::Overloaded(format!(
                "{} calls tracked",
                self.calls.len()
            )));
        }
        let call = self.calls.entry(call_id.to_owned()).or_default();
        if call.pending.len() >= MAX_PENDING_PER_CALL {
            return Err(SwitchError::Overloaded(format!(
                "{MAX_PENDING_PER_CALL} commands pending on {call_id}"
            )));
        }
        // What the previous prompt left (its PLAYBACK_STOP, its key) says nothing about this
        // command; the inbound client does not subscribe to CHANNEL_EXECUTE, so this is where
        // a new command's slate is cleaned.
        call.last_playback_stop = None;
        call.last_key = None;
        call.pending.push((id, command));
        Ok(())
    }

    pub(crate) fn unregister(&mut self, call_id: &str, id: &CommandId) {
        if let Some(call) = self.calls.get_mut(call_id) {
            call.pending.retain(|(pending, _)| pending != id);
        }
    }

    pub(crate) fn add_job(
        &mut self,
        switch: &str,
        id: String,
        tx: oneshot::Sender<Result<String, SwitchError>>,
    ) -> Result<(), SwitchError> {
        if self.jobs.len() >= MAX_JOBS {
            return Err(SwitchError::Overloaded(switch.to_owned()));
        }
        self.jobs.insert(id, tx);
        Ok(())
    }

    pub(crate) fn fail_jobs(&mut self) -> Vec<oneshot::Sender<Result<String, SwitchError>>> {
        self.jobs.drain().map(|(_, tx)| tx).collect()
    }

    /// Offers a call to the engine: [`SwitchEvent::Parked`] the first time a call is seen (a
    /// CHANNEL_PARK, or an outbound socket's `connect` reply), `None` when it is already
    /// tracked or too many calls are.
    pub(crate) fn offer(&mut self, switch: &str, event: &EslEvent) -> Option<SwitchEvent> {
        let info = CallInfo::from_event(switch, event)?;
        if self.calls.contains_key(&info.call_id) || self.calls.len() >= MAX_CALLS {
            return None;
        }
        self.calls
            .insert(info.call_id.clone(), CallTrack::default());
        Some(SwitchEvent::Parked(info))
    }

    /// The call is gone without its hang-up events having been seen (its connection closed):
    /// every pending command completes `HungUp`, then [`SwitchEvent::Hangup`] unless one was
    /// already sent. The call is forgotten.
    pub(crate) fn end_call(&mut self, call_id: &str, cause: &str) -> Vec<SwitchEvent> {
        let Some(call) = self.calls.remove(call_id) else {
            return Vec::new();
        };
        let mut out: Vec<SwitchEvent> = call
            .pending
            .into_iter()
            .map(|(command_id, _)| SwitchEvent::Completed {
                call_id: call_id.to_owned(),
                command_id,
                outcome: Outcome::HungUp {
                    cause: cause.to_owned(),
                },
            })
            .collect();
        if !call.hung_up {
            out.push(SwitchEvent::Hangup {
                call_id: call_id.to_owned(),
                cause: cause.to_owned(),
            });
        }
        out
    }

    /// Whether the call's hang-up has been reported (or it is not tracked at all).
    pub(crate) fn is_over(&self, call_id: &str) -> bool {
        self.calls.get(call_id).is_none_or(|call| call.hung_up)
    }

    pub(crate) fn on_event(&mut self, switch: &str, event: &EslEvent) -> Vec<SwitchEvent> {
        let name = event.name().unwrap_or_default();
        if name == "BACKGROUND_JOB" {
            if let Some(tx) = event.get("Job-UUID").and_then(|id| self.jobs.remove(id)) {
                let body = event.body().unwrap_or_default().to_owned();
                let result = if body.starts_with("-ERR") {
                    Err(SwitchError::Refused(body.trim_end().to_owned()))
                } else {
                    Ok(body)
                };
                let _ = tx.send(result);
            }
            return Vec::new();
        }
        if name == "HEARTBEAT" {
            return vec![SwitchEvent::Heartbeat {
                switch: switch.to_owned(),
                core_uuid: event.get("Core-UUID").unwrap_or_default().to_owned(),
            }];
        }
        let Some(call_id) = event.unique_id().map(str::to_owned) else {
            return Vec::new();
        };
        match name {
            // A call returns to park after a bridge; only the first park offers it.
            "CHANNEL_PARK" => self.offer(switch, event).into_iter().collect(),
            "CHANNEL_ANSWER" => vec![SwitchEvent::Answered { call_id }],
            "PLAYBACK_STOP" => {
                if let Some(call) = self.calls.get_mut(&call_id) {
                    call.last_playback_stop = Some(event.clone());
                }
                Vec::new()
            }
            "CHANNEL_EXECUTE" => {
                // A new prompt starts: an older PLAYBACK_STOP or key says nothing about it.
                if let Some(call) = self.calls.get_mut(&call_id) {
                    call.last_playback_stop = None;
                    call.last_key = None;
                }
                Vec::new()
            }
            "CHANNEL_EXECUTE_COMPLETE" => {
                let Some(call) = self.calls.get_mut(&call_id) else {
                    return Vec::new();
                };
                let Some(app_uuid) = event.get("Application-UUID") else {
                    return Vec::new();
                };
                let Some(index) = call
                    .pending
                    .iter()
                    .position(|(id, _)| id.as_str() == app_uuid)
                else {
                    return Vec::new();
                };
                let (command_id, command) = call.pending.remove(index);
                let outcome = Outcome::from_completion(
                    &command,
                    event,
                    call.last_playback_stop.as_ref(),
                    call.last_key,
                );
                vec![SwitchEvent::Completed {
                    call_id,
                    command_id,
                    outcome,
                }]
            }
            "DTMF" => {
                let digit = event.get("DTMF-Digit").and_then(|d| d.chars().next());
                let duration_ms = event
                    .get("DTMF-Duration")
                    // FreeSWITCH reports the duration in samples at 8 kHz.
                    .and_then(|d| d.parse::<u32>().ok())
                    .map_or(0, |samples| samples / 8);
                if let (Some(call), Some(digit)) = (self.calls.get_mut(&call_id), digit) {
                    call.last_key = Some(digit);
                }
                digit
                    .map(|digit| SwitchEvent::Dtmf {
                        call_id,
                        digit,
                        duration_ms,
                    })
                    .into_iter()
                    .collect()
            }
            "CHANNEL_BRIDGE" => vec![SwitchEvent::Bridged {
                other_leg: event.get("Other-Leg-Unique-ID").map(str::to_owned),
                call_id,
            }],
            "CHANNEL_UNBRIDGE" => vec![SwitchEvent::Unbridged { call_id }],
            "CHANNEL_HANGUP" | "CHANNEL_HANGUP_COMPLETE" | "CHANNEL_DESTROY" => {
                let final_event = name != "CHANNEL_HANGUP";
                let Some(call) = self.calls.get_mut(&call_id) else {
                    return Vec::new();
                };
                let mut out = Vec::new();
                let cause = event
                    .get("Hangup-Cause")
                    .or_else(|| event.variable("hangup_cause"))
                    .unwrap_or("NORMAL_CLEARING")
                    .to_owned();
                for (command_id, _) in call.pending.drain(..) {
                    out.push(SwitchEvent::Completed {
                        call_id: call_id.clone(),
                        command_id,
                        outcome: Outcome::HungUp {
                            cause: cause.clone(),
                        },
                    });
                }
                if !call.hung_up {
                    call.hung_up = true;
                    out.push(SwitchEvent::Hangup {
                        call_id: call_id.clone(),
                        cause,
                    });
                }
                if final_event {
                    self.calls.remove(&call_id);
                }
                out
            }
            _ => Vec::new(),
        }
    }
}
