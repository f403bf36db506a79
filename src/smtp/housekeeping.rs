//! The commands outside the mail transaction: `RSET` (ends the
//! transaction, keeps the HELO name and TLS), `NOOP`, `QUIT`, `VRFY`
//! (disabled by default; when enabled it never discloses whether a
//! recipient exists) and `HELP`, and the `smtpd_junk_command_limit` that
//! keeps a client from idling on them forever.

use tokio::io::{AsyncRead, AsyncWrite};

use super::session::Session;
use super::state::Flow;
use crate::reply::{Reply, Status};

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// `RSET`: ends the transaction but keeps the HELO name and TLS.
    pub(super) async fn rset(&mut self) -> Flow {
        self.reset().await;
        self.junk_command("rset");
        self.reply(&Reply::new(250, Status(2, 0, 0), "Ok"));
        Flow::Continue
    }

    /// `NOOP`.
    pub(super) fn noop(&mut self) -> Flow {
        self.junk_command("noop");
        self.reply(&Reply::new(250, Status(2, 0, 0), "Ok"));
        Flow::Continue
    }

    /// `QUIT`.
    pub(super) fn quit(&mut self) -> Flow {
        self.counts.add("quit", true);
        self.reply(&Reply::new(221, Status(2, 0, 0), "Bye"));
        Flow::Close
    }

    /// `VRFY`, answered only when `disable_vrfy_command = no`.
    pub(super) fn vrfy(&mut self, value: &str) -> Flow {
        self.junk_command("vrfy");
        if self.settings.vrfy && self.settings.offers("vrfy") {
            // Recipient validity is not disclosed: RFC 5321 3.5.3.
            let v = value.trim_matches(['<', '>']).to_owned();
            self.reply(&Reply::new(
                252,
                Status(2, 0, 0),
                format!("<{v}>: Cannot VRFY user, but will accept message"),
            ));
        } else {
            self.reply(&Reply::new(502, Status(5, 5, 1), "VRFY command is disabled"));
        }
        Flow::Continue
    }

    /// `HELP`.
    pub(super) fn help(&mut self) -> Flow {
        self.junk_command("help");
        self.reply(&Reply::new(
            214,
            Status(2, 0, 0),
            "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS; see RFC 5321",
        ));
        Flow::Continue
    }

    /// NOOP, RSET, VRFY and HELP beyond `smtpd_junk_command_limit` count as
    /// errors, so a client cannot idle forever on them.
    fn junk_command(&mut self, name: &'static str) {
        self.counts.add(name, true);
        self.junk += 1;
        if self.junk > self.settings.junk_command_limit {
            self.errors += 1;
        }
    }
}
