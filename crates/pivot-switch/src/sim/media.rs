//! Simulated media: how long a file, tone or TTS text plays, file naming rules, hang-up cause
//! tables (freeswitch-esl.md §5), and a small regex matcher for `play_and_get_digits` and
//! `filter /regex/` (the workspace has no regex crate; digit patterns are tiny).

use std::cell::Cell;

use crate::sim::DialAnswer;

/// Default length of a file we cannot measure (URLs, sound files).
pub(crate) const FILE_MS: u64 = 3_000;
/// TTS speed: about 70 ms per character.
pub(crate) const SPEAK_MS_PER_CHAR: u64 = 70;
const SOUND_PREFIX: &str = "/usr/share/freeswitch/sounds/en/us/callie";

pub(crate) fn is_dtmf(c: char) -> bool {
    matches!(c, '0'..='9' | '*' | '#' | 'A'..='D' | 'a'..='d')
}

/// `{k=v,...}file` → the params (copied into PLAYBACK_* events) and the file.
pub(crate) fn split_params(file: &str) -> (Vec<(String, String)>, &str) {
    let file = file.trim();
    if let Some(rest) = file.strip_prefix('{')
        && let Some((inside, after)) = rest.split_once('}')
    {
        let params = inside
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        return (params, after);
    }
    (Vec::new(), file)
}

/// `file_string://a!b` → its parts; anything else is one file.
pub(crate) fn file_string_parts(arg: &str) -> Vec<String> {
    match arg.trim().strip_prefix("file_string://") {
        Some(list) => list
            .split('!')
            .filter(|p| !p.is_empty())
            .take(256)
            .map(str::to_owned)
            .collect(),
        None => vec![arg.trim().to_owned()],
    }
}

/// Files whose name says they do not exist give `FILE NOT FOUND` (capture 15).
pub(crate) fn is_missing(file: &str) -> bool {
    let lower = file.to_ascii_lowercase();
    lower.contains("missing") || lower.contains("does-not-exist") || lower.contains("nonexistent")
}

/// `Playback-File-Type` for stream sources (PS:1649-1661).
pub(crate) fn file_type(file: &str) -> Option<&str> {
    let (scheme, _) = file.split_once("://")?;
    matches!(scheme, "tone_stream" | "silence_stream" | "local_stream").then_some(scheme)
}

/// `Playback-File-Path`: relative sound files resolve under the sound prefix.
pub(crate) fn resolve_path(file: &str) -> String {
    let file = file.split("@@").next().unwrap_or(file);
    if file.contains("://") || file.starts_with('/') || file.is_empty() {
        file.to_owned()
    } else {
        format!("{SOUND_PREFIX}/{file}")
    }
}

/// Simulated length in ms; `None` plays until stopped.
pub(crate) fn duration_ms(file: &str) -> Option<u64> {
    let file = file.split("@@").next().unwrap_or(file);
    if let Some(spec) = file.strip_prefix("tone_stream://") {
        return tone_ms(spec);
    }
    if let Some(spec) = file.strip_prefix("silence_stream://") {
        let ms = spec
            .split(',')
            .next()
            .and_then(|n| n.trim().parse::<i64>().ok())
            .unwrap_or(0);
        return (ms > 0).then_some(ms as u64);
    }
    if file.starts_with("local_stream://") {
        return None;
    }
    Some(FILE_MS)
}

/// `%(on,off,f1[,f2])` segments summed, times `loops=N` (`-1` = forever).
fn tone_ms(spec: &str) -> Option<u64> {
    let mut once: u64 = 0;
    let mut loops: i64 = 1;
    for part in spec.split(';') {
        let part = part.trim();
        if let Some(n) = part
            .strip_prefix("loops=")
            .or_else(|| part.strip_prefix("L="))
        {
            loops = n.trim().parse().unwrap_or(1);
        } else if let Some(inner) = part.strip_prefix("%(") {
            let inner = inner.trim_end_matches(')');
            let mut nums = inner
                .split(',')
                .map(|n| n.trim().parse::<u64>().unwrap_or(0));
            let on = nums.next().unwrap_or(0);
            let off = nums.next().unwrap_or(0);
            once = once.saturating_add(on).saturating_add(off);
        }
    }
    if loops < 0 {
        return None;
    }
    Some(once.saturating_mul(loops.max(1) as u64))
}

