//! The state layer's conformance suite: every scenario runs against each engine (SQLite always;
//! PostgreSQL in `tests/state_conformance.rs`, on a cluster the test starts), so both backends
//! keep one behaviour: revisions, tags, leases, routes, policies, cells, tokens.
#![allow(missing_docs)]

use std::net::Ipv4Addr;

use c2c_api::net::PortRange;
use c2c_api::types::{Scope, Tag};
use c2c_control::state::*;

/// Opens the scenario's store (the same one each call) with an overlay and a lease TTL.
pub type Opener<'a> = &'a dyn Fn((Ipv4Addr, u8), u64) -> State;

/// The overlay most scenarios use.
pub const OVERLAY: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 255, 0, 0), 16);

/// A named scenario.
pub type Scenario = (&'static str, fn(Opener));

mod budgets;
pub use budgets::*;

/// Every scenario, by name.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        (
            "placements_no_cell_confirms_expire",
            placements_no_cell_confirms_expire,
        ),
        (
            "tag_groups_and_spaces_have_budgets",
            tag_groups_and_spaces_have_budgets,
        ),
        (
            "security_groups_bind_to_spaces_and_reach_the_cells_view",
            security_groups_bind_to_spaces_and_reach_the_cells_view,
        ),
        (
            "many_policies_go_in_batches_and_count_right",
            many_policies_go_in_batches_and_count_right,
        ),
        (
            "cell_subnets_have_the_configured_size_and_never_overlap",
            cell_subnets_have_the_configured_size_and_never_overlap,
        ),
        (
            "a_shared_view_gives_each_cell_what_its_own_would",
            a_shared_view_gives_each_cell_what_its_own_would,
        ),
        (
            "leases_expire_unless_renewed_and_come_back_where_they_were",
            leases_expire_unless_renewed_and_come_back_where_they_were,
        ),
        (
            "join_tokens_are_used_once_and_expire",
            join_tokens_are_used_once_and_expire,
        ),
        (
            "routes_are_validated_and_follow_apps",
            routes_are_validated_and_follow_apps,
        ),
        (
            "tags_are_unique_and_reused_after_delete",
            tags_are_unique_and_reused_after_delete,
        ),
        (
            "every_change_bumps_the_revision_and_no_ops_do_not",
            every_change_bumps_the_revision_and_no_ops_do_not,
        ),
        (
            "deleting_an_app_drops_its_policies_and_instances",
            deleting_an_app_drops_its_policies_and_instances,
        ),
        (
            "only_the_placed_cell_confirms_an_instance_at_a_free_address_of_its_lease",
            only_the_placed_cell_confirms_an_instance_at_a_free_address_of_its_lease,
        ),
        (
            "cells_are_registered_by_fingerprint_and_removal_frees_everything",
            cells_are_registered_by_fingerprint_and_removal_frees_everything,
        ),
        (
            "leases_need_a_host_address_no_live_cell_holds",
            leases_need_a_host_address_no_live_cell_holds,
        ),
        (
            "internal_domains_are_private_and_app_names_start_with_a_letter_or_digit",
            internal_domains_are_private_and_app_names_start_with_a_letter_or_digit,
        ),
        (
            "leases_are_sticky_and_expired_ones_reclaimed_oldest_first",
            leases_are_sticky_and_expired_ones_reclaimed_oldest_first,
        ),
        (
            "tags_share_one_space_and_print_as_cf_does",
            tags_share_one_space_and_print_as_cf_does,
        ),
        (
            "last_updated_moves_on_every_policy_change_only",
            last_updated_moves_on_every_policy_change_only,
        ),
        (
            "tokens_are_kept_hashed_and_grants_follow_apps",
            tokens_are_kept_hashed_and_grants_follow_apps,
        ),
    ]
}

#[allow(clippy::module_inception)]
mod scenarios_impl {
    use super::*;
    use c2c_control::tokens::sha256_hex;

    /// A conformance scenario.
    pub fn routes_are_validated_and_follow_apps(open: Opener) {
        let mut s = open(OVERLAY, 60);
        let b = s.create_app("appb").unwrap();
        let c = s.create_app("appc").unwrap();
        let r0 = s.revision().unwrap();
        assert!(s.map_route(&b.guid, "apps.internal", "AppB").unwrap());
        assert!(
            !s.map_route(&b.guid, "apps.internal", "appb").unwrap(),
            "mapping twice is a no-op"
        );
        assert!(
            s.map_route(&c.guid, "apps.internal", "appb").unwrap(),
            "several apps per route"
        );
        assert_eq!(s.revision().unwrap(), Revision(r0.0 + 2));
        assert!(matches!(
            s.map_route(&b.guid, "apps.internal", "bad_host!"),
            Err(StateError::Invalid(_))
        ));
        assert!(matches!(
            s.map_route(&b.guid, "example.com", "x"),
            Err(StateError::Invalid(_))
        ));
        // A route can never take an instance's name (`<index>.<host>`): not dotted, not digits.
        for taken in ["0.appc", "0", "1.appb"] {
            assert!(
                matches!(
                    s.map_route(&b.guid, "apps.internal", taken),
                    Err(StateError::Invalid(ref m)) if m.contains("Host")
                ),
                "{taken}"
            );
        }
        s.create_domain("Other.Internal").unwrap();
        assert!(s.map_route(&b.guid, "other.internal", "x").unwrap());
        assert_eq!(s.routes().unwrap().len(), 3);
        assert!(s.unmap_route(&b.guid, "apps.internal", "appb").unwrap());
        assert!(!s.unmap_route(&b.guid, "apps.internal", "appb").unwrap());
        s.delete_app(&c.guid).unwrap();
        assert_eq!(
            s.routes().unwrap(),
            vec![Route {
                host: "x".into(),
                domain: "other.internal".into(),
                app_guid: b.guid.clone()
            }]
        );
    }

