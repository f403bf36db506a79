//! Harness for delivery tests: a queue in a temp dir, a configuration from
//! main.cf text routing `dev.test` to a mailbox server on loopback, and the
//! scheduler started on them with a static resolver (the senders' domain
//! `remote.test` has an MX on loopback, where bounces arrive).
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use sluice::config::Config;
use sluice::delivery::{self, Handle, Tuning};
use sluice::resolver::StaticResolver;
use sluice::shutdown::Stage;
use sluice_queue::{ClientInfo, Envelope, Filter, Options, Queue, QueueId, Recipient};

/// master.cf with the delivery transports a Debian Postfix has.
pub const MASTER_CF: &str = "\
lmtp      unix  -       -       n       -       -       lmtp
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
";

/// A running scheduler on its own queue.
#[derive(Debug)]
pub struct Harness {
    pub dir: tempfile::TempDir,
    pub queue: Queue,
    pub config: Arc<ArcSwap<Config>>,
    pub handle: Handle,
    pub stage: Stage,
    pub main_cf: String,
}

/// main.cf for tests: `dev.test` goes to `lmtp:[127.0.0.1]:<lmtp_port>`,
/// bounces to `remote.test` go by MX (the resolver's) to `smtp_port`.
/// Tests run on loopback, which `sluice_mx_forbidden_networks` keeps
/// domain-routed delivery out of: 127.0.0.1 is excepted here (a test of
/// the rule itself sets the exceptions again in `extra`).
pub fn main_cf(lmtp_port: u16, smtp_port: u16, extra: &str) -> String {
    format!(
        "myhostname = mx.sluice.test\n\
         mydomain = sluice.test\n\
         mynetworks = 127.0.0.0/8\n\
         relay_domains = dev.test\n\
         transport_maps = inline:{{ dev.test=lmtp:[127.0.0.1]:{lmtp_port} }}\n\
         smtp_tcp_port = {smtp_port}\n\
         lmtp_connect_timeout = 2s\n\
         lmtp_lhlo_timeout = 2s\n\
         lmtp_data_done_timeout = 5s\n\
         smtp_connect_timeout = 2s\n\
         default_destination_concurrency_limit = 4\n\
         initial_destination_concurrency = 2\n\
         sluice_breaker_failure_threshold = 3\n\
         sluice_breaker_cooldown = 500ms\n\
         sluice_breaker_max_cooldown = 2s\n\
         sluice_mx_forbidden_networks_exceptions = 127.0.0.1\n\
         {extra}\n"
    )
}

/// The resolver: `remote.test` has one MX, `mx.remote.test` on 127.0.0.1.
pub fn resolver() -> StaticResolver {
    StaticResolver::new()
        .with_mx("remote.test", 10, "mx.remote.test")
        .with_ip("mx.remote.test", IpAddr::V4(Ipv4Addr::LOCALHOST))
}

impl Harness {
    /// Opens a queue in a new temp dir and starts delivery.
    pub async fn start(main_cf: &str) -> Harness {
        let dir = tempfile::Builder::new().prefix("sluice-delivery-").tempdir().expect("temp dir");
        Self::start_in(dir, main_cf).await
    }

    /// Starts delivery with small in-memory limits.
    pub async fn start_tuned(main_cf: &str, tuning: Tuning) -> Harness {
        let dir = tempfile::Builder::new().prefix("sluice-delivery-").tempdir().expect("temp dir");
        Self::start_in_tuned(dir, main_cf, tuning).await
    }

    /// Starts delivery on the queue in `dir` (a restart when it exists).
    pub async fn start_in(dir: tempfile::TempDir, main_cf: &str) -> Harness {
        Self::start_in_tuned(dir, main_cf, Tuning::default()).await
    }

    /// Starts delivery with `resolver` instead of [`resolver()`] (tests
    /// that point names at addresses of their own).
    pub async fn start_resolving(main_cf: &str, tuning: Tuning, resolver: StaticResolver) -> Harness {
        let dir = tempfile::Builder::new().prefix("sluice-delivery-").tempdir().expect("temp dir");
        Self::start_with(dir, main_cf, tuning, resolver).await
    }

    /// Starts delivery with a master.cf of the test's own (transports with
    /// `-o` overrides) and `resolver`.
    pub async fn start_master(main_cf: &str, master_cf: &str, resolver: StaticResolver) -> Harness {
        let dir = tempfile::Builder::new().prefix("sluice-delivery-").tempdir().expect("temp dir");
        Self::start_full(dir, main_cf, master_cf, Tuning::default(), resolver).await
    }

