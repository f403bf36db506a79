//! TLS to backends: the client side of STARTTLS with rustls (the ring
//! provider), configured per transport as Postfix's `smtp_tls_*` and
//! `lmtp_tls_*` parameters are, `-o` overrides included.
//!
//! Levels ([`Level`], `smtp_tls_security_level`), with Postfix's meanings:
//! - `none` (or empty): never STARTTLS;
//! - `may`: STARTTLS when offered, any certificate accepted; a server
//!   that does not offer it, or refuses the command, gets the mail in
//!   plaintext, and one whose handshake fails is connected to again
//!   without TLS;
//! - `encrypt`: TLS is required (not offered or failed: the mail is
//!   deferred), any certificate accepted;
//! - `verify`: as encrypt, and the certificate must chain to a trusted CA
//!   and name the host connected to (the MX host's name, or the next
//!   hop's);
//! - `secure`: as verify, but the name must be the next hop's domain (an MX
//!   host's name comes from DNS, which an attacker may spoof; the domain
//!   does not). Postfix's default `smtp_tls_secure_cert_match` also takes
//!   subdomains of the next hop (`dot-nexthop`); sluice takes the next hop
//!   only.
//!
//! Trusted CAs: `smtp_tls_CAfile` and the files of `smtp_tls_CApath`
//! (PEM); with neither, the system's bundle
//! (`/etc/ssl/certs/ca-certificates.crt`, Debian's). A client certificate
//! is sent when configured (`smtp_tls_chain_files`, or
//! `smtp_tls_cert_file` and `smtp_tls_key_file`). `smtp_tls_protocols`
//! (`may`) and `smtp_tls_mandatory_protocols` (encrypt and above) choose
//! among TLSv1.2 and TLSv1.3. `smtp_tls_servername` is the SNI: empty for
//! none, `hostname` or `nexthop`, or a name (at `verify` and `secure`
//! rustls sends the name it verifies).
//!
//! Each connection is logged as Postfix logs it, with what was verified:
//! `Verified` (the chain is trusted and the name matches), `Trusted` (the
//! chain is trusted, the name does not match), `Untrusted` (the chain is
//! not trusted). At `may` and `encrypt` the certificate is checked after
//! the handshake only to say which.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::{CertificateError, ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use super::Io;
use crate::clock;
use crate::config::{AnyCertificate, Config, TlsProtocols, parse_tls_protocols};

/// The system's CA bundle, used when neither a CA file nor a CA directory
/// is configured.
pub const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// `smtp_tls_security_level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    None,
    May,
    Encrypt,
    Verify,
    Secure,
}

impl Level {
    /// Parses a level; the empty string is `none`.
    pub fn parse(s: &str) -> Option<Level> {
        Some(match s.trim() {
            "" | "none" => Level::None,
            "may" => Level::May,
            "encrypt" => Level::Encrypt,
            "verify" => Level::Verify,
            "secure" => Level::Secure,
            _ => return None,
        })
    }

    /// TLS must be used: without it the mail waits.
    pub fn required(self) -> bool {
        self >= Level::Encrypt
    }

    /// The certificate must be verified.
    pub fn verifies(self) -> bool {
        self >= Level::Verify
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::None => "none",
            Level::May => "may",
            Level::Encrypt => "encrypt",
            Level::Verify => "verify",
            Level::Secure => "secure",
        }
    }
}

/// What a TLS session's certificate was found to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// Not chained to a trusted CA (or no CA to check with).
    Untrusted,
    /// Chained to a trusted CA, but not for the name checked.
    Trusted,
    /// Chained to a trusted CA and valid for the name.
    Verified,
}

impl Trust {
    fn as_str(self) -> &'static str {
        match self {
            Trust::Untrusted => "Untrusted",
            Trust::Trusted => "Trusted",
            Trust::Verified => "Verified",
        }
    }
}

/// What a handshake agreed, as logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub trust: Trust,
    /// `TLSv1.3`, `TLSv1.2`.
    pub version: String,
    pub cipher: String,
    pub bits: u16,
}

