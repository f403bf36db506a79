//! SMTP smuggling: no end-of-data sequence other than CRLF.CRLF may end a
//! message, so a message can never hide a second one, in any
//! `smtpd_forbid_bare_newline` mode, whether the would-be second
//! transaction is pipelined after the message or not. What is stored is
//! checked byte for byte against what the mode promises.

mod common;

use common::clients::Raw;
use common::inbound::{Server, relay_settings};
use sluice::smtp::{BareNewline, Settings};

/// The end-of-data impostors, and what each becomes in the stored message
/// under `no` (kept as sent, except that a dot right after CRLF that does
/// not end its line is dot-stuffing and goes) and `normalize` (every bare
/// CR or LF becomes CRLF; a line holding only a dot is content).
/// (name, sent, stored under `no`, stored under `normalize`).
type Variant = (&'static str, &'static [u8], &'static [u8], &'static [u8]);

const VARIANTS: [Variant; 9] = [
    ("LF.LF", b"\n.\n", b"\n.\n", b"\r\n.\r\n"),
    ("CR.CR", b"\r.\r", b"\r.\r", b"\r\n.\r\n"),
    ("CRLF.LF", b"\r\n.\n", b"\r\n\n", b"\r\n.\r\n"),
    ("LF.CRLF", b"\n.\r\n", b"\n.\r\n", b"\r\n.\r\n"),
    ("CRLF.CR", b"\r\n.\r", b"\r\n\r", b"\r\n.\r\n"),
    ("CR.CRLF", b"\r.\r\n", b"\r.\r\n", b"\r\n.\r\n"),
    ("LF.CR", b"\n.\r", b"\n.\r", b"\r\n.\r\n"),
    ("CRLF.CRCRLF", b"\r\n.\r\r\n", b"\r\n\r\r\n", b"\r\n.\r\n\r\n"),
    ("bare CR and LF in a line", b"x\ry\nz", b"x\ry\nz", b"x\r\ny\r\nz"),
];

const HEAD: &[u8] = b"Subject: smuggle\r\n\r\nfirst";
const SMUGGLED: &[u8] = b"MAIL FROM:<evil@attacker.test>\r\nRCPT TO:<other@relay.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nsecond\r\n";

