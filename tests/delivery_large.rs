//! A 100 MB message with `message_size_limit = 0`: accepted, queued and
//! delivered whole, while delivering it grows the daemon's memory far less
//! than the message's size (bodies go from the queue to the backend chunk
//! by chunk). The bound is generous on purpose: this shows memory does not
//! grow with the message, not how fast anything is (benches/ measure
//! that).

mod common;

use std::time::Duration;

use common::backend::{Backend, Mode, Proto};
use common::daemon::{Daemon, TestConfig, send};
use common::wait_until;

const SIZE: usize = 100 * 1024 * 1024;

/// A line of `/proc/PID/status` (`VmHWM`, `VmRSS`), in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field).and_then(|v| v.strip_prefix(':')))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{field} in {status}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_message_is_delivered_with_bounded_memory() {
    // The backend is down while the message is received and stored, so
    // what receiving costs (the queue's write buffers hold the new body
    // for a while) is behind us when delivery starts; and it takes any
    // size.
    let b = Backend::start(Proto::Lmtp).await;
    b.set_size_limit(0);
    b.set_mode(Mode::Refuse).await;
    let cfg = TestConfig::new(
        &format!("lmtp:[127.0.0.1]:{}", b.port()),
        "message_size_limit = 0\nsluice_breaker_cooldown = 1s\n",
    );
    let daemon = Daemon::start(&cfg);
    let pid = daemon.child.pid();
    let mut body = String::with_capacity(SIZE + 1024);
    body.push_str("Subject: large\r\n\r\n");
    let line = format!("{}\r\n", "0123456789".repeat(99));
    while body.len() < SIZE {
        body.push_str(&line);
    }
    let addr = cfg.smtp;
    let sent = body.len();
    let reply = tokio::task::spawn_blocking(move || send(addr, "a@sender.test", &["x@relay.test"], &body))
        .await
        .expect("sender");
    assert!(reply.is_ok(), "{reply:?}");
    wait_until("deferred", Duration::from_secs(60), || cfg.log().contains("status=deferred"), || cfg.log());

    // From here on, the peak counts only what delivery costs: "5" resets
    // the peak to the current size (proc(5), clear_refs).
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("reset the peak");
    let before = status_kib(pid, "VmHWM");
    b.set_mode(Mode::Normal).await;
    assert!(cfg.sluice(&["queue", "flush"]).status.success());
    wait_until("delivered", Duration::from_secs(300), || b.delivered_rcpts() == 1, || cfg.log());
    // Whole, with sluice's Received: header added in front.
    let got = b.received()[0].data.len();
    assert!((sent..sent + 1024).contains(&got), "{got} bytes delivered of {sent}");
    let grown = status_kib(pid, "VmHWM").saturating_sub(before);
    eprintln!("delivering {} MiB grew the daemon's peak RSS by {} MiB", sent >> 20, grown / 1024);
    // Generous (allocator and cache slack): reading the body whole would
    // add the message's 100 MiB at least.
    assert!(grown < 40 * 1024, "peak RSS grew {} MiB: memory grows with the message", grown / 1024);
    assert!(daemon.stop().success());
}
