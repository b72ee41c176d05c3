//! One call's actor: it owns the call's state machine (`Resolve → request → steps → follow-ups
//! → end`), sends its switch commands and awaits their completions from its mailbox.
//!
//! The actor is an async task with a bounded mailbox rather than an `actix::Actor`: a call is
//! a sequence of awaits (request, command, completion), which reads top to bottom here, and
//! actix does not catch panics (a handler panic kills its arbiter). The supervisor
//! ([`crate::supervisor`]) wraps each run in `catch_unwind` and restarts it from the checkpoint.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use pivot_cluster::{ClusterError, DebugEntry, Lease};
use pivot_flow::{
    Branch, DialStrategy, DialTarget, Document, Flow, HttpMethod, Media, Node, RequestFormat, Step,
    VariableScope,
};
use pivot_switch::{Command, CommandId, Outcome, ReadResult, Switch, SwitchEvent};
use pivot_webhook::params::{CallStatus, DialResult, DialStatus, request_params};
use pivot_webhook::{DebugRecord, Exchange, Failure, FailureCause, PivotRequest};
use tokio::sync::mpsc;
use tokio::time::sleep_until;
use url::Url;

use crate::engine::Shared;
use crate::state::{CallState, PivotContext, Program, StoredNode};

/// Most repetitions of a prompt with `loop="0"`.
const MAX_PROMPT_LOOPS: u32 = 1_000;

/// What a call actor hears.
#[derive(Debug)]
pub(crate) enum CallMsg {
    /// Boxed: events are large and mailboxes hold many messages for many calls.
    Switch(Box<SwitchEvent>),
    /// API: fetch a new document from `url` now, abandoning what the call does.
    Redirect { url: String, method: HttpMethod },
    /// API: hang the call up.
    Hangup,
    /// The node is draining: stop commanding and release the call for a peer.
    HandOver,
    /// The node cannot prove its lease: stop commanding at once, write nothing.
    Fence,
}

/// Why the actor stopped running steps.
#[derive(Debug)]
pub(crate) enum Stop {
    /// The caller (or the switch) hung up.
    HungUp(String),
    Redirect {
        url: String,
        method: HttpMethod,
    },
    ApiHangup,
    /// Another owner holds a newer epoch: stop commanding at once.
    Fenced,
    HandOver,
    /// The call reached its maximum duration.
    CallLimit,
    /// The flow ended (hangup sent, or the call left pivot's control).
    Done,
    /// Too many requests in a row played nothing (a `<Redirect>` loop).
    LoopCut,
}

/// How a call ended, for `pivot_calls_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    Completed,
    CallerHangup,
    Failed,
    HandedOver,
    Fenced,
}

impl Ending {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Ending::Completed => "completed",
            Ending::CallerHangup => "caller_hangup",
            Ending::Failed => "failed",
            Ending::HandedOver | Ending::Fenced => "handed_over",
        }
    }
}

/// What a step leads to.
enum Next {
    /// Follow this branch (KAZOO, falling back to `_`) or the next verb (TwiML).
    Branch(Branch),
    Replace(Program),
    Hangup(String),
    /// The call left pivot's control (transfer) or was already ended by the step.
    Finished,
}

pub(crate) struct CallActor<'m> {
    shared: Arc<Shared>,
    pub(crate) state: CallState,
    lease: Lease,
    switch: Switch,
    mailbox: &'m mut mpsc::Receiver<CallMsg>,
    status: Arc<std::sync::Mutex<String>>,
    parked_at: Instant,
    setup_recorded: bool,
    call_deadline: tokio::time::Instant,
    /// DTMF events are kept as `Digits` only while a prompt plays (collections read their own).
    keep_dtmf: bool,
    /// The claim wrote this state as its checkpoint: the first checkpoint is not written again.
    /// (Nothing changes the state between the claim and the actor's first checkpoint.)
    claim_checkpointed: bool,
}

