//! How queue contents are shown: the `mailq` / `postqueue -p` layout, the
//! `postqueue -j` JSON objects, `queue show` and the qshape-like summary.
//!
//! Pure functions over plain data ([`MessageView`]), shared by the daemon's
//! admin socket and the direct fallback, so both print the same bytes.
//! What a client or a backend wrote (addresses, HELO name, reply texts,
//! headers) is shown through the one filter ([`crate::reply::printable`]):
//! an administrator's terminal never receives a control character from
//! the queue.
//! The `mailq` layout copies Postfix's column widths exactly (checked
//! against a real Postfix 3.7 in this module's tests), because scripts and
//! monitoring parse it.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use sluice_queue::{Envelope, QueueId, RcptState, UnixMillis};

use crate::reply::{IN_TEXT, printable};

/// Text from the queue as it may be shown.
fn shown(text: &str) -> String {
    printable(text, IN_TEXT).into_owned()
}

/// Postfix's queue names, used for the status mark and `queue_name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueName {
    /// Being delivered now, or never tried yet (`*` in mailq).
    Active,
    /// Waiting for a retry.
    Deferred,
    /// Held by the administrator (`!` in mailq).
    Hold,
}

impl QueueName {
    fn mark(self) -> &'static str {
        match self {
            QueueName::Active => "*",
            QueueName::Deferred => "",
            QueueName::Hold => "!",
        }
    }
}

/// One recipient as shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RcptView {
    pub address: String,
    /// `pending`, `deferred`, `delivered`, `bounced`.
    pub state: String,
    /// Last reply or reason, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub attempts: u32,
}

/// One message as the admin commands show it (no body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageView {
    pub queue_id: String,
    pub queue_name: QueueName,
    /// Unix seconds.
    pub arrival_time: u64,
    pub message_size: u64,
    pub sender: String,
    pub recipients: Vec<RcptView>,
    /// Next attempt (Unix milliseconds), when scheduled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt: Option<UnixMillis>,
    /// Client that sent it: `name[addr]`.
    pub client: String,
    pub helo: String,
    pub protocol: String,
}

impl MessageView {
    /// Builds the view of a queued message. `due` is its schedule entry
    /// (`None`: held or being delivered).
    pub fn new(id: QueueId, env: &Envelope, due: Option<UnixMillis>) -> MessageView {
        let recipients: Vec<RcptView> = env
            .recipients
            .iter()
            .map(|r| {
                let (state, reason) = match &r.state {
                    RcptState::Pending => ("pending", None),
                    RcptState::Deferred { reply } => ("deferred", Some(shown(reply))),
                    RcptState::Delivered { reply, .. } => ("delivered", Some(shown(reply))),
                    RcptState::Bounced { reply, .. } => ("bounced", Some(shown(reply))),
                };
                RcptView { address: shown(&r.address), state: state.into(), reason, attempts: r.attempts }
            })
            .collect();
        let deferred = recipients.iter().any(|r| r.state == "deferred");
        let queue_name = if env.held {
            QueueName::Hold
        } else if due.is_some() && deferred {
            QueueName::Deferred
        } else {
            QueueName::Active
        };
        let client = match env.client.addr {
            Some(a) => format!("{}[{}]", shown(&env.client.name), a),
            None => "local".to_owned(),
        };
        MessageView {
            queue_id: id.to_string(),
            queue_name,
            arrival_time: env.arrival / 1000,
            message_size: env.size,
            sender: shown(&env.sender),
            recipients,
            next_attempt: due,
            client,
            helo: shown(&env.client.helo),
            protocol: shown(&env.client.protocol),
        }
    }

    /// Recipients still waiting (what mailq lists).
    fn waiting(&self) -> impl Iterator<Item = &RcptView> {
        self.recipients.iter().filter(|r| r.state == "pending" || r.state == "deferred")
    }
}

