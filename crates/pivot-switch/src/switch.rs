//! [`Switch`]: one way calls reach the engine — the inbound client ([`SwitchClient`], pivot
//! connects to FreeSWITCH) or the outbound socket server ([`OutboundServer`], FreeSWITCH's
//! `socket` app connects to pivot, one connection per call). The engine drives both through
//! this one type; each variant keeps its own logic, this only forwards.

use crate::client::{SwitchClient, SwitchError};
use crate::commands::{Command, CommandId};
use crate::outbound::OutboundServer;

/// A way in for calls, and the commands for them. Cheap to clone.
#[derive(Clone, Debug)]
pub enum Switch {
    /// pivot's connections to one FreeSWITCH: every node sees every call parked there.
    Inbound(SwitchClient),
    /// Calls FreeSWITCH hands to this node, each on its own connection: only this node sees
    /// them, and only this node can command them.
    Outbound(OutboundServer),
}

impl Switch {
    /// The name calls carry in [`crate::CallInfo::switch`]; labels metrics and logs.
    pub fn name(&self) -> &str {
        match self {
            Switch::Inbound(client) => client.name(),
            Switch::Outbound(server) => server.name(),
        }
    }

    /// Whether calls can come in this way. An outbound server is a listener with no
    /// connection of its own to lose: FreeSWITCH reaches it whenever a call needs it, so it is
    /// "connected" for as long as it listens (until [`Switch::shutdown`]).
    pub fn is_connected(&self) -> bool {
        match self {
            Switch::Inbound(client) => client.is_connected(),
            Switch::Outbound(server) => server.is_listening(),
        }
    }

    /// Whether this switch's calls are seen by this node alone (outbound: the call's
    /// connection was accepted here, and dies with this process). Such a call cannot be
    /// claimed, adopted or resumed by another node.
    pub fn is_outbound(&self) -> bool {
        matches!(self, Switch::Outbound(_))
    }

    /// Whether `error`, from an operation on one call, means that call no longer exists for
    /// this switch — nothing is left to drive — rather than the switch being unreachable for
    /// now. FreeSWITCH's `-ERR No such channel` says so on either way in; on an outbound
    /// switch so does a missing or closed connection (`NotConnected`, `Disconnected`): the
    /// call's one connection is gone, and with it every way to command the call.
    pub fn call_gone(&self, error: &SwitchError) -> bool {
        match error {
            SwitchError::Refused(reason) => reason.contains("No such channel"),
            SwitchError::NotConnected(_) | SwitchError::Disconnected(_) => self.is_outbound(),
            _ => false,
        }
    }

    /// Runs `command` on `call_id`; its outcome comes later as
    /// [`crate::SwitchEvent::Completed`] with `id`.
    pub async fn execute(
        &self,
        call_id: &str,
        id: &CommandId,
        command: &Command,
    ) -> Result<(), SwitchError> {
        match self {
            Switch::Inbound(client) => client.execute(call_id, id, command).await,
            Switch::Outbound(server) => server.execute(call_id, id, command).await,
        }
    }

    /// Hangs the call up with `cause` (a FreeSWITCH cause name such as `NORMAL_CLEARING`).
    pub async fn hangup(&self, call_id: &str, cause: &str) -> Result<(), SwitchError> {
        match self {
            Switch::Inbound(client) => client.hangup(call_id, cause).await,
            Switch::Outbound(server) => server.hangup(call_id, cause).await,
        }
    }

    /// `uuid_break <call> all`: stops what the call is doing and discards what is queued.
    pub async fn break_all(&self, call_id: &str) -> Result<(), SwitchError> {
        match self {
            Switch::Inbound(client) => client.break_all(call_id).await,
            Switch::Outbound(server) => server.break_all(call_id).await,
        }
    }

    /// A blocking `api` command about `call_id`. Inbound it goes on the command connection
    /// (which reaches every call, so `call_id` is not needed); outbound on the call's own
    /// connection, the only one that reaches it.
    pub async fn api(&self, call_id: &str, command: &str) -> Result<String, SwitchError> {
        match self {
            Switch::Inbound(client) => client.api(command).await,
            Switch::Outbound(server) => server.api(call_id, command).await,
        }
    }

    /// A `bgapi` command about `call_id`, waiting for its result; routed like [`Switch::api`].
    pub async fn bgapi(&self, call_id: &str, command: &str) -> Result<String, SwitchError> {
        match self {
            Switch::Inbound(client) => client.bgapi(command).await,
            Switch::Outbound(server) => server.bgapi(call_id, command).await,
        }
    }

    /// Inbound: stops reconnecting and closes the connections. Outbound: stops listening and
    /// closes every call's connection (FreeSWITCH continues each dialplan after `socket`).
    pub fn shutdown(&self) {
        match self {
            Switch::Inbound(client) => client.shutdown(),
            Switch::Outbound(server) => server.shutdown(),
        }
    }
}

impl From<SwitchClient> for Switch {
    fn from(client: SwitchClient) -> Switch {
        Switch::Inbound(client)
    }
}

impl From<OutboundServer> for Switch {
    fn from(server: OutboundServer) -> Switch {
        Switch::Outbound(server)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::{OutboundConfig, SwitchConfig};
    use tokio::sync::mpsc;

    #[tokio::test]
    async fn gone_means_gone_only_where_it_does() {
        let (tx, _rx) = mpsc::channel(16);
        // Nothing listens on port 1: the client stays disconnected.
        let inbound = Switch::from(SwitchClient::start(
            SwitchConfig::new("fs1", "127.0.0.1:1", "ClueCon"),
            tx.clone(),
        ));
        let outbound = Switch::from(
            OutboundServer::bind(
                OutboundConfig::new("out", "127.0.0.1:0".parse().unwrap()),
                tx,
            )
            .await
            .unwrap(),
        );
        let no_channel = SwitchError::Refused("-ERR No such channel!".into());
        let down = SwitchError::NotConnected("x".into());
        let dropped = SwitchError::Disconnected("x".into());
        let slow = SwitchError::Timeout {
            switch: "x".into(),
            timeout_ms: 1,
        };
        // Inbound, a lost connection is the switch's trouble, not the call's end: the call
        // goes on on FreeSWITCH and is driven again once the client reconnects.
        assert!(inbound.call_gone(&no_channel));
        assert!(!inbound.call_gone(&down));
        assert!(!inbound.call_gone(&dropped));
        assert!(!inbound.call_gone(&slow));
        assert!(outbound.call_gone(&no_channel));
        assert!(outbound.call_gone(&down));
        assert!(outbound.call_gone(&dropped));
        assert!(!outbound.call_gone(&slow));
        assert!(!inbound.is_outbound() && outbound.is_outbound());
        assert_eq!((inbound.name(), outbound.name()), ("fs1", "out"));

        // An outbound server is up while it listens; a call it holds no connection for is gone.
        assert!(!inbound.is_connected());
        assert!(outbound.is_connected());
        let error = outbound.break_all("no-such-call").await.unwrap_err();
        assert!(outbound.call_gone(&error), "{error:?}");
        let error = outbound
            .api("no-such-call", "uuid_exists x")
            .await
            .unwrap_err();
        assert!(outbound.call_gone(&error), "{error:?}");
        outbound.shutdown();
        inbound.shutdown();
        assert!(!outbound.is_connected());
    }
}
