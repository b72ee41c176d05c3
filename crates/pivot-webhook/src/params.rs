//! The parameters of a pivot request, named and ordered as KAZOO (`kazoo`) or Twilio (`twiml`)
//! apps expect them.

use std::collections::BTreeMap;

use pivot_flow::{RequestFormat, Variable};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

/// A parameter value; KAZOO's encoder nests objects (`key[sub]=v`) and arrays (`key[]=v`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamValue {
    Text(String),
    Bool(bool),
    Int(i64),
    List(Vec<ParamValue>),
    Map(Params),
}

impl From<&str> for ParamValue {
    fn from(value: &str) -> Self {
        Self::Text(value.to_owned())
    }
}

impl From<String> for ParamValue {
    fn from(value: String) -> Self {
        Self::Text(value)
    }
}

impl From<bool> for ParamValue {
    fn from(value: bool) -> Self {
        Self::Bool(value)
    }
}

impl From<i64> for ParamValue {
    fn from(value: i64) -> Self {
        Self::Int(value)
    }
}

impl From<u64> for ParamValue {
    /// Saturates: durations and counters never come near `i64::MAX`, and a clamp beats a panic.
    fn from(value: u64) -> Self {
        Self::Int(i64::try_from(value).unwrap_or(i64::MAX))
    }
}

impl From<u32> for ParamValue {
    fn from(value: u32) -> Self {
        Self::Int(i64::from(value))
    }
}

impl From<Params> for ParamValue {
    fn from(value: Params) -> Self {
        Self::Map(value)
    }
}

impl Serialize for ParamValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Text(text) => serializer.serialize_str(text),
            Self::Bool(flag) => serializer.serialize_bool(*flag),
            Self::Int(number) => serializer.serialize_i64(*number),
            Self::List(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Self::Map(params) => params.serialize(serializer),
        }
    }
}

/// Parameters in insertion order (the order of the seed's example URI); keys unique.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Params {
    entries: Vec<(String, ParamValue)>,
}

impl Params {
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the value in place when the key exists, so the order stays that of first insertion.
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<ParamValue>) {
        let key = key.into();
        let value = value.into();
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some((_, slot)) => *slot = value,
            None => self.entries.push((key, value)),
        }
    }

    pub fn set_if_absent(&mut self, key: impl Into<String>, value: impl Into<ParamValue>) {
        let key = key.into();
        if self.get(&key).is_none() {
            self.entries.push((key, value.into()));
        }
    }

    pub fn get(&self, key: &str) -> Option<&ParamValue> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn remove(&mut self, key: &str) -> Option<ParamValue> {
        let index = self.entries.iter().position(|(k, _)| k == key)?;
        Some(self.entries.remove(index).1)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &ParamValue)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Later pairs replace earlier ones with the same key (as [`Params::set`]).
impl<K: Into<String>, V: Into<ParamValue>> FromIterator<(K, V)> for Params {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut params = Self::new();
        for (key, value) in iter {
            params.set(key, value);
        }
        params
    }
}

impl Serialize for Params {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.entries.len()))?;
        for (key, value) in &self.entries {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    #[default]
    Inbound,
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }
}

/// Who called whom: fixed for the whole call.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct CallInfo {
    pub call_id: String,
    pub account_id: String,
    pub from: String,
    pub from_realm: String,
    pub to: String,
    pub to_realm: String,
    pub request: Option<String>,
    pub request_realm: Option<String>,
    pub caller_id_name: String,
    pub caller_id_number: String,
    pub direction: Direction,
    pub language: Option<String>,
    pub custom_sip_headers: BTreeMap<String, String>,
    pub custom_application_vars: BTreeMap<String, String>,
}

/// Twilio call status names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallStatus {
    Queued,
    Ringing,
    InProgress,
    Completed,
    Busy,
    Failed,
    NoAnswer,
    Canceled,
}

impl CallStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Ringing => "ringing",
            Self::InProgress => "in-progress",
            Self::Completed => "completed",
            Self::Busy => "busy",
            Self::Failed => "failed",
            Self::NoAnswer => "no-answer",
            Self::Canceled => "canceled",
        }
    }
}

/// Twilio `DialCallStatus` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DialStatus {
    Completed,
    Answered,
    Busy,
    NoAnswer,
    Failed,
    Canceled,
}

