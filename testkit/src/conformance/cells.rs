//! Scenarios of cells: leases and their subnets, registration, placing and confirming
//! instances, join tokens, the view each cell gets.

use super::*;

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
    // A probe (placed, not confirmed yet) is in its own cell's view only.
    s.create_org(c2c_api::probe::ORG).unwrap();
    let space = s
        .create_space(c2c_api::probe::ORG, c2c_api::probe::SPACE)
        .unwrap();
    let probe = s.create_app_in("probe", &space.guid).unwrap();
    s.place_instance_by(
        probe.guid.as_str(),
        "cell3",
        None,
        Some(&c2c_api::probe::runtime(61100)),
    )
    .unwrap();
    let shared = c2c_control::views::Shared::read(&s, None).unwrap();
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
    assert_eq!(v3.probes.len(), 1, "{v3:?}");
    assert_eq!(v3.probes[0].host_port, 61100);
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
    let next = c2c_control::views::Shared::read(&s, Some(&shared)).unwrap();
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
    let third = c2c_control::views::Shared::read(&s, Some(&next)).unwrap();
    assert_eq!(
        third.reused(),
        3,
        "routes read again, apps, instances and domains not"
    );
    let d: c2c_api::CellView =
        serde_json::from_str(&third.view_json("cell1", Some(next.hashes())).unwrap()).unwrap();
    assert!(!d.unchanged.contains(&"routes".to_string()));
    let whole_next: c2c_api::CellView =
        serde_json::from_str(&next.view_json("cell1", None).unwrap()).unwrap();
    assert_eq!(
        d.merged(&whole_next).unwrap(),
        c2c_control::api::view(&s, "cell1").unwrap()
    );
    follows_from_the_view_before(&mut s, &apps, &third);
}

/// The policies follow the journal from the view before (`prev`): adds, removals, and an
/// app's deletion (its policies go through the foreign key) come out as a whole read does.
fn follows_from_the_view_before(
    s: &mut c2c_control::state::State,
    apps: &[c2c_api::App],
    third: &c2c_control::views::Shared,
) {
    let pol = |src: usize, dst: usize, port: u16| Policy {
        source: apps[src].guid.clone(),
        destination: apps[dst].guid.clone(),
        protocol: "tcp".parse().unwrap(),
        ports: PortRange::new(port, port).unwrap(),
    };
    s.add_policies(&[pol(0, 2, 7000), pol(2, 2, 7001), pol(1, 0, 7002)])
        .unwrap();
    s.delete_policies(&[pol(0, 1, 8080)]).unwrap();
    let fourth = c2c_control::views::Shared::read(s, Some(third)).unwrap();
    let cell2 = |v: &c2c_control::views::Shared| {
        serde_json::from_str::<c2c_api::CellView>(&v.view_json("cell2", None).unwrap())
            .unwrap()
            .policies
    };
    assert_eq!(cell2(&fourth).len(), 6, "{:?}", cell2(&fourth));
    s.delete_app(apps[2].guid.as_str()).unwrap();
    let fifth = c2c_control::views::Shared::read(s, Some(&fourth)).unwrap();
    let whole = c2c_control::views::Shared::read(s, None).unwrap();
    assert!(fourth.followed() && fifth.followed() && !whole.followed());
    // Only policies changed before the fourth: the parts read from other tables (apps,
    // instances, routes, domains) came from the third as they were. The app's deletion
    // moved apps and instances, which the fifth read again.
    assert_eq!(fourth.reused(), 4);
    assert!(fifth.reused() <= 2, "{}", fifth.reused());
    assert_eq!(whole.reused(), 0);
    for cell in ["cell1", "cell2", "cell3", "nocell"] {
        let followed = fifth.view_json(cell, None).unwrap();
        assert_eq!(followed, whole.view_json(cell, None).unwrap(), "{cell}");
        assert_eq!(
            serde_json::from_str::<c2c_api::CellView>(&followed).unwrap(),
            c2c_control::api::view(s, cell).unwrap(),
            "{cell}"
        );
    }
    // appc's policies went with it: cell2 keeps appb's two with appa (udp 5000-5010, 7002).
    assert_eq!(cell2(&fifth).len(), 2, "{:?}", cell2(&fifth));
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
pub fn probes_reach_their_cells_view_at_once_within_a_budget(open: Opener) {
    let mut s = open(OVERLAY, 60);
    // The attack: a tenant's app as a probe (a port on the cell's underlay) is refused.
    let tenant = s.create_app("tenant").unwrap();
    s.acquire_lease("cell1", "192.0.2.1".parse().unwrap())
        .unwrap();
    let e = s
        .place_instance_by(tenant.guid.as_str(), "cell1", None, Some("probe:61100"))
        .unwrap_err();
    assert!(matches!(e, StateError::Forbidden(_)), "{e}");
    s.create_org(c2c_api::probe::ORG).unwrap();
    let space = s
        .create_space(c2c_api::probe::ORG, c2c_api::probe::SPACE)
        .unwrap();
    let a = s.create_app_in("probe-a", &space.guid).unwrap();
    let probe = |s: &mut State, port: u16| {
        s.place_instance_by(
            a.guid.as_str(),
            "cell1",
            None,
            Some(&c2c_api::probe::runtime(port)),
        )
    };
    // Positive control: a probe placed is in its cell's view at a new revision, unconfirmed.
    let before = s.revision().unwrap();
    let p = probe(&mut s, 61100).unwrap();
    assert!(s.revision().unwrap() > before);
    let v = c2c_control::api::view(&s, "cell1").unwrap();
    assert_eq!(
        v.probes,
        vec![c2c_api::probe::Hosted {
            guid: p.guid.clone(),
            app_guid: a.guid.clone(),
            index: p.index,
            host_port: 61100,
        }]
    );
    assert!(c2c_control::api::view(&s, "cell2")
        .unwrap()
        .probes
        .is_empty());
    // A port outside the probe range (the cell's ssh, control's API) is refused.
    for port in [22u16, 4002, 61108] {
        let e = s
            .place_instance_by(
                a.guid.as_str(),
                "cell1",
                None,
                Some(&format!("probe:{port}")),
            )
            .unwrap_err();
        assert!(matches!(e, StateError::Invalid(_)), "{port}: {e}");
    }
    // A taken port is refused; the cell's budget holds whoever asks.
    assert!(matches!(probe(&mut s, 61100), Err(StateError::Conflict(_))));
    for port in 61101..=61107 {
        probe(&mut s, port).unwrap();
    }
    let b = s.create_app_in("probe-b", &space.guid).unwrap();
    let e = s
        .place_instance_by(b.guid.as_str(), "cell1", None, Some("probe:61101"))
        .unwrap_err();
    assert!(matches!(e, StateError::Conflict(_)), "{e}");
    assert_eq!(
        c2c_control::api::view(&s, "cell1").unwrap().probes.len(),
        c2c_api::probe::PER_CELL
    );
    // Removed (unconfirmed): gone from the view at a new revision.
    let before = s.revision().unwrap();
    assert!(s.remove_instance(&p.guid).unwrap());
    assert!(s.revision().unwrap() > before);
    let left = c2c_control::api::view(&s, "cell1").unwrap().probes;
    assert_eq!(left.len(), c2c_api::probe::PER_CELL - 1);
    assert!(left.iter().all(|h| h.guid != p.guid));
    // The app's deletion takes its probes with it.
    s.delete_app(a.guid.as_str()).unwrap();
    assert!(c2c_control::api::view(&s, "cell1")
        .unwrap()
        .probes
        .is_empty());
}
