//! The node's HTTP API (DESIGN §8): pivot debug logs, callflows and live calls of an account in
//! KAZOO's crossbar envelope under `/v2`, plus `/metrics`, `/healthz` and `/readyz`.
//!
//! Handlers reach live calls through [`LiveCalls`] rather than the engine itself, so the API can
//! be exercised without a switch; callflows and debug logs go straight to the cluster stores.

use std::collections::HashMap;
use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use pivot_cluster::{Callflow, CallflowStore, DebugStore, StoreError};
use pivot_engine::{ChannelInfo, ControlError, Engine, Metrics};
use pivot_flow::{HttpMethod, Limits};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::sim_api::{ApiError, parse_json};

/// Request bodies: KAZOO callflows are a few KiB; the bound keeps a client from making the node
/// buffer arbitrary amounts.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// KAZOO's default page size for listings.
const DEFAULT_PAGE_SIZE: usize = 50;
const MAX_PAGE_SIZE: usize = 100;
/// Dialled numbers are E.164 or short extensions; anything longer is a mistake.
const MAX_NUMBER_CHARS: usize = 64;
const MAX_NAME_CHARS: usize = 128;
/// The same bound the KAZOO parser puts on `voice_url`.
const MAX_URL_CHARS: usize = 2048;
const AUTH_HEADER: &str = "X-Auth-Token";

/// What the API needs from the engine about live calls (implemented for [`Engine`] below).
pub trait LiveCalls: Send + Sync + 'static {
    fn channels(&self, account_id: Option<&str>) -> Vec<ChannelInfo>;
    fn channel(&self, call_id: &str) -> Option<ChannelInfo>;
    fn redirect(&self, call_id: &str, url: &str, method: HttpMethod) -> Result<(), ControlError>;
    fn hangup(&self, call_id: &str) -> Result<(), ControlError>;
    fn metrics_text(&self) -> String;
    /// Why the node does not take new calls (`None`: it does).
    fn not_ready(&self) -> Option<&'static str>;
    /// The id and advertised API address of the live node that owns `call_id`, when that is
    /// another node (owner routing). Single-node set-ups have none.
    fn owner_address<'a>(
        &'a self,
        _call_id: &'a str,
    ) -> pivot_cluster::BoxFuture<'a, Option<(String, String)>> {
        Box::pin(std::future::ready(None))
    }
}

impl LiveCalls for Engine {
    fn channels(&self, account_id: Option<&str>) -> Vec<ChannelInfo> {
        Engine::channels(self, account_id)
    }

    fn channel(&self, call_id: &str) -> Option<ChannelInfo> {
        Engine::channel(self, call_id)
    }

    fn redirect(&self, call_id: &str, url: &str, method: HttpMethod) -> Result<(), ControlError> {
        Engine::redirect(self, call_id, url, method)
    }

    fn hangup(&self, call_id: &str) -> Result<(), ControlError> {
        Engine::hangup(self, call_id)
    }

    fn metrics_text(&self) -> String {
        self.metrics().render()
    }

    fn not_ready(&self) -> Option<&'static str> {
        self.not_ready()
    }

    fn owner_address<'a>(
        &'a self,
        call_id: &'a str,
    ) -> pivot_cluster::BoxFuture<'a, Option<(String, String)>> {
        Box::pin(Engine::owner_address(self, call_id))
    }
}

/// Everything the handlers share.
pub struct ApiState {
    pub live: Arc<dyn LiveCalls>,
    pub callflows: Arc<dyn CallflowStore>,
    pub debug: Arc<dyn DebugStore>,
    pub auth: Auth,
    pub limits: Limits,
    /// For `pivot_api_requests_total{route,status}`.
    pub metrics: Metrics,
    /// Set on SIGTERM: `/readyz` answers 503 so load balancers stop sending work.
    pub draining: Arc<AtomicBool>,
    /// Forwards live-call requests to the node that owns the call (owner routing); `None`
    /// in single-node set-ups.
    pub forwarder: Option<reqwest::Client>,
}

/// Marks a request forwarded by a peer, so it is never forwarded again (no loops).
const FORWARDED_HEADER: &str = "x-pivot-forwarded-by";

/// Sends a live-call request on to the node that owns the call, and its answer back as is.
/// `None` when this node should answer itself (no other owner, or already forwarded once).
async fn forward_to_owner(
    req: &HttpRequest,
    state: &ApiState,
    call_id: &str,
    body: Option<&[u8]>,
) -> Option<HttpResponse> {
    let client = state.forwarder.as_ref()?;
    if req.headers().contains_key(FORWARDED_HEADER) {
        return None;
    }
    let (node, address) = state.live.owner_address(call_id).await?;
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.path().to_owned(), |p| p.as_str().to_owned());
    let url = format!("{}{path}", address.trim_end_matches('/'));
    // actix-web and reqwest use different versions of the `http` crate: the method crosses
    // as its name.
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes()).ok()?;
    let mut forwarded = client
        .request(method, &url)
        .header(FORWARDED_HEADER, node.as_str());
    for name in ["x-auth-token", "content-type"] {
        if let Some(value) = req.headers().get(name) {
            forwarded = forwarded.header(name, value.as_bytes());
        }
    }
    if let Some(body) = body {
        forwarded = forwarded.body(body.to_vec());
    }
    let answer = match forwarded.send().await {
        Ok(answer) => answer,
        Err(error) => {
            tracing::warn!(%call_id, %node, %error, "owner routing failed");
            return Some(
                V2Error::new(
                    StatusCode::BAD_GATEWAY,
                    "owner_unreachable",
                    format!("call {call_id} is owned by node {node}, which did not answer"),
                )
                .error_response(),
            );
        }
    };
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = answer
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_owned();
    let bytes = answer.bytes().await.unwrap_or_default();
    Some(
        HttpResponse::build(status)
            .content_type(content_type)
            .body(bytes),
    )
}

/// Who may call the v2 API.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    /// May act on any account. `None` or empty: no admin token.
    pub admin_token: Option<String>,
    /// Token → the one account it may act on.
    pub tokens: HashMap<String, String>,
}

impl Auth {
    /// No tokens configured at all: every request is admin. The binary then binds loopback only.
    pub fn open(&self) -> bool {
        self.admin().is_empty() && self.tokens.is_empty()
    }

    fn admin(&self) -> &str {
        self.admin_token.as_deref().unwrap_or_default()
    }

    fn caller(&self, token: &str, account_id: &str) -> Result<Caller, V2Error> {
        if self.open() {
            return Ok(Caller::Admin);
        }
        let admin = self.admin();
        if !admin.is_empty() && constant_time_eq(token.as_bytes(), admin.as_bytes()) {
            return Ok(Caller::Admin);
        }
        match self.tokens.get(token) {
            Some(own) if !token.is_empty() && own == account_id => Ok(Caller::Account),
            // Exactly what a non-existent account looks like: an account never learns whether
            // another one exists.
            Some(_) if !token.is_empty() => Err(V2Error::account_not_found(account_id)),
            _ => Err(V2Error::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                format!("a valid {AUTH_HEADER} header is required"),
            )),
        }
    }
}

/// Token comparison whose time does not depend on where the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i).copied().unwrap_or(!x));
    }
    diff == 0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Admin,
    /// The token's account, which is the one in the path.
    Account,
}

/// An authorized request: who, and the token to echo in the envelope.
struct Authorized {
    caller: Caller,
    token: String,
}

