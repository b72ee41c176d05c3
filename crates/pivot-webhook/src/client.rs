//! The exchange: one pivot request sent, its response read and parsed, or one precise failure.
//!
//! One [`WebhookClient`] per process holds one reqwest client (pooled, keep-alive). Every
//! exchange runs under a single deadline, `req_timeout_ms`, that covers DNS, connect, TLS, every
//! redirect hop and the body; the body streams into a buffer bounded by `max_body_bytes`.
//! Redirects are followed here rather than by reqwest, so that each hop is re-checked by the
//! destination guard and recorded in the debug log.

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use pivot_flow::{BodyFormat, Document, HttpMethod, Limits, RequestFormat};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::encode;
use crate::failure::{Failure, FailureCause};
use crate::guard::{Blocked, DestinationGuard, DnsFailure, GuardedResolver};
use crate::params::{ParamValue, Params};
use crate::sign;

/// What every request says it is.
pub const USER_AGENT: &str = concat!("pivot/", env!("CARGO_PKG_VERSION"));

/// Settings shared by every exchange of a process.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Destinations allowed despite the guard (e.g. `127.0.0.0/8` for a local demo app).
    pub allow_cidrs: Vec<IpNet>,
    /// Largest response body read; the document limits (depth, nodes, verbs) come with it.
    pub limits: Limits,
    /// Redirect hops followed for GET.
    pub max_redirects: usize,
    /// How much of each body the debug log keeps.
    pub debug_body_bytes: usize,
    /// Idle keep-alive connections kept per host.
    pub pool_idle_per_host: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            allow_cidrs: Vec::new(),
            limits: Limits::default(),
            max_redirects: 5,
            debug_body_bytes: 64 * 1024,
            pool_idle_per_host: 32,
        }
    }
}

/// One request to a pivot app.
#[derive(Debug, Clone)]
pub struct PivotRequest {
    pub url: Url,
    pub method: HttpMethod,
    pub format: RequestFormat,
    pub body_format: BodyFormat,
    pub params: Params,
    /// The whole exchange's deadline.
    pub timeout: Duration,
    /// The account's signing secret: `X-Pivot-Signature`, and `X-Twilio-Signature` for TwiML.
    pub signing_secret: Option<String>,
    /// Extra headers (per-account and per-node `custom_request_headers`).
    pub headers: BTreeMap<String, String>,
}

impl PivotRequest {
    /// The request a Twilio-style fallback URL receives after `failure` of a request to
    /// `failed_url`: the same parameters plus `ErrorCode` and `ErrorUrl`.
    pub fn fallback(&self, fallback_url: Url, method: HttpMethod, failure: &Failure) -> Self {
        let mut params = self.params.clone();
        params.set(
            "ErrorCode",
            ParamValue::Int(i64::from(failure.cause.twilio_error_code())),
        );
        params.set("ErrorUrl", ParamValue::Text(self.url.to_string()));
        PivotRequest {
            url: fallback_url,
            method,
            params,
            ..self.clone()
        }
    }
}

/// One entry of the debug log, in the shape KAZOO's pivot debug API shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DebugRecord {
    Request {
        /// `get` or `post`, as KAZOO records it.
        method: String,
        /// With the query for GET.
        uri: String,
        /// Names lower-cased.
        req_headers: BTreeMap<String, String>,
        req_body: String,
    },
    Response {
        resp_status_code: String,
        /// Names lower-cased, as KAZOO stores them.
        resp_headers: BTreeMap<String, String>,
        /// At most `debug_body_bytes`, lossily decoded.
        resp_body: String,
    },
    Error {
        /// The failure cause label.
        error: FailureCause,
        message: String,
    },
}

/// What came of one exchange.
#[derive(Debug)]
pub struct Exchange {
    pub result: Result<Document, Failure>,
    /// Requests, responses and the failure, in order, one request/response pair per hop.
    pub records: Vec<DebugRecord>,
    /// The URL the document came from, after redirects: relative URLs in it resolve against this.
    pub final_url: Url,
    pub elapsed: Duration,
}

