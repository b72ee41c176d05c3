//! The engine: routes switch events to call actors, starts and supervises them, and answers
//! the API's questions about live calls.

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use pivot_cluster::{
    CallflowStore, Checkpoint, ClusterError, DebugStore, Lease, NodeInfo, Nodes, Ownership,
};
use pivot_flow::HttpMethod;
use pivot_switch::{Switch, SwitchEvent};
use pivot_webhook::WebhookClient;
use serde::Serialize;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::actor::{CallActor, CallMsg, Ending, callflow_program};
use crate::config::EngineConfig;
use crate::metrics::Metrics;
use crate::state::{CallState, Program};

/// The services the engine uses, chosen by `pivotd` (memory or Redis backends).
#[derive(Clone)]
pub struct Services {
    pub ownership: Arc<dyn Ownership>,
    /// The registry of live nodes (heartbeats).
    pub nodes: Arc<dyn Nodes>,
    pub callflows: Arc<dyn CallflowStore>,
    pub debug: Arc<dyn DebugStore>,
    pub webhook: WebhookClient,
    pub metrics: Metrics,
}

/// What every call actor shares.
pub(crate) struct Shared {
    pub(crate) config: EngineConfig,
    pub(crate) ownership: Arc<dyn Ownership>,
    pub(crate) nodes: Arc<dyn Nodes>,
    pub(crate) callflows: Arc<dyn CallflowStore>,
    pub(crate) debug: Arc<dyn DebugStore>,
    pub(crate) webhook: WebhookClient,
    pub(crate) metrics: Metrics,
    switches: HashMap<String, Switch>,
    registry: Mutex<HashMap<String, Entry>>,
    accepting: AtomicBool,
    /// The lease could not be proven: no call of this node may be commanded.
    pub(crate) fenced: AtomicBool,
    /// Drained and handed over: no heartbeat any more, peers adopt what is left.
    pub(crate) leaving: AtomicBool,
    pub(crate) stopped: AtomicBool,
    /// The live nodes as last read (ids sorted, and their advertised addresses).
    live: Mutex<(Vec<String>, Vec<NodeInfo>)>,
    arbiters: Vec<actix_rt::ArbiterHandle>,
    next_arbiter: AtomicUsize,
}

impl Shared {
    pub(crate) fn live_nodes(&self) -> Vec<String> {
        self.live
            .lock()
            .map(|live| live.0.clone())
            .unwrap_or_default()
    }

    pub(crate) fn set_live_nodes(&self, ids: Vec<String>, nodes: Vec<NodeInfo>) {
        if let Ok(mut live) = self.live.lock() {
            *live = (ids, nodes);
        }
    }

    pub(crate) fn has_call(&self, call_id: &str) -> bool {
        registry(self).contains_key(call_id)
    }

    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) -> bool {
        let index = self.next_arbiter.fetch_add(1, Ordering::Relaxed) % self.arbiters.len().max(1);
        self.arbiters
            .get(index)
            .is_some_and(|arbiter| arbiter.spawn(task))
    }
}

/// A live call in the registry.
struct Entry {
    mailbox: mpsc::Sender<CallMsg>,
    info: ChannelInfo,
    status: Arc<Mutex<String>>,
}

/// A live call as the channels API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChannelInfo {
    pub call_id: String,
    pub account_id: String,
    pub node: String,
    pub switch: String,
    pub from: String,
    pub to: String,
    pub caller_id_name: String,
    pub caller_id_number: String,
    /// What the call is doing: `resolving`, `requesting`, or the running step's module.
    pub state: String,
    pub started_unix_ms: u64,
}

impl ChannelInfo {
    /// A call as this node starts driving it (new or adopted); `state` is filled in from the
    /// actor's live status when read.
    fn of(call: &pivot_webhook::CallInfo, node: &str, switch: &str, started_unix_ms: u64) -> Self {
        ChannelInfo {
            call_id: call.call_id.clone(),
            account_id: call.account_id.clone(),
            node: node.to_owned(),
            switch: switch.to_owned(),
            from: call.from.clone(),
            to: call.to.clone(),
            caller_id_name: call.caller_id_name.clone(),
            caller_id_number: call.caller_id_number.clone(),
            state: String::new(),
            started_unix_ms,
        }
    }
}

