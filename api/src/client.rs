//! A small HTTPS JSON client for the control API, authenticating with the user's bearer token
//! or with a cell's client certificate. One connection per request: callers are a CLI and a
//! long-poll loop, neither of which benefits from pooling.

use std::sync::Arc;

use http_body_util::{BodyExt, Full};
pub use hyper::body::Bytes;
use hyper::Request;
pub use hyper::{HeaderMap, Method, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;

use std::net::Ipv4Addr;

use crate::paths;
use crate::policy::PolicyList;
use crate::types::{
    AppList, CellList, CellRecord, Changed, Confirm, CsrRequest, Empty, JoinRequest,
    JoinTokenCreated, JoinTokenRequest, Joined, LeaseRequest, NewApp, PlaceRequest, Placement,
    PlacementList, RegisterCell, Removed, RouteList, RouteRequest, Signed, TokenCreated,
    TokenRequest, UserList, UserRecord, WhoAmI,
};
use crate::{App, AppGuid, CellName, CellView, Instance, Lease, Policy, Revision, Route};

/// A streamed watch (see [`Client::watch_stream`]).
pub struct WatchStream {
    lines: tokio::io::BufReader<TokioIo<hyper::upgrade::Upgraded>>,
    url: String,
    line: String,
}

impl WatchStream {
    /// The URL of the replica this stream comes from.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The next view: `Ok(None)` for a heartbeat (nothing changed), `Ok(Some(view))` for a
    /// change, which may leave out parts (`unchanged`) to fill in from the previous view
    /// ([`CellView::merged`]); an error when the stream ended. Not cancellation-safe: read it
    /// from a task of its own.
    pub async fn next(&mut self) -> Result<Option<CellView>, ClientError> {
        let transport = |detail: String| ClientError::Transport {
            cause: TransportCause::Other,
            url: self.url.clone(),
            detail,
        };
        let line = read_line_capped(&mut self.lines, &mut self.line, MAX_WATCH_LINE)
            .await
            .map_err(|e| transport(format!("watch stream: {e}")))?;
        let view = match line {
            None => return Err(transport("watch stream ended".into())),
            Some(l) if l.trim().is_empty() => return Ok(None),
            Some(l) => serde_json::from_str(l)
                .map(Some)
                .map_err(|e| transport(format!("watch stream line is not a view: {e}"))),
        };
        // The first line is a whole view: its buffer is not kept for the deltas after it.
        if self.line.capacity() > KEPT_LINE_CAPACITY {
            self.line = String::new();
        }
        view
    }
}

/// The longest line a watch stream may send: far past any platform's whole view, short of
/// what would exhaust a cell's memory.
const MAX_WATCH_LINE: usize = 256 << 20;
/// A line buffer larger than this is freed after its line.
const KEPT_LINE_CAPACITY: usize = 1 << 20;

/// Reads one line (with its newline) into `line`, at most `max` bytes: `None` at the end of
/// the stream, an error for a longer line or one cut off by the end.
async fn read_line_capped<'l, R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    line: &'l mut String,
    max: usize,
) -> std::io::Result<Option<&'l str>> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    line.clear();
    let n = r.take(max as u64).read_line(line).await?;
    if n == 0 {
        return Ok(None);
    }
    if !line.ends_with('\n') {
        let why = if n >= max {
            format!("a line longer than {max} bytes")
        } else {
            "the stream ended inside a line".to_string()
        };
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, why));
    }
    Ok(Some(line.as_str()))
}

#[cfg(test)]
mod line_tests {
    use super::read_line_capped;

    #[tokio::test]
    async fn lines_are_read_whole_and_a_longer_one_is_refused_not_buffered() {
        let mut line = String::new();
        let mut r: &[u8] = b"{\"a\":1}\n\nabcdefghij\n";
        assert_eq!(
            read_line_capped(&mut r, &mut line, 16).await.unwrap(),
            Some("{\"a\":1}\n")
        );
        assert_eq!(
            read_line_capped(&mut r, &mut line, 16).await.unwrap(),
            Some("\n")
        );
        // The attack: a line past the cap is an error after reading the cap, not the line.
        let e = read_line_capped(&mut r, &mut line, 5).await.unwrap_err();
        assert!(e.to_string().contains("longer than 5 bytes"), "{e}");
        assert!(line.len() <= 5);
        let mut cut: &[u8] = b"partial";
        let e = read_line_capped(&mut cut, &mut line, 16).await.unwrap_err();
        assert!(e.to_string().contains("ended inside a line"), "{e}");
        let mut done: &[u8] = b"";
        assert_eq!(
            read_line_capped(&mut done, &mut line, 16).await.unwrap(),
            None
        );
    }
}

/// How the client proves who it is.
pub enum Auth {
    /// `Authorization: Bearer <token>` (the external API).
    Token(String),
    /// A client certificate chain and key, PEM (the cell API).
    ClientCert {
        /// Leaf first.
        cert_pem: Vec<u8>,
        /// Its key.
        key_pem: Vec<u8>,
    },
}

