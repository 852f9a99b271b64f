//! The certificate in service and how it is replaced: a watch on the cert directory (not the
//! files, so atomic renames and symlink swaps are seen), a short debounce, SIGHUP, and a slow
//! timer as a safety net. A pair committed by swapping the `..data` link (as
//! [`c2c_certs::pair::write_pair`] and Kubernetes secret volumes do) is complete by
//! construction, so that swap is reloaded at once, without the debounce. A new pair is served
//! only once it passes every check in [`c2c_certs::pair::load`]; otherwise the last good pair
//! stays and the refusal is counted.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use c2c_certs::{pair, LoadedPair, PairError};
use notify::{EventKind, RecursiveMode, Watcher};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::metrics::Metrics;

/// What a reload did.
#[derive(Debug)]
pub enum ReloadOutcome {
    /// A new pair is in service.
    Updated,
    /// The files hold the pair already in service.
    Unchanged,
    /// The files were refused; the previous pair stays in service.
    Refused(PairError),
}

/// The pair in service, swapped atomically; read once per handshake.
pub struct CertStore {
    dir: PathBuf,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<LoadedPair>,
    metrics: Arc<Metrics>,
    /// Who may call (`access.json` in the same dir), reloaded with the pair.
    access: Option<Arc<crate::identity::AccessStore>>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl CertStore {
    /// Loads the initial pair; fails if there is no valid pair in `dir`.
    pub fn open(
        dir: &Path,
        provider: Arc<CryptoProvider>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, PairError> {
        let loaded = pair::load(dir, &provider, now_unix())?;
        metrics.cert_not_after.set(loaded.info.not_after);
        Ok(Self {
            dir: dir.to_path_buf(),
            provider,
            current: ArcSwap::from_pointee(loaded),
            metrics,
            access: None,
        })
    }

    /// Reloads `access` whenever the pair is reloaded (it lives in the same directory).
    pub fn with_access(mut self, access: Arc<crate::identity::AccessStore>) -> Self {
        self.access = Some(access);
        self
    }

    /// The pair in service now.
    pub fn current(&self) -> Arc<LoadedPair> {
        self.current.load_full()
    }

    /// The watched directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Re-reads the directory and swaps the pair in if it changed and passes every check.
    /// Blocking (file reads): call from a blocking context.
    pub fn reload(&self) -> ReloadOutcome {
        if let Some(a) = &self.access {
            a.reload();
        }
        let outcome = match pair::load(&self.dir, &self.provider, now_unix()) {
            Ok(new) if new.content_digest == self.current.load().content_digest => {
                ReloadOutcome::Unchanged
            }
            Ok(new) => {
                info!(
                    dir = %self.dir.display(),
                    serial = %new.info.serial_hex,
                    sans = ?new.info.sans.dns,
                    not_after = new.info.not_after,
                    "certificate reloaded"
                );
                self.metrics.cert_not_after.set(new.info.not_after);
                self.current.store(Arc::new(new));
                ReloadOutcome::Updated
            }
            Err(error) => {
                warn!(%error, dir = %self.dir.display(), "certificate reload refused, keeping the current one");
                ReloadOutcome::Refused(error)
            }
        };
        match &outcome {
            ReloadOutcome::Updated => self.metrics.reloaded("ok", ""),
            ReloadOutcome::Unchanged => self.metrics.reloaded("unchanged", ""),
            ReloadOutcome::Refused(e) => self.metrics.reloaded("refused", e.reason()),
        }
        outcome
    }
}

/// rustls resolver serving the store's pair to every client, whatever its SNI (or none).
#[derive(Debug)]
pub struct Resolver(pub Arc<CertStore>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current.load().certified.clone())
    }
}

/// Why the reload machinery could not start.
#[derive(Debug, thiserror::Error)]
#[error("watching cert dir {dir}: {source}")]
pub struct WatchError {
    dir: PathBuf,
    source: notify::Error,
}

