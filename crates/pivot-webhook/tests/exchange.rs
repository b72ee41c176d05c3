//! The exchange against real local HTTP servers: every failure cause produced for real and
//! classified, encodings and signatures as the server receives them, redirects, the guard,
//! the deadline, the fallback request and CDR posting.

// Test helpers outside #[test] functions unwrap too: a failure there is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use pivot_flow::{BodyFormat, Flow, HttpMethod, RequestFormat, Step};
use pivot_webhook::params::{CallInfo, Progress, request_params};
use pivot_webhook::{
    ClientConfig, DebugRecord, Exchange, FailureCause, ParamValue, Params, PivotRequest,
    RetryPolicy, WebhookClient, encode, sign,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use url::Url;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const TWIML: &str = "<Response><Say>Hello</Say></Response>";

fn loopback_allowed() -> WebhookClient {
    WebhookClient::new(ClientConfig {
        allow_cidrs: vec!["127.0.0.0/8".parse().unwrap()],
        ..ClientConfig::default()
    })
    .unwrap()
}

fn guarded() -> WebhookClient {
    WebhookClient::new(ClientConfig::default()).unwrap()
}

fn call() -> CallInfo {
    CallInfo {
        call_id: "abc@10.0.0.1".into(),
        account_id: "acc1".into(),
        from: "user_sov2kt".into(),
        from_realm: "example.com".into(),
        to: "3004".into(),
        to_realm: "example.com".into(),
        caller_id_name: "JoeFromIT".into(),
        caller_id_number: "+15551230000".into(),
        ..CallInfo::default()
    }
}

fn request(url: &str, method: HttpMethod) -> PivotRequest {
    PivotRequest {
        url: Url::parse(url).unwrap(),
        method,
        format: RequestFormat::Kazoo,
        body_format: BodyFormat::Form,
        params: request_params(RequestFormat::Kazoo, &call(), &Progress::default()),
        timeout: Duration::from_millis(2000),
        signing_secret: None,
        headers: BTreeMap::new(),
    }
}

async fn fetch(client: &WebhookClient, req: &PivotRequest) -> Exchange {
    client.fetch(req).await
}

fn cause(exchange: &Exchange) -> Option<FailureCause> {
    exchange.result.as_ref().err().map(|f| f.cause)
}

async fn serve(server: &MockServer, route: &str, response: ResponseTemplate) {
    Mock::given(path(route))
        .respond_with(response)
        .mount(server)
        .await;
}

fn xml(body: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(body.as_bytes().to_vec(), "text/xml")
}

// --- failure causes ------------------------------------------------------------------------

#[tokio::test]
async fn an_unresolvable_host_is_dns() {
    let ex = fetch(
        &guarded(),
        &request("http://no-such-host.invalid/app", HttpMethod::Get),
    )
    .await;
    assert_eq!(cause(&ex), Some(FailureCause::Dns), "{:?}", ex.result);
    assert!(
        ex.result
            .unwrap_err()
            .message
            .contains("no-such-host.invalid")
    );
}

#[tokio::test]
async fn a_closed_port_is_connect() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/app");
    let ex = fetch(&loopback_allowed(), &request(&url, HttpMethod::Get)).await;
    assert_eq!(cause(&ex), Some(FailureCause::Connect), "{:?}", ex.result);
    assert!(
        ex.result
            .unwrap_err()
            .message
            .to_lowercase()
            .contains("refused"),
        "the message names the reason"
    );
}

#[tokio::test]
async fn https_to_a_plaintext_port_is_tls() {
    let server = MockServer::start().await;
    serve(&server, "/app", xml(TWIML)).await;
    let url = server.uri().replace("http://", "https://") + "/app";
    let ex = fetch(&loopback_allowed(), &request(&url, HttpMethod::Get)).await;
    assert_eq!(cause(&ex), Some(FailureCause::Tls), "{:?}", ex.result);
}