/// Why a live-call request could not be carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("no live call {0} on this node")]
    NotFound(String),
    #[error("call {0} is busy; try again")]
    Busy(String),
}

/// The running engine. Dropping it stops nothing: call [`Engine::shutdown`].
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
}

impl Engine {
    /// Starts the engine: call actors on `config.arbiters` arbiters, events from `events`.
    ///
    /// Must run inside an actix `System` (the arbiters belong to it).
    pub fn start(
        config: EngineConfig,
        services: Services,
        switches: Vec<Switch>,
        events: mpsc::Receiver<SwitchEvent>,
    ) -> Engine {
        let count = if config.arbiters == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            config.arbiters
        };
        let arbiters = (0..count)
            .map(|_| actix_rt::Arbiter::new().handle())
            .collect();
        let shared = Arc::new(Shared {
            config,
            ownership: crate::timed::TimedOwnership::wrap(
                services.ownership,
                services.metrics.clone(),
            ),
            nodes: services.nodes,
            callflows: services.callflows,
            debug: services.debug,
            webhook: services.webhook,
            metrics: services.metrics,
            switches: switches
                .into_iter()
                .map(|s| (s.name().to_owned(), s))
                .collect(),
            registry: Mutex::new(HashMap::new()),
            accepting: AtomicBool::new(true),
            // Until the first heartbeat proves the lease, the node takes no call.
            fenced: AtomicBool::new(true),
            leaving: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            live: Mutex::new((Vec::new(), Vec::new())),
            arbiters,
            next_arbiter: AtomicUsize::new(0),
        });
        tokio::spawn(dispatch(Arc::clone(&shared), events));
        tokio::spawn(crate::cluster::run(Arc::clone(&shared)));
        Engine { shared }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    pub fn node_id(&self) -> &str {
        &self.shared.config.node_id
    }

    pub fn active_calls(&self) -> usize {
        registry(&self.shared).len()
    }

    /// Live calls on this node, optionally of one account, sorted by call id.
    pub fn channels(&self, account_id: Option<&str>) -> Vec<ChannelInfo> {
        let registry = registry(&self.shared);
        let mut channels: Vec<ChannelInfo> = registry
            .values()
            .filter(|e| account_id.is_none_or(|a| e.info.account_id == a))
            .map(entry_info)
            .collect();
        channels.sort_by(|a, b| a.call_id.cmp(&b.call_id));
        channels
    }

    pub fn channel(&self, call_id: &str) -> Option<ChannelInfo> {
        registry(&self.shared).get(call_id).map(entry_info)
    }

    /// Sends a live call to a new document.
    pub fn redirect(
        &self,
        call_id: &str,
        url: &str,
        method: HttpMethod,
    ) -> Result<(), ControlError> {
        self.control(
            call_id,
            CallMsg::Redirect {
                url: url.to_owned(),
                method,
            },
        )
    }

    /// Hangs a live call up.
    pub fn hangup(&self, call_id: &str) -> Result<(), ControlError> {
        self.control(call_id, CallMsg::Hangup)
    }

