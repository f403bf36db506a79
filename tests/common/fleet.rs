//! Fleet-mode tests' mail: sending to several `sluice` hosts at once and
//! finding what reached the backend by subject.

use std::collections::HashSet;
use std::sync::Arc;

use super::backend::Backend;
use super::daemon::{Daemon, TestConfig, send};

/// A small message with `subject`, from and to the fleet tests' addresses.
pub fn message(subject: &str) -> String {
    format!("From: a@sender.test\r\nTo: alice@relay.test\r\nSubject: {subject}\r\n\r\nbody\r\n")
}

/// Sends `n` messages to each host, from blocking threads; their subjects.
pub async fn send_to_all(hosts: &[(Arc<TestConfig>, Daemon)], tag: &str, n: usize) -> Vec<String> {
    let mut senders = Vec::new();
    for (i, (cfg, _)) in hosts.iter().enumerate() {
        let addr = cfg.smtp;
        let tag = format!("{tag}-{i}");
        senders.push(tokio::task::spawn_blocking(move || {
            (0..n)
                .map(|k| {
                    let s = format!("{tag}-{k}");
                    send(addr, "a@sender.test", &["alice@relay.test"], &message(&s)).expect("accepted");
                    s
                })
                .collect::<Vec<_>>()
        }));
    }
    let mut all = Vec::new();
    for s in senders {
        all.extend(s.await.expect("sender"));
    }
    all
}

/// The subjects of every message the backend received.
pub fn subjects(b: &Backend) -> HashSet<String> {
    b.received()
        .iter()
        .filter_map(|r| {
            String::from_utf8_lossy(&r.data)
                .lines()
                .find_map(|l| l.strip_prefix("Subject: ").map(|s| s.trim().to_owned()))
        })
        .collect()
}

/// How many of `sent` reached the backend.
pub fn delivered(b: &Backend, sent: &[String]) -> usize {
    let got = subjects(b);
    sent.iter().filter(|s| got.contains(*s)).count()
}

/// Whether all of `sent` reached the backend.
pub fn all_delivered(b: &Backend, sent: &[String]) -> bool {
    delivered(b, sent) == sent.len()
}

/// Every host's log, one after the other (for failure messages).
pub fn logs(hosts: &[(Arc<TestConfig>, Daemon)]) -> String {
    hosts.iter().map(|(c, _)| c.log()).collect::<Vec<_>>().join("\n----\n")
}

/// A TCP delay line on loopback in front of `upstream`: requests go through
/// at once, each chunk of the replies is held back by `delay`, as a Redis
/// across a slow network looks. Replies are not queued behind each other's
/// delay: two sent 1 ms apart arrive 1 ms apart, `delay` later.
pub struct DelayLine {
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl DelayLine {
    pub async fn start(upstream: std::net::SocketAddr, delay: std::time::Duration) -> DelayLine {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(delay_connection(client, upstream, delay));
            }
        });
        DelayLine { addr, task }
    }

    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn delay_connection(
    client: tokio::net::TcpStream,
    upstream: std::net::SocketAddr,
    delay: std::time::Duration,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else { return };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
        let _ = server_write.shutdown().await;
    });
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let down = tokio::spawn(async move {
        let mut buf = vec![0; 64 * 1024];
        while let Ok(n @ 1..) = server_read.read(&mut buf).await {
            if tx.send((tokio::time::Instant::now() + delay, buf[..n].to_vec())).is_err() {
                break;
            }
        }
    });
    while let Some((at, bytes)) = rx.recv().await {
        tokio::time::sleep_until(at).await;
        if client_write.write_all(&bytes).await.is_err() {
            break;
        }
    }
    up.abort();
    down.abort();
}