impl<'m> CallActor<'m> {
    pub(crate) fn new(
        shared: Arc<Shared>,
        state: CallState,
        lease: Lease,
        switch: Switch,
        mailbox: &'m mut mpsc::Receiver<CallMsg>,
        status: Arc<std::sync::Mutex<String>>,
        parked_at: Instant,
    ) -> CallActor<'m> {
        let elapsed = Duration::from_millis(
            pivot_cluster::now_unix_ms().saturating_sub(state.started_unix_ms),
        );
        let remaining = shared
            .config
            .max_call_duration
            .saturating_sub(elapsed)
            .max(Duration::from_millis(1));
        // A restarted actor's call was set up long ago.
        let setup_recorded = state.seq > 0;
        CallActor {
            call_deadline: tokio::time::Instant::now() + remaining,
            shared,
            state,
            lease,
            switch,
            mailbox,
            status,
            parked_at,
            setup_recorded,
            keep_dtmf: false,
            claim_checkpointed: false,
        }
    }

    /// The state this actor starts with was checkpointed by the claim.
    pub(crate) fn claim_checkpointed(&mut self) {
        self.claim_checkpointed = true;
    }

    /// Runs the call to its end.
    pub(crate) async fn run(&mut self) -> Ending {
        loop {
            self.publish_status();
            if let Err(stop) = self.checkpoint().await {
                return self.conclude(stop).await;
            }
            if let Err(stop) = self.step().await {
                match stop {
                    Stop::Redirect { url, method } => {
                        // Whatever is queued belongs to the abandoned document.
                        let _ = self.switch.break_all(&self.state.call.call_id).await;
                        self.state.program = Program::FollowUp { url, method };
                    }
                    stop => return self.conclude(stop).await,
                }
            }
        }
    }

    async fn conclude(&mut self, stop: Stop) -> Ending {
        match stop {
            Stop::HungUp(cause) => {
                tracing::debug!(call_id = %self.state.call.call_id, %cause, "caller hung up");
                Ending::CallerHangup
            }
            Stop::ApiHangup => {
                self.kill_now("NORMAL_CLEARING").await;
                Ending::Completed
            }
            Stop::CallLimit => {
                tracing::warn!(call_id = %self.state.call.call_id, "maximum call duration reached");
                self.kill_now("ALLOTTED_TIMEOUT").await;
                Ending::Failed
            }
            Stop::LoopCut => {
                self.hangup_now("NORMAL_CLEARING").await;
                Ending::Failed
            }
            Stop::Fenced => Ending::Fenced,
            Stop::HandOver => Ending::HandedOver,
            Stop::Done => Ending::Completed,
            // Handled by `run`; kept exhaustive rather than a wildcard.
            Stop::Redirect { .. } => Ending::Completed,
        }
    }

    fn publish_status(&self) {
        if let Ok(mut status) = self.status.lock() {
            *status = self.state.program.describe();
        }
    }

    async fn checkpoint(&mut self) -> Result<(), Stop> {
        if std::mem::take(&mut self.claim_checkpointed) {
            return Ok(());
        }
        let text = match self.state.to_json() {
            Ok(text) => text,
            Err(error) => {
                tracing::error!(call_id = %self.state.call.call_id, %error, "cannot serialize the call state");
                return Ok(());
            }
        };
        match self.shared.ownership.checkpoint(&self.lease, text).await {
            Ok(()) => Ok(()),
            Err(ClusterError::Fenced { .. }) => {
                tracing::warn!(call_id = %self.state.call.call_id, "fenced: another node owns this call now");
                Err(Stop::Fenced)
            }
            Err(error) => {
                // The call goes on; a takeover would resume from the previous checkpoint.
                // (TimedOwnership has counted the error.)
                tracing::warn!(call_id = %self.state.call.call_id, %error, "checkpoint not written");
                Ok(())
            }
        }
    }

    async fn step(&mut self) -> Result<(), Stop> {
        match &self.state.program {
            Program::Resolve => {
                // The supervisor resolves before claiming; a resumed call never sits here.
                self.state.program = Program::Hangup {
                    cause: "UNALLOCATED_NUMBER".to_owned(),
                };
                Ok(())
            }
            Program::FollowUp { url, method } => {
                let (url, method) = (url.clone(), *method);
                self.follow_up(&url, method).await
            }
            Program::Hangup { cause } => {
                let cause = cause.clone();
                self.hangup_now(&cause).await;
                Err(Stop::Done)
            }
            Program::Kazoo { root, path } => {
                let node = crate::state::node_at(&root.0, path).cloned();
                let Some(node) = node else {
                    self.state.program = Program::Hangup {
                        cause: "NORMAL_CLEARING".to_owned(),
                    };
                    return Ok(());
                };
                let next = if node.skip_module {
                    Next::Branch(Branch::Default)
                } else {
                    self.count_step(&node.step);
                    self.execute(&node.step, Some(&node)).await?
                };
                self.apply(next);
                Ok(())
            }
            Program::Twiml { steps, next } => {
                let Some(step) = steps.get(*next).cloned() else {
                    // The end of a TwiML document hangs up (Twilio's behaviour).
                    self.state.program = Program::Hangup {
                        cause: "NORMAL_CLEARING".to_owned(),
                    };
                    return Ok(());
                };
                self.count_step(&step);
                let next = self.execute(&step, None).await?;
                self.apply(next);
                Ok(())
            }
        }
    }

    fn count_step(&self, step: &Step) {
        self.shared
            .metrics
            .flow_steps
            .with_label_values(&[step.kind()])
            .inc();
    }

    fn apply(&mut self, next: Next) {
        match next {
            Next::Branch(branch) => {
                if !self.state.follow(&branch) {
                    self.state.program = Program::Hangup {
                        cause: "NORMAL_CLEARING".to_owned(),
                    };
                }
            }
            Next::Replace(program) => self.state.program = program,
            Next::Hangup(cause) => self.state.program = Program::Hangup { cause },
            Next::Finished => {
                self.state.program = Program::Hangup {
                    cause: String::new(),
                }
            }
        }
    }

    // ---- steps -------------------------------------------------------------------------

    async fn execute(&mut self, step: &Step, node: Option<&Node>) -> Result<Next, Stop> {
        let next = Next::Branch(Branch::Default);
        match step {
            Step::Answer => {
                self.ensure_answered().await?;
                Ok(next)
            }
            Step::Noop | Step::Unknown(_) => Ok(next),
            Step::Say(say) => {
                if let Some(marker) = &self.shared.config.panic_marker
                    && &say.text == marker
                    && self.state.restarts == 0
                {
                    panic!("panic marker spoken on call {}", self.state.call.call_id);
                }
                self.ensure_answered().await?;
                let command = self.speak(
                    &say.text,
                    say.voice.as_deref(),
                    say.engine.as_deref(),
                    say.terminators.as_str(),
                );
                self.prompt_loops(command, say.loops).await?;
                Ok(next)
            }
            Step::Play(play) => {
                if play.answer {
                    self.ensure_answered().await?;
                }
                let command = self.media_command(&play.media, play.terminators.as_str());
                self.prompt_loops(command, play.loops).await?;
                Ok(next)
            }
            Step::Pause(pause) => {
                self.state.requests_without_media = 0;
                self.keep_dtmf = true;
                let result = self
                    .command(Command::Sleep {
                        ms: pause.duration_ms,
                    })
                    .await;
                self.keep_dtmf = false;
                result?;
                Ok(next)
            }
            Step::Gather(gather) => {
                self.ensure_answered().await?;
                let terminators = gather.finish_on_key.map(String::from).unwrap_or_default();
                let digits = self
                    .prompt_and_collect(
                        &gather.prompts,
                        gather.num_digits.unwrap_or(128),
                        u64::from(gather.timeout_s) * 1000,
                        u64::from(gather.timeout_s) * 1000,
                        &terminators,
                    )
                    .await?;
                if digits.is_empty() && !gather.action_on_empty_result {
                    // Twilio: no input falls through to the next verb.
                    return Ok(next);
                }
                self.state.progress.digits = Some(digits);
                Ok(Next::Replace(self.follow_up_program(
                    gather.action.as_deref(),
                    gather.method,
                )))
            }
            Step::CollectDtmf(collect) => {
                self.ensure_answered().await?;
                let digits = self
                    .collect(
                        "silence_stream://250",
                        collect.max_digits,
                        collect.timeout_ms,
                        collect.interdigit_timeout_ms,
                        collect.terminators.as_str(),
                    )
                    .await?;
                let digits = std::mem::take(&mut self.state.digits_pressed) + &digits;
                self.state
                    .progress
                    .dtmf_collections
                    .insert(collect.collection_name.clone(), digits);
                Ok(next)
            }
            Step::Menu(menu) => self.menu(menu, node).await,
            Step::Record(record) => self.record(record).await,
            Step::Dial(dial) => self.dial(dial).await,
            Step::Conference(conference) => {
                self.ensure_answered().await?;
                self.state.requests_without_media = 0;
                self.command(Command::Conference {
                    name: conference.name.clone(),
                })
                .await?;
                Ok(next)
            }
            Step::Redirect(redirect) => {
                for var in &redirect.variables {
                    self.state.set_user_var(&var.key, &var.value);
                }
                Ok(Next::Replace(
                    self.follow_up_program(Some(&redirect.url), redirect.method),
                ))
            }
            Step::Hangup(hangup) => Ok(Next::Hangup(
                hangup
                    .cause
                    .clone()
                    .unwrap_or_else(|| "NORMAL_CLEARING".to_owned()),
            )),
            Step::Reject(reject) => {
                if let Some(prompt) = &reject.prompt {
                    let command = self.media_command(prompt, "");
                    self.command(command).await?;
                }
                self.state.progress.call_status = Some(match reject.reason {
                    pivot_flow::RejectReason::Busy => CallStatus::Busy,
                    pivot_flow::RejectReason::Rejected => CallStatus::NoAnswer,
                });
                self.command(Command::Respond {
                    code: reject.reason.sip_code(),
                    reason: None,
                })
                .await?;
                Ok(Next::Finished)
            }
            Step::Respond(respond) => {
                if let Some(media) = &respond.media {
                    let command = self.media_command(media, "");
                    self.command(command).await?;
                }
                self.command(Command::Respond {
                    code: respond.code,
                    reason: respond.message.clone(),
                })
                .await?;
                if respond.code >= 300 {
                    Ok(Next::Finished)
                } else {
                    Ok(next)
                }
            }
            Step::SetVariables(set) => {
                for var in &set.variables {
                    match set.scope {
                        VariableScope::User => self.state.set_user_var(&var.key, &var.value),
                        VariableScope::CustomApplication => {
                            self.state
                                .call
                                .custom_application_vars
                                .insert(var.key.clone(), var.value.clone());
                        }
                    }
                }
                if set.export && !set.variables.is_empty() {
                    let vars = set
                        .variables
                        .iter()
                        .map(|v| (v.key.clone(), v.value.clone()))
                        .collect();
                    self.command(Command::SetVars { vars, export: true })
                        .await?;
                }
                Ok(next)
            }
            Step::SetChannelVariable(set) => {
                self.command(Command::SetVars {
                    vars: vec![(set.variable.clone(), set.value.clone())],
                    export: set.channel == pivot_flow::ChannelScope::Both,
                })
                .await?;
                Ok(next)
            }
            Step::SendDtmf(send) => {
                self.command(Command::SendDtmf {
                    digits: send.digits.clone(),
                    duration_ms: send.duration_ms,
                })
                .await?;
                Ok(next)
            }
            Step::Transfer(transfer) => {
                self.command(Command::Transfer {
                    extension: transfer.target.clone(),
                    dialplan: None,
                    context: None,
                })
                .await?;
                Ok(Next::Finished)
            }
            Step::Park(park) => {
                // pivot has no parking lot of its own: the call waits in the switch's park for
                // `ringback_timeout_ms` (or until hangup), which is what a caller hears.
                self.ensure_answered().await?;
                self.state.requests_without_media = 0;
                let ms = park
                    .ringback_timeout_ms
                    .unwrap_or(self.shared.config.max_call_duration.as_millis() as u64);
                self.command(Command::Sleep { ms }).await?;
                Ok(next)
            }
            Step::Webhook(webhook) => {
                self.fire_webhook(webhook);
                Ok(next)
            }
            Step::Pivot(pivot) => self.pivot(pivot).await,
        }
    }

    async fn pivot(&mut self, pivot: &pivot_flow::Pivot) -> Result<Next, Stop> {
        let account = self
            .shared
            .config
            .accounts
            .get(&self.state.call.account_id)
            .cloned()
            .unwrap_or_default();
        let mut headers = account.custom_request_headers;
        headers.extend(pivot.custom_request_headers.clone());
        self.state.pivot = Some(PivotContext {
            doc_url: pivot.voice_url.clone(),
            method: pivot.method,
            req_format: pivot.req_format,
            body_format: pivot.req_body_format,
            timeout_ms: pivot.req_timeout_ms,
            debug: pivot.debug,
            cdr_url: pivot.cdr_url.clone(),
            headers,
        });
        let url = match Url::parse(&pivot.voice_url) {
            Ok(url) => url,
            Err(error) => {
                let failure = Failure::new(
                    FailureCause::InvalidFlow,
                    format!("voice_url {:?} is not a URL: {error}", pivot.voice_url),
                );
                self.record_failure_only(&failure).await;
                return Ok(Next::Branch(Branch::Default));
            }
        };
        match self.request(url, pivot.method).await? {
            Ok(program) => Ok(Next::Replace(program)),
            // Any failure takes the pivot node's `_` child (or hangs up without one).
            Err(_) => Ok(Next::Branch(Branch::Default)),
        }
    }

    async fn follow_up(&mut self, url: &str, method: HttpMethod) -> Result<(), Stop> {
        let base = self.doc_url();
        let resolved = match &base {
            Some(base) => pivot_webhook::encode::resolve(base, url).map_err(|e| e.to_string()),
            None => Url::parse(url).map_err(|e| e.to_string()),
        };
        // What a fallback reports as `ErrorUrl`: the request that failed, as far as it is a URL.
        let failed_url = resolved.as_ref().ok().cloned().or(base);
        let result = match resolved {
            Ok(url) => self.request(url, method).await?,
            Err(error) => {
                let failure = Failure::new(
                    FailureCause::InvalidFlow,
                    format!("follow-up URL {url:?} is not usable: {error}"),
                );
                self.record_failure_only(&failure).await;
                Err(failure)
            }
        };
        self.state.program = match result {
            Ok(program) => program,
            Err(failure) => match self.fallback_url() {
                Some(fallback) => match self.fallback(fallback, failed_url, &failure).await? {
                    Ok(program) => program,
                    Err(_) => Program::Hangup {
                        cause: "NORMAL_CLEARING".to_owned(),
                    },
                },
                // A failed follow-up with no fallback hangs up cleanly.
                None => Program::Hangup {
                    cause: "NORMAL_CLEARING".to_owned(),
                },
            },
        };
        Ok(())
    }

    fn fallback_url(&self) -> Option<Url> {
        self.shared
            .config
            .accounts
            .get(&self.state.call.account_id)
            .and_then(|a| a.fallback_url.as_deref())
            .and_then(|u| Url::parse(u).ok())
    }

    fn doc_url(&self) -> Option<Url> {
        self.state
            .pivot
            .as_ref()
            .and_then(|p| Url::parse(&p.doc_url).ok())
    }

    fn follow_up_program(&self, action: Option<&str>, method: HttpMethod) -> Program {
        let url = action
            .map(str::to_owned)
            .or_else(|| self.state.pivot.as_ref().map(|p| p.doc_url.clone()))
            .unwrap_or_default();
        Program::FollowUp { url, method }
    }

    // ---- requests ----------------------------------------------------------------------

    fn pivot_context(&self) -> PivotContext {
        self.state.pivot.clone().unwrap_or_else(|| PivotContext {
            doc_url: String::new(),
            method: HttpMethod::Get,
            req_format: RequestFormat::Kazoo,
            body_format: pivot_flow::BodyFormat::Form,
            timeout_ms: self.shared.config.default_request_timeout.as_millis() as u64,
            debug: false,
            cdr_url: None,
            headers: BTreeMap::new(),
        })
    }

    fn build_request(&mut self, url: Url, method: HttpMethod) -> PivotRequest {
        let context = self.pivot_context();
        let mut progress = self.state.progress.clone();
        progress.user_vars = self.state.user_vars.clone();
        progress.call_status.get_or_insert(if self.state.answered {
            CallStatus::InProgress
        } else {
            CallStatus::Ringing
        });
        if progress.digits.is_none() && !self.state.digits_pressed.is_empty() {
            progress.digits = Some(self.state.digits_pressed.clone());
        }
        let params = request_params(context.req_format, &self.state.call, &progress);
        PivotRequest {
            url,
            method,
            format: context.req_format,
            body_format: context.body_format,
            params,
            timeout: Duration::from_millis(context.timeout_ms),
            signing_secret: self
                .shared
                .config
                .accounts
                .get(&self.state.call.account_id)
                .and_then(|a| a.signing_secret.clone()),
            headers: context.headers,
        }
    }

    /// Sends one request and turns its document into the next program; a loop of requests
    /// without media is cut here.
    async fn request(
        &mut self,
        url: Url,
        method: HttpMethod,
    ) -> Result<Result<Program, Failure>, Stop> {
        if self.state.requests_without_media >= self.shared.config.max_requests_without_media {
            self.shared.metrics.loops_cut.inc();
            let failure = Failure::new(
                FailureCause::InvalidFlow,
                format!(
                    "{} requests in a row played nothing (last: {url}); the request loop is cut",
                    self.state.requests_without_media
                ),
            );
            tracing::warn!(call_id = %self.state.call.call_id, %url, "request loop cut");
            self.record_failure_only(&failure).await;
            return Err(Stop::LoopCut);
        }
        let request = self.build_request(url, method);
        let exchange = self.exchange(&request).await?;
        self.state.iteration += 1;
        self.state.requests_without_media += 1;
        self.observe(&request, &exchange);
        let failed = exchange.result.is_err();
        let debug = self.state.pivot.as_ref().is_some_and(|p| p.debug);
        if debug || failed {
            self.record_debug(&exchange.records).await;
        }
        match exchange.result {
            Ok(document) => {
                self.state.progress = Default::default();
                self.state.digits_pressed.clear();
                if let Some(pivot) = &mut self.state.pivot {
                    pivot.doc_url = exchange.final_url.to_string();
                }
                for warning in &document.warnings {
                    tracing::debug!(call_id = %self.state.call.call_id, %warning, "document warning");
                }
                Ok(Ok(program_of(document)))
            }
            Err(failure) => {
                tracing::info!(
                    call_id = %self.state.call.call_id,
                    cause = failure.cause.as_str(),
                    message = %failure.message,
                    "pivot request failed"
                );
                Ok(Err(failure))
            }
        }
    }

    async fn fallback(
        &mut self,
        fallback_url: Url,
        failed_url: Option<Url>,
        failure: &Failure,
    ) -> Result<Result<Program, Failure>, Stop> {
        let failed_url = failed_url.unwrap_or_else(|| fallback_url.clone());
        let request = self.build_request(failed_url, HttpMethod::Post);
        let request = request.fallback(fallback_url, HttpMethod::Post, failure);
        let exchange = self.exchange(&request).await?;
        self.state.iteration += 1;
        self.observe(&request, &exchange);
        self.record_debug(&exchange.records).await;
        Ok(exchange.result.map(|document| {
            self.state.progress = Default::default();
            program_of(document)
        }))
    }

    /// The exchange, abandoned at once if the caller hangs up; bounded by the request's own
    /// deadline plus one second even if the client misbehaved.
    async fn exchange(&mut self, request: &PivotRequest) -> Result<Exchange, Stop> {
        let started = Instant::now();
        let hard_deadline = tokio::time::Instant::now() + request.timeout + Duration::from_secs(1);
        let webhook = self.shared.webhook.clone();
        let fetch = webhook.fetch(request);
        tokio::pin!(fetch);
        loop {
            tokio::select! {
                exchange = &mut fetch => return Ok(exchange),
                message = self.mailbox.recv() => self.on_message(message)?,
                _ = sleep_until(hard_deadline) => {
                    return Ok(Exchange {
                        result: Err(Failure::new(FailureCause::Timeout, format!(
                            "no answer within {} ms", request.timeout.as_millis()))),
                        records: Vec::new(),
                        final_url: request.url.clone(),
                        elapsed: started.elapsed(),
                    });
                }
                _ = sleep_until(self.call_deadline) => return Err(Stop::CallLimit),
            }
        }
    }

    fn observe(&self, request: &PivotRequest, exchange: &Exchange) {
        let format = match request.format {
            RequestFormat::Kazoo => "kazoo",
            RequestFormat::Twiml => "twiml",
        };
        let method = match request.method {
            HttpMethod::Get => "get",
            HttpMethod::Post => "post",
        };
        let outcome = match &exchange.result {
            Ok(_) => "success",
            Err(failure) => failure.cause.as_str(),
        };
        let metrics = &self.shared.metrics;
        metrics
            .webhook_duration
            .with_label_values(&[format, method, outcome])
            .observe(exchange.elapsed.as_secs_f64());
        if let Err(failure) = &exchange.result {
            metrics
                .webhook_failures
                .with_label_values(&[failure.cause.as_str()])
                .inc();
        }
    }

    async fn record_failure_only(&mut self, failure: &Failure) {
        self.shared
            .metrics
            .webhook_failures
            .with_label_values(&[failure.cause.as_str()])
            .inc();
        let record = DebugRecord::Error {
            error: failure.cause,
            message: failure.message.clone(),
        };
        self.record_debug(&[record]).await;
    }

    async fn record_debug(&mut self, records: &[DebugRecord]) {
        if records.is_empty() {
            return;
        }
        let call_id = self.state.call.call_id.clone();
        let iteration = self.state.iteration;
        let now = pivot_cluster::now_unix_ms();
        let entries = records
            .iter()
            .enumerate()
            .map(|(n, record)| {
                let mut value = serde_json::to_value(record).unwrap_or_default();
                let id = format!("{call_id}-{iteration}-{n}-{now}");
                if let Some(object) = value.as_object_mut() {
                    object.insert("call_id".into(), call_id.clone().into());
                    object.insert("id".into(), id.clone().into());
                    object.insert("iteration".into(), iteration.into());
                }
                DebugEntry {
                    id,
                    call_id: call_id.clone(),
                    iteration,
                    created_unix_ms: now,
                    record: value,
                }
            })
            .collect();
        match self
            .shared
            .debug
            .append(
                &self.state.call.account_id,
                &call_id,
                &self.shared.config.node_id,
                entries,
            )
            .await
        {
            Ok(0) => {}
            Ok(dropped) => self
                .shared
                .metrics
                .debug_entries_dropped
                .inc_by(dropped as u64),
            Err(error) => {
                tracing::warn!(%call_id, %error, "debug entries not stored");
            }
        }
    }

    fn fire_webhook(&self, webhook: &pivot_flow::Webhook) {
        let Ok(url) = Url::parse(&webhook.uri) else {
            tracing::warn!(call_id = %self.state.call.call_id, uri = %webhook.uri, "webhook uri is not a URL");
            return;
        };
        let mut params =
            request_params(RequestFormat::Kazoo, &self.state.call, &Default::default());
        for var in &webhook.custom_data {
            params.set(var.key.clone(), var.value.clone());
        }
        let policy = pivot_webhook::RetryPolicy {
            attempts: webhook.retries.saturating_add(1).min(5),
            ..Default::default()
        };
        let client = self.shared.webhook.clone();
        // Fire and forget, as KAZOO's `webhook` module: bounded by the retry policy.
        tokio::spawn(async move {
            client.post_cdr(&url, &params, &policy).await;
        });
    }

    // ---- commands ----------------------------------------------------------------------

    async fn ensure_answered(&mut self) -> Result<(), Stop> {
        if !self.state.answered {
            self.command(Command::Answer).await?;
            self.state.answered = true;
        }
        Ok(())
    }

    fn speak(
        &self,
        text: &str,
        voice: Option<&str>,
        engine: Option<&str>,
        terminators: &str,
    ) -> Command {
        let tts = &self.shared.config.tts;
        Command::Speak {
            engine: engine.unwrap_or(&tts.engine).to_owned(),
            voice: tts.voice(voice),
            text: text.to_owned(),
            terminators: terminators.to_owned(),
        }
    }

    fn media_command(&self, media: &Media, terminators: &str) -> Command {
        let play = |media: String| Command::Play {
            media,
            loops: 1,
            terminators: terminators.to_owned(),
        };
        match media {
            Media::Url(url) => play(format!("http_cache://{url}")),
            Media::Tone(tone) => play(tone.clone()),
            Media::Tts(text) => self.speak(text, None, None, terminators),
            Media::Path(path) => {
                // TwiML media is relative to its document (Twilio's rule); KAZOO paths are
                // switch files.
                // A reference with a scheme of its own (`silence_stream://`, `local_stream://`)
                // is a switch source: KAZOO passes it verbatim, and as a URL reference it
                // would resolve to a path under the document.
                let twiml =
                    matches!(self.state.program, Program::Twiml { .. }) && !has_own_scheme(path);
                match (twiml, self.doc_url()) {
                    (true, Some(base)) => match pivot_webhook::encode::resolve(&base, path) {
                        Ok(url) => play(format!("http_cache://{url}")),
                        Err(_) => play(path.clone()),
                    },
                    _ => play(path.clone()),
                }
            }
        }
    }

    /// Plays a prompt `loops` times (0: until hangup or a key); a key ends the loop.
    async fn prompt_loops(&mut self, command: Command, loops: u32) -> Result<(), Stop> {
        self.state.requests_without_media = 0;
        // `loops = 0` repeats until hangup or a key, bounded like FreeSWITCH's own loops.
        let rounds = if loops == 0 { MAX_PROMPT_LOOPS } else { loops };
        for _ in 0..rounds {
            self.keep_dtmf = true;
            let outcome = self.command(command.clone()).await;
            self.keep_dtmf = false;
            match outcome? {
                Outcome::Done => {}
                _ => break,
            }
        }
        Ok(())
    }

    /// Plays `prompts` (any key stops them; that key is the first digit), then collects the
    /// rest: what `<Gather>` and `menu` do.
    async fn prompt_and_collect(
        &mut self,
        prompts: &[Step],
        max_digits: u32,
        timeout_ms: u64,
        interdigit_ms: u64,
        terminators: &str,
    ) -> Result<String, Stop> {
        self.state.digits_pressed.clear();
        let mut first = None;
        for prompt in prompts {
            let command = match prompt {
                Step::Say(say) => self.speak(
                    &say.text,
                    say.voice.as_deref(),
                    say.engine.as_deref(),
                    pivot_flow::Terminators::all().as_str(),
                ),
                Step::Play(play) => {
                    self.media_command(&play.media, pivot_flow::Terminators::all().as_str())
                }
                Step::Pause(pause) => Command::Sleep {
                    ms: pause.duration_ms,
                },
                Step::SendDtmf(send) => Command::SendDtmf {
                    digits: send.digits.clone(),
                    duration_ms: send.duration_ms,
                },
                _ => continue,
            };
            self.state.requests_without_media = 0;
            if let Outcome::Interrupted { key: Some(key) } = self.command(command).await? {
                first = Some(key);
                break;
            }
        }
        let mut digits = String::new();
        if let Some(key) = first {
            if terminators.contains(key) {
                return Ok(digits);
            }
            digits.push(key);
            if digits.len() as u32 >= max_digits {
                return Ok(digits);
            }
        }
        let rest = self
            .collect(
                "silence_stream://250",
                max_digits.saturating_sub(digits.len() as u32).max(1),
                timeout_ms,
                interdigit_ms,
                terminators,
            )
            .await?;
        digits.push_str(&rest);
        Ok(digits)
    }

    async fn collect(
        &mut self,
        prompt: &str,
        max_digits: u32,
        timeout_ms: u64,
        interdigit_ms: u64,
        terminators: &str,
    ) -> Result<String, Stop> {
        let variable = format!("pivot_collected_{}", self.state.seq + 1);
        let outcome = self
            .command(Command::Collect {
                prompt: prompt.to_owned(),
                min_digits: 1,
                max_digits: max_digits.clamp(1, 128),
                tries: 1,
                timeout_ms,
                digit_timeout_ms: interdigit_ms,
                terminators: terminators.to_owned(),
                variable,
            })
            .await?;
        Ok(match outcome {
            Outcome::Digits {
                digits,
                result: ReadResult::Success,
                ..
            } => digits,
            Outcome::Digits { digits, .. } => digits,
            _ => String::new(),
        })
    }

    async fn menu(&mut self, menu: &pivot_flow::Menu, node: Option<&Node>) -> Result<Next, Stop> {
        self.ensure_answered().await?;
        let has = |branch: &Branch| node.is_some_and(|n| n.children.contains_key(branch));
        let prompt = |media: &Option<Media>| -> Vec<Step> {
            match media {
                Some(Media::Tts(text)) => vec![Step::Say(pivot_flow::Say {
                    text: text.clone(),
                    voice: None,
                    language: None,
                    engine: None,
                    loops: 1,
                    terminators: pivot_flow::Terminators::all(),
                })],
                Some(media) => vec![Step::Play(pivot_flow::Play {
                    media: media.clone(),
                    loops: 1,
                    terminators: pivot_flow::Terminators::all(),
                    answer: true,
                })],
                None => Vec::new(),
            }
        };
        let attempts = menu.retries.max(1);
        for _ in 0..attempts {
            let digits = self
                .prompt_and_collect(
                    &prompt(&menu.greeting),
                    menu.max_extension_length.max(1),
                    menu.timeout_ms,
                    menu.interdigit_timeout_ms,
                    "#",
                )
                .await?;
            if digits.is_empty() {
                if has(&Branch::Timeout) {
                    return Ok(Next::Branch(Branch::Timeout));
                }
                continue;
            }
            let branch = Branch::Digits(digits);
            if has(&branch) {
                return Ok(Next::Branch(branch));
            }
            for step in prompt(&menu.invalid_media) {
                if let Step::Say(_) | Step::Play(_) = step {
                    let command = match &step {
                        Step::Say(s) => self.speak(&s.text, None, None, ""),
                        Step::Play(p) => self.media_command(&p.media, ""),
                        _ => continue,
                    };
                    self.command(command).await?;
                }
            }
        }
        if let Some(exit) = &menu.exit_media {
            let command = self.media_command(exit, "");
            self.command(command).await?;
        }
        if has(&Branch::MaxRetries) {
            Ok(Next::Branch(Branch::MaxRetries))
        } else {
            Ok(Next::Hangup("NORMAL_CLEARING".to_owned()))
        }
    }

    async fn record(&mut self, record: &pivot_flow::Record) -> Result<Next, Stop> {
        self.ensure_answered().await?;
        self.state.requests_without_media = 0;
        if record.beep {
            self.command(Command::Play {
                media: "tone_stream://%(500,0,800)".to_owned(),
                loops: 1,
                terminators: String::new(),
            })
            .await?;
        }
        let extension = match record.format {
            pivot_flow::AudioFormat::Mp3 => "mp3",
            pivot_flow::AudioFormat::Wav => "wav",
        };
        let path = format!(
            "{}/{}-{}.{extension}",
            self.shared.config.recordings_dir.trim_end_matches('/'),
            self.state.call.call_id,
            self.state.seq + 1
        );
        let outcome = self
            .command(Command::Record {
                path: path.clone(),
                time_limit_s: record.max_length_s,
                silence_s: record.silence_timeout_s,
                terminators: record.terminators.as_str().to_owned(),
            })
            .await?;
        let duration_ms = match outcome {
            Outcome::Recorded { duration_ms, .. } => duration_ms,
            _ => 0,
        };
        self.state.progress.recording_duration_s = Some(duration_ms.div_ceil(1000));
        if let Some(storage) = &record.storage_url {
            let target = match self.doc_url() {
                Some(base) => pivot_webhook::encode::resolve(&base, storage)
                    .map(|u| u.to_string())
                    .unwrap_or_else(|_| storage.clone()),
                None => storage.clone(),
            };
            match self
                .switch
                .bgapi(
                    &self.state.call.call_id,
                    &format!("http_put {target} {path}"),
                )
                .await
            {
                Ok(reply) if !reply.starts_with("-ERR") => {}
                Ok(reply) => {
                    tracing::warn!(call_id = %self.state.call.call_id, %reply, "recording upload refused")
                }
                Err(error) => {
                    tracing::warn!(call_id = %self.state.call.call_id, %error, "recording upload failed")
                }
            }
            self.state.progress.recording_url = Some(target);
        } else {
            self.state.progress.recording_url = Some(path);
        }
        match (&record.action, &self.state.program) {
            (Some(action), _) => Ok(Next::Replace(
                self.follow_up_program(Some(action), record.method),
            )),
            // Twilio: a `<Record>` without action requests the current document again.
            (None, Program::Twiml { .. }) => {
                Ok(Next::Replace(self.follow_up_program(None, record.method)))
            }
            (None, _) => Ok(Next::Branch(Branch::Default)),
        }
    }

    async fn dial(&mut self, dial: &pivot_flow::Dial) -> Result<Next, Stop> {
        self.state.requests_without_media = 0;
        if let [DialTarget::Conference(conference)] = dial.targets.as_slice() {
            self.ensure_answered().await?;
            self.command(Command::Conference {
                name: conference.name.clone(),
            })
            .await?;
            return Ok(Next::Branch(Branch::Default));
        }
        let targets = dial
            .targets
            .iter()
            .filter_map(|target| self.dial_string(target))
            .collect::<Vec<_>>();
        let outcome = self
            .command(Command::Dial {
                targets,
                sequential: dial.strategy == DialStrategy::Single,
                timeout_s: dial.timeout_s,
                caller_id_number: dial.caller_id.clone(),
                caller_id_name: None,
                time_limit_s: Some(dial.time_limit_s),
                continue_on_fail: true,
            })
            .await?;
        let (status, failed) = match &outcome {
            Outcome::Bridged { .. } => (DialStatus::Completed, false),
            Outcome::DialFailed { cause } => (dial_status(cause), true),
            _ => (DialStatus::Failed, true),
        };
        self.state.progress.dial = Some(DialResult {
            status,
            call_sid: None,
            duration_s: None,
        });
        match &dial.action {
            Some(action) => Ok(Next::Replace(
                self.follow_up_program(Some(action), dial.method),
            )),
            None if failed && !dial.continue_on_fail => {
                Ok(Next::Hangup("NORMAL_CLEARING".to_owned()))
            }
            None => Ok(Next::Branch(Branch::Default)),
        }
    }

    fn dial_string(&self, target: &DialTarget) -> Option<String> {
        match target {
            DialTarget::Number { number, .. } => {
                let number = number.clone().unwrap_or_else(|| self.state.call.to.clone());
                Some(
                    self.shared
                        .config
                        .number_dial_template
                        .replace("{number}", &number),
                )
            }
            DialTarget::Sip { uri, .. } => {
                let uri = uri.strip_prefix("sip:").unwrap_or(uri);
                Some(format!("sofia/external/{uri}"))
            }
            DialTarget::Device { id } | DialTarget::User { id } => Some(format!("user/{id}")),
            DialTarget::Conference(_) => None,
        }
    }

    async fn hangup_now(&mut self, cause: &str) {
        if cause.is_empty() {
            return;
        }
        self.first_command();
        if let Err(error) = self.switch.hangup(&self.state.call.call_id, cause).await {
            tracing::debug!(call_id = %self.state.call.call_id, %error, "hangup not sent");
        }
    }

    /// Hangs up at once, even while an app runs: `call-command: hangup` is a queued message
    /// that waits behind an event-locked app (a 30 s `sleep`, a bridge), `uuid_kill` does not.
    async fn kill_now(&mut self, cause: &str) {
        self.first_command();
        let call_id = &self.state.call.call_id;
        if let Err(error) = self
            .switch
            .api(call_id, &format!("uuid_kill {call_id} {cause}"))
            .await
        {
            tracing::debug!(%call_id, %error, "uuid_kill not sent");
        }
    }

    fn first_command(&mut self) {
        if !self.setup_recorded {
            self.setup_recorded = true;
            let setup = self.parked_at.elapsed();
            self.shared.metrics.call_setup.observe(setup.as_secs_f64());
            if let Some(observer) = &self.shared.config.setup_observer {
                (observer.0)(setup);
            }
        }
    }

    /// Runs one command and waits for its outcome, bounded by its expected duration.
    async fn command(&mut self, command: Command) -> Result<Outcome, Stop> {
        self.state.seq += 1;
        let id = CommandId::new(&self.state.call.call_id, self.lease.epoch, self.state.seq);
        let (app, _) = command.app();
        self.first_command();
        if let Err(error) = self
            .switch
            .execute(&self.state.call.call_id, &id, &command)
            .await
        {
            self.count_command(app, "error");
            if self.switch.call_gone(&error) {
                // An outbound call whose connection closed: its Hangup event is on the way,
                // but running the failure path meanwhile (more commands, pivot requests) would
                // only fail command after command for a call that is over.
                tracing::debug!(call_id = %self.state.call.call_id, app, %error, "the call is gone");
                return Err(Stop::HungUp(error.to_string()));
            }
            tracing::warn!(call_id = %self.state.call.call_id, app, %error, "command not sent");
            return Ok(Outcome::Failed {
                reason: error.to_string(),
            });
        }
        let deadline = tokio::time::Instant::now()
            + self.expected_duration(&command)
            + self.shared.config.command_margin;
        loop {
            tokio::select! {
                message = self.mailbox.recv() => {
                    if let Some(CallMsg::Switch(event)) = &message
                        && let SwitchEvent::Completed { command_id, outcome, .. } = event.as_ref()
                        && *command_id == id
                    {
                        self.count_command(app, outcome_label(outcome));
                        if let Outcome::HungUp { cause } = outcome {
                            return Err(Stop::HungUp(cause.clone()));
                        }
                        return Ok(outcome.clone());
                    }
                    self.on_message(message)?;
                }
                _ = sleep_until(deadline) => {
                    // A stalled step takes the failure path; nothing it queued may linger.
                    self.count_command(app, "stalled");
                    self.shared.metrics.stalled_steps.with_label_values(&[app]).inc();
                    tracing::warn!(call_id = %self.state.call.call_id, app, "command missed its deadline");
                    let _ = self.switch.break_all(&self.state.call.call_id).await;
                    return Ok(Outcome::Failed { reason: "stalled".to_owned() });
                }
                _ = sleep_until(self.call_deadline) => return Err(Stop::CallLimit),
            }
        }
    }

    fn count_command(&self, app: &str, outcome: &str) {
        self.shared
            .metrics
            .switch_commands
            .with_label_values(&[app, outcome])
            .inc();
    }

    fn expected_duration(&self, command: &Command) -> Duration {
        let prompt = self.shared.config.max_prompt;
        match command {
            Command::Sleep { ms } => Duration::from_millis(*ms),
            Command::Speak { text, .. } => {
                // Generous per-character speech time, capped like any prompt.
                Duration::from_millis(text.chars().count() as u64 * 150).min(prompt)
            }
            Command::Record { time_limit_s, .. } => Duration::from_secs(u64::from(*time_limit_s)),
            Command::Collect {
                timeout_ms,
                digit_timeout_ms,
                max_digits,
                tries,
                ..
            } => {
                Duration::from_millis(
                    (timeout_ms + digit_timeout_ms * u64::from(*max_digits))
                        * u64::from((*tries).max(1)),
                ) + prompt.min(Duration::from_secs(60))
            }
            Command::Dial {
                timeout_s,
                time_limit_s,
                ..
            } => Duration::from_secs(
                u64::from(*timeout_s) + u64::from(time_limit_s.unwrap_or(14_400)),
            ),
            Command::Conference { .. } => self.shared.config.max_call_duration,
            Command::Play { loops, .. } if *loops == 0 => self.shared.config.max_call_duration,
            Command::Play { .. } => prompt,
            Command::SendDtmf { digits, .. } => {
                Duration::from_millis(digits.chars().count() as u64 * 600)
            }
            _ => Duration::ZERO,
        }
    }

    /// A message that is not the awaited completion.
    fn on_message(&mut self, message: Option<CallMsg>) -> Result<(), Stop> {
        match message {
            // The engine is gone: nothing can command this call any more.
            None => Err(Stop::HandOver),
            Some(CallMsg::Switch(event)) => match *event {
                SwitchEvent::Hangup { cause, .. } => Err(Stop::HungUp(cause)),
                SwitchEvent::Dtmf { digit, .. } => {
                    if self.keep_dtmf && self.state.digits_pressed.len() < 128 {
                        self.state.digits_pressed.push(digit);
                    }
                    Ok(())
                }
                SwitchEvent::Answered { .. } => {
                    self.state.answered = true;
                    Ok(())
                }
                _ => Ok(()),
            },
            Some(CallMsg::Redirect { url, method }) => Err(Stop::Redirect { url, method }),
            Some(CallMsg::Hangup) => Err(Stop::ApiHangup),
            Some(CallMsg::HandOver) => Err(Stop::HandOver),
            // Stale once the node has proven its lease again: the call is still this node's
            // (a peer that adopted it meanwhile fences the next checkpoint).
            Some(CallMsg::Fence) if !self.shared.fenced.load(Ordering::Acquire) => Ok(()),
            Some(CallMsg::Fence) => Err(Stop::Fenced),
        }
    }

    /// Posts the end-of-call record, if the pivot node asked for one.
    pub(crate) fn post_cdr(&self, ending: Ending) {
        let Some(context) = &self.state.pivot else {
            return;
        };
        let Some(cdr_url) = context.cdr_url.as_deref().and_then(|u| Url::parse(u).ok()) else {
            return;
        };
        let mut progress = self.state.progress.clone();
        progress.call_status = Some(CallStatus::Completed);
        progress.user_vars = self.state.user_vars.clone();
        let mut params = request_params(context.req_format, &self.state.call, &progress);
        let duration_s =
            pivot_cluster::now_unix_ms().saturating_sub(self.state.started_unix_ms) / 1000;
        params.set(
            "CallDuration",
            pivot_webhook::ParamValue::Int(duration_s as i64),
        );
        params.set("Hangup-Result", ending.label());
        let policy = pivot_webhook::RetryPolicy {
            signing_secret: self
                .shared
                .config
                .accounts
                .get(&self.state.call.account_id)
                .and_then(|a| a.signing_secret.clone()),
            ..Default::default()
        };
        let client = self.shared.webhook.clone();
        let metrics = self.shared.metrics.clone();
        tokio::spawn(async move {
            let outcome = client.post_cdr(&cdr_url, &params, &policy).await;
            let label = if outcome.delivered {
                "delivered"
            } else {
                "failed"
            };
            metrics.cdr_posts.with_label_values(&[label]).inc();
        });
    }

    pub(crate) fn lease(&self) -> &Lease {
        &self.lease
    }
}

