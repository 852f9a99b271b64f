//! The cell agent's decisions, with no I/O (quinn-proto style): [`AgentCore::on`] takes an
//! [`Event`] (a view from control's watch, the CNI store as read, a resync tick, the result of
//! an action) and returns the [`Action`]s to perform. The driver in [`crate::agent`] performs
//! them (netlink, nft, files, the API) and feeds their results back as events.
//!
//! The safety properties live here and are tested here, without namespaces:
//! - the CNI config is never written before a ruleset is in the kernel, so a runtime waiting
//!   for it never wires a container into a cell that does not enforce;
//! - an instance is confirmed once per view (the store's events come in bursts, faster than
//!   the watch brings the view that shows the confirmation);
//! - a failed apply leaves no ruleset believed in place: the next wake applies the wanted one,
//!   and a retry is asked for at once;
//! - a table flushed or replaced by hand is found on the next resync and restored.

use std::collections::BTreeMap;
use std::sync::Arc;

use c2c_api::{CellName, CellView, Instance, Revision};

use crate::dns::Zone;
use crate::inputs::{registration_changes, remotes, rule_inputs};
use crate::ipam::Subnet;
use crate::rules;
use crate::store::ContainerRecord;
use crate::vtep::Remote;

/// What happened.
#[derive(Debug, Clone)]
pub enum Event {
    /// Control's watch returned this view.
    View(CellView),
    /// The CNI store, as just read (a container came or went).
    Store(Vec<ContainerRecord>),
    /// The resync timer: check that the kernel still has what we put there.
    Resync,
    /// The result of [`Action::ApplyRules`].
    RulesApplied(Result<(), String>),
    /// The result of [`Action::CheckRules`] of this generation: whether the kernel still holds
    /// that ruleset. It comes when the check is done (the agent goes on meanwhile), so it may
    /// be of a ruleset another apply has replaced since: then it says nothing and is ignored.
    RulesInPlace(u32, bool),
    /// The result of [`Action::WriteCniConfig`].
    CniConfigWritten(bool),
    /// The result of [`Action::Confirm`]: control accepted it (or not).
    Confirmed(Instance, bool),
    /// The result of [`Action::Withdraw`].
    Withdrawn(String, bool),
}

impl Event {
    /// A short name, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::View(_) => "view",
            Event::Store(_) => "store",
            Event::Resync => "resync",
            Event::RulesApplied(_) => "rules_applied",
            Event::RulesInPlace(..) => "rules_in_place",
            Event::CniConfigWritten(_) => "cni_config_written",
            Event::Confirmed(..) => "confirmed",
            Event::Withdrawn(..) => "withdrawn",
        }
    }
}

/// What to do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Serve this DNS zone from now on.
    PublishZone(Arc<Zone>),
    /// Re-create the VTEP if it is gone or differs (on resync).
    EnsureVtep,
    /// Make the VTEP's routes, neighbours and FDB match these other cells.
    ConvergeVtep(Vec<Remote>),
    /// Replace the `ip c2c` table with this script, in one transaction; answer with
    /// [`Event::RulesApplied`].
    ApplyRules(String),
    /// Check that the kernel still holds the ruleset of this generation; answer with
    /// [`Event::RulesInPlace`], when done (the check lists chains, which with a large set
    /// takes a while: nothing waits for it).
    CheckRules(u32),
    /// Write the CNI config (the cell is ready for containers); answer with
    /// [`Event::CniConfigWritten`].
    WriteCniConfig,
    /// Bring each local instance's certificate in line with its routes (the driver reads the
    /// cert dirs, has control sign new keys' CSRs, and writes the pairs).
    SyncCerts,
    /// Confirm this instance to control; answer with [`Event::Confirmed`].
    Confirm(Instance),
    /// Withdraw this instance; answer with [`Event::Withdrawn`].
    Withdraw(String),
    /// Something failed that a wake soon should retry: wake with [`Event::Resync`] shortly.
    RetrySoon,
}

