//! Scenarios of issue #23's budgets: tag groups per cell and in all, space quotas, Cloud
//! Controller's apps, and placements no cell confirms.

use super::*;

/// A conformance scenario (issue #23): a container that failed after its runtime placed it
/// left the placement in control for ever. A placement its cell does not confirm within the
/// TTL of being placed or withdrawn is removed; a confirmed one, and one whose cell's lease
/// expired (that cell confirms it again when back), stay.
pub fn placements_no_cell_confirms_expire(open: Opener) {
    let mut s = open(OVERLAY, 60);
    let a = s.create_app("a").unwrap();
    let lease = s
        .acquire_lease("cell1", "192.0.2.1".parse().unwrap())
        .unwrap();
    let ip = |n: u32| Ipv4Addr::from(u32::from(lease.subnet.network()) + n);
    let failed = s.place_instance(&a.guid, "cell1", Some(0)).unwrap();
    let running = s.place_instance(&a.guid, "cell1", Some(1)).unwrap();
    let gone = s.place_instance(&a.guid, "cell1", Some(2)).unwrap();
    s.confirm_instance("cell1", &running.guid, &a.guid, 1, ip(1))
        .unwrap();
    s.confirm_instance("cell1", &gone.guid, &a.guid, 2, ip(2))
        .unwrap();
    assert!(s.unconfirm_instance("cell1", &gone.guid).unwrap());
    // Nothing is older than the TTL yet.
    assert!(s.expire_placements(60).unwrap().is_empty());
    // 100 s later.
    let later = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + 100;
    let r0 = s.revision().unwrap();
    let mut want = vec![failed.guid.clone(), gone.guid.clone()];
    want.sort();
    assert_eq!(s.expire_placements_at(60, later).unwrap(), want);
    let left: Vec<String> = s
        .placements(None)
        .unwrap()
        .into_iter()
        .map(|p| p.guid)
        .collect();
    assert_eq!(left, [running.guid.as_str()]);
    assert_eq!(
        s.revision().unwrap(),
        r0,
        "unconfirmed placements are in no view"
    );
    // A lease that expired un-confirms its instances; they wait for their cell, not a TTL.
    s.store()
        .execute("UPDATE cells SET renewed_at = renewed_at - 1000", ())
        .unwrap();
    assert_eq!(s.expire_leases().unwrap(), ["cell1"]);
    assert!(s.expire_placements(0).unwrap().is_empty());
    assert_eq!(s.placements(None).unwrap().len(), 1);
}

/// A conformance scenario (issue #23): one cell filled the 16-bit tag space through CF's
/// internal API, and a space user made apps and placements without end. Each is refused at its
/// budget, with what stays allowed beside it.
pub fn tag_groups_and_spaces_have_budgets(open: Opener) {
    use c2c_control::budgets::Limits;
    let mut s = open(OVERLAY, 60);
    s.set_limits(Limits {
        tag_groups_per_cell: 3,
        tag_groups: 5,
        space_apps: 2,
        space_instances: 3,
        space_routes: 2,
        external_apps: 2,
    });
    s.register_cell("cell1", "f1").unwrap();
    s.register_cell("cell2", "f2").unwrap();
    tag_budgets(&mut s);
    let a = space_budgets(&mut s);
    route_budgets(&mut s, &a);
    external_app_budget(&mut s);
}

/// Tags: per cell and in all; a known group answered without a write; a removed cell's freed.
fn tag_budgets(s: &mut State) {
    // Tags: three groups for cell1, the fourth refused; a known one answered again without a
    // write (the revision stays), also past the budget.
    for i in 0..3 {
        s.create_tag_by(&format!("g{i}"), "router", Some("cell1"))
            .unwrap();
    }
    let r0 = s.revision().unwrap();
    assert!(matches!(
        s.create_tag_by("g3", "router", Some("cell1")),
        Err(StateError::Forbidden(ref m)) if m.contains("tag quota exceeded: cell cell1")
    ));
    let again = s.create_tag_by("g0", "router", Some("cell1")).unwrap();
    assert_eq!(again.tag, "0001");
    assert_eq!(s.revision().unwrap(), r0, "a known group wakes nobody");
    // Ids and types are bounded.
    assert!(matches!(
        s.create_tag_by(&"x".repeat(1_000_000), "router", Some("cell2")),
        Err(StateError::Invalid(_))
    ));
    // Cell2 has budget of its own, until the platform's runs out.
    s.create_tag_by("h0", "router", Some("cell2")).unwrap();
    s.create_tag_by("h1", "router", Some("cell2")).unwrap();
    assert!(matches!(
        s.create_tag_by("h2", "router", Some("cell2")),
        Err(StateError::Forbidden(ref m)) if m.contains("the platform's limit")
    ));
    // Removing cell1 frees its groups' tags: the next app takes the lowest.
    s.remove_cell("cell1").unwrap();
    assert!(!s.tags().unwrap().iter().any(|t| t.id.starts_with('g')));
    assert_eq!(s.create_app("first").unwrap().tag, 1);
    s.create_tag_by("h2", "router", Some("cell2")).unwrap();
}

