//! Which connections the API takes, and when each gets its TLS handshake: the shared things a
//! client can hold (open connections, handshakes in progress) each have a budget in total and
//! one per client address (see [`Budget`]).
//!
//! - Past `max_connections`, or past its address's `max_connections_per_source`, a new
//!   connection is closed at once: nothing waits on a cap, and the listen backlog never fills.
//! - Past its address's `max_handshakes_per_source` (handshakes waiting or in progress), a new
//!   connection is closed at once: a peer that opens connections and never finishes their
//!   handshakes holds that many turns, not every one.
//! - Past `max_handshakes` in progress, a connection waits its turn (first come, first served)
//!   for up to `handshake_queue`, then is closed: its client tries the next replica. A storm of
//!   reconnecting cells is handshaken at the pace the CPU allows, a budget at a time. Without
//!   the budget every handshake shares the CPU with every other, and all of them finish late.
//!   Past their clients' connect timeout, that is every one of them: a collapse.
//!
//! Each refusal is counted in `c2c_control_shed{reason}`, and the handshakes in progress and
//! waiting are gauges, so an operator sees a storm being shed.

use std::net::IpAddr;
use std::sync::Arc;

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
    handshakes_by_source: Arc<PerSource>,
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
            handshakes_by_source: PerSource::new(budget.max_handshakes_per_source.max(1)),
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
    /// closed (over its address's share, no turn within the queue's wait, or a failed or slow
    /// handshake).
    pub(crate) async fn handshake(
        &self,
        admitted: &Admitted,
        acceptor: &TlsAcceptor,
        tcp: TcpStream,
        metrics: &Metrics,
    ) -> Option<TlsStream<TcpStream>> {
        let ip = admitted.ip;
        let Some(_share) = self.handshakes_by_source.take(ip) else {
            debug!(%ip, max = self.budget.max_handshakes_per_source, "the address holds its most handshakes; closing");
            metrics.shed("handshakes_per_source");
            return None;
        };
        let turn = {
            let _waiting = Raised::new(&metrics.handshakes_waiting);
            tokio::time::timeout(
                self.budget.handshake_queue,
                self.handshakes.clone().acquire_owned(),
            )
            .await
        };
        let Ok(Ok(_turn)) = turn else {
            debug!(%ip, waited = ?self.budget.handshake_queue, "no handshake turn in time; closing");
            metrics.shed("handshake_queue");
            return None;
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