    fn control(&self, call_id: &str, message: CallMsg) -> Result<(), ControlError> {
        let registry = registry(&self.shared);
        let entry = registry
            .get(call_id)
            .ok_or_else(|| ControlError::NotFound(call_id.to_owned()))?;
        entry.mailbox.try_send(message).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ControlError::Busy(call_id.to_owned()),
            mpsc::error::TrySendError::Closed(_) => ControlError::NotFound(call_id.to_owned()),
        })
    }

    /// Whether new calls are taken: not draining, and the node's lease is proven.
    pub fn is_accepting(&self) -> bool {
        self.shared.accepting.load(Ordering::Acquire) && !self.shared.fenced.load(Ordering::Acquire)
    }

    /// Where the API of the node that owns `call_id` is, when another live node owns it.
    pub async fn owner_address(&self, call_id: &str) -> Option<(String, String)> {
        let owner = self.shared.ownership.owner(call_id).await.ok()??;
        if owner.node == self.shared.config.node_id || owner.released {
            return None;
        }
        let nodes = self.shared.nodes.live().await.ok()?;
        nodes
            .into_iter()
            .find(|n| n.id == owner.node)
            .map(|n| (n.id, n.advertise))
    }

    /// Whether every switch of this node is connected (an outbound socket server: listening).
    pub fn switches_connected(&self) -> bool {
        self.shared.switches.values().all(Switch::is_connected)
    }

    /// Why the node should get no new work, for readiness (`None`: it takes calls). One
    /// switch down does not make a node unready: every node sees the same switches, so that
    /// would take the whole cluster out of its load balancer while the other switches carry
    /// calls; `pivot_switch_connected` reports each switch instead.
    pub fn not_ready(&self) -> Option<&'static str> {
        if !self.shared.accepting.load(Ordering::Acquire) {
            Some("not accepting calls")
        } else if self.shared.fenced.load(Ordering::Acquire) {
            Some("fenced: the cluster lease cannot be proven")
        } else if !self.shared.switches.values().any(Switch::is_connected) {
            Some("no switch connected")
        } else {
            None
        }
    }

    /// Drains the node: no new calls; live calls finish within `grace`, then the rest are
    /// handed over (released for a peer to adopt). Returns the number handed over.
    pub async fn drain(&self, grace: Duration) -> usize {
        self.shared.accepting.store(false, Ordering::Release);
        let deadline = Instant::now() + grace;
        while self.active_calls() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let remaining: Vec<mpsc::Sender<CallMsg>> = registry(&self.shared)
            .values()
            .map(|e| e.mailbox.clone())
            .collect();
        for mailbox in &remaining {
            let _ = mailbox.try_send(CallMsg::HandOver);
        }
        // Give the actors a moment to release their leases.
        let settle = Instant::now() + Duration::from_secs(2);
        while self.active_calls() > 0 && Instant::now() < settle {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Only now leave: peers adopt the calls of a node that left, and every one of ours is
        // released by now, so no two nodes command a call at once.
        self.shared.leaving.store(true, Ordering::Release);
        if let Err(error) = self.shared.nodes.leave(&self.shared.config.node_id).await {
            tracing::warn!(%error, "could not leave the node registry; peers wait for the lease");
        }
        remaining.len()
    }

    /// Stops the arbiters and the switch clients.
    pub fn shutdown(&self) {
        self.shared.stopped.store(true, Ordering::Release);
        for switch in self.shared.switches.values() {
            switch.shutdown();
        }
        for arbiter in &self.shared.arbiters {
            arbiter.stop();
        }
    }
}

fn registry(shared: &Shared) -> MutexGuard<'_, HashMap<String, Entry>> {
    // A poisoned registry only means a thread panicked while holding it; the map itself is
    // still consistent (every mutation is a single insert or remove).
    shared.registry.lock().unwrap_or_else(|e| e.into_inner())
}

fn entry_info(entry: &Entry) -> ChannelInfo {
    let mut info = entry.info.clone();
    if let Ok(status) = entry.status.lock() {
        info.state.clone_from(&status);
    }
    info
}

/// Routes switch events: new calls start actors, call events go to their actor.
async fn dispatch(shared: Arc<Shared>, mut events: mpsc::Receiver<SwitchEvent>) {
    while let Some(event) = events.recv().await {
        match event {
            SwitchEvent::Parked(info) => offer(&shared, info).await,
            SwitchEvent::SwitchUp {
                switch,
                restarted,
                channels,
                ..
            } => {
                shared
                    .metrics
                    .switch_connected
                    .with_label_values(&[&switch])
                    .set(1);
                // Calls the switch no longer has are over (it restarted, or they ended while
                // we were disconnected).
                let alive: HashSet<String> = channels.into_iter().map(|c| c.call_id).collect();
                let gone: Vec<(String, mpsc::Sender<CallMsg>)> = registry(&shared)
                    .iter()
                    .filter(|(id, e)| {
                        e.info.switch == switch && (restarted || !alive.contains(*id))
                    })
                    .map(|(id, e)| (id.clone(), e.mailbox.clone()))
                    .collect();
                for (call_id, mailbox) in gone {
                    deliver_reliably(
                        &shared,
                        mailbox,
                        CallMsg::Switch(Box::new(SwitchEvent::Hangup {
                            call_id,
                            cause: "SWITCH_RESTARTED".to_owned(),
                        })),
                    );
                }
            }
            SwitchEvent::SwitchDown { switch, reason } => {
                tracing::warn!(%switch, %reason, "switch disconnected");
                shared
                    .metrics
                    .switch_connected
                    .with_label_values(&[&switch])
                    .set(0);
            }
            SwitchEvent::Heartbeat { .. } => {}
            event => {
                let Some(call_id) = event.call_id() else {
                    continue;
                };
                let mailbox = registry(&shared).get(call_id).map(|e| e.mailbox.clone());
                if let Some(mailbox) = mailbox {
                    let vital = matches!(
                        event,
                        SwitchEvent::Hangup { .. } | SwitchEvent::Completed { .. }
                    );
                    match mailbox.try_send(CallMsg::Switch(Box::new(event))) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(message)) => {
                            shared.metrics.mailbox_overflows.inc();
                            if vital {
                                deliver_reliably(&shared, mailbox, message);
                            }
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => {}
                    }
                }
            }
        }
    }
}