impl DialStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Answered => "answered",
            Self::Busy => "busy",
            Self::NoAnswer => "no-answer",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
        }
    }
}

/// The outcome of a `<Dial>`, reported on its action request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DialResult {
    pub status: DialStatus,
    pub call_sid: Option<String>,
    pub duration_s: Option<u64>,
}

/// What the call did since the previous request; the engine sends it once, then clears it.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Progress {
    pub call_status: Option<CallStatus>,
    pub digits: Option<String>,
    pub dtmf_collections: BTreeMap<String, String>,
    pub recording_url: Option<String>,
    pub recording_duration_s: Option<u64>,
    pub dial: Option<DialResult>,
    pub user_vars: Vec<Variable>,
}

/// Builds the parameters of one request.
///
/// User variables never replace a parameter built here (KAZOO's precedence: base parameters
/// win), so an app cannot spoof e.g. `From` with `<Set>`; user variables with an empty name are
/// dropped because they would encode as a nameless `=value` pair.
pub fn request_params(format: RequestFormat, call: &CallInfo, progress: &Progress) -> Params {
    let mut params = match format {
        RequestFormat::Kazoo => kazoo_params(call, progress),
        RequestFormat::Twiml => twiml_params(call, progress),
    };
    for var in progress.user_vars.iter().filter(|v| !v.key.is_empty()) {
        params.set_if_absent(var.key.as_str(), var.value.as_str());
    }
    params
}

fn kazoo_params(call: &CallInfo, progress: &Progress) -> Params {
    // The order of the seed documentation's example URI, so its example is reproduced verbatim.
    let mut params = Params::new();
    params.set("Caller-ID-Number", call.caller_id_number.as_str());
    params.set("Caller-ID-Name", call.caller_id_name.as_str());
    params.set("Direction", call.direction.as_str());
    params.set("ApiVersion", "2013-05-01");
    params.set("ToRealm", call.to_realm.as_str());
    params.set("To", call.to.as_str());
    params.set("FromRealm", call.from_realm.as_str());
    params.set("From", call.from.as_str());
    params.set("Account-ID", call.account_id.as_str());
    params.set("Call-ID", call.call_id.as_str());
    if let Some(request) = non_empty(&call.request) {
        params.set("Request", request);
    }
    if let Some(realm) = non_empty(&call.request_realm) {
        params.set("Request-Realm", realm);
    }
    if let Some(language) = non_empty(&call.language) {
        params.set("Language", language);
    }
    if let Some(status) = progress.call_status {
        params.set("Call-Status", status.as_str());
    }
    if let Some(digits) = digits(progress) {
        params.set("Digits", digits);
    }
    if !call.custom_application_vars.is_empty() {
        params.set(
            "Custom-Application-Vars",
            to_map(&call.custom_application_vars),
        );
    }
    if !call.custom_sip_headers.is_empty() {
        params.set("Custom-SIP-Headers", to_map(&call.custom_sip_headers));
    }
    if let Some(url) = non_empty(&progress.recording_url) {
        params.set("Recording-Url", url);
    }
    if let Some(duration) = progress.recording_duration_s {
        params.set("Recording-Duration", duration);
    }
    params
}

fn twiml_params(call: &CallInfo, progress: &Progress) -> Params {
    let mut params = Params::new();
    params.set("CallSid", call.call_id.as_str());
    params.set("AccountSid", call.account_id.as_str());
    params.set("From", call.from.as_str());
    params.set("To", call.to.as_str());
    params.set("FromRealm", call.from_realm.as_str());
    params.set("ToRealm", call.to_realm.as_str());
    if let Some(status) = progress.call_status {
        params.set("CallStatus", status.as_str());
    }
    params.set("ApiVersion", "2010-04-01");
    params.set("Direction", call.direction.as_str());
    params.set("CallerName", call.caller_id_name.as_str());
    params.set("Caller", call.caller_id_number.as_str());
    params.set("Called", call.to.as_str());
    if let Some(digits) = digits(progress) {
        params.set("Digits", digits);
    }
    if let Some(url) = non_empty(&progress.recording_url) {
        params.set("RecordingUrl", url);
    }
    if let Some(duration) = progress.recording_duration_s {
        params.set("RecordingDuration", duration);
    }
    if let Some(dial) = &progress.dial {
        params.set("DialCallStatus", dial.status.as_str());
        if let Some(sid) = non_empty(&dial.call_sid) {
            params.set("DialCallSid", sid);
        }
        if let Some(duration) = dial.duration_s {
            params.set("DialCallDuration", duration);
        }
    }
    params
}