pub(crate) fn speak_ms(text: &str) -> u64 {
    (text.chars().count() as u64)
        .saturating_mul(SPEAK_MS_PER_CHAR)
        .max(SPEAK_MS_PER_CHAR)
}

/// `playback_terminators`: default `*`, `any`, `none` (DP:2351-2384).
pub(crate) enum Terminators {
    Any,
    Some(Vec<char>),
}

impl Terminators {
    pub(crate) fn parse(var: Option<&str>) -> Terminators {
        match var {
            None => Terminators::Some(vec!['*']),
            Some(v) if v.eq_ignore_ascii_case("any") => Terminators::Any,
            Some(v) if v.eq_ignore_ascii_case("none") => Terminators::Some(Vec::new()),
            Some(v) => Terminators::Some(v.chars().filter(|c| is_dtmf(*c)).collect()),
        }
    }

    pub(crate) fn contains(&self, digit: char) -> bool {
        match self {
            Terminators::Any => true,
            Terminators::Some(list) => list.contains(&digit),
        }
    }
}

/// `{k=v,...}dial` (and a leading `<k=v>` / `[k=v]`) → the vars and the dial string.
pub(crate) fn split_dial_vars(dial: &str) -> (Vec<(String, String)>, String) {
    let mut vars = Vec::new();
    let mut rest = dial.trim();
    loop {
        let close = match rest.chars().next() {
            Some('{') => '}',
            Some('[') => ']',
            Some('<') => '>',
            _ => break,
        };
        let Some((inside, after)) = rest[1..].split_once(close) else {
            break;
        };
        for kv in inside.split(',') {
            if let Some((k, v)) = kv.split_once('=') {
                vars.push((k.trim().to_owned(), v.trim().to_owned()));
            }
        }
        rest = after.trim_start();
    }
    (vars, rest.to_owned())
}

/// The number a dial string reaches: `sofia/gateway/gw/1555` → `1555`, `user/1000@d` → `1000`.
pub(crate) fn dial_dest(dial: &str) -> String {
    let first = dial.split([',', '|']).next().unwrap_or(dial);
    let (_, first) = split_dial_vars(first);
    let last = first.rsplit('/').next().unwrap_or(&first);
    last.split('@').next().unwrap_or(last).to_owned()
}

/// A dial string may force the far end's behaviour: `{sim_dial_answer=busy}`, or a target
/// whose name says `busy` / `noanswer` (handy for `originate`, which has no caller script).
pub(crate) fn dial_answer_override(dial: &str, vars: &[(String, String)]) -> Option<DialAnswer> {
    let explicit = vars
        .iter()
        .find(|(k, _)| k == "sim_dial_answer")
        .map(|(_, v)| v.to_ascii_lowercase());
    let hint = explicit.unwrap_or_else(|| dial.to_ascii_lowercase());
    if hint.contains("no-answer") || hint.contains("noanswer") || hint.contains("no_answer") {
        Some(DialAnswer::NoAnswer)
    } else if hint.contains("busy") {
        Some(DialAnswer::Busy)
    } else if hint == "answer" {
        Some(DialAnswer::Answer)
    } else {
        None
    }
}

