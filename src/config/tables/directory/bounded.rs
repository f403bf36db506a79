//! A stream that refuses oversized PostgreSQL server messages: every
//! message after the startup packet is a type byte, a 4-byte length and
//! that many bytes, and this wrapper follows the framing of what it reads
//! and fails the read as soon as a header announces more than the limit.
//!
//! Why: tokio-postgres (like libpq) reads a whole message into memory,
//! whatever its announced size; a broken or hostile server could make a
//! lookup allocate gigabytes. sluice hands tokio-postgres this stream
//! (`connect_raw`), after doing the SSL negotiation itself, so every byte
//! tokio-postgres reads is framed. Writes pass through untouched.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    /// Reading a header: `have` of its 5 bytes so far (the length's bytes
    /// in `len`).
    Header { have: usize, len: [u8; 4] },
    /// Inside a message body with `left` bytes to go.
    Body { left: usize },
}

/// `S` with every server message at most `max` bytes.
#[derive(Debug)]
pub(crate) struct Bounded<S> {
    inner: S,
    max: usize,
    frame: Frame,
}

impl<S> Bounded<S> {
    pub fn new(inner: S, max: usize) -> Bounded<S> {
        Bounded { inner, max, frame: Frame::Header { have: 0, len: [0; 4] } }
    }

    /// Follows the framing over `bytes`; an error when a message is too
    /// large or its length is impossible.
    fn follow(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            match &mut self.frame {
                Frame::Body { left } => {
                    let n = (*left).min(bytes.len());
                    *left -= n;
                    bytes = &bytes[n..];
                    if *left == 0 {
                        self.frame = Frame::Header { have: 0, len: [0; 4] };
                    }
                }
                Frame::Header { have, len } => {
                    if *have > 0 {
                        len[*have - 1] = bytes[0];
                    }
                    *have += 1;
                    bytes = &bytes[1..];
                    if *have == 5 {
                        let total = u32::from_be_bytes(*len) as usize;
                        if total < 4 {
                            return Err(io::Error::new(io::ErrorKind::InvalidData, "bad message length"));
                        }
                        let body = total - 4;
                        if body > self.max {
                            return Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                format!(
                                    "server message of {body} bytes is longer than {} (sluice_table_reply_size_limit)",
                                    self.max
                                ),
                            ));
                        }
                        self.frame = if body == 0 {
                            Frame::Header { have: 0, len: [0; 4] }
                        } else {
                            Frame::Body { left: body }
                        };
                    }
                }
            }
        }
        Ok(())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Bounded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                if let Err(e) = this.follow(new) {
                    // Nothing of a refused read is handed on.
                    buf.set_filled(before);
                    return Poll::Ready(Err(e));
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Bounded<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn message(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![kind];
        m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    #[tokio::test]
    async fn messages_within_the_limit_pass_in_any_split() {
        let mut wire = message(b'D', b"hello");
        wire.extend(message(b'C', b""));
        wire.extend(message(b'Z', b"I"));
        let mut out = Vec::new();
        let mut s = Bounded::new(&wire[..], 5);
        s.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, wire);
        // Byte by byte.
        let mut s = Bounded::new(&wire[..], 5);
        for b in &wire {
            s.follow(std::slice::from_ref(b)).unwrap();
        }
    }

    #[tokio::test]
    async fn an_oversized_message_fails_the_read() {
        let wire = message(b'D', &[b'x'; 100]);
        let mut s = Bounded::new(&wire[..], 99);
        let mut out = Vec::new();
        let e = s.read_to_end(&mut out).await.unwrap_err();
        assert!(e.to_string().contains("longer than 99"), "{e}");
    }

    #[test]
    fn impossible_lengths_are_refused() {
        let mut s = Bounded::new((), 10);
        assert!(s.follow(&[b'D', 0, 0, 0, 3]).is_err());
    }
}