/// A request failed before an HTTP answer came back, or the answer was not a success.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No control plane has run for this state dir (its URL file is missing).
    #[error("no control plane runs for state dir {0} (no {1}): start a local platform with `c2c up --state-dir {0}`, or control alone with `c2c control serve --state-dir {0}`; or point --state-dir / C2C_STATE_DIR at the platform you mean; from a machine that runs no control, give --control URL[,URL...] --control-ca FILE --token-file FILE (C2C_CONTROL, C2C_CONTROL_CA, C2C_TOKEN_FILE)", .dir.display(), .url_file.display())]
    NoControl {
        /// The state dir.
        dir: std::path::PathBuf,
        /// The URL file it lacks.
        url_file: std::path::PathBuf,
    },
    /// A file of the state dir could not be read.
    // The cause is the error's source, which a chain printer (`{:#}`) adds once.
    #[error("reading {what} {}", .path.display())]
    Read {
        /// What the file is.
        what: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The URL is not `https://host:port`.
    #[error("control URL {0:?} must look like https://HOST:PORT")]
    BadUrl(String),
    /// The CA or client cert could not be read.
    #[error("TLS setup: {0}")]
    Tls(String),
    /// Connecting or talking to the API failed.
    #[error("control API at {url}: {detail}")]
    Transport {
        /// The API URL.
        url: String,
        /// What kind of failure, for a caller that acts on it (a hint, a retry).
        cause: TransportCause,
        /// What went wrong.
        detail: String,
    },
    /// The replica at `url` is at a budget (503 with `Retry-After`): the caller should go to
    /// another replica, or come back here after `retry_after`.
    #[error("control API at {url} is busy: {message} (retry after {}s)", .retry_after.as_secs())]
    Busy {
        /// The replica's URL.
        url: String,
        /// What its `Retry-After` said.
        retry_after: std::time::Duration,
        /// The API's `error` text.
        message: String,
    },
    /// The API answered with an error status.
    #[error("{message} ({status})")]
    Status {
        /// The HTTP status.
        status: StatusCode,
        /// The API's `error` text, or the body.
        message: String,
    },
}

/// Why a connection to control failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportCause {
    /// Nothing listens there (a reset to the connect): control is not running.
    Refused,
    /// No answer in time (a silent host, a partition, a request never answered).
    Timeout,
    /// The TLS handshake failed (another issuer, a name the certificate does not hold).
    Tls,
    /// Anything else (a closed connection, a bad answer).
    Other,
}

impl ClientError {
    /// Whether the API answered 404 (no such app, instance or cell).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ClientError::Status { status, .. } if *status == StatusCode::NOT_FOUND)
    }
}

/// How long connecting to one control replica and completing the TLS handshake may take
/// before the next replica is tried (issue #30: a silent replica stalled the CLI for over 60 s).
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// How long a replica may take to answer a request on a connection it took (a long-poll's own
/// wait added): past it, the replica is taken for silent, the next request goes to the next
/// one, and this one fails with a transport error (which callers that loop retry).
pub const RESPONSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The control issuer a CLI trusts: the file [`CONTROL_CA_ENV`] names, else the state dir's.
pub fn control_issuer_path(state_dir: &std::path::Path) -> std::path::PathBuf {
    std::env::var(CONTROL_CA_ENV)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| crate::layout::Layout::new(state_dir).control_issuer())
}

/// Makes the TCP connection to control (`host`, `port`) for a client whose control plane is not
/// reachable from this process's network namespace; blocking is fine.
pub type Connector = Arc<dyn Fn(&str, u16) -> std::io::Result<std::net::TcpStream> + Send + Sync>;

/// `GET /v1/whoami`: CF's whoami answer with the token's scope.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WhoAmIScope {
    /// The user.
    #[serde(flatten)]
    pub who: WhoAmI,
    /// The token's scope.
    pub scope: crate::types::Scope,
}

/// The environment variable whose token, when set, the CLI uses instead of the state dir's.
pub const TOKEN_ENV: &str = "C2C_TOKEN";
/// A file holding the token (read when [`TOKEN_ENV`] is not set), instead of the state dir's.
pub const TOKEN_FILE_ENV: &str = "C2C_TOKEN_FILE";
/// Control's URL, or several replicas' separated by commas, instead of the state dir's
/// `control/url`: how an operator's machine, which runs no control, reaches it.
pub const CONTROL_ENV: &str = "C2C_CONTROL";
/// The control issuer's certificate (PEM file: a control host's `ca/control/ca.pem`, or a
/// joined cell's `control-ca.pem`), instead of the state dir's.
pub const CONTROL_CA_ENV: &str = "C2C_CONTROL_CA";

/// A connection's sending half.
type Idle = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// One control replica.
#[derive(Debug, Clone)]
struct Endpoint {
    url: String,
    host: String,
    port: u16,
}

