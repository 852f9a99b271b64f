//! Scenarios of security groups: bound to spaces and carried to the cells' views.

use super::*;
use c2c_api::asg::Space;

/// A conformance scenario.
pub fn security_groups_bind_to_spaces_and_reach_the_cells_view(open: Opener) {
    let mut s = open(OVERLAY, 60);
    let (a, b, dev, prod) = orgs_and_spaces(&mut s);
    groups_bind_to_spaces(&mut s, &a, &b, &dev, &prod);
    grants_follow_spaces(&mut s, &a, &b, &dev);
}

/// The default org and space, named orgs and spaces (no `/` or control characters), apps in
/// them. Returns app a (default space), app b (o1/dev), and o1's spaces dev and prod.
fn orgs_and_spaces(s: &mut State) -> (App, App, Space, Space) {
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
    (a, b, dev, prod)
}

/// Security groups bound to spaces and as defaults; the cells' view has the running
/// bindings; updates, unbinding and deleting.
fn groups_bind_to_spaces(s: &mut State, a: &App, b: &App, dev: &Space, prod: &Space) {
    use c2c_api::asg::{validate, Lifecycle};
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
}

/// A user granted a space manages its apps, those made later too, and no other.
fn grants_follow_spaces(s: &mut State, a: &App, b: &App, dev: &Space) {
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
