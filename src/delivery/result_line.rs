//! The one place the per-recipient delivery log line is formatted, in
//! Postfix's exact layout so log tools that read Postfix read ours:
//!
//! `QUEUEID: to=<u@example.test>, relay=mbx1[127.0.0.1]:24, delay=0.12,
//! delays=0.01/0/0.02/0.09, dsn=2.0.0, status=sent (250 2.0.0 ...)`
//!
//! Lines are emitted with the tracing target of the Postfix program that
//! would have logged them ([`Agent`]: `lmtp`, `smtp`, `error`, `discard`,
//! `qmgr`); admin's formatter turns that into `sluice/lmtp[PID]:`. The
//! queue manager's own line about a message it takes for delivery
//! (`QUEUEID: from=<...>, size=N, nrcpt=N (queue active)`) is formatted here
//! too ([`active_line`]). Owns formatting only (the metrics counted beside
//! the lines are named in [`crate::metric`]).

use std::time::Duration;

use sluice_queue::{Envelope, QueueId};

use super::client::Verdict;
use crate::config::Protocol;
use crate::reply::Status;

/// `status=` of a result line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStatus {
    Sent,
    Deferred,
    Bounced,
}

impl LogStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LogStatus::Sent => "sent",
            LogStatus::Deferred => "deferred",
            LogStatus::Bounced => "bounced",
        }
    }
}

/// The Postfix program a result line is logged as: the delivery agent of
/// the route (`lmtp`, `smtp`; `error` and `discard` for those transports),
/// or the queue manager for a recipient it could not route at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agent {
    Lmtp,
    Smtp,
    Error,
    Discard,
    Qmgr,
}

impl From<Verdict> for LogStatus {
    fn from(v: Verdict) -> LogStatus {
        match v {
            Verdict::Sent => LogStatus::Sent,
            Verdict::Deferred => LogStatus::Deferred,
            Verdict::Bounced => LogStatus::Bounced,
        }
    }
}

impl From<Protocol> for Agent {
    fn from(p: Protocol) -> Agent {
        match p {
            Protocol::Lmtp => Agent::Lmtp,
            Protocol::Smtp => Agent::Smtp,
        }
    }
}

/// The queue manager's line for a message it takes for delivery, as
/// Postfix's qmgr writes it when the message enters the active queue:
/// `QUEUEID: from=<sender>, size=N, nrcpt=N (queue active)`. Log tools take
/// the message's size and sender from it (pflogsumm's bytes and sender
/// counts).
pub fn active_line(id: QueueId, envelope: &Envelope) -> String {
    format!(
        "{id}: from=<{}>, size={}, nrcpt={} (queue active)",
        envelope.sender,
        envelope.size,
        envelope.recipients.len()
    )
}

/// One recipient's result as logged.
#[derive(Debug, Clone)]
pub struct ResultLine<'a> {
    pub queue_id: QueueId,
    pub to: &'a str,
    /// The original recipient (`ORCPT`), logged when it differs from `to`.
    pub orcpt: Option<&'a str>,
    /// The address the client named when `to` came from virtual alias
    /// expansion (Postfix's orig_rcpt): logged as `orig_to=` in preference
    /// to the ORCPT.
    pub original: Option<&'a str>,
    /// `host[addr]:port`, or `none` when no connection was made.
    pub relay: &'a str,
    /// Since arrival.
    pub delay: Duration,
    /// Postfix's four parts: before the queue manager (arrival to claim), in
    /// the queue manager (waiting at the gate), connection setup, and
    /// transmission.
    pub delays: [Duration; 4],
    pub dsn: Status,
    pub status: LogStatus,
    pub text: &'a str,
}

/// A duration as Postfix logs delays: `0` for nothing, two decimals below a
/// second, one below ten, whole seconds above, trailing zeros dropped.
pub fn fmt_delay(d: Duration) -> String {
    let mut s = String::new();
    push_delay(&mut s, d);
    s
}

/// [`fmt_delay`] appended to `out`, in integer arithmetic: five delays
/// per result line went through float formatting and a `String` each,
/// which showed in the per-message profile. Rounds half up at the last
/// digit shown.
fn push_delay(out: &mut String, d: Duration) {
    use std::fmt::Write as _;
    let ns = d.as_nanos();
    // (units of the last digit shown, units per second)
    let (unit, per_sec) = if ns >= 10_000_000_000 {
        (1_000_000_000, 1)
    } else if ns >= 1_000_000_000 {
        (100_000_000, 10)
    } else {
        (10_000_000, 100)
    };
    let units = (ns + unit / 2) / unit;
    let _ = write!(out, "{}", units / per_sec);
    let frac = units % per_sec;
    if frac != 0 {
        if per_sec == 100 {
            let _ = write!(out, ".{:02}", frac);
            if frac.is_multiple_of(10) {
                out.pop();
            }
        } else {
            let _ = write!(out, ".{frac}");
        }
    }
}

/// The address inside an `ORCPT` value (`rfc822;addr` with xtext decoded).
pub fn orcpt_address(orcpt: &str) -> Option<String> {
    let (kind, addr) = orcpt.split_once(';')?;
    if !kind.eq_ignore_ascii_case("rfc822") && !kind.eq_ignore_ascii_case("utf-8") {
        return None;
    }
    let mut out = Vec::with_capacity(addr.len());
    let b = addr.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'+'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&addr[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).ok()
}