const CAUSES: &[(&str, u16, u16)] = &[
    ("NONE", 0, 480),
    ("UNALLOCATED_NUMBER", 1, 404),
    ("NO_ROUTE_TRANSIT_NET", 2, 404),
    ("NO_ROUTE_DESTINATION", 3, 404),
    ("CHANNEL_UNACCEPTABLE", 6, 480),
    ("NORMAL_CLEARING", 16, 480),
    ("USER_BUSY", 17, 486),
    ("NO_USER_RESPONSE", 18, 408),
    ("NO_ANSWER", 19, 480),
    ("SUBSCRIBER_ABSENT", 20, 480),
    ("CALL_REJECTED", 21, 603),
    ("NUMBER_CHANGED", 22, 410),
    ("REDIRECTION_TO_NEW_DESTINATION", 23, 410),
    ("EXCHANGE_ROUTING_ERROR", 25, 483),
    ("DESTINATION_OUT_OF_ORDER", 27, 502),
    ("INVALID_NUMBER_FORMAT", 28, 484),
    ("FACILITY_REJECTED", 29, 501),
    ("NORMAL_UNSPECIFIED", 31, 480),
    ("NORMAL_CIRCUIT_CONGESTION", 34, 503),
    ("NETWORK_OUT_OF_ORDER", 38, 503),
    ("NORMAL_TEMPORARY_FAILURE", 41, 503),
    ("SWITCH_CONGESTION", 42, 503),
    ("REQUESTED_CHAN_UNAVAIL", 44, 503),
    ("FACILITY_NOT_SUBSCRIBED", 50, 480),
    ("OUTGOING_CALL_BARRED", 52, 403),
    ("INCOMING_CALL_BARRED", 54, 403),
    ("BEARERCAPABILITY_NOTAUTH", 57, 403),
    ("BEARERCAPABILITY_NOTAVAIL", 58, 503),
    ("SERVICE_UNAVAILABLE", 63, 480),
    ("BEARERCAPABILITY_NOTIMPL", 65, 488),
    ("FACILITY_NOT_IMPLEMENTED", 69, 501),
    ("SERVICE_NOT_IMPLEMENTED", 79, 501),
    ("INCOMPATIBLE_DESTINATION", 88, 488),
    ("RECOVERY_ON_TIMER_EXPIRE", 102, 504),
    ("INTERWORKING", 127, 480),
    ("SUCCESS", 142, 480),
    ("ORIGINATOR_CANCEL", 487, 487),
    ("CRASH", 700, 480),
    ("SYSTEM_SHUTDOWN", 701, 480),
    ("LOSE_RACE", 702, 480),
    ("MANAGER_REQUEST", 703, 480),
    ("BLIND_TRANSFER", 800, 480),
    ("ATTENDED_TRANSFER", 801, 480),
    ("ALLOTTED_TIMEOUT", 802, 480),
    ("USER_CHALLENGE", 803, 480),
    ("MEDIA_TIMEOUT", 804, 480),
    ("PICKED_OFF", 805, 480),
    ("USER_NOT_REGISTERED", 806, 480),
    ("PROGRESS_TIMEOUT", 807, 480),
    ("INVALID_GATEWAY", 808, 484),
    ("GATEWAY_DOWN", 809, 503),
    ("INVALID_URL", 810, 484),
    ("INVALID_PROFILE", 811, 502),
    ("NO_PICKUP", 812, 480),
    ("SRTP_READ_ERROR", 813, 480),
    ("BOWOUT", 814, 480),
    ("BUSY_EVERYWHERE", 815, 600),
    ("DECLINE", 816, 603),
    ("DOES_NOT_EXIST_ANYWHERE", 817, 604),
    ("NOT_ACCEPTABLE", 818, 606),
    ("UNWANTED", 819, 607),
    ("NO_IDENTITY", 820, 428),
    ("BAD_IDENTITY_INFO", 821, 429),
    ("UNSUPPORTED_CERTIFICATE", 822, 437),
    ("INVALID_IDENTITY", 823, 438),
    ("STALE_DATE", 824, 403),
    ("REJECT_ALL", 825, 603),
];

/// A cause given by name (any case) or Q.850 number → its canonical name (CH:218-236);
/// unknown names become NORMAL_CLEARING, as FreeSWITCH's lookup falls back.
pub(crate) fn normalize_cause(cause: &str) -> String {
    let cause = cause.trim();
    if cause.starts_with(|c: char| c.is_ascii_digit()) {
        let code = cause.parse::<u16>().unwrap_or(16);
        return CAUSES
            .iter()
            .find(|(_, c, _)| *c == code)
            .map_or("NORMAL_UNSPECIFIED", |(n, _, _)| n)
            .to_owned();
    }
    CAUSES
        .iter()
        .find(|(n, _, _)| n.eq_ignore_ascii_case(cause))
        .map_or("NORMAL_CLEARING", |(n, _, _)| n)
        .to_owned()
}

pub(crate) fn cause_code(cause: &str) -> u16 {
    CAUSES
        .iter()
        .find(|(n, _, _)| n.eq_ignore_ascii_case(cause))
        .map_or(16, |(_, c, _)| *c)
}