/// Delivers a message the actor must not miss without blocking the dispatcher: a short-lived
/// task waits for room (bounded by a timeout, after which the call's deadlines take over).
fn deliver_reliably(shared: &Shared, mailbox: mpsc::Sender<CallMsg>, message: CallMsg) {
    let wait = shared.config.command_margin;
    tokio::spawn(async move {
        let _ = tokio::time::timeout(wait, mailbox.send(message)).await;
    });
}

/// A new parked call: start its actor if this node takes calls and has room.
async fn offer(shared: &Arc<Shared>, info: pivot_switch::CallInfo) {
    let parked_at = Instant::now();
    let Some(switch) = shared.switches.get(&info.switch).cloned() else {
        tracing::warn!(switch = %info.switch, "call from an unknown switch");
        return;
    };
    if !shared.accepting.load(Ordering::Acquire) {
        // Draining: a peer takes an inbound call (every node sees its park); an outbound call
        // was handed to this node alone, which is about to exit, so it is refused now rather
        // than left in silence until its connection closes.
        give_up(switch, info.call_id, "SWITCH_CONGESTION");
        return;
    }
    let (sender, mailbox) = mpsc::channel(shared.config.mailbox.max(8));
    let status = Arc::new(Mutex::new("resolving".to_owned()));
    let call = webhook_call(&info);
    {
        let mut registry = registry(shared);
        if registry.contains_key(&info.call_id) {
            // Parked again (a resync, a transfer back to park): the actor already runs it.
            return;
        }
        if registry.len() >= shared.config.max_calls {
            drop(registry);
            refuse_when_full(shared, switch, info.call_id);
            return;
        }
        registry.insert(
            info.call_id.clone(),
            Entry {
                mailbox: sender,
                info: ChannelInfo::of(
                    &call,
                    &shared.config.node_id,
                    &info.switch,
                    pivot_cluster::now_unix_ms(),
                ),
                status: Arc::clone(&status),
            },
        );
    }
    shared.metrics.calls_active.inc();
    let state = CallState::new(call, info.switch.clone(), pivot_cluster::now_unix_ms());
    // Every log line of the call carries these (JSON logs: the span's fields).
    let span = tracing::info_span!(
        "call",
        call_id = %info.call_id,
        account_id = tracing::field::Empty,
        node = %shared.config.node_id
    );
    let task = supervise(
        Arc::clone(shared),
        state,
        switch,
        mailbox,
        status,
        parked_at,
    )
    .instrument(span);
    if !shared.spawn(task) {
        tracing::error!(call_id = %info.call_id, "no arbiter to run the call");
        forget(shared, &info.call_id);
    }
}

/// Removes a call from the registry when its supervisor ends — even by a panic.
struct RegistryGuard {
    shared: Arc<Shared>,
    call_id: String,
}

impl Drop for RegistryGuard {
    fn drop(&mut self) {
        forget(&self.shared, &self.call_id);
    }
}

fn forget(shared: &Shared, call_id: &str) {
    if registry(shared).remove(call_id).is_some() {
        shared.metrics.calls_active.dec();
    }
}

