//! The simulator's HTTP API (DESIGN §5): place simulated calls, script the caller, read what
//! the caller heard. A call parks for the event socket's listeners (inbound mode), or, with
//! `"socket": "host:port"`, dials a controller as FreeSWITCH's `socket` app does (outbound
//! mode). Served by `pivotd sim`, and under `/sim` on a node's own API when its
//! switch is the embedded simulator.

use std::net::SocketAddr;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError, web};
use pivot_switch::sim::{NewCall, Simulator};
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// Mounts `/sim/calls…` on an actix-web app.
pub fn configure(sim: Simulator) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(web::Data::new(sim))
            .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
            .service(
                web::scope("/sim")
                    .route("/calls", web::post().to(place_call))
                    .route("/calls", web::get().to(list_calls))
                    .route("/calls/{id}", web::get().to(get_call))
                    .route("/calls/{id}", web::delete().to(hang_up))
                    .route("/calls/{id}/dtmf", web::post().to(send_dtmf)),
            );
    }
}

/// Request bodies are small JSON documents.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Reads a JSON body; a malformed one is a 400 whose message names the offending field
/// (`to: invalid type: integer `3004`, expected a string`).
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let message = if path == "." {
            e.inner().to_string()
        } else {
            format!("{path}: {}", e.inner())
        };
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", message)
    })
}

/// An error in the crossbar-style envelope of DESIGN §8.
#[derive(Debug)]
pub struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn not_found(id: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no simulated call {id}"),
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status).json(serde_json::json!({
            "status": "error",
            "error": self.code,
            "message": self.message,
            "data": {},
        }))
    }
}

/// Where `POST /sim/calls` sends a call, beside the [`NewCall`] fields (which ignore it).
#[derive(Debug, Default, Deserialize)]
struct Target {
    /// `host:port` of a controller listening for FreeSWITCH's outbound socket: the call's
    /// dialplan is `socket <host:port> async full`. Absent: the call parks for the event
    /// socket's (inbound) listeners.
    #[serde(default)]
    socket: Option<String>,
}

/// How long resolving a `socket` host name may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

async fn place_call(sim: web::Data<Simulator>, body: web::Bytes) -> Result<HttpResponse, ApiError> {
    let call: NewCall = parse_json(&body)?;
    if call.to.trim().is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "to: the dialled number is required",
        ));
    }
    let target: Target = parse_json(&body)?;
    let call_id = match target.socket {
        Some(socket) => sim.place_socket_call(call, socket_target(&socket).await?),
        None => sim.place_call(call),
    };
    Ok(HttpResponse::Created().json(serde_json::json!({ "call_id": call_id })))
}

/// The `socket` field as an address: `ip:port`, or `host:port` resolved here (a controller in
/// another container is reached by its name), the first address found.
async fn socket_target(raw: &str) -> Result<SocketAddr, ApiError> {
    let bad = |why: String| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!("socket: {raw:?} {why}"),
        )
    };
    if let Ok(addr) = raw.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let has_port = raw
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !has_port {
        return Err(bad("is not host:port, like \"127.0.0.1:8084\"".to_owned()));
    }
    match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host(raw)).await {
        Ok(Ok(mut addrs)) => addrs
            .next()
            .ok_or_else(|| bad("resolves to no address".to_owned())),
        Ok(Err(error)) => Err(bad(format!("cannot be resolved: {error}"))),
        Err(_) => Err(bad("was not resolved in time".to_owned())),
    }
}

async fn list_calls(sim: web::Data<Simulator>) -> HttpResponse {
    HttpResponse::Ok().json(sim.calls())
}

async fn get_call(
    sim: web::Data<Simulator>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    sim.call(&id)
        .map(|view| HttpResponse::Ok().json(view))
        .ok_or_else(|| ApiError::not_found(&id))
}

async fn hang_up(
    sim: web::Data<Simulator>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    if sim.hangup(&id) {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::not_found(&id))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Dtmf {
    digits: String,
}

async fn send_dtmf(
    sim: web::Data<Simulator>,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let body: Dtmf = parse_json(&body)?;
    let digits = &body.digits;
    if digits.is_empty()
        || digits.len() > 128
        || !digits
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '*' | '#' | 'A'..='D'))
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!("digits: 1 to 128 of 0-9 * # A-D, got {digits:?}"),
        ));
    }
    if sim.send_dtmf(&id, digits) {
        Ok(HttpResponse::Accepted().finish())
    } else {
        Err(ApiError::not_found(&id))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use actix_web::{App, test};
    use pivot_switch::sim::SimConfig;

    async fn sim() -> Simulator {
        Simulator::start(SimConfig {
            time_scale: 0.0,
            ..SimConfig::default()
        })
        .await
        .unwrap()
    }

    #[actix_web::test]
    async fn socket_targets_are_addresses_or_resolvable_names() {
        assert_eq!(
            socket_target("127.0.0.1:8084").await.unwrap(),
            "127.0.0.1:8084".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            socket_target("[::1]:8084").await.unwrap(),
            "[::1]:8084".parse::<SocketAddr>().unwrap()
        );
        let local = socket_target("localhost:8084").await.unwrap();
        assert!(local.ip().is_loopback() && local.port() == 8084, "{local}");
        for bad in [
            "",
            "8084",
            "127.0.0.1",
            ":8084",
            "127.0.0.1:99999",
            "host:port",
        ] {
            let error = socket_target(bad).await.unwrap_err();
            assert_eq!(error.status, StatusCode::BAD_REQUEST, "{bad}");
            assert!(error.message.starts_with("socket: "), "{bad}: {error}");
        }
    }

    #[actix_web::test]
    async fn a_call_with_a_socket_dials_the_controller_and_a_bad_one_is_refused() {
        let sim = sim().await;
        let app = test::init_service(App::new().configure(configure(sim.clone()))).await;
        let post = |extra: serde_json::Value| {
            let mut body = serde_json::json!({
                "to": "3004", "from": "caller", "caller_id_name": "Caller",
                "caller_id_number": "+15550000000"
            });
            for (key, value) in extra.as_object().unwrap() {
                body[key] = value.clone();
            }
            test::TestRequest::post()
                .uri("/sim/calls")
                .set_json(body)
                .to_request()
        };
        for (body, field) in [
            (serde_json::json!({"socket": "nowhere"}), "socket: "),
            (serde_json::json!({"socket": 8084}), "socket: invalid type"),
            (
                serde_json::json!({"to": " ", "socket": "127.0.0.1:8084"}),
                "to: ",
            ),
        ] {
            let response = test::call_service(&app, post(body.clone())).await;
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
            let error: serde_json::Value = test::read_body_json(response).await;
            let message = error["message"].as_str().unwrap();
            assert!(message.starts_with(field), "{body}: {message}");
        }
        assert!(sim.calls().is_empty(), "a refused request places no call");

        // A controller that accepts and says nothing: the simulated FreeSWITCH dials it and
        // waits for its `connect`, instead of parking the call for ESL listeners.
        let controller = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = controller.local_addr().unwrap().to_string();
        let response = test::call_service(&app, post(serde_json::json!({"socket": target}))).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let created: serde_json::Value = test::read_body_json(response).await;
        let call_id = created["call_id"].as_str().unwrap().to_owned();
        let accepted = tokio::time::timeout(Duration::from_secs(5), controller.accept()).await;
        assert!(
            matches!(accepted, Ok(Ok(_))),
            "the simulator never connected"
        );
        assert!(sim.call(&call_id).is_some());
        sim.shutdown().await;
    }
}
