//! The errors of the stores; each names what it refers to so the API can answer precisely.

/// An [`Ownership`](crate::Ownership) call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    /// A stale owner tried to write: the call has moved on to a newer epoch.
    #[error("call {call_id}: lease epoch {held_epoch} is fenced, current epoch is {current_epoch}")]
    Fenced {
        call_id: String,
        held_epoch: u64,
        current_epoch: u64,
    },
    #[error("call {call_id} is not known")]
    NotFound { call_id: String },
    /// A configured bound was hit.
    #[error("{what}: limit of {limit} reached")]
    Full { what: &'static str, limit: usize },
    #[error("{what} is {size} bytes, the limit is {limit}")]
    TooLarge {
        what: &'static str,
        size: usize,
        limit: usize,
    },
    /// The backend could not be reached; the caller may retry, but must not assume ownership.
    #[error("cluster backend unavailable: {0}")]
    Unavailable(String),
    /// The backend's configuration (its URL, its options) is unusable; retrying cannot help.
    #[error("cluster backend misconfigured: {0}")]
    Config(String),
}

/// A [`CallflowStore`](crate::CallflowStore) or [`DebugStore`](crate::DebugStore) call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Numbers are unique across all accounts; `account_id` is the account that has it.
    #[error("number {number} is already used by a callflow of account {account_id}")]
    NumberTaken { number: String, account_id: String },
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    /// `index` is the pattern's position in the callflow's `patterns`.
    #[error("patterns[{index}] ({pattern:?}) is invalid: {reason}")]
    InvalidPattern {
        index: usize,
        pattern: String,
        reason: String,
    },
    /// A paging key that this store did not hand out.
    #[error("invalid start_key {key:?}")]
    InvalidStartKey { key: String },
    /// A configured bound was hit.
    #[error("{what}: limit of {limit} reached")]
    Full { what: &'static str, limit: usize },
    #[error("{what} is {size} bytes, the limit is {limit}")]
    TooLarge {
        what: &'static str,
        size: usize,
        limit: usize,
    },
    #[error("store backend unavailable: {0}")]
    Unavailable(String),
}