/// One call from claim to end: runs its actor, restarts it from the checkpoint after a panic,
/// and cleans up whatever happens.
async fn supervise(
    shared: Arc<Shared>,
    mut state: CallState,
    switch: Switch,
    mut mailbox: mpsc::Receiver<CallMsg>,
    status: Arc<Mutex<String>>,
    parked_at: Instant,
) {
    let call_id = state.call.call_id.clone();
    let _guard = RegistryGuard {
        shared: Arc::clone(&shared),
        call_id: call_id.clone(),
    };
    // Resolve before claiming: it has no side effect, and the claim records the account.
    match shared
        .callflows
        .resolve(&state.call.to, hint(&state.call.account_id))
        .await
    {
        Ok(Some(callflow)) => {
            state.call.account_id = callflow.account_id.clone();
            state.program = match callflow_program(&callflow.flow, &shared.config.limits) {
                Ok(program) => program,
                Err(error) => {
                    tracing::error!(%call_id, callflow = %callflow.id, %error, "stored callflow does not parse");
                    Program::Hangup {
                        cause: "NORMAL_TEMPORARY_FAILURE".to_owned(),
                    }
                }
            };
        }
        Ok(None) => {
            tracing::info!(%call_id, to = %state.call.to, "no callflow for the dialled number");
            state.program = Program::Hangup {
                cause: "UNALLOCATED_NUMBER".to_owned(),
            };
        }
        Err(error) => {
            tracing::error!(%call_id, %error, "callflow lookup failed");
            state.program = Program::Hangup {
                cause: "NORMAL_TEMPORARY_FAILURE".to_owned(),
            };
        }
    }
    tracing::Span::current().record("account_id", state.call.account_id.as_str());
    if let Ok(mut registry) = shared.registry.lock()
        && let Some(entry) = registry.get_mut(&call_id)
    {
        entry.info.account_id.clone_from(&state.call.account_id);
    }
    // Every node sees an inbound call's park; they rank themselves by rendezvous hash over the
    // live nodes and only the first claims at once, the others after a grace period if it is
    // unclaimed. An outbound call was handed to this node alone (its connection is here): no
    // other node will ever claim it, so it claims at once.
    let rank = if switch.is_outbound() {
        0
    } else {
        crate::cluster::rank(&shared, &call_id)
    };
    if rank > 0 {
        let grace = shared.config.cluster.claim_grace * u32::try_from(rank).unwrap_or(u32::MAX);
        if !still_unclaimed(&shared, &call_id, &mut mailbox, grace).await {
            shared
                .metrics
                .cluster_claims
                .with_label_values(&["lost"])
                .inc();
            return;
        }
    }
    // (A state that cannot be serialized is claimed without; the actor's checkpoint logs why.)
    let first_checkpoint = state.to_json().ok();
    let claimed = claim(
        &shared,
        &call_id,
        &state.call.account_id,
        first_checkpoint.as_deref(),
    );
    let lease = match claimed.await {
        Ok(Some(lease)) => {
            shared
                .metrics
                .cluster_claims
                .with_label_values(&["won"])
                .inc();
            lease
        }
        Ok(None) => {
            shared
                .metrics
                .cluster_claims
                .with_label_values(&["lost"])
                .inc();
            if switch.is_outbound() {
                // Another node's record for a call whose connection is here (a dialplan that
                // runs `socket` again once the first node's connection closed): that node
                // cannot drive it, and this one may not.
                tracing::warn!(%call_id, "outbound call owned by another node; hanging up");
            }
            give_up(switch, call_id, "NORMAL_TEMPORARY_FAILURE");
            return;
        }
        Err(error) => {
            shared
                .metrics
                .cluster_claims
                .with_label_values(&["error"])
                .inc();
            tracing::error!(%call_id, %error, "cannot claim the call");
            give_up(switch, call_id, "NORMAL_TEMPORARY_FAILURE");
            return;
        }
    };
    // A claim made later than a better-ranked node would wait (or with no grace at all) may
    // come after that node drove the call to its end and forgot it: the record is new again but
    // the channel is gone. The switch knows; nothing (no pivot request) is run for a gone call.
    // (An outbound call is never claimed late by another node, but a slow claim may still
    // outlast it: its connection is then gone, which `call_gone` reads as the channel being
    // gone. Inbound, an unreachable switch says nothing about the call: it is run.)
    if rank > 0 || parked_at.elapsed() >= shared.config.cluster.claim_grace {
        let gone = match switch
            .api(&call_id, &format!("uuid_exists {call_id}"))
            .await
        {
            Ok(answer) => answer.trim() == "false",
            Err(error) => switch.call_gone(&error),
        };
        if gone {
            tracing::debug!(%call_id, "claimed a call that has already ended");
            let _ = shared.ownership.finish(&lease).await;
            return;
        }
    }
    let ending = run_supervised(
        &shared,
        state,
        (lease.clone(), first_checkpoint.is_some()),
        switch,
        &mut mailbox,
        status,
        parked_at,
    )
    .await;
    finish_call(&shared, &lease, ending).await;
}