impl Endpoint {
    /// One URL, or several separated by commas.
    fn list(urls: &str) -> Result<Vec<Self>, ClientError> {
        let endpoints = urls
            .split(',')
            .filter(|u| !u.trim().is_empty())
            .map(Endpoint::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if endpoints.is_empty() {
            return Err(ClientError::BadUrl(urls.to_string()));
        }
        Ok(endpoints)
    }

    fn parse(url: &str) -> Result<Self, ClientError> {
        let bad = || ClientError::BadUrl(url.to_string());
        let hostport = url.trim().strip_prefix("https://").ok_or_else(bad)?;
        let (host, port) = hostport
            .trim_end_matches('/')
            .rsplit_once(':')
            .ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        Ok(Endpoint {
            url: url.trim().trim_end_matches('/').to_string(),
            host: host.trim_matches(['[', ']']).to_string(),
            port,
        })
    }
}

/// A client of one control API (one or several replicas of it).
#[derive(Clone)]
pub struct Client {
    /// Every replica's endpoint; requests go to `current` and move on when it cannot be
    /// reached.
    endpoints: Arc<Vec<Endpoint>>,
    current: Arc<std::sync::atomic::AtomicUsize>,
    /// A kept-alive connection and the replica it goes to.
    idle: Arc<std::sync::Mutex<Option<(Idle, Endpoint)>>>,
    token: Option<String>,
    tls: Arc<rustls::ClientConfig>,
    connector: Option<Connector>,
    /// [`RESPONSE_TIMEOUT`], plus the wait of a long-poll.
    response_timeout: std::time::Duration,
}

impl Client {
    /// A client of the API at `url` (`https://HOST:PORT`, or several replicas' URLs separated
    /// by commas: a request goes to the one that answered last, and to the next when that one
    /// cannot be reached) trusting `ca_pem`.
    pub fn new(url: &str, ca_pem: &[u8], auth: Auth) -> Result<Self, ClientError> {
        let endpoints = Endpoint::list(url)?;
        let tls_err = |e: &dyn std::fmt::Display| ClientError::Tls(e.to_string());
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca_pem) {
            roots
                .add(c.map_err(|e| tls_err(&e))?)
                .map_err(|e| tls_err(&e))?;
        }
        if roots.is_empty() {
            return Err(ClientError::Tls("the CA file holds no certificate".into()));
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(&e))?
        .with_root_certificates(roots);
        let (tls, token) = match auth {
            Auth::Token(t) => (builder.with_no_client_auth(), Some(t)),
            Auth::ClientCert { cert_pem, key_pem } => {
                let chain = CertificateDer::pem_slice_iter(&cert_pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| tls_err(&e))?;
                let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| tls_err(&e))?;
                (
                    builder
                        .with_client_auth_cert(chain, key)
                        .map_err(|e| tls_err(&e))?,
                    None,
                )
            }
        };
        Ok(Self {
            endpoints: Arc::new(endpoints),
            current: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            idle: Arc::default(),
            token,
            tls: Arc::new(tls),
            connector: None,
            response_timeout: RESPONSE_TIMEOUT,
        })
    }

    /// A client with no CA file and no credential, for a host joining the platform: it trusts
    /// control only if control's chain holds the issuer whose SHA-256 is `issuer_sha256` (the
    /// pin in a join token).
    pub fn pinned(url: &str, issuer_sha256: &str) -> Result<Self, ClientError> {
        let endpoints = Endpoint::list(url)?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Tls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(crate::pin::PinnedIssuer::new(
                issuer_sha256,
                provider,
            )))
            .with_no_client_auth();
        Ok(Self {
            endpoints: Arc::new(endpoints),
            current: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            idle: Arc::default(),
            token: None,
            tls: Arc::new(tls),
            connector: None,
            response_timeout: RESPONSE_TIMEOUT,
        })
    }

    /// The client a CLI uses: the URL, the control issuer (the only anchor trusted for
    /// control: no other certificate of the platform can stand in for it and be handed the
    /// token) and the token from the state dir `dir`. (The local platform, whose control is
    /// reachable only inside a namespace, adds its own [`Connector`].)
    pub fn from_state_dir(dir: &std::path::Path) -> Result<Self, ClientError> {
        let l = crate::layout::Layout::new(dir);
        let read = |what: &'static str, path: std::path::PathBuf| {
            std::fs::read(&path).map_err(|source| ClientError::Read { what, path, source })
        };
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        // An operator's machine names control, its issuer and the token itself (flags or the
        // environment); a control host's state dir holds all three.
        let url = match env(CONTROL_ENV) {
            Some(url) => url,
            None => match std::fs::read_to_string(l.url()) {
                // The other replicas, if any, after this state dir's own.
                Ok(url) => std::iter::once(url.trim().to_string())
                    .chain(
                        std::fs::read_to_string(l.replica_urls())
                            .unwrap_or_default()
                            .lines()
                            .map(str::trim)
                            .filter(|u| !u.is_empty())
                            .map(str::to_string),
                    )
                    .collect::<Vec<_>>()
                    .join(","),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(ClientError::NoControl {
                        dir: dir.to_path_buf(),
                        url_file: l.url(),
                    })
                }
                Err(source) => {
                    return Err(ClientError::Read {
                        what: "the control URL",
                        path: l.url(),
                        source,
                    })
                }
            },
        };
        // A user's token (`c2c token create`) in the environment or a file, else the state
        // dir's admin token.
        let token = match (env(TOKEN_ENV), env(TOKEN_FILE_ENV)) {
            (Some(t), _) => t.trim().to_string(),
            (None, Some(f)) => String::from_utf8_lossy(&read("the API token", f.into())?)
                .trim()
                .to_string(),
            (None, None) => String::from_utf8_lossy(&read("the API token", l.token())?)
                .trim()
                .to_string(),
        };
        let ca = read("the control issuer", control_issuer_path(dir))?;
        let client = Client::new(&url, &ca, Auth::Token(token))?;
        Ok(client)
    }

    /// Connects through `connector` instead of from this process's own network namespace.
    pub fn with_connector(mut self, connector: Connector) -> Self {
        self.connector = Some(connector);
        self
    }

    async fn connect(&self, e: &Endpoint) -> std::io::Result<TcpStream> {
        let Some(connector) = self.connector.clone() else {
            return TcpStream::connect((e.host.as_str(), e.port)).await;
        };
        let (host, port) = (e.host.clone(), e.port);
        // The connector may block (it may enter a namespace on a thread of its own).
        let std = tokio::task::spawn_blocking(move || connector(&host, port))
            .await
            .map_err(|_| std::io::Error::other("connect task died"))??;
        std.set_nonblocking(true)?;
        TcpStream::from_std(std)
    }

    /// A TLS connection to the first replica that takes one, starting at the current one.
    async fn open(
        &self,
    ) -> Result<(tokio_rustls::client::TlsStream<TcpStream>, Endpoint), ClientError> {
        use std::sync::atomic::Ordering;
        let n = self.endpoints.len();
        let start = self.current.load(Ordering::Relaxed);
        let mut errors = vec![];
        for i in 0..n {
            let idx = (start + i) % n;
            let e = &self.endpoints[idx];
            let attempt = async {
                let tcp = self.connect(e).await.map_err(|e| {
                    let cause = match e.kind() {
                        std::io::ErrorKind::ConnectionRefused => TransportCause::Refused,
                        std::io::ErrorKind::TimedOut => TransportCause::Timeout,
                        _ => TransportCause::Other,
                    };
                    (cause, format!("connect: {e}"))
                })?;
                let _ = tcp.set_nodelay(true);
                let name = ServerName::try_from(e.host.clone())
                    .map_err(|e| (TransportCause::Other, e.to_string()))?;
                tokio_rustls::TlsConnector::from(self.tls.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| (TransportCause::Tls, format!("TLS: {e}")))
            };
            // A replica that went silent (a powered-off host, a partition: packets dropped, no
            // reset) would hold the caller for as long as the kernel retries; the next replica
            // is tried instead.
            let attempt = async {
                tokio::time::timeout(CONNECT_TIMEOUT, attempt)
                    .await
                    .unwrap_or_else(|_| {
                        Err((
                            TransportCause::Timeout,
                            format!(
                                "no answer within {CONNECT_TIMEOUT:?} (connect and TLS handshake)"
                            ),
                        ))
                    })
            };
            match attempt.await {
                Ok(tls) => {
                    if idx != start {
                        self.current.store(idx, Ordering::Relaxed);
                        tracing::info!(url = %e.url, "control replica unreachable; using the next");
                    }
                    return Ok((tls, e.clone()));
                }
                Err(detail) => errors.push((e.url.clone(), detail)),
            }
        }
        // One cause when every replica failed the same way; else Other.
        let cause = match errors.first() {
            Some((_, (c, _))) if errors.iter().all(|(_, (d, _))| d == c) => *c,
            _ => TransportCause::Other,
        };
        let (url, detail) = if errors.len() == 1 {
            let (u, (_, d)) = errors.remove(0);
            (u, d)
        } else {
            let all: Vec<String> = errors
                .iter()
                .map(|(u, (_, d))| format!("{u}: {d}"))
                .collect();
            (self.url().to_string(), all.join("; "))
        };
        Err(ClientError::Transport { url, cause, detail })
    }

    /// Takes the replica at `url` for silent: if requests go to it now, they go to the next one
    /// from here on (a watch stream that stopped hearing from it, a request it never answered).
    pub fn demote(&self, url: &str) {
        use std::sync::atomic::Ordering;
        let n = self.endpoints.len();
        let i = self.current.load(Ordering::Relaxed) % n;
        if n > 1
            && self.endpoints[i].url == url
            && self
                .current
                .compare_exchange(i, (i + 1) % n, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            // A kept-alive connection to it would be tried first otherwise.
            if let Ok(mut idle) = self.idle.lock() {
                if idle.as_ref().is_some_and(|(_, e)| e.url == url) {
                    *idle = None;
                }
            }
            tracing::info!(silent = url, next = %self.endpoints[(i + 1) % n].url, "control replica silent; using the next");
        }
    }

    /// How many replicas this client knows.
    pub fn replicas(&self) -> usize {
        self.endpoints.len()
    }

    /// The URL of the replica requests go to now.
    pub fn url(&self) -> &str {
        let i = self.current.load(std::sync::atomic::Ordering::Relaxed);
        &self.endpoints[i % self.endpoints.len()].url
    }

    /// Sends one request as given (the token is added unless `headers` has an
    /// `authorization`); returns the answer's status, headers and body.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        headers: &[(String, String)],
        body: Bytes,
    ) -> Result<(StatusCode, hyper::HeaderMap, Bytes), ClientError> {
        let build = |endpoint: &Endpoint| {
            let mut req = Request::builder().method(method.clone()).uri(path).header(
                hyper::header::HOST,
                format!("{}:{}", endpoint.host, endpoint.port),
            );
            let has_auth = headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("authorization"));
            if let (Some(t), false) = (&self.token, has_auth) {
                req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
            }
            for (k, v) in headers {
                req = req.header(k.as_str(), v.as_str());
            }
            req.body(Full::new(body.clone()))
                .map_err(|e| ClientError::Transport {
                    cause: TransportCause::Other,
                    url: endpoint.url.clone(),
                    detail: e.to_string(),
                })
        };
        // The replica the request went to, for when it never answers.
        let sent_to: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);
        let exchange = async {
            // A kept-alive connection first (a watch a second after the last one should not cost a
            // TLS handshake); if it turns out closed before the request went out, a new one.
            let kept = self.idle.lock().ok().and_then(|mut i| i.take());
            let (mut send, endpoint, resp) = 'sent: {
                if let Some((mut send, endpoint)) = kept {
                    if let Ok(mut to) = sent_to.lock() {
                        *to = Some(endpoint.url.clone());
                    }
                    if send.ready().await.is_ok() {
                        match send.try_send_request(build(&endpoint)?).await {
                            Ok(resp) => break 'sent (send, endpoint, resp),
                            // Not sent: safe to send on a fresh connection.
                            Err(e) if e.message().is_some() => {}
                            Err(e) => {
                                return Err(ClientError::Transport {
                                    cause: TransportCause::Other,
                                    url: endpoint.url.clone(),
                                    detail: e.into_error().to_string(),
                                })
                            }
                        }
                    }
                }
                let (tls, endpoint) = self.open().await?;
                if let Ok(mut to) = sent_to.lock() {
                    *to = Some(endpoint.url.clone());
                }
                let transport = |detail: String| ClientError::Transport {
                    cause: TransportCause::Other,
                    url: endpoint.url.clone(),
                    detail,
                };
                let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                    .await
                    .map_err(|e| transport(e.to_string()))?;
                tokio::spawn(conn);
                let resp = send
                    .send_request(build(&endpoint)?)
                    .await
                    .map_err(|e| transport(e.to_string()))?;
                (send, endpoint, resp)
            };
            let (status, resp_headers) = (resp.status(), resp.headers().clone());
            let raw = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| ClientError::Transport {
                    cause: TransportCause::Other,
                    url: endpoint.url.clone(),
                    detail: e.to_string(),
                })?
                .to_bytes();
            if send.ready().await.is_ok() {
                if let Ok(mut i) = self.idle.lock() {
                    *i = Some((send, endpoint));
                }
            }
            Ok((status, resp_headers, raw))
        };
        match tokio::time::timeout(self.response_timeout, exchange).await {
            Ok(r) => r,
            Err(_) => {
                let url = sent_to
                    .lock()
                    .ok()
                    .and_then(|mut u| u.take())
                    .unwrap_or_else(|| self.url().to_string());
                self.demote(&url);
                Err(ClientError::Transport {
                    cause: TransportCause::Timeout,
                    url,
                    detail: format!("no answer within {:?}", self.response_timeout),
                })
            }
        }
    }

    /// Sends one request; returns the status and the body as JSON (a JSON string if it is not).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(StatusCode, serde_json::Value), ClientError> {
        let headers = [("content-type".to_string(), "application/json".to_string())];
        let body = Bytes::from(body.map(|b| b.to_string()).unwrap_or_default());
        let (status, _, raw) = self.raw(method, path, &headers, body).await?;
        let json = serde_json::from_slice(&raw).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&raw).into_owned())
        });
        Ok((status, json))
    }

    /// Like [`request`](Self::request), but a non-2xx answer is an error with the API's message.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, ClientError> {
        let (status, json) = self.request(method, path, body).await?;
        if !status.is_success() {
            let message = json
                .get("error")
                .and_then(|e| e.as_str())
                .map(str::to_string)
                .unwrap_or_else(|| json.to_string());
            return Err(ClientError::Status { status, message });
        }
        Ok(json)
    }

    /// [`call`](Self::call), decoding the answer.
    pub async fn call_as<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T, ClientError> {
        let v = self.call(method, path, body).await?;
        serde_json::from_value(v).map_err(|e| ClientError::Transport {
            cause: TransportCause::Other,
            url: self.url().to_string(),
            detail: format!("unexpected answer to {path}: {e}"),
        })
    }

    /// [`call_as`](Self::call_as) with a typed body.
    async fn send<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_value(body).map_err(|e| ClientError::Transport {
            cause: TransportCause::Other,
            url: self.url().to_string(),
            detail: format!("encoding the request to {path}: {e}"),
        })?;
        self.call_as(method, path, Some(&body)).await
    }

    // The external API (a user's token).

    /// Who this client's token speaks for, and its scope.
    pub async fn whoami(&self) -> Result<WhoAmIScope, ClientError> {
        self.call_as(Method::GET, paths::WHOAMI, None).await
    }

    /// Makes a token (admin only); the answer holds it, shown this once.
    pub async fn create_token(&self, req: &TokenRequest) -> Result<TokenCreated, ClientError> {
        self.send(Method::POST, paths::TOKENS, req).await
    }

    /// A one-time join token for a new cell, valid for `ttl` (admin only).
    pub async fn create_join_token(
        &self,
        ttl: std::time::Duration,
        cell: Option<&str>,
    ) -> Result<JoinTokenCreated, ClientError> {
        self.send(
            Method::POST,
            paths::JOIN_TOKENS,
            &JoinTokenRequest {
                ttl_secs: ttl.as_secs().max(1),
                cell: cell.map(str::to_string),
            },
        )
        .await
    }

    /// The join tokens (admin only): ids, bindings, expiry and use, never secrets.
    pub async fn join_tokens(&self) -> Result<Vec<crate::types::JoinTokenRecord>, ClientError> {
        Ok(self
            .call_as::<crate::types::JoinTokenList>(Method::GET, paths::JOIN_TOKENS, None)
            .await?
            .join_tokens)
    }

    /// Revokes the unused join token `id` (admin only); false if none was.
    pub async fn revoke_join_token(&self, id: &str) -> Result<bool, ClientError> {
        Ok(self
            .call_as::<crate::types::Removed>(Method::DELETE, &paths::join_token(id), None)
            .await?
            .removed)
    }

    /// Joins the platform as a new cell (a [`Client::pinned`] client, with the token's secret).
    pub async fn join(&self, req: &JoinRequest) -> Result<Joined, ClientError> {
        self.send(Method::POST, paths::JOIN, req).await
    }

    /// Revokes every token of `user` (admin only).
    pub async fn revoke_tokens(&self, user: &str) -> Result<(), ClientError> {
        self.call(Method::DELETE, &paths::user_tokens(user), None)
            .await
            .map(drop)
    }

    /// Users with tokens (admin only).
    pub async fn users(&self) -> Result<Vec<UserRecord>, ClientError> {
        Ok(self
            .call_as::<UserList>(Method::GET, paths::TOKENS, None)
            .await?
            .users)
    }

    /// An app, by name or GUID.
    pub async fn app(&self, name: &str) -> Result<App, ClientError> {
        self.call_as(Method::GET, &paths::app(name), None).await
    }

    /// Changes what an app's sidecar does; returns the app as it now is.
    pub async fn update_app(
        &self,
        name: &str,
        settings: &crate::types::AppSettings,
    ) -> Result<App, ClientError> {
        let body = serde_json::to_value(settings).unwrap_or_default();
        self.call_as(Method::PUT, &paths::app_settings(name), Some(&body))
            .await
    }

    /// Every app.
    pub async fn apps(&self) -> Result<Vec<App>, ClientError> {
        Ok(self
            .call_as::<AppList>(Method::GET, paths::APPS, None)
            .await?
            .apps)
    }

    /// Creates an app in the default space.
    pub async fn create_app(&self, name: &str) -> Result<App, ClientError> {
        self.create_app_in(name, None).await
    }

    /// Creates an app in `(org, space)`, or the default space.
    pub async fn create_app_in(
        &self,
        name: &str,
        space: Option<(&str, &str)>,
    ) -> Result<App, ClientError> {
        self.send(
            Method::POST,
            paths::APPS,
            &NewApp {
                name: name.to_string(),
                org: space.map(|s| s.0.to_string()),
                space: space.map(|s| s.1.to_string()),
            },
        )
        .await
    }

    /// Creates an org.
    pub async fn create_org(&self, name: &str) -> Result<crate::asg::Org, ClientError> {
        self.send(
            Method::POST,
            paths::ORGS,
            &crate::types::NewOrg { name: name.into() },
        )
        .await
    }

    /// Every org.
    pub async fn orgs(&self) -> Result<Vec<crate::asg::Org>, ClientError> {
        Ok(self
            .call_as::<crate::types::OrgList>(Method::GET, paths::ORGS, None)
            .await?
            .orgs)
    }

    /// Creates a space in an org.
    pub async fn create_space(
        &self,
        org: &str,
        name: &str,
    ) -> Result<crate::asg::Space, ClientError> {
        self.send(
            Method::POST,
            paths::SPACES,
            &crate::types::NewSpace {
                org: org.into(),
                name: name.into(),
            },
        )
        .await
    }

    /// Every space (of one org).
    pub async fn spaces(&self, org: Option<&str>) -> Result<Vec<crate::asg::Space>, ClientError> {
        let path = match org {
            Some(o) => format!("{}?org={}", paths::SPACES, crate::path_segment(o)),
            None => paths::SPACES.to_string(),
        };
        Ok(self
            .call_as::<crate::types::SpaceList>(Method::GET, &path, None)
            .await?
            .spaces)
    }

    /// Every space's quota and what it holds (admin).
    pub async fn space_quotas(&self) -> Result<Vec<crate::types::SpaceQuota>, ClientError> {
        Ok(self
            .call_as::<crate::types::SpaceQuotaList>(Method::GET, paths::SPACE_QUOTAS, None)
            .await?
            .quotas)
    }

    /// Sets a space's quota (admin); a limit left `None` keeps its value.
    pub async fn set_space_quota(
        &self,
        q: &crate::types::SetSpaceQuota,
    ) -> Result<crate::types::SpaceQuota, ClientError> {
        self.send(Method::PUT, paths::SPACE_QUOTAS, q).await
    }

    /// Creates a security group; `rules` is CF's JSON, validated by control.
    pub async fn create_security_group(
        &self,
        name: &str,
        rules: serde_json::Value,
    ) -> Result<crate::asg::SecurityGroup, ClientError> {
        self.send(
            Method::POST,
            paths::SECURITY_GROUPS,
            &crate::types::NewSecurityGroup {
                name: name.into(),
                rules,
            },
        )
        .await
    }

    /// Replaces a security group's rules.
    pub async fn update_security_group(
        &self,
        name: &str,
        rules: serde_json::Value,
    ) -> Result<crate::asg::SecurityGroup, ClientError> {
        self.send(
            Method::PUT,
            &paths::security_group(name),
            &crate::types::NewSecurityGroup {
                name: name.into(),
                rules,
            },
        )
        .await
    }

    /// Deletes a security group; `Ok(false)` if there was none.
    pub async fn delete_security_group(&self, name: &str) -> Result<bool, ClientError> {
        match self
            .call(Method::DELETE, &paths::security_group(name), None)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// One security group with its bindings.
    pub async fn security_group(
        &self,
        name: &str,
    ) -> Result<crate::asg::SecurityGroup, ClientError> {
        self.call_as(Method::GET, &paths::security_group(name), None)
            .await
    }

    /// Every security group with its bindings.
    pub async fn security_groups(&self) -> Result<Vec<crate::asg::SecurityGroup>, ClientError> {
        Ok(self
            .call_as::<crate::types::SecurityGroupList>(Method::GET, paths::SECURITY_GROUPS, None)
            .await?
            .security_groups)
    }

    /// Binds (`bind` true) or unbinds a security group.
    pub async fn bind_security_group(
        &self,
        name: &str,
        request: &crate::types::BindingRequest,
        bind: bool,
    ) -> Result<crate::types::BindingChanged, ClientError> {
        let path = if bind {
            paths::security_group_bindings(name)
        } else {
            format!("{}/delete", paths::security_group_bindings(name))
        };
        self.send(Method::POST, &path, request).await
    }

    /// Deletes an app with its instances and policies.
    pub async fn delete_app(&self, name: &str) -> Result<(), ClientError> {
        self.call(Method::DELETE, &paths::app(name), None)
            .await
            .map(drop)
    }

    /// Adds policies (CF's external API).
    pub async fn add_policies(&self, policies: &[Policy]) -> Result<(), ClientError> {
        self.send::<_, Empty>(Method::POST, paths::POLICIES, &PolicyList::of(policies))
            .await
            .map(drop)
    }

    /// Removes policies (CF's external API).
    pub async fn remove_policies(&self, policies: &[Policy]) -> Result<(), ClientError> {
        self.send::<_, Empty>(
            Method::POST,
            paths::POLICIES_DELETE,
            &PolicyList::of(policies),
        )
        .await
        .map(drop)
    }

    /// Policies, all or those whose source or destination is one of `ids` (app GUIDs).
    pub async fn policies(&self, ids: Option<&[AppGuid]>) -> Result<Vec<Policy>, ClientError> {
        let path = match ids {
            Some(ids) => paths::policies_of(ids),
            None => paths::POLICIES.to_string(),
        };
        let list: PolicyList = self.call_as(Method::GET, &path, None).await?;
        list.policies
            .unwrap_or_default()
            .iter()
            .map(|p| {
                crate::policy::validate_listed(p).map_err(|e| ClientError::Transport {
                    cause: TransportCause::Other,
                    url: self.url().to_string(),
                    detail: format!("unexpected policy in the list: {e}"),
                })
            })
            .collect()
    }

    /// Maps (or with `unmap`, unmaps) an internal route; true if that changed anything.
    pub async fn route(&self, r: &RouteRequest, unmap: bool) -> Result<bool, ClientError> {
        let path = if unmap {
            paths::ROUTES_DELETE
        } else {
            paths::ROUTES
        };
        Ok(self
            .send::<_, Changed>(Method::POST, path, r)
            .await?
            .changed)
    }

    /// Every internal route.
    pub async fn routes(&self) -> Result<Vec<Route>, ClientError> {
        Ok(self
            .call_as::<RouteList>(Method::GET, paths::ROUTES, None)
            .await?
            .routes)
    }

    /// Places an instance of `app` on `cell` (the scheduler's call); control makes its GUID.
    pub async fn place(
        &self,
        app: &str,
        cell: &CellName,
        index: Option<u32>,
    ) -> Result<Placement, ClientError> {
        self.place_by(app, cell, index, None).await
    }

    /// [`Client::place`], saying what will run the instance (`c2c apps` shows it).
    pub async fn place_by(
        &self,
        app: &str,
        cell: &CellName,
        index: Option<u32>,
        runtime: Option<&str>,
    ) -> Result<Placement, ClientError> {
        let req = PlaceRequest {
            cell: cell.clone(),
            index,
            runtime: runtime.map(str::to_string),
        };
        self.send(Method::POST, &paths::app_instances(app), &req)
            .await
    }

    /// Removes a placed instance; true if it existed.
    pub async fn remove_instance(&self, guid: &str) -> Result<bool, ClientError> {
        Ok(self
            .call_as::<Removed>(Method::DELETE, &paths::instance(guid), None)
            .await?
            .removed)
    }

    /// Every placed instance.
    pub async fn instances(&self) -> Result<Vec<Placement>, ClientError> {
        Ok(self
            .call_as::<PlacementList>(Method::GET, paths::INSTANCES, None)
            .await?
            .instances)
    }

    /// Registers cell `name` with a CSR for its key; returns its certificate chain.
    pub async fn register_cell(&self, name: &CellName, csr: &str) -> Result<Signed, ClientError> {
        let req = RegisterCell {
            name: name.clone(),
            csr: csr.to_string(),
        };
        self.send(Method::POST, paths::CELLS, &req).await
    }

    /// Revokes cell `name`.
    pub async fn remove_cell(&self, name: &str) -> Result<(), ClientError> {
        self.call(Method::DELETE, &paths::cell(name), None)
            .await
            .map(drop)
    }

    /// Every registered cell.
    pub async fn cells(&self) -> Result<Vec<CellRecord>, ClientError> {
        Ok(self
            .call_as::<CellList>(Method::GET, paths::CELLS, None)
            .await?
            .cells)
    }

    // The cell API (a cell's client certificate).

    /// Acquires (or re-acquires) `cell`'s lease.
    pub async fn acquire_lease(
        &self,
        cell: &str,
        underlay_ip: Ipv4Addr,
    ) -> Result<Lease, ClientError> {
        self.acquire_lease_preferring(cell, underlay_ip, None).await
    }

    /// Acquires `cell`'s lease, asking for `prefer` (the subnet it held) if it is free.
    pub async fn acquire_lease_preferring(
        &self,
        cell: &str,
        underlay_ip: Ipv4Addr,
        prefer: Option<crate::net::Subnet>,
    ) -> Result<Lease, ClientError> {
        self.send(
            Method::POST,
            &paths::lease(cell),
            &LeaseRequest {
                underlay_ip,
                prefer,
            },
        )
        .await
    }

    /// Renews `cell`'s lease.
    pub async fn renew_lease(&self, cell: &str) -> Result<Lease, ClientError> {
        self.call_as(Method::PUT, &paths::lease(cell), None).await
    }

    /// Reports the cell's flows since its last report (the cell's identity).
    pub async fn push_flows(
        &self,
        cell: &str,
        batch: &crate::types::FlowBatch,
    ) -> Result<(), ClientError> {
        self.send::<_, serde_json::Value>(Method::POST, &paths::cell_flows(cell), batch)
            .await
            .map(drop)
    }

    /// The flows this replica holds that the caller may read.
    pub async fn flows(
        &self,
        q: &crate::types::FlowQuery,
    ) -> Result<crate::types::FlowList, ClientError> {
        let path = format!("{}{}", paths::FLOWS, q.query_string());
        self.call_as(Method::GET, &path, None).await
    }

    /// A client of each replica alone (the same credential), for what each replica holds of its
    /// own (flows the cells reported to it).
    pub fn each_replica(&self) -> Vec<Client> {
        self.endpoints
            .iter()
            .map(|e| Client {
                endpoints: Arc::new(vec![e.clone()]),
                current: Arc::default(),
                idle: Arc::default(),
                token: self.token.clone(),
                tls: self.tls.clone(),
                connector: self.connector.clone(),
                response_timeout: self.response_timeout,
            })
            .collect()
    }

    /// Waits `timeout` (instead of [`RESPONSE_TIMEOUT`]) for a replica's answer.
    pub fn with_response_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// This client, waiting `secs` longer for answers.
    fn long_poll(&self, secs: u64) -> Self {
        let mut c = self.clone();
        c.response_timeout += std::time::Duration::from_secs(secs);
        c
    }

    /// Waits (up to `timeout_secs`) for the state to pass revision `after`; returns `cell`'s view.
    pub async fn watch(
        &self,
        cell: &str,
        after: Revision,
        timeout_secs: u64,
    ) -> Result<CellView, ClientError> {
        self.long_poll(timeout_secs)
            .call_as(Method::GET, &paths::watch(cell, after, timeout_secs), None)
            .await
    }

    /// Waits for a view newer than `prev` (the whole view this cell has, if any), asking control
    /// only for what changed since it; returns the whole new view.
    pub async fn watch_since(
        &self,
        cell: &str,
        prev: Option<&CellView>,
        timeout_secs: u64,
    ) -> Result<CellView, ClientError> {
        let Some(prev) = prev else {
            return self.watch(cell, Revision(0), timeout_secs).await;
        };
        let v: CellView = self
            .long_poll(timeout_secs)
            .call_as(
                Method::GET,
                &paths::watch_delta(cell, prev.revision, timeout_secs),
                None,
            )
            .await?;
        match v.merged(prev) {
            Some(v) => Ok(v),
            None => self.watch(cell, prev.revision, timeout_secs).await,
        }
    }

    /// Opens a streamed watch for `cell` from revision `after` on a connection of its own
    /// (`Upgrade: c2c-watch`): control writes a line per change (see
    /// [`paths::WATCH_PROTOCOL`]). Read it with [`WatchStream::next`].
    pub async fn watch_stream(
        &self,
        cell: &str,
        after: Revision,
    ) -> Result<WatchStream, ClientError> {
        let (tls, endpoint) = self.open().await?;
        let transport = |detail: String| ClientError::Transport {
            cause: TransportCause::Other,
            url: endpoint.url.clone(),
            detail,
        };
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| transport(e.to_string()))?;
        tokio::spawn(conn.with_upgrades());
        let req = Request::builder()
            .method(Method::GET)
            .uri(paths::watch_stream(cell, after))
            .header(
                hyper::header::HOST,
                format!("{}:{}", endpoint.host, endpoint.port),
            )
            .header(hyper::header::UPGRADE, paths::WATCH_PROTOCOL)
            .header(hyper::header::CONNECTION, "upgrade")
            .body(Full::new(Bytes::new()))
            .map_err(|e| transport(e.to_string()))?;
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| transport(e.to_string()))?;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            let status = resp.status();
            let retry_after = (status == StatusCode::SERVICE_UNAVAILABLE)
                .then(|| resp.headers().get(hyper::header::RETRY_AFTER))
                .flatten()
                .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
                .map(std::time::Duration::from_secs);
            let raw = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let message = serde_json::from_slice::<serde_json::Value>(&raw)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&raw).into_owned());
            return Err(match retry_after {
                Some(retry_after) => ClientError::Busy {
                    url: endpoint.url.clone(),
                    retry_after,
                    message,
                },
                None => ClientError::Status { status, message },
            });
        }
        let io = hyper::upgrade::on(resp)
            .await
            .map_err(|e| transport(e.to_string()))?;
        Ok(WatchStream {
            lines: tokio::io::BufReader::new(TokioIo::new(io)),
            url: endpoint.url.clone(),
            line: String::new(),
        })
    }

    /// Confirms that placed instance `inst` runs on `cell` at its address.
    pub async fn confirm_instance(&self, cell: &str, inst: &Instance) -> Result<(), ClientError> {
        let req = Confirm {
            app_guid: inst.app_guid.clone(),
            index: inst.index,
            ip: inst.ip,
        };
        self.send::<_, Empty>(Method::PUT, &paths::cell_instance(cell, &inst.guid), &req)
            .await
            .map(drop)
    }

    /// Withdraws instance `guid` from `cell` (it no longer runs there).
    pub async fn withdraw_instance(&self, cell: &str, guid: &str) -> Result<(), ClientError> {
        self.call(Method::DELETE, &paths::cell_instance(cell, guid), None)
            .await
            .map(drop)
    }

    /// Has control sign `csr` for instance `guid` on `cell`.
    pub async fn sign_instance(
        &self,
        cell: &str,
        guid: &str,
        csr: &str,
    ) -> Result<Signed, ClientError> {
        let req = CsrRequest {
            csr: csr.to_string(),
        };
        self.send(Method::POST, &paths::cell_certificate(cell, guid), &req)
            .await
    }

    /// Has control sign `csr` as the identity (CF_INSTANCE_CERT) of instance `guid` on `cell`.
    pub async fn sign_identity(
        &self,
        cell: &str,
        guid: &str,
        csr: &str,
    ) -> Result<Signed, ClientError> {
        let req = CsrRequest {
            csr: csr.to_string(),
        };
        self.send(Method::POST, &paths::cell_identity(cell, guid), &req)
            .await
    }
}