/// Spaces: apps and instances within the quota, the admin not bound, quotas raised. Returns
/// the app in o/dev.
fn space_budgets(s: &mut State) -> App {
    // Spaces: two apps, then the quota; the admin (quota off) is not bound by it.
    let org = s.create_org("o").unwrap();
    let dev = s.create_space(&org.guid, "dev").unwrap();
    let a = s.create_app_as("a", &dev.guid, true).unwrap();
    s.create_app_as("b", &dev.guid, true).unwrap();
    assert!(matches!(
        s.create_app_as("c", &dev.guid, true),
        Err(StateError::Forbidden(ref m)) if m.contains("app limit")
    ));
    s.create_app_as("admins", &dev.guid, false).unwrap();
    // Other spaces keep their own budget.
    s.create_app_as("d", DEFAULT_SPACE_GUID, true).unwrap();
    // Instances: three in the space, then refused; the admin's still placed.
    for i in 0..3 {
        s.place_instance_as(&a.guid, "cell2", Some(i), None, true)
            .unwrap();
    }
    assert!(matches!(
        s.place_instance_as(&a.guid, "cell2", Some(3), None, true),
        Err(StateError::Forbidden(ref m)) if m.contains("instance limit")
    ));
    s.place_instance_as(&a.guid, "cell2", Some(3), None, false)
        .unwrap();
    // The admin raises the space's quota: the next ones fit; the listing says what is used.
    let q = s.set_space_quota("o", "dev", Some(10), None, None).unwrap();
    assert_eq!((q.max_apps, q.max_instances, q.default), (10, 3, false));
    assert_eq!((q.apps, q.instances), (3, 4));
    s.create_app_as("c", &dev.guid, true).unwrap();
    let q = s.set_space_quota("o", "dev", None, Some(5), None).unwrap();
    assert_eq!((q.max_apps, q.max_instances), (10, 5));
    s.place_instance_as(&a.guid, "cell2", Some(4), None, true)
        .unwrap();
    let all = s.space_quotas().unwrap();
    let def = all.iter().find(|q| q.space == "default").unwrap();
    assert!(def.default && def.max_apps == 2, "{def:?}");
    assert!(matches!(
        s.set_space_quota("o", "nope", Some(1), None, None),
        Err(StateError::NotFound(_))
    ));
    a
}

/// Routes: the space's quota for tenants, the admin not bound.
fn route_budgets(s: &mut State, a: &App) {
    // Routes: two for the space, the third refused to a tenant; mapping one again is no new
    // route; the admin is not bound.
    assert!(s
        .map_route_as(&a.guid, "apps.internal", "r1", true)
        .unwrap());
    assert!(s
        .map_route_as(&a.guid, "apps.internal", "r2", true)
        .unwrap());
    assert!(!s
        .map_route_as(&a.guid, "apps.internal", "r2", true)
        .unwrap());
    assert!(matches!(
        s.map_route_as(&a.guid, "apps.internal", "r3", true),
        Err(StateError::Forbidden(ref m)) if m.contains("total routes")
    ));
    assert!(s
        .map_route_as(&a.guid, "apps.internal", "r3", false)
        .unwrap());
    let q = s.set_space_quota("o", "dev", None, None, Some(4)).unwrap();
    assert_eq!((q.routes, q.max_routes), (3, 4));
    assert!(s
        .map_route_as(&a.guid, "apps.internal", "r4", true)
        .unwrap());
}

/// Cloud Controller's apps named in an admin's policies: tags within `--max-external-apps`.
fn external_app_budget(s: &mut State) {
    // Cloud Controller's apps, named by GUID in an admin's policies: two get tags, the third
    // is past the budget; an id that is no GUID makes nothing; the last policy's removal frees
    // the tag.
    let (g1, g2, g3) = (
        "2ffe4b0f-b03c-48bb-a4fa-bf22657d34a2",
        "5d1c2e3f-0000-4000-8000-000000000001",
        "5d1c2e3f-0000-4000-8000-000000000002",
    );
    assert_eq!(s.adopt_external_apps(&[g1, g2, "typo-app"]).unwrap(), 2);
    assert_eq!(s.adopt_external_apps(&[g1]).unwrap(), 0, "known already");
    assert!(matches!(
        s.adopt_external_apps(&[g3]),
        Err(StateError::Forbidden(ref m)) if m.contains("--max-external-apps")
    ));
    assert!(s.app("typo-app").is_err());
    let tag1 = s.app(g1).unwrap().tag;
    let p = Policy {
        source: g1.into(),
        destination: g2.into(),
        protocol: c2c_api::net::Protocol::Tcp,
        ports: PortRange::new(8080, 8080).unwrap(),
    };
    s.add_policies(std::slice::from_ref(&p)).unwrap();
    assert_eq!(
        s.release_external_apps(&[g1, g2]).unwrap(),
        0,
        "a policy names them"
    );
    s.delete_policies(std::slice::from_ref(&p)).unwrap();
    assert_eq!(s.release_external_apps(&[g1, g2]).unwrap(), 2);
    assert!(!s.tags().unwrap().iter().any(|t| t.tag == Tag::hex(tag1)));
}