/// The SIP status FreeSWITCH sends when it ends an unanswered leg (SOF:292-387).
pub(crate) fn cause_to_sip(cause: &str) -> u16 {
    CAUSES
        .iter()
        .find(|(n, _, _)| n.eq_ignore_ascii_case(cause))
        .map_or(480, |(_, _, s)| *s)
}

/// SIP response → cause (`sofia_glue_sip_cause_to_freeswitch`, SG:1814-1885).
pub(crate) fn sip_to_cause(code: u16) -> &'static str {
    match code {
        200 => "NORMAL_CLEARING",
        401 | 402 | 403 | 407 | 603 | 608 => "CALL_REJECTED",
        404 => "UNALLOCATED_NUMBER",
        485 | 604 => "NO_ROUTE_DESTINATION",
        408 | 504 => "RECOVERY_ON_TIMER_EXPIRE",
        410 => "NUMBER_CHANGED",
        413 | 414 | 416 | 420 | 421 | 423 | 505 | 513 => "INTERWORKING",
        480 => "NO_USER_RESPONSE",
        400 | 481 | 500 | 503 => "NORMAL_TEMPORARY_FAILURE",
        486 | 600 => "USER_BUSY",
        484 => "INVALID_NUMBER_FORMAT",
        488 | 606 => "INCOMPATIBLE_DESTINATION",
        502 => "NETWORK_OUT_OF_ORDER",
        405 => "SERVICE_UNAVAILABLE",
        406 | 415 | 501 => "SERVICE_NOT_IMPLEMENTED",
        482 | 483 => "EXCHANGE_ROUTING_ERROR",
        487 => "ORIGINATOR_CANCEL",
        607 => "UNWANTED",
        428 => "NO_IDENTITY",
        429 => "BAD_IDENTITY_INFO",
        437 => "UNSUPPORTED_CERTIFICATE",
        438 => "INVALID_IDENTITY",
        _ => "NORMAL_UNSPECIFIED",
    }
}

// ---- a small backtracking regex (PCRE subset): search semantics like switch_regex_perform.

#[derive(Debug, Clone)]
enum Node {
    Char(char),
    Any,
    Class(Vec<(char, char)>, bool),
    Start,
    End,
    Group(Vec<Vec<Node>>),
    Repeat(Box<Node>, usize, usize),
}

/// Patterns and inputs are short (≤ 128 digits); bound both so backtracking stays cheap.
const MAX_PATTERN: usize = 512;
const MAX_INPUT: usize = 1_024;

/// Does `pattern` match anywhere in `input`? An invalid pattern matches nothing, as a failed
/// PCRE compile does in FreeSWITCH.
pub(crate) fn regex_search(pattern: &str, input: &str) -> bool {
    if pattern.len() > MAX_PATTERN || input.len() > MAX_INPUT {
        return false;
    }
    let chars: Vec<char> = pattern.chars().collect();
    let mut pos = 0;
    let Some(alts) = parse_alts(&chars, &mut pos, 0) else {
        return false;
    };
    if pos != chars.len() {
        return false;
    }
    let ast = vec![Node::Group(alts)];
    let text: Vec<char> = input.chars().collect();
    let budget = Cell::new(200_000u32);
    (0..=text.len()).any(|start| match_seq(&ast, 0, &text, start, &budget, &mut |_| true))
}

fn parse_alts(p: &[char], pos: &mut usize, depth: u32) -> Option<Vec<Vec<Node>>> {
    if depth > 16 {
        return None;
    }
    let mut alts = vec![Vec::new()];
    while *pos < p.len() {
        let c = p[*pos];
        match c {
            '|' => {
                *pos += 1;
                alts.push(Vec::new());
            }
            ')' => break,
            _ => {
                let atom = parse_atom(p, pos, depth)?;
                let atom = parse_quant(p, pos, atom)?;
                alts.last_mut()?.push(atom);
            }
        }
    }
    Some(alts)
}