/// Attempts at a claim whose answer did not come (the backend was unreachable or slow).
const CLAIM_ATTEMPTS: u32 = 3;

/// Claims a new call. A claim that timed out may still have been made: the record is read back
/// before trying again, so that a call this node owns in the backend is never left undriven (no
/// peer would ever take it: its owner is alive).
///
/// `first_checkpoint` is written by the claim itself (one round trip for both); the actor then
/// skips its own first checkpoint, of the same state.
async fn claim(
    shared: &Shared,
    call_id: &str,
    account_id: &str,
    first_checkpoint: Option<&str>,
) -> Result<Option<Lease>, ClusterError> {
    let node = &shared.config.node_id;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let claimed = match first_checkpoint {
            Some(state) => {
                shared
                    .ownership
                    .claim_with_checkpoint(call_id, account_id, node, state.to_owned())
                    .await
            }
            None => shared.ownership.claim(call_id, account_id, node).await,
        };
        let error = match claimed {
            Err(ClusterError::Unavailable(message)) => ClusterError::Unavailable(message),
            other => return other,
        };
        match shared.ownership.owner(call_id).await {
            Ok(Some(owner)) if !owner.released && owner.node == *node => {
                return Ok(Some(Lease {
                    call_id: call_id.to_owned(),
                    node: node.clone(),
                    epoch: owner.epoch,
                }));
            }
            Ok(Some(owner)) if !owner.released => return Ok(None),
            // Not claimed (or released): the claim may be tried again.
            Ok(_) => {}
            // Unknown either way: the next attempt's claim or read decides.
            Err(_) => {}
        }
        if attempt >= CLAIM_ATTEMPTS {
            return Err(error);
        }
        tokio::time::sleep(Duration::from_millis(50) * attempt).await;
    }
}