impl Session {
    /// Postfix's line: `Verified TLS connection established to
    /// host[addr]:port: TLSv1.3 with cipher X (256/256 bits)`.
    pub fn log_line(&self, target: &str) -> String {
        format!(
            "{} TLS connection established to {target}: {} with cipher {} ({}/{} bits)",
            self.trust.as_str(),
            self.version,
            self.cipher,
            self.bits,
            self.bits
        )
    }
}

/// `smtp_tls_servername`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Sni {
    None,
    Hostname,
    Nexthop,
    Name(String),
}

/// One transport's client TLS settings, built once per configuration.
#[derive(Debug, Clone)]
pub struct Policy {
    pub level: Level,
    /// Accepts any certificate (may, encrypt).
    lenient: Option<Arc<ClientConfig>>,
    /// Verifies chain and name (verify, secure).
    strict: Option<Arc<ClientConfig>>,
    /// Classifies a certificate after a lenient handshake; `None` without
    /// CAs.
    classifier: Option<Arc<WebPkiServerVerifier>>,
    sni: Sni,
    /// Why TLS cannot be used as configured (a missing CA file, a bad
    /// key): at levels that require TLS the mail waits with this reason.
    broken: Option<String>,
    /// The parameter values it was built from: two policies from the same
    /// values are the same (a reload that changed nothing keeps the gate's
    /// settings as they are).
    source: Vec<String>,
}

impl PartialEq for Policy {
    fn eq(&self, other: &Policy) -> bool {
        self.level == other.level && self.source == other.source && self.broken == other.broken
    }
}

/// The names one connection's TLS uses.
#[derive(Debug, Clone, Copy)]
pub struct Names<'a> {
    /// The host connected to, as found (an MX host's name, a next hop's
    /// host, or an address).
    pub host: &'a str,
    /// The next hop's domain or host.
    pub nexthop: &'a str,
}

impl Policy {
    /// No TLS.
    pub fn none() -> Policy {
        Policy {
            level: Level::None,
            lenient: None,
            strict: None,
            classifier: None,
            sni: Sni::None,
            broken: None,
            source: Vec::new(),
        }
    }

    /// The settings of `transport` (its `lmtp_tls_*` or `smtp_tls_*`
    /// parameters, with its master.cf `-o` overrides).
    pub fn from_config(config: &Config, transport: &str) -> Policy {
        let param = |suffix: &str| config.transport_param(transport, suffix).trim().to_owned();
        let name = |suffix: &str| config.transport_param_name(transport, suffix);
        const PARAMS: [&str; 9] = [
            "tls_security_level",
            "tls_CAfile",
            "tls_CApath",
            "tls_chain_files",
            "tls_cert_file",
            "tls_key_file",
            "tls_protocols",
            "tls_mandatory_protocols",
            "tls_servername",
        ];
        let source: Vec<String> = PARAMS.iter().map(|p| param(p)).collect();
        let Some(level) = Level::parse(&param("tls_security_level")) else {
            // Checked when the configuration loaded; not reached.
            return Policy { broken: Some("bad tls_security_level".into()), ..Policy::none() };
        };
        if level == Level::None {
            return Policy::none();
        }
        let sni = match param("tls_servername").as_str() {
            "" => Sni::None,
            "hostname" => Sni::Hostname,
            "nexthop" => Sni::Nexthop,
            other => Sni::Name(other.to_owned()),
        };
        let protocols = |suffix: &str| {
            parse_tls_protocols(&param(suffix)).unwrap_or(TlsProtocols { tls12: true, tls13: true })
        };
        let protocols =
            if level.required() { protocols("tls_mandatory_protocols") } else { protocols("tls_protocols") };
        let built = (|| -> Result<Policy, String> {
            let roots =
                roots(&param("tls_CAfile"), &param("tls_CApath"), &name("tls_CAfile"), &name("tls_CApath"))?;
            let client_cert = client_cert(config, transport)?;
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let classifier = if roots.is_empty() {
                None
            } else {
                Some(
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                        .build()
                        .map_err(|e| format!("{}: {e}", name("tls_CAfile")))?,
                )
            };
            let make = |verifier: Arc<dyn ServerCertVerifier>| -> Result<Arc<ClientConfig>, String> {
                let mut versions: Vec<&'static rustls::SupportedProtocolVersion> = Vec::new();
                if protocols.tls13 {
                    versions.push(&rustls::version::TLS13);
                }
                if protocols.tls12 {
                    versions.push(&rustls::version::TLS12);
                }
                let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
                    .with_protocol_versions(&versions)
                    .map_err(|e| e.to_string())?
                    .dangerous()
                    .with_custom_certificate_verifier(verifier);
                let mut c = match &client_cert {
                    Some((certs, key)) => builder
                        .with_client_auth_cert(certs.clone(), key.clone_key())
                        .map_err(|e| e.to_string())?,
                    None => builder.with_no_client_auth(),
                };
                c.enable_sni = sni != Sni::None || level.verifies();
                Ok(Arc::new(c))
            };
            let lenient = make(Arc::new(AnyCertificate(Arc::clone(&provider))))?;
            let strict = match &classifier {
                Some(v) => Some(make(Arc::clone(v) as Arc<dyn ServerCertVerifier>)?),
                None => None,
            };
            Ok(Policy {
                level,
                lenient: Some(lenient),
                strict,
                classifier,
                sni: sni.clone(),
                broken: None,
                source: source.clone(),
            })
        })();
        match built {
            Ok(p) => p,
            Err(why) => {
                tracing::error!("transport {transport}: TLS cannot be used: {why}");
                Policy { level, broken: Some(why), source, ..Policy::none() }
            }
        }
    }

