//! Starting the real `pivotd` binary and talking HTTP to it, for the black-box tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running `pivotd`; killed when dropped.
pub struct Node {
    pub child: Child,
    /// `127.0.0.1:PORT` of its API.
    pub addr: String,
    /// The node id its banner announced.
    pub node_id: String,
    /// Its stderr lines so far, when started with [`Node::embedded_capturing_stderr`].
    pub stderr: Option<Arc<Mutex<Vec<String>>>>,
    _config: Option<tempfile_path::TempFile>,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failing test shows the end of what each node it captured said.
        if std::thread::panicking()
            && let Some(lines) = &self.stderr
        {
            let lines = lines.lock().unwrap_or_else(|e| e.into_inner());
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!("---- {} ({}) stderr, last lines:", self.node_id, self.addr);
            for line in tail {
                eprintln!("{line}");
            }
        }
    }
}

/// A config file removed when dropped (no tempfile crate needed for one file).
pub mod tempfile_path {
    pub struct TempFile(pub std::path::PathBuf);
    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

impl Node {
    /// `pivotd` with no arguments: the embedded default, on a free port, instant media.
    pub fn embedded(extra_env: &[(&str, &str)]) -> Node {
        let mut env = vec![
            ("PIVOT_API__LISTEN", "127.0.0.1:0"),
            ("PIVOT_SWITCH__SIM__TIME_SCALE", "0"),
        ];
        env.extend_from_slice(extra_env);
        Node::spawn(&[], &env, None, false)
    }

    /// Like [`Node::embedded`], with its stderr (the logs) kept in [`Node::stderr`].
    pub fn embedded_capturing_stderr(extra_env: &[(&str, &str)]) -> Node {
        let mut env = vec![
            ("PIVOT_API__LISTEN", "127.0.0.1:0"),
            ("PIVOT_SWITCH__SIM__TIME_SCALE", "0"),
        ];
        env.extend_from_slice(extra_env);
        Node::spawn(&[], &env, None, true)
    }

    /// The stderr lines captured so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        let lines = self.stderr.as_ref().expect("stderr is not captured");
        lines.lock().unwrap().clone()
    }

