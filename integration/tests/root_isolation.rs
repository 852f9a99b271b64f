//! ROOT TEST: the overlay's trust boundary is the cell. Attacks from inside a container (and
//! from a host on the underlay that is not a cell), each beside the legitimate path:
//! - a VXLAN-GBP packet crafted with another app's tag and sent to another cell's VTEP;
//! - a packet with another local container's source address, from a raw socket;
//! - a container reaching the cell, the underlay and control directly.
//!
//! Run as root (CI does); `C2C_SKIP_ROOT_TESTS=1` skips it.

use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::mpsc;
use std::time::Duration;

use c2c_integration::packets::*;
use c2c_integration::testbed::Platform;
use c2c_integration::topo::*;

/// A UDP server in `ns` on `addr` that reports every payload it receives.
fn record_udp(ns: &Netns, addr: SocketAddr) -> mpsc::Receiver<String> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let (tx, rx) = mpsc::channel();
    spawn_in(&ns.path(), move || {
        let s = UdpSocket::bind(addr).unwrap();
        ready_tx.send(()).unwrap();
        let mut buf = [0u8; 1500];
        while let Ok((n, _)) = s.recv_from(&mut buf) {
            if tx
                .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                .is_err()
            {
                return;
            }
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("recorder did not start");
    rx
}

/// Whether `want` arrives at the recorder within `wait`.
fn arrives(rx: &mpsc::Receiver<String>, want: &str, wait: Duration) -> bool {
    let end = std::time::Instant::now() + wait;
    while let Some(left) = end.checked_duration_since(std::time::Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(got) if got == want => return true,
            Ok(_) => continue,
            Err(_) => return false,
        }
    }
    false
}

/// Sends `payload` over UDP from inside `ns` to `to`; true if the kernel took it.
fn send_udp(ns: &Netns, to: SocketAddr, payload: Vec<u8>) -> bool {
    spawn_in(&ns.path(), move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.send_to(&payload, to).is_ok()
    })
    .join()
    .unwrap()
}

fn connects(ns: &Netns, to: SocketAddr) -> std::io::Result<()> {
    spawn_in(&ns.path(), move || {
        TcpStream::connect_timeout(&to, Duration::from_secs(2)).map(drop)
    })
    .join()
    .unwrap()
}

