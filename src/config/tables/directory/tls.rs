//! TLS client settings of directory tables (LDAP `start_tls`/`ldaps:`,
//! PostgreSQL `sslmode`), built with rustls when the configuration loads
//! so a missing CA or key file is an error at load naming its parameter.
//!
//! Owns how each table's words map to verification: `Verify::Full`
//! (chain and name: LDAP `tls_require_cert = yes`, PostgreSQL
//! `verify-full`), `Verify::Chain` (chain only: `verify-ca`) and
//! `Verify::None` (encrypt without checking: LDAP's default
//! `tls_require_cert = no`, PostgreSQL's `require`/`prefer`). Roots are the
//! CA file/directory given, else the system's.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// How much of the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verify {
    None,
    Chain,
    Full,
}

/// Where trust and the client's own certificate come from.
#[derive(Debug, Clone, Default)]
pub(crate) struct TlsFiles {
    pub ca_file: Option<PathBuf>,
    pub ca_dir: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration, or what is wrong with the files.
pub(crate) fn client_config(verify: Verify, files: &TlsFiles) -> Result<Arc<ClientConfig>, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match verify {
        Verify::None => {
            builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())))
        }
        Verify::Chain | Verify::Full => {
            let roots = Arc::new(roots(files)?);
            let inner = WebPkiServerVerifier::builder_with_provider(roots, provider())
                .build()
                .map_err(|e| format!("certificate verifier: {e}"))?;
            if verify == Verify::Full {
                builder.with_webpki_verifier(inner)
            } else {
                builder.dangerous().with_custom_certificate_verifier(Arc::new(ChainOnly(inner)))
            }
        }
    };
    let config = match (files.cert.as_deref(), files.key.as_deref()) {
        (Some(cert), Some(key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .map_err(|e| format!("{}: {e}", cert.display()))?
                .collect::<Result<_, _>>()
                .map_err(|e| format!("{}: {e}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| format!("client certificate: {e}"))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err("a client certificate needs both the certificate and the key file".into()),
    };
    Ok(Arc::new(config))
}

fn roots(files: &TlsFiles) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    let mut add = |path: &Path| -> Result<(), String> {
        for cert in CertificateDer::pem_file_iter(path).map_err(|e| format!("{}: {e}", path.display()))? {
            let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
            store.add(cert).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Ok(())
    };
    if let Some(f) = files.ca_file.as_deref() {
        add(f)?;
    } else if let Some(d) = files.ca_dir.as_deref() {
        let entries = std::fs::read_dir(d).map_err(|e| format!("{}: {e}", d.display()))?;
        for e in entries.flatten() {
            let p = e.path();
            // Hash links and PEM files alike; other files are skipped.
            if p.is_file() {
                let _ = add(&p);
            }
        }
    } else {
        let found = rustls_native_certs::load_native_certs();
        for cert in found.certs {
            let _ = store.add(cert);
        }
    }
    if store.is_empty() {
        return Err("no CA certificates to verify the server with".into());
    }
    Ok(store)
}

/// Accepts any certificate (the settings that ask for encryption only:
/// directory `tls_require_cert = never`, delivery levels `may` and
/// `encrypt`), while still checking that the server holds its key (the
/// handshake signatures). One verifier for every client that needs it.
#[derive(Debug)]
pub struct AnyCertificate(pub Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Checks the chain but not the name (PostgreSQL's `verify-ca`).
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
