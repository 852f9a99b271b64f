//! The open watch streams of each cell, oldest first: a cell holds at most
//! [`Budget::watch_streams_per_cell`](crate::ctx::Budget) of them, and a newer one closes the
//! oldest. A replica holds at most [`Budget::max_streams`](crate::ctx::Budget) in all: each
//! stream reserves its place before its `101` is answered ([`Streams::reserve`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

/// The open streams of each cell, oldest first, so a newer one can close the oldest.
#[derive(Default)]
pub struct Streams {
    next: AtomicU64,
    by_cell: Mutex<HashMap<String, Vec<(u64, CancellationToken)>>>,
    /// Places reserved, every cell together (a stream holds its own from before its upgrade).
    reserved: Arc<AtomicUsize>,
}

/// A stream's place in the replica's total; given back on drop.
pub(crate) struct Reserved(Arc<AtomicUsize>);

impl Drop for Reserved {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A stream's place in [`Streams`]; leaves it when dropped.
pub(crate) struct Slot<'a> {
    pub(crate) streams: &'a Streams,
    pub(crate) cell: String,
    pub(crate) id: u64,
    pub(crate) closed: CancellationToken,
}

impl Streams {
    /// A place for one more stream, unless `max` are held already.
    pub(crate) fn reserve(&self, max: usize) -> Option<Reserved> {
        self.reserved
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max.max(1)).then_some(n + 1)
            })
            .ok()
            .map(|_| Reserved(self.reserved.clone()))
    }

    /// Registers a stream of `cell`, closing its oldest beyond `limit`.
    pub(crate) fn open(&self, cell: &str, limit: usize) -> Slot<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let closed = CancellationToken::new();
        let mut by_cell = self.by_cell.lock().unwrap_or_else(|p| p.into_inner());
        let open = by_cell.entry(cell.to_string()).or_default();
        open.push((id, closed.clone()));
        while open.len() > limit.max(1) {
            let (_, oldest) = open.remove(0);
            oldest.cancel();
        }
        Slot {
            streams: self,
            cell: cell.to_string(),
            id,
            closed,
        }
    }

    /// How many streams every cell holds together.
    pub fn total(&self) -> usize {
        let by_cell = self.by_cell.lock().unwrap_or_else(|p| p.into_inner());
        by_cell.values().map(Vec::len).sum()
    }

    /// How many streams `cell` holds.
    pub fn open_for(&self, cell: &str) -> usize {
        let by_cell = self.by_cell.lock().unwrap_or_else(|p| p.into_inner());
        by_cell.get(cell).map_or(0, Vec::len)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut by_cell = self
            .streams
            .by_cell
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(open) = by_cell.get_mut(&self.cell) {
            open.retain(|(id, _)| *id != self.id);
            if open.is_empty() {
                by_cell.remove(&self.cell);
            }
        }
    }
}