/// Waits `grace` for better-ranked nodes to take the call; `false` when one did (its events
/// show the call being driven, or it holds the claim) or the call ended meanwhile.
async fn still_unclaimed(
    shared: &Shared,
    call_id: &str,
    mailbox: &mut mpsc::Receiver<CallMsg>,
    grace: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        tokio::select! {
            message = mailbox.recv() => match message {
                None => return false,
                Some(CallMsg::Switch(event)) => {
                    if matches!(*event, SwitchEvent::Hangup { .. } | SwitchEvent::Answered { .. }) {
                        return false;
                    }
                }
                Some(_) => {}
            },
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    match shared.ownership.owner(call_id).await {
        Ok(Some(owner)) => owner.released,
        Ok(None) => true,
        Err(_) => false,
    }
}

/// Resumes a call this node has just adopted: from its checkpoint, after breaking whatever the
/// previous owner left queued on the channel; the current step is issued again (at least once
/// per step).
/// Resumes an adopted call from `checkpoint`, read with the adoption.
pub(crate) async fn resume(
    shared: &Arc<Shared>,
    lease: Lease,
    checkpoint: Option<Checkpoint>,
    handed_over: bool,
) {
    let call_id = lease.call_id.clone();
    let not_resumed = |why: &str| {
        tracing::info!(%call_id, why, "adopted call not resumed");
    };
    let state = checkpoint.and_then(|checkpoint| CallState::from_json(&checkpoint.state).ok());
    let Some(state) = state else {
        not_resumed("no readable checkpoint");
        let _ = shared.ownership.finish(&lease).await;
        return;
    };
    let Some(switch) = shared.switches.get(&state.switch).cloned() else {
        not_resumed("its switch is not one of this node's");
        let _ = shared.ownership.release(&lease).await;
        return;
    };
    // Whatever the previous owner queued is stale; breaking it also tells whether the channel
    // still exists (FreeSWITCH answers `-ERR No such channel!`), in one round trip.
    //
    // Outbound calls do not survive their node: a call's only connection lives in the process
    // that accepted it, and when that process dies the connection closes and FreeSWITCH
    // continues the dialplan past `socket` (with nothing after it, it hangs up). A peer
    // adopting such a call holds no connection for it, so `break_all` says `NotConnected`,
    // which `call_gone` reads as gone: the record is finished here, not released for yet
    // another node to adopt and fail on. The one outbound call that is resumed is a call the
    // node itself still holds the connection of (taken back after it was fenced).
    if let Err(error) = switch.break_all(&call_id).await
        && switch.call_gone(&error)
    {
        not_resumed("the channel is gone");
        let _ = shared.ownership.finish(&lease).await;
        return;
    }
    let (sender, mut mailbox) = mpsc::channel(shared.config.mailbox.max(8));
    let status = Arc::new(Mutex::new(state.program.describe()));
    let refused = {
        let mut registry = registry(shared);
        let refused = registry.contains_key(&call_id) || registry.len() >= shared.config.max_calls;
        if !refused {
            registry.insert(
                call_id.clone(),
                Entry {
                    mailbox: sender,
                    info: ChannelInfo::of(
                        &state.call,
                        &shared.config.node_id,
                        &state.switch,
                        state.started_unix_ms,
                    ),
                    status: Arc::clone(&status),
                },
            );
        }
        refused
    };
    if refused {
        let _ = shared.ownership.release(&lease).await;
        return;
    }
    shared.metrics.calls_active.inc();
    // A call handed over by a draining peer is a rollout working as designed; the takeover
    // counter (and its alert) is for calls whose node died or was cut off.
    if handed_over {
        shared.metrics.cluster_handovers.inc();
    } else {
        shared.metrics.cluster_takeovers.inc();
    }
    let span = tracing::info_span!(
        "call",
        call_id = %call_id,
        account_id = %state.call.account_id,
        node = %shared.config.node_id
    );
    let task_shared = Arc::clone(shared);
    let task = async move {
        let shared = task_shared;
        let _guard = RegistryGuard {
            shared: Arc::clone(&shared),
            call_id: call_id.clone(),
        };
        let ending = run_supervised(
            &shared,
            state,
            (lease.clone(), false),
            switch,
            &mut mailbox,
            status,
            Instant::now(),
        )
        .await;
        finish_call(&shared, &lease, ending).await;
    }
    .instrument(span);
    if !shared.spawn(task) {
        tracing::error!("no arbiter to run an adopted call");
    }
}

/// Lets go of a new call this node will not drive. An inbound call is left as it is: every
/// node saw its park, and another one drives it. An outbound call has no other node (only this
/// one holds its connection), so it is hung up with `cause` rather than left in silence.
/// A call this node has no room for. Every node sees an inbound call's park, so while peers
/// are live a full node leaves it to them — refusing it would drop a call an idle peer is about
/// to take. Only the node ranked last for the call refuses it, once every better-ranked peer had
/// its grace to claim it and none did (the whole cluster is full). A lone node, or an outbound
/// call (seen by this node alone), is refused at once.
fn refuse_when_full(shared: &Arc<Shared>, switch: Switch, call_id: String) {
    let live = shared.live_nodes();
    let peers = live.iter().any(|node| *node != shared.config.node_id);
    let wait = if peers && !switch.is_outbound() {
        let rank = crate::cluster::rank(shared, &call_id);
        if rank + 1 < live.len() {
            tracing::debug!(%call_id, "node at max_calls: call left to its peers");
            return;
        }
        Some(shared.config.cluster.claim_grace * u32::try_from(rank + 1).unwrap_or(u32::MAX))
    } else {
        None
    };
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        if let Some(wait) = wait {
            tokio::time::sleep(wait).await;
            // Claimed by a peer (or ended and forgotten already): nothing to refuse. A backend
            // that cannot answer is no reason to drop the call either.
            if !matches!(shared.ownership.owner(&call_id).await, Ok(None)) {
                return;
            }
        }
        shared
            .metrics
            .calls_total
            .with_label_values(&["rejected"])
            .inc();
        tracing::warn!(%call_id, "call refused: node at max_calls");
        let _ = switch.hangup(&call_id, "SWITCH_CONGESTION").await;
    });
}

