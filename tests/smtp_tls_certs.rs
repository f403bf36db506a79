//! An ECDSA and an RSA certificate side by side, as a Postfix MX offers
//! them (`smtpd_tls_chain_files`, or the `smtpd_tls_cert_file` and
//! `smtpd_tls_eccert_file` pairs): the daemon, configured through main.cf,
//! gives each STARTTLS client the ECDSA certificate when it can verify it
//! and the RSA one when it can only verify RSA (by its signature
//! algorithms, and in TLS 1.2 by its cipher suites). The client is OpenSSL's
//! `s_client`, narrowed with `-sigalgs` or `-cipher`; the
//! certificates are made by `openssl req`. And the cipher suite: the
//! client's choice by default, the server's (AES-128-GCM first) with
//! `tls_preempt_cipherlist = yes`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::backend::{Backend, Proto};
use common::daemon::{Daemon, TestConfig};
use common::need;

/// A self-signed certificate for `CN = {kind}.mx.test`, written as an
/// `smtpd_tls_chain_files` entry (the key, then the certificate) and as a
/// separate certificate and key. Returns (chain, cert, key).
fn make_cert(dir: &Path, kind: &str) -> (PathBuf, PathBuf, PathBuf) {
    let key_arg: &[&str] = match kind {
        "ecdsa" => &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        _ => &["-newkey", "rsa:2048"],
    };
    let (cert, key, chain) =
        (dir.join(format!("{kind}.crt")), dir.join(format!("{kind}.key")), dir.join(format!("{kind}.pem")));
    let out = Command::new(need("openssl", "openssl"))
        .args(["req", "-x509", "-nodes", "-days", "2", "-subj"])
        .arg(format!("/CN={kind}.mx.test"))
        .args(key_arg)
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl req");
    assert!(out.status.success(), "openssl req: {}", String::from_utf8_lossy(&out.stderr));
    let pem = [std::fs::read(&key).expect("key"), std::fs::read(&cert).expect("cert")].concat();
    std::fs::write(&chain, pem).expect("chain file");
    (chain, cert, key)
}

/// The subject of the certificate the server presents to `s_client` over
/// STARTTLS with TLS 1.3, offering only `sigalgs` when given.
fn presented(port: u16, sigalgs: Option<&str>) -> String {
    match sigalgs {
        Some(s) => presented_with(port, &["-tls1_3", "-sigalgs", s]),
        None => presented_with(port, &["-tls1_3"]),
    }
}

/// The same with these `s_client` options.
fn presented_with(port: u16, options: &[&str]) -> String {
    handshake_line(port, options, |l| l.strip_prefix("subject="))
}

/// The cipher suite agreed with `s_client` given these options.
fn suite_with(port: u16, options: &[&str]) -> String {
    // "New, TLSv1.3, Cipher is TLS_AES_128_GCM_SHA256"
    handshake_line(port, options, |l| l.split_once("Cipher is ").map(|(_, c)| c))
}

/// The first of `s_client`'s report lines that `pick` takes something from,
/// after a STARTTLS handshake with these options.
fn handshake_line(port: u16, options: &[&str], pick: impl Fn(&str) -> Option<&str>) -> String {
    let mut cmd = Command::new(need("openssl", "openssl"));
    cmd.args(["s_client", "-starttls", "smtp", "-connect"]).arg(format!("127.0.0.1:{port}")).args(options);
    let out = cmd.stdin(Stdio::null()).output().expect("openssl s_client");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let found = text.lines().find_map(&pick).map(|s| s.trim().to_owned());
    found.unwrap_or_else(|| {
        panic!("no handshake with the server:\n{text}\n{}", String::from_utf8_lossy(&out.stderr))
    })
}