fn parse_atom(p: &[char], pos: &mut usize, depth: u32) -> Option<Node> {
    let c = p[*pos];
    *pos += 1;
    Some(match c {
        '.' => Node::Any,
        '^' => Node::Start,
        '$' => Node::End,
        '(' => {
            // `(?:` is the same as `(` here: nothing is captured.
            if p.get(*pos) == Some(&'?') && p.get(*pos + 1) == Some(&':') {
                *pos += 2;
            }
            let alts = parse_alts(p, pos, depth + 1)?;
            if p.get(*pos) != Some(&')') {
                return None;
            }
            *pos += 1;
            Node::Group(alts)
        }
        '[' => {
            let negated = p.get(*pos) == Some(&'^');
            if negated {
                *pos += 1;
            }
            let mut ranges = Vec::new();
            let mut first = true;
            loop {
                let c = *p.get(*pos)?;
                *pos += 1;
                if c == ']' && !first {
                    break;
                }
                first = false;
                let lo = if c == '\\' {
                    let e = *p.get(*pos)?;
                    *pos += 1;
                    match class_escape(e) {
                        Some(mut r) => {
                            ranges.append(&mut r);
                            continue;
                        }
                        None => e,
                    }
                } else {
                    c
                };
                if p.get(*pos) == Some(&'-') && p.get(*pos + 1).is_some_and(|n| *n != ']') {
                    let hi = p[*pos + 1];
                    *pos += 2;
                    ranges.push((lo, hi));
                } else {
                    ranges.push((lo, lo));
                }
            }
            Node::Class(ranges, negated)
        }
        '\\' => {
            let e = *p.get(*pos)?;
            *pos += 1;
            match e {
                'D' => Node::Class(vec![('0', '9')], true),
                'W' => Node::Class(word(), true),
                'S' => Node::Class(space(), true),
                _ => match class_escape(e) {
                    Some(r) => Node::Class(r, false),
                    None => Node::Char(e),
                },
            }
        }
        '*' | '+' | '?' | '{' => return None,
        c => Node::Char(c),
    })
}

fn word() -> Vec<(char, char)> {
    vec![('a', 'z'), ('A', 'Z'), ('0', '9'), ('_', '_')]
}

fn space() -> Vec<(char, char)> {
    vec![(' ', ' '), ('\t', '\t'), ('\n', '\n'), ('\r', '\r')]
}

fn class_escape(e: char) -> Option<Vec<(char, char)>> {
    match e {
        'd' => Some(vec![('0', '9')]),
        'w' => Some(word()),
        's' => Some(space()),
        _ => None,
    }
}

fn parse_quant(p: &[char], pos: &mut usize, atom: Node) -> Option<Node> {
    let (min, max) = match p.get(*pos) {
        Some('*') => (0, usize::MAX),
        Some('+') => (1, usize::MAX),
        Some('?') => (0, 1),
        Some('{') => {
            let close = p[*pos..].iter().position(|c| *c == '}')? + *pos;
            let inside: String = p[*pos + 1..close].iter().collect();
            let (lo, hi) = match inside.split_once(',') {
                Some((lo, "")) => (lo.trim().parse().ok()?, usize::MAX),
                Some((lo, hi)) => (lo.trim().parse().ok()?, hi.trim().parse().ok()?),
                None => {
                    let n = inside.trim().parse().ok()?;
                    (n, n)
                }
            };
            *pos = close;
            (lo, hi)
        }
        _ => return Some(atom),
    };
    *pos += 1;
    // A lazy `?` after a quantifier changes nothing for a yes/no search.
    if p.get(*pos) == Some(&'?') {
        *pos += 1;
    }
    Some(Node::Repeat(Box::new(atom), min, max))
}

fn single(node: &Node, text: &[char], pos: usize) -> Option<usize> {
    match node {
        Node::Char(c) => (text.get(pos) == Some(c)).then_some(pos + 1),
        Node::Any => (pos < text.len() && text[pos] != '\n').then_some(pos + 1),
        Node::Class(ranges, negated) => {
            let c = *text.get(pos)?;
            let inside = ranges.iter().any(|(lo, hi)| *lo <= c && c <= *hi);
            (inside != *negated).then_some(pos + 1)
        }
        Node::Start => (pos == 0).then_some(pos),
        Node::End => (pos == text.len()).then_some(pos),
        Node::Group(_) | Node::Repeat(..) => None,
    }
}