    /// A conformance scenario.
    pub fn tags_are_unique_and_reused_after_delete(open: Opener) {
        let mut s = open(OVERLAY, 60);
        let a = s.create_app("appa").unwrap();
        let b = s.create_app("appb").unwrap();
        let c = s.create_app("appc").unwrap();
        assert_eq!((a.tag, b.tag, c.tag), (1, 2, 3));
        assert!(matches!(
            s.create_app("appa"),
            Err(StateError::AppExists(_))
        ));
        s.delete_app(&b.guid).unwrap();
        assert_eq!(
            s.create_app("appd").unwrap().tag,
            2,
            "the freed tag is reused"
        );
        assert_eq!(lowest_free_tag(&[]), Some(1));
        assert_eq!(lowest_free_tag(&(1..=65535).collect::<Vec<_>>()), None);
        assert!(matches!(
            s.create_app("bad name"),
            Err(StateError::Invalid(_))
        ));
    }

    /// A conformance scenario.
    pub fn every_change_bumps_the_revision_and_no_ops_do_not(open: Opener) {
        let mut s = open(OVERLAY, 60);
        let r0 = s.revision().unwrap();
        let a = s.create_app("a").unwrap();
        let b = s.create_app("b").unwrap();
        let p = Policy {
            source: a.guid.clone(),
            destination: b.guid.clone(),
            protocol: Protocol::Tcp,
            ports: c2c_api::net::PortRange::new(8080, 8080).unwrap(),
        };
        assert_eq!(s.add_policies(std::slice::from_ref(&p)).unwrap(), 1);
        let r1 = s.revision().unwrap();
        assert_eq!(r1, Revision(r0.0 + 3));
        assert_eq!(
            s.add_policies(std::slice::from_ref(&p)).unwrap(),
            0,
            "creating an existing policy is a no-op"
        );
        assert_eq!(s.revision().unwrap(), r1);
        assert_eq!(
            s.policies(Some(&[b.guid.to_string()])).unwrap(),
            vec![p.clone()]
        );
        assert_eq!(s.delete_policies(std::slice::from_ref(&p)).unwrap(), 1);
        assert_eq!(s.revision().unwrap(), Revision(r1.0 + 1));
        let unknown = Policy {
            source: "nope".into(),
            ..p
        };
        assert!(matches!(
            s.add_policies(&[unknown]),
            Err(StateError::UnknownApp(_))
        ));
    }

    /// A conformance scenario.
    pub fn deleting_an_app_drops_its_policies_and_instances(open: Opener) {
        let mut s = open(OVERLAY, 60);
        let a = s.create_app("a").unwrap();
        let b = s.create_app("b").unwrap();
        s.add_policies(&[Policy {
            source: a.guid.clone(),
            destination: b.guid.clone(),
            protocol: Protocol::Udp,
            ports: c2c_api::net::PortRange::new(1, 9).unwrap(),
        }])
        .unwrap();
        s.acquire_lease("cell1", "192.0.2.1".parse().unwrap())
            .unwrap();
        let i = s.place_instance(&b.guid, "cell1", None).unwrap();
        s.confirm_instance("cell1", &i.guid, &b.guid, 0, "10.255.0.1".parse().unwrap())
            .unwrap();
        assert_eq!(s.instances(None).unwrap().len(), 1);
        s.delete_app(&b.guid).unwrap();
        assert!(s.policies(None).unwrap().is_empty());
        assert!(s.instances(None).unwrap().is_empty());
    }

