//! CPU per message of the native sender-authentication checks
//! (`sluice::auth`), with criterion: the SPF check of one transaction, the
//! end-of-data checks of a DKIM-signed message (RSA-2048 verification,
//! ARC, DMARC), the streaming body hash of a large message, the removal
//! of forged Authentication-Results headers, and the header's rendering.
//!
//! DNS is the tests' loopback DNS server with long TTLs, so after the
//! first iteration every answer comes from the resolver's cache and the
//! time measured is the checks' own work; the number of queries the
//! server saw during the run is printed to show it. Needs
//! `opendkim-genkey` (Debian opendkim-tools) for the RSA key.
//!
//! Run: `cargo bench --bench auth` (`-- --quick` for a short run).

#[path = "../tests/common/dns_server.rs"]
#[allow(dead_code)]
mod dns_server;

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mail_auth::common::crypto::{RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use sluice::auth::{Authenticator, Envelope, Settings, Strip};
use sluice::resolver::SystemResolver;

/// A DKIM key made by opendkim-genkey: its PEM and its DNS record.
fn key() -> (Vec<u8>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let st = Command::new("opendkim-genkey")
        .args(["-b", "2048", "-d", "example.test", "-s", "sel", "-D"])
        .arg(dir.path())
        .status()
        .expect("opendkim-genkey (Debian opendkim-tools) is needed");
    assert!(st.success());
    let pem = std::fs::read(dir.path().join("sel.private")).expect("key");
    let zone = std::fs::read_to_string(dir.path().join("sel.txt")).expect("record");
    (pem, zone.split('"').skip(1).step_by(2).collect())
}

/// The signing key from its PEM (signers take it by value).
fn rsa(pem: &[u8]) -> RsaKey<Sha256> {
    let der = PrivatePkcs8KeyDer::from_pem_slice(pem).expect("PEM");
    RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs8(der)).expect("RSA")
}

fn benches(c: &mut Criterion) {
    let dns = dns_server::DnsServer::start();
    dns.ttl(86_400)
        .txt("example.test", "v=spf1 ip4:127.0.0.1 -all")
        .txt("_dmarc.example.test", "v=DMARC1; p=reject")
        .a("mail.example.test", Ipv4Addr::LOCALHOST)
        .txt("mail.example.test", "v=spf1 a -all");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let resolver = rt.block_on(async { SystemResolver::with_servers(&[dns.addr()]) }).expect("resolver");
    let auth = Authenticator::new(&resolver);
    let settings =
        Settings { authserv_id: "mx.test".into(), timeout: Duration::from_secs(5), ..Settings::default() };
    let env = Envelope {
        client: "127.0.0.1".parse().expect("ip"),
        helo: "mail.example.test",
        sender: "alice@example.test",
        receiver: "mx.test",
    };

    let (pem, record) = key();
    dns.txt("sel._domainkey.example.test", &record);
    let messages: Vec<(usize, Vec<u8>)> =
        [4 * 1024, 100 * 1024, 1024 * 1024].into_iter().map(|size| (size, signed(rsa(&pem), size))).collect();

    let mut g = c.benchmark_group("auth");
    g.bench_function("spf (HELO and MAIL FROM)", |b| {
        b.to_async(&rt).iter(|| async { auth.spf(&settings, &env).await })
    });
    let spf = rt.block_on(auth.spf(&settings, &env));
    for (size, msg) in &messages {
        // Warm the cache and check the result is what is being measured.
        let d = rt.block_on(async {
            let mut check = auth.begin(&settings);
            check.feed(msg);
            auth.end_of_data(&settings, check, spf.as_ref(), &env).await
        });
        assert_eq!(d.report.dkim[0].result, sluice::auth::AuthResult::Pass, "{:?}", d.report);
        g.throughput(Throughput::Bytes(msg.len() as u64));
        g.bench_with_input(BenchmarkId::new("end of data (DKIM, ARC, DMARC)", size), msg, |b, msg| {
            b.to_async(&rt).iter(|| async {
                let mut check = auth.begin(&settings);
                for chunk in msg.chunks(64 * 1024) {
                    check.feed(chunk);
                }
                auth.end_of_data(&settings, check, spf.as_ref(), &env).await
            })
        });
        g.bench_with_input(BenchmarkId::new("body hash only", size), msg, |b, msg| {
            b.iter(|| {
                let mut check = auth.begin(&settings);
                for chunk in msg.chunks(64 * 1024) {
                    check.feed(chunk);
                }
                check
            })
        });
        g.bench_with_input(BenchmarkId::new("strip forged headers", size), msg, |b, msg| {
            let mut out = Vec::with_capacity(msg.len());
            b.iter(|| {
                out.clear();
                let mut strip = Strip::new("mx.test", settings.header_limit);
                for chunk in msg.chunks(64 * 1024) {
                    strip.feed(chunk, &mut out);
                }
                strip.finish(&mut out);
                out.len()
            })
        });
    }
    g.throughput(Throughput::Elements(1));
    let d = rt.block_on(async {
        let mut check = auth.begin(&settings);
        check.feed(&messages[0].1);
        auth.end_of_data(&settings, check, spf.as_ref(), &env).await
    });
    g.bench_function("render header", |b| b.iter(|| d.report.header("mx.test", "none")));
    g.finish();
    let asked = dns.asked();
    let mut names: Vec<&String> = asked.iter().collect();
    names.sort();
    names.dedup();
    println!("DNS queries answered by the server during the run: {} ({names:?})", asked.len());
}

/// A message of about `size` bytes from alice@example.test (with a forged
/// Authentication-Results header for the strip bench), signed by `key`.
fn signed(key: RsaKey<Sha256>, size: usize) -> Vec<u8> {
    let line = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n";
    let body = line.repeat(size / line.len() + 1);
    let msg = format!(
        "From: Alice <alice@example.test>\r\nTo: user@relay.test\r\nSubject: bench\r\n\
         Date: Tue, 1 Dec 2026 10:00:00 +0000\r\nMessage-ID: <bench@example.test>\r\n\
         Authentication-Results: mx.test; dkim=pass (forged)\r\n\r\n{body}"
    );
    let sig = DkimSigner::from_key(key)
        .domain("example.test")
        .selector("sel")
        .headers(["From", "To", "Subject", "Date", "Message-ID"])
        .header_canonicalization(Canonicalization::Relaxed)
        .body_canonicalization(Canonicalization::Relaxed)
        .sign(msg.as_bytes())
        .expect("sign");
    let mut out = sig.to_header().into_bytes();
    out.extend_from_slice(msg.as_bytes());
    out
}

criterion_group! {
    name = auth;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(4));
    targets = benches
}
criterion_main!(auth);