    async fn start_in_tuned(dir: tempfile::TempDir, main_cf: &str, tuning: Tuning) -> Harness {
        Self::start_with(dir, main_cf, tuning, resolver()).await
    }

    async fn start_with(
        dir: tempfile::TempDir,
        main_cf: &str,
        tuning: Tuning,
        resolver: StaticResolver,
    ) -> Harness {
        Self::start_full(dir, main_cf, MASTER_CF, tuning, resolver).await
    }

    async fn start_full(
        dir: tempfile::TempDir,
        main_cf: &str,
        master_cf: &str,
        tuning: Tuning,
        resolver: StaticResolver,
    ) -> Harness {
        let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("info").try_init();
        let opts = Options { recovery_spread: Duration::from_millis(100), ..Options::default() };
        let queue =
            Queue::open(&dir.path().join("queue"), &opts, sluice::clock::unix_millis()).expect("queue opens");
        let loaded = Config::from_texts(dir.path(), main_cf, master_cf).expect("configuration loads");
        for w in &loaded.warnings {
            eprintln!("config warning: {w}");
        }
        let config = Arc::new(ArcSwap::new(loaded.config));
        let stage = Stage::new();
        let handle =
            delivery::start_tuned(queue.clone(), config.clone(), Arc::new(resolver), stage.clone(), tuning)
                .await
                .expect("delivery starts");
        Harness { dir, queue, config, handle, stage, main_cf: main_cf.to_owned() }
    }

    /// Stops delivery (as at shutdown) and closes the queue; returns the
    /// directory for a restart.
    pub async fn stop(self) -> (tempfile::TempDir, String) {
        let Harness { dir, queue, config, handle, stage, main_cf } = self;
        stage.stop().await;
        drop((handle, config));
        queue.close().await.expect("queue closes");
        drop(queue);
        (dir, main_cf)
    }

    /// Queues a message as the inbound server would.
    pub async fn enqueue(&self, sender: &str, rcpts: &[&str], body: &[u8]) -> QueueId {
        self.queue
            .enqueue(envelope(sender, rcpts), body, sluice::clock::unix_millis())
            .await
            .expect("enqueue")
    }

    /// Messages still queued.
    pub async fn queued(&self) -> usize {
        self.queue.list(Filter::default()).await.expect("list").len()
    }

    /// The state of a backend's breaker (`closed`, `open`, `half-open`), or
    /// `None` while it has no gate.
    pub fn breaker(&self, name: &str) -> Option<&'static str> {
        self.handle.list().into_iter().find(|b| b.snapshot.name == name).map(|b| b.breaker_name())
    }
}

/// An envelope as the inbound server makes it.
pub fn envelope(sender: &str, rcpts: &[&str]) -> Envelope {
    Envelope {
        sender: sender.into(),
        recipients: rcpts.iter().map(|r| Recipient::new(*r)).collect(),
        arrival: sluice::clock::unix_millis(),
        size: 0,
        client: ClientInfo {
            addr: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            name: "localhost".into(),
            helo: "client.remote.test".into(),
            protocol: "ESMTP".into(),
        },
        ..Envelope::default()
    }
}

/// A small message with a unique subject.
pub fn message(tag: &str) -> Vec<u8> {
    format!(
        "From: sender@remote.test\r\nTo: user@dev.test\r\nSubject: {tag}\r\nMessage-ID: <{tag}@remote.test>\r\n\r\n\
         Body of {tag}.\r\n.a line with a leading dot\r\n"
    )
    .into_bytes()
}

/// Waits for a condition, polling; panics with `what` after `limit`. This is
/// a liveness bound (a hang would otherwise stall the suite), not a speed
/// assertion: limits are far above the expected time.
pub async fn eventually(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = sluice::clock::instant();
    while !f() {
        if start.elapsed() > limit {
            panic!("gave up waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// `eventually` for an async condition.
pub async fn eventually_async<F, Fut>(what: &str, limit: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = sluice::clock::instant();
    while !f().await {
        if start.elapsed() > limit {
            panic!("gave up waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The subject of a message.
pub fn subject(data: &[u8]) -> String {
    let text = String::from_utf8_lossy(data);
    text.lines().find_map(|l| l.strip_prefix("Subject: ")).unwrap_or("").trim().to_owned()
}
