//! Which connections the API takes, and when each gets its TLS handshake: the shared things a
//! client can hold (open connections, handshakes in progress) each have a budget in total and
//! one per client address (see [`Budget`]).
//!
//! - Past `max_connections`, or past its address's `max_connections_per_source`, a new
//!   connection is closed at once: nothing waits on a cap, and the listen backlog never fills.
//! - A connection's handshake waits first for a turn of its address (`max_handshakes_per_source`
//!   in progress from one address), then for a turn of the listener (`max_handshakes`), first
//!   come, first served, for up to `handshake_queue` in all; then it is closed and its client
//!   tries the next replica. A peer that opens connections and never finishes their handshakes
//!   holds its address's turns, not every one: its other connections wait behind its own. A
//!   storm of reconnecting cells is handshaken at the pace the CPU allows, a budget at a time.
//!   Without the budget every handshake shares the CPU with every other, and all of them finish
//!   late. Past their clients' connect timeout, that is every one of them: a collapse.
//!
//! Each refusal is counted in `c2c_control_shed{reason}`, and the handshakes in progress and
//! waiting are gauges, so an operator sees a storm being shed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use c2c_api::per_source::{PerSource, SourceSlot};
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tracing::debug;

use crate::ctx::Budget;
use crate::metrics::Metrics;

/// The API listener's budgets, shared by its connections.
pub(crate) struct Gate {
    budget: Budget,
    connections: Arc<Semaphore>,
    connections_by_source: Arc<PerSource>,
    handshakes: Arc<Semaphore>,
    source_turns: SourceTurns,
}

/// A connection the gate took: its places in the connection budgets, given back on drop.
pub(crate) struct Admitted {
    ip: IpAddr,
    _connection: OwnedSemaphorePermit,
    _source: SourceSlot,
}

/// A gauge raised while this lives.
struct Raised(Gauge);

impl Raised {
    fn new(g: &Gauge) -> Self {
        g.inc();
        Self(g.clone())
    }
}

impl Drop for Raised {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Gate {
    /// The budgets of `budget` (every cap at least 1).
    pub(crate) fn new(budget: Budget) -> Self {
        Self {
            budget,
            connections: Arc::new(Semaphore::new(budget.max_connections.max(1))),
            connections_by_source: PerSource::new(budget.max_connections_per_source.max(1)),
            handshakes: Arc::new(Semaphore::new(budget.max_handshakes.max(1))),
            source_turns: SourceTurns {
                limit: budget.max_handshakes_per_source.max(1),
                by_ip: Mutex::default(),
            },
        }
    }

    /// Takes a new connection from `ip`, or `None` if it must be closed at once.
    pub(crate) fn admit(&self, ip: IpAddr, metrics: &Metrics) -> Option<Admitted> {
        let Ok(connection) = self.connections.clone().try_acquire_owned() else {
            debug!(%ip, max = self.budget.max_connections, "connection cap reached; closing");
            metrics.shed("connections");
            return None;
        };
        let Some(source) = self.connections_by_source.take(ip) else {
            debug!(%ip, max = self.budget.max_connections_per_source, "the address holds its most connections; closing");
            metrics.shed("connections_per_source");
            return None;
        };
        Some(Admitted {
            ip,
            _connection: connection,
            _source: source,
        })
    }

    /// The TLS handshake of `admitted`'s connection, in its turn; `None` if the connection was
    /// closed (no turn within the queue's wait, or a failed or slow handshake).
    pub(crate) async fn handshake(
        &self,
        admitted: &Admitted,
        acceptor: &TlsAcceptor,
        tcp: TcpStream,
        metrics: &Metrics,
    ) -> Option<TlsStream<TcpStream>> {
        let ip = admitted.ip;
        let source = self.source_turns.of(ip);
        let turns = {
            let _waiting = Raised::new(&metrics.handshakes_waiting);
            let deadline = tokio::time::Instant::now() + self.budget.handshake_queue;
            match tokio::time::timeout_at(deadline, source.turns.clone().acquire_owned()).await {
                Ok(Ok(mine)) => {
                    match tokio::time::timeout_at(deadline, self.handshakes.clone().acquire_owned())
                        .await
                    {
                        Ok(Ok(all)) => Ok((mine, all)),
                        _ => Err("handshake_queue"),
                    }
                }
                _ => Err("handshakes_per_source"),
            }
        };
        let _turns = match turns {
            Ok(t) => t,
            Err(reason) => {
                debug!(%ip, waited = ?self.budget.handshake_queue, reason, "no handshake turn in time; closing");
                metrics.shed(reason);
                return None;
            }
        };
        let _in_progress = Raised::new(&metrics.handshakes_in_progress);
        match tokio::time::timeout(self.budget.handshake, acceptor.accept(tcp)).await {
            Ok(Ok(t)) => Some(t),
            Ok(Err(error)) => {
                debug!(%error, %ip, "tls handshake failed");
                None
            }
            Err(_) => {
                debug!(%ip, "tls handshake timed out");
                None
            }
        }
    }
}

/// The handshake turns of each client address in use: a semaphore per address, removed once
/// no connection of that address holds or waits for a turn.
struct SourceTurns {
    limit: usize,
    by_ip: Mutex<HashMap<IpAddr, Arc<Semaphore>>>,
}

/// An address's turns, held by one connection; leaves the map with its last holder.
struct Source<'a> {
    owner: &'a SourceTurns,
    ip: IpAddr,
    turns: Arc<Semaphore>,
}

impl SourceTurns {
    fn of(&self, ip: IpAddr) -> Source<'_> {
        let mut by_ip = self.by_ip.lock().unwrap_or_else(|p| p.into_inner());
        let turns = by_ip
            .entry(ip)
            .or_insert_with(|| Arc::new(Semaphore::new(self.limit)))
            .clone();
        Source {
            owner: self,
            ip,
            turns,
        }
    }
}

impl Drop for Source<'_> {
    fn drop(&mut self) {
        let mut by_ip = self.owner.by_ip.lock().unwrap_or_else(|p| p.into_inner());
        // The map's and this one: no other connection of the address holds or waits.
        if Arc::strong_count(&self.turns) == 2 {
            by_ip.remove(&self.ip);
        }
    }
}