fn authorize(req: &HttpRequest, auth: &Auth, account_id: &str) -> Result<Authorized, V2Error> {
    let token = req
        .headers()
        .get(AUTH_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let caller = auth.caller(&token, account_id)?;
    Ok(Authorized { caller, token })
}

/// Mounts the API. Call inside `HttpServer::new`'s factory:
/// `App::new().configure(api::configure(state.clone()))`.
pub fn configure(state: web::Data<ApiState>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg: &mut web::ServiceConfig| {
        let count = CountRequests {
            metrics: state.metrics.clone(),
        };
        cfg.app_data(state)
            .service(
                web::scope("/v2")
                    // Scoped, not app-wide, so other services on the same app keep their own.
                    .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
                    .wrap(count.clone())
                    .service(
                        resource("/accounts/{account_id}/pivot/debug")
                            .route(web::get().to(list_debug)),
                    )
                    .service(
                        resource("/accounts/{account_id}/pivot/debug/{call_id}")
                            .route(web::get().to(debug_entries)),
                    )
                    .service(
                        resource("/accounts/{account_id}/callflows")
                            .route(web::get().to(list_callflows))
                            .route(web::put().to(create_callflow))
                            .route(web::post().to(create_callflow)),
                    )
                    .service(
                        resource("/accounts/{account_id}/callflows/{id}")
                            .route(web::get().to(get_callflow))
                            .route(web::post().to(update_callflow))
                            .route(web::delete().to(delete_callflow)),
                    )
                    .service(
                        resource("/accounts/{account_id}/channels")
                            .route(web::get().to(list_channels)),
                    )
                    .service(
                        resource("/accounts/{account_id}/channels/{call_id}")
                            .route(web::get().to(get_channel))
                            .route(web::post().to(control_channel)),
                    )
                    .default_service(web::to(unknown_route)),
            )
            .service(
                web::resource("/metrics")
                    .wrap(count.clone())
                    .route(web::get().to(metrics)),
            )
            .service(
                web::resource("/healthz")
                    .wrap(count.clone())
                    .route(web::get().to(healthz)),
            )
            .service(
                web::resource("/readyz")
                    .wrap(count)
                    .route(web::get().to(readyz)),
            );
    }
}

/// A v2 resource whose wrong methods answer in the envelope rather than actix's bare 405.
fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

// --- Envelope ------------------------------------------------------------------------------------

/// An error in the crossbar envelope, with `data` for details (the sim API's [`ApiError`] always
/// sends an empty one).
#[derive(Debug)]
pub struct V2Error {
    status: StatusCode,
    code: &'static str,
    message: String,
    data: Value,
}

impl V2Error {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> V2Error {
        V2Error {
            status,
            code,
            message: message.into(),
            data: json!({}),
        }
    }

    fn with_data(mut self, data: Value) -> V2Error {
        self.data = data;
        self
    }

    /// A 400 naming the offending field; `data.errors` lists every problem as `path: message`.
    fn invalid(code: &'static str, errors: Vec<String>) -> V2Error {
        let message = errors
            .first()
            .cloned()
            .unwrap_or_else(|| "invalid request".to_owned());
        V2Error::new(StatusCode::BAD_REQUEST, code, message).with_data(json!({ "errors": errors }))
    }

    fn field(field: &str, message: impl std::fmt::Display) -> V2Error {
        V2Error::invalid("invalid_request", vec![format!("{field}: {message}")])
    }

    fn account_not_found(account_id: &str) -> V2Error {
        V2Error::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("account {account_id} not found"),
        )
    }

    fn not_found(what: &str, id: &str) -> V2Error {
        V2Error::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} {id} not found"),
        )
    }
}

impl From<ApiError> for V2Error {
    fn from(error: ApiError) -> V2Error {
        V2Error::new(error.status, error.code, error.message)
    }
}

impl std::fmt::Display for V2Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl ResponseError for V2Error {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status).json(json!({
            "status": "error",
            "error": self.code,
            "message": self.message,
            "data": self.data,
            "request_id": pivot_cluster::new_id(),
        }))
    }
}

type Reply = Result<HttpResponse, V2Error>;

/// A success in the crossbar envelope.
struct Success {
    status: StatusCode,
    data: Value,
    revision: String,
    next_start_key: Option<String>,
}

impl Success {
    fn new(status: StatusCode, data: Value) -> Success {
        let revision = revision_of(&data);
        Success {
            status,
            data,
            revision,
            next_start_key: None,
        }
    }

    fn ok(data: Value) -> Success {
        Success::new(StatusCode::OK, data)
    }

    fn send(self, who: &Authorized) -> Reply {
        let mut body = json!({
            "data": self.data,
            "status": "success",
            "request_id": pivot_cluster::new_id(),
            "revision": self.revision,
            "auth_token": who.token,
        });
        if let (Some(key), Value::Object(fields)) = (self.next_start_key, &mut body) {
            fields.insert("next_start_key".to_owned(), Value::String(key));
        }
        Ok(HttpResponse::build(self.status).json(body))
    }
}

/// FNV-1a of the JSON text: the same on every node and build, so a revision a client saw on one
/// node still compares equal on another.
fn revision_of(data: &Value) -> String {
    let text = data.to_string();
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// A body as the `Bytes` extractor saw it; its errors (size, broken stream) in the envelope.
fn body_bytes(body: Result<web::Bytes, actix_web::Error>) -> Result<web::Bytes, V2Error> {
    body.map_err(|error| {
        let status = error.as_response_error().status_code();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            V2Error::new(
                status,
                "too_large",
                format!("the request body is over the limit of {MAX_BODY_BYTES} bytes"),
            )
        } else {
            V2Error::new(status, "invalid_body", error.to_string())
        }
    })
}

#[derive(Deserialize)]
struct Wrapped<T> {
    data: T,
}

/// Reads a v2 body, KAZOO's `{"data": {...}}` or the bare object. Returns the path prefix of
/// its fields (`"data."` or `""`) so errors name them as the client wrote them.
fn read_body<T: DeserializeOwned>(body: &[u8]) -> Result<(T, &'static str), V2Error> {
    let value: Value = parse_json(body)?;
    if value.get("data").is_some() {
        let wrapped: Wrapped<T> = parse_json(body)?;
        Ok((wrapped.data, "data."))
    } else {
        Ok((parse_json(body)?, ""))
    }
}

// --- Metrics middleware --------------------------------------------------------------------------

/// Counts `pivot_api_requests_total{route,status}`. Labels are the route pattern and the status
/// class, never raw paths: the series stay a closed set whatever clients send.
#[derive(Clone)]
struct CountRequests {
    metrics: Metrics,
}

impl<S, B> Transform<S, ServiceRequest> for CountRequests
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Transform = CountRequestsService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(CountRequestsService {
            service,
            metrics: self.metrics.clone(),
        }))
    }
}

struct CountRequestsService<S> {
    service: S,
    metrics: Metrics,
}

type CountFuture<B> = Pin<Box<dyn Future<Output = Result<ServiceResponse<B>, actix_web::Error>>>>;

impl<S, B> Service<ServiceRequest> for CountRequestsService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Future = CountFuture<B>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let route = req
            .match_pattern()
            .unwrap_or_else(|| "unmatched".to_owned());
        let counter = self.metrics.api_requests.clone();
        let response = self.service.call(req);
        Box::pin(async move {
            let result = response.await;
            let status = match &result {
                Ok(response) => response.status(),
                Err(error) => error.as_response_error().status_code(),
            };
            counter
                .with_label_values(&[route.as_str(), status_class(status)])
                .inc();
            result
        })
    }
}

fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

// --- Probes and metrics --------------------------------------------------------------------------

async fn metrics(state: web::Data<ApiState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.live.metrics_text())
}

/// The process answers: nothing else is checked, so a switch or Redis outage never gets a live
/// node restarted.
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

async fn readyz(state: web::Data<ApiState>) -> HttpResponse {
    let reason = if state.draining.load(Ordering::Acquire) {
        Some("draining")
    } else {
        state.live.not_ready()
    };
    match reason {
        None => HttpResponse::Ok().json(json!({ "status": "ready" })),
        Some(reason) => HttpResponse::ServiceUnavailable()
            .json(json!({ "status": "not_ready", "reason": reason })),
    }
}

async fn unknown_route(req: HttpRequest) -> Reply {
    Err(V2Error::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route {} {}", req.method(), req.path()),
    ))
}

async fn method_not_allowed(req: HttpRequest) -> Reply {
    Err(V2Error::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not allowed on {}", req.method(), req.path()),
    ))
}

// --- Store errors --------------------------------------------------------------------------------