/// The agent's state between events.
#[derive(Debug)]
pub struct AgentCore {
    cell: CellName,
    subnet: Subnet,
    view: Option<CellView>,
    records: Vec<ContainerRecord>,
    /// The ruleset the kernel holds, as far as we know; `None` when unknown (nothing applied
    /// yet, or the last apply failed).
    applied: Option<String>,
    /// The ruleset sent to the kernel and not answered yet.
    applying: Option<String>,
    cni_written: bool,
    zone: Option<Arc<Zone>>,
    /// Confirmations (Some) and withdrawals (None) control accepted against the view of
    /// `sent_rev`: not sent again until a newer view still lacks them.
    sent: BTreeMap<String, Option<Instance>>,
    sent_rev: Revision,
    /// Whether the rules log c2c traffic.
    log_c2c: bool,
}

impl AgentCore {
    /// A core for `cell`, which leases `subnet`.
    pub fn new(cell: &CellName, subnet: Subnet) -> Self {
        Self {
            cell: cell.clone(),
            subnet,
            view: None,
            records: vec![],
            applied: None,
            applying: None,
            cni_written: false,
            zone: None,
            sent: BTreeMap::new(),
            sent_rev: Revision(0),
            log_c2c: false,
        }
    }

    /// Log c2c accepts and denies and egress denies (the agent's `--log-c2c`).
    pub fn with_log_c2c(mut self, on: bool) -> Self {
        self.log_c2c = on;
        self
    }

    /// The revision of the newest view (0 before the first): what the next watch waits past.
    pub fn revision(&self) -> Revision {
        self.view.as_ref().map_or(Revision(0), |v| v.revision)
    }

    /// The newest view, if any.
    pub fn view(&self) -> Option<&CellView> {
        self.view.as_ref()
    }

    /// The generation of the ruleset the kernel holds as far as the core knows (see
    /// [`Event::RulesInPlace`]).
    pub fn applied_generation(&self) -> Option<u32> {
        self.applied.as_deref().and_then(rules::generation)
    }

    /// The CNI store as last read.
    pub fn records(&self) -> &[ContainerRecord] {
        &self.records
    }

    /// Replaces the CNI store as known, without reconciling (the next event does).
    pub fn set_records(&mut self, records: Vec<ContainerRecord>) {
        self.records = records;
    }

    /// Takes one event; returns what to do about it.
    pub fn on(&mut self, event: Event) -> Vec<Action> {
        match event {
            Event::View(v) => {
                self.view = Some(v);
                self.reconcile(false)
            }
            Event::Store(records) => {
                self.records = records;
                self.reconcile(false)
            }
            Event::Resync => self.reconcile(true),
            Event::RulesApplied(Ok(())) => {
                self.applied = self.applying.take();
                self.ready()
            }
            Event::RulesApplied(Err(_)) => {
                // Whatever the kernel holds now is in doubt: believe nothing is in place, so
                // the next wake applies the wanted ruleset whatever it was before.
                self.applying = None;
                self.applied = None;
                vec![Action::RetrySoon]
            }
            Event::RulesInPlace(_, true) => vec![],
            Event::RulesInPlace(gen, false) if self.applied_generation() == Some(gen) => {
                match self.applied.take() {
                    Some(text) => {
                        self.applying = Some(text.clone());
                        vec![Action::ApplyRules(text)]
                    }
                    None => vec![],
                }
            }
            Event::RulesInPlace(..) => vec![],
            Event::CniConfigWritten(ok) => {
                self.cni_written = ok;
                if ok {
                    vec![]
                } else {
                    vec![Action::RetrySoon]
                }
            }
            Event::Confirmed(inst, ok) => {
                if ok {
                    self.sent.insert(inst.guid.clone(), Some(inst));
                }
                vec![]
            }
            Event::Withdrawn(guid, ok) => {
                if ok {
                    self.sent.insert(guid, None);
                }
                vec![]
            }
        }
    }

