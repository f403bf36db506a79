//! The inbound server alone, for the accept benchmark (`accept.sh`): loads
//! a configuration directory (`main.cf`, `master.cf`) as the daemon does,
//! opens the queue in `queue_directory` (durable enqueue: fsync before
//! `250`), serves every `smtpd` listener of master.cf, and runs until
//! SIGTERM or SIGINT. Nothing is delivered.
//!
//! Usage: `accept_server CONFIG_DIR`
//!
//! As the daemon does, it asks DNS through `sluice_dns_servers` (or
//! /etc/resolv.conf) for sender authentication, which runs as configured
//! (`sluice_auth_checks`; `accept_auth.sh` measures it on and off).
//!
//! The Postfix-style log lines go to `maillog_file` (one write per line,
//! as Postfix's postlogd writes it: logging is part of the cost of
//! accepting mail on both sides), or nowhere when it is empty.

use std::sync::Arc;

use sluice::auth::Authenticator;
use sluice::config::Config;
use sluice::resolver::{Resolver, SystemResolver};
use sluice::shutdown::Stage;
use sluice::smtp::{Inbound, Settings};
use sluice_queue::{Options, Queue};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir] = args.as_slice() else {
        anyhow::bail!("usage: accept_server CONFIG_DIR");
    };
    let loaded = Config::load(dir.as_ref())?;
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    let config = loaded.config;
    let log = config.string("maillog_file");
    if !log.is_empty() {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
        tracing_subscriber::fmt()
            .with_writer(std::sync::Mutex::new(file))
            .with_ansi(false)
            .with_target(false)
            .with_max_level(tracing::Level::INFO)
            .init();
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let queue_dir = config.string("queue_directory");
        let queue = Queue::open(queue_dir.as_ref(), &Options::default(), sluice::clock::unix_millis())?;
        let stage = Stage::new();
        let name_servers =
            sluice::config::parse_name_servers(config.string("sluice_dns_servers")).unwrap_or_default();
        let system = SystemResolver::with_servers(&name_servers)?;
        let authenticator = Authenticator::new(&system);
        let resolver: Arc<dyn Resolver> = Arc::new(system);
        let mut servers = Vec::new();
        for service in config.smtpd_services() {
            let settings = Settings::from_service(service)?;
            let backlog = (settings.max_sessions as u32).max(1024);
            let inbound = Inbound::with_authenticator(
                queue.clone(),
                settings,
                Arc::clone(&resolver),
                authenticator.clone(),
            );
            for addr in &service.addrs {
                let listener = sluice::smtp::bind(*addr, backlog)?;
                println!("listening on {}", listener.local_addr()?);
                servers.push(tokio::spawn(sluice::smtp::serve(
                    listener,
                    Arc::clone(&inbound),
                    stage.clone(),
                )));
            }
        }
        anyhow::ensure!(!servers.is_empty(), "master.cf has no smtpd service");
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        stage.stop().await;
        for s in servers {
            s.await?;
        }
        let stats = queue.stats().await;
        queue.close().await?;
        println!("stopped; queue holds {} messages, {} bytes", stats.messages, stats.bytes);
        Ok(())
    })
}