#[tokio::test]
async fn a_server_answering_after_the_deadline_is_timeout_and_the_deadline_holds() {
    let server = MockServer::start().await;
    serve(
        &server,
        "/slow",
        xml(TWIML).set_delay(Duration::from_secs(3)),
    )
    .await;
    let mut req = request(&format!("{}/slow", server.uri()), HttpMethod::Get);
    req.timeout = Duration::from_millis(300);
    let started = Instant::now();
    let ex = fetch(&loopback_allowed(), &req).await;
    let elapsed = started.elapsed();
    assert_eq!(cause(&ex), Some(FailureCause::Timeout), "{:?}", ex.result);
    assert!(elapsed < Duration::from_millis(400), "took {elapsed:?}");
}

#[tokio::test]
async fn a_body_trickling_past_the_deadline_is_timeout_and_the_deadline_holds() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = socket.read(&mut buf).await;
        let head =
            "HTTP/1.1 200 OK\r\ncontent-type: text/xml\r\ncontent-length: 1000\r\n\r\n<Response>";
        let _ = socket.write_all(head.as_bytes()).await;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if socket.write_all(b" ").await.is_err() {
                return;
            }
        }
    });
    let mut req = request(&format!("http://{addr}/app"), HttpMethod::Get);
    req.timeout = Duration::from_millis(300);
    let started = Instant::now();
    let ex = fetch(&loopback_allowed(), &req).await;
    assert_eq!(cause(&ex), Some(FailureCause::Timeout), "{:?}", ex.result);
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_500_is_http_status_with_its_code_in_the_debug_records() {
    let server = MockServer::start().await;
    serve(
        &server,
        "/app",
        ResponseTemplate::new(500)
            .insert_header("X-Trace-Id", "t-1")
            .set_body_string("boom"),
    )
    .await;
    let ex = fetch(
        &loopback_allowed(),
        &request(&format!("{}/app", server.uri()), HttpMethod::Get),
    )
    .await;
    let failure = ex.result.as_ref().unwrap_err();
    assert_eq!(failure.cause, FailureCause::HttpStatus);
    assert_eq!(failure.status, Some(500));
    let [
        DebugRecord::Request { method, .. },
        DebugRecord::Response {
            resp_status_code,
            resp_headers,
            resp_body,
        },
        DebugRecord::Error { error, .. },
    ] = &ex.records[..]
    else {
        panic!("unexpected records {:?}", ex.records)
    };
    assert_eq!(method, "get");
    assert_eq!(resp_status_code, "500");
    assert_eq!(
        resp_headers.get("x-trace-id").map(String::as_str),
        Some("t-1")
    );
    assert_eq!(resp_body, "boom");
    assert_eq!(*error, FailureCause::HttpStatus);
}

#[tokio::test]
async fn a_302_chain_is_followed_for_get() {
    let server = MockServer::start().await;
    serve(
        &server,
        "/a",
        ResponseTemplate::new(302).insert_header("Location", "/b"),
    )
    .await;
    serve(
        &server,
        "/b",
        ResponseTemplate::new(301).insert_header("Location", format!("{}/c?x=1", server.uri())),
    )
    .await;
    serve(&server, "/c", xml(TWIML)).await;
    let ex = fetch(
        &loopback_allowed(),
        &request(&format!("{}/a", server.uri()), HttpMethod::Get),
    )
    .await;
    assert!(ex.result.is_ok(), "{:?}", ex.result);
    assert_eq!(ex.final_url.path(), "/c");
    let requests = ex
        .records
        .iter()
        .filter(|r| matches!(r, DebugRecord::Request { .. }))
        .count();
    assert_eq!(requests, 3);
}

#[tokio::test]
async fn a_redirect_loop_is_http_status_after_five_hops() {
    let server = MockServer::start().await;
    serve(
        &server,
        "/loop",
        ResponseTemplate::new(302).insert_header("Location", "/loop"),
    )
    .await;
    let ex = fetch(
        &loopback_allowed(),
        &request(&format!("{}/loop", server.uri()), HttpMethod::Get),
    )
    .await;
    let failure = ex.result.as_ref().unwrap_err();
    assert_eq!(failure.cause, FailureCause::HttpStatus);
    assert!(
        failure.message.contains("more than 5 redirects"),
        "{}",
        failure.message
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 6);
}

