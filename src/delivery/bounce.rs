//! Delivery status notifications (RFC 3464): the non-delivery report sent
//! to the envelope sender when recipients bounce or expire, the one-time
//! delay warning (`delay_warning_time`), and the success report for
//! `NOTIFY=SUCCESS` when the backend could not take the request further.
//!
//! Owns who is told what (the `NOTIFY` rules, nothing for the null sender
//! or for sluice's own notifications), the report's text and structure
//! (`multipart/report; report-type=delivery-status`, built with
//! `mail-builder`), how much of the original goes back (`RET`), and the
//! envelope the report is queued with (null sender, `is_notification`).
//! Never queues or delivers: the scheduler enqueues what this builds, and it
//! is routed like any other mail.

use std::borrow::Cow;

use mail_builder::MessageBuilder;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::date::Date;
use mail_builder::headers::raw::Raw;
use mail_builder::mime::MimePart;
use sluice_queue::{BodyType, ClientInfo, DsnRet, Envelope, Notify, QueueId, Recipient, UnixMillis};

use crate::delivery::client::wire::header_section;
use crate::reply::Status;

/// Which report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Some recipients failed for good (or expired).
    Failure,
    /// Some recipients are still being retried after `delay_warning_time`.
    Delay,
    /// Delivered, and the recipient asked `NOTIFY=SUCCESS`.
    Success,
}

/// RFC 3464 `Action:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Failed,
    Delayed,
    Delivered,
    /// Handed to a server that does not do DSN.
    Relayed,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Delivered => "delivered",
            Action::Relayed => "relayed",
        }
    }
}

/// One recipient's lines in a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportRcpt {
    pub address: String,
    /// `ORCPT` as received (`rfc822;addr`).
    pub orcpt: Option<String>,
    pub action: Action,
    pub status: Status,
    /// The backend that answered (`host[addr]`), if one did.
    pub remote_mta: Option<String>,
    /// The backend's reply (`550 5.1.1 ...`), if it gave one.
    pub diagnostic: Option<String>,
    /// The explanation shown to people.
    pub text: String,
}

/// Whether a recipient's `NOTIFY` asks for a report of this kind
/// (RFC 3461 4.1: without `NOTIFY`, failures and delays are reported,
/// successes are not).
pub fn wanted(kind: Kind, notify: &Notify) -> bool {
    if !notify.specified {
        return kind != Kind::Success;
    }
    if notify.never {
        return false;
    }
    match kind {
        Kind::Failure => notify.failure,
        Kind::Delay => notify.delay,
        Kind::Success => notify.success,
    }
}

/// Whether a message's sender may be sent a report at all: not the null
/// sender, and not one of sluice's own notifications (a failed bounce is
/// logged, never bounced).
pub fn reportable(envelope: &Envelope) -> bool {
    !envelope.sender.is_empty() && !envelope.is_notification
}

/// Everything a report is built from.
#[derive(Debug, Clone)]
pub struct Report<'a> {
    pub kind: Kind,
    pub queue_id: QueueId,
    pub envelope: &'a Envelope,
    pub rcpts: Vec<ReportRcpt>,
    /// `myhostname`.
    pub reporting_mta: &'a str,
    pub now: UnixMillis,
    /// What is returned of the original: the whole message when it is
    /// returned whole (`RET=FULL`, at most `size_limit`), else at least
    /// its header section (or the start of a very long one).
    pub original: &'a [u8],
    /// The original's full size.
    pub original_size: u64,
    /// For delay warnings: how long the message will still be retried.
    pub retry_until: Option<UnixMillis>,
    /// `bounce_size_limit`: the largest original returned whole with
    /// `RET=FULL`; a larger one comes back as its headers only.
    pub size_limit: usize,
}

fn rfc822_date(ms: UnixMillis) -> String {
    Date::new((ms / 1000) as i64).to_rfc822()
}

