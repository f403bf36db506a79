//! `smtpd_upstream_proxy_protocol = haproxy`: the SMTP server sits behind a
//! load balancer that speaks HAProxy's PROXY protocol (version 1, text, or
//! version 2, binary) and names the real client in a header before any
//! SMTP. The header is read (within `smtpd_upstream_proxy_timeout`) before
//! the per-client limits, name lookups and greeting, so all of them see
//! the real client. Parsing is the `ppp` crate's.
//!
//! A connection without a valid header is dropped without a word, as
//! Postfix does: answering it would speak SMTP to the load balancer. A
//! `LOCAL` (v2) or `UNKNOWN` (v1) header, the load balancer's own health
//! check, keeps the socket's peer address.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::BytesMut;
use ppp::{HeaderResult, PartialResult};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The longest header accepted: v1 needs at most 107 bytes; v2 carries
/// TLVs (AWS, Azure and GCP add a few dozen bytes), far below this.
const MAX_HEADER: usize = 4096;

/// Why a PROXY header was not read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProxyError {
    #[error("timeout while reading the PROXY protocol header")]
    Timeout,
    #[error("lost connection while reading the PROXY protocol header")]
    Closed,
    #[error("PROXY protocol header longer than {MAX_HEADER} bytes")]
    TooLong,
    #[error("bad PROXY protocol header: {0}")]
    Invalid(String),
}

/// What a complete header says.
#[derive(Debug, PartialEq, Eq)]
struct Parsed {
    /// The real client, or `None` to keep the socket's peer.
    client: Option<SocketAddr>,
    /// The header's length in bytes.
    len: usize,
}

/// Reads the PROXY header from `stream` within `timeout`: the real client
/// (`peer` when the header names none) and the bytes read past the header,
/// which belong to the SMTP session.
pub async fn read_header<S: AsyncRead + Unpin>(
    stream: &mut S,
    peer: SocketAddr,
    timeout: Duration,
) -> Result<(SocketAddr, BytesMut), ProxyError> {
    let read = async {
        let mut buf = BytesMut::with_capacity(256);
        loop {
            if let Some(p) = parse(&buf)? {
                let rest = buf.split_off(p.len);
                return Ok((p.client.unwrap_or(peer), rest));
            }
            if buf.len() >= MAX_HEADER {
                return Err(ProxyError::TooLong);
            }
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return Err(ProxyError::Closed),
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(timeout, read).await.unwrap_or(Err(ProxyError::Timeout))
}

/// A complete header at the start of `buf`, `None` while it may still
/// become one.
fn parse(buf: &[u8]) -> Result<Option<Parsed>, ProxyError> {
    let result = HeaderResult::parse(buf);
    if result.is_incomplete() {
        return Ok(None);
    }
    let socket = |ip: IpAddr, port: u16| Some(SocketAddr::new(ip, port));
    match result {
        HeaderResult::V1(Ok(h)) => {
            let client = match h.addresses {
                ppp::v1::Addresses::Tcp4(a) => socket(a.source_address.into(), a.source_port),
                ppp::v1::Addresses::Tcp6(a) => socket(a.source_address.into(), a.source_port),
                ppp::v1::Addresses::Unknown => None,
            };
            Ok(Some(Parsed { client, len: h.header.len() }))
        }
        HeaderResult::V2(Ok(h)) => {
            let client = match (h.command, &h.addresses) {
                (ppp::v2::Command::Proxy, ppp::v2::Addresses::IPv4(a)) => {
                    socket(a.source_address.into(), a.source_port)
                }
                (ppp::v2::Command::Proxy, ppp::v2::Addresses::IPv6(a)) => {
                    socket(a.source_address.into(), a.source_port)
                }
                _ => None,
            };
            Ok(Some(Parsed { client, len: h.len() }))
        }
        HeaderResult::V1(Err(e)) => Err(ProxyError::Invalid(e.to_string())),
        HeaderResult::V2(Err(e)) => Err(ProxyError::Invalid(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const PEER: &str = "127.0.0.9:40000";

    async fn read(bytes: &[u8]) -> Result<(SocketAddr, BytesMut), ProxyError> {
        let mut input = bytes;
        read_header(&mut input, addr(PEER), Duration::from_secs(1)).await
    }

    #[tokio::test]
    async fn version_1_names_the_client_and_leaves_what_follows() {
        let (client, rest) = read(b"PROXY TCP4 192.0.2.7 127.0.0.1 51000 25\r\nEHLO x\r\n").await.unwrap();
        assert_eq!(client, addr("192.0.2.7:51000"));
        assert_eq!(&rest[..], b"EHLO x\r\n");
        let (client, rest) = read(b"PROXY TCP6 2001:db8::7 ::1 51000 25\r\n").await.unwrap();
        assert_eq!(client, addr("[2001:db8::7]:51000"));
        assert!(rest.is_empty());
        // A health check: the proxy itself.
        assert_eq!(read(b"PROXY UNKNOWN\r\n").await.unwrap().0, addr(PEER));
    }

    #[tokio::test]
    async fn version_2_names_the_client_and_local_keeps_the_peer() {
        let mut v2 = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        v2.extend_from_slice(&[0x21, 0x11, 0, 12, 192, 0, 2, 7, 127, 0, 0, 1, 0xC7, 0x38, 0, 25]);
        v2.extend_from_slice(b"QUIT\r\n");
        let (client, rest) = read(&v2).await.unwrap();
        assert_eq!(client, addr("192.0.2.7:51000"));
        assert_eq!(&rest[..], b"QUIT\r\n");
        let mut local = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(read(&local).await.unwrap().0, addr(PEER));
    }

    #[tokio::test]
    async fn no_header_is_refused() {
        assert!(matches!(read(b"EHLO client.test\r\n").await, Err(ProxyError::Invalid(_))));
        assert_eq!(read(b"PROXY TCP4 192.0.2.7").await, Err(ProxyError::Closed));
        assert!(matches!(
            read(b"PROXY TCP4 999.0.2.7 127.0.0.1 1 25\r\n").await,
            Err(ProxyError::Invalid(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_proxy_times_out() {
        // The client end stays open and says nothing.
        let (_client, mut server) = tokio::io::duplex(64);
        let r = read_header(&mut server, addr(PEER), Duration::from_secs(5)).await;
        assert_eq!(r, Err(ProxyError::Timeout));
    }
}