/// One step of the backtracking budget; `false` once it is spent (the match then fails).
fn tick(budget: &Cell<u32>) -> bool {
    let left = budget.get();
    budget.set(left.saturating_sub(1));
    left > 0
}

/// Matches `node` once at `pos`, calling `k` with each possible end until one succeeds.
fn match_one(
    node: &Node,
    text: &[char],
    pos: usize,
    budget: &Cell<u32>,
    k: &mut dyn FnMut(usize) -> bool,
) -> bool {
    match node {
        Node::Group(alts) => {
            for alt in alts {
                if match_seq(alt, 0, text, pos, budget, k) {
                    return true;
                }
            }
            false
        }
        Node::Repeat(..) => match_seq(std::slice::from_ref(node), 0, text, pos, budget, k),
        _ => single(node, text, pos).is_some_and(k),
    }
}

fn match_seq(
    nodes: &[Node],
    i: usize,
    text: &[char],
    pos: usize,
    budget: &Cell<u32>,
    k: &mut dyn FnMut(usize) -> bool,
) -> bool {
    if !tick(budget) {
        return false;
    }
    let Some(node) = nodes.get(i) else {
        return k(pos);
    };
    match node {
        Node::Repeat(inner, min, max) => {
            repeat(inner, (*min, *max), 0, nodes, i, text, pos, budget, k)
        }
        _ => match_one(node, text, pos, budget, &mut |p| {
            match_seq(nodes, i + 1, text, p, budget, k)
        }),
    }
}

#[allow(clippy::too_many_arguments)]
fn repeat(
    inner: &Node,
    (min, max): (usize, usize),
    count: usize,
    nodes: &[Node],
    i: usize,
    text: &[char],
    pos: usize,
    budget: &Cell<u32>,
    k: &mut dyn FnMut(usize) -> bool,
) -> bool {
    if !tick(budget) {
        return false;
    }
    // Greedy: one more repetition first (never an empty one, which would loop), then the rest.
    if count < max
        && match_one(inner, text, pos, budget, &mut |p| {
            p != pos && repeat(inner, (min, max), count + 1, nodes, i, text, p, budget, k)
        })
    {
        return true;
    }
    count >= min && match_seq(nodes, i + 1, text, pos, budget, k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            duration_ms("tone_stream://%(500,500,440);loops=2"),
            Some(2000)
        );
        assert_eq!(
            duration_ms("tone_stream://%(1000,0,350,440);loops=30"),
            Some(30_000)
        );
        assert_eq!(duration_ms("tone_stream://%(200,0,600)"), Some(200));
        assert_eq!(duration_ms("tone_stream://%(200,0,600);loops=-1"), None);
        assert_eq!(duration_ms("silence_stream://250"), Some(250));
        assert_eq!(duration_ms("http_cache://http://x/y.wav"), Some(FILE_MS));
        assert!(is_missing("/srv/missing.wav"));
    }

    #[test]
    fn regex_subset() {
        assert!(regex_search("\\d+", "123"));
        assert!(!regex_search("^\\d+$", "12a"));
        assert!(regex_search("^[0-9]{3}$", "123"));
        assert!(!regex_search("^[0-9]{3}$", "1234"));
        assert!(regex_search("^(1|22)#?$", "22"));
        assert!(regex_search("^(1|22)#?$", "1#"));
        assert!(!regex_search("^(1|22)$", "2"));
        assert!(regex_search("^\\d{1,4}$", "42"));
        assert!(!regex_search("(", "x"));
    }

    #[test]
    fn causes() {
        assert_eq!(normalize_cause("user_busy"), "USER_BUSY");
        assert_eq!(normalize_cause("17"), "USER_BUSY");
        assert_eq!(sip_to_cause(486), "USER_BUSY");
        assert_eq!(sip_to_cause(503), "NORMAL_TEMPORARY_FAILURE");
        assert_eq!(cause_code("DESTINATION_OUT_OF_ORDER"), 27);
    }

    #[test]
    fn dial_strings() {
        let (vars, dial) = split_dial_vars("{a=1,b=2}sofia/gateway/gw/15551234");
        assert_eq!(vars.len(), 2);
        assert_eq!(dial_dest(&dial), "15551234");
        assert_eq!(dial_dest("user/1000@example.com"), "1000");
    }
}
