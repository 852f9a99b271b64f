//! PostgreSQL over TLS (issue #23: control never used TLS to its database). A server that
//! rejects TCP clients without TLS, with a certificate for `db.test` and 127.0.0.1 from a CA
//! of the test's: control's store connects with libpq's `sslmode`/`sslrootcert` as `psql`
//! users write them, and refuses a server it cannot verify.

use std::time::Duration;

use c2c_certs::{Ca, LeafRequest, SanSet};
use c2c_control::state::State;
use c2c_testkit::conformance::OVERLAY;
use c2c_testkit::pg_cluster::PgCluster;

#[test]
fn the_store_speaks_tls_to_postgres_and_verifies_it_as_libpq_would() {
    let ca = Ca::generate("pg test CA").unwrap();
    let pair = ca
        .issue(&LeafRequest {
            common_name: "db.test".into(),
            sans: SanSet::new(["db.test"], ["127.0.0.1".parse().unwrap()]).unwrap(),
            ttl: Duration::from_secs(3600),
            key: c2c_certs::ca::LeafKey::EcdsaP256,
            usage: Default::default(),
        })
        .unwrap();
    let pg = PgCluster::start_tls(&pair.cert_pem, &pair.key_pem).expect("start PostgreSQL");
    let url = pg.create_db("tls").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root.pem");
    std::fs::write(&root, ca.cert_pem()).unwrap();
    let other = Ca::generate("another CA").unwrap();
    let wrong_root = dir.path().join("other.pem");
    std::fs::write(&wrong_root, other.cert_pem()).unwrap();
    let open = |url: &str| State::open_postgres(url, OVERLAY, 60);
    let with = |q: &str| format!("{url}?{q}");

    // Verified: the chain to our root, and the name (127.0.0.1 is in the certificate).
    let verified = with(&format!(
        "sslmode=verify-full&sslrootcert={}",
        root.display()
    ));
    let mut s = open(&verified).expect("verify-full with the server's CA");
    s.create_app("over-tls").unwrap();
    // Encrypted, unverified (libpq's require) and the default (prefer) work too.
    assert!(open(&with("sslmode=require")).is_ok());
    assert!(open(&url).is_ok(), "prefer takes the server's TLS");
    // Attacks: a server that cannot show a chain to the configured root is refused, and so
    // is a plaintext connection (the server rejects it: the password and data would cross the
    // network in clear).
    let e = open(&with(&format!(
        "sslmode=verify-full&sslrootcert={}",
        wrong_root.display()
    )))
    .err()
    .expect("a server not signed by the root was taken");
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
    let e = open(&with("sslmode=disable"))
        .err()
        .expect("plaintext was taken");
    assert!(e.to_string().contains("pg_hba.conf"), "{e}");
    // verify-full checks the name: `localhost` is not in the certificate; verify-ca does not.
    let by_name = url.replace("127.0.0.1", "localhost");
    let e = open(&format!(
        "{by_name}?sslmode=verify-full&sslrootcert={}",
        root.display()
    ))
    .err()
    .expect("a certificate for another name was taken");
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
    assert!(open(&format!(
        "{by_name}?sslmode=verify-ca&sslrootcert={}",
        root.display()
    ))
    .is_ok());
    // What was written over TLS reads back.
    assert_eq!(open(&verified).unwrap().apps().unwrap().len(), 1);
}
