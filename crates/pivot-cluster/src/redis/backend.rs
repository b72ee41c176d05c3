//! The connection under every Redis operation: one reconnecting, multiplexed
//! [`ConnectionManager`] to a standalone server, or to whichever server the Sentinels name
//! master now.

use std::sync::Mutex;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{ConnectionAddr, ErrorKind, RedisError, RedisResult, ServerErrorKind};

use super::url::SentinelUrl;
use crate::lock;

/// A connection to use for one operation, and which resolution of the master it came from.
pub(crate) struct Handle {
    pub manager: ConnectionManager,
    generation: u64,
}

impl Handle {
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }
}

pub(crate) enum Backend {
    Standalone(ConnectionManager),
    Sentinel(Box<SentinelBackend>),
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::Standalone(_) => f.write_str("Standalone"),
            Backend::Sentinel(sentinel) => f
                .debug_struct("Sentinel")
                .field("master", &sentinel.url.master)
                .field("sentinels", &sentinel.url.sentinels)
                .finish_non_exhaustive(),
        }
    }
}

/// Reconnects quickly after a restart (the first retries come within tens of milliseconds) and
/// gives up a round of retries after a few seconds; the next operation starts another round,
/// so a long outage never leaves the node without a connection attempt in flight for long.
pub(crate) fn manager_config(op_timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(op_timeout))
        .set_response_timeout(Some(op_timeout))
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_secs(1))
        .set_number_of_retries(6)
}

impl Backend {
    pub(crate) fn standalone(client: redis::Client, op_timeout: Duration) -> RedisResult<Backend> {
        let manager = ConnectionManager::new_lazy_with_config(client, manager_config(op_timeout))?;
        Ok(Backend::Standalone(manager))
    }

    pub(crate) fn sentinel(url: SentinelUrl, op_timeout: Duration) -> RedisResult<Backend> {
        let addresses = url
            .sentinels
            .iter()
            .map(|(host, port)| ConnectionAddr::Tcp(host.clone(), *port));
        let mut builder =
            SentinelClientBuilder::new(addresses, url.master.clone(), SentinelServerType::Master)?
                .set_client_to_redis_db(url.db);
        if let Some(username) = &url.username {
            builder = builder.set_client_to_redis_username(username);
        }
        if let Some(password) = &url.password {
            builder = builder.set_client_to_redis_password(password);
        }
        if let Some(username) = &url.sentinel_username {
            builder = builder.set_client_to_sentinel_username(username);
        }
        if let Some(password) = &url.sentinel_password {
            builder = builder.set_client_to_sentinel_password(password);
        }
        Ok(Backend::Sentinel(Box::new(SentinelBackend {
            client: tokio::sync::Mutex::new(builder.build()?),
            current: Mutex::new(Current::default()),
            config: manager_config(op_timeout),
            url,
        })))
    }

    pub(crate) async fn handle(&self) -> RedisResult<Handle> {
        match self {
            Backend::Standalone(manager) => Ok(Handle {
                manager: manager.clone(),
                generation: 0,
            }),
            Backend::Sentinel(sentinel) => sentinel.handle().await,
        }
    }

    /// An operation on `handle`'s connection failed with `error`.
    pub(crate) fn failed(&self, handle_generation: u64, error: &RedisError) {
        if let Backend::Sentinel(sentinel) = self
            && master_may_have_moved(error)
        {
            sentinel.suspect(Some(handle_generation));
        }
    }

    /// An operation got no answer in time: the master may be gone without a word.
    pub(crate) fn timed_out(&self) {
        if let Backend::Sentinel(sentinel) = self {
            sentinel.suspect(None);
        }
    }
}

/// Errors after which the Sentinels may name another master: the connection broke, or the
/// server we reach is no longer (or not yet) a writable master.
fn master_may_have_moved(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_timeout()
        || matches!(
            error.kind(),
            ErrorKind::Server(
                ServerErrorKind::ReadOnly
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::BusyLoading
            )
        )
}

/// The redis crate's Sentinel client resolves the master once per call and hands back a plain
/// client; it never follows a failover by itself. This keeps one [`ConnectionManager`] to the
/// resolved master and asks the Sentinels again after an error that suggests the master moved.
pub(crate) struct SentinelBackend {
    /// Also serialises re-resolution: concurrent failing operations ask the Sentinels once.
    client: tokio::sync::Mutex<SentinelClient>,
    current: Mutex<Current>,
    config: ConnectionManagerConfig,
    url: SentinelUrl,
}

#[derive(Default)]
struct Current {
    /// The master's address and the connection to it.
    master: Option<(String, ConnectionManager)>,
    /// Bumped whenever `master` is replaced, so a late error from an old connection does not
    /// throw away a fresh one.
    generation: u64,
    /// Ask the Sentinels before the next operation.
    suspect: bool,
}

impl Current {
    fn usable(&self) -> Option<Handle> {
        match &self.master {
            Some((_, manager)) if !self.suspect => Some(Handle {
                manager: manager.clone(),
                generation: self.generation,
            }),
            _ => None,
        }
    }
}

impl SentinelBackend {
    async fn handle(&self) -> RedisResult<Handle> {
        if let Some(handle) = lock(&self.current).usable() {
            return Ok(handle);
        }
        let mut client = self.client.lock().await;
        // Whoever held the lock before us may have just resolved the master.
        if let Some(handle) = lock(&self.current).usable() {
            return Ok(handle);
        }
        let master = client.async_get_client().await?;
        let address = master.get_connection_info().addr().to_string();
        let mut current = lock(&self.current);
        let same = matches!(&current.master, Some((known, _)) if *known == address);
        if !same {
            // The old manager's reconnect loop would keep dialling a demoted server.
            let manager = ConnectionManager::new_lazy_with_config(master, self.config.clone())?;
            current.master = Some((address, manager));
            current.generation = current.generation.wrapping_add(1);
        }
        current.suspect = false;
        current.usable().ok_or_else(|| {
            RedisError::from((
                ErrorKind::Client,
                "sentinel master vanished while resolving",
            ))
        })
    }

    fn suspect(&self, generation: Option<u64>) {
        let mut current = lock(&self.current);
        if generation.is_none_or(|g| g == current.generation) {
            current.suspect = true;
        }
    }
}
