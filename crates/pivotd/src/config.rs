//! `pivotd`'s configuration: a TOML file, then `PIVOT_<SECTION>__<KEY>` environment overrides
//! (DESIGN.md §10). Every key is optional and documented in `deploy/config.example.toml`; an
//! unknown key is an error rather than a silently ignored typo.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The account `pivotd` with no arguments serves its demo callflow for (KAZOO-style 32-hex id).
pub const DEMO_ACCOUNT_ID: &str = "4a2c1b4e5d6f47a8b9c0d1e2f3a4b5c6";

const ENV_PREFIX: &str = "PIVOT_";
const ENV_SEPARATOR: &str = "__";
const MIN_LEASE_MS: u64 = 500;
const MIN_BODY_BYTES: usize = 1024;
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// The name of the embedded simulator's switch (`switch.kind = "sim"`).
pub const SIM_SWITCH_NAME: &str = "sim";
/// A connection is a call: far above what one node carries, low enough to be a typo's bound.
const MAX_OUTBOUND_CONNECTIONS: usize = 1_000_000;
/// A lingering connection is held (a file descriptor, a connection slot) after its call ended.
const MAX_LINGER_S: u32 = 3600;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `key` is empty when the file is not valid TOML at all.
    #[error("config file {}: {}", path.display(), keyed(key, message))]
    File {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("environment variable {var}: {}", keyed(key, message))]
    Env {
        var: String,
        key: String,
        message: String,
    },
    #[error("invalid config: {key}: {message}")]
    Invalid { key: String, message: String },
}

impl ConfigError {
    /// The dotted key path the error is about (`switch.sim.time_scale`, `accounts[1].id`), if
    /// any.
    #[cfg(test)]
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Read { .. } => None,
            Self::File { key, .. } | Self::Env { key, .. } | Self::Invalid { key, .. } => {
                (!key.is_empty()).then_some(key.as_str())
            }
        }
    }
}

