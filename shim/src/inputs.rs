//! What a cell derives from control's view and its own CNI store, as plain functions the
//! agent's sans-IO core and its driver both call: the inputs of the policy rules, the VTEP's
//! remotes, and which instances to confirm to control or withdraw. Nothing here does IO.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use c2c_api::{AppGuid, CellName, CellView, Instance, Lease};

use crate::ipam::Subnet;
use crate::rules::{Allow, CellRules, Local};
use crate::store::ContainerRecord;
use crate::vtep::Remote;

/// The inputs of the rules, from control's view and the local store (pure). A container gets
/// its app's tag only once control confirmed it as an instance placed on this cell (its app is
/// control's record, not what the runtime wrote); every wired container, tagged or not, may send
/// only from its own address.
pub fn rule_inputs(
    cell: &CellName,
    subnet: Subnet,
    view: &CellView,
    records: &[ContainerRecord],
) -> (CellRules, Vec<Local>, BTreeMap<AppGuid, u16>, Vec<Allow>) {
    let wired: BTreeSet<Ipv4Addr> = records.iter().map(|r| r.ip).collect();
    let locals = local_instances(cell, view, records);
    let tags = view.apps.iter().map(|a| (a.guid.clone(), a.tag)).collect();
    let egress = egress_rules(&locals, view);
    let allows = view
        .policies
        .iter()
        .map(|p| Allow {
            source: p.source.clone(),
            destination: p.destination.clone(),
            protocol: p.protocol,
            ports: p.ports,
        })
        .collect();
    let others = remotes(cell, &view.leases);
    let underlay_of: BTreeMap<&CellName, Ipv4Addr> = view
        .leases
        .iter()
        .filter(|l| l.cell != *cell)
        .map(|l| (&l.cell, l.underlay_ip))
        .collect();
    let tag_of: BTreeMap<&AppGuid, u16> = view.apps.iter().map(|a| (&a.guid, a.tag)).collect();
    let cell_rules = CellRules {
        subnet,
        containers: wired.into_iter().collect(),
        peers: others.iter().map(|r| r.underlay_ip).collect(),
        peer_leases: others.iter().map(|r| (r.underlay_ip, r.subnet)).collect(),
        // Every instance another cell runs, as that cell may speak for it.
        remote_sources: view
            .instances
            .iter()
            .filter_map(|i| Some((*underlay_of.get(&i.cell)?, i.ip, *tag_of.get(&i.app_guid)?)))
            .collect(),
        egress,
        host_ports: records
            .iter()
            .flat_map(|r| r.port_mappings.iter().map(|m| (r.ip, m.clone())))
            .collect(),
        log_c2c: false,
    };
    (cell_rules, locals, tags, allows)
}

/// The instances of this cell that run in a wired container holding the GUID control placed
/// (pure): the only ones that get their app's tag and rules.
pub fn local_instances(
    cell: &CellName,
    view: &CellView,
    records: &[ContainerRecord],
) -> Vec<Local> {
    let wired: BTreeMap<Ipv4Addr, &ContainerRecord> = records.iter().map(|r| (r.ip, r)).collect();
    view.instances
        .iter()
        .filter(|i| i.cell == *cell)
        .filter(|i| {
            wired
                .get(&i.ip)
                .is_some_and(|r| r.instance_guid.as_deref() == Some(i.guid.as_str()))
        })
        .map(|i| Local {
            ip: i.ip,
            app_guid: i.app_guid.clone(),
        })
        .collect()
}

/// Each local container's security-group rules: those bound to every space and to its app's
/// space, for running apps (pure).
pub fn egress_rules(locals: &[Local], view: &CellView) -> Vec<crate::rules::EgressRule> {
    // The local apps' spaces only: one pass over the apps, no map of all of them.
    let local: std::collections::BTreeSet<&str> =
        locals.iter().map(|l| l.app_guid.as_str()).collect();
    let spaces: BTreeMap<&str, &str> = view
        .apps
        .iter()
        .filter(|a| local.contains(a.guid.as_str()))
        .map(|a| (a.guid.as_str(), a.space.as_str()))
        .collect();
    let mut out = vec![];
    for l in locals {
        let Some(space) = spaces.get(l.app_guid.as_str()) else {
            continue;
        };
        for r in view.egress.for_space(space) {
            out.push(crate::rules::EgressRule {
                source: l.ip,
                destinations: r.rule.destinations(),
                allowed: r.rule.allowed(),
                group: r.group.clone(),
                log: r.rule.log,
            });
        }
    }
    out
}

/// What to tell control so its instances on this cell match the store (pure): (confirm,
/// withdraw). Only records that name an instance GUID (one control placed, handed over by the
/// runtime) are confirmed; control refuses any it did not place on this cell.
pub fn registration_changes(
    cell: &CellName,
    view: &CellView,
    records: &[ContainerRecord],
) -> (Vec<Instance>, Vec<String>) {
    let want: BTreeMap<String, Instance> = records
        .iter()
        .filter_map(|r| {
            let app_guid = AppGuid::from(r.app_guid.clone()?);
            let guid = r.instance_guid.clone()?;
            Some((
                guid.clone(),
                Instance {
                    guid,
                    app_guid,
                    index: r.instance_index.unwrap_or(0),
                    cell: cell.clone(),
                    ip: r.ip,
                },
            ))
        })
        .collect();
    let have: BTreeMap<&str, &Instance> = view
        .instances
        .iter()
        .filter(|i| i.cell == *cell)
        .map(|i| (i.guid.as_str(), i))
        .collect();
    let register = want
        .values()
        .filter(|w| have.get(w.guid.as_str()) != Some(w))
        .cloned()
        .collect();
    let deregister = have
        .keys()
        .filter(|g| !want.contains_key(**g))
        .map(|g| g.to_string())
        .collect();
    (register, deregister)
}

/// The other cells, as VTEP remotes (pure).
pub fn remotes(cell: &CellName, leases: &[Lease]) -> Vec<Remote> {
    leases
        .iter()
        .filter(|l| l.cell != *cell)
        .map(|l| Remote {
            underlay_ip: l.underlay_ip,
            subnet: l.subnet,
        })
        .collect()
}
