//! TLS for the inbound server: the server configuration (rustls with the
//! ring provider, certificate and key from `smtpd_tls_cert_file` and
//! `smtpd_tls_key_file`, the protocol versions allowed, session tickets
//! for resumption), the stream a
//! session reads and writes ([`Stream`], plain before STARTTLS and
//! encrypted after it) and what the handshake agreed ([`TlsInfo`]).
//!
//! A leaf below the settings and the session: the `STARTTLS` command
//! itself is a stage of its own (`starttls.rs`).

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::ServerConfig;

use crate::config::TlsProtocols;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::server::TlsStream;

/// A certificate or key that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("smtpd_tls_cert_file {path}: {message}")]
    Cert { path: String, message: String },
    #[error("smtpd_tls_key_file {path}: {message}")]
    Key { path: String, message: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// Builds the server configuration from PEM files: the certificate chain
/// (leaf first) and the private key (PKCS#8, PKCS#1 or SEC1), which may be
/// the same file (`smtpd_tls_chain_files` holds both, key first). Offers
/// the `protocols` versions.
pub fn server_config_from_files(
    cert: &Path,
    key: &Path,
    protocols: TlsProtocols,
) -> Result<Arc<ServerConfig>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Cert { path: cert.display().to_string(), message: e.to_string() })?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| TlsError::Key { path: key.display().to_string(), message: e.to_string() })?;
    build(certs, key, &cert.display().to_string(), protocols)
}

/// Builds the server configuration from PEM text (tests, embedded keys),
/// offering TLSv1.2 and TLSv1.3.
pub fn server_config_from_pem(cert: &[u8], key: &[u8]) -> Result<Arc<ServerConfig>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Cert { path: "(inline)".into(), message: e.to_string() })?;
    let key = PrivateKeyDer::from_pem_slice(key)
        .map_err(|e| TlsError::Key { path: "(inline)".into(), message: e.to_string() })?;
    build(certs, key, "(inline)", TlsProtocols { tls12: true, tls13: true })
}

fn build(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    path: &str,
    protocols: TlsProtocols,
) -> Result<Arc<ServerConfig>, TlsError> {
    if certs.is_empty() {
        return Err(TlsError::Cert { path: path.to_owned(), message: "no certificate found".into() });
    }
    let mut versions: Vec<&'static rustls::SupportedProtocolVersion> = Vec::new();
    if protocols.tls13 {
        versions.push(&rustls::version::TLS13);
    }
    if protocols.tls12 {
        versions.push(&rustls::version::TLS12);
    }
    // One explicit provider: with two compiled in, rustls would panic at run
    // time unless a process default were installed.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    // Session resumption by stateless tickets, as Postfix does by default
    // (its smtpd_tls_session_cache_timeout, 3600 s, turns on OpenSSL's
    // tickets): a resumed handshake skips the certificate signature, the
    // largest cost of a full one, and a returning MTA resumes. rustls's
    // default is a stateful cache of 256 sessions, which a busy MX
    // outgrows and which costs memory per client; the ticketer keeps no
    // state (its keys rotate every 6 hours). The in-memory cache stays for
    // TLS 1.2 clients that resume by session ID.
    config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(Arc::new(config))
}

/// The negotiated protocol and cipher, for logs and `Received:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLSv1.3`, `TLSv1.2`.
    pub version: String,
    /// The IANA cipher suite name.
    pub cipher: String,
}

/// A session's byte stream: plain, or TLS after STARTTLS.
#[derive(Debug)]
pub enum Stream<S> {
    Plain(S),
    Tls(Box<TlsStream<S>>),
    /// Only while the handshake owns the plain stream (and after it failed).
    Gone,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream<S> {
    /// Runs the server handshake over the plain stream. On failure the
    /// stream is gone and the session must end.
    pub async fn upgrade(&mut self, config: Arc<ServerConfig>) -> io::Result<TlsInfo> {
        let Stream::Plain(plain) = std::mem::replace(self, Stream::Gone) else {
            return Err(io::Error::other("TLS is already active"));
        };
        let tls = tokio_rustls::TlsAcceptor::from(config).accept(plain).await?;
        let conn = tls.get_ref().1;
        let version = match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_owned(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_owned(),
            Some(v) => format!("{v:?}"),
            None => "TLS".to_owned(),
        };
        let cipher =
            conn.negotiated_cipher_suite().and_then(|s| s.suite().as_str()).unwrap_or("unknown").to_owned();
        *self = Stream::Tls(Box::new(tls));
        Ok(TlsInfo { version, cipher })
    }

    /// True once STARTTLS completed.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "stream closed after failed TLS handshake")
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Gone => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Gone => Poll::Ready(Ok(())),
        }
    }
}