    /// Why TLS cannot be used as configured, if it cannot: the
    /// configuration, or no trusted CA for a level that verifies.
    pub fn unusable(&self) -> Option<String> {
        if let Some(b) = &self.broken {
            return Some(b.clone());
        }
        if self.level.verifies() && self.strict.is_none() {
            return Some("no trusted CA certificates (smtp_tls_CAfile, smtp_tls_CApath)".into());
        }
        None
    }

    /// Runs the handshake over `io` for a connection to `names`; the
    /// encrypted stream and what it agreed, or why it failed.
    pub async fn handshake(
        &self,
        io: Box<dyn Io>,
        names: Names<'_>,
    ) -> Result<(Box<dyn Io>, Session), String> {
        let config = if self.level.verifies() { self.strict.clone() } else { self.lenient.clone() };
        let config =
            config.ok_or_else(|| self.unusable().unwrap_or_else(|| "TLS is not configured".into()))?;
        // The name the certificate must have: the next hop's for secure,
        // the host's otherwise; SNI is that name, or the configured one.
        let checked = if self.level == Level::Secure { names.nexthop } else { names.host };
        let sent = match (&self.sni, self.level.verifies()) {
            (_, true) | (Sni::Hostname, _) | (Sni::None, _) => checked,
            (Sni::Nexthop, false) => names.nexthop,
            (Sni::Name(n), false) => n.as_str(),
        };
        let server_name = server_name(sent)?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(server_name, io)
            .await
            .map_err(|e| format!("TLS handshake failed: {e}"))?;
        let conn = tls.get_ref().1;
        let version = match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_owned(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_owned(),
            Some(v) => format!("{v:?}"),
            None => "TLS".to_owned(),
        };
        let cipher =
            conn.negotiated_cipher_suite().and_then(|s| s.suite().as_str()).unwrap_or("unknown").to_owned();
        let bits = if cipher.contains("128") { 128 } else { 256 };
        let trust = if self.level.verifies() {
            Trust::Verified
        } else {
            self.classify(conn.peer_certificates().unwrap_or_default(), checked)
        };
        Ok((Box::new(tls), Session { trust, version, cipher, bits }))
    }