/// What makes the proxy reload: the directory watch and SIGHUP. Set up before the proxy
/// reports ready, so no change (and no SIGHUP) between start-up and the reload loop is lost.
pub struct Triggers {
    _watcher: notify::RecommendedWatcher,
    changed: mpsc::Receiver<()>,
    committed: mpsc::Receiver<()>,
    hup: Option<tokio::signal::unix::Signal>,
}

/// Starts watching `store`'s directory and listening for SIGHUP (call inside the runtime).
pub fn triggers(store: &CertStore) -> Result<Triggers, WatchError> {
    let (tx, rx) = mpsc::channel::<()>(1);
    let (commit_tx, commit_rx) = mpsc::channel::<()>(1);
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        match res {
            Ok(ev) if is_commit(&ev) => {
                let _ = commit_tx.try_send(());
            }
            // Our own reads open and close the files: those events must not trigger reloads.
            Ok(ev)
                if matches!(
                    ev.kind,
                    EventKind::Access(notify::event::AccessKind::Close(
                        notify::event::AccessMode::Write,
                    ))
                ) || !matches!(ev.kind, EventKind::Access(_)) =>
            {
                let _ = tx.try_send(());
            }
            Ok(_) => {}
            Err(error) => warn!(%error, "cert dir watch error"),
        }
    })
    .map_err(|source| WatchError {
        dir: store.dir.clone(),
        source,
    })?;
    watcher
        .watch(&store.dir, RecursiveMode::NonRecursive)
        .map_err(|source| WatchError {
            dir: store.dir.clone(),
            source,
        })?;
    let hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(error) => {
            warn!(%error, "cannot listen for SIGHUP; reloads come from the watch and the timer");
            None
        }
    };
    Ok(Triggers {
        _watcher: watcher,
        changed: rx,
        committed: commit_rx,
        hup,
    })
}

/// Runs until `shutdown`: reloads after directory changes (debounced; at once for a `..data`
/// commit), on SIGHUP and every `interval`.
pub async fn run(
    store: Arc<CertStore>,
    triggers: Triggers,
    debounce: Duration,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let Triggers {
        _watcher,
        changed: mut rx,
        committed: mut commit_rx,
        mut hup,
    } = triggers;
    // A pair written between the first load and the watch starting was seen by neither.
    let s = store.clone();
    let _ = tokio::task::spawn_blocking(move || s.reload()).await;
    let mut timer = tokio::time::interval(interval);
    timer.tick().await; // the first tick is immediate; the pair was just loaded
                        // Debounce as a deadline rather than a nested wait, so SIGHUP and shutdown are served at
                        // once even while directory events keep coming.
    let mut quiet_until: Option<Instant> = None;
    let mut first_event: Option<Instant> = None;
    loop {
        let trigger = tokio::select! {
            _ = shutdown.cancelled() => return,
            Some(()) = rx.recv() => {
                let now = Instant::now();
                let first = *first_event.get_or_insert(now);
                // Wait for a quiet spell, but never more than 10x the debounce in all, so a
                // writer that never pauses still gets its cert picked up.
                quiet_until = Some((now + debounce).min(first + debounce * 10));
                continue;
            }
            _ = sleep_until_opt(quiet_until) => "watch",
            Some(()) = commit_rx.recv() => "commit",
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => "sighup",
            _ = timer.tick() => "timer",
        };
        quiet_until = None;
        first_event = None;
        debug!(trigger, "reloading certificate");
        let s = store.clone();
        // File reads can stall; keep them off the runtime threads.
        if let Err(error) = tokio::task::spawn_blocking(move || s.reload()).await {
            warn!(%error, "reload task failed");
        }
    }
}

/// Whether `ev` is the commit of a pair: the `..data` link created or renamed into place.
fn is_commit(ev: &notify::Event) -> bool {
    matches!(
        ev.kind,
        EventKind::Create(_)
            | EventKind::Modify(notify::event::ModifyKind::Name(
                notify::event::RenameMode::To
                    | notify::event::RenameMode::Both
                    | notify::event::RenameMode::Any
            ))
    ) && ev.paths.iter().any(|p| {
        p.file_name()
            .is_some_and(|n| n == c2c_certs::pair::DATA_LINK)
    })
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
