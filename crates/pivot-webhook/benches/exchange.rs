//! `make bench`: a whole pivot exchange (build request, send, read, parse) against a local
//! server, beside a bare reqwest GET of the same body from the same server, in the same run.
//!
//! The server is a minimal keep-alive HTTP/1.1 responder, so that the figures are the clients'
//! cost rather than a test server's. Samples alternate between the two clients in rounds so
//! both see the same machine state. Target: pivot's exchange ≤ 1.10× the bare request at p50.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use pivot_flow::{BodyFormat, HttpMethod, RequestFormat};
use pivot_webhook::params::{CallInfo, Progress, request_params};
use pivot_webhook::{ClientConfig, PivotRequest, WebhookClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const BODY: &str = include_str!("../../pivot-flow/benches/fixtures/twiml-1k.xml");
const ROUNDS: usize = 40;
const PER_ROUND: usize = 100;

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

    // Warm both connection pools and check both work.
    for _ in 0..200 {
        if let Err(f) = pivot.fetch(&request).await.result {
            return eprintln!("pivot exchange failed: {f}");
        }
        if bare
            .get(&url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .is_err()
        {
            return eprintln!("bare request failed");
        }
    }

    let mut pivot_samples = Vec::with_capacity(ROUNDS * PER_ROUND);
    let mut bare_samples = Vec::with_capacity(ROUNDS * PER_ROUND);
    for _ in 0..ROUNDS {
        for _ in 0..PER_ROUND {
            let start = Instant::now();
            let ok = match bare.get(&url).send().await {
                Ok(response) => response.bytes().await.is_ok(),
                Err(_) => false,
            };
            bare_samples.push(start.elapsed());
            if !ok {
                return eprintln!("bare request failed");
            }
        }
        for _ in 0..PER_ROUND {
            let start = Instant::now();
            let ok = pivot.fetch(&request).await.result.is_ok();
            pivot_samples.push(start.elapsed());
            if !ok {
                return eprintln!("pivot exchange failed");
            }
        }
    }
    let (bare50, bare99) = percentiles(&mut bare_samples);
    let (pivot50, pivot99) = percentiles(&mut pivot_samples);
    println!(
        "pivot exchange vs bare reqwest GET, {} B TwiML body, {} samples each",
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