async fn open(server: &Server) -> Raw {
    let mut c = Raw::ehlo(server.addr).await;
    assert_eq!(c.cmd("MAIL FROM:<a@source.test>").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<user@relay.test>").await.code, 250);
    assert_eq!(c.cmd("DATA").await.code, 354);
    c
}

/// Sends one message containing `variant`, then (when `pipelined`) a
/// complete second transaction, the real end of data and QUIT in the same
/// write. Returns the replies up to QUIT's.
async fn attempt(server: &Server, variant: &[u8], pipelined: bool, bytewise: bool) -> Vec<String> {
    let mut c = open(server).await;
    let mut wire = HEAD.to_vec();
    wire.extend_from_slice(variant);
    if pipelined {
        wire.extend_from_slice(SMUGGLED);
    } else {
        wire.extend_from_slice(b"tail\r\n");
    }
    wire.extend_from_slice(b".\r\nQUIT\r\n");
    if bytewise {
        for b in &wire {
            c.send(std::slice::from_ref(b)).await;
        }
    } else {
        c.send(&wire).await;
    }
    let mut replies = Vec::new();
    while let Some(r) = c.reply().await {
        replies.push(r.text());
        if r.code == 221 {
            break;
        }
    }
    replies
}

fn expected(stored_variant: &[u8], pipelined: bool) -> Vec<u8> {
    let mut want = HEAD.to_vec();
    want.extend_from_slice(stored_variant);
    want.extend_from_slice(if pipelined { SMUGGLED } else { b"tail\r\n" });
    want
}

async fn check_mode(mode: BareNewline) {
    for (name, variant, as_no, as_normalized) in VARIANTS {
        for pipelined in [false, true] {
            for bytewise in [false, true] {
                let server = Server::start(Settings { bare_newline: mode, ..relay_settings() }).await;
                let replies = attempt(&server, variant, pipelined, bytewise).await;
                let what = format!("{mode:?} {name} pipelined={pipelined} bytewise={bytewise}: {replies:?}");
                let msgs = server.messages().await;
                // One reply for the one message, then QUIT: the smuggled
                // commands were never commands.
                assert_eq!(replies.len(), 2, "{what}");
                assert_eq!(replies[1], "221 2.0.0 Bye", "{what}");
                match mode {
                    BareNewline::Reject => {
                        assert!(replies[0].starts_with("550 5.5.2 Error: bare <"), "{what}");
                        assert!(msgs.is_empty(), "{what}");
                    }
                    BareNewline::No | BareNewline::Normalize => {
                        assert!(replies[0].starts_with("250 2.0.0 Ok: queued as "), "{what}");
                        assert_eq!(msgs.len(), 1, "{what}");
                        let env = &msgs[0].1;
                        assert_eq!(env.sender, "a@source.test", "{what}");
                        assert_eq!(env.recipients.len(), 1, "{what}");
                        let stored = common::inbound::strip_received(&msgs[0].2);
                        let want =
                            expected(if mode == BareNewline::No { as_no } else { as_normalized }, pipelined);
                        assert_eq!(
                            stored.escape_ascii().to_string(),
                            want.escape_ascii().to_string(),
                            "{what}"
                        );
                    }
                }
                server.stop().await;
            }
        }
    }
}

#[tokio::test]
async fn normalize_stores_crlf_and_never_ends_early() {
    check_mode(BareNewline::Normalize).await;
}

#[tokio::test]
async fn no_stores_bare_line_ends_unchanged_and_never_ends_early() {
    check_mode(BareNewline::No).await;
}

#[tokio::test]
async fn reject_refuses_the_message_and_never_ends_early() {
    check_mode(BareNewline::Reject).await;
}

#[tokio::test]
async fn reject_refuses_commands_with_bare_line_ends() {
    let server = Server::start(Settings { bare_newline: BareNewline::Reject, ..relay_settings() }).await;
    let mut c = Raw::connect(server.addr).await;
    c.send(b"EHLO client.test\n").await;
    assert_eq!(c.reply().await.expect("reply").text(), "550 5.5.2 Error: bare <LF> received");
    assert_eq!(c.cmd("EHLO client.test").await.code, 250);
    server.stop().await;

    // 521 also disconnects, as Postfix documents.
    let server = Server::start(Settings {
        bare_newline: BareNewline::Reject,
        bare_newline_reject_code: 521,
        ..relay_settings()
    })
    .await;
    let mut c = Raw::connect(server.addr).await;
    c.send(b"EHLO client.test\n").await;
    assert_eq!(c.reply().await.expect("reply").code, 521);
    assert!(c.closed().await);
    server.stop().await;
}

/// `smtpd_forbid_bare_newline_exclusions` (by default `$mynetworks`)
/// spares a client the refusal, not the normalization: what it sends is
/// relayed to mailbox servers like anyone's mail, so it is stored with
/// CRLF line ends (as Postfix, which stores lines, also does).
#[tokio::test]
async fn excluded_clients_are_normalized_not_refused_and_cannot_smuggle() {
    let settings = Settings {
        bare_newline: BareNewline::Reject,
        bare_newline_exclusions: vec!["127.0.0.0/8".parse().expect("literal")].into(),
        ..relay_settings()
    };
    let server = Server::start(settings).await;
    let replies = attempt(&server, b"\n.\n", true, false).await;
    assert!(replies[0].starts_with("250 2.0.0 Ok: queued as "), "{replies:?}");
    let msgs = server.messages().await;
    assert_eq!(msgs.len(), 1);
    assert_eq!(common::inbound::strip_received(&msgs[0].2), expected(b"\r\n.\r\n", true));
    server.stop().await;
}

#[tokio::test]
async fn normalize_accepts_commands_ending_in_bare_lf() {
    let server = Server::start(relay_settings()).await;
    let mut c = Raw::connect(server.addr).await;
    c.send(b"EHLO client.test\n").await;
    assert_eq!(c.reply().await.expect("reply").code, 250);
    c.send(b"MAIL FROM:<a@source.test>\n").await;
    assert_eq!(c.reply().await.expect("reply").code, 250);
    server.stop().await;
}