#[tokio::test]
async fn each_client_gets_the_certificate_it_can_verify_ecdsa_first() {
    let backend = Backend::start(Proto::Lmtp).await;
    let certs = tempfile::tempdir().expect("tempdir");
    let (rsa_chain, rsa_cert, rsa_key) = make_cert(certs.path(), "rsa");
    let (ec_chain, ec_cert, ec_key) = make_cert(certs.path(), "ecdsa");
    // RSA listed first: the choice is by what the client verifies, ECDSA
    // preferred, not by the order of the files.
    let styles = [
        format!("smtpd_tls_chain_files = {}, {}", rsa_chain.display(), ec_chain.display()),
        format!(
            "smtpd_tls_cert_file = {}\nsmtpd_tls_key_file = {}\nsmtpd_tls_eccert_file = {}\nsmtpd_tls_eckey_file = {}",
            rsa_cert.display(),
            rsa_key.display(),
            ec_cert.display(),
            ec_key.display()
        ),
    ];
    for style in styles {
        let cfg = TestConfig::new(&format!("lmtp:[127.0.0.1]:{}", backend.port()), "");
        cfg.append_main_cf(&format!("smtpd_tls_security_level = may\n{style}"));
        let daemon = Daemon::start(&cfg);
        let port = cfg.smtp.port();
        assert!(presented(port, None).contains("ecdsa.mx.test"), "{style}: a client that verifies both");
        assert!(
            presented(port, Some("ecdsa_secp256r1_sha256")).contains("ecdsa.mx.test"),
            "{style}: an ECDSA-only client"
        );
        assert!(
            presented(port, Some("rsa_pss_rsae_sha256:rsa_pss_rsae_sha384")).contains("rsa.mx.test"),
            "{style}: an RSA-only client"
        );
        // TLS 1.2 suites name the key: a client with only ECDHE-RSA suites
        // gets RSA though it would verify an ECDSA signature (rustls hands
        // the resolver only the signature schemes the client's suites
        // allow; this holds the resolver to it).
        let rsa_suites = presented_with(port, &["-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"]);
        assert!(rsa_suites.contains("rsa.mx.test"), "{style}: a TLS 1.2 client with RSA suites only");
        let ec_suites = presented_with(port, &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"]);
        assert!(ec_suites.contains("ecdsa.mx.test"), "{style}: a TLS 1.2 client with ECDSA suites only");
        let st = daemon.stop();
        assert!(st.success(), "{style}: {st:?}; log:\n{}", cfg.log());
    }
}

#[tokio::test]
async fn a_key_that_does_not_match_its_certificate_stops_the_start_naming_the_file() {
    let certs = tempfile::tempdir().expect("tempdir");
    let (_, rsa_cert, _) = make_cert(certs.path(), "rsa");
    let (_, _, ec_key) = make_cert(certs.path(), "ecdsa");
    let cfg = TestConfig::new("lmtp:[127.0.0.1]:24", "");
    cfg.append_main_cf(&format!(
        "smtpd_tls_security_level = may\nsmtpd_tls_cert_file = {}\nsmtpd_tls_key_file = {}",
        rsa_cert.display(),
        ec_key.display()
    ));
    let out = cfg.sluice(&["serve"]);
    assert!(!out.status.success(), "refused to start");
    let err = String::from_utf8_lossy(&out.stderr);
    let want = format!("{}: does not go with the key in {}", rsa_cert.display(), ec_key.display());
    assert!(err.contains(&want), "names the certificate and the key: {err}");
}

#[tokio::test]
async fn the_client_picks_the_cipher_suite_unless_tls_preempt_cipherlist_says_the_server() {
    let backend = Backend::start(Proto::Lmtp).await;
    let certs = tempfile::tempdir().expect("tempdir");
    let (ec_chain, ..) = make_cert(certs.path(), "ecdsa");
    // A client preferring AES-256-GCM, as OpenSSL's and rustls' clients do
    // by default.
    let tls13 = [
        "-tls1_3",
        "-ciphersuites",
        "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256",
    ];
    let tls12 = ["-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256"];
    for (preempt, want13, want12) in [
        ("", "TLS_AES_256_GCM_SHA384", "ECDHE-ECDSA-AES256-GCM-SHA384"),
        ("tls_preempt_cipherlist = no", "TLS_AES_256_GCM_SHA384", "ECDHE-ECDSA-AES256-GCM-SHA384"),
        ("tls_preempt_cipherlist = yes", "TLS_AES_128_GCM_SHA256", "ECDHE-ECDSA-AES128-GCM-SHA256"),
    ] {
        let cfg = TestConfig::new(&format!("lmtp:[127.0.0.1]:{}", backend.port()), "");
        cfg.append_main_cf(&format!(
            "smtpd_tls_security_level = may\nsmtpd_tls_chain_files = {}\n{preempt}",
            ec_chain.display()
        ));
        let daemon = Daemon::start(&cfg);
        let port = cfg.smtp.port();
        assert_eq!(suite_with(port, &tls13), want13, "TLS 1.3 with {preempt:?}");
        assert_eq!(suite_with(port, &tls12), want12, "TLS 1.2 with {preempt:?}");
        // A client without AES-128-GCM still gets a suite it offered.
        let chacha = suite_with(port, &["-tls1_3", "-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256"]);
        assert_eq!(chacha, "TLS_CHACHA20_POLY1305_SHA256", "{preempt:?}");
        let st = daemon.stop();
        assert!(st.success(), "{preempt:?}: {st:?}; log:\n{}", cfg.log());
    }
}
