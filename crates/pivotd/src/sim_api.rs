//! The simulator's HTTP API (DESIGN §5): place simulated calls, script the caller, read what
//! the caller heard. Served by `pivotd sim`, and under `/sim` on a node's own API when its
//! switch is the embedded simulator.

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

async fn place_call(sim: web::Data<Simulator>, body: web::Bytes) -> Result<HttpResponse, ApiError> {
    let call: NewCall = parse_json(&body)?;
    if call.to.trim().is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "to: the dialled number is required",
        ));
    }
    let call_id = sim.place_call(call);
    Ok(HttpResponse::Created().json(serde_json::json!({ "call_id": call_id })))
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
