//! The sender's side of the world for `accept_auth.sh`: a DKIM-signed
//! message from `bench@source.test` and the DNS server that vouches for
//! it (the tests' loopback server: SPF listing loopback, the DKIM key,
//! DMARC `p=reject`), so the accept benchmark with sender authentication
//! on measures a message that passes every check.
//!
//! Usage: `auth_world DIR SIZE`: makes a 2048-bit RSA key with
//! `opendkim-genkey` in DIR, writes DIR/message (about SIZE bytes, signed
//! with `mail-auth`, LF line ends as `smtp-source -F` wants them), starts
//! the DNS server on 127.0.0.1 with a free port, prints `dns ADDRESS` and
//! serves until SIGTERM.

#[path = "../../tests/common/dns_server.rs"]
#[allow(dead_code)]
mod dns_server;

use std::net::Ipv4Addr;
use std::process::Command;

use mail_auth::common::crypto::{RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, size] = args.as_slice() else {
        anyhow::bail!("usage: auth_world DIR SIZE");
    };
    let size: usize = size.parse()?;
    let dir = std::path::Path::new(dir);
    let st = Command::new("opendkim-genkey")
        .args(["-b", "2048", "-d", "source.test", "-s", "bench", "-D"])
        .arg(dir)
        .status()?;
    anyhow::ensure!(st.success(), "opendkim-genkey failed (Debian opendkim-tools)");
    let pem = std::fs::read(dir.join("bench.private"))?;
    let key = RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from_pem_slice(&pem)?))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let zone = std::fs::read_to_string(dir.join("bench.txt"))?;
    let record: String = zone.split('"').skip(1).step_by(2).collect();

    let line = "The quick brown fox jumps over the lazy dog; the dog does not mind.\r\n";
    let body = line.repeat(size.saturating_sub(400) / line.len() + 1);
    let message = format!(
        "From: Bench <bench@source.test>\r\nTo: user@relay.test\r\nSubject: accept benchmark\r\n\
         Date: Tue, 1 Dec 2026 10:00:00 +0000\r\nMessage-ID: <bench@source.test>\r\n\r\n{body}"
    );
    let signature = DkimSigner::from_key(key)
        .domain("source.test")
        .selector("bench")
        .headers(["From", "To", "Subject", "Date", "Message-ID"])
        .header_canonicalization(Canonicalization::Relaxed)
        .body_canonicalization(Canonicalization::Relaxed)
        .sign(message.as_bytes())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let signed = signature.to_header() + &message;
    std::fs::write(dir.join("message"), signed.replace("\r\n", "\n"))?;

    let dns = dns_server::DnsServer::start();
    dns.ttl(86_400)
        .txt("source.test", "v=spf1 ip4:127.0.0.0/8 -all")
        .txt("_dmarc.source.test", "v=DMARC1; p=reject")
        .txt("bench._domainkey.source.test", &record)
        .a("client.source.test", Ipv4Addr::LOCALHOST)
        .txt("client.source.test", "v=spf1 a -all");
    println!("dns {}", dns.addr());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        term.recv().await;
        anyhow::Ok(())
    })?;
    println!("answered {} queries", dns.asked().len());
    Ok(())
}