    /// What a certificate accepted without checking turns out to be.
    fn classify(&self, chain: &[CertificateDer<'static>], name: &str) -> Trust {
        let (Some(verifier), Some((leaf, rest))) = (&self.classifier, chain.split_first()) else {
            return Trust::Untrusted;
        };
        let Ok(name) = server_name(name) else { return Trust::Untrusted };
        let now = UnixTime::since_unix_epoch(std::time::Duration::from_millis(clock::unix_millis()));
        match verifier.verify_server_cert(leaf, rest, &name, &[], now) {
            Ok(_) => Trust::Verified,
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Trust::Trusted,
            Err(_) => Trust::Untrusted,
        }
    }
}

fn server_name(name: &str) -> Result<ServerName<'static>, String> {
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(bare.to_owned()).map_err(|_| format!("\"{name}\" is not a usable TLS server name"))
}

/// The trusted CAs: the CA file and the CA directory's files, or the
/// system bundle when neither is set.
fn roots(file: &str, dir: &str, file_param: &str, dir_param: &str) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    let mut add = |path: &Path, param: &str, must: bool| -> Result<(), String> {
        let certs = match CertificateDer::pem_file_iter(path) {
            Ok(it) => {
                it.collect::<Result<Vec<_>, _>>().map_err(|e| format!("{param} {}: {e}", path.display()))?
            }
            Err(e) if must => return Err(format!("{param} {}: {e}", path.display())),
            Err(_) => return Ok(()),
        };
        store.add_parsable_certificates(certs);
        Ok(())
    };
    if !file.is_empty() {
        add(Path::new(file), file_param, true)?;
    }
    if !dir.is_empty() {
        let entries = std::fs::read_dir(dir).map_err(|e| format!("{dir_param} {dir}: {e}"))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_file() {
                // A directory may hold other files (hash links, READMEs):
                // what does not parse as PEM certificates is skipped.
                let _ = add(&path, dir_param, false);
            }
        }
    }
    if file.is_empty() && dir.is_empty() {
        add(Path::new(SYSTEM_CA_FILE), "the system CA bundle", false)?;
    }
    Ok(store)
}

type ClientCert = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// The client certificate and key, when configured: `tls_chain_files`
/// (the key then the chain, in one file, as Postfix prefers), else
/// `tls_cert_file` and `tls_key_file`.
fn client_cert(config: &Config, transport: &str) -> Result<Option<ClientCert>, String> {
    let param = |suffix: &str| config.transport_param(transport, suffix).trim().to_owned();
    let name = |suffix: &str| config.transport_param_name(transport, suffix);
    let (cert, key, cert_param, key_param) = match param("tls_chain_files") {
        chain if !chain.is_empty() => {
            let first = chain.split([',', ' ']).find(|s| !s.is_empty()).unwrap_or_default().to_owned();
            (first.clone(), first, name("tls_chain_files"), name("tls_chain_files"))
        }
        _ => match param("tls_cert_file") {
            c if c.is_empty() => return Ok(None),
            c => {
                let k = param("tls_key_file");
                let k = if k.is_empty() { c.clone() } else { k };
                (c, k, name("tls_cert_file"), name("tls_key_file"))
            }
        },
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{cert_param} {cert}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{cert_param} {cert}: no certificate found"));
    }
    let key = PrivateKeyDer::from_pem_file(&key).map_err(|e| format!("{key_param} {key}: {e}"))?;
    Ok(Some((certs, key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_as_postfix_writes_them_and_order_by_strength() {
        assert_eq!(Level::parse(""), Some(Level::None));
        assert_eq!(Level::parse("may"), Some(Level::May));
        assert_eq!(Level::parse("secure"), Some(Level::Secure));
        assert_eq!(Level::parse("dane"), None);
        assert!(Level::Encrypt.required() && !Level::May.required());
        assert!(Level::Verify.verifies() && !Level::Encrypt.verifies());
    }

    #[test]
    fn the_log_line_is_postfixs() {
        let s = Session {
            trust: Trust::Verified,
            version: "TLSv1.3".into(),
            cipher: "TLS13_AES_256_GCM_SHA384".into(),
            bits: 256,
        };
        assert_eq!(
            s.log_line("mbx.test[127.0.0.1]:24"),
            "Verified TLS connection established to mbx.test[127.0.0.1]:24: TLSv1.3 with cipher TLS13_AES_256_GCM_SHA384 (256/256 bits)"
        );
    }
}
