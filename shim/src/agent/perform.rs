//! Performing the core's actions: each one's IO (the zone published, the VTEP converged, rules
//! applied, the CNI config written, certificates, confirmations), and the event that answers
//! it, fed back to the core until nothing is left.

use std::sync::Arc;
use std::time::{Duration, Instant};

use c2c_api::client::Client;
use tokio::sync::Notify;
use tracing::{info, warn, Instrument};

use super::{sync_certs, write_atomic, AgentConfig};
use crate::core::{Action, AgentCore, Event};
use crate::netlink::Netlink;
use crate::rules;
use crate::vtep::{self, VtepConfig};

/// What the driver performs with: everything of a cycle's context but the core.
pub(super) struct Io<'a> {
    pub(super) cfg: &'a AgentConfig,
    pub(super) client: &'a Client,
    pub(super) nl: &'a Netlink,
    pub(super) vcfg: &'a VtepConfig,
    pub(super) zone_tx: &'a tokio::sync::watch::Sender<Arc<crate::dns::Zone>>,
    pub(super) cni_conf: &'a str,
    pub(super) retry: &'a Arc<Notify>,
    pub(super) metrics: &'a crate::metrics::Metrics,
    /// The ruleset this agent last applied, while it believes the kernel holds it: the next
    /// change goes in as the set elements that differ.
    pub(super) kernel: &'a std::sync::Mutex<Option<String>>,
    pub(super) checks: &'a Checks,
}

/// Rule checks, run off the loop: a check lists the table's chains, and nft reads every set's
/// elements to list one (about 55 ms a chain with 10,000 elements: a third of a second in
/// all), which a view must not wait behind. The answer comes back through the receiver
/// [`checks`] returns; one check runs at a time.
pub(super) struct Checks {
    tx: tokio::sync::mpsc::UnboundedSender<(u32, bool)>,
    busy: Arc<std::sync::atomic::AtomicBool>,
}

/// The checker, and where its answers arrive: (generation, in place).
pub(super) fn checks() -> (Checks, tokio::sync::mpsc::UnboundedReceiver<(u32, bool)>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let busy = Arc::default();
    (Checks { tx, busy }, rx)
}

impl Checks {
    /// Starts a check of generation `gen` unless one is running.
    fn start(&self, gen: u32) {
        use std::sync::atomic::Ordering;
        if self.busy.swap(true, Ordering::SeqCst) {
            return;
        }
        let (tx, busy) = (self.tx.clone(), self.busy.clone());
        tokio::task::spawn_blocking(move || {
            let in_place = rules::in_place(gen);
            busy.store(false, Ordering::SeqCst);
            let _ = tx.send((gen, in_place));
        });
    }
}

/// The event a check's answer makes. A ruleset found changed that is still the one applied
/// is restored whole (what the kernel holds is unknown); an answer about a ruleset replaced
/// since the check began says nothing (the core ignores it).
pub(super) fn checked(
    (gen, in_place): (u32, bool),
    core: &AgentCore,
    kernel: &std::sync::Mutex<Option<String>>,
) -> Event {
    if !in_place && core.applied_generation() == Some(gen) {
        warn!("rules were changed by hand; restoring them");
        *kernel.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
    Event::RulesInPlace(gen, in_place)
}

/// Performs `pending` in turn, handing each answering event to the core, and what those bring,
/// until nothing is left.
pub(super) async fn perform_all(
    mut pending: Vec<Action>,
    io: &Io<'_>,
    core: &mut AgentCore,
    started: Instant,
    span: &tracing::Span,
) {
    while !pending.is_empty() {
        let mut next = vec![];
        for action in pending {
            let mut cx = Ctx {
                cfg: io.cfg,
                core,
                client: io.client,
                nl: io.nl,
                vcfg: io.vcfg,
                zone_tx: io.zone_tx,
                cni_conf: io.cni_conf,
                retry: io.retry,
                started,
                metrics: io.metrics,
                kernel: io.kernel,
                checks: io.checks,
            };
            if let Some(e) = perform(action, &mut cx).instrument(span.clone()).await {
                next.extend(span.in_scope(|| core.on(e)));
            }
        }
        pending = next;
    }
}

/// What performing an action needs.
struct Ctx<'a> {
    cfg: &'a AgentConfig,
    core: &'a AgentCore,
    client: &'a Client,
    nl: &'a Netlink,
    vcfg: &'a VtepConfig,
    zone_tx: &'a tokio::sync::watch::Sender<Arc<crate::dns::Zone>>,
    cni_conf: &'a str,
    retry: &'a Arc<Notify>,
    started: Instant,
    metrics: &'a crate::metrics::Metrics,
    kernel: &'a std::sync::Mutex<Option<String>>,
    checks: &'a Checks,
}