impl Report<'_> {
    fn subject(&self) -> &'static str {
        match self.kind {
            Kind::Failure => "Undelivered Mail Returned to Sender",
            Kind::Delay => "Delayed Mail (still being retried)",
            Kind::Success => "Successful Mail Delivery Report",
        }
    }

    fn human_text(&self) -> String {
        let mut t = format!("This is the mail system at host {}.\r\n\r\n", self.reporting_mta);
        match self.kind {
            Kind::Failure => t.push_str(
                "Your message could not be delivered to one or more of its\r\n\
                 recipients; the reasons are below. The message (or its\r\n\
                 headers) is attached.\r\n\r\n\
                 If you need help, write to postmaster and include this report.\r\n",
            ),
            Kind::Delay => {
                let age = self.now.saturating_sub(self.envelope.arrival) / 3_600_000;
                t.push_str("THIS IS A WARNING ONLY. YOU DO NOT NEED TO RESEND YOUR MESSAGE.\r\n\r\n");
                t.push_str(&format!(
                    "Your message has not yet been delivered to some of its recipients\r\n\
                     after {age} hour(s) of trying; the reasons are below.\r\n"
                ));
                if let Some(until) = self.retry_until {
                    t.push_str(&format!("Delivery will be retried until {}.\r\n", rfc822_date(until)));
                }
            }
            Kind::Success => t.push_str(
                "Your message was delivered to the recipients below, as you\r\n\
                 asked to be told.\r\n",
            ),
        }
        t.push_str("\r\n");
        for r in &self.rcpts {
            t.push_str(&format!("<{}>: {}\r\n", r.address, r.text.replace(['\r', '\n'], " ")));
        }
        t
    }

    fn status_part(&self) -> String {
        let e = self.envelope;
        let mut s = format!("Reporting-MTA: dns; {}\r\n", self.reporting_mta);
        s.push_str(&format!("X-Sluice-Queue-ID: {}\r\n", self.queue_id));
        s.push_str(&format!("X-Sluice-Sender: rfc822; {}\r\n", e.sender));
        if let Some(envid) = &e.envid {
            s.push_str(&format!("Original-Envelope-Id: {envid}\r\n"));
        }
        s.push_str(&format!("Arrival-Date: {}\r\n", rfc822_date(e.arrival)));
        for r in &self.rcpts {
            s.push_str("\r\n");
            let kind = if r.address.is_ascii() { "rfc822" } else { "utf-8" };
            s.push_str(&format!("Final-Recipient: {kind}; {}\r\n", r.address));
            if let Some(o) = &r.orcpt {
                s.push_str(&format!("Original-Recipient: {}\r\n", o.replacen(';', "; ", 1)));
            }
            s.push_str(&format!("Action: {}\r\n", r.action.as_str()));
            s.push_str(&format!("Status: {}\r\n", r.status));
            if let Some(m) = &r.remote_mta {
                s.push_str(&format!("Remote-MTA: dns; {m}\r\n"));
            }
            if let Some(d) = &r.diagnostic {
                s.push_str(&format!("Diagnostic-Code: smtp; {}\r\n", d.replace(['\r', '\n'], " ")));
            }
            if self.kind == Kind::Delay
                && let Some(until) = self.retry_until
            {
                s.push_str(&format!("Will-Retry-Until: {}\r\n", rfc822_date(until)));
            }
        }
        s
    }

    /// The whole report message, CRLF line ends.
    pub fn build(&self) -> Vec<u8> {
        let full = self.kind == Kind::Failure
            && self.envelope.ret == DsnRet::Full
            && self.original_size <= self.size_limit as u64
            && self.original.len() as u64 == self.original_size;
        let returned: &[u8] = if full { self.original } else { header_section(self.original) };
        let cte = if returned.is_ascii() { "7bit" } else { "8bit" };
        let returned_part = if full {
            MimePart::new(ContentType::new("message/rfc822"), returned.to_vec())
        } else {
            MimePart::new(ContentType::new("text/rfc822-headers"), returned.to_vec())
        }
        .transfer_encoding(cte);
        let description = match self.kind {
            Kind::Failure => "Undelivered Message",
            Kind::Delay => "Delayed Message",
            Kind::Success => "Delivered Message",
        };
        let status_cte = if self.status_part().is_ascii() { "7bit" } else { "8bit" };
        let parts = vec![
            MimePart::new(ContentType::new("text/plain").attribute("charset", "utf-8"), self.human_text())
                .header("Content-Description", Raw::new("Notification")),
            MimePart::new(ContentType::new("message/delivery-status"), self.status_part().into_bytes())
                .header("Content-Description", Raw::new("Delivery report"))
                .transfer_encoding(status_cte),
            returned_part.header("Content-Description", Raw::new(Cow::Borrowed(description))),
        ];
        let report = MimePart::new(
            ContentType::new("multipart/report").attribute("report-type", "delivery-status"),
            parts,
        );
        let from = format!("MAILER-DAEMON@{}", self.reporting_mta);
        MessageBuilder::new()
            .from(("Mail Delivery System", from.as_str()))
            .to(self.envelope.sender.as_str())
            .subject(self.subject())
            .date(Date::new((self.now / 1000) as i64))
            .message_id(format!("{}.{}@{}", self.queue_id, self.now, self.reporting_mta))
            .header("Auto-Submitted", Raw::new("auto-replied"))
            .body(report)
            .write_to_vec()
            .unwrap_or_default()
    }

    /// The envelope the report is queued with: from the null sender, to the
    /// original sender, marked as sluice's own notification.
    pub fn envelope(&self, body: &[u8]) -> Envelope {
        let original = self.envelope;
        Envelope {
            sender: String::new(),
            recipients: vec![Recipient::new(original.sender.clone())],
            arrival: self.now,
            size: body.len() as u64,
            client: ClientInfo {
                addr: None,
                name: "localhost".into(),
                helo: self.reporting_mta.to_owned(),
                protocol: "LOCAL".into(),
            },
            declared_size: None,
            body_type: if body.is_ascii() { BodyType::SevenBit } else { BodyType::EightBitMime },
            smtputf8: !original.sender.is_ascii(),
            ret: DsnRet::Unspecified,
            envid: None,
            held: false,
            delay_warned: false,
            is_notification: true,
        }
    }
}

