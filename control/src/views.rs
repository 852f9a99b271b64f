//! What the watch hands each cell, built once per revision. Every part of a cell's view but its
//! policies is the same for every cell (leases, apps, instances, routes, domains), so it is
//! read from one snapshot and serialized once per revision; each cell's answer is that text
//! plus the policies touching its own instances, filtered in memory. Many cells woken by one
//! change cost one read of the state, not one each, and none holds the state's lock while its
//! answer is built.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::state::{Policy, Revision, State, StateError};

/// The parts of a revision's view every cell shares.
pub struct Shared {
    /// The revision.
    pub revision: Revision,
    /// `"leases":[...],"apps":[...],"instances":[...],"routes":[...],"domains":[...]`.
    json: String,
    /// App GUIDs with an instance on each cell.
    local_apps: HashMap<String, BTreeSet<String>>,
    /// Every policy.
    policies: Vec<Policy>,
}

impl Shared {
    /// Reads the state's current snapshot.
    pub fn read(s: &State) -> Result<Self, StateError> {
        s.snapshot(|s| {
            let revision = s.revision()?;
            let instances = s.instances(None)?;
            let mut local_apps: HashMap<String, BTreeSet<String>> = HashMap::new();
            for i in &instances {
                local_apps
                    .entry(i.cell.to_string())
                    .or_default()
                    .insert(i.app_guid.to_string());
            }
            let enc = |e: serde_json::Error| StateError::Internal(format!("encoding a view: {e}"));
            let json = format!(
                "\"leases\":{},\"apps\":{},\"instances\":{},\"routes\":{},\"domains\":{}",
                serde_json::to_string(&s.leases()?).map_err(enc)?,
                serde_json::to_string(&s.apps()?).map_err(enc)?,
                serde_json::to_string(&instances).map_err(enc)?,
                serde_json::to_string(&s.routes()?).map_err(enc)?,
                serde_json::to_string(&s.domains()?).map_err(enc)?,
            );
            Ok(Shared {
                revision,
                json,
                local_apps,
                policies: s.policies(None)?,
            })
        })
    }

    /// `cell`'s view, as JSON (a `CellView`).
    pub fn view_json(&self, cell: &str) -> Result<String, StateError> {
        let empty = BTreeSet::new();
        let local = self.local_apps.get(cell).unwrap_or(&empty);
        let mine: Vec<&Policy> = self
            .policies
            .iter()
            .filter(|p| local.contains(p.source.as_str()) || local.contains(p.destination.as_str()))
            .collect();
        let policies = serde_json::to_string(&mine)
            .map_err(|e| StateError::Internal(format!("encoding a view: {e}")))?;
        Ok(format!(
            "{{\"revision\":{},{},\"policies\":{policies}}}",
            self.revision.0, self.json
        ))
    }
}

/// The last revision's shared view; a watcher woken for a newer revision rebuilds it once, and
/// the others woken with it wait for that and reuse it.
#[derive(Default)]
pub struct Cache {
    last: tokio::sync::Mutex<Option<Arc<Shared>>>,
}

impl Cache {
    /// The shared view at `revision` or later, read with `read` when the cached one is older.
    pub async fn at_least<F, Fut>(
        &self,
        revision: Revision,
        read: F,
    ) -> Result<Arc<Shared>, StateError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Shared, StateError>>,
    {
        let mut last = self.last.lock().await;
        if let Some(s) = last.as_ref().filter(|s| s.revision >= revision) {
            return Ok(s.clone());
        }
        let fresh = Arc::new(read().await?);
        *last = Some(fresh.clone());
        Ok(fresh)
    }
}
