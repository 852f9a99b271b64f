//! The policy journal (migration 14): every policy added or removed, in the order the writes
//! happened, whichever path made them (an app's deletion removes its policies through the
//! foreign key, and the triggers see that too). The watches' shared view follows it from the
//! revision it last read instead of reading every policy again: with 100,000 policies, a
//! change costs the entries since, not the whole table.
//!
//! Writers are serialized (SQLite's `BEGIN IMMEDIATE`, PostgreSQL's advisory lock), so a
//! snapshot that saw entry N saw every entry before it, and no entry below N can appear later.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::state::{policy_row, Policy, State, StateError};

pub use crate::state::JOURNAL_KEEP;

/// The entries after `after`, in order (`true`: added), and the last entry's id; `None` when
/// some of them were pruned (read every policy instead).
pub type Entries = (Vec<(bool, Policy)>, i64);

impl State {
    /// The journal's last entry (0 if none): a reader of every policy notes it, in the same
    /// snapshot, to follow the journal from there.
    pub fn policy_journal_head(&self) -> Result<i64, StateError> {
        self.db
            .query_row("SELECT COALESCE(MAX(id), 0) FROM policy_journal", (), |r| {
                r.get::<i64>(0)
            })
    }

    /// Each view part's change counter (`view_parts`: apps, instances, routes, domains),
    /// moved by the tables it is read from whenever they change.
    pub fn view_part_counters(&self) -> Result<HashMap<String, i64>, StateError> {
        Ok(self
            .db
            .query_map("SELECT part, n FROM view_parts", (), |r| {
                Ok((r.get::<String>(0)?, r.get::<i64>(1)?))
            })?
            .into_iter()
            .collect())
    }

    /// The policies added and removed since entry `after`; `None` when entries after it
    /// were pruned.
    pub fn policy_journal(&self, after: i64) -> Result<Option<Entries>, StateError> {
        let pruned: i64 =
            self.db
                .query_row("SELECT pruned_through FROM policy_journal_info", (), |r| {
                    r.get(0)
                })?;
        if after < pruned {
            return Ok(None);
        }
        let mut st = self.db.prepare(
            "SELECT id, added, source, destination, protocol, start_port, end_port \
             FROM policy_journal WHERE id > ? ORDER BY id",
        )?;
        let rows: Vec<(i64, bool, Policy)> = st
            .query_map([after], |r| {
                Ok((r.get::<i64>(0)?, r.get::<i64>(1)? != 0, policy_row(r, 2)?))
            })?
            .collect::<Result<_, _>>()?;
        let head = rows.last().map_or(after, |r| r.0);
        Ok(Some((
            rows.into_iter().map(|(_, added, p)| (added, p)).collect(),
            head,
        )))
    }
}

/// Every policy, by each app it names (as source or destination), each app's set shared
/// between revisions: a change copies only the sets of the apps it names.
#[derive(Clone, Default)]
pub struct PolicyIndex {
    by_app: HashMap<String, Arc<BTreeSet<Policy>>>,
}

impl PolicyIndex {
    /// The index of `policies`.
    pub fn of(policies: Vec<Policy>) -> Self {
        let mut ix = PolicyIndex::default();
        for p in policies {
            ix.add(p);
        }
        ix
    }

    /// Adds `p` (under its source and its destination).
    pub fn add(&mut self, p: Policy) {
        if p.destination != p.source {
            let set = self.by_app.entry(p.destination.to_string()).or_default();
            Arc::make_mut(set).insert(p.clone());
        }
        let set = self.by_app.entry(p.source.to_string()).or_default();
        Arc::make_mut(set).insert(p);
    }

    /// Removes `p`.
    pub fn remove(&mut self, p: &Policy) {
        for app in [p.source.as_str(), p.destination.as_str()] {
            if let Some(set) = self.by_app.get_mut(app) {
                if set.contains(p) {
                    Arc::make_mut(set).remove(p);
                }
                if set.is_empty() {
                    self.by_app.remove(app);
                }
            }
        }
    }

