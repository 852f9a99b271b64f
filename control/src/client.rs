//! A small HTTPS JSON client for the control API: finds the URL, the platform CA and the token
//! in the state dir, so no command needs them spelled out.

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

use crate::layout::Layout;

/// A client of one control API.
pub struct Client {
    url: String,
    host: String,
    port: u16,
    token: String,
    tls: Arc<rustls::ClientConfig>,
}

impl Client {
    /// Reads the URL, CA and token from the state dir.
    pub fn from_state_dir(dir: &Path) -> Result<Self> {
        let l = Layout::new(dir);
        let url = std::fs::read_to_string(l.url())
            .with_context(|| {
                format!(
                    "reading {} (is `c2c control serve --state-dir {}` running?)",
                    l.url().display(),
                    dir.display()
                )
            })?
            .trim()
            .to_string();
        let token = std::fs::read_to_string(l.token())
            .with_context(|| format!("reading {}", l.token().display()))?
            .trim()
            .to_string();
        let ca = std::fs::read(l.ca_dir().join(c2c_certs::ca::CA_CERT_FILE))
            .with_context(|| format!("reading the platform CA in {}", l.ca_dir().display()))?;
        let hostport = url
            .strip_prefix("https://")
            .ok_or_else(|| anyhow!("control URL {url} is not https://"))?;
        let (host, port) = hostport
            .rsplit_once(':')
            .ok_or_else(|| anyhow!("control URL {url} has no port"))?;
        let port: u16 = port.parse().with_context(|| format!("port of {url}"))?;
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&ca) {
            roots.add(c.context("parsing the platform CA")?)?;
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Self {
            url: url.clone(),
            host: host.trim_matches(['[', ']']).to_string(),
            port,
            token,
            tls: Arc::new(tls),
        })
    }

    /// The API's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends one request; returns the status and the body parsed as JSON (or as a string).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(StatusCode, serde_json::Value)> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .with_context(|| format!("connecting to the control API at {}", self.url))?;
        let name = ServerName::try_from(self.host.clone()).context("control host name")?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .with_context(|| format!("TLS with the control API at {}", self.url))?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, format!("{}:{}", self.host, self.port))
            .header(
                hyper::header::AUTHORIZATION,
                format!("Bearer {}", self.token),
            )
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(bytes)))?;
        let resp = send
            .send_request(req)
            .await
            .context("sending the request")?;
        let status = resp.status();
        let raw = resp.into_body().collect().await?.to_bytes();
        let json = serde_json::from_slice(&raw).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&raw).into_owned())
        });
        Ok((status, json))
    }

    /// Like [`request`](Self::request), but a non-2xx answer is an error carrying the API's message.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value> {
        let (status, json) = self.request(method, path, body).await?;
        if !status.is_success() {
            let msg = json
                .get("error")
                .and_then(|e| e.as_str())
                .map(str::to_string)
                .unwrap_or_else(|| json.to_string());
            bail!("{msg} ({status})");
        }
        Ok(json)
    }
}