    /// The CNI config, once a ruleset is in the kernel and only then.
    fn ready(&self) -> Vec<Action> {
        if self.applied.is_some() && !self.cni_written {
            vec![Action::WriteCniConfig]
        } else {
            vec![]
        }
    }

    fn reconcile(&mut self, resync: bool) -> Vec<Action> {
        let Some(v) = self.view.as_ref() else {
            return vec![];
        };
        let mut out = vec![];
        let zone = Arc::new(crate::dns::zone(v));
        if self.zone.as_deref() != Some(&*zone) {
            self.zone = Some(zone.clone());
            out.push(Action::PublishZone(zone));
        }
        if resync {
            out.push(Action::EnsureVtep);
        }
        out.push(Action::ConvergeVtep(remotes(&self.cell, &v.leases)));
        let (mut cell_rules, locals, tags, allows) =
            rule_inputs(&self.cell, self.subnet, v, &self.records);
        cell_rules.log_c2c = self.log_c2c;
        let text = rules::ruleset(&cell_rules, &locals, &tags, &allows);
        if self.applied.as_deref() != Some(text.as_str()) {
            if self.applying.as_deref() != Some(text.as_str()) {
                self.applying = Some(text.clone());
                out.push(Action::ApplyRules(text));
            }
        } else if resync {
            // Checking is cheap; re-loading 10,000 elements is not.
            out.push(Action::CheckRules(
                rules::generation(&text).unwrap_or_default(),
            ));
        }
        out.extend(self.ready());
        out.push(Action::SyncCerts);
        let (confirm, withdraw) = registration_changes(&self.cell, v, &self.records);
        if self.sent_rev != v.revision {
            self.sent.clear();
            self.sent_rev = v.revision;
        }
        for i in confirm {
            if self
                .sent
                .get(&i.guid)
                .is_none_or(|s| s.as_ref() != Some(&i))
            {
                out.push(Action::Confirm(i));
            }
        }
        for g in withdraw {
            if self.sent.get(&g).is_none_or(Option::is_some) {
                out.push(Action::Withdraw(g));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use c2c_api::{App, Lease, Policy};

    fn rec(id: &str, ip: &str) -> ContainerRecord {
        ContainerRecord {
            container_id: id.into(),
            ip: ip.parse().unwrap(),
            netns: "/x".into(),
            ifname: "eth0".into(),
            host_veth: "s-x".into(),
            app_guid: Some("ga".into()),
            instance_guid: Some(id.into()),
            instance_index: Some(0),
            cert_dir: None,
            port_mappings: vec![],
            sidecar: false,
        }
    }

    fn view(rev: u64, confirmed: &[(&str, &str)], policies: usize) -> CellView {
        CellView {
            revision: Revision(rev),
            egress: Default::default(),
            probes: vec![],
            unchanged: vec![],
            leases: vec![Lease {
                cell: "cell1".parse().unwrap(),
                underlay_ip: "192.0.2.1".parse().unwrap(),
                subnet: "10.255.1.0/24".parse().unwrap(),
                renewed_at: 0,
            }],
            apps: vec![App {
                guid: "ga".into(),
                name: "a".into(),
                tag: 1,
                space: String::new(),
                client_identity: Default::default(),
                proxy_protocol: Default::default(),
                app_protocol: Default::default(),
            }],
            instances: confirmed
                .iter()
                .map(|(g, ip)| Instance {
                    guid: (*g).into(),
                    app_guid: "ga".into(),
                    index: 0,
                    cell: "cell1".parse().unwrap(),
                    ip: ip.parse().unwrap(),
                })
                .collect(),
            policies: (0..policies)
                .map(|i| Policy {
                    source: "ga".into(),
                    destination: "ga".into(),
                    protocol: c2c_api::net::Protocol::Tcp,
                    ports: c2c_api::net::PortRange::new(8000 + i as u16, 8000 + i as u16).unwrap(),
                })
                .collect(),
            routes: vec![],
            domains: vec![],
        }
    }

    fn core() -> AgentCore {
        AgentCore::new(&"cell1".parse().unwrap(), "10.255.1.0/24".parse().unwrap())
    }

    fn applies(actions: &[Action]) -> Option<&str> {
        actions.iter().find_map(|a| match a {
            Action::ApplyRules(t) => Some(t.as_str()),
            _ => None,
        })
    }

    fn count(actions: &[Action], f: impl Fn(&Action) -> bool) -> usize {
        actions.iter().filter(|a| f(a)).count()
    }

    #[test]
    fn the_cni_config_is_written_only_after_a_ruleset_is_in_the_kernel() {
        let mut c = core();
        let writes = |a: &[Action]| count(a, |x| *x == Action::WriteCniConfig);
        assert!(
            c.on(Event::Store(vec![])).is_empty(),
            "no view, nothing to do"
        );
        let a = c.on(Event::View(view(1, &[], 0)));
        assert!(applies(&a).is_some());
        assert_eq!(writes(&a), 0, "not before the rules are in: {a:?}");
        let a = c.on(Event::RulesApplied(Err("nft refused".into())));
        assert_eq!(a, [Action::RetrySoon]);
        let a = c.on(Event::Resync);
        assert!(applies(&a).is_some(), "retried: {a:?}");
        assert_eq!(writes(&a), 0);
        assert_eq!(writes(&c.on(Event::RulesApplied(Ok(())))), 1);
        // Written once; a failed write is asked for again on the next wake.
        let a = c.on(Event::CniConfigWritten(false));
        assert_eq!(a, [Action::RetrySoon]);
        assert_eq!(writes(&c.on(Event::Resync)), 1);
        c.on(Event::CniConfigWritten(true));
        assert_eq!(writes(&c.on(Event::Resync)), 0);
    }

    #[test]
    fn an_instance_is_confirmed_once_per_view() {
        let mut c = core();
        let confirms = |a: &[Action]| count(a, |x| matches!(x, Action::Confirm(_)));
        c.on(Event::View(view(7, &[], 0)));
        let recs = vec![rec("i1", "10.255.1.1")];
        let a = c.on(Event::Store(recs.clone()));
        assert_eq!(confirms(&a), 1);
        let inst = a
            .iter()
            .find_map(|x| match x {
                Action::Confirm(i) => Some(i.clone()),
                _ => None,
            })
            .unwrap();
        c.on(Event::Confirmed(inst.clone(), true));
        // A burst of store events before the watch brings the view that shows it.
        for _ in 0..3 {
            assert_eq!(confirms(&c.on(Event::Store(recs.clone()))), 0);
        }
        // A newer view that still lacks it: once more.
        assert_eq!(confirms(&c.on(Event::View(view(8, &[], 0)))), 1);
        c.on(Event::Confirmed(inst, true));
        // The view that shows it: done. A refused confirmation is not remembered as sent.
        assert_eq!(
            confirms(&c.on(Event::View(view(9, &[("i1", "10.255.1.1")], 0)))),
            0
        );
        let a = c.on(Event::Store(vec![
            rec("i1", "10.255.1.1"),
            rec("i2", "10.255.1.2"),
        ]));
        assert_eq!(confirms(&a), 1);
        let i2 = a
            .iter()
            .find_map(|x| match x {
                Action::Confirm(i) => Some(i.clone()),
                _ => None,
            })
            .unwrap();
        c.on(Event::Confirmed(i2, false));
        assert_eq!(
            confirms(&c.on(Event::Store(vec![
                rec("i1", "10.255.1.1"),
                rec("i2", "10.255.1.2")
            ]))),
            1,
            "refused, so asked again"
        );
        // Gone from the store: withdrawn once per view.
        let withdraws = |a: &[Action]| count(a, |x| matches!(x, Action::Withdraw(_)));
        let a = c.on(Event::Store(vec![]));
        assert_eq!(withdraws(&a), 1);
        c.on(Event::Withdrawn("i1".into(), true));
        assert_eq!(withdraws(&c.on(Event::Store(vec![]))), 0);
    }

    #[test]
    fn a_failed_apply_leaves_no_ruleset_believed_in_place() {
        let mut c = core();
        let recs = vec![rec("i1", "10.255.1.1")];
        c.on(Event::Store(recs));
        // Wide: 3 policies into i1, applied.
        let wide = c.on(Event::View(view(1, &[("i1", "10.255.1.1")], 3)));
        let wide = applies(&wide).unwrap().to_string();
        assert!(wide.contains(". 8002 ."));
        c.on(Event::RulesApplied(Ok(())));
        // Narrow: one policy removed; the apply fails.
        let a = c.on(Event::View(view(2, &[("i1", "10.255.1.1")], 2)));
        let narrow = applies(&a).unwrap().to_string();
        assert!(!narrow.contains(". 8002 ."));
        assert_eq!(
            c.on(Event::RulesApplied(Err("busy".into()))),
            [Action::RetrySoon]
        );
        // The retry applies the narrow one; it never checks for (or trusts) the wide one.
        let a = c.on(Event::Resync);
        assert_eq!(applies(&a), Some(narrow.as_str()));
        assert_eq!(count(&a, |x| matches!(x, Action::CheckRules(_))), 0);
        // While an apply is outstanding, another wake does not send it twice.
        assert!(applies(&c.on(Event::Store(vec![rec("i1", "10.255.1.1")]))).is_none());
        c.on(Event::RulesApplied(Ok(())));
        assert!(applies(&c.on(Event::Resync)).is_none());
    }

    #[test]
    fn a_flushed_table_is_restored_on_the_next_resync() {
        let mut c = core();
        let a = c.on(Event::View(view(1, &[], 1)));
        let text = applies(&a).unwrap().to_string();
        c.on(Event::RulesApplied(Ok(())));
        c.on(Event::CniConfigWritten(true));
        // Nothing changed: a watch wake applies nothing and checks nothing.
        let a = c.on(Event::View(view(1, &[], 1)));
        assert!(applies(&a).is_none());
        assert_eq!(count(&a, |x| matches!(x, Action::CheckRules(_))), 0);
        // The resync checks; the kernel lost the table; the same ruleset goes back.
        let a = c.on(Event::Resync);
        let gen = rules::generation(&text).unwrap();
        assert!(a.contains(&Action::CheckRules(gen)), "{a:?}");
        assert!(a.contains(&Action::EnsureVtep));
        assert_eq!(
            c.on(Event::RulesInPlace(gen, false)),
            [Action::ApplyRules(text)]
        );
        c.on(Event::RulesApplied(Ok(())));
        assert!(c.on(Event::RulesInPlace(gen, true)).is_empty());
    }

    #[test]
    fn a_check_of_a_ruleset_replaced_since_is_ignored() {
        let mut c = core();
        c.on(Event::Store(vec![rec("i1", "10.255.1.1")]));
        let a = c.on(Event::View(view(1, &[("i1", "10.255.1.1")], 1)));
        let old = rules::generation(applies(&a).unwrap()).unwrap();
        c.on(Event::RulesApplied(Ok(())));
        c.on(Event::CniConfigWritten(true));
        assert!(c.on(Event::Resync).contains(&Action::CheckRules(old)));
        // While the check runs, a view brings a new ruleset, applied.
        let a = c.on(Event::View(view(2, &[("i1", "10.255.1.1")], 2)));
        let new = applies(&a).unwrap().to_string();
        c.on(Event::RulesApplied(Ok(())));
        // The check then finds the kernel without the old generation: that says nothing of
        // the new one, and nothing is restored.
        assert!(c.on(Event::RulesInPlace(old, false)).is_empty());
        assert_eq!(c.applied_generation(), rules::generation(&new));
        // The positive control: the new ruleset's own check failing restores it.
        let gen = rules::generation(&new).unwrap();
        assert_eq!(
            c.on(Event::RulesInPlace(gen, false)),
            [Action::ApplyRules(new)]
        );
    }
}
