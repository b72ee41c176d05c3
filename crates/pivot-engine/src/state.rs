//! A call's checkpointable state: everything a node needs to resume the call where its last
//! owner left it (DESIGN §6). Written as JSON through the cluster's `Ownership` after each
//! step, before the next command.

use std::collections::BTreeMap;

use pivot_flow::{BodyFormat, Branch, Flow, HttpMethod, Node, RequestFormat, Step, Variable};
use pivot_webhook::{CallInfo, Progress};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The state a call actor checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallState {
    pub call: CallInfo,
    /// The configured name of the switch the call is on.
    pub switch: String,
    pub started_unix_ms: u64,
    pub program: Program,
    /// The `pivot` node that produced the current document: where follow-ups go and how.
    pub pivot: Option<PivotContext>,
    /// What happened since the last request (digits, recording, dial result).
    pub progress: Progress,
    /// `<Set>`/`set_variables` user variables: sent on every later request.
    pub user_vars: Vec<Variable>,
    /// Requests sent so far (the debug log's `iteration`).
    pub iteration: u32,
    /// Requests since media last played; a loop of them is cut.
    pub requests_without_media: u32,
    /// The last command sequence number used; commands are `<call>:<epoch>:<seq>`.
    pub seq: u64,
    pub answered: bool,
    /// Keys pressed while prompts played, sent as `Digits` on the next request.
    pub digits_pressed: String,
    /// Restarts after a panic; bounded, then the call is hung up.
    pub restarts: u32,
}

/// The settings of the `pivot` node whose documents the call is running.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PivotContext {
    /// The URL of the last document (after redirects): relative URLs resolve against it.
    pub doc_url: String,
    pub method: HttpMethod,
    pub req_format: RequestFormat,
    pub body_format: BodyFormat,
    pub timeout_ms: u64,
    pub debug: bool,
    pub cdr_url: Option<String>,
    pub headers: BTreeMap<String, String>,
}

/// What the call runs next.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Program {
    /// Find the callflow of the dialled number.
    Resolve,
    /// A KAZOO node tree; `path` is the cursor, the branches taken from the root.
    Kazoo { root: StoredNode, path: Vec<Branch> },
    /// A TwiML document; `next` indexes the verb to run.
    Twiml { steps: Vec<Step>, next: usize },
    /// Request a document: a TwiML action, `<Redirect>`, or an API redirect.
    FollowUp { url: String, method: HttpMethod },
    /// Nothing more to do: hang up with `cause`.
    Hangup { cause: String },
}

/// A node tree stored as the flow's own JSON text, so a deep tree checkpoints within
/// serde_json's recursion limit (the flow reader bounds nesting itself).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredNode(pub Node);

impl Serialize for StoredNode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let flow = Flow::Kazoo {
            root: self.0.clone(),
        };
        serializer.serialize_str(&flow.to_json())
    }
}

impl<'de> Deserialize<'de> for StoredNode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        match Flow::from_json(&text).map_err(serde::de::Error::custom)? {
            Flow::Kazoo { root } => Ok(StoredNode(root)),
            Flow::Twiml { .. } => Err(serde::de::Error::custom(
                "a checkpointed KAZOO program holds a TwiML flow",
            )),
        }
    }
}

impl Program {
    /// The step the cursor points at, or `None` when the program has no step there.
    pub fn current_step(&self) -> Option<&Step> {
        match self {
            Program::Kazoo { root, path } => node_at(&root.0, path).map(|n| &n.step),
            Program::Twiml { steps, next } => steps.get(*next),
            _ => None,
        }
    }

    /// A short name of where the call is, for the channels API.
    pub fn describe(&self) -> String {
        match self {
            Program::Resolve => "resolving".to_owned(),
            Program::FollowUp { .. } => "requesting".to_owned(),
            Program::Hangup { .. } => "ending".to_owned(),
            Program::Kazoo { .. } | Program::Twiml { .. } => self
                .current_step()
                .map(|s| s.kind().to_owned())
                .unwrap_or_else(|| "ending".to_owned()),
        }
    }
}

/// The node reached by following `path` from `root`.
pub fn node_at<'a>(root: &'a Node, path: &[Branch]) -> Option<&'a Node> {
    path.iter()
        .try_fold(root, |node, branch| node.children.get(branch))
}