    /// A conformance scenario.
    pub fn only_the_placed_cell_confirms_an_instance_at_a_free_address_of_its_lease(open: Opener) {
        let mut s = open(OVERLAY, 60);
        let a = s.create_app("a").unwrap();
        let b = s.create_app("b").unwrap();
        let l1 = s
            .acquire_lease("cell1", "192.0.2.1".parse().unwrap())
            .unwrap();
        s.acquire_lease("cell2", "192.0.2.2".parse().unwrap())
            .unwrap();
        assert_eq!(l1.subnet.to_string(), "10.255.0.0/24");
        let i = s.place_instance(&a.guid, "cell1", None).unwrap();
        assert_eq!(i.index, 0);
        assert!(
            s.instances(None).unwrap().is_empty(),
            "placed, not running yet"
        );
        let rev = s.revision().unwrap();
        let ip = |x: &str| x.parse::<Ipv4Addr>().unwrap();
        // A GUID nobody placed, another cell, another app, another index: all refused.
        for (cell, guid, app, idx, addr) in [
            ("cell1", "www.example.com", &a.guid, 0, "10.255.0.5"),
            ("cell2", i.guid.as_str(), &a.guid, 0, "10.255.1.5"),
            ("cell1", i.guid.as_str(), &b.guid, 0, "10.255.0.5"),
            ("cell1", i.guid.as_str(), &a.guid, 3, "10.255.0.5"),
        ] {
            let e = s
                .confirm_instance(cell, guid, app, idx, ip(addr))
                .unwrap_err();
            assert!(matches!(e, StateError::Forbidden(_)), "{cell} {guid}: {e}");
        }
        // Addresses outside the cell's own lease: another cell's, the VTEP's, the broadcast,
        // a public one.
        for addr in [
            "10.255.1.5",
            "10.255.0.0",
            "10.255.0.255",
            "127.0.0.1",
            "8.8.8.8",
        ] {
            let e = s
                .confirm_instance("cell1", &i.guid, &a.guid, 0, ip(addr))
                .unwrap_err();
            assert!(
                e.to_string().contains("not a container address"),
                "{addr}: {e}"
            );
        }
        assert_eq!(s.revision().unwrap(), rev, "refusals change nothing");
        // Positive control: the placed cell confirms at a free address of its lease.
        s.confirm_instance("cell1", &i.guid, &a.guid, 0, ip("10.255.0.5"))
            .unwrap();
        assert_eq!(s.instances(None).unwrap()[0].ip, ip("10.255.0.5"));
        // The address is taken now.
        let j = s.place_instance(&b.guid, "cell1", None).unwrap();
        assert!(matches!(
            s.confirm_instance("cell1", &j.guid, &b.guid, 0, ip("10.255.0.5")),
            Err(StateError::Conflict(_))
        ));
        // Another cell can neither withdraw nor take it; its own cell can withdraw it.
        assert!(matches!(
            s.unconfirm_instance("cell2", &i.guid),
            Err(StateError::Forbidden(_))
        ));
        assert_eq!(s.instances(None).unwrap().len(), 1);
        assert!(s.unconfirm_instance("cell1", &i.guid).unwrap());
        assert!(s.instances(None).unwrap().is_empty());
        assert_eq!(s.placements(None).unwrap().len(), 2, "placements stay");
        // Indexes are unique per app.
        assert!(matches!(
            s.place_instance(&a.guid, "cell2", Some(0)),
            Err(StateError::Conflict(_))
        ));
        assert!(s.remove_instance(&i.guid).unwrap());
        assert_eq!(s.place_instance(&a.guid, "cell2", None).unwrap().index, 0);
        // What runs an instance is kept as its placer said, within bounds.
        let r = s
            .place_instance_by(&a.guid, "cell2", None, Some("podman 3f2a9c1b0d2e"))
            .unwrap();
        let listed = s.placements(Some("cell2")).unwrap();
        let got = listed.iter().find(|p| p.guid == r.guid).unwrap();
        assert_eq!(got.runtime.as_deref(), Some("podman 3f2a9c1b0d2e"));
        for bad in ["", "a\nb", &"x".repeat(101)] {
            assert!(matches!(
                s.place_instance_by(&a.guid, "cell2", None, Some(bad)),
                Err(StateError::Invalid(_))
            ));
        }
    }

    /// A conformance scenario.
    pub fn cells_are_registered_by_fingerprint_and_removal_frees_everything(open: Opener) {
        let mut s = open(OVERLAY, 60);
        s.register_cell("cell1", "aa").unwrap();
        assert!(s.cell_identity_ok("cell1", "aa").unwrap());
        assert!(!s.cell_identity_ok("cell1", "bb").unwrap());
        assert!(!s.cell_identity_ok("cell2", "aa").unwrap());
        s.register_cell("cell1", "bb").unwrap();
        assert!(
            !s.cell_identity_ok("cell1", "aa").unwrap(),
            "a replaced cert is refused"
        );
        for bad in ["", "Cell1", "a/b", "..", "-x", &"x".repeat(64)] {
            assert!(s.register_cell(bad, "cc").is_err(), "{bad:?}");
        }
        let a = s.create_app("a").unwrap();
        s.acquire_lease("cell1", "192.0.2.1".parse().unwrap())
            .unwrap();
        let i = s.place_instance(&a.guid, "cell1", None).unwrap();
        s.confirm_instance("cell1", &i.guid, &a.guid, 0, "10.255.0.1".parse().unwrap())
            .unwrap();
        assert!(s.remove_cell("cell1").unwrap());
        assert!(!s.cell_identity_ok("cell1", "bb").unwrap());
        assert!(s.leases().unwrap().is_empty());
        assert!(s.placements(None).unwrap().is_empty());
    }

    /// A conformance scenario.
    pub fn leases_need_a_host_address_no_live_cell_holds(open: Opener) {
        let mut s = open(OVERLAY, 60);
        s.acquire_lease("cell1", "192.0.2.1".parse().unwrap())
            .unwrap();
        let e = s
            .acquire_lease("cell2", "192.0.2.1".parse().unwrap())
            .unwrap_err();
        assert!(e.to_string().contains("belongs to cell cell1"), "{e}");
        for bad in [
            "127.0.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "169.254.0.1",
            "10.255.3.3",
        ] {
            assert!(
                s.acquire_lease("cell2", bad.parse().unwrap()).is_err(),
                "{bad}"
            );
        }
        s.acquire_lease("cell2", "192.0.2.2".parse().unwrap())
            .unwrap();
        // The same cell may move to a new address of its own.
        s.acquire_lease("cell1", "192.0.2.9".parse().unwrap())
            .unwrap();
    }

    /// A conformance scenario.
    pub fn internal_domains_are_private_and_app_names_start_with_a_letter_or_digit(open: Opener) {
        let mut s = open(OVERLAY, 60);
        for bad in [
            "com",
            "localhost",
            "example.com",
            "internal",
            "apps.internal.com",
        ] {
            assert!(s.create_domain(bad).is_err(), "{bad}");
        }
        for good in ["apps.internal", "svc.corp", "x.home.arpa"] {
            s.create_domain(good).unwrap();
        }
        for bad in ["_x", "-x", "", "a.b", "a/b", ".."] {
            assert!(s.create_app(bad).is_err(), "{bad:?}");
        }
        s.create_app("x_1-y").unwrap();
    }

