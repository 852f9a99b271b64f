//! What every handler shares: the state behind its lock (and a reader for the watches), the
//! signers, the budgets, the revision the watches follow, and who a client certificate names.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use tokio::sync::watch;

use crate::state::{Revision, State, StateError};

/// CF's default `max_policies`: a non-admin's app may be the source of this many policies.
pub const DEFAULT_MAX_POLICIES: usize = 150;

/// The protocol a streamed watch upgrades to (`Upgrade: c2c-watch`).
pub const WATCH_PROTOCOL: &str = c2c_api::paths::WATCH_PROTOCOL;

/// Longest a watch may wait.
pub const MAX_WATCH: Duration = Duration::from_secs(60);

/// What one connection may cost control before it is closed.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// From a connection's handshake turn (see `max_handshakes`) to a finished TLS handshake.
    pub handshake: Duration,
    /// To read a request's headers, counted from the connection's start or the end of the
    /// previous answer: also how long a keep-alive connection may sit idle.
    pub header_read: Duration,
    /// Open connections at most; more are closed at once.
    pub max_connections: usize,
    /// Open connections from one client address at most; more are closed at once (one peer
    /// cannot hold every `max_connections` slot and shut the cells out).
    pub max_connections_per_source: usize,
    /// TLS handshakes in progress at most. A connection past it waits its turn, up to
    /// `handshake_queue`: a storm of reconnecting cells is handshaken a budget at a time,
    /// instead of all at once, where each can finish late, past its client's connect timeout
    /// (a collapse, if that is all of them).
    pub max_handshakes: usize,
    /// Handshakes in progress from one client address at most; past it, the address's new
    /// connections wait behind its own (one peer that stalls its handshakes holds this many
    /// turns, not all).
    pub max_handshakes_per_source: usize,
    /// How long a connection may wait for its handshake's turns (its address's, then the
    /// listener's) before it is closed: below the clients' connect timeout
    /// ([`c2c_api::client::CONNECT_TIMEOUT`], 3 s), so no handshake is spent on a client that
    /// already gave up (that client tries the next replica).
    pub handshake_queue: Duration,
    /// A watch stream's line (or heartbeat) must be taken by the cell within this, else the
    /// stream is closed: a cell that stops reading holds no task, view or socket buffer longer.
    pub watch_write: Duration,
    /// Streamed watches one cell may hold at once; a newer one closes the oldest (a cell that
    /// reconnects while its old stream is half-open gets the new one at once).
    pub watch_streams_per_cell: usize,
    /// Watch streams this replica holds at most, every cell together; past it a cell is
    /// answered 503 with `Retry-After` ([`Budget::stream_retry_after`]) and opens its stream on
    /// another replica. (A parked stream has left HTTP and holds no `max_connections` slot.)
    pub max_streams: usize,
    /// What a 503 for a stream past `max_streams` says in `Retry-After`.
    pub stream_retry_after: Duration,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            handshake: Duration::from_secs(5),
            header_read: Duration::from_secs(10),
            max_connections: 4096,
            max_connections_per_source: 512,
            max_handshakes: 1024,
            max_handshakes_per_source: 16,
            handshake_queue: Duration::from_secs(2),
            watch_write: Duration::from_secs(60),
            watch_streams_per_cell: 2,
            max_streams: 16384,
            stream_retry_after: Duration::from_secs(2),
        }
    }
}

/// The issuers control signs with: cells' client certificates and instances' server
/// certificates.
pub struct Signers {
    /// Signs cells' client certificates (`POST /v1/cells`).
    pub cells: c2c_certs::Ca,
    /// Signs instances' server certificates and identities (the cell API's CSR endpoints).
    pub instances: c2c_certs::Ca,
    /// The platform root (PEM) the issuers chain to: handed out with identities, for the
    /// containers' trust store (CF_SYSTEM_CERT_PATH).
    pub root_pem: String,
}