/// KAZOO's `get_digit_pressed`: the digits pressed since the last request, else the named
/// `collect_dtmf` collections (sent as `Digits[name]=…`).
fn digits(progress: &Progress) -> Option<ParamValue> {
    if let Some(digits) = non_empty(&progress.digits) {
        return Some(digits.into());
    }
    if progress.dtmf_collections.is_empty() {
        return None;
    }
    Some(to_map(&progress.dtmf_collections))
}

fn to_map(map: &BTreeMap<String, String>) -> ParamValue {
    ParamValue::Map(map.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect())
}

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::encode::query_string;

    fn seed_call() -> CallInfo {
        CallInfo {
            call_id: "{CALL_ID}".into(),
            account_id: "{ACCOUNT_ID}".into(),
            from: "user_sov2kt".into(),
            from_realm: "your.pivot.server".into(),
            to: "3004".into(),
            to_realm: "your.pivot.server".into(),
            caller_id_name: "JoeFromIT".into(),
            caller_id_number: "XXXXXXXXXX".into(),
            ..CallInfo::default()
        }
    }

    fn var(key: &str, value: &str) -> Variable {
        Variable {
            key: key.into(),
            value: value.into(),
        }
    }

    fn keys(params: &Params) -> Vec<&str> {
        params.iter().map(|(k, _)| k).collect()
    }

    fn text(params: &Params, key: &str) -> Option<String> {
        match params.get(key)? {
            ParamValue::Text(t) => Some(t.clone()),
            ParamValue::Int(n) => Some(n.to_string()),
            other => panic!("{key} is not scalar: {other:?}"),
        }
    }

    #[test]
    fn seed_example_uri_is_reproduced_byte_for_byte() {
        let params = request_params(RequestFormat::Kazoo, &seed_call(), &Progress::default());
        assert_eq!(
            query_string(&params),
            "Caller-ID-Number=XXXXXXXXXX&Caller-ID-Name=JoeFromIT&Direction=inbound\
             &ApiVersion=2013-05-01&ToRealm=your.pivot.server&To=3004\
             &FromRealm=your.pivot.server&From=user_sov2kt\
             &Account-ID=%7BACCOUNT_ID%7D&Call-ID=%7BCALL_ID%7D"
        );
    }

    #[test]
    fn kazoo_optional_params_follow_in_order_when_known() {
        let call = CallInfo {
            request: Some("3004".into()),
            request_realm: Some("realm.example".into()),
            language: Some("en-us".into()),
            direction: Direction::Outbound,
            custom_application_vars: BTreeMap::from([("tier".into(), "gold".into())]),
            custom_sip_headers: BTreeMap::from([("X-Foo".into(), "bar baz".into())]),
            ..seed_call()
        };
        let progress = Progress {
            call_status: Some(CallStatus::InProgress),
            digits: Some("12#".into()),
            recording_url: Some("http://rec/1.mp3".into()),
            recording_duration_s: Some(7),
            ..Progress::default()
        };
        let params = request_params(RequestFormat::Kazoo, &call, &progress);
        assert_eq!(
            keys(&params)[10..],
            [
                "Request",
                "Request-Realm",
                "Language",
                "Call-Status",
                "Digits",
                "Custom-Application-Vars",
                "Custom-SIP-Headers",
                "Recording-Url",
                "Recording-Duration",
            ]
        );
        assert_eq!(text(&params, "Direction").unwrap(), "outbound");
        assert_eq!(text(&params, "Call-Status").unwrap(), "in-progress");
        assert_eq!(params.get("Recording-Duration"), Some(&ParamValue::Int(7)));
        let tail = query_string(&params);
        assert!(
            tail.ends_with(
                "&Request=3004&Request-Realm=realm.example&Language=en-us&Call-Status=in-progress\
                 &Digits=12%23&Custom-Application-Vars[tier]=gold&Custom-SIP-Headers[X-Foo]=bar+baz\
                 &Recording-Url=http%3A%2F%2Frec%2F1.mp3&Recording-Duration=7"
            ),
            "{tail}"
        );
    }

    #[test]
    fn kazoo_omits_unknown_and_empty_optionals() {
        let call = CallInfo {
            request: Some(String::new()),
            language: Some(String::new()),
            ..seed_call()
        };
        let progress = Progress {
            digits: Some(String::new()),
            recording_url: Some(String::new()),
            ..Progress::default()
        };
        assert_eq!(
            request_params(RequestFormat::Kazoo, &call, &progress).len(),
            10
        );
    }

    #[test]
    fn digits_fall_back_to_dtmf_collections() {
        let progress = Progress {
            dtmf_collections: BTreeMap::from([
                ("default".into(), "1234".into()),
                ("pin".into(), "99".into()),
            ]),
            ..Progress::default()
        };
        let params = request_params(RequestFormat::Kazoo, &seed_call(), &progress);
        assert!(
            query_string(&params).ends_with("&Digits[default]=1234&Digits[pin]=99"),
            "{}",
            query_string(&params)
        );

        let pressed = Progress {
            digits: Some("5".into()),
            ..progress
        };
        let params = request_params(RequestFormat::Kazoo, &seed_call(), &pressed);
        assert_eq!(text(&params, "Digits").unwrap(), "5");
    }

    #[test]
    fn user_vars_never_override_base_params() {
        let progress = Progress {
            digits: Some("1".into()),
            user_vars: vec![
                var("From", "spoofed"),
                var("Digits", "999"),
                var("Flavor", "mint"),
                var("", "nameless"),
                var("Flavor", "second"),
            ],
            ..Progress::default()
        };
        for format in [RequestFormat::Kazoo, RequestFormat::Twiml] {
            let params = request_params(format, &seed_call(), &progress);
            assert_eq!(text(&params, "From").unwrap(), "user_sov2kt");
            assert_eq!(text(&params, "Digits").unwrap(), "1");
            // The first of two user vars with one name wins, as every later one is "absent"-checked.
            assert_eq!(text(&params, "Flavor").unwrap(), "mint");
            assert_eq!(keys(&params).last(), Some(&"Flavor"));
            assert!(params.get("").is_none());
        }
    }

    #[test]
    fn twiml_initial_request() {
        let params = request_params(RequestFormat::Twiml, &seed_call(), &Progress::default());
        assert_eq!(
            keys(&params),
            [
                "CallSid",
                "AccountSid",
                "From",
                "To",
                "FromRealm",
                "ToRealm",
                "ApiVersion",
                "Direction",
                "CallerName",
                "Caller",
                "Called",
            ]
        );
        assert_eq!(text(&params, "CallSid").unwrap(), "{CALL_ID}");
        assert_eq!(text(&params, "AccountSid").unwrap(), "{ACCOUNT_ID}");
        assert_eq!(text(&params, "ApiVersion").unwrap(), "2010-04-01");
        assert_eq!(text(&params, "Direction").unwrap(), "inbound");
        assert_eq!(text(&params, "CallerName").unwrap(), "JoeFromIT");
        assert_eq!(text(&params, "Caller").unwrap(), "XXXXXXXXXX");
        assert_eq!(text(&params, "Called").unwrap(), "3004");
    }

    #[test]
    fn twiml_follow_up_params() {
        let progress = Progress {
            call_status: Some(CallStatus::Completed),
            digits: Some("42".into()),
            recording_url: Some("https://rec/r.wav".into()),
            recording_duration_s: Some(12),
            dial: Some(DialResult {
                status: DialStatus::NoAnswer,
                call_sid: Some("b-leg".into()),
                duration_s: Some(u64::MAX),
            }),
            user_vars: vec![var("step", "2")],
            ..Progress::default()
        };
        let params = request_params(RequestFormat::Twiml, &seed_call(), &progress);
        assert_eq!(keys(&params)[6], "CallStatus");
        assert_eq!(
            keys(&params)[12..],
            [
                "Digits",
                "RecordingUrl",
                "RecordingDuration",
                "DialCallStatus",
                "DialCallSid",
                "DialCallDuration",
                "step",
            ]
        );
        assert_eq!(text(&params, "CallStatus").unwrap(), "completed");
        assert_eq!(text(&params, "Digits").unwrap(), "42");
        assert_eq!(text(&params, "RecordingUrl").unwrap(), "https://rec/r.wav");
        assert_eq!(text(&params, "RecordingDuration").unwrap(), "12");
        assert_eq!(text(&params, "DialCallStatus").unwrap(), "no-answer");
        assert_eq!(text(&params, "DialCallSid").unwrap(), "b-leg");
        assert_eq!(
            params.get("DialCallDuration"),
            Some(&ParamValue::Int(i64::MAX))
        );
        assert_eq!(text(&params, "step").unwrap(), "2");
    }

    #[test]
    fn twiml_dial_without_sid_or_duration() {
        let progress = Progress {
            dial: Some(DialResult {
                status: DialStatus::Busy,
                call_sid: None,
                duration_s: None,
            }),
            ..Progress::default()
        };
        let params = request_params(RequestFormat::Twiml, &seed_call(), &progress);
        assert_eq!(text(&params, "DialCallStatus").unwrap(), "busy");
        assert!(params.get("DialCallSid").is_none());
        assert!(params.get("DialCallDuration").is_none());
        assert!(params.get("CallStatus").is_none());
    }

    #[test]
    fn status_names() {
        let calls = [
            (CallStatus::Queued, "queued"),
            (CallStatus::Ringing, "ringing"),
            (CallStatus::InProgress, "in-progress"),
            (CallStatus::Completed, "completed"),
            (CallStatus::Busy, "busy"),
            (CallStatus::Failed, "failed"),
            (CallStatus::NoAnswer, "no-answer"),
            (CallStatus::Canceled, "canceled"),
        ];
        for (status, name) in calls {
            assert_eq!(status.as_str(), name);
        }
        let dials = [
            (DialStatus::Completed, "completed"),
            (DialStatus::Answered, "answered"),
            (DialStatus::Busy, "busy"),
            (DialStatus::NoAnswer, "no-answer"),
            (DialStatus::Failed, "failed"),
            (DialStatus::Canceled, "canceled"),
        ];
        for (status, name) in dials {
            assert_eq!(status.as_str(), name);
        }
        assert_eq!(Direction::default(), Direction::Inbound);
    }

    #[test]
    fn params_keep_insertion_order_and_unique_keys() {
        let mut params = Params::new();
        assert!(params.is_empty());
        params.set("a", 1_i64);
        params.set("b", "two");
        params.set("a", true);
        params.set_if_absent("b", "ignored");
        params.set_if_absent("c", 3_u32);
        assert_eq!(keys(&params), ["a", "b", "c"]);
        assert_eq!(params.get("a"), Some(&ParamValue::Bool(true)));
        assert_eq!(params.get("b"), Some(&ParamValue::Text("two".into())));
        assert_eq!(params.remove("b"), Some(ParamValue::Text("two".into())));
        assert_eq!(params.remove("b"), None);
        assert_eq!(keys(&params), ["a", "c"]);
        assert_eq!(params.len(), 2);
    }

    #[test]
    fn conversions() {
        assert_eq!(ParamValue::from(u64::MAX), ParamValue::Int(i64::MAX));
        assert_eq!(ParamValue::from(5_u64), ParamValue::Int(5));
        assert_eq!(ParamValue::from(-5_i64), ParamValue::Int(-5));
        assert_eq!(
            ParamValue::from(String::from("x")),
            ParamValue::Text("x".into())
        );
        let collected: Params = [("k", "v1"), ("k", "v2")].into_iter().collect();
        assert_eq!(collected.len(), 1);
        assert_eq!(collected.get("k"), Some(&ParamValue::Text("v2".into())));
    }

    #[test]
    fn serializes_as_ordered_json() {
        let mut inner = Params::new();
        inner.set("z", "last-key-first");
        inner.set("a", false);
        let mut params = Params::new();
        params.set("Zeta", 1_i64);
        params.set("Alpha", inner);
        params.set(
            "List",
            ParamValue::List(vec!["x".into(), ParamValue::Int(2)]),
        );
        assert_eq!(
            serde_json::to_string(&params).unwrap(),
            r#"{"Zeta":1,"Alpha":{"z":"last-key-first","a":false},"List":["x",2]}"#
        );
    }
}
