//! Scenarios of apps and what hangs off them: tags, routes, policies, the revision, tokens.

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