fn give_up(switch: Switch, call_id: String, cause: &'static str) {
    if switch.is_outbound() {
        tokio::spawn(async move {
            if let Err(error) = switch.hangup(&call_id, cause).await {
                tracing::debug!(%call_id, %error, "hangup not sent");
            }
        });
    }
}

/// Stops every call of this node from commanding (the node cannot prove its lease).
pub(crate) fn fence_all(shared: &Shared) {
    for entry in registry(shared).values() {
        let _ = entry.mailbox.try_send(CallMsg::Fence);
    }
}

async fn finish_call(shared: &Shared, lease: &Lease, ending: Ending) {
    shared
        .metrics
        .calls_total
        .with_label_values(&[ending.label()])
        .inc();
    let finished = match ending {
        Ending::HandedOver => shared.ownership.release(lease).await,
        Ending::Fenced => Ok(()),
        _ => shared.ownership.finish(lease).await,
    };
    if let Err(error) = finished {
        tracing::warn!(call_id = %lease.call_id, %error, "ownership not released");
    }
}

/// `lease` comes with whether its claim already wrote `state` as the checkpoint.
async fn run_supervised(
    shared: &Arc<Shared>,
    mut state: CallState,
    (lease, mut claim_checkpointed): (Lease, bool),
    switch: Switch,
    mailbox: &mut mpsc::Receiver<CallMsg>,
    status: Arc<Mutex<String>>,
    parked_at: Instant,
) -> Ending {
    let call_id = state.call.call_id.clone();
    loop {
        let mut actor = CallActor::new(
            Arc::clone(shared),
            state,
            lease.clone(),
            switch.clone(),
            mailbox,
            Arc::clone(&status),
            parked_at,
        );
        // Only the first actor: a restarted one starts from a checkpoint it must rewrite.
        if std::mem::take(&mut claim_checkpointed) {
            actor.claim_checkpointed();
        }
        let result = AssertUnwindSafe(actor.run()).catch_unwind().await;
        match result {
            Ok(ending) => {
                actor.post_cdr(ending);
                let _ = actor.lease();
                return ending;
            }
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                shared.metrics.actor_restarts.inc();
                tracing::error!(%call_id, panic = %message, "call actor panicked; restarting from its checkpoint");
                drop(actor);
                let checkpoint = shared.ownership.load(&call_id).await;
                let restored = match checkpoint {
                    Ok(Some(checkpoint)) => CallState::from_json(&checkpoint.state).ok(),
                    _ => None,
                };
                let Some(mut restored) = restored else {
                    let _ = switch.hangup(&call_id, "NORMAL_TEMPORARY_FAILURE").await;
                    return Ending::Failed;
                };
                restored.restarts += 1;
                if restored.restarts > shared.config.max_restarts {
                    let _ = switch.hangup(&call_id, "NORMAL_TEMPORARY_FAILURE").await;
                    return Ending::Failed;
                }
                // Whatever the dead actor queued is stale; the step is re-issued.
                let _ = switch.break_all(&call_id).await;
                state = restored;
            }
        }
    }
}

/// The account a call says it belongs to (the `pivot_account_id` channel variable).
fn hint(account_id: &str) -> Option<&str> {
    (!account_id.is_empty()).then_some(account_id)
}

/// The pivot request's view of a switch call.
fn webhook_call(info: &pivot_switch::CallInfo) -> pivot_webhook::CallInfo {
    let direction = if info.direction.eq_ignore_ascii_case("outbound") {
        pivot_webhook::params::Direction::Outbound
    } else {
        pivot_webhook::params::Direction::Inbound
    };
    pivot_webhook::CallInfo {
        call_id: info.call_id.clone(),
        account_id: info
            .variables
            .get("account_id")
            .cloned()
            .unwrap_or_default(),
        from: info.from_user.clone(),
        from_realm: info.from_host.clone(),
        to: info.to_user.clone(),
        to_realm: info.to_host.clone(),
        request: Some(info.to_user.clone()),
        request_realm: Some(info.to_host.clone()),
        caller_id_name: info.caller_id_name.clone(),
        caller_id_number: info.caller_id_number.clone(),
        direction,
        language: info.variables.get("language").cloned(),
        custom_sip_headers: Default::default(),
        custom_application_vars: Default::default(),
    }
}