/// Sends pivot requests. Cheap to clone; clones share the connection pool.
#[derive(Debug, Clone)]
pub struct WebhookClient {
    http: reqwest::Client,
    guard: Arc<DestinationGuard>,
    config: Arc<ClientConfig>,
}

/// The HTTP client could not be built (TLS set-up).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client: {0}")]
pub struct BuildError(#[from] reqwest::Error);

impl WebhookClient {
    pub fn new(config: ClientConfig) -> Result<WebhookClient, BuildError> {
        // reqwest is built without a bundled crypto provider (ring compiles faster than
        // aws-lc); the process-wide default only needs installing once, so a second call's
        // "already installed" is expected and ignored.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let guard = Arc::new(DestinationGuard::new(config.allow_cidrs.clone()));
        let http = reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver {
                guard: Arc::clone(&guard),
            }))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(config.pool_idle_per_host)
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(USER_AGENT)
            .build()?;
        Ok(WebhookClient {
            http,
            guard,
            config: Arc::new(config),
        })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Sends `request`, follows redirects (GET), reads and parses the answer. Never takes more
    /// than `request.timeout` (plus scheduling jitter): the whole exchange races one deadline.
    pub async fn fetch(&self, request: &PivotRequest) -> Exchange {
        let started = Instant::now();
        let mut records = Vec::new();
        let mut final_url = request.url.clone();
        let outcome = tokio::time::timeout(
            request.timeout,
            self.exchange(request, &mut records, &mut final_url),
        )
        .await;
        let result = match outcome {
            Ok(result) => result,
            Err(_) => Err(Failure::new(
                FailureCause::Timeout,
                format!(
                    "no complete response within {} ms",
                    request.timeout.as_millis()
                ),
            )),
        };
        if let Err(failure) = &result {
            records.push(DebugRecord::Error {
                error: failure.cause,
                message: failure.message.clone(),
            });
        }
        Exchange {
            result,
            records,
            final_url,
            elapsed: started.elapsed(),
        }
    }

    async fn exchange(
        &self,
        request: &PivotRequest,
        records: &mut Vec<DebugRecord>,
        final_url: &mut Url,
    ) -> Result<Document, Failure> {
        let prepared = Prepared::new(request)?;
        let mut url = prepared.first_url.clone();
        let mut hops = 0;
        loop {
            self.check_literal_destination(&url)?;
            *final_url = strip_query_added(&url, &prepared);
            let built = prepared.build(&self.http, &url, hops == 0)?;
            records.push(DebugRecord::Request {
                method: request.method.as_str().to_ascii_lowercase(),
                uri: url.to_string(),
                req_headers: request_headers(built.headers()),
                req_body: if hops == 0 {
                    String::from_utf8_lossy(&prepared.body).into_owned()
                } else {
                    String::new()
                },
            });
            let response = self.http.execute(built).await.map_err(|e| classify(&e))?;
            let status = response.status();
            // What is needed of the headers is taken now, rather than cloning the map, because
            // reading the body needs the response mutably.
            let resp_headers = lowercase_headers(response.headers());

            if status.is_redirection() {
                let location =
                    header_str(response.headers(), reqwest::header::LOCATION).map(str::to_owned);
                records.push(response_record(status, resp_headers, Vec::new(), 0));
                url = self.next_hop(request, &url, location.as_deref(), hops, status.as_u16())?;
                hops += 1;
                continue;
            }

            let content_type =
                header_str(response.headers(), reqwest::header::CONTENT_TYPE).map(str::to_owned);
            let declared = declared_length(response.headers());
            let keep = self.config.debug_body_bytes;
            let body = match self.read_body(response, declared, status.as_u16()).await {
                Ok(body) => body,
                Err((partial, failure)) => {
                    records.push(response_record(status, resp_headers, partial, keep));
                    return Err(failure);
                }
            };
            if !status.is_success() {
                records.push(response_record(status, resp_headers, body, keep));
                return Err(Failure::new(
                    FailureCause::HttpStatus,
                    format!("{} answered HTTP {}", host_of(&url), status),
                )
                .with_status(status.as_u16()));
            }
            // Parsed before the record is made so that the body can move into the record
            // instead of being copied; parsing adds no record, so the order is unchanged.
            let parsed =
                pivot_flow::parse_response(content_type.as_deref(), &body, &self.config.limits)
                    .map_err(|e| Failure::from(e).with_status(status.as_u16()));
            records.push(response_record(status, resp_headers, body, keep));
            return parsed;
        }
    }

    /// Reqwest only resolves names through the guarded resolver; an IP literal in the URL is
    /// checked here, before any connection.
    fn check_literal_destination(&self, url: &Url) -> Result<(), Failure> {
        let ip = match url.host() {
            Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
            Some(url::Host::Domain(_)) => return Ok(()),
            None => {
                return Err(Failure::new(
                    FailureCause::Connect,
                    format!("{url} has no host"),
                ));
            }
        };
        self.guard
            .check(ip)
            .map_err(|blocked| Failure::new(FailureCause::BlockedDestination, blocked.to_string()))
    }

    fn next_hop(
        &self,
        request: &PivotRequest,
        url: &Url,
        location: Option<&str>,
        hops: usize,
        status: u16,
    ) -> Result<Url, Failure> {
        let refuse = |message: String| {
            Err(Failure::new(FailureCause::HttpStatus, message).with_status(status))
        };
        if request.method != HttpMethod::Get {
            // A redirected POST would be re-sent as GET or re-posted; neither is what the app
            // asked for, so it is the app's error to fix.
            return refuse(format!(
                "{} answered HTTP {status} to a POST; redirects are followed for GET only",
                host_of(url)
            ));
        }
        if hops >= self.config.max_redirects {
            return refuse(format!(
                "more than {} redirects (last from {})",
                self.config.max_redirects,
                host_of(url)
            ));
        }
        let Some(location) = location else {
            return refuse(format!(
                "HTTP {status} from {} without a Location",
                host_of(url)
            ));
        };
        match encode::resolve(url, location) {
            Ok(next) => Ok(next),
            Err(e) => refuse(format!("HTTP {status} to an unusable Location: {e}")),
        }
    }

    /// Streams the body into a buffer of at most `limits.max_body_bytes`. On failure, what was
    /// read so far comes back for the debug log.
    async fn read_body(
        &self,
        mut response: reqwest::Response,
        declared: Option<u64>,
        status: u16,
    ) -> Result<Vec<u8>, (Vec<u8>, Failure)> {
        let limit = self.config.limits.max_body_bytes;
        let too_large = |status: u16| {
            Failure::new(
                FailureCause::TooLarge,
                format!("the response body is over the {limit}-byte limit"),
            )
            .with_status(status)
        };
        if declared.is_some_and(|len| len > limit as u64) {
            return Err((Vec::new(), too_large(status)));
        }
        let mut body = Vec::with_capacity(declared.map_or(8 * 1024, |len| len as usize));
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > limit {
                        return Err((body, too_large(status)));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(body),
                Err(e) => {
                    let failure = classify(&e).with_status(status);
                    return Err((body, failure));
                }
            }
        }
    }

    /// POSTs the end-of-call record to `url` (form-encoded), retrying connection failures,
    /// timeouts and 5xx answers up to `attempts` times with jittered exponential backoff.
    pub async fn post_cdr(&self, url: &Url, record: &Params, policy: &RetryPolicy) -> CdrOutcome {
        let request = PivotRequest {
            url: url.clone(),
            method: HttpMethod::Post,
            format: RequestFormat::Kazoo,
            body_format: BodyFormat::Form,
            params: record.clone(),
            timeout: policy.timeout,
            signing_secret: policy.signing_secret.clone(),
            headers: BTreeMap::new(),
        };
        let mut records = Vec::new();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (status, failure) = self.post_once(&request, &mut records).await;
            let retryable = match (&failure, status) {
                (None, _) => false,
                (Some(f), _) if f.cause == FailureCause::Timeout => true,
                (Some(f), _) if f.cause == FailureCause::Connect => true,
                (Some(_), Some(code)) => code >= 500,
                (Some(_), None) => false,
            };
            if !retryable || attempt >= policy.attempts {
                return CdrOutcome {
                    delivered: failure.is_none(),
                    attempts: attempt,
                    failure,
                    records,
                };
            }
            tokio::time::sleep(policy.backoff(attempt)).await;
        }
    }

    /// One CDR POST: any 2xx delivers it; the body is not a document.
    async fn post_once(
        &self,
        request: &PivotRequest,
        records: &mut Vec<DebugRecord>,
    ) -> (Option<u16>, Option<Failure>) {
        let attempt = async {
            self.check_literal_destination(&request.url)?;
            let prepared = Prepared::new(request)?;
            let built = prepared.build(&self.http, &request.url, true)?;
            records.push(DebugRecord::Request {
                method: "post".to_owned(),
                uri: request.url.to_string(),
                req_headers: request_headers(built.headers()),
                req_body: String::from_utf8_lossy(&prepared.body).into_owned(),
            });
            let response = self.http.execute(built).await.map_err(|e| classify(&e))?;
            let status = response.status();
            let resp_headers = lowercase_headers(response.headers());
            let declared = declared_length(response.headers());
            let body = self
                .read_body(response, declared, status.as_u16())
                .await
                .map_err(|(_, failure)| failure)?;
            records.push(response_record(
                status,
                resp_headers,
                body,
                self.config.debug_body_bytes,
            ));
            if status.is_success() {
                Ok(status.as_u16())
            } else {
                Err(Failure::new(
                    FailureCause::HttpStatus,
                    format!("the CDR URL answered HTTP {status}"),
                )
                .with_status(status.as_u16()))
            }
        };
        match tokio::time::timeout(request.timeout, attempt).await {
            Ok(Ok(status)) => (Some(status), None),
            Ok(Err(failure)) => {
                records.push(DebugRecord::Error {
                    error: failure.cause,
                    message: failure.message.clone(),
                });
                (failure.status, Some(failure))
            }
            Err(_) => {
                let failure = Failure::new(
                    FailureCause::Timeout,
                    format!("no answer within {} ms", request.timeout.as_millis()),
                );
                records.push(DebugRecord::Error {
                    error: failure.cause,
                    message: failure.message.clone(),
                });
                (None, Some(failure))
            }
        }
    }
}