#[tokio::test]
async fn a_redirected_post_is_http_status() {
    let server = MockServer::start().await;
    serve(
        &server,
        "/app",
        ResponseTemplate::new(302).insert_header("Location", "/b"),
    )
    .await;
    let ex = fetch(
        &loopback_allowed(),
        &request(&format!("{}/app", server.uri()), HttpMethod::Post),
    )
    .await;
    assert_eq!(cause(&ex), Some(FailureCause::HttpStatus));
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn html_garbage_is_content_type() {
    let server = MockServer::start().await;
    serve(
        &server,
        "/app",
        ResponseTemplate::new(200).set_body_raw(b"Hello, <b>world</b>".to_vec(), "text/html"),
    )
    .await;
    let ex = fetch(
        &loopback_allowed(),
        &request(&format!("{}/app", server.uri()), HttpMethod::Get),
    )
    .await;
    assert_eq!(
        cause(&ex),
        Some(FailureCause::ContentType),
        "{:?}",
        ex.result
    );
}

#[tokio::test]
async fn an_empty_200_is_empty_body() {
    let server = MockServer::start().await;
    serve(&server, "/app", ResponseTemplate::new(200)).await;
    let ex = fetch(
        &loopback_allowed(),
        &request(&format!("{}/app", server.uri()), HttpMethod::Get),
    )
    .await;
    assert_eq!(cause(&ex), Some(FailureCause::EmptyBody), "{:?}", ex.result);
}

#[tokio::test]
async fn a_2_mib_body_is_too_large() {
    let server = MockServer::start().await;
    let big = format!(
        "<Response><Say>{}</Say></Response>",
        "a".repeat(2 * 1024 * 1024)
    );
    serve(&server, "/app", xml(&big)).await;
    let ex = fetch(
        &loopback_allowed(),
        &request(&format!("{}/app", server.uri()), HttpMethod::Get),
    )
    .await;
    assert_eq!(cause(&ex), Some(FailureCause::TooLarge), "{:?}", ex.result);
}

#[tokio::test]
async fn a_chunked_body_without_length_stops_at_the_limit() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sent = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = socket.read(&mut buf).await;
        let head =
            "HTTP/1.1 200 OK\r\ncontent-type: text/xml\r\ntransfer-encoding: chunked\r\n\r\n";
        socket.write_all(head.as_bytes()).await.unwrap();
        let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "a".repeat(64 * 1024));
        let mut sent = 0usize;
        // Endless unless the client stops reading: 64 MiB at most.
        for _ in 0..1024 {
            if socket.write_all(chunk.as_bytes()).await.is_err() {
                break;
            }
            sent += 64 * 1024;
        }
        sent
    });
    let ex = fetch(
        &loopback_allowed(),
        &request(&format!("http://{addr}/app"), HttpMethod::Get),
    )
    .await;
    assert_eq!(cause(&ex), Some(FailureCause::TooLarge), "{:?}", ex.result);
    let sent = sent.await.unwrap();
    assert!(
        sent < 16 * 1024 * 1024,
        "the client kept reading: {sent} bytes"
    );
}