fn keyed(key: &str, message: &str) -> String {
    if key.is_empty() {
        message.to_owned()
    } else {
        format!("{key}: {message}")
    }
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub node: NodeConfig,
    pub api: ApiConfig,
    pub switch: SwitchSection,
    pub cluster: ClusterConfig,
    pub webhook: WebhookConfig,
    pub engine: EngineSection,
    pub tts: TtsConfig,
    pub debug: DebugConfig,
    pub log: LogConfig,
    pub accounts: Vec<AccountConfig>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    pub id: String,
    /// `None`: `http://<api.listen>`, see [`Config::advertise_url`].
    pub advertise: Option<String>,
    /// How long SIGTERM waits for live calls to end before handing the rest over to peers;
    /// orchestrators size their kill timeout from it.
    pub drain_grace_s: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    pub listen: String,
    /// Empty: no admin token.
    pub admin_token: String,
    pub tokens: Vec<TokenConfig>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenConfig {
    pub token: String,
    pub account_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SwitchKind {
    #[default]
    Sim,
    Freeswitch,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SwitchSection {
    pub kind: SwitchKind,
    pub sim: SimSwitchConfig,
    pub freeswitch: Vec<FreeswitchConfig>,
    /// FreeSWITCH's outbound socket mode: a second way in, beside either kind.
    pub outbound: OutboundSwitchConfig,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboundSwitchConfig {
    /// Where to accept FreeSWITCH's `socket <host:port> async full` connections; empty: not
    /// listening (see [`OutboundSwitchConfig::enabled`]).
    pub listen: String,
    pub name: String,
    /// `linger` seconds asked for after a hang-up, so the final events still arrive.
    pub linger_s: u32,
    /// Calls (connections) at once; more are closed at accept.
    pub max_connections: usize,
}

impl OutboundSwitchConfig {
    pub fn enabled(&self) -> bool {
        !self.listen.trim().is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimSwitchConfig {
    pub esl_listen: String,
    pub password: String,
    pub time_scale: f64,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FreeswitchConfig {
    /// `None`: the address, see [`FreeswitchConfig::effective_name`].
    pub name: Option<String>,
    pub address: String,
    pub password: String,
}

impl FreeswitchConfig {
    pub fn effective_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.address)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterBackend {
    #[default]
    Memory,
    Redis,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    pub backend: ClusterBackend,
    pub redis_url: String,
    pub lease_ms: u64,
    /// A node ranked n-th for a new call waits n times this before claiming it.
    pub claim_grace_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// Destinations allowed despite the private-address guard; see [`Config::allow_cidrs`].
    pub allow_cidrs: Vec<String>,
    pub max_body_bytes: usize,
    pub default_timeout_ms: u64,
    pub max_redirects: usize,
    pub debug_body_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineSection {
    pub max_calls: usize,
    pub max_call_duration_s: u64,
    /// A Redirect loop is cut after this many consecutive requests that played nothing.
    pub max_requests_without_media: u32,
    pub command_margin_ms: u64,
    /// 0: one per core.
    pub arbiters: usize,
    /// Where the switch writes recordings.
    pub recordings_dir: String,
    /// Dial string of a phone number in `<Dial><Number>` and `resources`; `{number}` is replaced.
    pub number_dial_template: String,
    /// Expected length of prompts whose length cannot be known (files, URLs), in seconds.
    pub max_prompt_s: u64,
    /// Restarts of a call's actor from its checkpoint after a panic before the call hangs up.
    pub max_restarts: u32,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TtsConfig {
    pub engine: String,
    pub default_voice: String,
    /// Voice names documents use (`alice`, `female`) to the engine's voices; entries given in
    /// the config are merged over the defaults.
    #[serde(deserialize_with = "voices_over_defaults")]
    pub voices: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DebugConfig {
    pub retention_s: u64,
    pub max_entries_per_call: usize,
    pub max_calls: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON unless stderr is a terminal.
    #[default]
    Auto,
    Json,
    Human,
}

impl LogFormat {
    pub fn is_json(self, stderr_is_terminal: bool) -> bool {
        match self {
            Self::Auto => !stderr_is_terminal,
            Self::Json => true,
            Self::Human => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing_subscriber::EnvFilter` directive.
    pub filter: String,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccountConfig {
    pub id: String,
    pub name: Option<String>,
    pub signing_secret: Option<String>,
    pub custom_request_headers: BTreeMap<String, String>,
    /// Requested (POST, with `ErrorCode` and `ErrorUrl`) when a follow-up request fails.
    pub fallback_url: Option<String>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            id: default_node_id(),
            advertise: None,
            drain_grace_s: 25,
        }
    }
}

/// The hostname is unique per pod/host in every deployment we target, so it makes a node id
/// that needs no configuration.
fn default_node_id() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| {
            std::env::var("HOSTNAME")
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| "pivot-1".to_owned())
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".to_owned(),
            admin_token: String::new(),
            tokens: Vec::new(),
        }
    }
}

impl Default for SimSwitchConfig {
    fn default() -> Self {
        Self {
            esl_listen: "127.0.0.1:0".to_owned(),
            password: "ClueCon".to_owned(),
            time_scale: 1.0,
        }
    }
}

impl Default for FreeswitchConfig {
    fn default() -> Self {
        Self {
            name: None,
            address: String::new(),
            password: "ClueCon".to_owned(),
        }
    }
}

impl Default for OutboundSwitchConfig {
    fn default() -> Self {
        Self {
            listen: String::new(),
            name: "outbound".to_owned(),
            linger_s: 10,
            max_connections: 10_000,
        }
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            backend: ClusterBackend::Memory,
            redis_url: "redis://127.0.0.1:6379".to_owned(),
            lease_ms: 5000,
            claim_grace_ms: 300,
        }
    }
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            allow_cidrs: Vec::new(),
            max_body_bytes: 1024 * 1024,
            default_timeout_ms: 5000,
            max_redirects: 5,
            debug_body_bytes: 64 * 1024,
        }
    }
}

impl Default for EngineSection {
    fn default() -> Self {
        Self {
            max_calls: 50_000,
            max_call_duration_s: 4 * 3600,
            max_requests_without_media: 10,
            command_margin_ms: 5000,
            arbiters: 0,
            recordings_dir: "/tmp/pivot-recordings".to_owned(),
            number_dial_template: "sofia/gateway/default/{number}".to_owned(),
            max_prompt_s: 600,
            max_restarts: 3,
        }
    }
}

impl Default for TtsConfig {
    fn default() -> Self {
        Self {
            engine: "flite".to_owned(),
            default_voice: "kal".to_owned(),
            voices: default_voices(),
        }
    }
}

/// Adding one voice (`PIVOT_TTS__VOICES__BRIAN=awb`) must not silently drop the built-in names
/// documents rely on.
fn voices_over_defaults<'de, D>(deserializer: D) -> Result<BTreeMap<String, String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let mut voices = default_voices();
    voices.extend(BTreeMap::<String, String>::deserialize(deserializer)?);
    Ok(voices)
}

fn default_voices() -> BTreeMap<String, String> {
    [
        ("male", "kal"),
        ("man", "kal"),
        ("female", "slt"),
        ("woman", "slt"),
        ("alice", "slt"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

impl Default for DebugConfig {
    fn default() -> Self {
        Self {
            retention_s: 7 * 24 * 3600,
            max_entries_per_call: 200,
            max_calls: 10_000,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Auto,
            filter: "info".to_owned(),
        }
    }
}

impl Config {
    /// Reads `path` (if any), applies `PIVOT_<SECTION>__<KEY>` overrides from `env`, and
    /// validates the result.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let file = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                Some((path, text))
            }
            None => None,
        };
        load_source(file.as_ref().map(|(p, t)| (*p, t.as_str())), env)
    }

    /// The embedded default with `PIVOT_*` overrides from `env` (so `PIVOT_API__LISTEN` moves
    /// the demo node), validated.
    pub fn load_embedded(
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table = toml::Table::try_from(Config::embedded_default()).map_err(|e| {
            ConfigError::Invalid {
                key: String::new(),
                message: e.to_string(),
            }
        })?;
        apply_env(&mut table, env)?;
        let config =
            deserialize(table).map_err(|(key, message)| ConfigError::Invalid { key, message })?;
        config.validate()?;
        Ok(config)
    }

    /// What `pivotd` with no arguments runs: the defaults, a demo account, and loopback
    /// webhooks allowed because the demo pivot app is served by `pivotd` itself.
    pub fn embedded_default() -> Config {
        let mut config = Config::default();
        config.webhook.allow_cidrs = vec!["127.0.0.0/8".to_owned(), "::1/128".to_owned()];
        config.accounts.push(AccountConfig {
            id: DEMO_ACCOUNT_ID.to_owned(),
            name: Some("Demo".to_owned()),
            ..AccountConfig::default()
        });
        config
    }

    /// `webhook.allow_cidrs` parsed; entries that do not parse are skipped, which
    /// [`Config::validate`] rules out.
    pub fn allow_cidrs(&self) -> Vec<IpNet> {
        self.webhook
            .allow_cidrs
            .iter()
            .filter_map(|s| parse_cidr(s))
            .collect()
    }

    #[cfg(test)]
    pub fn account(&self, id: &str) -> Option<&AccountConfig> {
        self.accounts.iter().find(|a| a.id == id)
    }

    /// Where peers reach this node's API: `node.advertise`, else `http://<api.listen>`.
    pub fn advertise_url(&self) -> String {
        match &self.node.advertise {
            Some(url) => url.clone(),
            None => format!("http://{}", self.api.listen),
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_node_and_api()?;
        self.validate_switch()?;
        self.validate_cluster()?;
        self.validate_webhook()?;
        self.validate_log()?;
        self.validate_accounts()
    }

    fn validate_node_and_api(&self) -> Result<(), ConfigError> {
        if self.node.id.trim().is_empty() {
            return Err(invalid("node.id", "must not be empty"));
        }
        if !(1..=3600).contains(&self.node.drain_grace_s) {
            return Err(invalid("node.drain_grace_s", "must be between 1 and 3600"));
        }
        if let Some(advertise) = &self.node.advertise {
            let ok = url::Url::parse(advertise).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host_str().is_some_and(|h| !h.is_empty())
            });
            if !ok {
                return Err(invalid(
                    "node.advertise",
                    format!("{advertise:?} is not an http:// or https:// URL"),
                ));
            }
        }
        let listen = parse_socket_addr("api.listen", &self.api.listen)?;
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, t) in self.api.tokens.iter().enumerate() {
            let key = format!("api.tokens[{i}].token");
            if t.token.is_empty() {
                return Err(invalid(key, "must not be empty"));
            }
            if let Some(j) = seen.insert(&t.token, i) {
                return Err(invalid(key, format!("same token as api.tokens[{j}].token")));
            }
            // One token must mean one identity, or which account a request acts as is ambiguous.
            if t.token == self.api.admin_token {
                return Err(invalid(key, "same token as api.admin_token"));
            }
            if t.account_id.is_empty() {
                return Err(invalid(
                    format!("api.tokens[{i}].account_id"),
                    "must not be empty",
                ));
            }
        }
        // Peers forward live-call requests to the advertised URL; "http://0.0.0.0:8080" would
        // send them to themselves.
        if self.cluster.backend == ClusterBackend::Redis
            && self.node.advertise.is_none()
            && listen.ip().is_unspecified()
        {
            return Err(invalid(
                "node.advertise",
                format!(
                    "required with cluster.backend = \"redis\" when api.listen ({}) is not an address peers can reach",
                    self.api.listen
                ),
            ));
        }
        Ok(())
    }

    fn validate_switch(&self) -> Result<(), ConfigError> {
        let sim = &self.switch.sim;
        parse_socket_addr("switch.sim.esl_listen", &sim.esl_listen)?;
        if !sim.time_scale.is_finite() || sim.time_scale < 0.0 {
            return Err(invalid(
                "switch.sim.time_scale",
                format!("must be a finite number >= 0, not {}", sim.time_scale),
            ));
        }
        let outbound = &self.switch.outbound;
        if self.switch.kind == SwitchKind::Freeswitch
            && self.switch.freeswitch.is_empty()
            && !outbound.enabled()
        {
            return Err(invalid(
                "switch.freeswitch",
                "at least one [[switch.freeswitch]] (or switch.outbound.listen) is required when \
                 switch.kind = \"freeswitch\"",
            ));
        }
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, fs) in self.switch.freeswitch.iter().enumerate() {
            let has_port = fs
                .address
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !has_port {
                return Err(invalid(
                    format!("switch.freeswitch[{i}].address"),
                    format!("{:?} is not host:port", fs.address),
                ));
            }
            // Names label metrics and logs; two switches under one name would be indistinct.
            if let Some(j) = names.insert(fs.effective_name(), i) {
                return Err(invalid(
                    format!("switch.freeswitch[{i}].name"),
                    format!(
                        "{:?} is also the name of switch.freeswitch[{j}]",
                        fs.effective_name()
                    ),
                ));
            }
        }
        if outbound.enabled() {
            parse_socket_addr("switch.outbound.listen", outbound.listen.trim())?;
            if outbound.name.trim().is_empty() {
                return Err(invalid("switch.outbound.name", "must not be empty"));
            }
            // Calls find their switch by name: a shared name would send one way's commands
            // down the other.
            if let Some(i) = names.get(outbound.name.as_str()) {
                return Err(invalid(
                    "switch.outbound.name",
                    format!(
                        "{:?} is also the name of switch.freeswitch[{i}]",
                        outbound.name
                    ),
                ));
            }
            if self.switch.kind == SwitchKind::Sim && outbound.name == SIM_SWITCH_NAME {
                return Err(invalid(
                    "switch.outbound.name",
                    format!("{SIM_SWITCH_NAME:?} is the embedded simulator's name"),
                ));
            }
            if !(1..=MAX_OUTBOUND_CONNECTIONS).contains(&outbound.max_connections) {
                return Err(invalid(
                    "switch.outbound.max_connections",
                    format!(
                        "must be between 1 and {MAX_OUTBOUND_CONNECTIONS}, not {}",
                        outbound.max_connections
                    ),
                ));
            }
            if outbound.linger_s > MAX_LINGER_S {
                return Err(invalid(
                    "switch.outbound.linger_s",
                    format!("must be at most {MAX_LINGER_S}, not {}", outbound.linger_s),
                ));
            }
        }
        Ok(())
    }

    fn validate_cluster(&self) -> Result<(), ConfigError> {
        if self.cluster.lease_ms < MIN_LEASE_MS {
            return Err(invalid(
                "cluster.lease_ms",
                format!("must be >= {MIN_LEASE_MS}, not {}", self.cluster.lease_ms),
            ));
        }
        if self.cluster.backend == ClusterBackend::Redis {
            let url = &self.cluster.redis_url;
            let scheme_ok = ["redis://", "rediss://", "redis+sentinel://"]
                .iter()
                .any(|s| url.starts_with(s));
            if !scheme_ok {
                return Err(invalid(
                    "cluster.redis_url",
                    format!("{url:?} must start with redis://, rediss:// or redis+sentinel://"),
                ));
            }
        }
        Ok(())
    }

    fn validate_webhook(&self) -> Result<(), ConfigError> {
        for (i, cidr) in self.webhook.allow_cidrs.iter().enumerate() {
            if parse_cidr(cidr).is_none() {
                return Err(invalid(
                    format!("webhook.allow_cidrs[{i}]"),
                    format!("{cidr:?} is not a CIDR (like \"10.0.0.0/8\") or an IP address"),
                ));
            }
        }
        let max = self.webhook.max_body_bytes;
        if !(MIN_BODY_BYTES..=MAX_BODY_BYTES).contains(&max) {
            return Err(invalid(
                "webhook.max_body_bytes",
                format!(
                    "must be between {MIN_BODY_BYTES} (1 KiB) and {MAX_BODY_BYTES} (64 MiB), not {max}"
                ),
            ));
        }
        Ok(())
    }

    fn validate_log(&self) -> Result<(), ConfigError> {
        tracing_subscriber::EnvFilter::builder()
            .parse(&self.log.filter)
            .map(|_| ())
            .map_err(|e| invalid("log.filter", e.to_string()))
    }

    fn validate_accounts(&self) -> Result<(), ConfigError> {
        let mut ids: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, account) in self.accounts.iter().enumerate() {
            if account.id.is_empty() {
                return Err(invalid(format!("accounts[{i}].id"), "must not be empty"));
            }
            if let Some(j) = ids.insert(&account.id, i) {
                return Err(invalid(
                    format!("accounts[{i}].id"),
                    format!("{:?} is also the id of accounts[{j}]", account.id),
                ));
            }
            for (name, value) in &account.custom_request_headers {
                let key = format!("accounts[{i}].custom_request_headers.{name}");
                if name.is_empty() || !name.bytes().all(is_header_name_byte) {
                    return Err(invalid(key, "not a valid HTTP header name"));
                }
                // A CR or LF would let a header value smuggle extra headers into every request.
                if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
                    return Err(invalid(key, "header value contains a control character"));
                }
            }
            if let Some(url) = &account.fallback_url
                && !url::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
            {
                return Err(invalid(
                    format!("accounts[{i}].fallback_url"),
                    format!("{url:?} is not an http(s) URL"),
                ));
            }
        }
        Ok(())
    }
}

/// RFC 9110 `tchar`.
fn is_header_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn parse_socket_addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        invalid(
            key,
            format!("{value:?} is not an IP address and port like \"127.0.0.1:8080\""),
        )
    })
}

/// A bare address is accepted as a single-host network because that is what operators write
/// to allow one webhook server.
fn parse_cidr(s: &str) -> Option<IpNet> {
    let s = s.trim();
    s.parse::<IpNet>()
        .map(|n| n.trunc())
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .ok()
}

/// `file` is the config file's path and text.
fn load_source(
    file: Option<(&Path, &str)>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let mut table = match file {
        Some((path, text)) => parse_file(path, text)?,
        None => toml::Table::new(),
    };
    apply_env(&mut table, env)?;
    let config = deserialize(table).map_err(|(key, message)| {
        // apply_env deserializes after every override, so this is unreachable in practice.
        ConfigError::Invalid { key, message }
    })?;
    config.validate()?;
    Ok(config)
}

fn parse_file(path: &Path, text: &str) -> Result<toml::Table, ConfigError> {
    let file_error = |key: String, message: String| ConfigError::File {
        path: path.to_owned(),
        key,
        message: message.trim_end().to_owned(),
    };
    // Deserializing from the text (not from a table) keeps spans, so errors carry line/column.
    let de =
        toml::Deserializer::parse(text).map_err(|e| file_error(String::new(), e.to_string()))?;
    serde_path_to_error::deserialize::<_, Config>(de).map_err(|e| {
        let key = error_key(e.path());
        file_error(key, e.into_inner().to_string())
    })?;
    toml::from_str(text).map_err(|e: toml::de::Error| file_error(String::new(), e.to_string()))
}

/// The key path an error is about; serde_path_to_error's includes the key of an unknown-key
/// error, and is "." at the root.
fn error_key(path: &serde_path_to_error::Path) -> String {
    let path = path.to_string();
    if path == "." { String::new() } else { path }
}

fn deserialize(table: toml::Table) -> Result<Config, (String, String)> {
    serde_path_to_error::deserialize::<_, Config>(toml::Value::Table(table)).map_err(|e| {
        let key = error_key(e.path());
        (key, e.inner().message().to_owned())
    })
}

/// Applies overrides one at a time, in name order, so an error names the variable that caused
/// it.
fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    let mut overrides: Vec<(String, Vec<String>, String)> = env
        .into_iter()
        .filter_map(|(var, value)| {
            let path = env_key_path(&var)?;
            Some((var, path, value))
        })
        .collect();
    overrides.sort();
    for (var, path, raw) in overrides {
        let env_error = |key: String, message: String| ConfigError::Env {
            var: var.clone(),
            key,
            message,
        };
        if path.iter().any(String::is_empty) {
            return Err(env_error(
                String::new(),
                format!("empty key segment; the form is {ENV_PREFIX}<SECTION>__<KEY>"),
            ));
        }
        let typed = raw
            .parse::<toml::Value>()
            .unwrap_or_else(|_| toml::Value::String(raw.clone()));
        let first_error = match try_override(table, &path, typed.clone()) {
            Ok(next) => {
                *table = next;
                continue;
            }
            Err(e) => e,
        };
        // `PIVOT_NODE__ID=42` or `PIVOT_API__ADMIN_TOKEN=1234` mean strings, though they parse
        // as TOML numbers.
        if !typed.is_str()
            && let Ok(next) = try_override(table, &path, toml::Value::String(raw.clone()))
        {
            *table = next;
            continue;
        }
        let (key, message) = match first_error {
            OverrideError::NotATable(key) => (key.clone(), format!("{key} is not a table")),
            OverrideError::Deserialize(key, message) => (key, message),
        };
        return Err(env_error(key, message));
    }
    Ok(())
}

enum OverrideError {
    NotATable(String),
    Deserialize(String, String),
}

fn try_override(
    table: &toml::Table,
    path: &[String],
    value: toml::Value,
) -> Result<toml::Table, OverrideError> {
    let mut next = table.clone();
    set_path(&mut next, path, value)?;
    deserialize(next.clone()).map_err(|(key, message)| OverrideError::Deserialize(key, message))?;
    Ok(next)
}

fn set_path(
    table: &mut toml::Table,
    path: &[String],
    value: toml::Value,
) -> Result<(), OverrideError> {
    let Some((last, parents)) = path.split_last() else {
        return Ok(());
    };
    let mut current = table;
    for (depth, segment) in parents.iter().enumerate() {
        let entry = current
            .entry(segment.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = match entry {
            toml::Value::Table(t) => t,
            _ => return Err(OverrideError::NotATable(path[..=depth].join("."))),
        };
    }
    current.insert(last.clone(), value);
    Ok(())
}

/// `PIVOT_SWITCH__SIM__TIME_SCALE` → `["switch", "sim", "time_scale"]`; `None` for variables
/// that are not overrides (`HOME`, `PIVOT_CONFIG`).
fn env_key_path(var: &str) -> Option<Vec<String>> {
    let prefix = var.get(..ENV_PREFIX.len())?;
    if !prefix.eq_ignore_ascii_case(ENV_PREFIX) {
        return None;
    }
    let rest = &var[ENV_PREFIX.len()..];
    if !rest.contains(ENV_SEPARATOR) {
        return None;
    }
    Some(
        rest.split(ENV_SEPARATOR)
            .map(|s| s.to_ascii_lowercase())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../../deploy/config.example.toml");

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn load_text(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        load_source(Some((Path::new("test.toml"), text)), env(vars))
    }

    fn load_env(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        load_source(None, env(vars))
    }

    fn invalid_key(config: &Config) -> String {
        match config.validate() {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let c = Config::default();
        assert!(!c.node.id.is_empty());
        assert_eq!(c.node.advertise, None);
        assert_eq!(c.advertise_url(), "http://127.0.0.1:8080");
        assert_eq!(c.api.listen, "127.0.0.1:8080");
        assert_eq!(c.api.admin_token, "");
        assert!(c.api.tokens.is_empty());
        assert_eq!(c.switch.kind, SwitchKind::Sim);
        assert_eq!(c.switch.sim.esl_listen, "127.0.0.1:0");
        assert_eq!(c.switch.sim.password, "ClueCon");
        assert_eq!(c.switch.sim.time_scale, 1.0);
        assert!(c.switch.freeswitch.is_empty());
        assert_eq!(c.cluster.backend, ClusterBackend::Memory);
        assert_eq!(c.cluster.redis_url, "redis://127.0.0.1:6379");
        assert_eq!(c.cluster.lease_ms, 5000);
        assert!(c.webhook.allow_cidrs.is_empty());
        assert_eq!(c.webhook.max_body_bytes, 1_048_576);
        assert_eq!(c.webhook.default_timeout_ms, 5000);
        assert_eq!(c.webhook.max_redirects, 5);
        assert_eq!(c.webhook.debug_body_bytes, 65_536);
        assert_eq!(c.engine.max_calls, 50_000);
        assert_eq!(c.engine.max_call_duration_s, 14_400);
        assert_eq!(c.engine.max_requests_without_media, 10);
        assert_eq!(c.engine.command_margin_ms, 5000);
        assert_eq!(c.engine.arbiters, 0);
        assert_eq!(c.engine.recordings_dir, "/tmp/pivot-recordings");
        assert_eq!(c.tts.engine, "flite");
        assert_eq!(c.tts.default_voice, "kal");
        for (name, voice) in [
            ("male", "kal"),
            ("man", "kal"),
            ("female", "slt"),
            ("woman", "slt"),
            ("alice", "slt"),
        ] {
            assert_eq!(
                c.tts.voices.get(name).map(String::as_str),
                Some(voice),
                "{name}"
            );
        }
        assert_eq!(c.debug.retention_s, 604_800);
        assert_eq!(c.debug.max_entries_per_call, 200);
        assert_eq!(c.debug.max_calls, 10_000);
        assert_eq!(c.log.format, LogFormat::Auto);
        assert_eq!(c.log.filter, "info");
        assert!(c.accounts.is_empty());
        c.validate().unwrap();
        assert_eq!(FreeswitchConfig::default().password, "ClueCon");
    }

    #[test]
    fn no_file_no_env_is_the_default() {
        assert_eq!(load_env(&[]).unwrap(), Config::default());
    }

    #[test]
    fn log_format_auto_is_json_off_a_terminal() {
        assert!(LogFormat::Auto.is_json(false));
        assert!(!LogFormat::Auto.is_json(true));
        assert!(LogFormat::Json.is_json(true));
        assert!(!LogFormat::Human.is_json(false));
    }

    #[test]
    fn file_parses() {
        let c = load_text(
            r#"
            [node]
            id = "n1"
            advertise = "http://10.0.0.1:8080"

            [api]
            listen = "0.0.0.0:9000"
            admin_token = "adm"
            tokens = [{ token = "t1", account_id = "a1" }]

            [switch]
            kind = "freeswitch"
            sim = { time_scale = 0.5 }
            [[switch.freeswitch]]
            address = "10.0.0.5:8021"
            [[switch.freeswitch]]
            name = "fs2"
            address = "fs2.internal:8021"
            password = "secret"

            [cluster]
            backend = "redis"
            redis_url = "redis+sentinel://s1:26379/mymaster"
            lease_ms = 3000

            [webhook]
            allow_cidrs = ["10.0.0.0/8"]

            [log]
            format = "human"
            filter = "pivot=debug,info"

            [[accounts]]
            id = "a1"
            signing_secret = "s3cret"
            custom_request_headers = { "X-Tenant" = "acme" }
            "#,
            &[],
        )
        .unwrap();
        assert_eq!(c.node.id, "n1");
        assert_eq!(c.advertise_url(), "http://10.0.0.1:8080");
        assert_eq!(c.api.listen, "0.0.0.0:9000");
        assert_eq!(
            c.api.tokens,
            vec![TokenConfig {
                token: "t1".into(),
                account_id: "a1".into()
            }]
        );
        assert_eq!(c.switch.kind, SwitchKind::Freeswitch);
        assert_eq!(c.switch.sim.time_scale, 0.5);
        assert_eq!(c.switch.sim.esl_listen, "127.0.0.1:0");
        assert_eq!(c.switch.freeswitch.len(), 2);
        assert_eq!(c.switch.freeswitch[0].effective_name(), "10.0.0.5:8021");
        assert_eq!(c.switch.freeswitch[0].password, "ClueCon");
        assert_eq!(c.switch.freeswitch[1].effective_name(), "fs2");
        assert_eq!(c.switch.freeswitch[1].password, "secret");
        assert_eq!(c.cluster.backend, ClusterBackend::Redis);
        assert_eq!(c.cluster.lease_ms, 3000);
        assert_eq!(
            c.allow_cidrs(),
            vec!["10.0.0.0/8".parse::<IpNet>().unwrap()]
        );
        assert_eq!(c.webhook.max_body_bytes, 1_048_576);
        assert_eq!(c.log.format, LogFormat::Human);
        let a1 = c.account("a1").unwrap();
        assert_eq!(a1.signing_secret.as_deref(), Some("s3cret"));
        assert_eq!(a1.custom_request_headers["X-Tenant"], "acme");
        assert!(c.account("nope").is_none());
    }

    #[test]
    fn load_reads_a_file_and_names_it() {
        let dir = std::env::temp_dir().join(format!("pivot-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pivot.toml");
        std::fs::write(&path, "[cluster]\nlease_ms = 700\n").unwrap();
        let c = Config::load(Some(&path), env(&[("PIVOT_NODE__ID", "n2")])).unwrap();
        assert_eq!(c.cluster.lease_ms, 700);
        assert_eq!(c.node.id, "n2");

        let missing = dir.join("missing.toml");
        let err = Config::load(Some(&missing), env(&[])).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
        assert!(err.to_string().contains("missing.toml"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn syntax_error_names_file_and_line() {
        let err = load_text("[cluster]\nlease_ms = = 3\n", &[]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("test.toml"), "{msg}");
        assert!(msg.contains("line 2"), "{msg}");
    }

    #[test]
    fn unknown_file_key_is_named() {
        let err = load_text("[cluster]\nredis_urll = \"redis://x\"\n", &[]).unwrap_err();
        assert!(matches!(err, ConfigError::File { .. }), "{err:?}");
        assert_eq!(err.key(), Some("cluster.redis_urll"));
        let msg = err.to_string();
        assert!(msg.contains("test.toml: cluster.redis_urll:"), "{msg}");
        assert!(msg.contains("line 2"), "{msg}");

        let err = load_text("[clustr]\nlease_ms = 1\n", &[]).unwrap_err();
        assert_eq!(err.key(), Some("clustr"));
    }

    #[test]
    fn type_error_names_full_path() {
        let err = load_text("[switch.sim]\ntime_scale = \"fast\"\n", &[]).unwrap_err();
        assert_eq!(err.key(), Some("switch.sim.time_scale"), "{err}");
        assert!(err.to_string().contains("line 2"), "{err}");

        let err = load_env(&[("PIVOT_SWITCH__SIM__TIME_SCALE", "fast")]).unwrap_err();
        assert_eq!(err.key(), Some("switch.sim.time_scale"), "{err}");
        assert!(
            err.to_string().contains("PIVOT_SWITCH__SIM__TIME_SCALE"),
            "{err}"
        );

        let err = load_text("[[accounts]]\nid = \"a\"\n[[accounts]]\nid = 7\n", &[]).unwrap_err();
        assert_eq!(err.key(), Some("accounts[1].id"), "{err}");
    }

    #[test]
    fn env_overrides() {
        let c = load_text(
            "[api]\nlisten = \"127.0.0.1:1\"\n[cluster]\nlease_ms = 600\n",
            &[
                ("PIVOT_CLUSTER__REDIS_URL", "redis://r:6379"),
                ("PIVOT_CLUSTER__BACKEND", "redis"),
                ("PIVOT_API__LISTEN", "10.1.1.1:8080"),
                ("PIVOT_CLUSTER__LEASE_MS", "2500"),
                ("PIVOT_SWITCH__SIM__TIME_SCALE", "0"),
                (
                    "PIVOT_WEBHOOK__ALLOW_CIDRS",
                    r#"["10.0.0.0/8", "192.168.0.0/16"]"#,
                ),
                ("pivot_tts__Voices__ALICE", "awb"),
                (
                    "PIVOT_API__TOKENS",
                    r#"[{ token = "t", account_id = "a" }]"#,
                ),
                ("PIVOT_NODE__ID", "42"),
                ("PIVOT_API__ADMIN_TOKEN", "true"),
                ("PIVOT_LOG__FORMAT", "json"),
                ("PIVOT_CONFIG", "/etc/pivot.toml"),
                ("PIVOT_LOG", "whatever"),
                ("HOME", "/root"),
            ],
        )
        .unwrap();
        assert_eq!(c.cluster.redis_url, "redis://r:6379");
        assert_eq!(c.cluster.backend, ClusterBackend::Redis);
        assert_eq!(c.api.listen, "10.1.1.1:8080");
        assert_eq!(c.cluster.lease_ms, 2500);
        assert_eq!(c.switch.sim.time_scale, 0.0);
        assert_eq!(c.webhook.allow_cidrs, vec!["10.0.0.0/8", "192.168.0.0/16"]);
        assert_eq!(c.tts.voices["alice"], "awb");
        assert_eq!(
            c.tts.voices["male"], "kal",
            "a map override keeps the other entries"
        );
        assert_eq!(c.api.tokens.len(), 1);
        assert_eq!(c.node.id, "42");
        assert_eq!(c.api.admin_token, "true");
        assert_eq!(c.log.format, LogFormat::Json);
    }

    #[test]
    fn configured_voices_merge_over_the_defaults() {
        let c = load_text("[tts.voices]\nbrian = \"awb\"\nalice = \"rms\"\n", &[]).unwrap();
        assert_eq!(c.tts.voices["brian"], "awb");
        assert_eq!(c.tts.voices["alice"], "rms");
        assert_eq!(c.tts.voices["male"], "kal");
        assert_eq!(c.tts.voices.len(), 6);
    }

    #[test]
    fn env_inline_table_replaces_a_section() {
        let c = load_text(
            "[switch.sim]\nesl_listen = \"127.0.0.1:8021\"\n",
            &[
                (
                    "PIVOT_SWITCH__SIM",
                    r#"{ time_scale = 2.5, password = "pw" }"#,
                ),
                ("PIVOT_ACCOUNTS", "ignored: no double underscore"),
            ],
        )
        .unwrap();
        assert_eq!(c.switch.sim.time_scale, 2.5);
        assert_eq!(c.switch.sim.password, "pw");
        assert_eq!(
            c.switch.sim.esl_listen, "127.0.0.1:0",
            "the file's value is replaced"
        );
        assert!(c.accounts.is_empty());
    }

    #[test]
    fn env_bool_parses_as_bool() {
        let err = load_env(&[("PIVOT_CLUSTER__LEASE_MS", "true")]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("boolean"), "{msg}");
    }

    #[test]
    fn unknown_env_key_names_the_variable() {
        let err = load_env(&[("PIVOT_CLUSTR__X", "1")]).unwrap_err();
        assert!(matches!(err, ConfigError::Env { ref var, .. } if var == "PIVOT_CLUSTR__X"));
        assert!(err.to_string().contains("PIVOT_CLUSTR__X"), "{err}");
        assert_eq!(err.key(), Some("clustr"));

        let err = load_env(&[("PIVOT_CLUSTER__REDIS_URLL", "redis://x")]).unwrap_err();
        assert_eq!(err.key(), Some("cluster.redis_urll"), "{err}");

        let err = load_env(&[("PIVOT_API__LISTEN__PORT", "1")]).unwrap_err();
        assert_eq!(err.key(), Some("api.listen"), "{err}");

        let err = load_env(&[("PIVOT_API____LISTEN", "1")]).unwrap_err();
        assert!(err.to_string().contains("PIVOT_API____LISTEN"), "{err}");
    }

    #[test]
    fn env_overrides_win_over_file_and_later_errors_name_their_variable() {
        let err = load_text(
            "[cluster]\nlease_ms = 600\n",
            &[
                ("PIVOT_CLUSTER__LEASE_MS", "700"),
                ("PIVOT_DEBUG__MAX_CALLS", "-1"),
            ],
        )
        .unwrap_err();
        assert!(
            matches!(err, ConfigError::Env { ref var, .. } if var == "PIVOT_DEBUG__MAX_CALLS"),
            "{err:?}"
        );
        assert_eq!(err.key(), Some("debug.max_calls"));
    }

    #[test]
    fn env_override_result_is_validated() {
        let err = load_env(&[("PIVOT_SWITCH__SIM__TIME_SCALE", "-1")]).unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { .. }), "{err:?}");
        assert_eq!(err.key(), Some("switch.sim.time_scale"));
    }

    #[test]
    fn validate_listen_addresses() {
        let mut c = Config::default();
        c.api.listen = "localhost:8080".into();
        assert_eq!(invalid_key(&c), "api.listen");
        let mut c = Config::default();
        c.switch.sim.esl_listen = "127.0.0.1".into();
        assert_eq!(invalid_key(&c), "switch.sim.esl_listen");
    }

    #[test]
    fn validate_freeswitch() {
        let mut c = Config::default();
        c.switch.kind = SwitchKind::Freeswitch;
        assert_eq!(invalid_key(&c), "switch.freeswitch");
        c.switch.freeswitch.push(FreeswitchConfig {
            address: "10.0.0.5:8021".into(),
            ..FreeswitchConfig::default()
        });
        c.validate().unwrap();
        c.switch.freeswitch.push(FreeswitchConfig {
            address: "10.0.0.6".into(),
            ..FreeswitchConfig::default()
        });
        assert_eq!(invalid_key(&c), "switch.freeswitch[1].address");
        c.switch.freeswitch[1].address = "10.0.0.5:8021".into();
        assert_eq!(invalid_key(&c), "switch.freeswitch[1].name");
        c.switch.freeswitch[1].name = Some("fs2".into());
        c.validate().unwrap();
    }

    #[test]
    fn outbound_parses_with_its_defaults_and_stands_in_for_freeswitch_boxes() {
        let c = load_text(
            "[switch]\nkind = \"freeswitch\"\n[switch.outbound]\nlisten = \"0.0.0.0:8084\"\n",
            &[],
        )
        .unwrap();
        assert!(c.switch.freeswitch.is_empty());
        assert!(c.switch.outbound.enabled());
        assert_eq!(c.switch.outbound.listen, "0.0.0.0:8084");
        assert_eq!(c.switch.outbound.name, "outbound");
        assert_eq!(c.switch.outbound.linger_s, 10);
        assert_eq!(c.switch.outbound.max_connections, 10_000);
        let c = load_env(&[
            ("PIVOT_SWITCH__OUTBOUND__LISTEN", "127.0.0.1:0"),
            ("PIVOT_SWITCH__OUTBOUND__LINGER_S", "0"),
        ])
        .unwrap();
        assert_eq!(c.switch.kind, SwitchKind::Sim);
        assert_eq!(c.switch.outbound.listen, "127.0.0.1:0");
        assert_eq!(c.switch.outbound.linger_s, 0);
        let err = load_text("[switch.outbound]\nlisten = 8084\n", &[]).unwrap_err();
        assert_eq!(err.key(), Some("switch.outbound.listen"), "{err}");
        let err = load_text("[switch.outbound]\nlinger = 1\n", &[]).unwrap_err();
        assert_eq!(err.key(), Some("switch.outbound.linger"), "{err}");
    }

    #[test]
    fn validate_outbound() {
        let mut c = Config::default();
        assert!(!c.switch.outbound.enabled());
        // Disabled, its other keys are not looked at.
        c.switch.outbound.max_connections = 0;
        c.validate().unwrap();
        c.switch.outbound.max_connections = 10;
        c.switch.outbound.listen = "   ".into();
        assert!(!c.switch.outbound.enabled());
        c.validate().unwrap();

        c.switch.kind = SwitchKind::Freeswitch;
        assert_eq!(invalid_key(&c), "switch.freeswitch");
        c.switch.outbound.listen = "pivot:8084".into();
        assert_eq!(invalid_key(&c), "switch.outbound.listen");
        c.switch.outbound.listen = "0.0.0.0".into();
        assert_eq!(invalid_key(&c), "switch.outbound.listen");
        c.switch.outbound.listen = "0.0.0.0:8084".into();
        c.validate().unwrap();
        c.switch.outbound.max_connections = 0;
        assert_eq!(invalid_key(&c), "switch.outbound.max_connections");
        c.switch.outbound.max_connections = 10_000;
        c.switch.outbound.linger_s = 3601;
        assert_eq!(invalid_key(&c), "switch.outbound.linger_s");
        c.switch.outbound.linger_s = 0;
        c.validate().unwrap();
        c.switch.outbound.name = " ".into();
        assert_eq!(invalid_key(&c), "switch.outbound.name");

        // Calls find their switch by name: no two ways in may share one.
        c.switch.freeswitch.push(FreeswitchConfig {
            name: Some("fs1".into()),
            address: "10.0.0.5:8021".into(),
            ..FreeswitchConfig::default()
        });
        c.switch.outbound.name = "fs1".into();
        assert_eq!(invalid_key(&c), "switch.outbound.name");
        c.switch.outbound.name = "sim".into();
        c.validate().unwrap();
        c.switch.kind = SwitchKind::Sim;
        assert_eq!(invalid_key(&c), "switch.outbound.name");
        c.switch.outbound.name = "outbound".into();
        c.validate().unwrap();
    }

    #[test]
    fn validate_time_scale() {
        for bad in [-0.5, f64::NAN, f64::INFINITY] {
            let mut c = Config::default();
            c.switch.sim.time_scale = bad;
            assert_eq!(invalid_key(&c), "switch.sim.time_scale", "{bad}");
        }
        let mut c = Config::default();
        c.switch.sim.time_scale = 0.0;
        c.validate().unwrap();
    }

    #[test]
    fn validate_lease() {
        let mut c = Config::default();
        c.cluster.lease_ms = 499;
        assert_eq!(invalid_key(&c), "cluster.lease_ms");
        c.cluster.lease_ms = 500;
        c.validate().unwrap();
    }

    #[test]
    fn validate_allow_cidrs() {
        let mut c = Config::default();
        c.webhook.allow_cidrs = vec!["10.0.0.0/8".into(), "10.0.0.0/33".into()];
        assert_eq!(invalid_key(&c), "webhook.allow_cidrs[1]");
        c.webhook.allow_cidrs = vec![
            "10.1.2.3/8".into(),
            "192.168.1.10".into(),
            "fd00::/8".into(),
        ];
        c.validate().unwrap();
        let nets: Vec<String> = c.allow_cidrs().iter().map(ToString::to_string).collect();
        assert_eq!(nets, ["10.0.0.0/8", "192.168.1.10/32", "fd00::/8"]);
    }

    #[test]
    fn validate_tokens() {
        let token = |t: &str, a: &str| TokenConfig {
            token: t.into(),
            account_id: a.into(),
        };
        let mut c = Config::default();
        c.api.tokens = vec![token("a", "x"), token("", "y")];
        assert_eq!(invalid_key(&c), "api.tokens[1].token");
        c.api.tokens = vec![token("a", "x"), token("a", "y")];
        assert_eq!(invalid_key(&c), "api.tokens[1].token");
        c.api.tokens = vec![token("a", "x"), token("b", "")];
        assert_eq!(invalid_key(&c), "api.tokens[1].account_id");
        c.api.tokens = vec![token("a", "x"), token("b", "y")];
        c.validate().unwrap();
        c.api.admin_token = "b".into();
        assert_eq!(invalid_key(&c), "api.tokens[1].token");
    }

    #[test]
    fn validate_accounts() {
        let account = |id: &str| AccountConfig {
            id: id.into(),
            ..AccountConfig::default()
        };
        let mut c = Config {
            accounts: vec![account("a"), account("")],
            ..Config::default()
        };
        assert_eq!(invalid_key(&c), "accounts[1].id");
        c.accounts = vec![account("a"), account("b"), account("a")];
        assert_eq!(invalid_key(&c), "accounts[2].id");
        c.accounts = vec![account("a")];
        c.accounts[0]
            .custom_request_headers
            .insert("X Bad".into(), "v".into());
        assert_eq!(invalid_key(&c), "accounts[0].custom_request_headers.X Bad");
        c.accounts[0].custom_request_headers.clear();
        c.accounts[0]
            .custom_request_headers
            .insert("X-Ok".into(), "v\r\nInjected: 1".into());
        assert_eq!(invalid_key(&c), "accounts[0].custom_request_headers.X-Ok");
        c.accounts[0]
            .custom_request_headers
            .insert("X-Ok".into(), "v\t1".into());
        c.validate().unwrap();
    }

    #[test]
    fn validate_max_body_bytes() {
        for (bytes, ok) in [
            (1023, false),
            (1024, true),
            (64 * 1024 * 1024, true),
            (64 * 1024 * 1024 + 1, false),
        ] {
            let mut c = Config::default();
            c.webhook.max_body_bytes = bytes;
            if ok {
                c.validate().unwrap();
            } else {
                assert_eq!(invalid_key(&c), "webhook.max_body_bytes", "{bytes}");
            }
        }
    }

    #[test]
    fn validate_redis_url_only_for_redis() {
        let mut c = Config::default();
        c.cluster.redis_url = "http://r:6379".into();
        c.validate().unwrap();
        c.cluster.backend = ClusterBackend::Redis;
        assert_eq!(invalid_key(&c), "cluster.redis_url");
        for ok in [
            "redis://r:6379",
            "rediss://r:6380",
            "redis+sentinel://s:26379/m",
        ] {
            c.cluster.redis_url = ok.into();
            c.validate().unwrap();
        }
    }

    #[test]
    fn validate_node() {
        let mut c = Config::default();
        c.node.id = " ".into();
        assert_eq!(invalid_key(&c), "node.id");
        let mut c = Config::default();
        c.node.advertise = Some("10.0.0.1:8080".into());
        assert_eq!(invalid_key(&c), "node.advertise");
        c.node.advertise = Some("https://pivot-0.pivot:8080".into());
        c.validate().unwrap();
        // With a shared cluster, peers cannot forward to 0.0.0.0.
        let mut c = Config::default();
        c.api.listen = "0.0.0.0:8080".into();
        c.validate().unwrap();
        c.cluster.backend = ClusterBackend::Redis;
        assert_eq!(invalid_key(&c), "node.advertise");
        c.node.advertise = Some("http://10.0.0.1:8080".into());
        c.validate().unwrap();
        for bad in [0, 3601] {
            let mut c = Config::default();
            c.node.drain_grace_s = bad;
            assert_eq!(invalid_key(&c), "node.drain_grace_s");
        }
    }

    #[test]
    fn validate_log_filter() {
        let mut c = Config::default();
        c.log.filter = "pivot=loud".into();
        assert_eq!(invalid_key(&c), "log.filter");
        c.log.filter = "warn,pivot_engine=trace".into();
        c.validate().unwrap();
    }

    #[test]
    fn embedded_default_allows_loopback_and_has_the_demo_account() {
        let c = Config::embedded_default();
        c.validate().unwrap();
        let nets = c.allow_cidrs();
        for ip in ["127.0.0.1", "::1"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(nets.iter().any(|n| n.contains(&ip)), "{ip}");
        }
        let private: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(!nets.iter().any(|n| n.contains(&private)));
        let demo = c.account(DEMO_ACCOUNT_ID).unwrap();
        assert_eq!(demo.name.as_deref(), Some("Demo"));
        assert_eq!(DEMO_ACCOUNT_ID.len(), 32);
        assert!(DEMO_ACCOUNT_ID.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(c.switch.kind, SwitchKind::Sim);
        assert_eq!(c.cluster.backend, ClusterBackend::Memory);
    }

    /// The example's commented-out settings are lines starting with `#` and no space
    /// (`#advertise = ...`); prose comments start with `# `.
    fn uncomment(text: &str) -> String {
        text.lines()
            .map(|line| match line.strip_prefix('#') {
                Some(rest) if !rest.is_empty() && !rest.starts_with([' ', '#']) => rest,
                _ => line,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Dotted key paths; array elements' keys as `name[].key`.
    fn key_paths(table: &toml::Table, prefix: &str, out: &mut std::collections::BTreeSet<String>) {
        for (key, value) in table {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            match value {
                toml::Value::Table(t) => key_paths(t, &path, out),
                toml::Value::Array(items) => {
                    for item in items {
                        if let toml::Value::Table(t) = item {
                            key_paths(t, &format!("{path}[]"), out);
                        }
                    }
                }
                _ => {}
            }
            out.insert(path);
        }
    }

    #[test]
    fn example_config_loads_and_validates() {
        let c = load_text(EXAMPLE, &[]).unwrap();
        // Everything active in the example is a default, so it documents the defaults truly.
        let mut expected = Config::default();
        expected.node.id = c.node.id.clone();
        assert_eq!(c, expected);

        let uncommented = uncomment(EXAMPLE);
        let c = load_text(&uncommented, &[]).unwrap();
        assert!(c.node.advertise.is_some());
        assert!(!c.api.tokens.is_empty());
        assert!(!c.switch.freeswitch.is_empty());
        assert!(c.switch.outbound.enabled());
        assert!(!c.accounts.is_empty());
    }

    #[test]
    fn the_embedded_default_takes_environment_overrides() {
        let c = Config::load_embedded(vec![(
            "PIVOT_API__LISTEN".to_owned(),
            "127.0.0.1:0".to_owned(),
        )])
        .unwrap();
        assert_eq!(c.api.listen, "127.0.0.1:0");
        assert_eq!(c.accounts[0].id, DEMO_ACCOUNT_ID);
        assert!(Config::load_embedded(vec![("PIVOT_API__LISTN".into(), "x".into())]).is_err());
    }

    #[test]
    fn example_config_documents_every_key() {
        // Optional keys and list elements are absent from the default, so fill them in.
        let mut full = Config::default();
        full.node.advertise = Some("http://x:1".into());
        full.api.tokens.push(TokenConfig::default());
        full.switch.freeswitch.push(FreeswitchConfig {
            name: Some("fs".into()),
            ..FreeswitchConfig::default()
        });
        full.accounts.push(AccountConfig {
            name: Some("n".into()),
            signing_secret: Some("s".into()),
            fallback_url: Some("https://f.example/x".into()),
            ..AccountConfig::default()
        });
        let mut required = std::collections::BTreeSet::new();
        key_paths(&toml::Table::try_from(&full).unwrap(), "", &mut required);
        let mut from_default = std::collections::BTreeSet::new();
        key_paths(
            &toml::Table::try_from(Config::default()).unwrap(),
            "",
            &mut from_default,
        );
        assert!(from_default.is_subset(&required));
        assert!(required.contains("switch.sim.time_scale"));
        assert!(required.contains("accounts[].custom_request_headers"));

        let example: toml::Table = toml::from_str(&uncomment(EXAMPLE)).unwrap();
        let mut documented = std::collections::BTreeSet::new();
        key_paths(&example, "", &mut documented);
        let missing: Vec<&String> = required.difference(&documented).collect();
        assert!(
            missing.is_empty(),
            "undocumented in deploy/config.example.toml: {missing:?}"
        );
    }
}
