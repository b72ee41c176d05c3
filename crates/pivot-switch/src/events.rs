//! Typed switch events: what the engine hears from a switch. Built from FreeSWITCH's events by
//! the client; the engine never sees an ESL header.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::commands::{CommandId, Outcome};
use crate::esl::EslEvent;

/// A call offered to pivot: everything the pivot request needs about who called whom.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CallInfo {
    pub call_id: String,
    /// The configured name of the switch the call is on.
    pub switch: String,
    /// The switch's `Core-UUID` when the call was parked (changes when FreeSWITCH restarts).
    pub core_uuid: String,
    pub from_user: String,
    pub from_host: String,
    /// The dialled number.
    pub to_user: String,
    pub to_host: String,
    pub caller_id_name: String,
    pub caller_id_number: String,
    /// `inbound` or `outbound`.
    pub direction: String,
    pub answered: bool,
    /// `variable_pivot_*` channel variables (e.g. `pivot_account_id`), without the prefix.
    pub variables: BTreeMap<String, String>,
}

impl CallInfo {
    /// Reads a `CHANNEL_PARK` (or any channel event carrying the caller headers).
    pub fn from_event(switch: &str, event: &EslEvent) -> Option<CallInfo> {
        let call_id = event.unique_id()?.to_owned();
        let get = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| event.get(n))
                .unwrap_or_default()
                .to_owned()
        };
        let variables = event
            .headers()
            .filter_map(|(name, value)| {
                name.strip_prefix("variable_pivot_")
                    .map(|k| (k.to_owned(), value.to_owned()))
            })
            .collect();
        Some(CallInfo {
            call_id,
            switch: switch.to_owned(),
            core_uuid: get(&["Core-UUID"]),
            from_user: get(&[
                "variable_sip_from_user",
                "Caller-Username",
                "Caller-Caller-ID-Number",
            ]),
            from_host: get(&["variable_sip_from_host", "variable_domain_name"]),
            to_user: get(&[
                "variable_sip_req_user",
                "Caller-Destination-Number",
                "variable_sip_to_user",
            ]),
            to_host: get(&["variable_sip_to_host", "variable_sip_req_host"]),
            caller_id_name: get(&["Caller-Caller-ID-Name"]),
            caller_id_number: get(&["Caller-Caller-ID-Number"]),
            direction: get(&["Call-Direction"]),
            answered: event.get("Answer-State") == Some("answered"),
            variables,
        })
    }
}

/// A live channel as `show channels as json` lists it (used to resync after a reconnect).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelSummary {
    pub call_id: String,
    pub destination: String,
    pub caller_id_number: String,
    pub call_state: String,
}

/// What a switch tells the engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum SwitchEvent {
    /// A new call waits in park for a controller.
    Parked(CallInfo),
    Answered {
        call_id: String,
    },
    /// A command finished (or was ended by a hangup).
    Completed {
        call_id: String,
        command_id: CommandId,
        outcome: Outcome,
    },
    /// The caller pressed a key.
    Dtmf {
        call_id: String,
        digit: char,
        duration_ms: u32,
    },
    Bridged {
        call_id: String,
        other_leg: Option<String>,
    },
    Unbridged {
        call_id: String,
    },
    /// The call is gone; every command still pending on it has been completed with `HungUp`.
    Hangup {
        call_id: String,
        cause: String,
    },
    /// Connected (again) to a switch. `restarted` says its `Core-UUID` changed, so every call
    /// it had is gone; `channels` are the calls alive now, to reconcile with what the engine
    /// believes.
    SwitchUp {
        switch: String,
        core_uuid: String,
        restarted: bool,
        channels: Vec<ChannelSummary>,
    },
    /// The connection to a switch was lost; commands to its calls fail until `SwitchUp`.
    SwitchDown {
        switch: String,
        reason: String,
    },
    Heartbeat {
        switch: String,
        core_uuid: String,
    },
}

impl SwitchEvent {
    /// The call an event is about, if any.
    pub fn call_id(&self) -> Option<&str> {
        match self {
            SwitchEvent::Parked(info) => Some(&info.call_id),
            SwitchEvent::Answered { call_id }
            | SwitchEvent::Completed { call_id, .. }
            | SwitchEvent::Dtmf { call_id, .. }
            | SwitchEvent::Bridged { call_id, .. }
            | SwitchEvent::Unbridged { call_id }
            | SwitchEvent::Hangup { call_id, .. } => Some(call_id),
            SwitchEvent::SwitchUp { .. }
            | SwitchEvent::SwitchDown { .. }
            | SwitchEvent::Heartbeat { .. } => None,
        }
    }
}
