//! Writes what `bench/identity.sh` needs into DIR, as the platform makes it: a root and the
//! instances issuer; the sidecar's pair (`certs/`, leaf + issuer) for appb; an identity of a live
//! appa instance (`client.crt`, `client.key`); the same server pair as single files for HAProxy
//! (`server.pem`: chain + key) and nginx (`server.crt`, `server.key`); the issuer alone
//! (`issuer.pem`) and with the root (`clientca.pem`, what the peers verify callers against); and `access.json` files for the
//! sidecar with client identity off and required (`access-off.json`, `access-required.json`).
//!
//! Usage: cargo run --release -p c2c-proxy --example identity_certs -- DIR

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use c2c_api::access::Access;
use c2c_api::{ClientIdentity, ProxyProtocol};
use c2c_certs::{Ca, Identity, LeafRequest, SanSet, Usage};

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).expect("usage: identity_certs DIR"));
    std::fs::create_dir_all(&dir).unwrap();
    let root = Ca::generate("c2c platform CA").unwrap();
    let issuer = root.intermediate("c2c instance issuer").unwrap();
    let server = issuer
        .issue(&LeafRequest {
            common_name: "b0".into(),
            sans: SanSet::new(["appb.apps.internal"], ["127.0.0.1".parse().unwrap()]).unwrap(),
            ttl: Duration::from_secs(24 * 3600),
            key: Default::default(),
            usage: Usage::Server,
        })
        .unwrap();
    c2c_certs::pair::write_pair(
        &dir.join("certs"),
        server.cert_pem.as_bytes(),
        server.key_pem.as_bytes(),
    )
    .unwrap();
    let write = |name: &str, bytes: &str| std::fs::write(dir.join(name), bytes).unwrap();
    write("server.crt", &server.cert_pem);
    write("server.key", &server.key_pem);
    write(
        "server.pem",
        &format!("{}{}", server.cert_pem, server.key_pem),
    );
    write("issuer.pem", issuer.cert_pem());
    // OpenSSL (HAProxy, nginx) anchors only at a self-signed root unless told otherwise.
    write(
        "clientca.pem",
        &format!("{}{}", issuer.cert_pem(), root.cert_pem()),
    );
    write("root.pem", root.cert_pem());
    let (key, csr) = c2c_certs::ca::new_key_and_csr().unwrap();
    let id = Identity::new("c2c.internal", "a0", "appa", "space", "org");
    let chain = issuer
        .sign_identity_csr(
            &csr,
            &id,
            "127.0.0.1".parse().unwrap(),
            Duration::from_secs(24 * 3600),
        )
        .unwrap();
    write("client.crt", &chain);
    write("client.key", &key);
    for (name, ci) in [
        ("access-off.json", ClientIdentity::Off),
        ("access-required.json", ClientIdentity::Required),
    ] {
        let a = Access {
            revision: c2c_api::Revision(1),
            instance: "b0".into(),
            client_identity: ci,
            proxy_protocol: ProxyProtocol::Off,
            app_protocol: Default::default(),
            callers: BTreeMap::from([("a0".into(), "appa".into())]),
            allowed: BTreeSet::from(["appa".into()]),
        };
        write(name, &serde_json::to_string(&a).unwrap());
    }
}
