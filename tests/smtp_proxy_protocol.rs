//! `smtpd_upstream_proxy_protocol = haproxy` behind a real HAProxy (Debian
//! package `haproxy`, started by the test on loopback high ports with its
//! own config): mail sent through it with `send-proxy` (version 1) and
//! `send-proxy-v2` is accepted with the real client's address, which the
//! test makes different from the proxy's by sending from 127.0.0.5 while
//! HAProxy connects from 127.0.0.1. A connection that skips the proxy (no
//! header) is dropped without a greeting, and so is one from an address
//! outside `sluice_upstream_proxy_networks` even with a valid header: it
//! could claim an address in mynetworks and relay.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::clients::{python, text};
use common::inbound::{Server, relay_settings};
use common::log::Log;
use common::{ChildGuard, free_port, need, wait_for_port};
use sluice::smtp::Settings;
use tokio::io::AsyncReadExt;

/// The client's own address: not the proxy's.
const CLIENT: &str = "127.0.0.5";

const SEND: &str = r#"
import smtplib, sys
host, port, client, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
s = smtplib.SMTP(host, port, timeout=20, source_address=(client, 0))
s.ehlo("client.test")
s.sendmail("a@source.test", ["user@relay.test"], "Subject: %s\r\n\r\nthrough the proxy\r\n" % tag)
s.quit()
print("sent")
"#;

/// HAProxy with one frontend per PROXY version, both forwarding to
/// `backend`; returns the guard and the two frontend addresses.
fn haproxy(dir: &std::path::Path, backend: SocketAddr) -> (ChildGuard, SocketAddr, SocketAddr) {
    let bin = need("haproxy", "haproxy");
    let (v1, v2) = (free_port(), free_port());
    let cfg = format!(
        "global\n    maxconn 64\n\
         defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\
         frontend v1\n    bind 127.0.0.1:{v1}\n    default_backend sluice_v1\n\
         backend sluice_v1\n    server s1 {backend} send-proxy source 127.0.0.1\n\
         frontend v2\n    bind 127.0.0.1:{v2}\n    default_backend sluice_v2\n\
         backend sluice_v2\n    server s2 {backend} send-proxy-v2 source 127.0.0.1\n"
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, cfg).expect("write haproxy.cfg");
    let check = Command::new(&bin).arg("-c").arg("-f").arg(&path).output().expect("haproxy -c");
    assert!(check.status.success(), "haproxy config: {}", String::from_utf8_lossy(&check.stderr));
    let guard = ChildGuard::spawn(
        "haproxy",
        Command::new(&bin).arg("-db").arg("-f").arg(&path).stdout(Stdio::null()).stderr(Stdio::inherit()),
    );
    let (a1, a2): (SocketAddr, SocketAddr) =
        (format!("127.0.0.1:{v1}").parse().expect("addr"), format!("127.0.0.1:{v2}").parse().expect("addr"));
    assert!(
        wait_for_port(a1, Duration::from_secs(10)) && wait_for_port(a2, Duration::from_secs(10)),
        "haproxy up"
    );
    (guard, a1, a2)
}

#[tokio::test]
async fn mail_through_haproxy_carries_the_real_client() {
    let (log, _guard) = Log::capture();
    let server = Server::start(Settings { upstream_proxy: true, ..relay_settings() }).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (_haproxy, v1, v2) = haproxy(dir.path(), server.addr);
    for (front, tag) in [(v1, "v1"), (v2, "v2")] {
        let out = python(front, SEND, &[CLIENT, tag]).await;
        assert!(out.status.success() && text(&out).contains("sent"), "{tag}: {}", text(&out));
    }
    let msgs = server.messages().await;
    assert_eq!(msgs.len(), 2, "{}", log.text());
    for (_, env, body) in &msgs {
        assert_eq!(env.client.addr, Some(CLIENT.parse().expect("literal")));
        let body = String::from_utf8_lossy(body);
        assert!(body.contains(&format!("[{CLIENT}]")), "Received names the real client:\n{body}");
    }
    let lines = log.text();
    assert_eq!(lines.matches(&format!(" connect from unknown[{CLIENT}]")).count(), 2, "{lines}");
    // (The readiness probes, sent through HAProxy from 127.0.0.1, show as
    // that client: the address is the header's, not the socket's.)

    // Straight to sluice, without the proxy's header: dropped unanswered.
    let mut direct = tokio::net::TcpStream::connect(server.addr).await.expect("connect");
    tokio::io::AsyncWriteExt::write_all(&mut direct, b"EHLO client.test\r\n").await.expect("write");
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), direct.read_to_end(&mut got)).await;
    assert!(matches!(read, Ok(Ok(0))), "no greeting, then closed: {:?}", String::from_utf8_lossy(&got));
    server.stop().await;
    assert!(log.text().contains("bad PROXY protocol header"), "{}", log.text());
}

/// Only the listed load balancers may name the client. A client that
/// reaches the port directly from another loopback address sends a valid
/// header naming an address in mynetworks (192.0.2.0/24 here), which would
/// let it relay: the connection is closed before a byte is read or sent,
/// while mail through the trusted HAProxy still flows.
#[tokio::test]
async fn a_header_from_outside_the_trusted_proxies_is_never_read() {
    let (log, _guard) = Log::capture();
    let trusted = vec!["127.0.0.1/32".parse().expect("literal")].into();
    let settings = Settings { upstream_proxy: true, upstream_proxy_networks: trusted, ..relay_settings() };
    let server = Server::start(settings).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (_haproxy, v1, _) = haproxy(dir.path(), server.addr);

    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind("127.0.0.9:0".parse().expect("literal")).expect("bind 127.0.0.9");
    let mut direct = socket.connect(server.addr).await.expect("connect");
    let forged = b"PROXY TCP4 192.0.2.7 127.0.0.1 51000 25\r\nEHLO client.test\r\n\
MAIL FROM:<a@source.test>\r\nRCPT TO:<victim@elsewhere.test>\r\n";
    // The write may already fail: the server closes at once.
    let _ = tokio::io::AsyncWriteExt::write_all(&mut direct, forged).await;
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), direct.read_to_end(&mut got)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "closed: {read:?}");
    assert!(got.is_empty(), "nothing is said to it: {:?}", String::from_utf8_lossy(&got));

    let out = python(v1, SEND, &[CLIENT, "trusted"]).await;
    assert!(out.status.success() && text(&out).contains("sent"), "{}", text(&out));
    let msgs = server.messages().await;
    assert_eq!(msgs.len(), 1, "{}", log.text());
    assert_eq!(msgs[0].1.client.addr, Some(CLIENT.parse().expect("literal")));
    server.stop().await;
    let lines = log.text();
    assert!(
        lines.contains("warning: connection from [127.0.0.9]:")
            && lines.contains("not in sluice_upstream_proxy_networks"),
        "{lines}"
    );
    assert!(!lines.contains("192.0.2.7"), "the forged client is never seen: {lines}");
}