/// How the CDR POST retries.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_backoff: Duration,
    pub timeout: Duration,
    pub signing_secret: Option<String>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            first_backoff: Duration::from_millis(250),
            timeout: Duration::from_secs(5),
            signing_secret: None,
        }
    }
}

impl RetryPolicy {
    /// Doubles per attempt, with up to 50% jitter so a fleet of nodes does not retry in step.
    fn backoff(&self, attempt: u32) -> Duration {
        let base = self
            .first_backoff
            .saturating_mul(1 << attempt.saturating_sub(1).min(8));
        let jitter = base.mul_f64(random_unit() * 0.5);
        base + jitter
    }
}

/// A number in [0, 1) good enough for jitter, without a random-number crate: std's hasher
/// keys are random per process and per `RandomState`.
fn random_unit() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0);
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// What came of a CDR POST.
#[derive(Debug)]
pub struct CdrOutcome {
    pub delivered: bool,
    pub attempts: u32,
    pub failure: Option<Failure>,
    pub records: Vec<DebugRecord>,
}

/// A request's URL, body and headers, computed once for all hops.
struct Prepared {
    first_url: Url,
    /// The GET query pivot appended, so the URL a document came from can be given back
    /// without it (relative URLs resolve against the document URL, not our parameters).
    added_query: Option<String>,
    body: Vec<u8>,
    headers: HeaderMap,
    method: reqwest::Method,
}