fn program_of(document: Document) -> Program {
    match document.flow {
        Flow::Kazoo { root } => Program::Kazoo {
            root: StoredNode(root),
            path: Vec::new(),
        },
        Flow::Twiml { steps } if steps.is_empty() => Program::Hangup {
            cause: "NORMAL_CLEARING".to_owned(),
        },
        Flow::Twiml { steps } => Program::Twiml { steps, next: 0 },
    }
}

/// The program a stored callflow starts with.
pub(crate) fn callflow_program(
    flow: &serde_json::Value,
    limits: &pivot_flow::Limits,
) -> Result<Program, pivot_flow::ParseError> {
    let document = pivot_flow::parse_kazoo_value(flow, "flow", limits)?;
    Ok(program_of(document))
}

/// `name://…` with a name FreeSWITCH could register (letters, digits, `_`, `+`, `-`, `.`).
fn has_own_scheme(reference: &str) -> bool {
    reference.split_once("://").is_some_and(|(scheme, _)| {
        !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '.'))
    })
}

fn dial_status(cause: &str) -> DialStatus {
    match cause {
        "USER_BUSY" => DialStatus::Busy,
        "NO_ANSWER" | "NO_USER_RESPONSE" | "ALLOTTED_TIMEOUT" | "ORIGINATOR_CANCEL" => {
            DialStatus::NoAnswer
        }
        _ => DialStatus::Failed,
    }
}

fn outcome_label(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Done | Outcome::Digits { .. } | Outcome::Recorded { .. } => "done",
        Outcome::Interrupted { .. } => "interrupted",
        Outcome::Bridged { .. } => "bridged",
        Outcome::DialFailed { .. } => "dial_failed",
        Outcome::Failed { .. } => "failed",
        Outcome::HungUp { .. } => "hung_up",
    }
}
