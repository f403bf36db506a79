//! The `STARTTLS` stage (RFC 3207): discards whatever the client pipelined
//! after the command (those plaintext bytes must never be read as if they
//! came over TLS: the classic command injection), answers `220 2.0.0 Ready
//! to start TLS`, runs the handshake within `smtpd_starttls_timeout` and
//! forgets the HELO name and any transaction (RFC 3207 4.2).

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{info, warn};

use super::command::printable;
use super::events::{self, Event};
use super::session::Session;
use super::settings::TlsLevel;
use super::state::Flow;
use crate::reply::{Reply, Status};

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// `STARTTLS`.
    pub(super) async fn starttls(&mut self) -> Flow {
        if self.tls.is_some() {
            self.counts.add("starttls", false);
            self.reply(&Reply::new(554, Status(5, 5, 1), "Error: TLS already active"));
            return Flow::Continue;
        }
        let config = match (&self.settings.tls, self.settings.tls_level) {
            (Some(c), TlsLevel::May | TlsLevel::Encrypt) if self.settings.offers("starttls") => Arc::clone(c),
            _ => {
                self.counts.add("starttls", false);
                self.reply(&Reply::new(502, Status(5, 5, 1), "Error: command not implemented"));
                return Flow::Continue;
            }
        };
        if !self.rbuf.is_empty() {
            let n = self.rbuf.len().min(100);
            warn!(
                "{} bytes pipelined after STARTTLS from {} discarded: {}",
                self.rbuf.len(),
                self.peer,
                printable(&self.rbuf[..n])
            );
            events::emit(Event::ProtocolViolation);
            self.rbuf.clear();
        }
        self.reply(&Reply::new(220, Status(2, 0, 0), "Ready to start TLS"));
        if self.flush().await.is_err() {
            return Flow::Close;
        }
        let handshake =
            tokio::time::timeout(self.settings.starttls_timeout, self.stream.upgrade(config)).await;
        match handshake {
            Ok(Ok(info)) => {
                info!(
                    "Anonymous TLS connection established from {}: {} with cipher {}",
                    self.peer, info.version, info.cipher
                );
                events::emit(Event::TlsHandshake { ok: true });
                self.counts.add("starttls", true);
                self.tls = Some(info);
                self.reset().await;
                self.helo = None;
                self.rbuf.clear();
                Flow::Continue
            }
            Ok(Err(e)) => {
                info!("SSL_accept error from {}: {e}", self.peer);
                events::emit(Event::TlsHandshake { ok: false });
                self.counts.add("starttls", false);
                Flow::Close
            }
            Err(_) => {
                info!("SSL_accept error from {}: timed out", self.peer);
                events::emit(Event::TlsHandshake { ok: false });
                self.counts.add("starttls", false);
                Flow::Close
            }
        }
    }
}