impl Prepared {
    fn new(request: &PivotRequest) -> Result<Prepared, Failure> {
        if !matches!(request.url.scheme(), "http" | "https") {
            return Err(Failure::new(
                FailureCause::Connect,
                format!("{} is not an http(s) URL", request.url),
            ));
        }
        let mut headers = HeaderMap::new();
        for (name, value) in &request.headers {
            let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) else {
                return Err(Failure::new(
                    FailureCause::Connect,
                    format!("custom request header {name:?} is not a valid HTTP header"),
                ));
            };
            headers.insert(name, value);
        }
        headers.insert(
            reqwest::header::ACCEPT,
            HeaderValue::from_static(
                "application/json, text/xml, application/xml;q=0.9, */*;q=0.1",
            ),
        );
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let secret = request.signing_secret.as_deref().map(str::as_bytes);
        let twiml = request.format == RequestFormat::Twiml;

        let (url, added_query, body, method) = match request.method {
            HttpMethod::Get => {
                let query = encode::query_string(&request.params);
                let url = encode::append_query(&request.url, &query);
                if let Some(secret) = secret {
                    insert(
                        &mut headers,
                        "x-pivot-signature",
                        &sign::pivot_signature(secret, unix, query.as_bytes()),
                    );
                    if twiml {
                        let signature = sign::twilio_signature(secret, url.as_str(), &[]);
                        insert(&mut headers, "x-twilio-signature", &signature);
                    }
                }
                (url, Some(query), Vec::new(), reqwest::Method::GET)
            }
            HttpMethod::Post => {
                let (body, content_type) = match request.body_format {
                    BodyFormat::Form => (
                        encode::query_string(&request.params).into_bytes(),
                        "application/x-www-form-urlencoded",
                    ),
                    BodyFormat::Json => (encode::json_body(&request.params), "application/json"),
                };
                insert(&mut headers, "content-type", content_type);
                let mut url = request.url.clone();
                if let Some(secret) = secret {
                    insert(
                        &mut headers,
                        "x-pivot-signature",
                        &sign::pivot_signature(secret, unix, &body),
                    );
                    if twiml {
                        let signature = match request.body_format {
                            BodyFormat::Form => sign::twilio_signature(
                                secret,
                                url.as_str(),
                                &encode::pairs(&request.params),
                            ),
                            // Twilio covers JSON bodies with a bodySHA256 query parameter and
                            // signs the URL alone.
                            BodyFormat::Json => {
                                url = sign::with_body_sha256(&url, &body);
                                sign::twilio_signature(secret, url.as_str(), &[])
                            }
                        };
                        insert(&mut headers, "x-twilio-signature", &signature);
                    }
                }
                (url, None, body, reqwest::Method::POST)
            }
        };
        Ok(Prepared {
            first_url: url,
            added_query,
            body,
            headers,
            method,
        })
    }

    /// The request for one hop; redirect hops are GETs without a body.
    fn build(
        &self,
        http: &reqwest::Client,
        url: &Url,
        first_hop: bool,
    ) -> Result<reqwest::Request, Failure> {
        let mut builder = http
            .request(self.method.clone(), url.clone())
            .headers(self.headers.clone());
        if first_hop && !self.body.is_empty() {
            builder = builder.body(self.body.clone());
        }
        builder.build().map_err(|e| {
            Failure::new(
                FailureCause::Connect,
                format!("cannot build the request: {e}"),
            )
        })
    }
}

