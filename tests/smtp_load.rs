//! Many sessions at once: 1,000 concurrent sessions are all held open in
//! the middle of a transaction at the same moment, then each sends its
//! message; every one must be queued, with no error reply anywhere.

mod common;

use std::sync::Arc;

use common::clients::Raw;
use common::inbound::{Server, relay_settings};
use sluice::smtp::Settings;
use tokio::sync::Barrier;

const SESSIONS: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_sessions_are_held_and_all_queue() {
    let settings =
        Settings { max_sessions: SESSIONS + 10, client_connection_count_limit: 0, ..relay_settings() };
    let server = Server::start(settings).await;
    let addr = server.addr;
    let barrier = Arc::new(Barrier::new(SESSIONS));
    let mut tasks = Vec::with_capacity(SESSIONS);
    for i in 0..SESSIONS {
        let barrier = Arc::clone(&barrier);
        tasks.push(tokio::spawn(async move {
            // Whatever happens before the barrier, every task reaches it, so
            // a failing session makes the test fail instead of hang.
            let opened = tokio::spawn(async move {
                let mut c = Raw::ehlo(addr).await;
                let mail = c.cmd(&format!("MAIL FROM:<s{i}@source.test>")).await;
                let rcpt = c.cmd("RCPT TO:<user@relay.test>").await;
                (c, mail, rcpt)
            })
            .await;
            // Every session is open and inside a transaction here.
            barrier.wait().await;
            let (mut c, mail, rcpt) = opened.map_err(|e| format!("session {i} before DATA: {e}"))?;
            let data = c.cmd("DATA").await;
            c.send(format!("Subject: load {i}\r\n\r\nmessage {i}\r\n.\r\n").as_bytes()).await;
            let queued = c.reply().await.expect("end-of-data reply");
            let quit = c.cmd("QUIT").await;
            Ok::<_, String>([mail, rcpt, data, queued, quit].map(|r| r.text()))
        }));
    }
    let mut failures = Vec::new();
    for t in tasks {
        let replies = match t.await.expect("client task") {
            Ok(r) => r,
            Err(e) => {
                failures.push([e, String::new(), String::new(), String::new(), String::new()]);
                continue;
            }
        };
        let ok = replies[0].starts_with("250 ")
            && replies[1].starts_with("250 ")
            && replies[2].starts_with("354 ")
            && replies[3].starts_with("250 2.0.0 Ok: queued as ")
            && replies[4].starts_with("221 ");
        if !ok {
            failures.push(replies);
        }
    }
    assert!(failures.is_empty(), "{} sessions failed, e.g. {:?}", failures.len(), failures.first());
    let msgs = server.messages().await;
    assert_eq!(msgs.len(), SESSIONS);
    let mut senders: Vec<_> = msgs.iter().map(|m| m.1.sender.clone()).collect();
    senders.sort();
    senders.dedup();
    assert_eq!(senders.len(), SESSIONS);
    server.stop().await;
}
