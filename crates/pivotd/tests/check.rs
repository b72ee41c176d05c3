//! Black-box tests of `pivotd check`: the real binary, real files and standard input.

// Test helpers outside #[test] functions unwrap too: a failure there is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn pivotd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pivotd"))
}

fn check_file(path: &Path, extra: &[&str]) -> Output {
    pivotd()
        .arg("check")
        .arg(path)
        .args(extra)
        .output()
        .unwrap()
}

fn check_stdin(body: &[u8], extra: &[&str]) -> Output {
    let mut child = pivotd()
        .args(["check", "-"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(body).unwrap();
    child.wait_with_output().unwrap()
}

fn temp_file(name: &str, body: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, body).unwrap();
    path
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

#[test]
fn a_valid_kazoo_file_prints_its_flow_and_exits_0() {
    let path = temp_file(
        "valid.json",
        r#"{"module":"say","data":{"text":"Hi"},"children":{"_":{"module":"hangup","data":{}}}}"#,
    );
    let out = check_file(&path, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let flow: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(flow["format"], "kazoo");
    assert_eq!(flow["root"]["step"]["type"], "say");
    assert_eq!(flow["root"]["step"]["text"], "Hi");
    assert_eq!(flow["root"]["children"]["_"]["step"]["type"], "hangup");
}

#[test]
fn twiml_on_stdin_is_sniffed() {
    let out = check_stdin(b"  <Response><Say>Hi</Say><Hangup/></Response>", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let flow: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(flow["format"], "twiml");
    assert_eq!(flow["steps"][1]["type"], "hangup");
}

#[test]
fn an_invalid_document_prints_each_error_with_its_path_and_exits_1() {
    let body = r#"{"module":"tts","data":{"text":"Hi"},"children":{"_":{"module":"pivot",
        "data":{"voice_url":"ftp://example.com/x","method":"PUT"}}}}"#;
    let out = check_stdin(body.as_bytes(), &[]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("error: children._.data.")),
        "{text}"
    );
    assert!(text.contains("children._.data.voice_url"), "{text}");
    assert!(text.contains("children._.data.method"), "{text}");
}

#[test]
fn xml_errors_name_line_and_column() {
    let out = check_stdin(
        b"<Response>\n  <Connect/>\n</Response>",
        &["--format", "twiml"],
    );
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("line 2, column 3"), "{text}");
    assert!(text.contains("Connect"), "{text}");
}

#[test]
fn a_forced_format_is_used_whatever_the_body() {
    let out = check_stdin(br#"{"module":"noop","data":{}}"#, &["--format", "twiml"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let out = check_stdin(br#"{"module":"noop","data":{}}"#, &["--format", "kazoo"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

#[test]
fn warnings_go_to_stderr_and_do_not_fail_the_check() {
    let out = check_stdin(br#"{"module":"voicemail","data":{"id":"x"}}"#, &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("warning: module"), "{}", stderr(&out));
    assert!(stdout(&out).contains("\"unknown\""), "{}", stdout(&out));
}

#[test]
fn an_unreadable_file_exits_2() {
    let out = check_file(Path::new("/nonexistent/pivot/doc.json"), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("/nonexistent/pivot/doc.json"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_oversized_file_is_invalid_not_unreadable() {
    let path = temp_file(
        "big.xml",
        &format!("<Response><Say>{}</Say></Response>", "a".repeat(4096)),
    );
    let out = check_file(&path, &["--max-body-bytes", "1024"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("limit is 1024 bytes"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn the_bundled_examples_are_valid() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(examples).unwrap() {
        let path = entry.unwrap().path();
        let out = check_file(&path, &[]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {}",
            path.display(),
            stdout(&out)
        );
        checked += 1;
    }
    assert!(checked >= 2);
}