/// `prefix` is where the callflow's fields sit in the request body (`"data."` or `""`).
fn store_error(error: StoreError, prefix: &str, caller: Caller, account_id: &str) -> V2Error {
    match error {
        StoreError::NumberTaken {
            number,
            account_id: owner,
        } => {
            let field = format!("{prefix}numbers");
            let message = if owner == account_id {
                format!(
                    "{field}: number {number} is already used by another callflow of this account"
                )
            } else {
                format!("{field}: number {number} is already in use")
            };
            let mut data = json!({ "errors": [message], "number": number });
            // Only an admin may learn which account holds it.
            if caller == Caller::Admin
                && let Value::Object(fields) = &mut data
            {
                fields.insert("account_id".to_owned(), Value::String(owner));
            }
            V2Error::new(StatusCode::CONFLICT, "number_taken", message).with_data(data)
        }
        StoreError::NotFound { what, id } => V2Error::not_found(what, &id),
        StoreError::InvalidPattern {
            index,
            pattern,
            reason,
        } => V2Error::invalid(
            "invalid_callflow",
            vec![format!(
                "{prefix}patterns[{index}]: {pattern:?} is not a valid pattern: {reason}"
            )],
        ),
        StoreError::InvalidStartKey { key } => V2Error::field(
            "start_key",
            format!("{key:?} is not a key this API handed out"),
        ),
        StoreError::Full { what, limit } if what.contains(" per ") => V2Error::field(
            &format!("{prefix}{}", what.split(' ').next().unwrap_or(what)),
            format!("at most {limit} {what}"),
        ),
        StoreError::Full { what, limit } => V2Error::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "limit_reached",
            format!("{what}: the limit of {limit} is reached"),
        ),
        error @ StoreError::TooLarge {
            what: "callflow", ..
        } => V2Error::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            error.to_string(),
        ),
        StoreError::TooLarge { what, size, limit } => {
            V2Error::field(what, format!("{size} bytes, the limit is {limit}"))
        }
        StoreError::Unavailable(reason) => {
            tracing::warn!(%reason, "store unavailable");
            V2Error::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the store is unavailable; try again",
            )
        }
    }
}

// --- Debug logs ----------------------------------------------------------------------------------

#[derive(Deserialize)]
struct Paging {
    page_size: Option<String>,
    start_key: Option<String>,
}

async fn list_debug(
    req: HttpRequest,
    state: web::Data<ApiState>,
    path: web::Path<String>,
) -> Reply {
    let account_id = path.into_inner();
    let who = authorize(&req, &state.auth, &account_id)?;
    let paging = web::Query::<Paging>::from_query(req.query_string())
        .map_err(|e| V2Error::field("query", e))?
        .into_inner();
    let page_size = match paging.page_size.as_deref() {
        None => DEFAULT_PAGE_SIZE,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PAGE_SIZE).contains(n))
            .ok_or_else(|| {
                V2Error::field(
                    "page_size",
                    format!("must be an integer from 1 to {MAX_PAGE_SIZE}, got {text:?}"),
                )
            })?,
    };
    let start_key = paging.start_key.filter(|key| !key.is_empty());
    let page = state
        .debug
        .list(&account_id, page_size, start_key.as_deref())
        .await
        .map_err(|e| store_error(e, "", who.caller, &account_id))?;
    let data: Vec<Value> = page
        .summaries
        .iter()
        .map(|s| {
            json!({
                "call_id": s.call_id,
                "created": s.created_unix_ms / 1000,
                "uri": s.uri,
                "status_code": s.status_code,
                "node": s.node,
                "iteration": s.iteration,
                "has_errors": s.has_errors,
            })
        })
        .collect();
    let mut success = Success::ok(Value::Array(data));
    success.next_start_key = page.next_start_key;
    success.send(&who)
}

async fn debug_entries(
    req: HttpRequest,
    state: web::Data<ApiState>,
    path: web::Path<(String, String)>,
) -> Reply {
    let (account_id, call_id) = path.into_inner();
    let who = authorize(&req, &state.auth, &account_id)?;
    let entries = state
        .debug
        .entries(&account_id, &call_id)
        .await
        .map_err(|e| store_error(e, "", who.caller, &account_id))?
        .ok_or_else(|| V2Error::not_found("debug log of call", &call_id))?;
    let records: Vec<Value> = entries
        .into_iter()
        .map(|entry| {
            let mut record = entry.record;
            // The engine's records carry these already; a bounded (`too_large`) one may not.
            if let Value::Object(fields) = &mut record {
                fields
                    .entry("call_id")
                    .or_insert_with(|| Value::String(entry.call_id.clone()));
                fields
                    .entry("id")
                    .or_insert_with(|| Value::String(entry.id.clone()));
                fields
                    .entry("iteration")
                    .or_insert_with(|| Value::from(entry.iteration));
            }
            record
        })
        .collect();
    Success::ok(Value::Array(records)).send(&who)
}

// --- Callflows -----------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct CallflowBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    numbers: Vec<String>,
    #[serde(default)]
    patterns: Vec<String>,
    /// Missing is left to the flow parser, which names `data.flow`.
    #[serde(default)]
    flow: Value,
}

/// A callflow that passed validation, with the parser's warnings.
struct Validated {
    callflow: Callflow,
    warnings: Vec<String>,
    prefix: &'static str,
}

fn validate_callflow(
    body: &[u8],
    limits: &Limits,
    account_id: &str,
    id: &str,
) -> Result<Validated, V2Error> {
    let (body, prefix) = read_body::<CallflowBody>(body)?;
    let mut errors = Vec::new();
    if let Some(name) = &body.name
        && name.chars().count() > MAX_NAME_CHARS
    {
        errors.push(format!(
            "{prefix}name: must be at most {MAX_NAME_CHARS} characters"
        ));
    }
    if body.numbers.is_empty() && body.patterns.is_empty() {
        errors.push(format!(
            "{prefix}numbers: at least one number or pattern is required"
        ));
    }
    for (i, number) in body.numbers.iter().enumerate() {
        let chars = number.chars().count();
        if chars == 0 || chars > MAX_NUMBER_CHARS {
            errors.push(format!(
                "{prefix}numbers[{i}]: must be 1 to {MAX_NUMBER_CHARS} characters, got {chars}"
            ));
        }
    }
    for (i, pattern) in body.patterns.iter().enumerate() {
        // An empty regex matches every number: certainly not what was meant.
        if pattern.is_empty() {
            errors.push(format!("{prefix}patterns[{i}]: must not be empty"));
        }
    }
    let warnings = match pivot_flow::parse_kazoo_value(&body.flow, &format!("{prefix}flow"), limits)
    {
        Ok(document) => document.warnings.iter().map(diagnostic).collect(),
        Err(error) => {
            errors.extend(error.errors().map(diagnostic));
            Vec::new()
        }
    };
    if !errors.is_empty() {
        return Err(V2Error::invalid("invalid_callflow", errors));
    }
    Ok(Validated {
        callflow: Callflow {
            id: id.to_owned(),
            account_id: account_id.to_owned(),
            name: body.name,
            numbers: body.numbers,
            patterns: body.patterns,
            flow: body.flow,
        },
        warnings,
        prefix,
    })
}

fn diagnostic(d: &pivot_flow::Diagnostic) -> String {
    format!("{}: {}", d.location, d.message)
}

fn callflow_summary(c: &Callflow) -> Value {
    json!({ "id": c.id, "name": c.name, "numbers": c.numbers, "patterns": c.patterns })
}

fn callflow_view(c: &Callflow) -> Value {
    json!({ "id": c.id, "name": c.name, "numbers": c.numbers, "patterns": c.patterns, "flow": c.flow })
}

/// The stored callflow plus the parser's warnings; the revision is the callflow's alone, so it
/// matches what a later GET answers.
fn written(status: StatusCode, stored: &Callflow, warnings: Vec<String>) -> Success {
    let view = callflow_view(stored);
    let revision = revision_of(&view);
    let mut data = view;
    if let Value::Object(fields) = &mut data {
        fields.insert("warnings".to_owned(), json!(warnings));
    }
    let mut success = Success::new(status, data);
    success.revision = revision;
    success
}

