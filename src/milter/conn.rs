//! One socket to one milter (`inet:` or `unix:`): connecting within
//! `milter_connect_timeout`, writing packets and reading replies, every
//! read and write bounded in time, and every reply bounded in bytes
//! ([`super::protocol::MAX_PACKET`], or read in pieces for a replacement
//! body).
//!
//! Owns the bytes on the socket; never interprets a reply (that is
//! `client.rs`).

use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use super::protocol::{Command, Header, ProtocolError, Response};
use crate::config::MilterEndpoint;

/// The socket, whichever its kind.
trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}

/// Why talking to a milter failed. Each one is a communication error in
/// Postfix's sense: the connection is given up for the session.
#[derive(Debug, Error)]
pub enum ConnError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("timeout")]
    Timeout,
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
}

/// An open connection.
pub struct Conn {
    io: BufReader<Box<dyn Io>>,
    /// Packets written but not yet sent: events whose reply the milter
    /// does not send (headers under `SMFIP_NR_HDR`, macros) go out
    /// together with the next one that is awaited.
    out: Vec<u8>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("pending", &self.out.len()).finish_non_exhaustive()
    }
}

impl Conn {
    /// Connects within `timeout`. A host name is resolved by the system
    /// resolver (as Postfix does); each address is tried in turn.
    pub async fn connect(endpoint: &MilterEndpoint, timeout: Duration) -> Result<Conn, ConnError> {
        let io: Box<dyn Io> = match endpoint {
            MilterEndpoint::Inet { host, port } => {
                let s = tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host.as_str(), *port)))
                    .await
                    .map_err(|_| ConnError::Timeout)??;
                // Replies are small and awaited one at a time.
                let _ = s.set_nodelay(true);
                Box::new(s)
            }
            MilterEndpoint::Unix(path) => Box::new(
                tokio::time::timeout(timeout, tokio::net::UnixStream::connect(path))
                    .await
                    .map_err(|_| ConnError::Timeout)??,
            ),
        };
        Ok(Conn { io: BufReader::with_capacity(16 * 1024, io), out: Vec::with_capacity(4096) })
    }

    /// Adds a packet to what goes out next.
    pub fn queue(&mut self, cmd: &Command<'_>) {
        cmd.encode(&mut self.out);
    }

    /// Bytes queued and not yet sent.
    pub fn pending(&self) -> usize {
        self.out.len()
    }

    /// Sends everything queued, within `timeout`.
    pub async fn flush(&mut self, timeout: Duration) -> Result<(), ConnError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.out);
        let io = self.io.get_mut();
        let write = async {
            io.write_all(&out).await?;
            io.flush().await
        };
        tokio::time::timeout(timeout, write).await.map_err(|_| ConnError::Timeout)??;
        self.out = out;
        self.out.clear();
        Ok(())
    }

    /// Sends what is queued, then reads the next reply's length and code,
    /// each step within `timeout`.
    pub async fn read_header(&mut self, timeout: Duration) -> Result<Header, ConnError> {
        self.flush(timeout).await?;
        let mut head = [0u8; 5];
        tokio::time::timeout(timeout, self.io.read_exact(&mut head))
            .await
            .map_err(|_| ConnError::Timeout)??;
        Ok(Header::parse(head)?)
    }

    /// Reads and decodes the data of a reply whose header was read.
    pub async fn read_response(&mut self, header: Header, timeout: Duration) -> Result<Response, ConnError> {
        let mut data = vec![0u8; header.len];
        tokio::time::timeout(timeout, self.io.read_exact(&mut data))
            .await
            .map_err(|_| ConnError::Timeout)??;
        Ok(Response::decode(header.code, &data)?)
    }

    /// Reads up to `buf.len()` bytes of a streamed reply (a replacement
    /// body), at least one, within `timeout`.
    pub async fn read_piece(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, ConnError> {
        let n = tokio::time::timeout(timeout, self.io.read(buf)).await.map_err(|_| ConnError::Timeout)??;
        if n == 0 && !buf.is_empty() {
            return Err(ConnError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        Ok(n)
    }

    /// Sends what is queued without waiting for anything (the last packet
    /// of a session), and closes the socket.
    pub async fn close(mut self, timeout: Duration) {
        let _ = self.flush(timeout).await;
        let _ = tokio::time::timeout(timeout, self.io.get_mut().shutdown()).await;
    }
}