/// The enhanced status code inside a stored deferral text (`... said: 452
/// 4.2.2 ...`), for reporting an expired recipient; `4.4.7` (delivery time
/// expired) when there is none.
pub fn status_in(text: &str) -> Status {
    text.split_whitespace().find_map(Status::parse).unwrap_or(Status(4, 4, 7))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::{MessageParser, MimeHeaders};

    fn envelope(ret: DsnRet) -> Envelope {
        Envelope {
            sender: "alice@sender.test".into(),
            recipients: vec![Recipient::new("bob@dest.test")],
            arrival: 1_764_000_000_000,
            size: 0,
            client: ClientInfo {
                addr: None,
                name: "mx.sender.test".into(),
                helo: "mx.sender.test".into(),
                protocol: "ESMTP".into(),
            },
            declared_size: None,
            body_type: BodyType::Unspecified,
            smtputf8: false,
            ret,
            envid: Some("ENV+2B42".into()),
            held: false,
            delay_warned: false,
            is_notification: false,
        }
    }

    const ORIGINAL: &[u8] =
        b"From: alice@sender.test\r\nTo: bob@dest.test\r\nSubject: lunch\r\n\r\nsecret body\r\n";

    fn failed(addr: &str) -> ReportRcpt {
        ReportRcpt {
            address: addr.into(),
            orcpt: Some(format!("rfc822;{addr}")),
            action: Action::Failed,
            status: Status(5, 1, 1),
            remote_mta: Some("mbx1[127.0.0.1]".into()),
            diagnostic: Some("550 5.1.1 <bob@dest.test> User doesn't exist".into()),
            text: "host mbx1[127.0.0.1] said: 550 5.1.1 <bob@dest.test> User doesn't exist (in reply to RCPT TO command)".into(),
        }
    }

    fn report<'a>(kind: Kind, env: &'a Envelope, rcpts: Vec<ReportRcpt>) -> Report<'a> {
        Report {
            kind,
            queue_id: QueueId::from_micros(1_764_000_000_123_456),
            envelope: env,
            rcpts,
            reporting_mta: "mx.sluice.test",
            now: 1_764_000_100_000,
            original: ORIGINAL,
            original_size: ORIGINAL.len() as u64,
            retry_until: Some(1_764_432_000_000),
            size_limit: 50_000,
        }
    }

    #[test]
    fn failure_report_is_a_delivery_status_multipart_with_headers_only() {
        let env = envelope(DsnRet::Unspecified);
        let r = report(Kind::Failure, &env, vec![failed("bob@dest.test")]);
        let bytes = r.build();
        let msg = MessageParser::default().parse(&bytes).expect("parses");
        let ct = msg.content_type().expect("content type");
        assert_eq!((ct.ctype(), ct.subtype()), ("multipart", Some("report")));
        assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
        assert_eq!(msg.subject(), Some("Undelivered Mail Returned to Sender"));
        assert_eq!(
            msg.from().and_then(|a| a.first()).and_then(|a| a.address()),
            Some("MAILER-DAEMON@mx.sluice.test")
        );
        assert_eq!(msg.to().and_then(|a| a.first()).and_then(|a| a.address()), Some("alice@sender.test"));
        assert_eq!(msg.header_raw("Auto-Submitted").map(str::trim), Some("auto-replied"));

        let parts: Vec<_> = msg.parts.iter().skip(1).collect();
        assert_eq!(parts.len(), 3);
        let text = std::str::from_utf8(parts[0].contents()).unwrap();
        assert!(text.contains("<bob@dest.test>: host mbx1[127.0.0.1] said: 550 5.1.1"), "{text}");
        let ct = parts[1].content_type().unwrap();
        assert_eq!((ct.ctype(), ct.subtype()), ("message", Some("delivery-status")));
        let status = std::str::from_utf8(parts[1].contents()).unwrap();
        for line in [
            "Reporting-MTA: dns; mx.sluice.test",
            "Original-Envelope-Id: ENV+2B42",
            "Final-Recipient: rfc822; bob@dest.test",
            "Original-Recipient: rfc822; bob@dest.test",
            "Action: failed",
            "Status: 5.1.1",
            "Remote-MTA: dns; mbx1[127.0.0.1]",
            "Diagnostic-Code: smtp; 550 5.1.1 <bob@dest.test> User doesn't exist",
        ] {
            assert!(status.contains(line), "missing {line:?} in\n{status}");
        }
        let ct = parts[2].content_type().unwrap();
        assert_eq!((ct.ctype(), ct.subtype()), ("text", Some("rfc822-headers")));
        let returned = parts[2].contents();
        assert!(returned.starts_with(b"From: alice@sender.test"));
        assert!(!returned.windows(6).any(|w| w == b"secret"), "RET unspecified returns headers only");
    }

    #[test]
    fn ret_full_returns_the_whole_message() {
        let env = envelope(DsnRet::Full);
        let bytes = report(Kind::Failure, &env, vec![failed("bob@dest.test")]).build();
        let msg = MessageParser::default().parse(&bytes).unwrap();
        let returned = &msg.parts[3];
        let ct = returned.content_type().unwrap();
        assert_eq!((ct.ctype(), ct.subtype()), ("message", Some("rfc822")));
        let inner = returned.message().expect("nested message");
        assert_eq!(inner.subject(), Some("lunch"));
        assert_eq!(inner.body_text(0).as_deref().map(str::trim), Some("secret body"));
    }

    #[test]
    fn ret_full_past_bounce_size_limit_returns_the_headers_only() {
        let env = envelope(DsnRet::Full);
        let mut r = report(Kind::Failure, &env, vec![failed("bob@dest.test")]);
        r.size_limit = ORIGINAL.len() - 1;
        let msg = MessageParser::default().parse(&r.build()).unwrap().into_owned();
        assert_eq!(msg.parts[3].content_type().unwrap().subtype(), Some("rfc822-headers"));
        r.size_limit = ORIGINAL.len();
        let msg = MessageParser::default().parse(&r.build()).unwrap().into_owned();
        assert_eq!(msg.parts[3].content_type().unwrap().subtype(), Some("rfc822"));
    }

    #[test]
    fn delay_warning_says_delayed_and_until_when() {
        let env = envelope(DsnRet::Full);
        let mut r = failed("bob@dest.test");
        r.action = Action::Delayed;
        r.status = Status(4, 2, 2);
        let bytes = report(Kind::Delay, &env, vec![r]).build();
        let msg = MessageParser::default().parse(&bytes).unwrap();
        assert_eq!(msg.subject(), Some("Delayed Mail (still being retried)"));
        let status = std::str::from_utf8(msg.parts[2].contents()).unwrap();
        assert!(status.contains("Action: delayed") && status.contains("Will-Retry-Until: "), "{status}");
        // Delay warnings never return the body, even with RET=FULL.
        assert_eq!(msg.parts[3].content_type().unwrap().subtype(), Some("rfc822-headers"));
    }

    #[test]
    fn report_envelope_is_from_the_null_sender_and_marked() {
        let env = envelope(DsnRet::Unspecified);
        let r = report(Kind::Failure, &env, vec![failed("bob@dest.test")]);
        let body = r.build();
        let e = r.envelope(&body);
        assert_eq!(e.sender, "");
        assert_eq!(e.recipients[0].address, "alice@sender.test");
        assert!(e.is_notification);
        assert_eq!(e.size, body.len() as u64);
    }

    #[test]
    fn notify_rules() {
        let none = Notify::default();
        assert!(wanted(Kind::Failure, &none) && wanted(Kind::Delay, &none) && !wanted(Kind::Success, &none));
        let never = Notify { specified: true, never: true, ..Notify::default() };
        assert!(!wanted(Kind::Failure, &never) && !wanted(Kind::Delay, &never));
        let success = Notify { specified: true, success: true, ..Notify::default() };
        assert!(wanted(Kind::Success, &success) && !wanted(Kind::Failure, &success));
        let mut env = envelope(DsnRet::Unspecified);
        assert!(reportable(&env));
        env.sender.clear();
        assert!(!reportable(&env), "never to the null sender");
        env.sender = "x@y".into();
        env.is_notification = true;
        assert!(!reportable(&env), "never about our own notifications");
    }

    #[test]
    fn status_is_found_in_stored_texts() {
        assert_eq!(
            status_in("host x said: 452 4.2.2 Mailbox full (in reply to end of DATA command)"),
            Status(4, 2, 2)
        );
        assert_eq!(status_in("connect to x[127.0.0.1]:24: Connection refused"), Status(4, 4, 7));
    }
}
