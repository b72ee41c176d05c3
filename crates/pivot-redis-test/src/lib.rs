//! Real Redis processes for tests (dev-dependency only; shared by pivot-cluster's backend tests
//! and pivotd's cluster tests): a `redis-server` per test on a free port, killed on drop,
//! optionally a replica and a Sentinel watching the primary.
//!
//! `redis-server` must be on PATH: without it the tests fail, saying so, rather than skip — a
//! skipped Redis test looks exactly like a passing one. Panicking on a setup failure is what a
//! test harness should do, hence unwrap/expect are allowed here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const READY_WITHIN: Duration = Duration::from_secs(10);
static DIRS: AtomicUsize = AtomicUsize::new(0);

pub fn require_redis_server() {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        found,
        "redis-server is not on PATH. The Redis tests run against a real server: install it \
         (Debian/Ubuntu: `apt-get install redis-server`, macOS: `brew install redis`) and run \
         them again."
    );
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn fresh_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "pivot-test-redis-{}-{}",
        std::process::id(),
        DIRS.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Sends one inline command and returns what the server answered first.
pub fn ask(port: u16, command: &str) -> Option<String> {
    let address = ([127, 0, 0, 1], port).into();
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_millis(200)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    stream.write_all(format!("{command}\r\n").as_bytes()).ok()?;
    let mut buffer = [0u8; 16 * 1024];
    let n = stream.read(&mut buffer).ok()?;
    Some(String::from_utf8_lossy(&buffer[..n]).into_owned())
}

/// Waits until the server on `port` is ours (it answers with our working directory) or the
/// child exits (the port was taken between choosing and binding it).
/// `sentinel_of`: the master port a Sentinel must be watching to be this test's.
fn wait_ready(child: &mut Child, port: u16, dir: &Path, sentinel_of: Option<u16>) -> bool {
    let deadline = Instant::now() + READY_WITHIN;
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return false;
        }
        let ours = match sentinel_of {
            // A Sentinel has no CONFIG: it is ours when it watches our master (a PONG alone
            // could come from another test's server that won the race for the port).
            Some(master_port) => ask(port, "SENTINEL get-master-addr-by-name mymaster")
                .is_some_and(|a| a.contains(&master_port.to_string())),
            None => {
                ask(port, "CONFIG GET dir").is_some_and(|a| a.contains(&*dir.to_string_lossy()))
            }
        };
        if ours {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn stop(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A `redis-server` of this test alone.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    extra: Vec<String>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// With extra arguments (e.g. `--replicaof`, `--appendonly yes`); a restart keeps them.
    pub fn start_with(extra: &[&str]) -> RedisServer {
        require_redis_server();
        for _ in 0..5 {
            let mut server = RedisServer {
                child: None,
                port: free_port(),
                dir: fresh_dir(),
                extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            };
            if server.spawn() {
                return server;
            }
        }
        panic!("redis-server did not come up on any of 5 free ports");
    }

    fn spawn(&mut self) -> bool {
        let port = self.port.to_string();
        let dir = self.dir.to_string_lossy().into_owned();
        let mut child = Command::new("redis-server")
            .args(["--port", &port, "--bind", "127.0.0.1", "--dir", &dir])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--loglevel", "warning", "--logfile", ""])
            // A replica (the Sentinel test's) syncs at once rather than after Redis's default
            // 5 s wait for more replicas.
            .args(["--repl-diskless-sync-delay", "0"])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning redis-server");
        if wait_ready(&mut child, self.port, &self.dir, None) {
            self.child = Some(child);
            true
        } else {
            let _ = child.kill();
            let _ = child.wait();
            false
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Sends an inline command straight to the server.
    pub fn ask(&self, command: &str) -> Option<String> {
        ask(self.port, command)
    }

    /// Kills the server (SIGKILL: no goodbye to clients).
    pub fn kill(&mut self) {
        stop(&mut self.child);
    }

    /// Starts it again on the same port and directory (empty, unless it persists its data).
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + READY_WITHIN;
        while Instant::now() < deadline {
            if self.spawn() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server did not come back on port {}", self.port);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        stop(&mut self.child);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Sentinel (`redis-server <conf> --sentinel`) watching one master as `mymaster`, quorum 1.
pub struct Sentinel {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl Sentinel {
    /// `None` (after printing why) if this redis-server cannot run as a Sentinel.
    pub fn start(master_port: u16) -> Option<Sentinel> {
        require_redis_server();
        for _ in 0..5 {
            let port = free_port();
            let dir = fresh_dir();
            let config = dir.join("sentinel.conf");
            std::fs::write(
                &config,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {}\n\
                     sentinel monitor mymaster 127.0.0.1 {master_port} 1\n\
                     sentinel down-after-milliseconds mymaster 1000\n\
                     sentinel failover-timeout mymaster 5000\n",
                    dir.display()
                ),
            )
            .unwrap();
            let spawned = Command::new("redis-server")
                .arg(&config)
                .arg("--sentinel")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn();
            let Ok(mut child) = spawned else {
                println!("SKIPPED: `redis-server --sentinel` could not be started");
                return None;
            };
            if wait_ready(&mut child, port, &dir, Some(master_port)) {
                return Some(Sentinel {
                    child: Some(child),
                    port,
                    dir,
                });
            }
            let _ = child.kill();
            let output = child.wait_with_output().ok();
            let stderr = output
                .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                .unwrap_or_default();
            let _ = std::fs::remove_dir_all(&dir);
            if stderr.to_lowercase().contains("sentinel") {
                println!("SKIPPED: this redis-server has no Sentinel mode: {stderr}");
                return None;
            }
        }
        panic!("redis-server --sentinel did not come up on any of 5 free ports");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Asks the Sentinel something (inline command).
    pub fn ask(&self, command: &str) -> Option<String> {
        ask(self.port, command)
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        stop(&mut self.child);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
