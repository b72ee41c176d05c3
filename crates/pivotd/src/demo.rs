//! The demo pivot app of the embedded default: a small TwiML IVR served by pivotd itself, over
//! real HTTP, so the first call works with nothing else installed. Number 3004 reaches it:
//! welcome, press 1 to leave a message, press 2 to hear the time.

use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::{HttpResponse, web};
use serde::Deserialize;

/// The number the demo callflow answers.
pub const DEMO_NUMBER: &str = "3004";

/// Mounts `/demo/…` on an actix-web app.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/demo")
            .route("/ivr", web::to(welcome))
            .route("/menu", web::to(menu))
            .route("/recorded", web::to(recorded)),
    );
}

/// The callflow of the demo number: a pivot node pointing at the demo app, whose `_` child
/// speaks an apology should the app fail — what every pivot callflow should have.
pub fn callflow(api_base: &str) -> serde_json::Value {
    serde_json::json!({
        "module": "pivot",
        "data": {
            "voice_url": format!("{api_base}/demo/ivr"),
            "method": "get",
            "req_format": "twiml",
            "req_timeout_ms": 3000,
            "debug": true
        },
        "children": {
            "_": {
                "module": "tts",
                "data": {"text": "Sorry, the demo application is not answering. Goodbye."}
            }
        }
    })
}

/// Twilio sends parameters in the query (GET) or the form body (POST); the demo reads both.
#[derive(Debug, Default, Deserialize)]
struct Params {
    #[serde(rename = "Digits")]
    digits: Option<String>,
    #[serde(rename = "RecordingDuration")]
    recording_duration: Option<String>,
}

fn params(query: &str, body: &[u8]) -> Params {
    let from_query = serde_urlencoded_lite(query);
    let from_body = serde_urlencoded_lite(&String::from_utf8_lossy(body));
    Params {
        digits: from_query.digits.or(from_body.digits),
        recording_duration: from_query
            .recording_duration
            .or(from_body.recording_duration),
    }
}

/// Reads the two parameters the demo needs from `a=b&c=d` (percent-decoded).
fn serde_urlencoded_lite(text: &str) -> Params {
    let mut params = Params::default();
    for pair in text.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value);
        match key {
            "Digits" => params.digits = Some(value),
            "RecordingDuration" => params.recording_duration = Some(value),
            _ => {}
        }
    }
    params
}

fn percent_decode(value: &str) -> String {
    let spaced = value.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

fn twiml(body: &str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/xml")
        .body(format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><Response>{body}</Response>"#
        ))
}

async fn welcome() -> HttpResponse {
    twiml(
        r#"<Gather numDigits="1" timeout="5" action="/demo/menu" method="GET"><Say>Welcome to pivot. Press 1 to leave a message. Press 2 to hear the time.</Say></Gather><Say>We did not get your choice. Goodbye.</Say>"#,
    )
}

async fn menu(request: actix_web::HttpRequest, body: web::Bytes) -> HttpResponse {
    match params(request.query_string(), &body).digits.as_deref() {
        Some("1") => twiml(
            r##"<Say>Leave your message after the beep. Press pound when you are done.</Say><Record maxLength="30" finishOnKey="#" action="/demo/recorded" method="GET"/>"##,
        ),
        Some("2") => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let (hours, minutes) = ((now / 3600) % 24, (now / 60) % 60);
            twiml(&format!(
                r#"<Say>The time is {hours} {minutes:02} U T C.</Say><Redirect method="GET">/demo/ivr</Redirect>"#
            ))
        }
        _ => twiml(
            r#"<Say>Sorry, that is not an option.</Say><Redirect method="GET">/demo/ivr</Redirect>"#,
        ),
    }
}

async fn recorded(request: actix_web::HttpRequest, body: web::Bytes) -> HttpResponse {
    let seconds = params(request.query_string(), &body)
        .recording_duration
        .and_then(|d| d.parse::<u64>().ok())
        .unwrap_or(0);
    twiml(&format!(
        "<Say>Thank you. Your message of {seconds} seconds was recorded. Goodbye.</Say><Hangup/>"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_come_from_the_query_or_the_form_body() {
        let p = params("Digits=1&x=y", b"");
        assert_eq!(p.digits.as_deref(), Some("1"));
        let p = params("", b"RecordingDuration=4&Digits=%23");
        assert_eq!(p.digits.as_deref(), Some("#"));
        assert_eq!(p.recording_duration.as_deref(), Some("4"));
    }

    #[test]
    fn the_demo_callflow_and_documents_parse() {
        let flow = callflow("http://127.0.0.1:8080");
        pivot_flow::parse_kazoo_value(&flow, "flow", &pivot_flow::Limits::default()).unwrap();
    }
}
