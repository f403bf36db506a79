//! The greeting stage: `EHLO` and `HELO`, and the list of extensions
//! sluice advertises. The reply text is written here rather than taken
//! from smtp-proto, whose stock text is not what an MX should say.
//!
//! Must not advertise anything the session does not honour: every keyword
//! here has its handler (`PIPELINING` in `session.rs`, `SIZE`, `8BITMIME`,
//! `SMTPUTF8` and `DSN` in `mail.rs`/`rcpt.rs`, `CHUNKING` and `BINARYMIME`
//! in `bdat.rs`, `STARTTLS` in `starttls.rs`).

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::info;

use super::session::Session;
use super::settings::{Settings, TlsLevel};
use super::state::{Flow, Helo};
use crate::reply::{Reply, Status};

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// `EHLO` (`esmtp`) or `HELO`: records the client's name and resets
    /// any transaction (RFC 5321 4.1.4).
    pub(super) async fn ehlo(&mut self, host: &str, esmtp: bool) -> Flow {
        let name = if esmtp { "ehlo" } else { "helo" };
        // The name goes into logs and our Received: header as it is: no
        // control or invisible character may be part of it.
        if host.is_empty() || !host.chars().all(crate::reply::is_printable) {
            self.counts.add(name, false);
            let syntax = if esmtp { "EHLO hostname" } else { "HELO hostname" };
            self.reply(&Reply::new(501, Status(5, 5, 4), format!("Syntax: {syntax}")));
            return Flow::Continue;
        }
        self.reset().await;
        self.helo = Some(Helo { name: host.to_owned(), esmtp });
        if let Some(r) = self.milter_helo(host).await {
            self.counts.add(name, false);
            self.reply(&r);
            return Flow::Close;
        }
        self.counts.add(name, true);
        let reply = if esmtp {
            let (lines, discarded) = capabilities(&self.settings, self.tls.is_some());
            if !discarded.is_empty() && self.settings.offers("silent-discard") {
                info!("discarding EHLO keywords: {}", discarded.join(" "));
            }
            Reply::multiline(250, None, lines)
        } else {
            Reply::multiline(250, None, vec![self.settings.myhostname.clone()])
        };
        self.reply(&reply);
        Flow::Continue
    }
}

/// The EHLO reply lines (the host name, then one extension per line), and
/// the keywords `smtpd_discard_ehlo_keywords` took out.
pub(super) fn capabilities(s: &Settings, tls_active: bool) -> (Vec<String>, Vec<String>) {
    let mut lines = vec![s.myhostname.clone(), "PIPELINING".to_owned()];
    lines.push(if s.message_size_limit > 0 {
        format!("SIZE {}", s.message_size_limit)
    } else {
        "SIZE".to_owned()
    });
    if s.vrfy {
        lines.push("VRFY".to_owned());
    }
    if !tls_active && s.tls_level != TlsLevel::None && s.tls.is_some() {
        lines.push("STARTTLS".to_owned());
    }
    lines.push("ENHANCEDSTATUSCODES".to_owned());
    lines.push("8BITMIME".to_owned());
    lines.push("DSN".to_owned());
    if s.smtputf8 {
        lines.push("SMTPUTF8".to_owned());
    }
    lines.push("CHUNKING".to_owned());
    lines.push("BINARYMIME".to_owned());
    let host = lines.remove(0);
    let (kept, discarded): (Vec<String>, Vec<String>) = lines
        .into_iter()
        .partition(|l| s.offers(&l.split(' ').next().unwrap_or_default().to_ascii_lowercase()));
    (std::iter::once(host).chain(kept).collect(), discarded)
}
