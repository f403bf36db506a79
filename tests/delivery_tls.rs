//! TLS to mailbox servers: each `lmtp_tls_security_level` does what
//! Postfix's does, set per transport with master.cf `-o` overrides, against
//! a real Dovecot whose LMTP offers STARTTLS with a certificate for
//! `mbx.test` from a test CA, and the switchable backend (which speaks no
//! TLS: it offers no STARTTLS, or offers it and breaks it).
//!
//! One Dovecot and one delivery for the whole binary: every case is a
//! recipient domain routed to its own transport.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use common::backend::{Backend, Proto};
use common::delivery::{Harness, eventually, main_cf, message};
use common::dovecot::{Dovecot, User};
use common::free_port;
use sluice::resolver::StaticResolver;
use sluice_queue::{QueueId, RcptState};

/// A CA, and a certificate it signed for `mbx.test` only: connecting to
/// any other name (an address included) finds a trusted chain with the
/// wrong name. Written to `dir`: (CA file, certificate chain, key).
fn pki(dir: &std::path::Path) -> (String, std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "sluice test CA");
    let ca = ca_params.self_signed(&ca_key).expect("ca cert");
    let key = KeyPair::generate().expect("server key");
    let mut params = CertificateParams::new(vec!["mbx.test".to_owned()]).expect("params");
    params.distinguished_name.push(DnType::CommonName, "mbx.test");
    let cert = params.signed_by(&key, &ca, &ca_key).expect("server cert");
    let (ca_file, chain, key_file) = (dir.join("ca.pem"), dir.join("chain.pem"), dir.join("key.pem"));
    std::fs::write(&ca_file, ca.pem()).expect("ca.pem");
    std::fs::write(&chain, format!("{}{}", cert.pem(), ca.pem())).expect("chain.pem");
    std::fs::write(&key_file, key.serialize_pem()).expect("key.pem");
    (ca_file.display().to_string(), chain, key_file)
}

/// The reply a recipient was deferred with, once it is deferred.
async fn deferral(h: &Harness, id: QueueId) -> String {
    // 30 s in steps of 50 ms.
    for _ in 0..600 {
        let (env, _) = h.queue.envelope(id).await.expect("envelope").expect("still queued");
        if let RcptState::Deferred { reply } = &env.recipients[0].state {
            return reply.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{id} was not deferred within 30 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_security_level_does_what_postfix_does() {
    Dovecot::require();
    let certs = tempfile::tempdir().expect("temp dir");
    let (ca, chain, key) = pki(certs.path());
    let dc = Dovecot::start_tls(&["alice", "bob", "carol"].map(User::new), &chain, &key);
    let plain = Backend::start(Proto::Lmtp).await;
    let broken = Backend::start(Proto::Lmtp).await;
    broken.offer_broken_starttls(true);

    let master_cf = format!(
        "lmtp unix - - n - - lmtp\n\
         smtp unix - - n - - smtp\n\
         lverify unix - - n - - lmtp\n  -o lmtp_tls_security_level=verify\n  -o lmtp_tls_CAfile={ca}\n\
         lencrypt unix - - n - - lmtp\n  -o lmtp_tls_security_level=encrypt\n\
         lmay unix - - n - - lmtp\n  -o lmtp_tls_security_level=may\n  -o lmtp_tls_CAfile={ca}\n"
    );
    let (d, p, b) = (dc.lmtp_port, plain.port(), broken.port());
    let extra = format!(
        "relay_domains = verified.test, wrongname.test, encrypted.test, required.test, fallback.test\n\
         transport_maps = inline:{{ verified.test=lverify:[mbx.test]:{d}, wrongname.test=lverify:[wrong.test]:{d}, \
         encrypted.test=lencrypt:[127.0.0.1]:{d}, required.test=lencrypt:[127.0.0.1]:{p}, \
         fallback.test=lmay:[127.0.0.1]:{b} }}\n\
         minimal_backoff_time = 300s\n"
    );
    let resolver = StaticResolver::new()
        .with_ip("mbx.test", IpAddr::V4(Ipv4Addr::LOCALHOST))
        .with_ip("wrong.test", IpAddr::V4(Ipv4Addr::LOCALHOST));
    let h = Harness::start_master(&main_cf(free_port(), free_port(), &extra), &master_cf, resolver).await;

    // verify: the chain is trusted and names the host: delivered.
    h.enqueue("sender@remote.test", &["alice@verified.test"], &message("verified")).await;
    // encrypt: any certificate, even one naming another host: delivered.
    h.enqueue("sender@remote.test", &["bob@encrypted.test"], &message("encrypted")).await;
    eventually("Dovecot has both over TLS", Duration::from_secs(30), || {
        dc.maildir("alice").len() == 1 && dc.maildir("bob").len() == 1
    })
    .await;

    // verify, and the certificate names another host: the mail waits.
    let id = h.enqueue("sender@remote.test", &["carol@wrongname.test"], &message("wrong name")).await;
    let why = deferral(&h, id).await;
    assert!(why.contains("Cannot start TLS with host wrong.test[127.0.0.1]"), "{why}");
    assert!(why.contains("certificate not valid for name \"wrong.test\""), "{why}");
    assert!(dc.maildir("carol").is_empty(), "nothing was given to a server not verified");

    // encrypt, and the server offers no STARTTLS: the mail waits, and
    // nothing goes out in plaintext.
    let id = h.enqueue("sender@remote.test", &["dave@required.test"], &message("required")).await;
    let why = deferral(&h, id).await;
    assert!(why.contains("TLS is required, but was not offered"), "{why}");
    assert!(plain.received().is_empty(), "no mail went out in plaintext");

    // may, and the server's TLS is broken: the mail goes in plaintext over
    // a new connection.
    h.enqueue("sender@remote.test", &["erin@fallback.test"], &message("fallback")).await;
    eventually("delivered without TLS", Duration::from_secs(30), || broken.received().len() == 1).await;
    assert!(broken.accepted_connections() >= 2, "the broken handshake, then a plaintext connection");
    h.stop().await;
}