/// Performs one action; returns the event that answers it, if it has one.
async fn perform(action: Action, cx: &mut Ctx<'_>) -> Option<Event> {
    match action {
        Action::PublishZone(z) => {
            cx.zone_tx.send_replace(z);
            None
        }
        Action::EnsureVtep => {
            if let Err(error) = vtep::ensure(cx.nl, cx.vcfg).await {
                warn!(%error, "vtep check failed");
            }
            None
        }
        Action::ConvergeVtep(remotes) => {
            match vtep::converge(cx.nl, cx.vcfg, &remotes).await {
                Ok(changes) => {
                    for c in changes {
                        info!(change = %c, "overlay");
                    }
                }
                Err(error) => warn!(%error, "vtep convergence failed"),
            }
            None
        }
        Action::ApplyRules(text) => Some(apply_rules(text, cx).await),
        Action::CheckRules(gen) => {
            cx.checks.start(gen);
            None
        }
        Action::WriteCniConfig => Some(write_cni_config(cx).await),
        Action::SyncCerts => {
            sync_certs(cx.client, &cx.cfg.cell, cx.core).await;
            None
        }
        Action::Confirm(i) => {
            let ok = match cx.client.confirm_instance(&cx.cfg.cell, &i).await {
                Ok(()) => {
                    info!(instance = %i.guid, app = %i.app_guid, ip = %i.ip, "instance confirmed");
                    true
                }
                Err(error) => {
                    warn!(%error, instance = %i.guid, "confirming instance failed");
                    false
                }
            };
            Some(Event::Confirmed(i, ok))
        }
        Action::Withdraw(g) => {
            let ok = match cx.client.withdraw_instance(&cx.cfg.cell, &g).await {
                Ok(()) => {
                    info!(instance = %g, "instance withdrawn");
                    true
                }
                Err(error) => {
                    warn!(%error, instance = %g, "withdrawing instance failed");
                    false
                }
            };
            Some(Event::Withdrawn(g, ok))
        }
        Action::RetrySoon => {
            let retry = cx.retry.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                retry.notify_one();
            });
            None
        }
    }
}

/// Applies the ruleset `text`; the answer says whether it took.
async fn apply_rules(text: String, cx: &Ctx<'_>) -> Event {
    let (revision, containers, policies) = cx.core.view().map_or((0, 0, 0), |v| {
        (v.revision.0, cx.core.records().len(), v.policies.len())
    });
    let apply_began = Instant::now();
    let base = cx.kernel.lock().unwrap_or_else(|p| p.into_inner()).take();
    let r = match tokio::task::spawn_blocking(move || apply_over(base, text)).await {
        Ok(Ok((text, how))) => {
            *cx.kernel.lock().unwrap_or_else(|p| p.into_inner()) = Some(text);
            cx.metrics
                .applied(revision, containers, policies, apply_began.elapsed());
            info!(
                revision,
                containers,
                policies,
                elapsed_ms = cx.started.elapsed().as_millis() as u64,
                how,
                "rules applied"
            );
            Ok(())
        }
        Ok(Err(error)) => {
            cx.metrics.apply_failed();
            warn!(%error, "applying rules failed");
            Err(error.to_string())
        }
        Err(error) => {
            cx.metrics.apply_failed();
            warn!(%error, "rules task failed");
            Err(error.to_string())
        }
    };
    Event::RulesApplied(r)
}

/// Applies `text` over `base`, the ruleset the kernel holds: as the set elements that differ
/// when only those do (the whole ruleset if that fails), else whole. Gives back `text` and how
/// it went in.
fn apply_over(
    base: Option<String>,
    text: String,
) -> Result<(String, &'static str), rules::RulesError> {
    if let Some(d) = base.as_deref().and_then(|b| rules::delta(b, &text)) {
        if d.is_empty() {
            return Ok((text, "unchanged"));
        }
        match rules::apply(&d) {
            Ok(()) => return Ok((text, "elements")),
            Err(error) => {
                warn!(%error, "applying the changed elements failed; applying the whole ruleset")
            }
        }
    }
    rules::apply(&text).map(|()| (text, "whole"))
}

/// Writes the CNI config: the cell is ready for containers.
async fn write_cni_config(cx: &Ctx<'_>) -> Event {
    let (path, conf) = (cx.cfg.cni_config.clone(), cx.cni_conf.to_string());
    let r = tokio::task::spawn_blocking(move || write_atomic(&path, conf.as_bytes())).await;
    let ok = match r {
        Ok(Ok(())) => {
            info!(path = %cx.cfg.cni_config.display(), "cell ready: CNI config written");
            true
        }
        Ok(Err(error)) => {
            warn!(%error, "writing the CNI config failed");
            false
        }
        Err(error) => {
            warn!(%error, "CNI config task failed");
            false
        }
    };
    Event::CniConfigWritten(ok)
}