    /// A conformance scenario.
    pub fn leases_are_sticky_and_expired_ones_reclaimed_oldest_first(open: Opener) {
        // A /22 overlay has 4 subnets.
        let mut s = open(("10.255.0.0".parse().unwrap(), 22), 0);
        let ip: Ipv4Addr = "192.0.2.1".parse().unwrap();
        let l1 = s.acquire_lease("cell1", ip).unwrap();
        assert_eq!(l1.subnet.to_string(), "10.255.0.0/24");
        assert_eq!(
            s.acquire_lease("cell1", ip).unwrap().subnet,
            l1.subnet,
            "same cell, same lease"
        );
        for (c, n) in [("cell2", 2), ("cell3", 3), ("cell4", 4)] {
            s.acquire_lease(c, Ipv4Addr::new(192, 0, 2, n)).unwrap();
        }
        // All four taken; with a TTL of 0 they are all expired, so the oldest (cell1) goes.
        s.store()
            .execute(
                "UPDATE cells SET renewed_at = renewed_at - 100 WHERE name = 'cell1'",
                (),
            )
            .unwrap();
        let l5 = s
            .acquire_lease("cell5", "192.0.2.5".parse().unwrap())
            .unwrap();
        assert_eq!(l5.subnet.to_string(), "10.255.0.0/24");
        assert!(!s.leases().unwrap().iter().any(|l| l.cell == "cell1"));
        assert!(matches!(
            s.renew_lease("cell1"),
            Err(StateError::NoLease(_))
        ));
        // Reopened with a long TTL, nothing can be reclaimed.
        drop(s);
        let mut s = open(("10.255.0.0".parse().unwrap(), 22), 3600);
        assert!(matches!(
            s.acquire_lease("cell6", "192.0.2.6".parse().unwrap()),
            Err(StateError::NoSubnet(_))
        ));
        assert!(s.release_lease("cell2").unwrap());
        assert_eq!(
            s.acquire_lease("cell6", "192.0.2.6".parse().unwrap())
                .unwrap()
                .subnet
                .to_string(),
            "10.255.1.0/24"
        );
    }

