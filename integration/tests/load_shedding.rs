//! Control's API listener within its budgets (issue #28), over real TLS on loopback, each budget
//! attacked beside a positive control that shows the legitimate path still works:
//! - a peer that stalls its handshakes holds its address's share of turns, not all of them,
//!   and its other connections wait behind its own; connections past the turns in progress
//!   wait theirs (first come, first served), and one that waits past the queue's bound is
//!   closed, so its client goes to the next replica;
//! - a peer that holds connections open holds its address's share, not the whole cap;
//! - a replica at its watch stream budget answers 503 with Retry-After, and the agent's watch
//!   loop opens its stream on the next replica.
//!
//! The attackers connect from other loopback addresses (127.0.0.2, 127.0.0.3) than the
//! legitimate clients (127.0.0.1). Every "it waits" and "it holds" is first proved by control's
//! own gauges; no step is timed.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use c2c_api::client::{Auth, Client, ClientError};
use c2c_api::Revision;
use c2c_control::api::{self, Budget, Ctx, Signers};
use c2c_control::state::State;
use hyper::Method;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "t0ken";

/// One platform's files: its database and PKI.
struct Platform {
    dir: tempfile::TempDir,
    pki: c2c_certs::Pki,
}

/// A control replica serving the API on 127.0.0.1 until dropped.
struct Replica {
    url: String,
    addr: SocketAddr,
    ctx: Arc<Ctx>,
    stop: CancellationToken,
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Platform {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (pki, _) = c2c_certs::Pki::open_or_create(&dir.path().join("ca")).unwrap();
        Self { dir, pki }
    }

    /// A replica on this platform's database, within `budget`.
    async fn replica(&self, budget: Budget) -> Replica {
        let state = State::open(
            &self.dir.path().join("state.db"),
            ("10.255.0.0".parse().unwrap(), 16),
            60,
        )
        .unwrap();
        let (pki, _) = c2c_certs::Pki::open_or_create(&self.dir.path().join("ca")).unwrap();
        let ctx = Arc::new(
            Ctx::new(state, TOKEN.into())
                .unwrap()
                .with_signers(
                    Signers {
                        cells: pki.cells,
                        instances: pki.instances,
                        root_pem: pki.root.cert_pem().to_string(),
                    },
                    Duration::from_secs(3600),
                )
                .with_budget(budget),
        );
        let pair = self
            .pki
            .control
            .issue(&c2c_certs::LeafRequest {
                common_name: "c2c-control".into(),
                sans: c2c_certs::names::SanSet::new(["localhost"], ["127.0.0.1".parse().unwrap()])
                    .unwrap(),
                ttl: Duration::from_secs(3600),
                key: c2c_certs::ca::LeafKey::EcdsaP256,
                usage: c2c_certs::Usage::Server,
            })
            .unwrap();
        let tls = api::tls_config(
            self.pki.cells.cert_pem(),
            pair.cert_pem.as_bytes(),
            pair.key_pem.as_bytes(),
        )
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(api::serve(listener, tls, ctx.clone(), stop.clone()));
        Replica {
            url: format!("https://127.0.0.1:{}", addr.port()),
            addr,
            ctx,
            stop,
        }
    }

    fn control_ca(&self) -> Vec<u8> {
        self.pki.control.cert_pem().as_bytes().to_vec()
    }

    /// The admin's client of `urls`.
    fn admin(&self, urls: &str) -> Client {
        Client::new(urls, &self.control_ca(), Auth::Token(TOKEN.into())).unwrap()
    }

    /// Registers cell `name` through `admin`; its own client of `urls`.
    async fn cell(&self, admin: &Client, name: &str, urls: &str) -> Client {
        let (key, csr) = c2c_certs::ca::new_key_and_csr().unwrap();
        let signed = admin
            .call(
                Method::POST,
                "/v1/cells",
                Some(&json!({ "name": name, "csr": csr })),
            )
            .await
            .unwrap();
        let auth = Auth::ClientCert {
            cert_pem: signed["cert_pem"].as_str().unwrap().as_bytes().to_vec(),
            key_pem: key.into_bytes(),
        };
        Client::new(urls, &self.control_ca(), auth).unwrap()
    }

