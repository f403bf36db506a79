//! The inbound server alone, for the accept benchmark (`accept.sh`):
//! listens on the given address, writes into a queue in the given
//! directory (durable enqueue: fsync before `250`), relays for one domain,
//! and runs until SIGTERM or SIGINT.
//!
//! Usage: `accept_server LISTEN_ADDR QUEUE_DIR RELAY_DOMAIN LOG_FILE`
//!
//! The Postfix-style log lines go to LOG_FILE, one write per line, as
//! Postfix's postlogd writes its maillog_file: logging is part of the cost
//! of accepting mail on both sides.
//!
//! The relay policy matches the Postfix instance the script starts beside
//! it: loopback is not in mynetworks, `relay_domains` is the one domain,
//! `smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination`,
//! no recipient table, no per-client limits, `default_process_limit = 100`.

use std::sync::Arc;

use sluice::shutdown::Stage;
use sluice::smtp::policy::{Policy, Restriction, StaticLookups};
use sluice::smtp::{Inbound, Settings};
use sluice_queue::{Options, Queue};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, listen, queue_dir, domain, log] = args.as_slice() else {
        anyhow::bail!("usage: accept_server LISTEN_ADDR QUEUE_DIR RELAY_DOMAIN LOG_FILE");
    };
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    tracing_subscriber::fmt()
        .with_writer(std::sync::Mutex::new(log))
        .with_ansi(false)
        .with_target(false)
        .with_max_level(tracing::Level::INFO)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let queue = Queue::open(queue_dir.as_ref(), &Options::default(), sluice::clock::unix_millis())?;
        let settings = Settings {
            myhostname: "mx.bench.test".to_owned(),
            banner: "mx.bench.test ESMTP sluice".to_owned(),
            client_connection_count_limit: 0,
            max_sessions: 100,
            policy: Policy {
                mynetworks: vec!["192.0.2.0/24".parse()?],
                relay: vec![Restriction::PermitMynetworks, Restriction::RejectUnauthDestination],
                lookups: Arc::new(StaticLookups {
                    relay_domains: vec![domain.clone()],
                    ..StaticLookups::default()
                }),
                ..Policy::default()
            },
            ..Settings::default()
        };
        let listener = sluice::smtp::bind(listen.parse()?, 1024)?;
        println!("listening on {}", listener.local_addr()?);
        let inbound = Inbound::new(queue.clone(), settings);
        let stage = Stage::new();
        let server = tokio::spawn(sluice::smtp::serve(listener, inbound, stage.clone()));
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        stage.stop().await;
        server.await?;
        let stats = queue.stats();
        queue.close().await?;
        println!("stopped; queue holds {} messages, {} bytes", stats.messages, stats.bytes);
        Ok(())
    })
}
