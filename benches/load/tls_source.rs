//! A STARTTLS load client for `starttls.sh`, the same for sluice and for
//! Postfix: like Postfix's `smtp-source` (which has no STARTTLS), SESSIONS
//! parallel sessions send N messages of SIZE bytes, one message per
//! connection, one command at a time (connect, EHLO, STARTTLS, TLS 1.3
//! handshake, EHLO, MAIL, RCPT, DATA, QUIT). Prints the messages sent,
//! how many handshakes resumed a session, and the elapsed time.
//!
//! Usage: `tls_source [--no-resume] PORT N SIZE SESSIONS`
//!
//! Resumption is on by default, as an MTA's client uses it: rustls keeps
//! the server's tickets (stateless ones, or the IDs of a stateful cache:
//! TLS 1.3 sends both as tickets) in memory per server name and offers one
//! on the next connection. `--no-resume` makes every handshake a full one.
//!
//! The server's certificate is not checked against a trust anchor (the
//! bench's certificates are self-signed), but its handshake signature is
//! verified (sluice's own `AnyCertificate`, the verifier of its delivery
//! client at `smtp_tls_security_level = may`), so the client does the work
//! a real one does. Only ever talks
//! to loopback ports the bench script gives it; any reply other than the
//! expected class ends the run with an error.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use anyhow::{Context, bail};
use rustls::ClientConfig;
use rustls::HandshakeKind;
use rustls::client::Resumption;
use rustls_pki_types::ServerName;
use sluice::config::AnyCertificate;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Reads one (possibly multi-line) reply and checks its first digit.
async fn expect<R: AsyncRead + Unpin>(r: &mut BufReader<R>, class: u8, what: &str) -> anyhow::Result<()> {
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            bail!("connection closed waiting for the reply to {what}");
        }
        let b = line.as_bytes();
        if b.len() < 4 || b[0] != class {
            bail!("unexpected reply to {what}: {}", line.trim_end());
        }
        if b[3] == b' ' {
            return Ok(());
        }
    }
}

/// Sends one command and waits for its reply.
async fn command<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut BufReader<S>,
    line: &[u8],
    class: u8,
    what: &str,
) -> anyhow::Result<()> {
    s.get_mut().write_all(line).await?;
    expect(s, class, what).await
}

/// The message: a few headers and lines of text, SIZE bytes in all.
fn message(size: usize) -> Vec<u8> {
    let mut m = b"From: <load@remote.test>\r\nTo: <user@dev.test>\r\nSubject: tls load\r\n\r\n".to_vec();
    while m.len() < size {
        let n = (size - m.len()).clamp(2, 78);
        m.extend(std::iter::repeat_n(b'x', n - 2));
        m.extend_from_slice(b"\r\n");
    }
    m.extend_from_slice(b".\r\n");
    m
}

/// One connection, one message. Returns whether the handshake resumed.
async fn send_one(port: u16, tls: &tokio_rustls::TlsConnector, body: &[u8]) -> anyhow::Result<bool> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.set_nodelay(true)?;
    let mut plain = BufReader::new(tcp);
    expect(&mut plain, b'2', "the greeting").await?;
    command(&mut plain, b"EHLO load.remote.test\r\n", b'2', "EHLO").await?;
    command(&mut plain, b"STARTTLS\r\n", b'2', "STARTTLS").await?;
    if !plain.buffer().is_empty() {
        bail!("bytes after the STARTTLS reply");
    }
    let name = ServerName::try_from("mx.bench.test")?;
    let stream = tls.connect(name, plain.into_inner()).await.context("TLS handshake")?;
    let resumed = stream.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed);
    let mut s = BufReader::new(stream);
    command(&mut s, b"EHLO load.remote.test\r\n", b'2', "EHLO after STARTTLS").await?;
    command(&mut s, b"MAIL FROM:<load@remote.test>\r\n", b'2', "MAIL").await?;
    command(&mut s, b"RCPT TO:<user@dev.test>\r\n", b'2', "RCPT").await?;
    command(&mut s, b"DATA\r\n", b'3', "DATA").await?;
    command(&mut s, body, b'2', "the message").await?;
    command(&mut s, b"QUIT\r\n", b'2', "QUIT").await?;
    let _ = s.get_mut().shutdown().await;
    Ok(resumed)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let resume = match args.first().map(String::as_str) {
        Some("--no-resume") => {
            args.remove(0);
            false
        }
        _ => true,
    };
    let [port, n, size, sessions] = args.as_slice() else {
        bail!("usage: tls_source [--no-resume] PORT N SIZE SESSIONS");
    };
    let (port, n, size, sessions): (u16, usize, usize, usize) =
        (port.parse()?, n.parse()?, size.parse()?, sessions.parse()?);

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    // One ticket store for every session, as one MTA's client has.
    config.resumption = if resume { Resumption::in_memory_sessions(1024) } else { Resumption::disabled() };
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config));
    let body = Arc::new(message(size));

    let next = Arc::new(AtomicUsize::new(0));
    let resumed = Arc::new(AtomicU64::new(0));
    let start = sluice::clock::instant();
    let mut tasks = Vec::new();
    for _ in 0..sessions {
        let (tls, body, next, resumed) =
            (tls.clone(), Arc::clone(&body), Arc::clone(&next), Arc::clone(&resumed));
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n {
                if send_one(port, &tls, &body).await? {
                    resumed.fetch_add(1, Ordering::Relaxed);
                }
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "tls_source: {n} messages in {secs:.2} s ({:.0}/s), {} of {n} handshakes resumed",
        n as f64 / secs,
        resumed.load(Ordering::Relaxed)
    );
    Ok(())
}