/// Header values pivot computes are ASCII (hex, base64, MIME types), so this cannot fail; a
/// failure would only drop the header.
fn insert(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), value);
    }
}

/// The document URL without the GET query pivot added.
fn strip_query_added(url: &Url, prepared: &Prepared) -> Url {
    let Some(added) = prepared.added_query.as_deref().filter(|q| !q.is_empty()) else {
        return url.clone();
    };
    let mut clean = url.clone();
    match url.query() {
        Some(q) if q == added => clean.set_query(None),
        Some(q) => {
            if let Some(original) = q.strip_suffix(added).and_then(|q| q.strip_suffix('&')) {
                clean.set_query(Some(original));
            }
        }
        None => {}
    }
    clean
}

/// The response's entry of the debug log; takes the body so that a body kept whole and valid
/// UTF-8 (the usual case) becomes the record's text without a copy.
fn response_record(
    status: reqwest::StatusCode,
    resp_headers: BTreeMap<String, String>,
    mut body: Vec<u8>,
    keep: usize,
) -> DebugRecord {
    body.truncate(keep);
    let resp_body = match String::from_utf8(body) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    };
    DebugRecord::Response {
        resp_status_code: status.as_str().to_owned(),
        resp_headers,
        resp_body,
    }
}

fn lowercase_headers(headers: &HeaderMap) -> BTreeMap<String, String> {
    headers
        .iter()
        .map(|(name, value)| {
            // `HeaderName`s are lower-case already (the http crate normalises them), so the
            // name is copied as it is.
            let value = match value.to_str() {
                Ok(text) => text.to_owned(),
                Err(_) => String::from_utf8_lossy(value.as_bytes()).into_owned(),
            };
            (name.as_str().to_owned(), value)
        })
        .collect()
}