#[tokio::test]
async fn invalid_json_is_parse_and_invalid_twiml_is_invalid_flow() {
    let server = MockServer::start().await;
    serve(
        &server,
        "/json",
        ResponseTemplate::new(200)
            .set_body_raw(br#"{"module":"tts","data":{"#.to_vec(), "application/json"),
    )
    .await;
    serve(&server, "/twiml", xml("<Response><Connect/></Response>")).await;
    serve(&server, "/xml", xml("<Response><Say>unclosed</Response>")).await;
    let client = loopback_allowed();
    let ex = fetch(
        &client,
        &request(&format!("{}/json", server.uri()), HttpMethod::Get),
    )
    .await;
    assert_eq!(cause(&ex), Some(FailureCause::Parse), "{:?}", ex.result);
    let ex = fetch(
        &client,
        &request(&format!("{}/twiml", server.uri()), HttpMethod::Get),
    )
    .await;
    let failure = ex.result.unwrap_err();
    assert_eq!(failure.cause, FailureCause::InvalidFlow);
    assert!(failure.diagnostics[0].to_string().contains("Connect"));
    let ex = fetch(
        &client,
        &request(&format!("{}/xml", server.uri()), HttpMethod::Get),
    )
    .await;
    assert_eq!(cause(&ex), Some(FailureCause::Parse), "{:?}", ex.result);
}

// --- the destination guard -------------------------------------------------------------------

#[tokio::test]
async fn loopback_is_refused_unless_allowed_and_nothing_is_sent() {
    let server = MockServer::start().await;
    serve(&server, "/app", xml(TWIML)).await;
    let url = format!("{}/app", server.uri());
    let ex = fetch(&guarded(), &request(&url, HttpMethod::Get)).await;
    assert_eq!(
        cause(&ex),
        Some(FailureCause::BlockedDestination),
        "{:?}",
        ex.result
    );
    // By name too: the resolver applies the guard to what `localhost` resolves to.
    let by_name = url.replace("127.0.0.1", "localhost");
    let ex = fetch(&guarded(), &request(&by_name, HttpMethod::Get)).await;
    assert_eq!(
        cause(&ex),
        Some(FailureCause::BlockedDestination),
        "{:?}",
        ex.result
    );
    assert!(server.received_requests().await.unwrap().is_empty());
    let ex = fetch(&loopback_allowed(), &request(&url, HttpMethod::Get)).await;
    assert!(ex.result.is_ok(), "{:?}", ex.result);
}

#[tokio::test]
async fn metadata_and_private_literals_are_refused_before_connecting() {
    let client = loopback_allowed();
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/app",
        "http://[::ffff:10.0.0.1]/",
    ] {
        let started = Instant::now();
        let ex = fetch(&client, &request(url, HttpMethod::Get)).await;
        assert_eq!(cause(&ex), Some(FailureCause::BlockedDestination), "{url}");
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "{url} tried to connect"
        );
        // Refused before any request was made: only the error is recorded.
        assert!(
            matches!(&ex.records[..], [DebugRecord::Error { .. }]),
            "{:?}",
            ex.records
        );
    }
}

#[tokio::test]
async fn a_redirect_to_a_blocked_destination_is_refused() {
    let server = MockServer::start().await;
    serve(
        &server,
        "/app",
        ResponseTemplate::new(302).insert_header("Location", "http://169.254.169.254/latest/"),
    )
    .await;
    let ex = fetch(
        &loopback_allowed(),
        &request(&format!("{}/app", server.uri()), HttpMethod::Get),
    )
    .await;
    assert_eq!(
        cause(&ex),
        Some(FailureCause::BlockedDestination),
        "{:?}",
        ex.result
    );
}

// --- encodings and headers -------------------------------------------------------------------

#[tokio::test]
async fn get_appends_the_query_and_keeps_the_url_query_and_fragment() {
    let server = MockServer::start().await;
    serve(&server, "/app", xml(TWIML)).await;
    let req = request(
        &format!("{}/app?token=s3cret#frag", server.uri()),
        HttpMethod::Get,
    );
    let ex = fetch(&loopback_allowed(), &req).await;
    assert!(ex.result.is_ok(), "{:?}", ex.result);
    let received = &server.received_requests().await.unwrap()[0];
    let expected = format!("token=s3cret&{}", encode::query_string(&req.params));
    assert_eq!(received.url.query(), Some(expected.as_str()));
    assert!(received.body.is_empty());
    assert_eq!(
        header(received, "user-agent"),
        Some(format!("pivot/{}", env!("CARGO_PKG_VERSION")))
    );
    assert_eq!(header(received, "content-type"), None);
    let DebugRecord::Request { uri, req_body, .. } = &ex.records[0] else {
        panic!()
    };
    assert!(uri.ends_with("#frag"), "{uri}");
    assert!(uri.contains("Caller-ID-Name=JoeFromIT"), "{uri}");
    assert_eq!(req_body, "");
    // Relative URLs in the document resolve against the document URL, not our parameters.
    assert_eq!(ex.final_url.query(), Some("token=s3cret"));
}