/// The first 20 characters of C's `asctime()` for a Unix time in the local
/// time zone, as Postfix prints arrival times: `Wed Nov 25 07:55:51 ` (the
/// day padded with a space).
fn asctime20(unix_secs: u64) -> String {
    match chrono::DateTime::from_timestamp(i64::try_from(unix_secs).unwrap_or(0), 0) {
        Some(t) => t.with_timezone(&chrono::Local).format("%a %b %e %H:%M:%S ").to_string(),
        None => format!("{unix_secs:<20}"),
    }
}

/// The `mailq` / `postqueue -p` text for these messages.
pub fn mailq(messages: &[MessageView]) -> String {
    if messages.is_empty() {
        return "Mail queue is empty\n".to_owned();
    }
    let mut out = String::new();
    out.push_str("-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------\n");
    let mut bytes = 0u64;
    for m in messages {
        bytes += m.message_size;
        let id = format!("{}{}", m.queue_id, m.queue_name.mark());
        let _ = writeln!(
            out,
            "{:<11} {:>7} {:20.20} {}",
            id,
            m.message_size,
            asctime20(m.arrival_time),
            m.sender
        );
        // Postfix prints the (shared) delay reason once, right-aligned to
        // column 78 (longer reasons start at column 0), then the recipients indented by 41 columns.
        let mut last_reason: Option<&str> = None;
        for r in m.waiting() {
            if r.state == "deferred"
                && let Some(reason) = r.reason.as_deref()
                && last_reason != Some(reason)
            {
                let text = format!("({reason})");
                let _ = writeln!(out, "{text:>78}");
                last_reason = Some(reason);
            }
            let _ = writeln!(out, "{:41}{}", "", r.address);
        }
        out.push('\n');
    }
    let n = messages.len();
    let _ = writeln!(out, "-- {} Kbytes in {} Request{}.", bytes / 1024, n, if n == 1 { "" } else { "s" });
    out
}

/// One `postqueue -j` object per line.
pub fn mailq_json(messages: &[MessageView]) -> String {
    let mut out = String::new();
    for m in messages {
        let recipients: Vec<serde_json::Value> = m
            .waiting()
            .map(|r| {
                let mut o = serde_json::json!({ "address": r.address });
                if r.state == "deferred"
                    && let Some(reason) = &r.reason
                {
                    o["delay_reason"] = serde_json::Value::String(reason.clone());
                }
                o
            })
            .collect();
        let obj = serde_json::json!({
            "queue_name": m.queue_name,
            "queue_id": m.queue_id,
            "arrival_time": m.arrival_time,
            "message_size": m.message_size,
            "forced_expire": false,
            "sender": m.sender,
            "recipients": recipients,
        });
        out.push_str(&obj.to_string());
        out.push('\n');
    }
    out
}

/// `sluice queue show`: envelope, recipients with state, then headers.
pub fn show(m: &MessageView, headers: &str, now: UnixMillis) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "queue_id: {}", m.queue_id);
    let _ = writeln!(
        out,
        "queue: {}",
        serde_json::to_value(m.queue_name)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default()
    );
    let _ = writeln!(out, "arrival: {}({} ago)", asctime20(m.arrival_time), age(now / 1000, m.arrival_time));
    let _ = writeln!(out, "size: {}", m.message_size);
    let _ = writeln!(out, "sender: <{}>", m.sender);
    let _ = writeln!(out, "client: {} helo={} proto={}", m.client, m.helo, m.protocol);
    match m.next_attempt {
        Some(t) if t <= now => {
            let _ = writeln!(out, "next attempt: now");
        }
        Some(t) => {
            let _ = writeln!(out, "next attempt: {}(in {})", asctime20(t / 1000), age(t / 1000, now / 1000));
        }
        None if m.queue_name == QueueName::Hold => {
            let _ = writeln!(out, "next attempt: none (on hold)");
        }
        None => {
            let _ = writeln!(out, "next attempt: being delivered");
        }
    }
    for r in &m.recipients {
        let _ = write!(out, "to=<{}> state={} attempts={}", r.address, r.state, r.attempts);
        if let Some(reason) = &r.reason {
            let _ = write!(out, " ({reason})");
        }
        out.push('\n');
    }
    out.push('\n');
    // The headers as the client sent them, but never a control character
    // to the terminal (the line structure is kept).
    for line in headers.split_inclusive('\n') {
        let (text, end) = match line.strip_suffix("\r\n").or_else(|| line.strip_suffix('\n')) {
            Some(text) => (text, &line[text.len()..]),
            None => (line, ""),
        };
        out.push_str(&printable(text, IN_TEXT));
        out.push_str(end);
    }
    out
}

