//! The streamed watch (`Upgrade: c2c-watch`) against a real `c2c control serve`: a registered
//! cell gets its whole view first, then one line per change carrying only what changed; an
//! unregistered certificate gets no stream; a cell removed while it streams gets no further
//! line and its stream ends.

mod support;

use std::time::Duration;

use c2c_api::client::{Auth, Client, WatchStream};
use c2c_api::Revision;
use support::Control;

fn client(ctl: &Control, cert_dir: &std::path::Path) -> Client {
    Client::new(
        &ctl.url,
        &std::fs::read(ctl.ca()).unwrap(),
        Auth::ClientCert {
            cert_pem: std::fs::read(cert_dir.join("cert.pem")).unwrap(),
            key_pem: std::fs::read(cert_dir.join("key.pem")).unwrap(),
        },
    )
    .unwrap()
}

/// The next line that is not a heartbeat, within 10 s.
async fn next_view(s: &mut WatchStream) -> Result<c2c_api::CellView, String> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), s.next()).await {
            Err(_) => return Err("no line within 10 s".into()),
            Ok(Err(e)) => return Err(e.to_string()),
            Ok(Ok(None)) => continue,
            Ok(Ok(Some(v))) => return Ok(v),
        }
    }
}

#[test]
fn a_stream_sends_the_view_then_changes_and_ends_with_the_cell() {
    let ctl = Control::start();
    let cert = ctl.cell_cert("cell1");
    // A second registration of the name makes the first certificate a stranger.
    let stale = ctl.dir.path().join("stale");
    std::fs::create_dir_all(&stale).unwrap();
    for f in ["cert.pem", "key.pem"] {
        std::fs::copy(cert.join(f), stale.join(f)).unwrap();
    }
    let cert = ctl.cell_cert("cell1");
    ctl.ok(&["create-app", "appa"]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // Attack: the replaced certificate opens no stream.
        let refused = client(&ctl, &stale)
            .watch_stream("cell1", Revision(0))
            .await;
        assert!(
            matches!(&refused, Err(e) if e.to_string().contains("403")),
            "{:?}",
            refused.err()
        );
        // ... nor another cell's stream with this cell's certificate.
        assert!(client(&ctl, &cert)
            .watch_stream("cell2", Revision(0))
            .await
            .is_err());

        let c = client(&ctl, &cert);
        let mut s = c.watch_stream("cell1", Revision(0)).await.unwrap();
        let first = next_view(&mut s).await.unwrap();
        assert!(first.unchanged.is_empty(), "the first line is a whole view");
        assert!(first.apps.iter().any(|a| a.name == "appa"));

        // A change: one line, with only the parts that changed.
        ctl.ok(&["create-app", "appb"]);
        let delta = next_view(&mut s).await.unwrap();
        assert!(delta.revision > first.revision);
        assert!(delta.apps.iter().any(|a| a.name == "appb"));
        for part in ["leases", "instances", "routes", "domains", "egress"] {
            assert!(
                delta.unchanged.iter().any(|u| u == part),
                "{part} left out: {:?}",
                delta.unchanged
            );
        }
        let whole = delta.merged(&first).unwrap();
        assert_eq!(whole.domains, first.domains);

        // Removed while streaming: no further line, the stream ends.
        ctl.ok(&["cell", "remove", "cell1"]);
        let end = next_view(&mut s).await;
        assert!(end.is_err(), "a removed cell still got {end:?}");
        assert!(c.watch_stream("cell1", Revision(0)).await.is_err());
    });
}