/// A request's headers as the app receives them: reqwest adds the client's User-Agent only
/// when sending, so the record adds it here.
fn request_headers(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut recorded = lowercase_headers(headers);
    recorded
        .entry("user-agent".to_owned())
        .or_insert_with(|| USER_AGENT.to_owned());
    recorded
}

fn header_str(headers: &HeaderMap, name: HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    header_str(headers, reqwest::header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok())
}

fn host_of(url: &Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        (None, _) => url.to_string(),
    }
}

/// The failure cause of a transport error, found by walking its source chain: the guard's and
/// the resolver's own errors, rustls errors (possibly inside an `io::Error`), then reqwest's
/// own classification.
fn classify(error: &reqwest::Error) -> Failure {
    let mut cause = None;
    let mut detail = error.to_string();
    let mut source: Option<&(dyn StdError + 'static)> = error.source();
    while let Some(e) = source {
        let found = if let Some(blocked) = e.downcast_ref::<Blocked>() {
            Some((FailureCause::BlockedDestination, blocked.to_string()))
        } else if let Some(dns) = e.downcast_ref::<DnsFailure>() {
            Some((FailureCause::Dns, dns.to_string()))
        } else if is_tls(e) {
            Some((FailureCause::Tls, format!("TLS handshake failed: {e}")))
        } else {
            None
        };
        if let Some((c, d)) = found {
            cause = Some(c);
            detail = d;
            break;
        }
        source = e.source();
    }
    let cause = cause.unwrap_or(if error.is_timeout() {
        FailureCause::Timeout
    } else {
        FailureCause::Connect
    });
    if cause == FailureCause::Connect {
        // reqwest's top-level text is generic ("error sending request"); the innermost cause
        // says what happened ("Connection refused").
        if let Some(root) = root_cause(error) {
            detail = format!("{detail}: {root}");
        }
    }
    Failure::new(cause, detail)
}

fn is_tls(e: &(dyn StdError + 'static)) -> bool {
    if e.downcast_ref::<rustls::Error>().is_some() {
        return true;
    }
    // hyper-rustls wraps rustls errors in io::Errors (sometimes two deep), and an io::Error's
    // `source()` skips what it wraps, so the wrapped error is looked at directly.
    e.downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
        .is_some_and(|inner| is_tls(inner))
}

fn root_cause(error: &reqwest::Error) -> Option<String> {
    let mut source = error.source()?;
    while let Some(next) = source.source() {
        source = next;
    }
    Some(source.to_string())
}