fn age(later: u64, earlier: u64) -> String {
    let s = later.saturating_sub(earlier);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// Age buckets of the summary, in minutes (qshape's default geometric
/// buckets: T, 5, 10, 20, 40, 80, 160, 320, 640, 1280, 1280+).
const BUCKETS_MIN: [u64; 9] = [5, 10, 20, 40, 80, 160, 320, 640, 1280];

/// The qshape-like table: rows are names (backends or domains) with a total
/// and counts per age bucket; `rows` is (name, age in seconds) per recipient.
pub fn shape(title: &str, rows: &[(String, u64)]) -> String {
    use std::collections::BTreeMap;
    let mut table: BTreeMap<&str, [u64; 10]> = BTreeMap::new();
    let mut total = [0u64; 10];
    for (name, age_s) in rows {
        let mins = age_s / 60;
        let b = BUCKETS_MIN.iter().position(|&lim| mins < lim).unwrap_or(BUCKETS_MIN.len());
        table.entry(name.as_str()).or_default()[b] += 1;
        total[b] += 1;
    }
    let width = table.keys().map(|k| k.len()).max().unwrap_or(0).max(title.len()).max(5);
    let mut out = String::new();
    let _ = write!(out, "{:>width$} {:>6}", title, "T");
    for b in BUCKETS_MIN {
        let _ = write!(out, " {b:>5}");
    }
    let _ = writeln!(out, " {:>5}", format!("{}+", BUCKETS_MIN[BUCKETS_MIN.len() - 1]));
    let line = |out: &mut String, name: &str, counts: &[u64; 10]| {
        let _ = write!(out, "{:>width$} {:>6}", name, counts.iter().sum::<u64>());
        for c in counts {
            let _ = write!(out, " {c:>5}");
        }
        out.push('\n');
    };
    line(&mut out, "TOTAL", &total);
    let mut sorted: Vec<_> = table.into_iter().collect();
    sorted.sort_by(|a, b| b.1.iter().sum::<u64>().cmp(&a.1.iter().sum::<u64>()).then(a.0.cmp(b.0)));
    for (name, counts) in sorted {
        line(&mut out, name, &counts);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(id: &str, q: QueueName, rcpts: &[(&str, &str, Option<&str>)]) -> MessageView {
        MessageView {
            queue_id: id.into(),
            queue_name: q,
            arrival_time: 1_795_593_351, // Wed Nov 25 2026 07:55:51 UTC
            message_size: 398,
            sender: "s@x.test".into(),
            recipients: rcpts
                .iter()
                .map(|(a, s, r)| RcptView {
                    address: (*a).into(),
                    state: (*s).into(),
                    reason: r.map(String::from),
                    attempts: 1,
                })
                .collect(),
            next_attempt: None,
            client: "localhost[127.0.0.1]".into(),
            helo: "h".into(),
            protocol: "ESMTP".into(),
        }
    }

    /// Layout as printed by Postfix 3.7's `postqueue -p` for a held message
    /// with two deferred recipients (an 11-character Postfix ID; ours are
    /// 10 characters and get the pad space Postfix's `%-11s` gives short IDs).
    #[test]
    fn mailq_layout_matches_postfix() {
        let reason = "connect to 127.0.0.1[127.0.0.1]:1: Connection refused";
        let m = view(
            "9291398C0B9",
            QueueName::Hold,
            &[("a@example.test", "deferred", Some(reason)), ("b@example.test", "deferred", Some(reason))],
        );
        let expected = "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------\n\
9291398C0B9!     398 {date} s@x.test\n\
\x20                      (connect to 127.0.0.1[127.0.0.1]:1: Connection refused)\n\
\x20                                        a@example.test\n\
\x20                                        b@example.test\n\
\n\
-- 0 Kbytes in 1 Request.\n";
        // Postfix printed `Wed Nov 25 07:55:51` on a UTC machine; the zone is the host's.
        let expected = expected.replace("{date}", &asctime20(1_795_593_351));
        assert_eq!(mailq(&[m]), expected);
    }

    #[test]
    fn deferred_message_has_no_mark_and_delivered_recipients_are_not_listed() {
        let m = view(
            "4Hx0000000",
            QueueName::Deferred,
            &[
                ("a@example.test", "delivered", Some("250 ok")),
                ("b@example.test", "deferred", Some("451 later")),
            ],
        );
        let text = mailq(&[m]);
        let first = format!("\n4Hx0000000      398 {} s@x.test\n", asctime20(1_795_593_351));
        assert!(text.contains(&first), "{text}");
        assert!(!text.contains("a@example.test"));
        assert!(text.contains("(451 later)"));
    }

    #[test]
    fn empty_queue_says_so() {
        assert_eq!(mailq(&[]), "Mail queue is empty\n");
    }

    #[test]
    fn json_lines_follow_postqueue_j() {
        let m = view("4Hx0000000", QueueName::Deferred, &[("b@example.test", "deferred", Some("451 later"))]);
        let line = mailq_json(&[m]);
        let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
        assert_eq!(v["queue_name"], "deferred");
        assert_eq!(v["queue_id"], "4Hx0000000");
        assert_eq!(v["arrival_time"], 1_795_593_351u64);
        assert_eq!(v["message_size"], 398);
        assert_eq!(v["recipients"][0]["address"], "b@example.test");
        assert_eq!(v["recipients"][0]["delay_reason"], "451 later");
    }

    #[test]
    fn nothing_a_client_or_backend_wrote_reaches_the_terminal_unfiltered() {
        let mut env = Envelope {
            sender: "\"\u{1b}]0;x\u{7}\"@a.test".into(),
            recipients: vec![sluice_queue::Recipient::new("b\u{0}@x.test")],
            ..Envelope::default()
        };
        env.recipients[0].state = RcptState::Deferred { reply: "451 4.3.0 busy\u{1b}[2J".into() };
        env.client.helo = "h\u{9b}1m".into();
        let id: QueueId = "4Hx0000000".parse().expect("queue id");
        let m = MessageView::new(id, &env, Some(0));
        let text = mailq(std::slice::from_ref(&m)) + &mailq_json(std::slice::from_ref(&m));
        let text = text + &show(&m, "Subject: hi\u{1b}[31m\r\nX: y\r\n", 0);
        assert!(!text.chars().any(|c| c.is_control() && c != '\n' && c != '\r'), "{text:?}");
        assert!(text.contains("\"?]0;x?\"@a.test"), "{text}");
        assert!(text.contains("(451 4.3.0 busy?[2J)"), "{text}");
        assert!(text.contains("Subject: hi?[31m\r\nX: y\r\n"), "{text:?}");
    }

    #[test]
    fn asctime_pads_single_digit_days() {
        // 2026-11-05 12:00:00 UTC: the 4th, 5th or 6th in any zone.
        let s = asctime20(1_793_880_000);
        assert_eq!(s.len(), 20, "{s:?}");
        assert!(["Nov  4 ", "Nov  5 ", "Nov  6 "].iter().any(|d| s[4..].starts_with(d)), "{s:?}");
        assert!(s.ends_with(' '));
    }

    #[test]
    fn shape_buckets_by_age() {
        let rows = vec![("mbx1".to_string(), 0), ("mbx1".to_string(), 601), ("mbx2".to_string(), 100_000)];
        let s = shape("backend", &rows);
        let lines: Vec<&str> = s.lines().collect();
        assert!(lines[1].trim_start().starts_with("TOTAL      3     1     0     1"), "{s}");
        assert!(lines[2].trim_start().starts_with("mbx1      2     1     0     1"), "{s}");
        assert!(lines[3].trim_end().ends_with("1"), "{s}");
    }
}
