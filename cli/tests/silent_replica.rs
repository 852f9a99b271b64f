//! A control replica that goes silent (its host powered off, a partition: packets dropped, no
//! reset) holds no caller: connect plus TLS handshake to one replica is bounded, and the next
//! replica of the list answers (issue #30: the CLI stalled for over 60 s). The silent replica is
//! a listener that takes connections and never answers, so a ClientHello waits forever there.

use std::net::TcpListener;

mod support;
use support::Control;

#[test]
fn a_silent_replica_first_in_the_list_is_passed_over() {
    let real = Control::start();
    real.ok(&["create-app", "appa"]);

    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("https://{}", silent.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = vec![];
        for s in silent.incoming().flatten() {
            held.push(s); // never read, never answered, never closed
        }
    });
    // The operator's list, the silent replica first (control wrote only its own URL at start).
    std::fs::write(
        real.dir.path().join("control/url"),
        format!("{silent_url},{}", real.url),
    )
    .unwrap();
    let apps = real.ok(&["apps"]);
    assert!(
        apps.contains("appa"),
        "answered through the live replica: {apps}"
    );

    // Alone, the silent replica is a clear error, not a hang.
    std::fs::write(real.dir.path().join("control/url"), &silent_url).unwrap();
    let o = real.c2c(&["apps"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no answer within 3s"), "{err}");
}
