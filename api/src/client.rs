//! A small HTTPS JSON client for the control API, authenticating with the user's bearer token
//! or with a cell's client certificate. One connection per request: callers are a CLI and a
//! long-poll loop, neither of which benefits from pooling.

use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;

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
        /// What went wrong.
        detail: String,
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

/// A client of one control API.
#[derive(Clone)]
pub struct Client {
    url: String,
    host: String,
    port: u16,
    token: Option<String>,
    tls: Arc<rustls::ClientConfig>,
    netns: Option<std::path::PathBuf>,
}

impl Client {
    /// A client of the API at `url` (`https://HOST:PORT`) trusting `ca_pem`.
    pub fn new(url: &str, ca_pem: &[u8], auth: Auth) -> Result<Self, ClientError> {
        let bad = || ClientError::BadUrl(url.to_string());
        let hostport = url.trim().strip_prefix("https://").ok_or_else(bad)?;
        let (host, port) = hostport
            .trim_end_matches('/')
            .rsplit_once(':')
            .ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
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
            url: url.trim().trim_end_matches('/').to_string(),
            host: host.trim_matches(['[', ']']).to_string(),
            port,
            token,
            tls: Arc::new(tls),
            netns: None,
        })
    }

    /// Connects from inside the network namespace at `path` (e.g. `/run/netns/c2c-underlay`),
    /// for a control plane reachable only there. The socket is made on a short-lived thread that
    /// entered the namespace; once connected it works from any thread.
    pub fn in_netns(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.netns = Some(path.into());
        self
    }

    async fn connect(&self) -> std::io::Result<TcpStream> {
        let Some(ns) = self.netns.clone() else {
            return TcpStream::connect((self.host.as_str(), self.port)).await;
        };
        let (host, port) = (self.host.clone(), self.port);
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let r = (|| -> std::io::Result<std::net::TcpStream> {
                let f = std::fs::File::open(&ns)?;
                nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)?;
                let s = std::net::TcpStream::connect((host.as_str(), port))?;
                s.set_nonblocking(true)?;
                Ok(s)
            })();
            let _ = tx.send(r);
        });
        let std = rx
            .await
            .map_err(|_| std::io::Error::other("connect thread died"))??;
        TcpStream::from_std(std)
    }

    /// The API's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends one request; returns the status and the body as JSON (a JSON string if it is not).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(StatusCode, serde_json::Value), ClientError> {
        let transport = |detail: String| ClientError::Transport {
            url: self.url.clone(),
            detail,
        };
        let tcp = self
            .connect()
            .await
            .map_err(|e| transport(format!("connect: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(self.host.clone()).map_err(|e| transport(e.to_string()))?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| transport(format!("TLS: {e}")))?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| transport(e.to_string()))?;
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, format!("{}:{}", self.host, self.port))
            .header(hyper::header::CONTENT_TYPE, "application/json");
        if let Some(t) = &self.token {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req
            .body(Full::new(Bytes::from(
                body.map(|b| b.to_string()).unwrap_or_default(),
            )))
            .map_err(|e| transport(e.to_string()))?;
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| transport(e.to_string()))?;
        let status = resp.status();
        let raw = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| transport(e.to_string()))?
            .to_bytes();
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
            url: self.url.clone(),
            detail: format!("unexpected answer to {path}: {e}"),
        })
    }
}