    /// A conformance scenario.
    pub fn tags_share_one_space_and_print_as_cf_does(open: Opener) {
        let mut s = open(OVERLAY, 60);
        let a = s.create_app("appa").unwrap();
        let router = s.create_tag("router-guid", "router").unwrap();
        assert_eq!(router.tag, "0002");
        // Asking again gives the same tag; an app's tag is its own.
        assert_eq!(s.create_tag("router-guid", "router").unwrap(), router);
        assert_eq!(
            s.create_tag(a.guid.as_str(), "app").unwrap().tag,
            Tag::hex(a.tag)
        );
        // A new app skips the router's tag.
        let b = s.create_app("appb").unwrap();
        assert_eq!(b.tag, 3);
        let listed: Vec<(String, String)> = s
            .tags()
            .unwrap()
            .into_iter()
            .map(|t| (t.tag, t.kind))
            .collect();
        assert_eq!(
            listed,
            [("0001", "app"), ("0002", "router"), ("0003", "app")]
                .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        assert_eq!(Tag::hex(0xabc), "0ABC");
    }

    /// A conformance scenario.
    pub fn last_updated_moves_on_every_policy_change_only(open: Opener) {
        let mut s = open(OVERLAY, 60);
        let a = s.create_app("appa").unwrap();
        let b = s.create_app("appb").unwrap();
        assert_eq!(s.policies_last_updated().unwrap(), 0);
        let p = Policy {
            source: a.guid.clone(),
            destination: b.guid.clone(),
            protocol: "tcp".parse().unwrap(),
            ports: PortRange::new(8080, 8080).unwrap(),
        };
        s.add_policies(std::slice::from_ref(&p)).unwrap();
        let t1 = s.policies_last_updated().unwrap();
        let now_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i64;
        assert!((now_ns - t1).abs() < 60_000_000_000, "{t1} vs {now_ns}");
        // A no-op add changes nothing; a delete and a cascade do, strictly increasing.
        s.add_policies(std::slice::from_ref(&p)).unwrap();
        assert_eq!(s.policies_last_updated().unwrap(), t1);
        s.delete_policies(std::slice::from_ref(&p)).unwrap();
        let t2 = s.policies_last_updated().unwrap();
        assert!(t2 > t1);
        s.add_policies(std::slice::from_ref(&p)).unwrap();
        let t3 = s.policies_last_updated().unwrap();
        s.delete_app(b.guid.as_str()).unwrap();
        assert!(s.policies_last_updated().unwrap() > t3);
        s.create_app("appc").unwrap();
        assert!(s.delete_stale_policies().unwrap().is_empty());
    }

    /// A conformance scenario.
    pub fn tokens_are_kept_hashed_and_grants_follow_apps(open: Opener) {
        let mut s = open(OVERLAY, 60);
        let a = s.create_app("appa").unwrap();
        let t = s
            .create_token("dev", Scope::Write, &["appa".into()])
            .unwrap();
        assert_eq!(t.apps, vec![a.guid.clone()]);
        // Only the hash is stored.
        let stored: Vec<String> = s
            .store()
            .prepare("SELECT hash FROM tokens")
            .unwrap()
            .query_map((), |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(stored, vec![sha256_hex(t.token.as_bytes())]);
        assert!(!stored.contains(&t.token));
        let c = s.caller(&sha256_hex(t.token.as_bytes())).unwrap().unwrap();
        assert!(c.may_manage(a.guid.as_str()) && !c.is_admin());
        assert!(s.caller(&sha256_hex(b"guess")).unwrap().is_none());
        assert!(matches!(
            s.create_token("dev", Scope::Write, &["nope".into()]),
            Err(StateError::UnknownApp(_))
        ));
        assert!(matches!(
            s.create_token("admin", Scope::Admin, &[]),
            Err(StateError::Invalid(_))
        ));
        // Deleting the app drops the grant; revoking drops the tokens.
        s.delete_app(a.guid.as_str()).unwrap();
        let c = s.caller(&sha256_hex(t.token.as_bytes())).unwrap().unwrap();
        assert!(c.apps.is_empty());
        assert_eq!(s.users().unwrap()[0].tokens, 1);
        assert_eq!(s.revoke_user("dev").unwrap(), 1);
        assert!(s.caller(&sha256_hex(t.token.as_bytes())).unwrap().is_none());
        assert!(s.users().unwrap().is_empty());
    }
}
pub use scenarios_impl::*;

/// A conformance scenario.
pub fn many_policies_go_in_batches_and_count_right(open: Opener) {
    let mut s = open(OVERLAY, 60);
    let a = s.create_app("appa").unwrap();
    let b = s.create_app("appb").unwrap();
    let pol = |port: u16| Policy {
        source: a.guid.clone(),
        destination: b.guid.clone(),
        protocol: "tcp".parse().unwrap(),
        ports: PortRange::new(port, port).unwrap(),
    };
    // 1,200 distinct across three batches, with repeats inside a batch and across them.
    let mut many: Vec<Policy> = (1..=1200).map(pol).collect();
    many.extend((1..=300).map(pol));
    many.insert(10, pol(5));
    assert_eq!(s.add_policies(&many).unwrap(), 1200);
    assert_eq!(s.add_policies(&many).unwrap(), 0);
    assert_eq!(s.policies(None).unwrap().len(), 1200);
    // An unknown app anywhere in the batch: nothing is added.
    let mut bad: Vec<Policy> = (2000..2100).map(pol).collect();
    bad.push(Policy {
        source: "nope".into(),
        ..pol(9)
    });
    assert!(matches!(
        s.add_policies(&bad),
        Err(StateError::UnknownApp(_))
    ));
    assert_eq!(s.policies(None).unwrap().len(), 1200);
    // Deleting 1,000 of them plus 100 that do not exist.
    let del: Vec<Policy> = (201..=1300).map(pol).collect();
    assert_eq!(s.delete_policies(&del).unwrap(), 1000);
    let left: Vec<u16> = s
        .policies(None)
        .unwrap()
        .iter()
        .map(|p| p.ports.start())
        .collect();
    assert_eq!(left.len(), 200);
    assert!(left.iter().all(|p| *p <= 200));
}

/// A conformance scenario.
pub fn cell_subnets_have_the_configured_size_and_never_overlap(open: Opener) {
    let mut s = open(("10.255.0.0".parse().unwrap(), 22), 60);
    let ip = |n: u8| Ipv4Addr::new(192, 0, 2, n);
    // One /24 from before the size changed.
    let first = s.acquire_lease("cell0", ip(100)).unwrap();
    assert_eq!(first.subnet.to_string(), "10.255.0.0/24");
    assert!(s.set_cell_prefix(22).is_err() && s.set_cell_prefix(31).is_err());
    s.set_cell_prefix(26).unwrap();
    // /26s: 16 in the /22, 4 of them inside the old /24, so 12 are free.
    let mut got = vec![];
    for n in 1..=12u8 {
        got.push(s.acquire_lease(&format!("cell{n}"), ip(n)).unwrap().subnet);
    }
    assert!(got.iter().all(|g| g.prefix() == 26));
    assert_eq!(got[0].to_string(), "10.255.1.0/26");
    assert_eq!(got[11].to_string(), "10.255.3.192/26");
    for g in &got {
        assert!(
            !first.subnet.contains(g.network()),
            "{g} overlaps {}",
            first.subnet
        );
    }
    assert!(matches!(
        s.acquire_lease("cell13", ip(13)),
        Err(StateError::NoSubnet(m)) if m.contains("/26")
    ));
    // A container address of a /26 lease: inside it, not its first or last address.
    let b = s.create_app("appb").unwrap();
    let p = s.place_instance(b.guid.as_str(), "cell1", None).unwrap();
    let last = Ipv4Addr::new(10, 255, 1, 63);
    assert!(s
        .confirm_instance("cell1", &p.guid, b.guid.as_str(), 0, last)
        .is_err());
    s.confirm_instance(
        "cell1",
        &p.guid,
        b.guid.as_str(),
        0,
        Ipv4Addr::new(10, 255, 1, 62),
    )
    .unwrap();
}

/// A conformance scenario.
pub fn a_shared_view_gives_each_cell_what_its_own_would(open: Opener) {
    let mut s = open(OVERLAY, 60);
    let ip = |n: u8| Ipv4Addr::new(192, 0, 2, n);
    let apps: Vec<_> = ["appa", "appb", "appc"]
        .iter()
        .map(|n| s.create_app(n).unwrap())
        .collect();
    for (c, n) in [("cell1", 1), ("cell2", 2), ("cell3", 3)] {
        s.acquire_lease(c, ip(n)).unwrap();
    }
    let leases = s.leases().unwrap();
    for (k, (app, cell)) in [(0, "cell1"), (1, "cell2"), (1, "cell1"), (2, "cell2")]
        .iter()
        .enumerate()
    {
        let a = &apps[*app];
        let p = s.place_instance(a.guid.as_str(), cell, None).unwrap();
        let l = leases.iter().find(|l| l.cell == *cell).unwrap();
        let addr = Ipv4Addr::from(u32::from(l.subnet.network()) + 2 + k as u32);
        s.confirm_instance(cell, &p.guid, a.guid.as_str(), p.index, addr)
            .unwrap();
    }
    for (src, dst, port) in [(0, 1, 8080), (2, 1, 9000), (2, 0, 53)] {
        s.add_policies(&[Policy {
            source: apps[src].guid.clone(),
            destination: apps[dst].guid.clone(),
            protocol: "tcp".parse().unwrap(),
            ports: PortRange::new(port, port).unwrap(),
        }])
        .unwrap();
    }
    s.map_route(apps[1].guid.as_str(), "apps.internal", "appb")
        .unwrap();
    let shared = c2c_control::views::Shared::read(&s).unwrap();
    for cell in ["cell1", "cell2", "cell3", "nocell"] {
        let from_shared: c2c_api::CellView =
            serde_json::from_str(&shared.view_json(cell, None).unwrap()).unwrap();
        assert_eq!(
            from_shared,
            c2c_control::api::view(&s, cell).unwrap(),
            "{cell}"
        );
    }
    // cell3 runs nothing: no policies; cell2 runs appb and appc: all three touch it.
    let v3: c2c_api::CellView =
        serde_json::from_str(&shared.view_json("cell3", None).unwrap()).unwrap();
    assert!(v3.policies.is_empty() && v3.instances.len() == 4);
    // A delta against the previous revision after a policy change: only policies come, and
    // merged with the previous whole view it is the new whole view.
    let before: c2c_api::CellView =
        serde_json::from_str(&shared.view_json("cell1", None).unwrap()).unwrap();
    s.add_policies(&[Policy {
        source: apps[1].guid.clone(),
        destination: apps[0].guid.clone(),
        protocol: "udp".parse().unwrap(),
        ports: PortRange::new(5000, 5010).unwrap(),
    }])
    .unwrap();
    let next = c2c_control::views::Shared::read(&s).unwrap();
    let delta_json = next.view_json("cell1", Some(shared.hashes())).unwrap();
    let delta: c2c_api::CellView = serde_json::from_str(&delta_json).unwrap();
    assert_eq!(
        delta.unchanged,
        ["leases", "apps", "instances", "routes", "domains", "egress"]
    );
    assert!(delta_json.len() < 1000, "{delta_json}");
    assert_eq!(
        delta.merged(&before).unwrap(),
        c2c_control::api::view(&s, "cell1").unwrap()
    );
    // A route change sends routes (and what else changed), never a stale part.
    s.map_route(apps[0].guid.as_str(), "apps.internal", "appa")
        .unwrap();
    let third = c2c_control::views::Shared::read(&s).unwrap();
    let d: c2c_api::CellView =
        serde_json::from_str(&third.view_json("cell1", Some(next.hashes())).unwrap()).unwrap();
    assert!(!d.unchanged.contains(&"routes".to_string()));
    let whole_next: c2c_api::CellView =
        serde_json::from_str(&next.view_json("cell1", None).unwrap()).unwrap();
    assert_eq!(
        d.merged(&whole_next).unwrap(),
        c2c_control::api::view(&s, "cell1").unwrap()
    );
}

/// A conformance scenario.
pub fn leases_expire_unless_renewed_and_come_back_where_they_were(open: Opener) {
    let mut s = open(OVERLAY, 60);
    let ip = |n: u8| Ipv4Addr::new(192, 0, 2, n);
    for (c, n) in [("cell1", 1), ("cell2", 2), ("cell3", 3)] {
        s.acquire_lease(c, ip(n)).unwrap();
    }
    // An agent restarting takes the lease it holds again: no new revision, unless its
    // underlay address moved (what other cells route to).
    let r = s.revision().unwrap();
    s.acquire_lease("cell3", ip(3)).unwrap();
    assert_eq!(s.revision().unwrap(), r);
    s.acquire_lease("cell3", ip(33)).unwrap();
    assert!(s.revision().unwrap() > r);
    s.acquire_lease("cell3", ip(3)).unwrap();
    let b = s.create_app("appb").unwrap();
    let p = s.place_instance(b.guid.as_str(), "cell2", None).unwrap();
    let held = s.leases().unwrap()[1].subnet;
    let inst_ip = Ipv4Addr::from(u32::from(held.network()) + 2);
    s.confirm_instance("cell2", &p.guid, b.guid.as_str(), 0, inst_ip)
        .unwrap();
    // Nothing is stale: no change, no new revision.
    let r0 = s.revision().unwrap();
    assert!(s.expire_leases().unwrap().is_empty());
    assert_eq!(s.revision().unwrap(), r0);
    // cell1 and cell2 stopped renewing; cell3 renews.
    s.store()
        .execute(
            "UPDATE cells SET renewed_at = renewed_at - 100 WHERE name IN ('cell1', 'cell2')",
            (),
        )
        .unwrap();
    s.renew_lease("cell3").unwrap();
    assert_eq!(s.expire_leases().unwrap(), ["cell1", "cell2"]);
    assert!(s.revision().unwrap() > r0);
    let left: Vec<String> = s
        .leases()
        .unwrap()
        .iter()
        .map(|l| l.cell.to_string())
        .collect();
    assert_eq!(left, ["cell3"]);
    // Its instance left every view, but stays placed for the cell to confirm again.
    assert!(s.instances(None).unwrap().is_empty());
    assert_eq!(s.placements(None).unwrap().len(), 1);
    assert!(matches!(
        s.renew_lease("cell2"),
        Err(StateError::NoLease(_))
    ));
    // Back, asking for the subnet it held: it gets it, though a lower one is free.
    let again = s
        .acquire_lease_preferring("cell2", ip(2), Some(held))
        .unwrap();
    assert_eq!(again.subnet, held);
    s.confirm_instance("cell2", &p.guid, b.guid.as_str(), 0, inst_ip)
        .unwrap();
    // A preferred subnet another cell holds, or outside the overlay, is not given.
    let taken = s
        .leases()
        .unwrap()
        .iter()
        .find(|l| l.cell == "cell3")
        .unwrap()
        .subnet;
    let other = s
        .acquire_lease_preferring("cell1", ip(1), Some(taken))
        .unwrap();
    assert_ne!(other.subnet, taken);
    let outside: c2c_api::net::Subnet = "192.168.7.0/24".parse().unwrap();
    let new = s
        .acquire_lease_preferring("cell9", ip(9), Some(outside))
        .unwrap();
    assert_ne!(new.subnet, outside);
}

/// A conformance scenario.
pub fn join_tokens_are_used_once_and_expire(open: Opener) {
    let mut s = open(OVERLAY, 60);
    let t = s.create_join_token(3600, None).unwrap();
    s.check_join_token(&t.secret, "cell7").unwrap();
    s.join_cell(&t.secret, "cell7", "fp7").unwrap();
    assert!(s.cell_identity_ok("cell7", "fp7").unwrap());
    let again = s.join_cell(&t.secret, "cell8", "fp8");
    assert!(
        matches!(again, Err(StateError::Forbidden(m)) if m.contains("already used (by cell cell7)"))
    );
    assert!(!s.cell_identity_ok("cell8", "fp8").unwrap());
    assert!(matches!(
        s.check_join_token("guess", "cell8"),
        Err(StateError::Forbidden(_))
    ));
    // An unbound token joins a new name only: a leaked one cannot take over a cell; a token
    // bound to a name joins that name, replacing its identity, and no other.
    let loose = s.create_join_token(3600, None).unwrap();
    assert!(matches!(
        s.join_cell(&loose.secret, "cell7", "evil"),
        Err(StateError::Conflict(_))
    ));
    assert!(s.cell_identity_ok("cell7", "fp7").unwrap());
    let bound = s.create_join_token(3600, Some("cell7")).unwrap();
    assert!(
        matches!(s.join_cell(&bound.secret, "cell9", "fp9"), Err(StateError::Forbidden(m)) if m.contains("for cell cell7"))
    );
    s.join_cell(&bound.secret, "cell7", "fp7b").unwrap();
    assert!(
        s.cell_identity_ok("cell7", "fp7b").unwrap()
            && !s.cell_identity_ok("cell7", "fp7").unwrap()
    );
    let old = s.create_join_token(0, None).unwrap();
    s.store()
        .execute(
            "UPDATE join_tokens SET expires_at = expires_at - 10 WHERE used_by IS NULL",
            (),
        )
        .unwrap();
    assert!(
        matches!(s.join_cell(&old.secret, "cell9", "fp9"), Err(StateError::Forbidden(m)) if m.contains("expired"))
    );
    // Only the hash is kept.
    let stored: Vec<String> = s
        .store()
        .query_map("SELECT hash FROM join_tokens", (), |r| r.get(0))
        .unwrap();
    assert!(!stored.contains(&t.secret));
}

/// A conformance scenario.
pub fn security_groups_bind_to_spaces_and_reach_the_cells_view(open: Opener) {
    use c2c_api::asg::{validate, Lifecycle};
    let mut s = open(OVERLAY, 60);
    // Every platform has the default org and space; apps land there unless told otherwise.
    let a = s.create_app("a").unwrap();
    assert_eq!(a.space, DEFAULT_SPACE_GUID);
    let org = s.create_org("o1").unwrap();
    assert!(matches!(s.create_org("o1"), Err(StateError::Conflict(_))));
    let dev = s.create_space("o1", "dev").unwrap();
    let prod = s.create_space(&org.guid, "prod").unwrap();
    assert!(matches!(
        s.create_space("o1", "dev"),
        Err(StateError::Conflict(_))
    ));
    assert!(matches!(
        s.create_space("nope", "dev"),
        Err(StateError::NotFound(_))
    ));
    // `ORG/SPACE` names a space in grants: no name may hold `/` (an org `o1/x` or a space
    // `x/dev` would let `o1/x/dev` land on another tenant's space), nor control characters.
    for (org, space) in [("o1", "x/dev"), ("o1", "a\nb"), ("o1", "/")] {
        assert!(
            matches!(s.create_space(org, space), Err(StateError::Invalid(ref m)) if m.contains("'/'")),
            "{space:?}"
        );
    }
    for org in ["o1/x", "a\u{7}", " "] {
        assert!(
            matches!(s.create_org(org), Err(StateError::Invalid(_))),
            "{org:?}"
        );
    }
    assert_eq!(s.spaces(Some("o1")).unwrap().len(), 2);
    assert_eq!(s.space("o1", "dev").unwrap(), dev);
    let b = s.create_app_in("b", &dev.guid).unwrap();
    assert_eq!(s.app("b").unwrap().space, dev.guid);
    assert!(matches!(
        s.create_app_in("c", "no-such-space"),
        Err(StateError::NotFound(_))
    ));

    let web = validate(&serde_json::json!([
        {"protocol": "tcp", "destination": "192.0.2.0/24", "ports": "80,443", "log": true}
    ]))
    .unwrap();
    let dns = validate(
        &serde_json::json!([{"protocol": "udp", "destination": "8.8.8.8", "ports": "53"}]),
    )
    .unwrap();
    s.create_security_group("web", &web).unwrap();
    s.create_security_group("dns", &dns).unwrap();
    assert!(matches!(
        s.create_security_group("web", &web),
        Err(StateError::Conflict(_))
    ));
    let r0 = s.revision().unwrap();
    assert!(s
        .bind_security_group("web", Some(&dev.guid), Lifecycle::Running)
        .unwrap());
    assert!(!s
        .bind_security_group("web", Some(&dev.guid), Lifecycle::Running)
        .unwrap());
    assert!(s
        .bind_security_group("web", Some(&prod.guid), Lifecycle::Staging)
        .unwrap());
    assert!(s
        .bind_security_group("dns", None, Lifecycle::Running)
        .unwrap());
    let r1 = s.revision().unwrap();
    assert!(r1 > r0);
    let g = s.security_group("web").unwrap();
    assert!(!g.running_default && !g.staging_default);
    assert_eq!(
        g.spaces
            .iter()
            .map(|b| (b.space.as_str(), b.lifecycle))
            .collect::<Vec<_>>(),
        [
            ("o1/dev", Lifecycle::Running),
            ("o1/prod", Lifecycle::Staging)
        ]
    );
    assert!(s.security_group("dns").unwrap().running_default);
    // The cells' view: running bindings only, with the group's name.
    let e = s.egress().unwrap();
    assert_eq!(e.everywhere.len(), 1);
    assert_eq!(e.everywhere[0].group, "dns");
    assert_eq!(e.by_space.len(), 1, "staging bindings are not enforced");
    let for_b: Vec<&str> = e.for_space(&b.space).map(|r| r.group.as_str()).collect();
    assert_eq!(for_b, ["dns", "web"]);
    let for_a: Vec<&str> = e.for_space(&a.space).map(|r| r.group.as_str()).collect();
    assert_eq!(for_a, ["dns"]);
    // Updates: the same rules are no change; new ones are.
    assert!(!s.update_security_group("web", &web).unwrap());
    assert_eq!(s.revision().unwrap(), r1);
    assert!(s.update_security_group("web", &dns).unwrap());
    assert_eq!(s.egress().unwrap().by_space[&dev.guid][0].rule, dns[0]);
    assert!(matches!(
        s.update_security_group("nope", &dns),
        Err(StateError::NotFound(_))
    ));
    // Unbinding and deleting.
    assert!(s
        .unbind_security_group("web", Some(&dev.guid), Lifecycle::Running)
        .unwrap());
    assert!(!s
        .unbind_security_group("web", Some(&dev.guid), Lifecycle::Running)
        .unwrap());
    assert!(s.egress().unwrap().by_space.is_empty());
    assert!(s.delete_security_group("dns").unwrap());
    assert!(!s.delete_security_group("dns").unwrap());
    assert!(s.egress().unwrap().everywhere.is_empty());
    assert_eq!(s.security_groups().unwrap().len(), 1);
    assert_eq!(s.apps_by_space().unwrap()[&dev.guid], [b.guid.to_string()]);
    // A user granted a space manages its apps, those made later too, and no other.
    let space = |s: &str| -> c2c_api::types::SpaceRef { s.parse().unwrap() };
    s.grant_spaces("dev", &[space("o1/dev")]).unwrap();
    assert!(matches!(
        s.grant_spaces("dev", &[space("o1/nope")]),
        Err(StateError::NotFound(_))
    ));
    // Org and space travel as separate fields: a space "x/dev" can exist nowhere.
    let split = c2c_api::types::SpaceRef {
        org: "o1".into(),
        space: "x/dev".into(),
    };
    assert!(matches!(
        s.grant_spaces("dev", &[split]),
        Err(StateError::NotFound(_))
    ));
    for bad in ["nospace", "o1/dev/x", "o1/x/dev"] {
        assert!(bad.parse::<c2c_api::types::SpaceRef>().is_err(), "{bad}");
    }
    let t = s.create_token("dev", Scope::Write, &[]).unwrap();
    assert_eq!(t.spaces, ["o1/dev"]);
    let later = s.create_app_in("later", &dev.guid).unwrap();
    let who = s
        .caller(&c2c_control::tokens::sha256_hex(t.token.as_bytes()))
        .unwrap()
        .unwrap();
    assert!(who.may_manage(b.guid.as_str()) && who.may_manage(later.guid.as_str()));
    assert!(!who.may_manage(a.guid.as_str()));
    assert_eq!(s.users().unwrap()[0].spaces, ["o1/dev"]);
    s.revoke_user("dev").unwrap();
    assert!(s.users().unwrap().is_empty());
}
