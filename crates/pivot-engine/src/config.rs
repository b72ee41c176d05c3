//! The engine's settings, filled by `pivotd` from its config file.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use pivot_flow::Limits;

/// How the engine runs calls.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// This node's id: in logs, the channels API and ownership records.
    pub node_id: String,
    /// Arbiters (threads) call actors are spread over; 0 = one per core.
    pub arbiters: usize,
    /// Calls driven at once; a call beyond this is refused with `SWITCH_CONGESTION`.
    pub max_calls: usize,
    /// A call is hung up (`ALLOTTED_TIMEOUT`) after this long, whatever it does.
    pub max_call_duration: Duration,
    /// Consecutive requests without any media before a loop is cut.
    pub max_requests_without_media: u32,
    /// Added to each command's expected duration to form its deadline.
    pub command_margin: Duration,
    /// Expected length of media whose length cannot be known (files, URLs, looping prompts).
    pub max_prompt: Duration,
    /// Where the switch writes recordings.
    pub recordings_dir: String,
    /// Dial string of a phone number; `{number}` is replaced (e.g. `sofia/gateway/carrier/{number}`).
    pub number_dial_template: String,
    pub tts: TtsSettings,
    pub accounts: HashMap<String, AccountSettings>,
    /// Document limits of pivot responses and stored callflows.
    pub limits: Limits,
    /// Deadline of requests that have no pivot node of their own (API redirects before any
    /// document).
    pub default_request_timeout: Duration,
    /// Restarts from the checkpoint after a panic before the call is hung up.
    pub max_restarts: u32,
    /// Mailbox capacity of each call actor.
    pub mailbox: usize,
    /// Text that makes a call actor panic when it is spoken: lets black-box tests prove a
    /// panic is contained. `None` (the default) in production.
    #[doc(hidden)]
    pub panic_marker: Option<String>,
    /// Heartbeat, lease and claim timing.
    pub cluster: crate::cluster::ClusterSettings,
    /// Called with each call's setup time (park → first command): benchmarks read exact
    /// quantiles here, where the metric only has buckets.
    #[doc(hidden)]
    pub setup_observer: Option<SetupObserver>,
}

/// Receives setup times; see [`EngineConfig::setup_observer`].
#[derive(Clone)]
pub struct SetupObserver(pub Arc<dyn Fn(Duration) + Send + Sync>);

impl std::fmt::Debug for SetupObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SetupObserver")
    }
}

/// Text-to-speech engine and voice names.
#[derive(Debug, Clone)]
pub struct TtsSettings {
    pub engine: String,
    pub default_voice: String,
    /// Voice names of documents (`alice`, `woman`, `Polly.Joanna`), lower-cased, to engine voices.
    pub voices: BTreeMap<String, String>,
}

impl TtsSettings {
    pub fn voice(&self, requested: Option<&str>) -> String {
        requested
            .and_then(|v| self.voices.get(&v.to_ascii_lowercase()))
            .unwrap_or(&self.default_voice)
            .clone()
    }
}

/// Per-account settings.
#[derive(Debug, Clone, Default)]
pub struct AccountSettings {
    /// Signs every request (`X-Pivot-Signature`, and `X-Twilio-Signature` for TwiML).
    pub signing_secret: Option<String>,
    pub custom_request_headers: BTreeMap<String, String>,
    /// Requested when a follow-up request fails (Twilio's `fallbackUrl`).
    pub fallback_url: Option<String>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        let voices = [
            ("male", "kal"),
            ("man", "kal"),
            ("female", "slt"),
            ("woman", "slt"),
            ("alice", "slt"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        EngineConfig {
            node_id: "pivot-1".to_owned(),
            arbiters: 0,
            max_calls: 50_000,
            max_call_duration: Duration::from_secs(4 * 3600),
            max_requests_without_media: 10,
            command_margin: Duration::from_secs(5),
            max_prompt: Duration::from_secs(600),
            recordings_dir: "/tmp/pivot-recordings".to_owned(),
            number_dial_template: "sofia/gateway/default/{number}".to_owned(),
            tts: TtsSettings {
                engine: "flite".to_owned(),
                default_voice: "kal".to_owned(),
                voices,
            },
            accounts: HashMap::new(),
            limits: Limits::default(),
            default_request_timeout: Duration::from_secs(5),
            max_restarts: 3,
            mailbox: 256,
            panic_marker: None,
            setup_observer: None,
            cluster: crate::cluster::ClusterSettings::default(),
        }
    }
}