/// Shared server state.
pub struct Ctx {
    pub(crate) state: Arc<Mutex<State>>,
    /// A second connection to the same database, for the watches' views: they read a snapshot
    /// of their own and never wait for, or hold back, a writer. `None`: views read through
    /// `state` (an in-memory database has no second connection).
    pub(crate) reader: Option<Arc<Mutex<State>>>,
    /// SHA-256 (hex) of the state dir's admin token: the token itself is not kept.
    pub(crate) admin_hash: String,
    pub(crate) revision: watch::Sender<Revision>,
    pub(crate) signers: Option<Arc<Signers>>,
    pub(crate) cert_ttl: Duration,
    /// Validity of instance identity certificates.
    pub(crate) identity_ttl: Duration,
    /// SPIFFE trust domain of instance identities.
    pub(crate) trust_domain: String,
    pub(crate) budget: Budget,
    /// Policies a `network.write` user's app may be the source of (CF's `max_policies`).
    pub(crate) max_policies: usize,
    pub(crate) started: std::time::Instant,
    /// The control issuer (PEM), handed to cells that join.
    pub(crate) control_ca_pem: Option<String>,
    /// The last revision's view parts every cell shares.
    pub(crate) views: crate::views::Cache,
    /// One refresh of `registry` at a time.
    pub(crate) registry_refresh: tokio::sync::Mutex<()>,
    /// Cell certificates (CN -> fingerprint) found registered at a revision.
    pub(crate) registry: Mutex<(Revision, HashMap<String, String>)>,
    /// Build each watcher's view on its own instead (`control serve --per-watcher-views`: the
    /// reference of `bench/scale.sh`).
    pub(crate) per_watcher_views: bool,
    /// Open watch streams by cell, oldest first, and their total (see
    /// [`Budget::watch_streams_per_cell`], [`Budget::max_streams`]).
    pub(crate) streams: crate::streams::Streams,
    /// What control counts for `--metrics-listen`.
    pub(crate) metrics: crate::metrics::Metrics,
    /// Flows the cells reported to this replica (in memory only).
    pub(crate) flows: crate::flows::Flows,
}

impl Ctx {
    /// Wraps an open state; `admin_token` (the state dir's) is `network.admin`, and so is
    /// every token made with that scope; other users' tokens are in the state.
    pub fn new(state: State, admin_token: String) -> Result<Self, StateError> {
        let rev = state.revision()?;
        Ok(Self {
            state: Arc::new(Mutex::new(state)),
            reader: None,
            admin_hash: crate::tokens::sha256_hex(admin_token.as_bytes()),
            revision: watch::Sender::new(rev),
            signers: None,
            cert_ttl: Duration::from_secs(24 * 3600),
            identity_ttl: c2c_certs::identity::DEFAULT_VALIDITY,
            trust_domain: c2c_certs::identity::DEFAULT_TRUST_DOMAIN.into(),
            budget: Budget::default(),
            max_policies: DEFAULT_MAX_POLICIES,
            started: std::time::Instant::now(),
            control_ca_pem: None,
            views: crate::views::Cache::default(),
            registry: Mutex::new((Revision(0), HashMap::new())),
            registry_refresh: tokio::sync::Mutex::new(()),
            per_watcher_views: false,
            streams: Default::default(),
            metrics: Default::default(),
            flows: Default::default(),
        })
    }

    /// Publishes `rev` to the watches if it is newer than what they have (a change another
    /// replica wrote to the shared database).
    pub fn publish_revision(&self, rev: Revision) {
        self.revision.send_if_modified(|r| {
            let newer = rev > *r;
            if newer {
                *r = rev;
            }
            newer
        });
    }

    /// The revision the watches have.
    pub fn current_revision(&self) -> Revision {
        *self.revision.borrow()
    }

    /// Removes placements no cell confirmed within `ttl` (see [`State::expire_placements`]).
    pub async fn expire_placements(&self, ttl: Duration) -> Result<Vec<String>, StateError> {
        self.with_state(move |s| s.expire_placements(ttl.as_secs()))
            .await
    }

    /// Expires the leases not renewed within the TTL (see [`State::expire_leases`]).
    pub async fn expire_leases(&self) -> Result<Vec<String>, StateError> {
        self.with_state(|s| s.expire_leases()).await
    }