impl CallState {
    pub fn new(call: CallInfo, switch: String, started_unix_ms: u64) -> CallState {
        CallState {
            call,
            switch,
            started_unix_ms,
            program: Program::Resolve,
            pivot: None,
            progress: Progress::default(),
            user_vars: Vec::new(),
            iteration: 0,
            requests_without_media: 0,
            seq: 0,
            answered: false,
            digits_pressed: String::new(),
            restarts: 0,
        }
    }

    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }

    pub fn from_json(text: &str) -> Result<CallState, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// Moves a KAZOO cursor along `branch` (falling back to `_`); `false` when the node has
    /// neither, i.e. the callflow ends here.
    pub fn follow(&mut self, branch: &Branch) -> bool {
        match &mut self.program {
            Program::Kazoo { root, path } => {
                let Some(node) = node_at(&root.0, path) else {
                    return false;
                };
                let taken = if node.children.contains_key(branch) {
                    branch.clone()
                } else if node.children.contains_key(&Branch::Default) {
                    Branch::Default
                } else {
                    return false;
                };
                path.push(taken);
                true
            }
            Program::Twiml { steps, next } => {
                *next += 1;
                *next < steps.len()
            }
            _ => false,
        }
    }

    /// Sets or replaces a user variable (later `<Set>` of the same key wins).
    pub fn set_user_var(&mut self, key: &str, value: &str) {
        match self.user_vars.iter_mut().find(|v| v.key == key) {
            Some(var) => value.clone_into(&mut var.value),
            None => self.user_vars.push(Variable {
                key: key.to_owned(),
                value: value.to_owned(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pivot_flow::Limits;

    fn kazoo(json: &str) -> Node {
        let doc = pivot_flow::parse_kazoo(json.as_bytes(), &Limits::default()).unwrap();
        match doc.flow {
            Flow::Kazoo { root } => root,
            Flow::Twiml { .. } => unreachable!(),
        }
    }

    #[test]
    fn a_deep_program_checkpoints_and_reads_back() {
        // 60 nested nodes: more nesting than serde_json reads by default once serialized.
        let mut json = String::from(r#"{"module":"answer","data":{}}"#);
        for _ in 0..60 {
            json = format!(r#"{{"module":"noop","data":{{}},"children":{{"_":{json}}}}}"#);
        }
        let call = CallInfo {
            call_id: "c1".into(),
            ..CallInfo::default()
        };
        let mut state = CallState::new(call, "sim".into(), 1);
        state.program = Program::Kazoo {
            root: StoredNode(kazoo(&json)),
            path: vec![Branch::Default; 60],
        };
        let text = state.to_json().unwrap();
        let back = CallState::from_json(&text).unwrap();
        assert_eq!(back, state);
        assert_eq!(back.program.current_step(), Some(&Step::Answer));
    }

    #[test]
    fn follow_takes_the_branch_then_the_default_then_ends() {
        let root = kazoo(
            r#"{"module":"menu","data":{},"children":{
                "1":{"module":"answer","data":{}},
                "_":{"module":"hangup","data":{}}}}"#,
        );
        let mut state = CallState::new(CallInfo::default(), "sim".into(), 1);
        state.program = Program::Kazoo {
            root: StoredNode(root.clone()),
            path: vec![],
        };
        assert!(state.follow(&Branch::Digits("1".into())));
        assert_eq!(state.program.current_step(), Some(&Step::Answer));
        assert!(!state.follow(&Branch::Default), "answer has no children");

        state.program = Program::Kazoo {
            root: StoredNode(root),
            path: vec![],
        };
        assert!(state.follow(&Branch::Digits("9".into())));
        assert_eq!(state.program.describe(), "hangup");
    }

    #[test]
    fn user_vars_replace_by_key() {
        let mut state = CallState::new(CallInfo::default(), "sim".into(), 1);
        state.set_user_var("a", "1");
        state.set_user_var("b", "2");
        state.set_user_var("a", "3");
        let pairs: Vec<_> = state
            .user_vars
            .iter()
            .map(|v| (v.key.as_str(), v.value.as_str()))
            .collect();
        assert_eq!(pairs, vec![("a", "3"), ("b", "2")]);
    }
}