#[test]
fn root_a_container_cannot_forge_tags_spoof_sources_or_reach_the_underlay() {
    if !require_root() {
        return;
    }
    let p = Platform::start(2);
    for app in ["appa", "appb", "appc"] {
        p.c2c(&["create-app", app]);
    }
    let (a, ip_a) = p.container(1, "appa", 0);
    let (c, ip_c) = p.container(1, "appc", 0);
    let (b, ip_b) = p.container(2, "appb", 0);
    let to_b = SocketAddr::new(ip_b.into(), 5005);
    let inbox = record_udp(&b, to_b);
    p.allow("appa", "appb", "udp", "5005");
    let tag_a = {
        let v: serde_json::Value =
            serde_json::from_str(&p.c2c(&["curl", "/v1/apps/appa"])).unwrap();
        v["tag"].as_u64().unwrap() as u16
    };
    let short = Duration::from_millis(700);

    // Positive control: appa's own datagram is delivered once the policy is enforced.
    let delivered = eventually(Duration::from_secs(10), || {
        send_udp(&a, to_b, b"from appa".to_vec());
        arrives(&inbox, "from appa", Duration::from_millis(200)).then_some(())
    });
    assert!(
        delivered.is_some(),
        "appa -> appb udp 5005 was never delivered"
    );

    // 1. A VXLAN-GBP packet carrying appa's tag, crafted in appc's container and sent to
    //    cell2's VTEP. Control check: the same bytes from cell1 (a real peer) are delivered,
    //    so the packet is well formed and only its sender decides.
    let mac2 = vtep_mac(&p.cells[1].ns);
    let cell2_vtep = SocketAddr::new(p.cells[1].underlay_ip.into(), 4789);
    let forged = |text: &str| vxlan_gbp(tag_a, mac2, &ip_udp(ip_a, ip_b, 5005, text.as_bytes()));
    send_udp(&c, cell2_vtep, forged("forged in a container"));
    assert!(
        !arrives(&inbox, "forged in a container", short),
        "a container injected VXLAN with another app's tag"
    );
    // The same under a security group that opens everything: leaving through NAT, the packet
    // would come from cell1's underlay address, a peer's; the peers' VXLAN port stays closed to
    // containers whatever the groups say.
    let all = p.dir.path().join("all.json");
    std::fs::write(&all, r#"[{"protocol":"all","destination":"0.0.0.0/0"}]"#).unwrap();
    p.c2c(&["create-security-group", "everything", all.to_str().unwrap()]);
    p.c2c(&["bind-running-security-group", "everything"]);
    // Positive control: the group is in force (appc now reaches the underlay host's port).
    let probe = record_udp(
        &p.underlay.ns,
        SocketAddr::new([192, 0, 2, 254].into(), 5099),
    );
    let opened = eventually(Duration::from_secs(10), || {
        send_udp(
            &c,
            SocketAddr::new([192, 0, 2, 254].into(), 5099),
            b"egress".to_vec(),
        );
        arrives(&probe, "egress", Duration::from_millis(200)).then_some(())
    });
    assert!(
        opened.is_some(),
        "the allow-everything group was never enforced"
    );
    send_udp(&c, cell2_vtep, forged("forged through NAT"));
    assert!(
        !arrives(&inbox, "forged through NAT", short),
        "a container injected VXLAN through the cell's NAT"
    );
    p.c2c(&["unbind-running-security-group", "everything"]);
    // From a host on the underlay that is not a cell (the underlay namespace, 192.0.2.254).
    send_udp(&p.underlay.ns, cell2_vtep, forged("forged on the underlay"));
    assert!(
        !arrives(&inbox, "forged on the underlay", short),
        "a non-cell underlay host injected VXLAN"
    );
    send_udp(&p.cells[0].ns, cell2_vtep, forged("from a real peer"));
    assert!(
        arrives(&inbox, "from a real peer", Duration::from_secs(2)),
        "control check: the crafted packet from a real cell should be delivered"
    );

    // Issue #23: a compromised cell put any app's tag on its VXLAN packets. A cell may speak
    // only for the instances control confirmed on it: the tag must be the app of the inner
    // source address, and that address must be in the sending cell's lease. appd runs on
    // cell2 only, and a policy lets it reach appb.
    p.c2c(&["create-app", "appd"]);
    let (d, ip_d) = p.container(2, "appd", 0);
    p.allow("appd", "appb", "udp", "5005");
    let tag_d = {
        let v: serde_json::Value =
            serde_json::from_str(&p.c2c(&["curl", "/v1/apps/appd"])).unwrap();
        v["tag"].as_u64().unwrap() as u16
    };
    // Positive control: appd's own datagram reaches appb (the policy is in force).
    let d_ok = eventually(Duration::from_secs(10), || {
        send_udp(&d, to_b, b"from appd".to_vec());
        arrives(&inbox, "from appd", Duration::from_millis(200)).then_some(())
    });
    assert!(d_ok.is_some(), "appd -> appb udp 5005 was never delivered");
    // cell1 speaks as appd for appa's address (tag of another app than the source's)...
    let as_d = |src: Ipv4Addr, text: &str| {
        vxlan_gbp(tag_d, mac2, &ip_udp(src, ip_b, 5005, text.as_bytes()))
    };
    send_udp(&p.cells[0].ns, cell2_vtep, as_d(ip_a, "cell1 as appd"));
    // ... and as appd's own address, which lies in cell2's lease, not cell1's.
    send_udp(
        &p.cells[0].ns,
        cell2_vtep,
        as_d(ip_d, "cell1 from cell2's lease"),
    );
    // Untagged, from an address outside its lease.
    send_udp(
        &p.cells[0].ns,
        cell2_vtep,
        vxlan_gbp(
            0,
            mac2,
            &ip_udp(ip_d, ip_b, 5005, b"untagged from cell2's lease"),
        ),
    );
    // The legitimate tuple again, sent after the attacks: once it arrives, the attacks (sent
    // before it, on the same path) were processed.
    send_udp(&p.cells[0].ns, cell2_vtep, forged("a real peer, after"));
    let mut seen = vec![];
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while let Some(left) = end.checked_duration_since(std::time::Instant::now()) {
        match inbox.recv_timeout(left) {
            Ok(got) if got == "a real peer, after" => break,
            Ok(got) => seen.push(got),
            Err(_) => panic!("the legitimate packet after the attacks never arrived"),
        }
    }
    assert!(
        seen.is_empty(),
        "a cell spoke for an app or address that is not its own: {seen:?}"
    );

    // 2. appc sends from a raw socket with appa's source address (same cell): it would be
    //    tagged as appa. Dropped at the veth it entered by.
    send_raw(&c, ip_udp(ip_a, ip_b, 5005, b"spoofed source"), ip_b);
    assert!(
        !arrives(&inbox, "spoofed source", short),
        "a spoofed source address passed as another app"
    );
    // Control check: the same raw packet with appc's own address leaves (appc has no policy,
    // so it is refused at cell2; with a policy it is delivered).
    p.allow("appc", "appb", "udp", "5005");
    let raw_ok = eventually(Duration::from_secs(10), || {
        send_raw(&c, ip_udp(ip_c, ip_b, 5005, b"raw, own address"), ip_b);
        arrives(&inbox, "raw, own address", Duration::from_millis(200)).then_some(())
    });
    assert!(
        raw_ok.is_some(),
        "a raw packet with the container's own address is delivered"
    );

    // 3. A container reaches neither control, nor a service of its own cell or another cell
    //    (on their underlay or VTEP addresses); it reaches its cell's DNS at the gateway.
    for cell in &p.cells {
        serve(&cell.ns, "0.0.0.0:9999".parse().unwrap(), "cell service");
    }
    let control: SocketAddr = p.url.trim().trim_start_matches("https://").parse().unwrap();
    // Refused by the container's own cell (a TCP reset, so clients fail fast)...
    for (what, to) in [
        ("control's API", control),
        (
            "its own cell",
            SocketAddr::new(p.cells[0].underlay_ip.into(), 9999),
        ),
        (
            "its cell's VTEP address",
            SocketAddr::new(Ipv4Addr::new(10, 255, 0, 0).into(), 9999),
        ),
        (
            "another cell",
            SocketAddr::new(p.cells[1].underlay_ip.into(), 9999),
        ),
    ] {
        let e = connects(&a, to).expect_err(what);
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::ConnectionRefused,
            "{what}: {e}"
        );
    }
    // ... or, over the overlay, dropped by the other cell (nothing there is for containers).
    connects(
        &a,
        SocketAddr::new(Ipv4Addr::new(10, 255, 1, 0).into(), 9999),
    )
    .expect_err("another cell's VTEP address");
    connects(
        &a,
        SocketAddr::new(Ipv4Addr::new(169, 254, 0, 1).into(), 53),
    )
    .expect("the cell DNS (TCP) at the gateway");
    // Control and the cells' services answer on the underlay all along.
    connects(&p.underlay.ns, control).expect("control answers on the underlay");
    connects(
        &p.underlay.ns,
        SocketAddr::new(p.cells[0].underlay_ip.into(), 9999),
    )
    .expect("the cell service answers on the underlay");
}