    /// Hands `pem` (the control issuer) to cells that join with a token.
    pub fn with_control_ca(mut self, pem: String) -> Self {
        self.control_ca_pem = Some(pem);
        self
    }

    /// Limits each `network.write` user's app to `n` policies as a source.
    pub fn with_max_policies(mut self, n: usize) -> Self {
        self.max_policies = n;
        self
    }

    /// Signs cell and instance certificates with `signers`; instance certificates are valid
    /// for `ttl`.
    pub fn with_signers(mut self, signers: Signers, ttl: Duration) -> Self {
        self.signers = Some(Arc::new(signers));
        self.cert_ttl = ttl;
        self
    }

    /// Instance identities are valid for `ttl` and name apps in SPIFFE `trust_domain`.
    pub fn with_identity(mut self, ttl: Duration, trust_domain: String) -> Self {
        self.identity_ttl = ttl;
        self.trust_domain = trust_domain;
        self
    }

    /// Reads the watches' views through `reader`, a second connection to the same database.
    pub fn with_reader(mut self, reader: State) -> Self {
        self.reader = Some(Arc::new(Mutex::new(reader)));
        self
    }

    /// Reads the shared part of the views at the database's current revision, through the
    /// reader connection when there is one.
    /// `prev`, the last one read, is followed from where it can be.
    pub(crate) async fn read_shared(
        &self,
        prev: Option<Arc<crate::views::Shared>>,
    ) -> Result<crate::views::Shared, StateError> {
        let Some(reader) = self.reader.clone() else {
            return self
                .with_state(move |s| crate::views::Shared::read(s, prev.as_deref()))
                .await;
        };
        tokio::task::spawn_blocking(move || {
            let s = reader.lock().unwrap_or_else(|p| p.into_inner());
            crate::views::Shared::read(&s, prev.as_deref())
        })
        .await
        .map_err(|e| StateError::Internal(format!("view task failed: {e}")))?
    }

    /// Each watcher builds its own view instead of sharing the revision's (the benchmark's
    /// reference).
    pub fn with_per_watcher_views(mut self, on: bool) -> Self {
        self.per_watcher_views = on;
        self
    }

    /// Serves connections within `budget`.
    pub fn with_budget(mut self, budget: Budget) -> Self {
        self.budget = budget;
        self
    }

    /// The limits connections are served within.
    pub fn budget(&self) -> Budget {
        self.budget
    }

    /// How many watch streams `cell` holds open.
    pub fn open_watch_streams(&self, cell: &str) -> usize {
        self.streams.open_for(cell)
    }

    /// Runs `f` on the state off the async threads, then publishes the revision.
    pub(crate) async fn with_state<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut State) -> Result<T, StateError> + Send + 'static,
    ) -> Result<T, StateError> {
        let state = self.state.clone();
        let (out, rev) = tokio::task::spawn_blocking(move || {
            // A panic while holding the lock cannot leave SQLite half-written (transactions),
            // so a poisoned lock is still safe to use.
            let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
            let out = f(&mut s);
            (out, s.revision())
        })
        .await
        .map_err(|e| StateError::Internal(format!("state task failed: {e}")))?;
        if let Ok(rev) = rev {
            self.revision.send_if_modified(|r| {
                let changed = *r != rev;
                *r = rev;
                changed
            });
        }
        out
    }
}

/// The client certificate's identity: its CN and the SHA-256 of its DER (hex).
#[derive(Debug, Clone)]
pub struct Peer {
    pub(crate) cn: String,
    pub(crate) fingerprint: String,
}

impl Peer {
    /// The identity of a verified client certificate (DER).
    pub fn from_der(der: &[u8]) -> Option<Self> {
        Some(Peer {
            cn: common_name(&CertificateDer::from(der.to_vec()))?,
            fingerprint: fingerprint(der),
        })
    }
}

/// SHA-256 of a certificate's DER, lower-case hex.
pub fn fingerprint(der: &[u8]) -> String {
    crate::tokens::sha256_hex(der)
}

pub(crate) fn common_name(der: &CertificateDer) -> Option<String> {
    c2c_certs::info::CertInfo::from_der(der)
        .ok()
        .and_then(|i| i.common_name)
}
