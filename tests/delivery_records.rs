//! Backends are made per next hop, and next hops are chosen by senders (a
//! bounce goes to the sender's domain): what delivery keeps of them, in
//! memory and in the queue, must not grow with them. An idle backend
//! leaves memory, its stored record with it; at most `max_backends`
//! records are stored.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use common::backend::{Backend, Proto};
use common::delivery::{Harness, eventually, eventually_async, main_cf, message};
use common::free_port;
use sluice::delivery::Tuning;
use sluice::resolver::StaticResolver;

const DOMAINS: usize = 6;

/// `dN.test` for each N, every one with its own MX on 127.0.0.1.
fn resolver() -> StaticResolver {
    let mut r = StaticResolver::new();
    for n in 0..DOMAINS {
        r = r.with_mx(&format!("d{n}.test"), 10, &format!("mx.d{n}.test"));
        r = r.with_ip(&format!("mx.d{n}.test"), IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    r
}

fn tuning() -> Tuning {
    Tuning {
        backend_idle_expiry: Some(Duration::from_millis(500)),
        max_backends: Some(2),
        crowded_idle_expiry: Some(Duration::from_millis(200)),
        ..Tuning::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_backends_leave_memory_once_their_mail_is_gone() {
    let b = Backend::start(Proto::Smtp).await;
    let h = Harness::start_resolving(&main_cf(free_port(), b.port(), ""), tuning(), resolver()).await;
    for n in 0..DOMAINS {
        h.enqueue("sender@remote.test", &[&format!("u@d{n}.test")], &message(&format!("m{n}"))).await;
    }
    eventually("all delivered", Duration::from_secs(30), || b.received().len() == DOMAINS).await;
    eventually("every backend left memory", Duration::from_secs(30), || h.handle.list().is_empty()).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_breakers_are_stored_within_the_bound_and_forgotten_when_idle() {
    // Nothing listens on the SMTP port: every domain's breaker opens, and
    // its record (it holds mail back) is stored, two at most. Then the
    // mail is deleted: nothing is left for these backends to do.
    let h = Harness::start_resolving(&main_cf(free_port(), free_port(), ""), tuning(), resolver()).await;
    let mut ids = Vec::new();
    for n in 0..DOMAINS {
        for i in 0..8 {
            ids.push(h.enqueue("", &[&format!("u{i}@d{n}.test")], &message(&format!("m{n}-{i}"))).await);
        }
    }
    let mut most = 0;
    // 3 s in steps of 20 ms.
    for _ in 0..150 {
        let stored = h.queue.backends().await.expect("records").len();
        assert!(stored <= 2, "{stored} backend records stored, more than max_backends");
        most = most.max(stored);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(most > 0, "no breaker opened: the test proves nothing");
    h.queue.delete(&ids).await.expect("delete");
    eventually("every backend left memory", Duration::from_secs(30), || h.handle.list().is_empty()).await;
    eventually_async("every record left the queue", Duration::from_secs(30), || async {
        h.queue.backends().await.expect("records").is_empty()
    })
    .await;
    h.stop().await;
}
