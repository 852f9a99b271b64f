//! A budget per client address: how many of a shared thing (open connections, handshakes in
//! progress) one address may hold at once, so one peer cannot take every slot of a total cap.
//! The sidecar and control both keep theirs here.

use std::net::IpAddr;
use std::sync::Arc;

/// Slots per client address, so one peer cannot hold every slot of a total cap (issue #23: one
/// policy-allowed peer held 9,992 of the sidecar's 10,000 connections and every other client
/// timed out). What is over its source's share is refused (a connection closed at once).
pub struct PerSource {
    limit: usize,
    open: std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>,
}

/// One place in its source's share; given back on drop.
pub struct SourceSlot {
    owner: Arc<PerSource>,
    ip: IpAddr,
}

impl PerSource {
    /// At most `limit` slots per client address.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            open: Default::default(),
        })
    }

    /// A slot for a connection from `ip`, unless it holds `limit` already.
    pub fn take(self: &Arc<Self>, ip: IpAddr) -> Option<SourceSlot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            owner: self.clone(),
            ip,
        })
    }

    /// Slots `ip` holds.
    pub fn held(&self, ip: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut open = self.owner.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}
