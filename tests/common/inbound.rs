//! The inbound SMTP server run in-process for tests: a real queue in a temp
//! dir, a listener on 127.0.0.1 port 0, stopped through its shutdown stage.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sluice::shutdown::Stage;
use sluice::smtp::policy::{Policy, Restriction, StaticLookups};
use sluice::smtp::{Inbound, Settings};
use sluice_queue::{Envelope, Filter, Options, Queue, QueueId};

/// The relay domain test configurations accept mail for.
pub const RELAY_DOMAIN: &str = "relay.test";

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    pub queue: Queue,
    pub inbound: Arc<Inbound>,
    pub stage: Stage,
    task: tokio::task::JoinHandle<()>,
    pub dir: tempfile::TempDir,
}

/// Settings for an MX relaying `relay.test`: clients on loopback are *not*
/// in mynetworks (so relay control applies to the tests), recipients of
/// `relay.test` must be listed (`user@`, `other@`, `third@`, and anything
/// `@any.relay.test`), limits and timeouts short.
pub fn relay_settings() -> Settings {
    let lookups = StaticLookups {
        relay_domains: vec![RELAY_DOMAIN.to_owned()],
        relay_recipients: Some(HashSet::from([
            format!("user@{RELAY_DOMAIN}"),
            format!("other@{RELAY_DOMAIN}"),
            format!("third@{RELAY_DOMAIN}"),
            format!("@any.{RELAY_DOMAIN}"),
        ])),
    };
    Settings {
        myhostname: "mx.test".to_owned(),
        banner: "mx.test ESMTP sluice".to_owned(),
        message_size_limit: 1_000_000,
        recipient_limit: 50,
        timeout: Duration::from_secs(30),
        hard_error_limit: 100,
        soft_error_limit: 100,
        client_connection_count_limit: 0,
        max_sessions: 2000,
        policy: Policy {
            mynetworks: vec!["192.0.2.0/24".parse().expect("literal")].into(),
            relay: vec![Restriction::PermitMynetworks, Restriction::RejectUnauthDestination],
            lookups: Arc::new(lookups),
            ..Policy::default()
        },
        ..Settings::default()
    }
}

impl Server {
    /// Starts a server with `settings` on a fresh queue.
    pub async fn start(settings: Settings) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let queue = Queue::open(&dir.path().join("queue"), &Options::default(), sluice::clock::unix_millis())
            .expect("open queue");
        Server::start_with(settings, queue, dir).await
    }

    /// Starts a server on an already open queue.
    pub async fn start_with(settings: Settings, queue: Queue, dir: tempfile::TempDir) -> Server {
        Server::start_inbound(queue.clone(), dir, Inbound::new(queue, settings)).await
    }

    /// Starts a server on a fresh queue that looks up client names with
    /// `resolver` (the DNS test double).
    pub async fn start_with_resolver(
        settings: Settings,
        resolver: Arc<dyn sluice::resolver::Resolver>,
    ) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let queue = Queue::open(&dir.path().join("queue"), &Options::default(), sluice::clock::unix_millis())
            .expect("open queue");
        Server::start_inbound(queue.clone(), dir, Inbound::with_resolver(queue, settings, resolver)).await
    }

    async fn start_inbound(queue: Queue, dir: tempfile::TempDir, inbound: Arc<Inbound>) -> Server {
        let backlog = (inbound.settings().max_sessions as u32).max(1024);
        let listener = sluice::smtp::bind("127.0.0.1:0".parse().expect("literal"), backlog).expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let stage = Stage::new();
        let task = tokio::spawn(sluice::smtp::serve(listener, Arc::clone(&inbound), stage.clone()));
        Server { addr, queue, inbound, stage, task, dir }
    }

    /// Every queued message with its envelope and body, in queue-ID order.
    pub async fn messages(&self) -> Vec<(QueueId, Envelope, Vec<u8>)> {
        let mut out = Vec::new();
        for (id, env, _) in self.queue.list(Filter::default()).await.expect("list") {
            let body = self.queue.body(id).await.expect("body");
            out.push((id, env, body));
        }
        out
    }

    /// The single queued message's body without our `Received:` header.
    pub async fn only_body(&self) -> Vec<u8> {
        let msgs = self.messages().await;
        assert_eq!(msgs.len(), 1, "expected exactly one queued message");
        strip_received(&msgs[0].2).to_vec()
    }

    /// Stops accepting, lets sessions finish, closes the queue.
    pub async fn stop(self) {
        tokio::time::timeout(Duration::from_secs(30), self.stage.stop()).await.expect("sessions end");
        let _ = self.task.await;
        self.queue.close().await.expect("close queue");
    }
}

/// The body after the `Received:` header sluice prepends (its folded
/// lines start with a tab).
pub fn strip_received(body: &[u8]) -> &[u8] {
    assert!(body.starts_with(b"Received: from "), "no Received header: {:?}", String::from_utf8_lossy(body));
    let mut pos = 0;
    loop {
        let nl = body[pos..].windows(2).position(|w| w == b"\r\n").expect("header line end") + pos + 2;
        pos = nl;
        if body.get(pos) != Some(&b'\t') {
            return &body[pos..];
        }
    }
}

/// A test PKI made by rcgen: a CA, and a server certificate it signed for
/// `localhost` and `127.0.0.1`.
pub struct TestPki {
    /// The CA certificate (PEM) clients trust.
    pub ca_pem: String,
    /// The server's certificate chain and key (PEM).
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestPki {
    pub fn new() -> TestPki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "sluice test CA");
        let ca = ca_params.self_signed(&ca_key).expect("ca cert");
        let key = KeyPair::generate().expect("server key");
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).expect("params");
        params.distinguished_name.push(DnType::CommonName, "mx.test");
        let cert = params.signed_by(&key, &ca, &ca_key).expect("server cert");
        TestPki { ca_pem: ca.pem(), cert_pem: cert.pem(), key_pem: key.serialize_pem() }
    }

    /// Settings with STARTTLS at `level`, using this PKI's server key.
    pub fn settings(&self, level: sluice::smtp::TlsLevel) -> Settings {
        let tls =
            sluice::smtp::tls::server_config_from_pem(self.cert_pem.as_bytes(), self.key_pem.as_bytes())
                .expect("server TLS config");
        Settings { tls_level: level, tls: Some(tls), ..relay_settings() }
    }

    /// A rustls client configuration trusting the CA.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).expect("ca der")).expect("add root");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}