#[tokio::test]
async fn post_form_and_json_bodies_are_byte_for_byte_the_encoder() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(xml(TWIML))
        .mount(&server)
        .await;
    let client = loopback_allowed();
    let mut req = request(&format!("{}/app", server.uri()), HttpMethod::Post);
    req.params.set(
        "Digits",
        ParamValue::Map({
            let mut m = Params::new();
            m.set("pin", "12 34#");
            m
        }),
    );
    assert!(fetch(&client, &req).await.result.is_ok());
    req.body_format = BodyFormat::Json;
    assert!(fetch(&client, &req).await.result.is_ok());
    let received = server.received_requests().await.unwrap();
    assert_eq!(
        received[0].body,
        encode::query_string(&req.params).into_bytes()
    );
    assert!(String::from_utf8_lossy(&received[0].body).contains("Digits[pin]=12+34%23"));
    assert_eq!(
        header(&received[0], "content-type").as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(received[1].body, encode::json_body(&req.params));
    let json: serde_json::Value = serde_json::from_slice(&received[1].body).unwrap();
    assert_eq!(json["Digits"]["pin"], "12 34#");
    assert_eq!(
        header(&received[1], "content-type").as_deref(),
        Some("application/json")
    );
}

#[tokio::test]
async fn custom_headers_are_sent() {
    let server = MockServer::start().await;
    serve(&server, "/app", xml(TWIML)).await;
    let mut req = request(&format!("{}/app", server.uri()), HttpMethod::Get);
    req.headers.insert("X-Tenant".into(), "blue".into());
    assert!(fetch(&loopback_allowed(), &req).await.result.is_ok());
    let received = &server.received_requests().await.unwrap()[0];
    assert_eq!(header(received, "x-tenant").as_deref(), Some("blue"));
}