async fn list_callflows(
    req: HttpRequest,
    state: web::Data<ApiState>,
    path: web::Path<String>,
) -> Reply {
    let account_id = path.into_inner();
    let who = authorize(&req, &state.auth, &account_id)?;
    let callflows = state
        .callflows
        .list(&account_id)
        .await
        .map_err(|e| store_error(e, "", who.caller, &account_id))?;
    Success::ok(Value::Array(
        callflows.iter().map(callflow_summary).collect(),
    ))
    .send(&who)
}

async fn get_callflow(
    req: HttpRequest,
    state: web::Data<ApiState>,
    path: web::Path<(String, String)>,
) -> Reply {
    let (account_id, id) = path.into_inner();
    let who = authorize(&req, &state.auth, &account_id)?;
    let callflow = state
        .callflows
        .get(&account_id, &id)
        .await
        .map_err(|e| store_error(e, "", who.caller, &account_id))?
        .ok_or_else(|| V2Error::not_found("callflow", &id))?;
    Success::ok(callflow_view(&callflow)).send(&who)
}

async fn create_callflow(
    req: HttpRequest,
    state: web::Data<ApiState>,
    path: web::Path<String>,
    body: Result<web::Bytes, actix_web::Error>,
) -> Reply {
    let account_id = path.into_inner();
    let who = authorize(&req, &state.auth, &account_id)?;
    let body = body_bytes(body)?;
    let valid = validate_callflow(&body, &state.limits, &account_id, "")?;
    let stored = state
        .callflows
        .put(valid.callflow)
        .await
        .map_err(|e| store_error(e, valid.prefix, who.caller, &account_id))?;
    written(StatusCode::CREATED, &stored, valid.warnings).send(&who)
}

async fn update_callflow(
    req: HttpRequest,
    state: web::Data<ApiState>,
    path: web::Path<(String, String)>,
    body: Result<web::Bytes, actix_web::Error>,
) -> Reply {
    let (account_id, id) = path.into_inner();
    let who = authorize(&req, &state.auth, &account_id)?;
    let body = body_bytes(body)?;
    let valid = validate_callflow(&body, &state.limits, &account_id, &id)?;
    // `put` upserts; an update must not create a callflow under an id the client made up.
    let exists = state
        .callflows
        .get(&account_id, &id)
        .await
        .map_err(|e| store_error(e, valid.prefix, who.caller, &account_id))?
        .is_some();
    if !exists {
        return Err(V2Error::not_found("callflow", &id));
    }
    let stored = state
        .callflows
        .put(valid.callflow)
        .await
        .map_err(|e| store_error(e, valid.prefix, who.caller, &account_id))?;
    written(StatusCode::OK, &stored, valid.warnings).send(&who)
}

async fn delete_callflow(
    req: HttpRequest,
    state: web::Data<ApiState>,
    path: web::Path<(String, String)>,
) -> Reply {
    let (account_id, id) = path.into_inner();
    let who = authorize(&req, &state.auth, &account_id)?;
    let deleted = state
        .callflows
        .delete(&account_id, &id)
        .await
        .map_err(|e| store_error(e, "", who.caller, &account_id))?;
    if !deleted {
        return Err(V2Error::not_found("callflow", &id));
    }
    Success::ok(json!({ "id": id })).send(&who)
}

// --- Channels ------------------------------------------------------------------------------------

/// The call, if it is one of the account's: another account's call is as unknown as a missing
/// one.
fn own_channel(
    live: &dyn LiveCalls,
    account_id: &str,
    call_id: &str,
) -> Result<ChannelInfo, V2Error> {
    live.channel(call_id)
        .filter(|c| c.account_id == account_id)
        .ok_or_else(|| V2Error::not_found("channel", call_id))
}

fn channel_json(info: &ChannelInfo) -> Result<Value, V2Error> {
    serde_json::to_value(info).map_err(|e| {
        V2Error::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("cannot encode channel: {e}"),
        )
    })
}

async fn list_channels(
    req: HttpRequest,
    state: web::Data<ApiState>,
    path: web::Path<String>,
) -> Reply {
    let account_id = path.into_inner();
    let who = authorize(&req, &state.auth, &account_id)?;
    let channels = state
        .live
        .channels(Some(&account_id))
        .iter()
        .map(channel_json)
        .collect::<Result<Vec<_>, _>>()?;
    Success::ok(Value::Array(channels)).send(&who)
}

async fn get_channel(
    req: HttpRequest,
    state: web::Data<ApiState>,
    path: web::Path<(String, String)>,
) -> Reply {
    let (account_id, call_id) = path.into_inner();
    let who = authorize(&req, &state.auth, &account_id)?;
    let info = match own_channel(state.live.as_ref(), &account_id, &call_id) {
        Ok(info) => info,
        Err(not_here) => {
            return match forward_to_owner(&req, &state, &call_id, None).await {
                Some(answer) => Ok(answer),
                None => Err(not_here),
            };
        }
    };
    Success::ok(channel_json(&info)?).send(&who)
}

#[derive(Debug, Deserialize)]
struct ChannelAction {
    /// Optional so that a missing one is named like a wrong one.
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    method: Option<String>,
}

enum Action {
    Redirect { url: String, method: HttpMethod },
    Hangup,
}

fn parse_action(body: &[u8]) -> Result<Action, V2Error> {
    let (body, prefix) = read_body::<ChannelAction>(body)?;
    match body.action.as_deref() {
        Some("hangup") => Ok(Action::Hangup),
        Some("redirect") => {
            let url = body.url.unwrap_or_default();
            check_redirect_url(&url).map_err(|m| V2Error::field(&format!("{prefix}url"), m))?;
            let method = match body.method.as_deref() {
                // Pivot's own default for `voice_url`.
                None => HttpMethod::Get,
                Some(text) => HttpMethod::parse(text).ok_or_else(|| {
                    V2Error::field(
                        &format!("{prefix}method"),
                        format!("must be \"get\" or \"post\", got {text:?}"),
                    )
                })?,
            };
            Ok(Action::Redirect { url, method })
        }
        Some(other) => Err(V2Error::field(
            &format!("{prefix}action"),
            format!("must be \"redirect\" or \"hangup\", got {other:?}"),
        )),
        None => Err(V2Error::field(
            &format!("{prefix}action"),
            "required: \"redirect\" or \"hangup\"",
        )),
    }
}

fn check_redirect_url(url: &str) -> Result<(), String> {
    if url.is_empty() {
        return Err("required for a redirect".to_owned());
    }
    let chars = url.chars().count();
    if chars > MAX_URL_CHARS {
        return Err(format!(
            "must be at most {MAX_URL_CHARS} characters, got {chars}"
        ));
    }
    // `Url::parse` would quietly strip these; the engine would then fetch another URL than the
    // client wrote.
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces or control characters".to_owned());
    }
    match url::Url::parse(url) {
        Ok(parsed)
            if matches!(parsed.scheme(), "http" | "https")
                && parsed.host_str().is_some_and(|h| !h.is_empty()) =>
        {
            Ok(())
        }
        _ => Err(format!("must be an http(s) URL, got {url:?}")),
    }
}