    /// `GET /health` over a TLS connection of its own from 127.0.0.1, with no timeout (it may
    /// wait its turn); the answer's status line.
    async fn health(&self, addr: SocketAddr) -> String {
        let config = c2c_integration::cli::tls_client(&self.control_ca());
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .unwrap();
        tls.write_all(b"GET /health HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        let _ = tls.read_to_string(&mut answer).await;
        answer.lines().next().unwrap_or_default().to_string()
    }
}

/// A TCP connection to `addr` from `source` that sends nothing: a handshake that never comes.
async fn stall(source: &str, addr: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::new(source.parse::<IpAddr>().unwrap(), 0))
        .unwrap();
    s.connect(addr).await.unwrap()
}

/// Whether control closed `conn` (it sent nothing, so control's close reads as an end).
async fn closed(mut conn: TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(conn.read(&mut b).await, Ok(0) | Err(_))
}

/// The value of metric `name` (with its labels, as encoded) on `r`, 0 if absent.
async fn metric(r: &Replica, name: &str) -> i64 {
    let text = c2c_control::metrics_http::encode(&r.ctx).await;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

/// Waits until metric `name` on `r` is `want`: proof that control has processed what came.
async fn until_metric(r: &Replica, name: &str, want: i64) {
    while metric(r, name).await != want {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

const IN_PROGRESS: &str = "c2c_control_handshakes_in_progress";
const WAITING: &str = "c2c_control_handshakes_waiting";

fn shed(reason: &str) -> String {
    format!("c2c_control_shed_total{{reason=\"{reason}\"}}")
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_peer_that_stalls_handshakes_holds_its_share_and_the_rest_wait_their_turn() {
    rt().block_on(async {
        let p = Platform::new();
        let a = p
            .replica(Budget {
                max_handshakes: 2,
                max_handshakes_per_source: 1,
                // Only the budgets hold a connection back here, never a clock.
                handshake: Duration::from_secs(3600),
                handshake_queue: Duration::from_secs(3600),
                ..Budget::default()
            })
            .await;
        // The attack: one address opens handshakes and never finishes them.
        let held = stall("127.0.0.2", a.addr).await;
        until_metric(&a, IN_PROGRESS, 1).await;
        // Its next one waits behind its own turn, not for the listener's free one.
        let behind = stall("127.0.0.2", a.addr).await;
        until_metric(&a, WAITING, 1).await;
        assert_eq!(metric(&a, IN_PROGRESS).await, 1);
        // Positive control: another address takes that free turn and is answered.
        assert!(p.health(a.addr).await.contains("200"));
        // A second stalling address takes the last turn: a client now waits for one, and is
        // neither closed nor answered before a turn is given back; then it is first in line.
        let other = stall("127.0.0.3", a.addr).await;
        until_metric(&a, IN_PROGRESS, 2).await;
        let waiting = {
            let addr = a.addr;
            let p = &p;
            async move { p.health(addr).await }
        };
        let (answer, ()) = tokio::join!(waiting, async {
            until_metric(&a, WAITING, 2).await;
            drop(held);
        });
        assert!(answer.contains("200"), "{answer}");
        // The stalling address's second connection got its turn only after.
        until_metric(&a, WAITING, 0).await;
        assert_eq!(metric(&a, IN_PROGRESS).await, 2);
        assert_eq!(metric(&a, &shed("handshake_queue")).await, 0);
        assert_eq!(metric(&a, &shed("handshakes_per_source")).await, 0);
        drop((behind, other));
    });
}

#[test]
fn a_connection_that_gets_no_turn_in_time_is_closed_and_its_client_goes_to_the_next_replica() {
    rt().block_on(async {
        let p = Platform::new();
        let a = p
            .replica(Budget {
                max_handshakes: 1,
                handshake: Duration::from_secs(3600),
                // No wait at all: past the turn in progress, a connection is closed.
                handshake_queue: Duration::ZERO,
                ..Budget::default()
            })
            .await;
        let b = p.replica(Budget::default()).await;
        let admin = p.admin(&format!("{},{}", a.url, b.url));
        // Positive control: with its turn free, A answers.
        admin.call(Method::GET, "/health", None).await.unwrap();
        assert_eq!(admin.url(), a.url);
        let held = stall("127.0.0.2", a.addr).await;
        until_metric(&a, IN_PROGRESS, 1).await;
        // A new connection (not the kept-alive one) finds no turn on A: closed, and B answers.
        let fresh = p.admin(&format!("{},{}", a.url, b.url));
        fresh.call(Method::GET, "/health", None).await.unwrap();
        assert_eq!(fresh.url(), b.url, "the client moved to the next replica");
        assert_eq!(metric(&a, &shed("handshake_queue")).await, 1);
        drop(held);
    });
}

#[test]
fn a_peer_that_holds_connections_open_holds_its_share_not_the_cap() {
    rt().block_on(async {
        let p = Platform::new();
        let a = p
            .replica(Budget {
                max_connections_per_source: 2,
                handshake: Duration::from_secs(3600),
                ..Budget::default()
            })
            .await;
        let first = stall("127.0.0.2", a.addr).await;
        let second = stall("127.0.0.2", a.addr).await;
        until_metric(&a, IN_PROGRESS, 2).await;
        let third = stall("127.0.0.2", a.addr).await;
        assert!(
            closed(third).await,
            "a connection past its address's share is closed"
        );
        assert_eq!(metric(&a, &shed("connections_per_source")).await, 1);
        // Positive control: another address is served.
        assert!(p.health(a.addr).await.contains("200"));
        drop((first, second));
    });
}

#[test]
fn a_replica_at_its_stream_budget_answers_503_and_the_agent_streams_from_the_next() {
    rt().block_on(async {
        let p = Platform::new();
        let a = p
            .replica(Budget {
                max_streams: 1,
                ..Budget::default()
            })
            .await;
        let admin = p.admin(&a.url);
        let cell1 = p.cell(&admin, "cell1", &a.url).await;
        let cell2_on_a = p.cell(&admin, "cell2", &a.url).await;
        // Positive control: within the budget, a stream opens and its first view comes.
        let mut first = cell1.watch_stream("cell1", Revision(0)).await.unwrap();
        assert!(first.next().await.unwrap().is_some());
        // Past it: 503, with the wait the agent honours.
        match cell2_on_a.watch_stream("cell2", Revision(0)).await {
            Err(ClientError::Busy {
                url, retry_after, ..
            }) => {
                assert_eq!(url, a.url);
                assert_eq!(retry_after, Budget::default().stream_retry_after);
            }
            Err(e) => panic!("expected a busy answer, got {e}"),
            Ok(_) => panic!("a stream past the budget was opened"),
        }
        assert_eq!(metric(&a, &shed("streams")).await, 1);
        // The agent's watch loop, given both replicas, streams from B instead.
        let b = p.replica(Budget::default()).await;
        let both = format!("{},{}", a.url, b.url);
        let cell2 = p.cell(&admin, "cell2b", &both).await;
        let stop = CancellationToken::new();
        let mut views = c2c_shim::control_link::spawn_watch(
            cell2,
            c2c_api::CellName::new("cell2b").unwrap(),
            stop.clone(),
        );
        assert!(views.recv().await.is_some(), "the agent got its view");
        assert_eq!(metric(&b, "c2c_control_watch_streams").await, 1);
        assert_eq!(metric(&a, &shed("streams")).await, 2);
        // A stream that ends gives its place back.
        drop(first);
        until_metric(&a, "c2c_control_watch_streams", 0).await;
        let mut again = cell2_on_a.watch_stream("cell2", Revision(0)).await.unwrap();
        assert!(again.next().await.unwrap().is_some());
        stop.cancel();
    });
}