impl ResultLine<'_> {
    /// The line, without the program prefix.
    pub fn format(&self) -> String {
        use std::fmt::Write as _;
        // Written into one buffer: this runs once per delivered recipient.
        let mut s = String::with_capacity(160 + self.to.len() + self.relay.len() + self.text.len());
        let _ = write!(s, "{}: to=<{}>", self.queue_id, self.to);
        if let Some(orig) = self.original.map(str::to_owned).or_else(|| self.orcpt.and_then(orcpt_address))
            && !orig.eq_ignore_ascii_case(self.to)
        {
            let _ = write!(s, ", orig_to=<{orig}>");
        }
        let _ = write!(s, ", relay={}, delay=", self.relay);
        push_delay(&mut s, self.delay);
        s.push_str(", delays=");
        for (i, d) in self.delays.iter().enumerate() {
            if i > 0 {
                s.push('/');
            }
            push_delay(&mut s, *d);
        }
        let _ = write!(s, ", dsn={}, status={} (", self.dsn, self.status.as_str());
        if self.text.contains(['\r', '\n']) {
            s.push_str(&self.text.replace(['\r', '\n'], " "));
        } else {
            s.push_str(self.text);
        }
        s.push(')');
        s
    }

    /// Logs the line as `agent` (tracing targets are static, hence the
    /// match).
    pub fn emit(&self, agent: Agent) {
        let line = self.format();
        match agent {
            Agent::Lmtp => tracing::info!(target: "lmtp", "{line}"),
            Agent::Smtp => tracing::info!(target: "smtp", "{line}"),
            Agent::Error => tracing::info!(target: "error", "{line}"),
            Agent::Discard => tracing::info!(target: "discard", "{line}"),
            Agent::Qmgr => tracing::info!(target: "qmgr", "{line}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_are_formatted_as_postfix_does() {
        let ms = Duration::from_millis;
        assert_eq!(fmt_delay(ms(0)), "0");
        assert_eq!(fmt_delay(ms(4)), "0");
        assert_eq!(fmt_delay(ms(10)), "0.01");
        assert_eq!(fmt_delay(ms(100)), "0.1");
        assert_eq!(fmt_delay(ms(123)), "0.12");
        assert_eq!(fmt_delay(ms(1430)), "1.4");
        assert_eq!(fmt_delay(ms(2000)), "2");
        assert_eq!(fmt_delay(ms(92_300)), "92");
        // Rounding at the last digit shown, and across the thresholds.
        assert_eq!(fmt_delay(ms(5)), "0.01");
        assert_eq!(fmt_delay(ms(50)), "0.05");
        assert_eq!(fmt_delay(ms(996)), "1");
        assert_eq!(fmt_delay(ms(1049)), "1");
        assert_eq!(fmt_delay(ms(1050)), "1.1");
        assert_eq!(fmt_delay(ms(9_960)), "10");
        assert_eq!(fmt_delay(ms(10_400)), "10");
        assert_eq!(fmt_delay(ms(10_500)), "11");
        assert_eq!(fmt_delay(Duration::from_secs(86_400 * 5)), "432000");
    }

    #[test]
    fn result_line_matches_postfix_layout() {
        let id: QueueId = "4dL9mX0B2c".parse().unwrap_or(QueueId::from_micros(1_764_000_000_000_000));
        let line = ResultLine {
            queue_id: id,
            to: "u@example.test",
            orcpt: Some("rfc822;alias@example.test"),
            original: None,
            relay: "mbx1[127.0.0.1]:24",
            delay: Duration::from_millis(120),
            delays: [
                Duration::from_millis(10),
                Duration::ZERO,
                Duration::from_millis(20),
                Duration::from_millis(90),
            ],
            dsn: Status(2, 0, 0),
            status: LogStatus::Sent,
            text: "250 2.0.0 <u@example.test> Saved",
        };
        assert_eq!(
            line.format(),
            format!(
                "{id}: to=<u@example.test>, orig_to=<alias@example.test>, relay=mbx1[127.0.0.1]:24, delay=0.12, \
                 delays=0.01/0/0.02/0.09, dsn=2.0.0, status=sent (250 2.0.0 <u@example.test> Saved)"
            )
        );
        let same = ResultLine { orcpt: Some("rfc822;U@example.test"), ..line.clone() };
        assert!(!same.format().contains("orig_to"));
        // An alias target logs the address the client named, not its ORCPT.
        let alias =
            ResultLine { orcpt: Some("rfc822;other@x.test"), original: Some("team@example.test"), ..line };
        assert!(alias.format().contains(", orig_to=<team@example.test>,"));
    }

    #[test]
    fn active_line_matches_postfix_qmgr() {
        use sluice_queue::{BodyType, ClientInfo, DsnRet, Recipient};
        let id = QueueId::from_micros(1_764_000_000_000_000);
        let env = Envelope {
            sender: String::new(),
            recipients: vec![Recipient::new("a@b.test"), Recipient::new("c@d.test")],
            arrival: 0,
            size: 1234,
            client: ClientInfo {
                addr: None,
                name: String::new(),
                helo: String::new(),
                protocol: String::new(),
            },
            declared_size: None,
            body_type: BodyType::default(),
            smtputf8: false,
            ret: DsnRet::default(),
            envid: None,
            held: false,
            delay_warned: false,
            is_notification: false,
        };
        assert_eq!(active_line(id, &env), format!("{id}: from=<>, size=1234, nrcpt=2 (queue active)"));
    }

    #[test]
    fn orcpt_xtext_is_decoded() {
        assert_eq!(orcpt_address("rfc822;a+2Bb@c.test").as_deref(), Some("a+b@c.test"));
        assert_eq!(orcpt_address("x400;whatever"), None);
    }
}
