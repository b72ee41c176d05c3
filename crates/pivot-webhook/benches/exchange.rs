//! `make bench`: a whole pivot exchange (build request, send, read, parse) against a local
//! server, beside a bare reqwest GET from the same server, in the same run.
//!
//! What is compared: the bare GET requests the very URL pivot's exchange sends — the document
//! URL plus pivot's ~300-byte query of call parameters, taken from the exchange's own debug
//! record — with the same `Accept` header, over its own keep-alive connection, and reads the
//! body to the end. So both sides send the same request line and get the same 937-byte TwiML
//! answer; the difference is what pivot adds: parameter encoding, request preparation, the
//! deadline, the bounded body read, the debug records and the parse (~6.5 µs of it alone).
//!
//! The server is a minimal keep-alive HTTP/1.1 responder, so that the figures are the clients'
//! cost rather than a test server's. Both clients are warmed up first; then the samples
//! alternate one by one (the order flipping each round) so that both see the same machine
//! state. Target: pivot's exchange ≤ 1.10× the bare request at p50.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use pivot_flow::{BodyFormat, HttpMethod, RequestFormat};
use pivot_webhook::params::{CallInfo, Progress, request_params};
use pivot_webhook::{ClientConfig, DebugRecord, PivotRequest, WebhookClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const BODY: &str = include_str!("../../pivot-flow/benches/fixtures/twiml-1k.xml");
const ROUNDS: usize = 40;
const PER_ROUND: usize = 100;
const WARM_UP: usize = 500;
/// What pivot's exchange sends as `Accept`, sent by the bare client too.
const ACCEPT: &str = "application/json, text/xml, application/xml;q=0.9, */*;q=0.1";

fn main() {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return eprintln!("cannot start the runtime: {e}"),
    };
    runtime.block_on(run());
}

async fn run() {
    let listener = match TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => return eprintln!("cannot bind: {e}"),
    };
    let Ok(addr) = listener.local_addr() else {
        return;
    };
    tokio::spawn(serve(listener));
    let url = format!("http://{addr}/ivr");

    let Ok(pivot) = WebhookClient::new(ClientConfig {
        allow_cidrs: vec!["127.0.0.0/8".parse().unwrap_or_else(|_| unreachable!())],
        ..ClientConfig::default()
    }) else {
        return eprintln!("cannot build the pivot client");
    };
    let Ok(bare) = reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .build()
    else {
        return eprintln!("cannot build the bare client");
    };
    let call = CallInfo {
        call_id: "bench-call".into(),
        account_id: "bench-account".into(),
        from: "user_sov2kt".into(),
        from_realm: "example.com".into(),
        to: "3004".into(),
        to_realm: "example.com".into(),
        caller_id_name: "JoeFromIT".into(),
        caller_id_number: "+15551230000".into(),
        ..CallInfo::default()
    };
    let Ok(parsed_url) = url.parse() else { return };
    let request = PivotRequest {
        url: parsed_url,
        method: HttpMethod::Get,
        format: RequestFormat::Kazoo,
        body_format: BodyFormat::Form,
        params: request_params(RequestFormat::Kazoo, &call, &Progress::default()),
        timeout: Duration::from_secs(5),
        signing_secret: None,
        headers: BTreeMap::new(),
    };

    // The URL pivot actually requests, query included, for the bare client to request too.
    let exchange = pivot.fetch(&request).await;
    let full_url = match (&exchange.result, exchange.records.first()) {
        (Ok(_), Some(DebugRecord::Request { uri, .. })) => uri.clone(),
        _ => return eprintln!("pivot exchange failed: {:?}", exchange.result.err()),
    };
    let bare_get = || async {
        match bare
            .get(&full_url)
            .header(reqwest::header::ACCEPT, ACCEPT)
            .send()
            .await
        {
            Ok(response) => response.status().is_success() && response.bytes().await.is_ok(),
            Err(_) => false,
        }
    };

    // Warm both connection pools (and caches, allocators) and check both work.
    for _ in 0..WARM_UP {
        if let Err(f) = pivot.fetch(&request).await.result {
            return eprintln!("pivot exchange failed: {f}");
        }
        if !bare_get().await {
            return eprintln!("bare request failed");
        }
    }

    let mut pivot_samples = Vec::with_capacity(ROUNDS * PER_ROUND);
    let mut bare_samples = Vec::with_capacity(ROUNDS * PER_ROUND);
    for round in 0..ROUNDS {
        for _ in 0..PER_ROUND {
            for side in [round % 2, 1 - round % 2] {
                let start = Instant::now();
                let ok = if side == 0 {
                    bare_get().await
                } else {
                    pivot.fetch(&request).await.result.is_ok()
                };
                let elapsed = start.elapsed();
                if !ok {
                    return eprintln!("request failed");
                }
                if side == 0 {
                    bare_samples.push(elapsed);
                } else {
                    pivot_samples.push(elapsed);
                }
            }
        }
    }
    let (bare50, bare99) = percentiles(&mut bare_samples);
    let (pivot50, pivot99) = percentiles(&mut pivot_samples);
    println!(
        "pivot exchange vs bare reqwest GET of the same {}-byte URL, {} B TwiML body, {} samples each",
        full_url.len(),
        BODY.len(),
        ROUNDS * PER_ROUND
    );
    println!("{:<28} {:>10} {:>10}", "", "p50 µs", "p99 µs");
    println!(
        "{:<28} {:>10.1} {:>10.1}",
        "bare reqwest GET",
        micros(bare50),
        micros(bare99)
    );
    println!(
        "{:<28} {:>10.1} {:>10.1}",
        "pivot build+send+read+parse",
        micros(pivot50),
        micros(pivot99)
    );
    println!(
        "{:<28} {:>9.2}x {:>9.2}x",
        "ratio",
        micros(pivot50) / micros(bare50),
        micros(pivot99) / micros(bare99)
    );
}

fn percentiles(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    (at(0.50), at(0.99))
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Answers every request on a connection with the same TwiML document, keeping it alive.
async fn serve(listener: TcpListener) {
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/xml\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            return;
        };
        let response = response.clone();
        tokio::spawn(async move {
            let _ = socket.set_nodelay(true);
            let mut buf = vec![0u8; 16 * 1024];
            let mut filled = 0;
            loop {
                match socket.read(&mut buf[filled..]).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => filled += n,
                }
                // GET requests only: a request ends at its blank line.
                while let Some(end) = find(&buf[..filled], b"\r\n\r\n") {
                    if socket.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                    buf.copy_within(end + 4..filled, 0);
                    filled -= end + 4;
                }
                if filled == buf.len() {
                    return;
                }
            }
        });
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