#[tokio::test]
async fn signatures_verify_at_the_server() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(xml(TWIML))
        .mount(&server)
        .await;
    let mut req = request(&format!("{}/ivr?step=1", server.uri()), HttpMethod::Post);
    req.format = RequestFormat::Twiml;
    req.params = request_params(RequestFormat::Twiml, &call(), &Progress::default());
    req.signing_secret = Some("s3cret".into());
    assert!(fetch(&loopback_allowed(), &req).await.result.is_ok());
    let received = &server.received_requests().await.unwrap()[0];

    let pivot_header = header(received, "x-pivot-signature").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(sign::verify_pivot_signature(
        b"s3cret",
        &pivot_header,
        &received.body,
        now,
        60
    ));
    assert!(!sign::verify_pivot_signature(
        b"other",
        &pivot_header,
        &received.body,
        now,
        60
    ));

    // What a Twilio validator does: the URL the app was configured with + the POST params
    // sorted by name.
    let mut pairs: Vec<(String, String)> = url::form_urlencoded::parse(&received.body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    pairs.sort();
    let mut data = req.url.to_string();
    for (k, v) in &pairs {
        data.push_str(k);
        data.push_str(v);
    }
    use base64::Engine;
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(b"s3cret").unwrap();
    mac.update(data.as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    assert_eq!(header(received, "x-twilio-signature"), Some(expected));
}

#[tokio::test]
async fn no_secret_no_signature_headers() {
    let server = MockServer::start().await;
    serve(&server, "/app", xml(TWIML)).await;
    assert!(
        fetch(
            &loopback_allowed(),
            &request(&format!("{}/app", server.uri()), HttpMethod::Get)
        )
        .await
        .result
        .is_ok()
    );
    let received = &server.received_requests().await.unwrap()[0];
    assert_eq!(header(received, "x-pivot-signature"), None);
    assert_eq!(header(received, "x-twilio-signature"), None);
}

// --- documents, fallback, CDR ----------------------------------------------------------------

#[tokio::test]
async fn a_kazoo_document_comes_back_parsed() {
    let server = MockServer::start().await;
    serve(
        &server,
        "/app",
        ResponseTemplate::new(200).set_body_raw(
            br#"{"module":"say","data":{"text":"Hi"}}"#.to_vec(),
            "application/json; charset=utf-8",
        ),
    )
    .await;
    let ex = fetch(
        &loopback_allowed(),
        &request(&format!("{}/app", server.uri()), HttpMethod::Get),
    )
    .await;
    let doc = ex.result.unwrap();
    let Flow::Kazoo { root } = doc.flow else {
        panic!()
    };
    assert!(matches!(root.step, Step::Say(ref s) if s.text == "Hi"));
}

#[tokio::test]
async fn the_fallback_request_carries_error_code_and_url() {
    let server = MockServer::start().await;
    serve(&server, "/broken", ResponseTemplate::new(503)).await;
    serve(&server, "/fallback", xml(TWIML)).await;
    let client = loopback_allowed();
    let req = request(&format!("{}/broken", server.uri()), HttpMethod::Post);
    let failure = fetch(&client, &req).await.result.unwrap_err();
    let fallback = req.fallback(
        Url::parse(&format!("{}/fallback", server.uri())).unwrap(),
        HttpMethod::Post,
        &failure,
    );
    assert!(fetch(&client, &fallback).await.result.is_ok());
    let received = server.received_requests().await.unwrap();
    let body = String::from_utf8_lossy(&received[1].body).into_owned();
    assert!(body.contains("ErrorCode=11200"), "{body}");
    let mut error_url = Params::new();
    error_url.set("ErrorUrl", req.url.as_str());
    let expected = encode::query_string(&error_url);
    assert!(body.contains(&expected), "{body} lacks {expected}");
}

#[tokio::test]
async fn cdr_posts_retry_server_errors_then_deliver() {
    let server = MockServer::start().await;
    Mock::given(path("/cdr"))
        .respond_with(ResponseTemplate::new(502))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(path("/cdr"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    let mut record = Params::new();
    record.set("Call-ID", "abc");
    record.set("Hangup-Cause", "NORMAL_CLEARING");
    let policy = RetryPolicy {
        first_backoff: Duration::from_millis(10),
        ..RetryPolicy::default()
    };
    let url = Url::parse(&format!("{}/cdr", server.uri())).unwrap();
    let outcome = loopback_allowed().post_cdr(&url, &record, &policy).await;
    assert!(outcome.delivered, "{:?}", outcome.failure);
    assert_eq!(outcome.attempts, 3);
    let received = server.received_requests().await.unwrap();
    assert_eq!(received.len(), 3);
    assert_eq!(
        received[2].body,
        b"Call-ID=abc&Hangup-Cause=NORMAL_CLEARING"
    );
}

#[tokio::test]
async fn cdr_posts_give_up_on_client_errors_and_after_the_attempts() {
    let server = MockServer::start().await;
    serve(&server, "/gone", ResponseTemplate::new(404)).await;
    serve(&server, "/down", ResponseTemplate::new(500)).await;
    let client = loopback_allowed();
    let policy = RetryPolicy {
        first_backoff: Duration::from_millis(5),
        ..RetryPolicy::default()
    };
    let record = Params::new();
    let gone = client
        .post_cdr(
            &Url::parse(&format!("{}/gone", server.uri())).unwrap(),
            &record,
            &policy,
        )
        .await;
    assert!(!gone.delivered);
    assert_eq!(gone.attempts, 1);
    let down = client
        .post_cdr(
            &Url::parse(&format!("{}/down", server.uri())).unwrap(),
            &record,
            &policy,
        )
        .await;
    assert!(!down.delivered);
    assert_eq!(down.attempts, 3);
    assert_eq!(down.failure.unwrap().cause, FailureCause::HttpStatus);
}

fn header(request: &Request, name: &str) -> Option<String> {
    request
        .headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}