async fn control_channel(
    req: HttpRequest,
    state: web::Data<ApiState>,
    path: web::Path<(String, String)>,
    body: Result<web::Bytes, actix_web::Error>,
) -> Reply {
    let (account_id, call_id) = path.into_inner();
    let who = authorize(&req, &state.auth, &account_id)?;
    let body = body_bytes(body)?;
    let action = parse_action(&body)?;
    if let Err(not_here) = own_channel(state.live.as_ref(), &account_id, &call_id) {
        return match forward_to_owner(&req, &state, &call_id, Some(&body)).await {
            Some(answer) => Ok(answer),
            None => Err(not_here),
        };
    }
    let (name, result) = match &action {
        Action::Redirect { url, method } => {
            ("redirect", state.live.redirect(&call_id, url, *method))
        }
        Action::Hangup => ("hangup", state.live.hangup(&call_id)),
    };
    result.map_err(|error| match error {
        ControlError::NotFound(_) => V2Error::not_found("channel", &call_id),
        ControlError::Busy(_) => V2Error::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            format!("call {call_id} is busy; try again"),
        ),
    })?;
    Success::new(
        StatusCode::ACCEPTED,
        json!({ "call_id": call_id, "action": name }),
    )
    .send(&who)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Mutex;

    use actix_web::{App, test};
    use pivot_cluster::{DebugEntry, DebugLimits, MemoryCallflows, MemoryDebugStore};

    use super::*;

    const ADMIN: &str = "admin-token";
    const TOKEN_A: &str = "token-a";
    const TOKEN_B: &str = "token-b";
    const ACCOUNT_A: &str = "acct-a";
    const ACCOUNT_B: &str = "acct-b";

    /// Live calls without a switch: a fixed set of channels; control requests are recorded.
    struct FakeLive {
        channels: Vec<ChannelInfo>,
        actions: Mutex<Vec<String>>,
        failing: Mutex<HashMap<String, ControlError>>,
        ready: AtomicBool,
        metrics: Metrics,
    }

    impl LiveCalls for FakeLive {
        fn channels(&self, account_id: Option<&str>) -> Vec<ChannelInfo> {
            self.channels
                .iter()
                .filter(|c| account_id.is_none_or(|a| c.account_id == a))
                .cloned()
                .collect()
        }

        fn channel(&self, call_id: &str) -> Option<ChannelInfo> {
            self.channels.iter().find(|c| c.call_id == call_id).cloned()
        }

        fn redirect(
            &self,
            call_id: &str,
            url: &str,
            method: HttpMethod,
        ) -> Result<(), ControlError> {
            self.control(
                format!("redirect {call_id} {} {url}", method.as_str()),
                call_id,
            )
        }

        fn hangup(&self, call_id: &str) -> Result<(), ControlError> {
            self.control(format!("hangup {call_id}"), call_id)
        }

        fn metrics_text(&self) -> String {
            self.metrics.render()
        }

        fn not_ready(&self) -> Option<&'static str> {
            (!self.ready.load(Ordering::Acquire)).then_some("no switch connected")
        }
    }

    impl FakeLive {
        fn control(&self, action: String, call_id: &str) -> Result<(), ControlError> {
            if let Some(error) = self.failing.lock().unwrap().get(call_id) {
                return Err(error.clone());
            }
            self.actions.lock().unwrap().push(action);
            Ok(())
        }
    }

    fn channel(call_id: &str, account_id: &str) -> ChannelInfo {
        ChannelInfo {
            call_id: call_id.to_owned(),
            account_id: account_id.to_owned(),
            node: "node-1".to_owned(),
            switch: "fs1".to_owned(),
            from: "1000".to_owned(),
            to: "3004".to_owned(),
            caller_id_name: "Alice".to_owned(),
            caller_id_number: "1000".to_owned(),
            state: "play".to_owned(),
            started_unix_ms: 1_700_000_000_000,
        }
    }

    struct Fixture {
        state: web::Data<ApiState>,
        live: Arc<FakeLive>,
        debug: Arc<MemoryDebugStore>,
    }

    fn fixture_with(auth: Auth) -> Fixture {
        let metrics = Metrics::new().unwrap();
        let live = Arc::new(FakeLive {
            channels: vec![
                channel("call-a1", ACCOUNT_A),
                channel("call-a2@10.0.0.1", ACCOUNT_A),
                channel("call-b1", ACCOUNT_B),
            ],
            actions: Mutex::new(Vec::new()),
            failing: Mutex::new(HashMap::new()),
            ready: AtomicBool::new(true),
            metrics: metrics.clone(),
        });
        let debug = Arc::new(MemoryDebugStore::new(DebugLimits::default()));
        let state = web::Data::new(ApiState {
            live: live.clone(),
            callflows: Arc::new(MemoryCallflows::new(100)),
            debug: debug.clone(),
            auth,
            limits: Limits::default(),
            metrics,
            draining: Arc::new(AtomicBool::new(false)),
            forwarder: None,
        });
        Fixture { state, live, debug }
    }

    fn fixture() -> Fixture {
        fixture_with(Auth {
            admin_token: Some(ADMIN.to_owned()),
            tokens: HashMap::from([
                (TOKEN_A.to_owned(), ACCOUNT_A.to_owned()),
                (TOKEN_B.to_owned(), ACCOUNT_B.to_owned()),
            ]),
        })
    }

    macro_rules! app {
        ($fixture:expr) => {
            test::init_service(App::new().configure(configure($fixture.state.clone()))).await
        };
    }

    /// Sends a request and returns the status and the JSON body.
    macro_rules! send {
        ($app:expr, $req:expr) => {{
            let response = test::call_service(&$app, $req.to_request()).await;
            let status = response.status();
            let body = test::read_body(response).await;
            let json: Value = serde_json::from_slice(&body)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&body)));
            (status, json)
        }};
    }

    fn get(uri: &str, token: &str) -> test::TestRequest {
        test::TestRequest::get()
            .uri(uri)
            .insert_header((AUTH_HEADER, token))
    }

    fn with_body(method: &str, uri: &str, token: &str, body: &Value) -> test::TestRequest {
        let request = match method {
            "PUT" => test::TestRequest::put(),
            "POST" => test::TestRequest::post(),
            other => panic!("{other}"),
        };
        request
            .uri(uri)
            .insert_header((AUTH_HEADER, token))
            .insert_header(("content-type", "application/json"))
            .set_payload(body.to_string())
    }

    fn pivot_flow() -> Value {
        json!({"module": "pivot", "data": {"voice_url": "https://app.example.com/start"}})
    }

    fn assert_success(body: &Value, token: &str) {
        assert_eq!(body["status"], "success", "{body}");
        let request_id = body["request_id"].as_str().unwrap();
        assert_eq!(request_id.len(), 32);
        assert!(request_id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(!body["revision"].as_str().unwrap().is_empty());
        assert_eq!(body["auth_token"], token);
    }

    fn errors(body: &Value) -> Vec<String> {
        body["data"]["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("no data.errors in {body}"))
            .iter()
            .map(|e| e.as_str().unwrap().to_owned())
            .collect()
    }

    // --- Probes and metrics ----------------------------------------------------------------

    #[actix_web::test]
    async fn healthz_is_always_ok() {
        let f = fixture();
        f.live.ready.store(false, Ordering::Release);
        f.state.draining.store(true, Ordering::Release);
        let app = app!(f);
        let (status, body) = send!(app, test::TestRequest::get().uri("/healthz"));
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, json!({"status": "ok"}));
    }

    #[actix_web::test]
    async fn readyz_follows_the_engine_and_the_drain() {
        let f = fixture();
        let app = app!(f);
        let (status, body) = send!(app, test::TestRequest::get().uri("/readyz"));
        assert_eq!(status, StatusCode::OK, "{body}");

        f.live.ready.store(false, Ordering::Release);
        let (status, body) = send!(app, test::TestRequest::get().uri("/readyz"));
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["reason"], "no switch connected");

        f.live.ready.store(true, Ordering::Release);
        f.state.draining.store(true, Ordering::Release);
        let (status, body) = send!(app, test::TestRequest::get().uri("/readyz"));
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["reason"], "draining");
    }

    #[actix_web::test]
    async fn metrics_count_requests_by_route_pattern_and_status_class() {
        let f = fixture();
        let app = app!(f);
        send!(app, get("/v2/accounts/acct-a/callflows", TOKEN_A));
        send!(app, get("/v2/accounts/acct-a/callflows", "wrong"));
        send!(app, get("/v2/nothing/here", ADMIN));
        let response =
            test::call_service(&app, test::TestRequest::get().uri("/metrics").to_request()).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers().get("content-type").unwrap(),
            "text/plain; version=0.0.4"
        );
        let text = String::from_utf8(test::read_body(response).await.to_vec()).unwrap();
        assert!(text.contains("pivot_api_requests_total"), "{text}");
        let line = |route: &str, status: &str| {
            format!("pivot_api_requests_total{{route=\"{route}\",status=\"{status}\"}} 1")
        };
        assert!(
            text.contains(&line("/v2/accounts/{account_id}/callflows", "2xx")),
            "{text}"
        );
        assert!(
            text.contains(&line("/v2/accounts/{account_id}/callflows", "4xx")),
            "{text}"
        );
        assert!(text.contains(&line("unmatched", "4xx")), "{text}");
        assert!(
            !text.contains("acct-a"),
            "raw paths leaked into labels: {text}"
        );
        assert!(
            !text.contains("/v2/nothing"),
            "raw paths leaked into labels: {text}"
        );
    }

    #[actix_web::test]
    async fn unknown_routes_and_methods_answer_in_the_envelope() {
        let f = fixture();
        let app = app!(f);
        let (status, body) = send!(app, get("/v2/accounts/acct-a/nothing", ADMIN));
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["status"], "error");
        assert_eq!(body["error"], "not_found");
        let (status, body) = send!(
            app,
            test::TestRequest::delete()
                .uri("/v2/accounts/acct-a/channels")
                .insert_header((AUTH_HEADER, ADMIN))
        );
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(body["error"], "method_not_allowed");
    }

    #[actix_web::test]
    async fn oversized_bodies_are_413_in_the_envelope() {
        let f = fixture();
        let app = app!(f);
        let huge = "x".repeat(MAX_BODY_BYTES + 1);
        let (status, body) = send!(
            app,
            test::TestRequest::put()
                .uri("/v2/accounts/acct-a/callflows")
                .insert_header((AUTH_HEADER, ADMIN))
                .set_payload(huge)
        );
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(body["status"], "error");
        assert_eq!(body["error"], "too_large");
    }

    // --- Auth -------------------------------------------------------------------------------

    #[actix_web::test]
    async fn auth_matrix() {
        let f = fixture();
        let app = app!(f);
        let cases = [
            (Some(ADMIN), ACCOUNT_A, StatusCode::OK),
            (Some(ADMIN), "any-account", StatusCode::OK),
            (Some(TOKEN_A), ACCOUNT_A, StatusCode::OK),
            (Some(TOKEN_A), ACCOUNT_B, StatusCode::NOT_FOUND),
            (Some(TOKEN_A), "no-such-account", StatusCode::NOT_FOUND),
            (Some("unknown"), ACCOUNT_A, StatusCode::UNAUTHORIZED),
            (Some(""), ACCOUNT_A, StatusCode::UNAUTHORIZED),
            (None, ACCOUNT_A, StatusCode::UNAUTHORIZED),
        ];
        for (token, account, expected) in cases {
            for route in ["callflows", "channels", "pivot/debug"] {
                let mut request =
                    test::TestRequest::get().uri(&format!("/v2/accounts/{account}/{route}"));
                if let Some(token) = token {
                    request = request.insert_header((AUTH_HEADER, token));
                }
                let (status, body) = send!(app, request);
                assert_eq!(status, expected, "{token:?} on {account}/{route}: {body}");
                if expected == StatusCode::OK {
                    assert_success(&body, token.unwrap_or_default());
                } else {
                    assert_eq!(body["status"], "error");
                }
            }
        }
        // Another existing account and a made-up one are indistinguishable.
        let (_, other) = send!(app, get("/v2/accounts/acct-b/callflows", TOKEN_A));
        let (_, missing) = send!(app, get("/v2/accounts/acct-zz/callflows", TOKEN_A));
        assert_eq!(other["error"], missing["error"]);
        assert_eq!(
            other["message"].as_str().unwrap().replace("acct-b", "X"),
            missing["message"].as_str().unwrap().replace("acct-zz", "X")
        );
    }

    #[actix_web::test]
    async fn open_mode_makes_every_request_admin() {
        let f = fixture_with(Auth::default());
        assert!(f.state.auth.open());
        let app = app!(f);
        let (status, body) = send!(
            app,
            test::TestRequest::get().uri("/v2/accounts/acct-b/channels")
        );
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_success(&body, "");
        assert_eq!(body["data"].as_array().unwrap().len(), 1);
        assert!(
            !Auth {
                admin_token: Some(String::new()),
                tokens: HashMap::from([("t".to_owned(), "a".to_owned())])
            }
            .open()
        );
        assert!(
            !Auth {
                admin_token: Some("x".to_owned()),
                tokens: HashMap::new()
            }
            .open()
        );
        assert!(
            Auth {
                admin_token: Some(String::new()),
                tokens: HashMap::new()
            }
            .open()
        );
    }

    // --- Callflows ----------------------------------------------------------------------------

    #[actix_web::test]
    async fn callflow_lifecycle() {
        let f = fixture();
        let app = app!(f);
        let (status, body) = send!(
            app,
            with_body(
                "PUT",
                "/v2/accounts/acct-a/callflows",
                TOKEN_A,
                &json!({"data": {
                    "name": "main",
                    "numbers": ["3004"],
                    "flow": {"module": "pivot", "data": {"voice_url": "https://app.example.com/start", "bogus": 1}},
                }})
            )
        );
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_success(&body, TOKEN_A);
        let id = body["data"]["id"].as_str().unwrap().to_owned();
        assert_eq!(id.len(), 32);
        assert_eq!(body["data"]["numbers"], json!(["3004"]));
        let warnings = body["data"]["warnings"].as_array().unwrap();
        assert!(
            warnings
                .iter()
                .any(|w| w.as_str().unwrap().starts_with("data.flow.data.bogus")),
            "{body}"
        );
        let created_revision = body["revision"].clone();

        let (status, body) = send!(
            app,
            get(&format!("/v2/accounts/acct-a/callflows/{id}"), TOKEN_A)
        );
        assert_eq!(status, StatusCode::OK);
        assert_success(&body, TOKEN_A);
        assert_eq!(body["data"]["name"], "main");
        assert_eq!(body["data"]["flow"]["module"], "pivot");
        assert_eq!(body["revision"], created_revision);

        let (status, body) = send!(app, get("/v2/accounts/acct-a/callflows", TOKEN_A));
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body["data"],
            json!([{"id": id, "name": "main", "numbers": ["3004"], "patterns": []}])
        );

        // Update, with the bare body.
        let (status, body) = send!(
            app,
            with_body(
                "POST",
                &format!("/v2/accounts/acct-a/callflows/{id}"),
                TOKEN_A,
                &json!({
                    "numbers": ["3005"],
                    "patterns": ["^\\+?1?(\\d{10})$"],
                    "flow": pivot_flow(),
                })
            )
        );
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["data"]["id"], id.as_str());
        assert_eq!(body["data"]["numbers"], json!(["3005"]));
        assert_eq!(body["data"]["warnings"], json!([]));
        assert_ne!(body["revision"], created_revision);

        // Another account cannot see or touch it.
        let (status, _) = send!(
            app,
            get(&format!("/v2/accounts/acct-a/callflows/{id}"), TOKEN_B)
        );
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = send!(
            app,
            get(&format!("/v2/accounts/acct-b/callflows/{id}"), TOKEN_B)
        );
        assert_eq!(status, StatusCode::NOT_FOUND);

        let delete = |token: &str| {
            test::TestRequest::delete()
                .uri(&format!("/v2/accounts/acct-a/callflows/{id}"))
                .insert_header((AUTH_HEADER, token.to_owned()))
        };
        let (status, _) = send!(app, delete(TOKEN_B));
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, body) = send!(app, delete(TOKEN_A));
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["data"], json!({"id": id}));
        let (status, _) = send!(app, delete(TOKEN_A));
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, body) = send!(
            app,
            get(&format!("/v2/accounts/acct-a/callflows/{id}"), TOKEN_A)
        );
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"], "not_found");

        // Updating an unknown id does not create it.
        let (status, _) = send!(
            app,
            with_body(
                "POST",
                "/v2/accounts/acct-a/callflows/made-up",
                TOKEN_A,
                &json!({"data": {"numbers": ["1"], "flow": pivot_flow()}})
            )
        );
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[actix_web::test]
    async fn admin_writes_any_accounts_callflows_with_post() {
        let f = fixture();
        let app = app!(f);
        let (status, body) = send!(
            app,
            with_body(
                "POST",
                "/v2/accounts/acct-b/callflows",
                ADMIN,
                &json!({"data": {"numbers": ["4000"], "flow": pivot_flow()}})
            )
        );
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (_, body) = send!(app, get("/v2/accounts/acct-b/callflows", TOKEN_B));
        assert_eq!(body["data"][0]["numbers"], json!(["4000"]));
        let (_, body) = send!(app, get("/v2/accounts/acct-a/callflows", TOKEN_A));
        assert_eq!(body["data"], json!([]));
    }

    #[actix_web::test]
    async fn callflow_validation_names_the_path() {
        let f = fixture();
        let app = app!(f);
        let put = |body: Value| with_body("PUT", "/v2/accounts/acct-a/callflows", TOKEN_A, &body);

        let (status, body) = send!(
            app,
            put(json!({"data": {"numbers": ["3004"], "flow": {
                "module": "pivot",
                "data": {"voice_url": "https://app.example.com/start"},
                "children": {"_": {"module": "pivot", "data": {"voice_url": "{SERVER_URL}"}}},
            }}}))
        );
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"], "invalid_callflow");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.starts_with("data.flow.children._.data.voice_url: "),
            "{message}"
        );
        assert_eq!(errors(&body)[0], message);

        // Every error is listed.
        let (status, body) = send!(
            app,
            put(json!({"data": {"numbers": ["3004"], "flow": {
                "module": "pivot",
                "data": {},
                "children": {"_": {"module": "pivot", "data": {"voice_url": "ftp://x"}}},
            }}}))
        );
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let listed = errors(&body);
        assert!(
            listed
                .iter()
                .any(|e| e.starts_with("data.flow.data.voice_url")),
            "{listed:?}"
        );
        assert!(
            listed
                .iter()
                .any(|e| e.starts_with("data.flow.children._.data.voice_url")),
            "{listed:?}"
        );

        // No number and no pattern.
        let (status, body) = send!(
            app,
            put(json!({"data": {"numbers": [], "flow": pivot_flow()}}))
        );
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .starts_with("data.numbers: "),
            "{body}"
        );

        // Empty and overlong numbers.
        let (status, body) = send!(
            app,
            put(json!({"data": {"numbers": ["1", "", "9".repeat(65)], "flow": pivot_flow()}}))
        );
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let listed = errors(&body);
        assert!(listed[0].starts_with("data.numbers[1]: "), "{listed:?}");
        assert!(listed[1].starts_with("data.numbers[2]: "), "{listed:?}");

        // Wrong types are named by the body parser.
        let (status, body) = send!(
            app,
            put(json!({"data": {"numbers": [3004], "flow": pivot_flow()}}))
        );
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"], "invalid_body");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .starts_with("data.numbers[0]: "),
            "{body}"
        );

        // Missing flow; and a bare body names its fields as written.
        let (status, body) = send!(app, put(json!({"numbers": ["3004"]})));
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            body["message"].as_str().unwrap().starts_with("flow"),
            "{body}"
        );

        // A pattern that does not compile.
        let (status, body) = send!(
            app,
            put(json!({"data": {"patterns": ["("], "flow": pivot_flow()}}))
        );
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .starts_with("data.patterns[0]: "),
            "{body}"
        );

        // Not JSON.
        let (status, body) = send!(
            app,
            test::TestRequest::put()
                .uri("/v2/accounts/acct-a/callflows")
                .insert_header((AUTH_HEADER, TOKEN_A))
                .set_payload("{not json")
        );
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"], "invalid_body");

        // Nothing was stored.
        let (_, body) = send!(app, get("/v2/accounts/acct-a/callflows", TOKEN_A));
        assert_eq!(body["data"], json!([]));
    }

    #[actix_web::test]
    async fn a_number_of_another_account_is_409_without_naming_it() {
        let f = fixture();
        let app = app!(f);
        let body = json!({"data": {"numbers": ["3004"], "flow": pivot_flow()}});
        let (status, _) = send!(
            app,
            with_body("PUT", "/v2/accounts/acct-a/callflows", TOKEN_A, &body)
        );
        assert_eq!(status, StatusCode::CREATED);

        let (status, response) = send!(
            app,
            with_body("PUT", "/v2/accounts/acct-b/callflows", TOKEN_B, &body)
        );
        assert_eq!(status, StatusCode::CONFLICT, "{response}");
        assert_eq!(response["error"], "number_taken");
        assert!(
            response["message"]
                .as_str()
                .unwrap()
                .starts_with("data.numbers: ")
        );
        assert_eq!(response["data"]["number"], "3004");
        assert!(!response.to_string().contains(ACCOUNT_A), "{response}");

        let (status, response) = send!(
            app,
            with_body("PUT", "/v2/accounts/acct-b/callflows", ADMIN, &body)
        );
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(response["data"]["account_id"], ACCOUNT_A);

        let (_, listed) = send!(app, get("/v2/accounts/acct-b/callflows", TOKEN_B));
        assert_eq!(listed["data"], json!([]));
    }

    // --- Debug logs ---------------------------------------------------------------------------

    fn entry(iteration: u32, created_unix_ms: u64, record: Value) -> DebugEntry {
        DebugEntry {
            id: String::new(),
            call_id: String::new(),
            iteration,
            created_unix_ms,
            record,
        }
    }

    async fn seed_debug(debug: &MemoryDebugStore) {
        let now = pivot_cluster::now_unix_ms();
        for (i, call_id) in ["call-1", "call-2", "call-3@10.0.0.1"]
            .into_iter()
            .enumerate()
        {
            let created = now - 10_000 + 1000 * i as u64;
            debug
                .append(ACCOUNT_A, call_id, "node-1", vec![
                    entry(1, created, json!({"call_id": call_id, "id": "r1", "iteration": 1, "method": "get", "uri": format!("https://app.example.com/{i}")})),
                    entry(1, created + 1, json!({"call_id": call_id, "id": "r2", "iteration": 1, "resp_status_code": "200", "resp_body": "<Response/>"})),
                ])
                .await
                .unwrap();
        }
        debug
            .append(
                ACCOUNT_B,
                "call-b",
                "node-2",
                vec![entry(
                    1,
                    now,
                    json!({"error": "timeout", "uri": "https://b.example.com/"}),
                )],
            )
            .await
            .unwrap();
    }

    #[actix_web::test]
    async fn debug_listing_pages_newest_first() {
        let f = fixture();
        seed_debug(&f.debug).await;
        let app = app!(f);
        let (status, body) = send!(
            app,
            get("/v2/accounts/acct-a/pivot/debug?page_size=2", TOKEN_A)
        );
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_success(&body, TOKEN_A);
        let page = body["data"].as_array().unwrap();
        assert_eq!(page.len(), 2);
        assert_eq!(page[0]["call_id"], "call-3@10.0.0.1");
        assert_eq!(page[1]["call_id"], "call-2");
        assert_eq!(page[0]["uri"], "https://app.example.com/2");
        assert_eq!(page[0]["status_code"], "200");
        assert_eq!(page[0]["node"], "node-1");
        assert_eq!(page[0]["iteration"], 1);
        assert_eq!(page[0]["has_errors"], false);
        let created = page[0]["created"].as_u64().unwrap();
        assert!(
            created > 1_600_000_000 && created < 100_000_000_000,
            "seconds, not ms: {created}"
        );
        let key = body["next_start_key"].as_str().unwrap().to_owned();

        let (status, body) = send!(
            app,
            get(
                &format!("/v2/accounts/acct-a/pivot/debug?page_size=2&start_key={key}"),
                TOKEN_A
            )
        );
        assert_eq!(status, StatusCode::OK, "{body}");
        let page = body["data"].as_array().unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(page[0]["call_id"], "call-1");
        assert!(body.get("next_start_key").is_none(), "{body}");

        // Account isolation: b sees only its call; a's token cannot list b.
        let (_, body) = send!(app, get("/v2/accounts/acct-b/pivot/debug", TOKEN_B));
        let page = body["data"].as_array().unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(page[0]["has_errors"], true);
        let (status, _) = send!(app, get("/v2/accounts/acct-b/pivot/debug", TOKEN_A));
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[actix_web::test]
    async fn debug_paging_parameters_are_validated() {
        let f = fixture();
        let app = app!(f);
        for bad in ["0", "101", "abc", "-1", "2.5", ""] {
            let (status, body) = send!(
                app,
                get(
                    &format!("/v2/accounts/acct-a/pivot/debug?page_size={bad}"),
                    TOKEN_A
                )
            );
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
            assert!(
                body["message"].as_str().unwrap().starts_with("page_size: "),
                "{body}"
            );
        }
        for bad in ["garbage", "zzzzzzzzzzzzzzzzcall"] {
            let (status, body) = send!(
                app,
                get(
                    &format!("/v2/accounts/acct-a/pivot/debug?start_key={bad}"),
                    TOKEN_A
                )
            );
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
            assert!(
                body["message"].as_str().unwrap().starts_with("start_key: "),
                "{body}"
            );
        }
    }

    #[actix_web::test]
    async fn debug_entries_of_one_call() {
        let f = fixture();
        seed_debug(&f.debug).await;
        let app = app!(f);
        for path in ["call-3%4010.0.0.1", "call-3@10.0.0.1"] {
            let (status, body) = send!(
                app,
                get(&format!("/v2/accounts/acct-a/pivot/debug/{path}"), TOKEN_A)
            );
            assert_eq!(status, StatusCode::OK, "{path}: {body}");
            assert_success(&body, TOKEN_A);
            let records = body["data"].as_array().unwrap();
            assert_eq!(records.len(), 2);
            assert_eq!(records[0]["id"], "r1");
            assert_eq!(records[0]["method"], "get");
            assert_eq!(records[1]["resp_status_code"], "200");
            assert!(records.iter().all(|r| r["call_id"] == "call-3@10.0.0.1"));
        }
        // Records without the ids get them from the entry.
        let (_, body) = send!(app, get("/v2/accounts/acct-b/pivot/debug/call-b", ADMIN));
        let record = &body["data"][0];
        assert_eq!(record["call_id"], "call-b");
        assert_eq!(record["iteration"], 1);
        assert_eq!(record["id"].as_str().unwrap().len(), 32);

        let (status, body) = send!(app, get("/v2/accounts/acct-a/pivot/debug/nope", TOKEN_A));
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"], "not_found");
        // b's call through a's account (even as admin) is unknown there.
        let (status, _) = send!(app, get("/v2/accounts/acct-a/pivot/debug/call-b", ADMIN));
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = send!(app, get("/v2/accounts/acct-b/pivot/debug/call-b", TOKEN_A));
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    // --- Channels -----------------------------------------------------------------------------

    #[actix_web::test]
    async fn channels_of_an_account() {
        let f = fixture();
        let app = app!(f);
        let (status, body) = send!(app, get("/v2/accounts/acct-a/channels", TOKEN_A));
        assert_eq!(status, StatusCode::OK);
        assert_success(&body, TOKEN_A);
        let ids: HashSet<&str> = body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["call_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, HashSet::from(["call-a1", "call-a2@10.0.0.1"]));

        let (status, body) = send!(
            app,
            get("/v2/accounts/acct-a/channels/call-a2%4010.0.0.1", TOKEN_A)
        );
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["data"]["call_id"], "call-a2@10.0.0.1");
        assert_eq!(body["data"]["node"], "node-1");
        assert_eq!(body["data"]["state"], "play");

        for (uri, token) in [
            ("/v2/accounts/acct-a/channels/call-b1", TOKEN_A),
            ("/v2/accounts/acct-a/channels/call-b1", ADMIN),
            ("/v2/accounts/acct-a/channels/nope", TOKEN_A),
            ("/v2/accounts/acct-b/channels/call-b1", TOKEN_A),
        ] {
            let (status, _) = send!(app, get(uri, token));
            assert_eq!(status, StatusCode::NOT_FOUND, "{uri} {token}");
        }
    }

    #[actix_web::test]
    async fn channel_control() {
        let f = fixture();
        let app = app!(f);
        let post = |call: &str, token: &str, body: Value| {
            with_body(
                "POST",
                &format!("/v2/accounts/acct-a/channels/{call}"),
                token,
                &body,
            )
        };

        let (status, body) = send!(
            app,
            post(
                "call-a1",
                TOKEN_A,
                json!({"data": {"action": "redirect", "url": "https://app.example.com/next", "method": "post"}})
            )
        );
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert_success(&body, TOKEN_A);
        assert_eq!(
            body["data"],
            json!({"call_id": "call-a1", "action": "redirect"})
        );

        let (status, _) = send!(
            app,
            post(
                "call-a2%4010.0.0.1",
                TOKEN_A,
                json!({"action": "redirect", "url": "http://app.example.com/x"})
            )
        );
        assert_eq!(status, StatusCode::ACCEPTED);
        let (status, body) = send!(app, post("call-a1", ADMIN, json!({"action": "hangup"})));
        assert_eq!(status, StatusCode::ACCEPTED);
        assert_eq!(body["data"]["action"], "hangup");
        assert_eq!(
            *f.live.actions.lock().unwrap(),
            [
                "redirect call-a1 POST https://app.example.com/next",
                "redirect call-a2@10.0.0.1 GET http://app.example.com/x",
                "hangup call-a1",
            ]
        );

        // Bad requests name the field.
        let cases = [
            (json!({"data": {"action": "transfer"}}), "data.action: "),
            (json!({"data": {}}), "data.action: "),
            (json!({"data": {"action": "redirect"}}), "data.url: "),
            (
                json!({"data": {"action": "redirect", "url": "ftp://x/y"}}),
                "data.url: ",
            ),
            (
                json!({"data": {"action": "redirect", "url": "https://x/ y"}}),
                "data.url: ",
            ),
            (
                json!({"data": {"action": "redirect", "url": "https://x/", "method": "put"}}),
                "data.method: ",
            ),
            (json!({"action": "dance"}), "action: "),
            (json!({"data": {"action": 3}}), "data.action: "),
        ];
        for (request, field) in cases {
            let (status, body) = send!(app, post("call-a1", TOKEN_A, request.clone()));
            assert_eq!(status, StatusCode::BAD_REQUEST, "{request}: {body}");
            assert!(
                body["message"].as_str().unwrap().starts_with(field),
                "{request}: {body}"
            );
        }

        // Another account's call, or an unknown one: 404, and nothing is done.
        for (call, token) in [("call-b1", TOKEN_A), ("call-b1", ADMIN), ("nope", TOKEN_A)] {
            let (status, _) = send!(app, post(call, token, json!({"action": "hangup"})));
            assert_eq!(status, StatusCode::NOT_FOUND, "{call} {token}");
        }
        let (status, _) = send!(
            app,
            with_body(
                "POST",
                "/v2/accounts/acct-b/channels/call-b1",
                TOKEN_A,
                &json!({"action": "hangup"})
            )
        );
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(f.live.actions.lock().unwrap().len(), 3);

        // The engine's answers.
        f.live.failing.lock().unwrap().insert(
            "call-a1".to_owned(),
            ControlError::NotFound("call-a1".to_owned()),
        );
        let (status, body) = send!(app, post("call-a1", TOKEN_A, json!({"action": "hangup"})));
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        f.live.failing.lock().unwrap().insert(
            "call-a1".to_owned(),
            ControlError::Busy("call-a1".to_owned()),
        );
        let (status, body) = send!(app, post("call-a1", TOKEN_A, json!({"action": "hangup"})));
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"], "busy");
    }

    #[actix_web::test]
    async fn revisions_are_stable_and_differ_by_content() {
        assert_eq!(revision_of(&json!({"a": 1})), revision_of(&json!({"a": 1})));
        assert_ne!(revision_of(&json!({"a": 1})), revision_of(&json!({"a": 2})));
    }

    #[actix_web::test]
    async fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"ab", b"abc"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
