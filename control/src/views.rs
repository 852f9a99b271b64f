//! What the watch hands each cell, built once per revision. Every part of a cell's view but its
//! policies is the same for every cell (leases, apps, instances, routes, domains), so it is
//! read from one snapshot and serialized once per revision; each cell's answer is that text
//! plus the policies touching its own instances, filtered in memory. Many cells woken by one
//! change cost one read of the state, not one each, and none holds the state's lock while its
//! answer is built. A watch that asks for changes only (`delta=1`, what agents send) gets the
//! parts that differ from the revision it named; the rest it already has (`unchanged`).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::journal::PolicyIndex;
use crate::state::{Revision, State, StateError};
use c2c_api::CellView;

/// The parts of a revision's view every cell shares.
pub struct Shared {
    /// The revision.
    pub revision: Revision,
    /// Each part's name, JSON and a hash of it.
    parts: [(&'static str, String, u64); 6],
    /// App GUIDs with an instance on each cell.
    local_apps: HashMap<String, BTreeSet<String>>,
    /// Every policy, by app.
    pub(crate) policies: PolicyIndex,
    /// The policy journal's last entry this view has followed.
    pub(crate) journal: i64,
    /// Whether its policies were followed through the journal (not read whole).
    followed: bool,
}

impl Shared {
    /// Reads the state's current snapshot; its policies followed from `prev`'s through the
    /// policy journal when it still holds what came since, else read whole.
    pub fn read(s: &State, prev: Option<&Shared>) -> Result<Self, StateError> {
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
            let part = |name: &'static str, json: String| {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                json.hash(&mut h);
                (name, json, h.finish())
            };
            let parts = [
                part("leases", serde_json::to_string(&s.leases()?).map_err(enc)?),
                part("apps", serde_json::to_string(&s.apps()?).map_err(enc)?),
                part("instances", serde_json::to_string(&instances).map_err(enc)?),
                part("routes", serde_json::to_string(&s.routes()?).map_err(enc)?),
                part(
                    "domains",
                    serde_json::to_string(&s.domains()?).map_err(enc)?,
                ),
                part("egress", serde_json::to_string(&s.egress()?).map_err(enc)?),
            ];
            let followed = match prev {
                Some(prev) => s
                    .policy_journal(prev.journal)?
                    .map(|(entries, head)| (prev.policies.followed(entries), head)),
                None => None,
            };
            let was_followed = followed.is_some();
            let (policies, journal) = match followed {
                Some(f) => f,
                None => {
                    let head = s.policy_journal_head()?;
                    (PolicyIndex::of(s.policies(None)?), head)
                }
            };
            Ok(Shared {
                revision,
                parts,
                local_apps,
                policies,
                journal,
                followed: was_followed,
            })
        })
    }

    /// Whether its policies were followed through the journal from the view before (not
    /// read whole).
    pub fn followed(&self) -> bool {
        self.followed
    }

    /// The parts' hashes.
    pub fn hashes(&self) -> [u64; 6] {
        self.parts.clone().map(|p| p.2)
    }

    /// `cell`'s view, as JSON (a `CellView`): whole, or without the parts whose hash is the
    /// one in `since` (the hashes at the revision the cell has), named in `unchanged`.
    pub fn view_json(&self, cell: &str, since: Option<[u64; 6]>) -> Result<String, StateError> {
        Ok(self.view_pieces(cell, since)?.concat())
    }

    /// [`Shared::view_json`] in pieces, in order: the shared parts borrowed, not copied, so a
    /// stream can write a thousand cells' views without a thousand copies of them.
    pub fn view_pieces(
        &self,
        cell: &str,
        since: Option<[u64; 6]>,
    ) -> Result<Vec<std::borrow::Cow<'_, str>>, StateError> {
        use std::borrow::Cow;
        // The policies of the apps running here, in order, each once.
        let mine = self
            .policies
            .of_apps(self.local_apps.get(cell).into_iter().flatten());
        let policies = serde_json::to_string(&mine)
            .map_err(|e| StateError::Internal(format!("encoding a view: {e}")))?;
        let mut out: Vec<Cow<'_, str>> = vec![Cow::Owned(format!(
            "{{\"revision\":{},\"policies\":{policies}",
            self.revision.0
        ))];
        let mut unchanged = vec![];
        for (i, (name, json, hash)) in self.parts.iter().enumerate() {
            if since.is_some_and(|h| h[i] == *hash) {
                unchanged.push(format!("\"{name}\""));
            } else {
                out.push(Cow::Owned(format!(",\"{name}\":")));
                out.push(Cow::Borrowed(json.as_str()));
            }
        }
        if !unchanged.is_empty() {
            out.push(Cow::Owned(format!(
                ",\"unchanged\":[{}]",
                unchanged.join(",")
            )));
        }
        out.push(Cow::Borrowed("}"));
        Ok(out)
    }
}

/// The last revision's shared view; a watcher woken for a newer revision rebuilds it once, and
/// the others woken with it wait for that and reuse it.
#[derive(Default)]
pub struct Cache {
    last: tokio::sync::Mutex<Option<Arc<Shared>>>,
    /// The parts' hashes at the last revisions built here, newest last.
    history: std::sync::Mutex<VecDeque<(Revision, [u64; 6])>>,
}

/// How many revisions' hashes are kept for deltas.
const HISTORY: usize = 256;

impl Cache {
    /// The shared view at `revision` or later, read with `read` (given the cached one, to
    /// follow from) when the cached one is older.
    pub async fn at_least<F, Fut>(
        &self,
        revision: Revision,
        read: F,
    ) -> Result<Arc<Shared>, StateError>
    where
        F: FnOnce(Option<Arc<Shared>>) -> Fut,
        Fut: std::future::Future<Output = Result<Shared, StateError>>,
    {
        let mut last = self.last.lock().await;
        if let Some(s) = last.as_ref().filter(|s| s.revision >= revision) {
            return Ok(s.clone());
        }
        let fresh = Arc::new(read(last.clone()).await?);
        *last = Some(fresh.clone());
        if let Ok(mut h) = self.history.lock() {
            if h.back().is_none_or(|(r, _)| *r < fresh.revision) {
                h.push_back((fresh.revision, fresh.hashes()));
                if h.len() > HISTORY {
                    h.pop_front();
                }
            }
        }
        Ok(fresh)
    }

    /// The parts' hashes at `revision`, if a view of it was built here lately.
    pub fn hashes_at(&self, revision: Revision) -> Option<[u64; 6]> {
        let h = self.history.lock().ok()?;
        h.iter()
            .rev()
            .find(|(r, _)| *r == revision)
            .map(|(_, x)| *x)
    }
}

/// What `cell` needs, at the current revision.
pub fn view(s: &State, cell: &str) -> Result<CellView, StateError> {
    let instances = s.instances(None)?;
    let local: Vec<String> = instances
        .iter()
        .filter(|i| i.cell == cell)
        .map(|i| i.app_guid.to_string())
        .collect();
    // In the order the shared view gives them (a policy's own order).
    let mut policies = s.policies(Some(&local))?;
    policies.sort();
    Ok(CellView {
        revision: s.revision()?,
        leases: s.leases()?,
        apps: s.apps()?,
        policies,
        instances,
        routes: s.routes()?,
        domains: s.domains()?,
        egress: s.egress()?,
        unchanged: vec![],
    })
}
