//! What a state operation can fail with: below the store ([`crate::db`]) and the state
//! ([`crate::state`]) alike, so neither imports the other for it.

/// A state operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// SQLite failed.
    #[error("state store: {0}")]
    Db(#[from] rusqlite::Error),
    /// PostgreSQL failed (with the cause: a TLS handshake's says why the server was refused).
    #[error("state store: {}", with_causes(.0))]
    Pg(#[from] postgres::Error),
    /// No app of that name or GUID.
    #[error("app {0} not found")]
    UnknownApp(String),
    /// An app of that name exists.
    #[error("app {0} already exists")]
    AppExists(String),
    /// Every tag is in use.
    #[error("no free app tag: 65535 apps exist")]
    TagsExhausted,
    /// Every subnet of the overlay is leased and none has expired.
    #[error("no free subnet in {0}: every one is leased to a live cell")]
    NoSubnet(String),
    /// The caller may not do this (a cell asking about an instance it does not host).
    #[error("{0}")]
    Forbidden(String),
    /// The request conflicts with what exists (an instance index taken, an address in use).
    #[error("{0}")]
    Conflict(String),
    /// No instance with that GUID.
    #[error("instance {0} not found")]
    UnknownInstance(String),
    /// The cell holds no lease.
    #[error("cell {0} holds no lease")]
    NoLease(String),
    /// Invalid input.
    #[error("{0}")]
    Invalid(String),
    /// Something named does not exist (an org, a space, a security group).
    #[error("{0}")]
    NotFound(String),
    /// A fault of the server, not of the request (a task that died): a 500.
    #[error("{0}")]
    Internal(String),
    /// A single-row query found no row ([`crate::db::OptionalExt::optional`] makes it `None`;
    /// one that reaches an answer is a fault of the server: a 500).
    #[error("query returned no rows")]
    NoRows,
}

/// `e` and each error under it, as one line.
pub fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}