    /// `pivotd serve --config <toml>`.
    pub fn serve(toml: &str, extra_env: &[(&str, &str)]) -> Node {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "pivotd-test-{}-{}.toml",
            std::process::id(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::write(&path, toml).unwrap();
        let file = tempfile_path::TempFile(path.clone());
        let path = path.to_string_lossy().into_owned();
        Node::spawn(&["serve", "--config", &path], extra_env, Some(file), false)
    }

    /// `pivotd serve --config <toml>` with its stderr kept in [`Node::stderr`]; `Err` (with
    /// what it said) when it exits before its banner, e.g. because its port was taken.
    pub fn try_serve_capturing(toml: &str, extra_env: &[(&str, &str)]) -> Result<Node, String> {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "pivotd-test-c{}-{}.toml",
            std::process::id(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::write(&path, toml).unwrap();
        let file = tempfile_path::TempFile(path.clone());
        let path = path.to_string_lossy().into_owned();
        Node::try_spawn(&["serve", "--config", &path], extra_env, Some(file), true)
    }

    /// SIGKILL: the node dies without a word.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn spawn(
        args: &[&str],
        env: &[(&str, &str)],
        config: Option<tempfile_path::TempFile>,
        capture_stderr: bool,
    ) -> Node {
        Node::try_spawn(args, env, config, capture_stderr).unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_spawn(
        args: &[&str],
        env: &[(&str, &str)],
        config: Option<tempfile_path::TempFile>,
        capture_stderr: bool,
    ) -> Result<Node, String> {
        let mut command = Command::new(env!("CARGO_BIN_EXE_pivotd"));
        command
            .args(args)
            .stdout(Stdio::piped())
            .stderr(if capture_stderr {
                Stdio::piped()
            } else {
                Stdio::inherit()
            })
            .env("PIVOT_LOG__FORMAT", "human")
            .env("PIVOT_LOG__FILTER", "warn");
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().unwrap();
        let stderr = child.stderr.take().map(|pipe| {
            let lines = Arc::new(Mutex::new(Vec::new()));
            let sink = Arc::clone(&lines);
            // Drained continuously so the node never blocks on a full pipe.
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    sink.lock().unwrap().push(line);
                }
            });
            lines
        });
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        if line.is_empty() {
            // It exited before its banner: say why, with what it wrote.
            let status = child.wait().unwrap();
            let said = stderr.as_ref().map_or_else(String::new, |lines| {
                // The reader thread may still be taking its last lines.
                std::thread::sleep(Duration::from_millis(100));
                lines.lock().unwrap().join("\n")
            });
            return Err(format!(
                "pivotd exited before its banner ({status}): {said}"
            ));
        }
        // "pivotd 0.1.0 node NAME listening on http://127.0.0.1:PORT …"
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("http://"))
            .unwrap_or_else(|| panic!("unexpected banner {line:?}"))
            .to_owned();
        let words: Vec<&str> = line.split_whitespace().collect();
        let node_id = words
            .iter()
            .position(|w| *w == "node")
            .and_then(|i| words.get(i + 1))
            .unwrap_or_else(|| panic!("no node id in banner {line:?}"))
            .to_string();
        let node = Node {
            child,
            addr,
            node_id,
            stderr,
            _config: config,
        };
        node.wait_ready();
        Ok(node)
    }

    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.get("/readyz", None).0 != 200 {
            assert!(Instant::now() < deadline, "pivotd never became ready");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn get(&self, path: &str, token: Option<&str>) -> (u16, String) {
        http(&self.addr, "GET", path, None, token)
    }

    pub fn send(&self, method: &str, path: &str, body: &str, token: Option<&str>) -> (u16, String) {
        http(&self.addr, method, path, Some(body), token)
    }

    pub fn json(&self, path: &str, token: Option<&str>) -> Value {
        let (status, body) = self.get(path, token);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Places a simulated call; returns its id.
    pub fn call(&self, to: &str, script: Value) -> String {
        place_call(&self.addr, to, script)
    }

    /// The call's transcript once it has hung up.
    pub fn finished(&self, call_id: &str) -> Value {
        wait_finished(&self.addr, call_id)
    }

    /// A metric's value in a `/metrics` scrape (0 when absent).
    pub fn metric(&self, series: &str) -> f64 {
        let (_, body) = self.get("/metrics", None);
        body.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    }

    /// Sends SIGTERM and waits for the exit; returns how long it took.
    pub fn terminate(&mut self) -> (Duration, std::process::ExitStatus) {
        let started = Instant::now();
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (started.elapsed(), status);
            }
            assert!(Instant::now() < deadline, "pivotd did not exit on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A standalone `pivotd sim` (instant media); killed when dropped.
pub struct Sim {
    pub child: Child,
    /// Its event socket, `127.0.0.1:PORT`.
    pub esl: String,
    /// Its HTTP API, `127.0.0.1:PORT`.
    pub http: String,
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sim {
    pub fn start() -> Sim {
        Sim::start_scaled(0.0)
    }

    /// With simulated durations multiplied by `time_scale` (1.0 = real time).
    pub fn start_scaled(time_scale: f64) -> Sim {
        let time_scale = time_scale.to_string();
        let mut child = Command::new(env!("CARGO_BIN_EXE_pivotd"))
            .args([
                "sim",
                "--esl",
                "127.0.0.1:0",
                "--http",
                "127.0.0.1:0",
                "--time-scale",
                &time_scale,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // "pivot simulator: esl 127.0.0.1:PORT http 127.0.0.1:PORT"
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words.get(2), Some(&"esl"), "unexpected banner {line:?}");
        Sim {
            esl: words[3].to_owned(),
            http: words[5].to_owned(),
            child,
        }
    }

    pub fn call(&self, to: &str, script: Value) -> String {
        place_call(&self.http, to, script)
    }

    /// Places a call whose dialplan is `socket <socket> async full` (FreeSWITCH's outbound
    /// socket mode): the simulator connects to the controller listening at `socket`.
    pub fn socket_call(&self, to: &str, script: Value, socket: &str) -> String {
        post_call(&self.http, new_call(to, script, Some(socket)))
    }

    pub fn finished(&self, call_id: &str) -> Value {
        wait_finished(&self.http, call_id)
    }
}

/// Places a call through a simulator API at `addr` (a node's or a standalone one's).
pub fn place_call(addr: &str, to: &str, script: Value) -> String {
    post_call(addr, new_call(to, script, None))
}

/// The body of `POST /sim/calls`.
fn new_call(to: &str, script: Value, socket: Option<&str>) -> Value {
    let mut body = serde_json::json!({
        "to": to, "from": "user_sov2kt", "caller_id_name": "JoeFromIT",
        "caller_id_number": "+15551230000", "script": script
    });
    if let Some(socket) = socket {
        body["socket"] = Value::from(socket);
    }
    body
}

fn post_call(addr: &str, body: Value) -> String {
    let (status, body) = http(addr, "POST", "/sim/calls", Some(&body.to_string()), None);
    assert_eq!(status, 201, "{body}");
    let value: Value = serde_json::from_str(&body).unwrap();
    value["call_id"].as_str().unwrap().to_owned()
}

/// The call's transcript once it has hung up, from the simulator API at `addr`.
pub fn wait_finished(addr: &str, call_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = http(addr, "GET", &format!("/sim/calls/{call_id}"), None, None);
        assert_eq!(status, 200, "{body}");
        let view: Value = serde_json::from_str(&body).unwrap();
        if view["state"] == "hungup" {
            return view;
        }
        assert!(Instant::now() < deadline, "call never ended: {view:#}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What the caller heard spoken, in order.
pub fn spoken(view: &Value) -> Vec<String> {
    events(view, "spoke")
        .iter()
        .filter_map(|e| e["text"].as_str().map(str::to_owned))
        .collect()
}

pub fn events(view: &Value, kind: &str) -> Vec<Value> {
    view["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == kind)
        .cloned()
        .collect()
}

/// A minimal HTTP/1.1 exchange: (status, body).
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let body = body.unwrap_or("");
    let auth = token
        .map(|t| format!("X-Auth-Token: {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response[9..12].parse().unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}