    /// The index after `entries` (in order).
    pub fn followed(&self, entries: Vec<(bool, Policy)>) -> Self {
        let mut ix = self.clone();
        for (added, p) in entries {
            if added {
                ix.add(p);
            } else {
                ix.remove(&p);
            }
        }
        ix
    }

    /// The policies naming any of `apps`, each once, in order.
    pub fn of_apps<'a>(&self, apps: impl IntoIterator<Item = &'a String>) -> Vec<&Policy> {
        let mut out: BTreeSet<&Policy> = BTreeSet::new();
        for app in apps {
            if let Some(set) = self.by_app.get(app.as_str()) {
                out.extend(set.iter());
            }
        }
        out.into_iter().collect()
    }

    /// Every policy, each once, in order.
    pub fn all(&self) -> Vec<&Policy> {
        self.of_apps(self.by_app.keys())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::PortRange;
    use crate::views::Shared;

    #[test]
    fn a_reader_behind_the_pruned_entries_reads_every_policy_instead() {
        let d = tempfile::tempdir().unwrap();
        let mut s = State::open(&d.path().join("s.db"), ([10, 255, 0, 0].into(), 16), 60).unwrap();
        let (a, b) = (s.create_app("a").unwrap(), s.create_app("b").unwrap());
        let pol = |port| Policy {
            source: a.guid.clone(),
            destination: b.guid.clone(),
            protocol: "tcp".parse().unwrap(),
            ports: PortRange::new(port, port).unwrap(),
        };
        s.add_policies(&[pol(1)]).unwrap();
        let first = Shared::read(&s, None).unwrap();
        s.add_policies(&[pol(2), pol(3)]).unwrap();
        s.delete_policies(&[pol(1)]).unwrap();
        let (entries, head) = s.policy_journal(first.journal).unwrap().unwrap();
        assert_eq!(entries, [(true, pol(2)), (true, pol(3)), (false, pol(1))]);
        assert_eq!(head, s.policy_journal_head().unwrap());
        // Positive control: the view follows from the first.
        let followed = Shared::read(&s, Some(&first)).unwrap();
        assert!(followed.followed());
        // Entries after the first view's pruned: it can no longer follow; a whole read.
        s.db.execute(
            "UPDATE policy_journal_info SET pruned_through = ?",
            [first.journal + 1],
        )
        .unwrap();
        assert!(s.policy_journal(first.journal).unwrap().is_none());
        let whole = Shared::read(&s, Some(&first)).unwrap();
        assert!(!whole.followed());
        assert_eq!(whole.policies.all(), followed.policies.all());
        assert_eq!(whole.policies.all(), [&pol(2), &pol(3)]);
    }

    #[test]
    fn pruning_keeps_the_last_entries_and_says_where_it_cut() {
        let d = tempfile::tempdir().unwrap();
        let s = State::open(&d.path().join("s.db"), ([10, 255, 0, 0].into(), 16), 60).unwrap();
        let tx = s.db.begin_write().unwrap();
        tx.execute(
            "INSERT INTO policy_journal (id, added, source, destination, protocol, start_port, end_port) VALUES (?, 1, 'x', 'y', 'tcp', 1, 1)",
            [JOURNAL_KEEP + 10],
        )
        .unwrap();
        tx.execute(
            "INSERT INTO policy_journal (id, added, source, destination, protocol, start_port, end_port) VALUES (5, 1, 'x', 'y', 'tcp', 1, 1)",
            (),
        )
        .unwrap();
        crate::state::prune_policy_journal(&tx).unwrap();
        tx.commit().unwrap();
        assert!(s.policy_journal(4).unwrap().is_none());
        assert!(s.policy_journal(10).unwrap().is_some());
        let left: i64 =
            s.db.query_row("SELECT count(*) FROM policy_journal", (), |r| r.get(0))
                .unwrap();
        assert_eq!(left, 1);
    }
}
