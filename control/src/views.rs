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
    /// Each part's name, JSON and a hash of it (shared with the views after it while the
    /// part is unchanged).
    parts: [Part; 6],
    /// Each part's counter (`view_parts`) when read; None for those read every time.
    versions: [Option<i64>; 6],
    /// App GUIDs with an instance on each cell.
    local_apps: Arc<HashMap<String, BTreeSet<String>>>,
    /// Every policy, by app.
    pub(crate) policies: PolicyIndex,
    /// The policy journal's last entry this view has followed.
    pub(crate) journal: i64,
    /// Whether its policies were followed through the journal (not read whole).
    followed: bool,
    /// The probes each cell hosts (read every time: a handful at most per cell).
    probes: HashMap<String, Vec<c2c_api::probe::Hosted>>,
    /// How many parts it took from the view before, unchanged.
    reused: usize,
}

/// A part of the view: its name, JSON and the JSON's hash.
type Part = (&'static str, Arc<str>, u64);

/// The parts, in the order views carry them.
const PARTS: [&str; 6] = ["leases", "apps", "instances", "routes", "domains", "egress"];

impl Shared {
    /// Reads the state's current snapshot. From `prev`, the view read before: its policies
    /// are followed through the policy journal when it still holds what came since, and each
    /// part whose counter has not moved is taken as it was; the rest is read.
    pub fn read(s: &State, prev: Option<&Shared>) -> Result<Self, StateError> {
        s.snapshot(|s| {
            let revision = s.revision()?;
            let counters = s.view_part_counters()?;
            let versions = PARTS.map(|name| counters.get(name).copied());
            let same = |k: usize| {
                prev.filter(|p| versions[k].is_some() && p.versions[k] == versions[k])
                    .map(|p| p.parts[k].clone())
            };
            let part = |k: usize, json: String| -> Part {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                json.hash(&mut h);
                (PARTS[k], json.into(), h.finish())
            };
            let mut reused = 0;
            let mut take = |k: usize, read: &dyn Fn() -> Result<String, StateError>| match same(k) {
                Some(p) => {
                    reused += 1;
                    Ok(p)
                }
                None => read().map(|json| part(k, json)),
            };
            let unchanged_instances = same(2);
            let (instances, local_apps) = match (unchanged_instances.clone(), prev) {
                (Some(p), Some(prev)) => (p, prev.local_apps.clone()),
                _ => {
                    let all = s.instances(None)?;
                    let mut local: HashMap<String, BTreeSet<String>> = HashMap::new();
                    for i in &all {
                        local
                            .entry(i.cell.to_string())
                            .or_default()
                            .insert(i.app_guid.to_string());
                    }
                    (part(2, json(&all)?), Arc::new(local))
                }
            };
            let parts = [
                take(0, &|| json(&s.leases()?))?,
                take(1, &|| json(&s.apps()?))?,
                instances,
                take(3, &|| json(&s.routes()?))?,
                take(4, &|| json(&s.domains()?))?,
                take(5, &|| json(&s.egress()?))?,
            ];
            reused += usize::from(unchanged_instances.is_some());
            let (policies, journal, followed) = follow_policies(s, prev)?;
            let mut probes: HashMap<String, Vec<c2c_api::probe::Hosted>> = HashMap::new();
            for (cell, p) in s.probes_hosted()? {
                probes.entry(cell).or_default().push(p);
            }
            Ok(Shared {
                probes,
                revision,
                parts,
                versions,
                local_apps,
                policies,
                journal,
                followed,
                reused,
            })
        })
    }

    /// How many parts it took unchanged from the view before.
    pub fn reused(&self) -> usize {
        self.reused
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
        let policies = json(&mine)?;
        let probes = match self.probes.get(cell) {
            Some(p) => format!(",\"probes\":{}", json(p)?),
            None => String::new(),
        };
        let mut out: Vec<Cow<'_, str>> = vec![Cow::Owned(format!(
            "{{\"revision\":{},\"policies\":{policies}{probes}",
            self.revision.0
        ))];
        let mut unchanged = vec![];
        for (i, (name, json, hash)) in self.parts.iter().enumerate() {
            if since.is_some_and(|h| h[i] == *hash) {
                unchanged.push(format!("\"{name}\""));
            } else {
                out.push(Cow::Owned(format!(",\"{name}\":")));
                out.push(Cow::Borrowed(&**json));
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

/// The policies at `s`: `prev`'s followed through the journal when it can be (with the
/// journal's head, and true), else read whole.
fn follow_policies(
    s: &State,
    prev: Option<&Shared>,
) -> Result<(PolicyIndex, i64, bool), StateError> {
    if let Some(prev) = prev {
        if let Some((entries, head)) = s.policy_journal(prev.journal)? {
            return Ok((prev.policies.followed(entries), head, true));
        }
    }
    let head = s.policy_journal_head()?;
    Ok((PolicyIndex::of(s.policies(None)?), head, false))
}

/// A part's value as JSON.
fn json<T: serde::Serialize>(v: &T) -> Result<String, StateError> {
    serde_json::to_string(v).map_err(|e| StateError::Internal(format!("encoding a view: {e}")))
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
        probes: s
            .probes_hosted()?
            .into_iter()
            .filter(|(c, _)| c == cell)
            .map(|(_, p)| p)
            .collect(),
        unchanged: vec![],
    })
}
