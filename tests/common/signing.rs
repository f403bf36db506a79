//! DKIM keys and signers for the sender-authentication tests: RSA keys
//! made by OpenDKIM's `opendkim-genkey`, messages signed by `mail-auth`
//! (DKIM and ARC) and by OpenDKIM's own signer (`opendkim -t`, its test
//! mode: the filter's real signing code, without a milter connection).
//!
//! OpenDKIM refuses key and configuration files under a directory others
//! can write (such as /tmp), so keys live in a private directory under
//! cargo's target/tmp.

use std::path::{Path, PathBuf};
use std::process::Command;

use mail_auth::common::crypto::{RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use super::dns_server::DnsServer;
use super::need;

/// A DKIM key pair for `selector._domainkey.domain`.
pub struct DkimKey {
    pub domain: String,
    pub selector: String,
    /// The private key (PEM, PKCS#8) in a private directory.
    pub private: PathBuf,
    /// The TXT record to publish (`v=DKIM1; k=rsa; p=...`).
    pub record: String,
    pub dir: tempfile::TempDir,
}

/// A directory OpenDKIM accepts (no world-writable parent).
pub fn private_dir() -> tempfile::TempDir {
    let dir =
        tempfile::Builder::new().prefix("dkim").tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    set_mode(dir.path(), 0o700);
    dir
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

impl DkimKey {
    /// A new 2048-bit RSA key from `opendkim-genkey`.
    pub fn generate(domain: &str, selector: &str) -> DkimKey {
        let dir = private_dir();
        let st = Command::new(need("opendkim-genkey", "opendkim-tools"))
            .args(["-b", "2048", "-d", domain, "-s", selector, "-D"])
            .arg(dir.path())
            .status()
            .expect("run opendkim-genkey");
        assert!(st.success(), "opendkim-genkey failed");
        let private = dir.path().join(format!("{selector}.private"));
        set_mode(&private, 0o600);
        // The zone-file snippet: the record is its quoted strings joined.
        let zone = std::fs::read_to_string(dir.path().join(format!("{selector}.txt"))).expect("key record");
        let record: String = zone.split('"').skip(1).step_by(2).collect();
        DkimKey { domain: domain.into(), selector: selector.into(), private, record, dir }
    }

    /// Publishes the public key on `dns`.
    pub fn publish(&self, dns: &DnsServer) {
        dns.txt(&format!("{}._domainkey.{}", self.selector, self.domain), &self.record);
    }

    /// The key for `mail-auth`'s signers.
    pub fn rsa(&self) -> RsaKey<Sha256> {
        let pem = std::fs::read(&self.private).expect("read key");
        let der = PrivatePkcs8KeyDer::from_pem_slice(&pem).expect("PKCS#8 PEM");
        RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs8(der)).expect("RSA key")
    }

    /// `message` with a DKIM-Signature by `mail-auth` over the usual
    /// headers (relaxed/relaxed).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        use mail_auth::dkim::{Canonicalization, DkimSigner};
        let sig = DkimSigner::from_key(self.rsa())
            .domain(&self.domain)
            .selector(&self.selector)
            .headers(["From", "To", "Subject", "Date", "Message-ID"])
            .header_canonicalization(Canonicalization::Relaxed)
            .body_canonicalization(Canonicalization::Relaxed)
            .sign(message)
            .expect("sign");
        let mut out = sig.to_header().into_bytes();
        out.extend_from_slice(message);
        out
    }

    /// `message` with a DKIM-Signature by OpenDKIM (`opendkim -t` with a
    /// signing configuration: rsa-sha256, relaxed/simple, its default
    /// header list).
    pub fn sign_with_opendkim(&self, message: &[u8]) -> Vec<u8> {
        let opendkim = need("opendkim", "opendkim");
        let conf = self.dir.path().join("opendkim.conf");
        std::fs::write(
            &conf,
            format!(
                "Mode s\nDomain {}\nSelector {}\nKeyFile {}\nSignatureAlgorithm rsa-sha256\n\
                 Canonicalization relaxed/simple\nSyslog no\n",
                self.domain,
                self.selector,
                self.private.display()
            ),
        )
        .expect("opendkim.conf");
        let msg = self.dir.path().join("message");
        std::fs::write(&msg, message).expect("message");
        let out =
            Command::new(opendkim).arg("-x").arg(&conf).arg("-t").arg(&msg).output().expect("run opendkim");
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        // Test mode prints the header it would add; its folds end in LF.
        let start =
            text.find("DKIM-Signature:").unwrap_or_else(|| panic!("no signature from opendkim:\n{text}"));
        let header: String = text[start..]
            .lines()
            .enumerate()
            .take_while(|(i, l)| *i == 0 || l.starts_with([' ', '\t']))
            .map(|(_, l)| format!("{l}\r\n"))
            .collect();
        let mut signed = header.into_bytes();
        signed.extend_from_slice(message);
        signed
    }
}

/// A plain test message from `from` (CRLF line ends, body `body`).
pub fn message(from: &str, subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Alice <{from}>\r\nTo: user@relay.test\r\nSubject: {subject}\r\n\
         Date: Tue, 1 Dec 2026 10:00:00 +0000\r\nMessage-ID: <{subject}@example.test>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n{body}"
    )
    .into_bytes()
}

/// What a mailing list does to a message, then seals with ARC as
/// `key`'s domain: a subject tag and a footer (breaking the author's
/// DKIM signature), then an ARC set recording the results it saw.
pub async fn forward_through_list(
    key: &DkimKey,
    message: &[u8],
    resolver: &sluice::resolver::SystemResolver,
) -> Vec<u8> {
    use mail_auth::arc::ArcSealer;
    use mail_auth::{AuthenticatedMessage, AuthenticationResults, MessageAuthenticator};
    let auth = MessageAuthenticator(resolver.hickory().clone());
    // The list verifies what it received, as an ARC sealer must.
    let received = AuthenticatedMessage::parse(message).expect("parse");
    let dkim = auth.verify_dkim(&received).await;
    let arc = auth.verify_arc(&received).await;
    let results = AuthenticationResults::new(&key.domain)
        .with_dkim_results(&dkim, "alice@example.test")
        .with_arc_result(&arc, "127.0.0.1".parse().expect("ip"));
    // Rewrite: "[list] " in the subject, a footer at the end.
    let text = String::from_utf8_lossy(message).replace("Subject: ", "Subject: [list] ");
    let rewritten = format!("{text}-- \r\nlist footer\r\n").into_bytes();
    let parsed = AuthenticatedMessage::parse(&rewritten).expect("parse");
    let set = ArcSealer::from_key(key.rsa())
        .domain(&key.domain)
        .selector(&key.selector)
        .headers(["From", "To", "Subject", "Date", "Message-ID"])
        .seal(&parsed, &results, &arc)
        .expect("seal");
    let mut out = set.to_header().into_bytes();
    out.extend_from_slice(&rewritten);
    out
}
