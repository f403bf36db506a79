//! TLS for the inbound server: the server configuration (rustls with the
//! ring provider; a certificate and key per key algorithm, from
//! `smtpd_tls_chain_files` or `smtpd_tls_cert_file`/`smtpd_tls_key_file`
//! and `smtpd_tls_eccert_file`/`smtpd_tls_eckey_file`, chosen per client;
//! the protocol versions allowed, the cipher order, session tickets for
//! resumption), the stream a session reads and writes ([`Stream`], plain
//! before STARTTLS and encrypted after it) and what the handshake agreed
//! ([`TlsInfo`]).
//!
//! A leaf below the settings and the session: the `STARTTLS` command
//! itself is a stage of its own (`starttls.rs`).

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, SignatureAlgorithm};

use crate::config::TlsProtocols;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::server::TlsStream;

/// A certificate or key that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS certificate file {path}: {message}")]
    Cert { path: String, message: String },
    #[error("TLS key file {path}: {message}")]
    Key { path: String, message: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// One certificate chain (leaf first) and its private key (PKCS#8, PKCS#1
/// or SEC1), as files; both may be the same file (an
/// `smtpd_tls_chain_files` entry holds the key and then the chain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Builds the server configuration from PEM files, one [`KeyFiles`] per key
/// algorithm (as Postfix takes an RSA and an ECDSA certificate): each
/// handshake gets the first non-RSA key the client can verify, else an RSA
/// one (see [`ByAlgorithm`]). Offers the `protocols` versions; with
/// `server_order` (`tls_preempt_cipherlist = yes`) picks the cipher suite
/// by its own order (see [`provider`]) rather than the client's.
pub fn server_config_from_files(
    keys: &[KeyFiles],
    protocols: TlsProtocols,
    server_order: bool,
) -> Result<Arc<ServerConfig>, TlsError> {
    if keys.is_empty() {
        return Err(TlsError::Config(
            "no certificate: set smtpd_tls_chain_files or smtpd_tls_cert_file".into(),
        ));
    }
    let provider = provider();
    let mut certified = Vec::with_capacity(keys.len());
    for k in keys {
        let path = k.cert.display().to_string();
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&k.cert)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| TlsError::Cert { path: path.clone(), message: e.to_string() })?;
        let key = PrivateKeyDer::from_pem_file(&k.key)
            .map_err(|e| TlsError::Key { path: k.key.display().to_string(), message: e.to_string() })?;
        certified.push(certified_key(certs, key, &path, &k.key.display().to_string(), &provider)?);
    }
    build(certified, provider, protocols, server_order)
}

/// Builds the server configuration from PEM text (tests, embedded keys),
/// offering TLSv1.2 and TLSv1.3.
pub fn server_config_from_pem(cert: &[u8], key: &[u8]) -> Result<Arc<ServerConfig>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Cert { path: "(inline)".into(), message: e.to_string() })?;
    let key = PrivateKeyDer::from_pem_slice(key)
        .map_err(|e| TlsError::Key { path: "(inline)".into(), message: e.to_string() })?;
    let provider = provider();
    let certified = certified_key(certs, key, "(inline)", "(inline)", &provider)?;
    build(vec![certified], provider, TlsProtocols { tls12: true, tls13: true }, false)
}

/// One explicit provider: with two compiled in, rustls would panic at run
/// time unless a process default were installed.
///
/// Its suites are ring's, with the AES-128-GCM ones first (TLS 1.3's
/// TLS_AES_128_GCM_SHA256, TLS 1.2's ECDHE with AES-128-GCM), then the
/// rest in rustls' order (AES-256-GCM, ChaCha20-Poly1305). This order only
/// counts when the server's order rules (`tls_preempt_cipherlist = yes`);
/// by default the client's does, as in Postfix. AES-128-GCM first, as Go's
/// TLS server orders its suites: every TLS 1.3 client must offer it, its
/// 128-bit keys match X25519's strength, and its SHA-256 runs on the SHA
/// extensions of current CPUs where ring computes SHA-384 with portable
/// code on AMD CPUs (benches/README.md, STARTTLS).
fn provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.sort_by_key(|s| !aes_128_gcm(s.suite()));
    Arc::new(provider)
}

fn aes_128_gcm(suite: rustls::CipherSuite) -> bool {
    use rustls::CipherSuite as S;
    matches!(
        suite,
        S::TLS13_AES_128_GCM_SHA256
            | S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
    )
}

/// A chain and its key, checked to belong together.
fn certified_key(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    path: &str,
    key_path: &str,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    if certs.is_empty() {
        return Err(TlsError::Cert { path: path.to_owned(), message: "no certificate found".into() });
    }
    let key = CertifiedKey::from_der(certs, key, provider).map_err(|e| TlsError::Cert {
        path: path.to_owned(),
        message: format!("does not go with the key in {key_path} ({e})"),
    })?;
    Ok(Arc::new(key))
}

fn build(
    keys: Vec<Arc<CertifiedKey>>,
    provider: Arc<CryptoProvider>,
    protocols: TlsProtocols,
    server_order: bool,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut versions: Vec<&'static rustls::SupportedProtocolVersion> = Vec::new();
    if protocols.tls13 {
        versions.push(&rustls::version::TLS13);
    }
    if protocols.tls12 {
        versions.push(&rustls::version::TLS12);
    }
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(ByAlgorithm::new(keys)));
    // Session resumption by stateless tickets, as Postfix does by default
    // (its smtpd_tls_session_cache_timeout, 3600 s, turns on OpenSSL's
    // tickets): a resumed handshake skips the certificate signature, the
    // largest cost of a full one, and a returning MTA resumes. rustls's
    // default is a stateful cache of 256 sessions, which a busy MX
    // outgrows and which costs memory per client; the ticketer keeps no
    // state (its keys rotate every 6 hours). The in-memory cache stays for
    // TLS 1.2 clients that resume by session ID.
    config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(|e| TlsError::Config(e.to_string()))?;
    config.ignore_client_order = server_order;
    Ok(Arc::new(config))
}

/// Picks a handshake's certificate by the signature schemes its client
/// offers: the first ECDSA or Ed25519 key it can verify, else the first
/// key it can verify at all (RSA), else the first key (the handshake then
/// fails as with one certificate). As OpenSSL's default preference does
/// for Postfix with several `smtpd_tls_chain_files`: an ECDSA signature
/// costs a fraction of an RSA one, and every TLS 1.3 client verifies it,
/// while RSA stays for the clients that only verify RSA.
#[derive(Debug)]
pub struct ByAlgorithm {
    keys: Vec<Arc<CertifiedKey>>,
}

impl ByAlgorithm {
    fn new(mut keys: Vec<Arc<CertifiedKey>>) -> ByAlgorithm {
        // Stable: keys of one kind keep the administrator's order.
        keys.sort_by_key(|k| k.key.algorithm() == SignatureAlgorithm::RSA);
        ByAlgorithm { keys }
    }
}

impl ResolvesServerCert for ByAlgorithm {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let offered = hello.signature_schemes();
        self.keys
            .iter()
            .find(|k| k.key.choose_scheme(offered).is_some())
            .or_else(|| self.keys.first())
            .cloned()
    }
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
