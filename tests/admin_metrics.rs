//! `/metrics` parsed by a real Prometheus text parser, and `/health` turning
//! unhealthy when the queue passes its high-water mark.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::daemon::{Daemon, TestConfig, send};

/// GET `path`; returns (status code, body).
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status: u16 = resp.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("status code");
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// Sends `request` as is; the status code of the answer, or `None` when
/// the connection ends without one.
fn raw_get(addr: SocketAddr, request: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(request.as_bytes());
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    String::from_utf8_lossy(&resp).split(' ').nth(1).and_then(|c| c.parse().ok())
}

fn value(scrape: &prometheus_parse::Scrape, name: &str, label: Option<(&str, &str)>) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

#[test]
fn metrics_parse_as_prometheus_text_and_health_follows_the_high_water_mark() {
    let transport = format!("lmtp:[127.0.0.1]:{}", common::free_port());
    let cfg = TestConfig::new(&transport, "");
    let daemon = Daemon::start(&cfg);
    let sent = 2;
    for i in 0..sent {
        send(cfg.smtp, "a@sender.test", &["u@relay.test"], &format!("Subject: {i}\r\n\r\nx\r\n")).unwrap();
    }
    // A relay attempt, rejected.
    assert!(send(cfg.smtp, "a@sender.test", &["u@elsewhere.test"], "x\r\n").is_err());

    let (code, text) = get(cfg.metrics, "/metrics");
    assert_eq!(code, 200);
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("valid exposition format");
    assert_eq!(value(&scrape, "sluice_smtpd_messages_accepted_total", None), Some(2.0), "{text}");
    assert_eq!(value(&scrape, "sluice_queue_messages", Some(("state", "all"))), Some(2.0), "{text}");
    assert!(value(&scrape, "sluice_queue_bytes", None).unwrap_or(0.0) > 0.0, "{text}");
    assert!(
        scrape.samples.iter().any(|s| s.metric == "sluice_smtpd_rejects_total"),
        "the relay rejection is counted:\n{text}"
    );
    // Each accepted message was committed by a synced write of its own (the
    // sends were one after another), so the group-commit histogram holds at
    // least one observation per message, and at least one change each.
    let batches = scrape
        .samples
        .iter()
        .find_map(|s| match (&s.metric[..], &s.value) {
            ("sluice_queue_fsync_batch_size", prometheus_parse::Value::Histogram(b)) => Some(b.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("fsync batch histogram missing:\n{text}"));
    let total = batches.iter().find(|b| b.less_than.is_infinite()).map(|b| b.count);
    assert!(total.is_some_and(|c| c >= f64::from(sent)), "+Inf bucket {total:?}:\n{text}");
    let count = value(&scrape, "sluice_queue_fsync_batch_size_count", None).unwrap_or(0.0);
    assert!(count >= f64::from(sent), "histogram count {count} < {sent} messages:\n{text}");
    assert_eq!(Some(count), total, "_count and the +Inf bucket agree:\n{text}");
    let changes = value(&scrape, "sluice_queue_fsync_batch_size_sum", None).unwrap_or(0.0);
    assert!(changes >= count, "every synced write carries a change: sum {changes}, count {count}");

    assert_eq!(get(cfg.metrics, "/health").0, 200);
    cfg.append_main_cf("sluice_queue_high_water = 1");
    assert!(cfg.sluice(&["reload"]).status.success());
    let (code, body) = get(cfg.metrics, "/health");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("full"), "{body}");
    assert_eq!(get(cfg.metrics, "/nope").0, 404);

    // A request head past the exporter's bound (16 KiB) is refused, not
    // buffered: 431, or the connection closed while it was still sent.
    let pad = "a".repeat(64 * 1024);
    let status =
        raw_get(cfg.metrics, &format!("GET /metrics HTTP/1.1\r\nHost: localhost\r\nX-Pad: {pad}\r\n\r\n"));
    assert!(matches!(status, None | Some(431)), "{status:?}");
    assert_eq!(get(cfg.metrics, "/health").0, 503, "the exporter still serves");
    assert!(daemon.stop().success());
}
