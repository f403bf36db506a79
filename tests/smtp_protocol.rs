//! The inbound server's protocol, driven byte by byte from a raw client:
//! every extension, pipelining, BDAT, relay control, restrictions and
//! reloads (limits, timeouts and backpressure are in `smtp_session_limits.rs`).
//! The server runs in-process on a real queue in a temp dir; what is checked
//! in the queue is what a delivery would send.

mod common;

use std::time::Duration;

use common::clients::Raw;
use common::inbound::{RELAY_DOMAIN, Server, relay_settings};
use sluice::smtp::{BareNewline, Settings};
use sluice_queue::{BodyType, DsnRet};

fn status_ok(r: &common::clients::Reply) -> bool {
    // Every reply after the greeting and EHLO carries an enhanced code of
    // the reply's class.
    let first = r.lines[0].split(' ').next().unwrap_or("");
    let parts: Vec<_> = first.split('.').collect();
    parts.len() == 3
        && parts[0] == (r.code / 100).to_string()
        && parts.iter().all(|p| p.parse::<u16>().is_ok())
}

#[tokio::test]
async fn ehlo_advertises_every_extension() {
    let server = Server::start(relay_settings()).await;
    let mut c = Raw::connect(server.addr).await;
    let r = c.cmd("EHLO client.test").await;
    assert_eq!(r.code, 250);
    assert_eq!(r.lines[0], "mx.test");
    for ext in [
        "PIPELINING",
        "SIZE 1000000",
        "ENHANCEDSTATUSCODES",
        "8BITMIME",
        "DSN",
        "SMTPUTF8",
        "CHUNKING",
        "BINARYMIME",
    ] {
        assert!(r.lines.iter().any(|l| l == ext), "{ext} missing from {r:?}");
    }
    // No TLS configured: no STARTTLS; VRFY is off by default.
    assert!(!r.lines.iter().any(|l| l == "STARTTLS" || l == "VRFY"), "{r:?}");
    let vrfy = c.cmd("VRFY user@relay.test").await;
    assert_eq!(vrfy.text(), "502 5.5.1 VRFY command is disabled");
    let help = c.cmd("HELP").await;
    assert_eq!(help.code, 214);
    for (cmd, want) in [("NOOP", 250), ("RSET", 250), ("EXPN x", 502), ("AUTH PLAIN", 503), ("QUIT", 221)] {
        let r = c.cmd(cmd).await;
        assert_eq!(r.code, want, "{cmd}: {r:?}");
        assert!(status_ok(&r), "{cmd}: {r:?}");
    }
    assert!(c.closed().await);
    server.stop().await;
}

#[tokio::test]
async fn pipelined_good_and_bad_commands_are_answered_in_order() {
    let server = Server::start(relay_settings()).await;
    let mut c = Raw::ehlo(server.addr).await;
    c.send(
        b"MAIL FROM:<sender@source.test>\r\n\
          RCPT TO:<user@relay.test>\r\n\
          RCPT TO:<victim@elsewhere.test>\r\n\
          RCPT TO:<nobody@relay.test>\r\n\
          BOGUS command\r\n\
          RCPT TO:<other@relay.test>\r\n\
          RCPT TO:<broken\r\n\
          DATA\r\n",
    )
    .await;
    let r = c.replies(8).await;
    let got: Vec<String> = r.iter().map(|r| r.text()).collect();
    assert_eq!(got[0], "250 2.1.0 Ok");
    assert_eq!(got[1], "250 2.1.5 Ok");
    assert_eq!(got[2], "554 5.7.1 <victim@elsewhere.test>: Relay access denied");
    assert_eq!(
        got[3],
        "550 5.1.1 <nobody@relay.test>: Recipient address rejected: User unknown in relay recipient table"
    );
    assert_eq!(got[4], "502 5.5.2 Error: command not recognized");
    assert_eq!(got[5], "250 2.1.5 Ok");
    assert_eq!(r[6].code, 501, "{got:?}");
    assert_eq!(r[7].code, 354, "{got:?}");
    for reply in &r[..7] {
        assert!(status_ok(reply), "{reply:?}");
    }
    c.send(b"Subject: pipelined\r\n\r\nhello\r\n.\r\nQUIT\r\n").await;
    let r = c.replies(2).await;
    assert!(r[0].text().starts_with("250 2.0.0 Ok: queued as "), "{r:?}");
    assert_eq!(r[1].text(), "221 2.0.0 Bye");
    let msgs = server.messages().await;
    assert_eq!(msgs.len(), 1);
    let rcpts: Vec<_> = msgs[0].1.recipients.iter().map(|r| r.address.as_str()).collect();
    assert_eq!(rcpts, ["user@relay.test", "other@relay.test"]);
    assert_eq!(msgs[0].1.sender, "sender@source.test");
    // The queue ID in the reply is the stored message's.
    assert!(r[0].text().ends_with(&msgs[0].0.to_string()));
    server.stop().await;
}

#[tokio::test]
async fn client_talking_before_the_greeting_is_refused() {
    let settings = Settings { greet_pause: Duration::from_millis(300), ..relay_settings() };
    let server = Server::start(settings).await;
    let mut c = Raw::connect_silent(server.addr).await;
    c.send(b"EHLO early.test\r\nMAIL FROM:<spam@bot.test>\r\n").await;
    let r = c.reply().await.expect("reply");
    assert_eq!(r.text(), "554 5.5.0 Error: SMTP protocol synchronization");
    assert!(c.closed().await);
    // A client that waits is greeted.
    let mut ok = Raw::connect(server.addr).await;
    assert_eq!(ok.cmd("QUIT").await.code, 221);
    server.stop().await;
}

#[tokio::test]
async fn commands_pipelined_after_ehlo_or_data_are_refused() {
    let server = Server::start(relay_settings()).await;
    let mut c = Raw::connect(server.addr).await;
    c.send(b"EHLO client.test\r\nMAIL FROM:<a@source.test>\r\n").await;
    assert_eq!(c.reply().await.expect("reply").text(), "554 5.5.0 Error: SMTP protocol synchronization");
    assert!(c.closed().await);

    let mut c = Raw::ehlo(server.addr).await;
    c.send(b"MAIL FROM:<a@source.test>\r\nRCPT TO:<user@relay.test>\r\nDATA\r\nSubject: early\r\n").await;
    let r = c.replies(3).await;
    assert_eq!(r[2].text(), "554 5.5.0 Error: SMTP protocol synchronization");
    assert!(c.closed().await);
    assert!(server.messages().await.is_empty());

    // Without EHLO there is no PIPELINING at all.
    let mut c = Raw::connect(server.addr).await;
    assert_eq!(c.cmd("HELO client.test").await.text(), "250 mx.test");
    c.send(b"MAIL FROM:<a@source.test>\r\nRCPT TO:<user@relay.test>\r\n").await;
    assert_eq!(c.reply().await.expect("reply").code, 554);
    server.stop().await;
}

#[tokio::test]
async fn sloppy_but_common_syntax_is_accepted() {
    let server = Server::start(relay_settings()).await;
    let mut c = Raw::connect(server.addr).await;
    assert_eq!(c.cmd("ehlo client.test").await.code, 250);
    assert_eq!(c.cmd("mail from: <>").await.text(), "250 2.1.0 Ok");
    assert_eq!(c.cmd("rcpt to: <User@Relay.Test>").await.text(), "250 2.1.5 Ok");
    assert_eq!(c.cmd("data").await.code, 354);
    c.send(b"Subject: bounce\r\n\r\nnull sender\r\n.\r\n").await;
    assert_eq!(c.reply().await.expect("reply").code, 250);
    let msgs = server.messages().await;
    assert_eq!(msgs[0].1.sender, "");
    assert_eq!(msgs[0].1.recipients[0].address, "User@Relay.Test");
    server.stop().await;
}

#[tokio::test]
async fn content_is_stored_byte_exact_after_dot_unstuffing() {
    let server = Server::start(relay_settings()).await;
    let mut c = Raw::ehlo(server.addr).await;
    let long = "x".repeat(998);
    let body = format!(
        "From: a@source.test\r\nSubject: dots\r\n\r\n.leading dot\r\n..two dots\r\n.\r\n\r\n\r\n{long}\r\n\
         8bit: \u{e9}t\u{e9}\r\ntrailing spaces   \r\n\tTab\r\nlast"
    );
    // What the client puts on the wire: dot-stuffed, then CRLF.CRLF.
    let mut wire = String::new();
    for line in format!("{body}\r\n").split_inclusive("\r\n") {
        if line.starts_with('.') {
            wire.push('.');
        }
        wire.push_str(line);
    }
    assert_eq!(c.cmd("MAIL FROM:<a@source.test> BODY=8BITMIME").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<user@relay.test>").await.code, 250);
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send(wire.as_bytes()).await;
    c.send(b".\r\n").await;
    let r = c.reply().await.expect("reply");
    assert!(r.text().starts_with("250 2.0.0 Ok: queued as"), "{r:?}");
    let stored = server.only_body().await;
    assert_eq!(String::from_utf8_lossy(&stored), format!("{body}\r\n"));
    assert_eq!(stored, format!("{body}\r\n").into_bytes());
    let msgs = server.messages().await;
    assert_eq!(msgs[0].1.body_type, BodyType::EightBitMime);
    // The envelope's size is what is stored, our Received header included.
    assert_eq!(msgs[0].1.size, msgs[0].2.len() as u64);
    server.stop().await;
}

#[tokio::test]
async fn a_line_over_998_octets_is_rejected() {
    let server = Server::start(relay_settings()).await;
    let mut c = Raw::ehlo(server.addr).await;
    c.cmd("MAIL FROM:<a@source.test>").await;
    c.cmd("RCPT TO:<user@relay.test>").await;
    c.cmd("DATA").await;
    c.send(format!("Subject: long\r\n\r\n{}\r\n.\r\n", "y".repeat(999)).as_bytes()).await;
    assert_eq!(c.reply().await.expect("reply").text(), "500 5.5.2 Error: message line too long");
    assert!(server.messages().await.is_empty());
    // The session goes on.
    assert_eq!(c.cmd("MAIL FROM:<a@source.test>").await.code, 250);
    server.stop().await;
}

#[tokio::test]
async fn the_received_header_names_client_helo_and_queue_id() {
    let server = Server::start(relay_settings()).await;
    let mut c = Raw::ehlo(server.addr).await;
    c.cmd("MAIL FROM:<a@source.test>").await;
    c.cmd("RCPT TO:<user@relay.test>").await;
    c.cmd("DATA").await;
    c.send(b"Subject: x\r\n\r\nx\r\n.\r\n").await;
    c.reply().await;
    let msgs = server.messages().await;
    let head = String::from_utf8_lossy(&msgs[0].2).into_owned();
    assert!(
        head.starts_with(
            "Received: from client.test (unknown [127.0.0.1])\r\n\tby mx.test (sluice) with ESMTP id "
        ),
        "{head}"
    );
    assert!(head.contains(&format!("id {}\r\n\tfor <user@relay.test>; ", msgs[0].0)), "{head}");
    assert_eq!(msgs[0].1.client.helo, "client.test");
    assert_eq!(msgs[0].1.client.protocol, "ESMTP");
    server.stop().await;
}

#[tokio::test]
async fn bdat_chunks_with_last_make_one_message() {
    let server = Server::start(relay_settings()).await;
    let mut c = Raw::ehlo(server.addr).await;
    c.cmd("MAIL FROM:<a@source.test>").await;
    c.cmd("RCPT TO:<user@relay.test>").await;
    // Chunks may hold anything, including what DATA would treat as its end.
    let chunks: [&[u8]; 3] = [b"Subject: chunked\r\n\r\n.\r\n", b"..not stuffed\r\n\r\n.\r\n", b"end\r\n"];
    let mut pipelined = Vec::new();
    for (i, ch) in chunks.iter().enumerate() {
        let last = if i == chunks.len() - 1 { " LAST" } else { "" };
        pipelined.extend_from_slice(format!("BDAT {}{last}\r\n", ch.len()).as_bytes());
        pipelined.extend_from_slice(ch);
    }
    c.send(&pipelined).await;
    let r = c.replies(3).await;
    assert_eq!(r[0].text(), format!("250 2.0.0 Ok: {} bytes", chunks[0].len()));
    assert_eq!(r[1].text(), format!("250 2.0.0 Ok: {} bytes", chunks[0].len() + chunks[1].len()));
    assert!(r[2].text().starts_with("250 2.0.0 Ok: queued as "), "{r:?}");
    assert_eq!(server.only_body().await, chunks.concat());

    // BDAT 0 LAST ends a message too; BDAT without MAIL is refused after
    // its chunk is read.
    c.send(b"BDAT 5\r\nhello").await;
    assert_eq!(c.reply().await.expect("reply").text(), "503 5.5.1 Error: need MAIL command");
    c.cmd("MAIL FROM:<a@source.test>").await;
    c.cmd("RCPT TO:<other@relay.test>").await;
    c.send(b"BDAT 8\r\nX: y\r\n\r\nBDAT 0 LAST\r\n").await;
    let r = c.replies(2).await;
    assert!(r[1].text().starts_with("250 2.0.0 Ok: queued as "), "{r:?}");
    assert_eq!(server.messages().await.len(), 2);
    server.stop().await;
}

/// BINARYMIME chunks meet the bare-newline rules as any content does (the
/// stored body must mean one thing to every next hop, whatever path it
/// leaves by): under normalize a bare CR or LF becomes a line end, other
/// octets (NUL, 8-bit) are kept; under reject the message is refused; `no`
/// stores it as sent.
#[tokio::test]
async fn binarymime_content_follows_the_bare_newline_rules() {
    let blob: Vec<u8> = b"Content-Type: application/octet-stream\r\n\r\n"
        .iter()
        .copied()
        .chain((0..=255u8).cycle().take(3000))
        .collect();
    let send = |addr| {
        let blob = blob.clone();
        async move {
            let mut c = Raw::ehlo(addr).await;
            assert_eq!(c.cmd("MAIL FROM:<a@source.test> BODY=BINARYMIME").await.code, 250);
            c.cmd("RCPT TO:<user@relay.test>").await;
            // DATA cannot carry binary content.
            assert_eq!(c.cmd("DATA").await.code, 503);
            c.send(format!("BDAT {} LAST\r\n", blob.len()).as_bytes()).await;
            c.send(&blob).await;
            c.reply().await.expect("reply").text()
        }
    };
    let server = Server::start(relay_settings()).await;
    assert!(send(server.addr).await.starts_with("250 2.0.0 Ok: queued as"));
    // After the header section, the octets 0..=255 over and over: no CR
    // there is followed by LF, so each CR and each LF is bare.
    let header = b"Content-Type: application/octet-stream\r\n\r\n".len();
    let mut normalized = blob[..header].to_vec();
    for &b in &blob[header..] {
        match b {
            b'\r' | b'\n' => normalized.extend_from_slice(b"\r\n"),
            _ => normalized.push(b),
        }
    }
    assert_eq!(server.only_body().await, normalized);
    assert_eq!(server.messages().await[0].1.body_type, BodyType::BinaryMime);
    server.stop().await;

    let server = Server::start(Settings { bare_newline: BareNewline::Reject, ..relay_settings() }).await;
    assert_eq!(send(server.addr).await, "550 5.5.2 Error: bare <LF> received");
    assert!(server.messages().await.is_empty());
    server.stop().await;

    let server = Server::start(Settings { bare_newline: BareNewline::No, ..relay_settings() }).await;
    assert!(send(server.addr).await.starts_with("250 2.0.0 Ok: queued as"));
    assert_eq!(server.only_body().await, blob);
    server.stop().await;
}

#[tokio::test]
async fn dsn_smtputf8_and_size_parameters_are_kept_in_the_envelope() {
    let server = Server::start(relay_settings()).await;
    let mut c = Raw::ehlo(server.addr).await;
    let r = c
        .cmd("MAIL FROM:<s\u{e9}nder@source.test> SIZE=120 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=QQ+2B1")
        .await;
    assert_eq!(r.code, 250, "{r:?}");
    let r = c.cmd("RCPT TO:<user@relay.test> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;user+2Bx@relay.test").await;
    assert_eq!(r.code, 250, "{r:?}");
    assert_eq!(c.cmd("RCPT TO:<other@relay.test> NOTIFY=NEVER").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<third@relay.test>").await.code, 250);
    c.cmd("DATA").await;
    c.send(b"Subject: dsn\r\n\r\nbody\r\n.\r\n").await;
    assert_eq!(c.reply().await.expect("reply").code, 250);
    let env = &server.messages().await[0].1;
    assert_eq!(env.sender, "s\u{e9}nder@source.test");
    assert!(env.smtputf8);
    assert_eq!(env.declared_size, Some(120));
    assert_eq!(env.body_type, BodyType::EightBitMime);
    assert_eq!(env.ret, DsnRet::Headers);
    assert_eq!(env.envid.as_deref(), Some("QQ+2B1"));
    let r0 = &env.recipients[0];
    assert!(
        r0.notify.specified && r0.notify.success && r0.notify.delay && !r0.notify.failure && !r0.notify.never
    );
    assert_eq!(r0.orcpt.as_deref(), Some("rfc822;user+2Bx@relay.test"));
    assert!(env.recipients[1].notify.never);
    assert!(!env.recipients[2].notify.specified);
    assert_eq!(env.client.protocol, "UTF8SMTP");
    // Unicode without SMTPUTF8 is refused.
    assert_eq!(c.cmd("MAIL FROM:<s\u{e9}nder@source.test>").await.code, 553);
    // Unknown and unadvertised parameters are refused.
    assert_eq!(
        c.cmd("MAIL FROM:<a@source.test> REQUIRETLS").await.text(),
        "555 5.5.4 Unsupported option: REQUIRETLS"
    );
    assert_eq!(c.cmd("MAIL FROM:<a@source.test> FOO=BAR").await.code, 555);
    server.stop().await;
}

#[tokio::test]
async fn relay_and_unknown_recipients_are_refused_at_rcpt() {
    let server = Server::start(relay_settings()).await;
    let mut c = Raw::ehlo(server.addr).await;
    c.cmd("MAIL FROM:<a@source.test>").await;
    assert_eq!(
        c.cmd("RCPT TO:<x@elsewhere.test>").await.text(),
        "554 5.7.1 <x@elsewhere.test>: Relay access denied"
    );
    assert_eq!(c.cmd("RCPT TO:<x%elsewhere.test@relay.test>").await.code, 554);
    assert_eq!(
        c.cmd(&format!("RCPT TO:<ghost@{RELAY_DOMAIN}>")).await.text(),
        "550 5.1.1 <ghost@relay.test>: Recipient address rejected: User unknown in relay recipient table"
    );
    assert_eq!(c.cmd("RCPT TO:<anyone@any.relay.test>").await.code, 250);
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send(b"x\r\n.\r\n").await;
    assert_eq!(c.reply().await.expect("reply").code, 250);
    // Nothing was queued for the refused recipients.
    let env = &server.messages().await[0].1;
    assert_eq!(env.recipients.len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn postmaster_without_a_domain_is_postmaster_at_myorigin() {
    // RFC 5321 4.5.1: `RCPT TO:<Postmaster>` (any case) must be accepted;
    // it is routed and checked as postmaster@$myorigin.
    // (relay_settings lists every address of any.relay.test.)
    let settings = Settings { myorigin: format!("any.{RELAY_DOMAIN}"), ..relay_settings() };
    let server = Server::start(settings).await;
    let mut c = Raw::ehlo(server.addr).await;
    c.cmd("MAIL FROM:<a@source.test>").await;
    assert_eq!(c.cmd("RCPT TO:<PostMaster>").await.code, 250);
    // The empty path is still no recipient.
    assert_eq!(c.cmd("RCPT TO:<>").await.text(), "501 5.1.3 Bad recipient address syntax");
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send(b"x\r\n.\r\n").await;
    assert_eq!(c.reply().await.expect("reply").code, 250);
    let env = &server.messages().await[0].1;
    let to: Vec<_> = env.recipients.iter().map(|r| r.address.as_str()).collect();
    assert_eq!(to, [format!("postmaster@any.{RELAY_DOMAIN}")]);
    server.stop().await;

    // Where $myorigin is not a relay domain, the relay check refuses it
    // by that name, as Postfix does.
    let server = Server::start(Settings { myorigin: "elsewhere.test".to_owned(), ..relay_settings() }).await;
    let mut c = Raw::ehlo(server.addr).await;
    c.cmd("MAIL FROM:<a@source.test>").await;
    assert_eq!(
        c.cmd("RCPT TO:<postmaster>").await.text(),
        "554 5.7.1 <postmaster@elsewhere.test>: Relay access denied"
    );
    server.stop().await;
}

#[tokio::test]
async fn address_literals_are_paths_and_relay_control_still_applies() {
    // RFC 5321 4.1.3: a path's domain may be an address literal. The
    // sender keeps it as sent; a recipient at a literal is no relay domain.
    let server = Server::start(relay_settings()).await;
    let mut c = Raw::ehlo(server.addr).await;
    assert_eq!(c.cmd("MAIL FROM:<root@[127.0.0.1]> SIZE=10").await.code, 250);
    assert_eq!(
        c.cmd("RCPT TO:<postmaster@[127.0.0.1]>").await.text(),
        "554 5.7.1 <postmaster@[127.0.0.1]>: Relay access denied"
    );
    assert_eq!(c.cmd("RCPT TO:<user@relay.test>").await.code, 250);
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send(b"x\r\n.\r\n").await;
    assert_eq!(c.reply().await.expect("reply").code, 250);
    assert_eq!(c.cmd("MAIL FROM:<dev@[IPv6:2001:db8::1]>").await.code, 250);
    assert_eq!(c.cmd("RSET").await.code, 250);
    // Brackets that hold no address, or a literal that is not the end of
    // the path, stay syntax errors.
    for bad in ["<a@[not.an.address]>", "<a@[127.0.0.1]x>", "<a@[127.0.0.1>", "<a@[]>"] {
        assert_eq!(
            c.cmd(&format!("MAIL FROM:{bad}")).await.text(),
            "501 5.1.7 Bad sender address syntax",
            "{bad}"
        );
    }
    let msgs = server.messages().await;
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].1.sender, "root@[127.0.0.1]");
    assert_eq!(msgs[0].1.recipients.len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn only_the_path_is_read_for_an_address_literal() {
    // A bracketed address in a parameter after the path is the
    // parameter's business: it reaches the envelope as sent.
    let server = Server::start(relay_settings()).await;
    let mut c = Raw::ehlo(server.addr).await;
    assert_eq!(c.cmd("MAIL FROM:<a@source.test> ENVID=x@[127.0.0.1]>").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<user@relay.test>").await.code, 250);
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send(b"x\r\n.\r\n").await;
    assert_eq!(c.reply().await.expect("reply").code, 250);
    let msgs = server.messages().await;
    assert_eq!(msgs[0].1.sender, "a@source.test");
    assert_eq!(msgs[0].1.envid.as_deref(), Some("x@[127.0.0.1]>"));
    server.stop().await;
}

#[tokio::test]
async fn soft_bounce_answers_4xx_where_it_would_refuse_for_good() {
    let (log, _guard) = common::log::Log::capture();
    let server = Server::start(Settings { soft_bounce: true, ..relay_settings() }).await;
    let mut c = Raw::ehlo(server.addr).await;
    assert_eq!(c.cmd("MAIL FROM:<a@source.test>").await.code, 250);
    assert_eq!(
        c.cmd("RCPT TO:<x@elsewhere.test>").await.text(),
        "454 4.7.1 <x@elsewhere.test>: Relay access denied"
    );
    assert_eq!(
        c.cmd("RCPT TO:<ghost@relay.test>").await.text(),
        "450 4.1.1 <ghost@relay.test>: Recipient address rejected: User unknown in relay recipient table"
    );
    // Temporary and positive replies are as they were.
    assert_eq!(c.cmd("RCPT TO:<user@relay.test>").await.text(), "250 2.1.5 Ok");
    assert_eq!(c.cmd("BOGUS").await.code, 402, "a 502 goes out as 402 as well");
    c.cmd("QUIT").await;
    server.stop().await;
    // The log shows what the client was told.
    let text = log.text();
    assert!(
        text.contains(
            ": 454 4.7.1 <x@elsewhere.test>: Relay access denied; from=<a@source.test> to=<x@elsewhere.test>"
        ),
        "{text}"
    );
    assert!(!text.contains(" 554 "), "{text}");
}

#[tokio::test]
async fn default_settings_are_not_an_open_relay() {
    let server = Server::start(Settings::default()).await;
    let mut c = Raw::ehlo(server.addr).await;
    c.cmd("MAIL FROM:<a@source.test>").await;
    // Postfix's default: loopback is mynetworks, and may relay; nothing
    // else may. Loopback is all tests have, so check the decision itself.
    let policy = &Settings::default().policy;
    let outsider = sluice::smtp::naming::Client::unknown("198.51.100.1".parse().unwrap());
    assert!(matches!(
        policy.check_recipient(outsider, "x@elsewhere.test"),
        sluice::smtp::policy::Decision::Refuse(r) if r.code() == 454
    ));
    assert_eq!(c.cmd("RCPT TO:<x@elsewhere.test>").await.code, 250);
    server.stop().await;
}

#[tokio::test]
async fn helo_and_tls_requirements_are_enforced_at_mail() {
    let settings = Settings { helo_required: true, ..relay_settings() };
    let server = Server::start(settings).await;
    let mut c = Raw::connect(server.addr).await;
    assert_eq!(c.cmd("MAIL FROM:<a@source.test>").await.text(), "503 5.5.1 Error: send HELO/EHLO first");
    assert_eq!(c.cmd("RCPT TO:<user@relay.test>").await.text(), "503 5.5.1 Error: need MAIL command");
    assert_eq!(c.cmd("DATA").await.text(), "503 5.5.1 Error: need RCPT command");
    c.cmd("HELO client.test").await;
    assert_eq!(c.cmd("MAIL FROM:<a@source.test>").await.code, 250);
    assert_eq!(c.cmd("MAIL FROM:<a@source.test>").await.text(), "503 5.5.1 Error: nested MAIL command");
    assert_eq!(c.cmd("DATA").await.text(), "554 5.5.1 Error: no valid recipients");
    server.stop().await;
}

#[tokio::test]
async fn data_restrictions_are_applied_at_data_and_bdat() {
    let mut settings = relay_settings();
    settings.policy.data = vec![sluice::smtp::policy::Restriction::Reject];
    let server = Server::start(settings).await;
    let mut c = Raw::ehlo(server.addr).await;
    c.cmd("MAIL FROM:<a@source.test>").await;
    c.cmd("RCPT TO:<user@relay.test>").await;
    assert_eq!(c.cmd("DATA").await.text(), "554 5.7.1 <DATA>: Data command rejected: Access denied");
    c.send(b"BDAT 3 LAST\r\nabc").await;
    assert_eq!(
        c.reply().await.expect("reply").text(),
        "554 5.7.1 <DATA>: Data command rejected: Access denied"
    );
    assert!(server.messages().await.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn reloaded_settings_apply_to_new_connections_only() {
    let server = Server::start(relay_settings()).await;
    let mut old = Raw::ehlo(server.addr).await;
    server.inbound.reload(Settings {
        banner: "mx.test ESMTP reloaded".to_owned(),
        recipient_limit: 1,
        ..relay_settings()
    });
    let mut new = Raw::connect_silent(server.addr).await;
    assert_eq!(new.reply().await.expect("greeting").text(), "220 mx.test ESMTP reloaded");
    new.cmd("EHLO client.test").await;
    new.cmd("MAIL FROM:<a@source.test>").await;
    assert_eq!(new.cmd("RCPT TO:<user@relay.test>").await.code, 250);
    assert_eq!(new.cmd("RCPT TO:<other@relay.test>").await.code, 452);
    // The session that started before the reload keeps its settings.
    old.cmd("MAIL FROM:<a@source.test>").await;
    assert_eq!(old.cmd("RCPT TO:<user@relay.test>").await.code, 250);
    assert_eq!(old.cmd("RCPT TO:<other@relay.test>").await.code, 250);
    server.stop().await;
}

#[tokio::test]
async fn ipv6_clients_are_served_and_traced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue =
        sluice_queue::Queue::open(&dir.path().join("q"), &Default::default(), sluice::clock::unix_millis())
            .expect("queue");
    let listener = sluice::smtp::bind("[::1]:0".parse().expect("literal"), 128).expect("bind ::1");
    let addr = listener.local_addr().expect("addr");
    let inbound = sluice::smtp::Inbound::new(queue.clone(), relay_settings());
    let stage = sluice::shutdown::Stage::new();
    let task = tokio::spawn(sluice::smtp::serve(listener, inbound, stage.clone()));
    let mut c = Raw::ehlo(addr).await;
    c.cmd("MAIL FROM:<a@source.test>").await;
    c.cmd("RCPT TO:<user@relay.test>").await;
    c.cmd("DATA").await;
    c.send(b"x\r\n.\r\n").await;
    assert_eq!(c.reply().await.expect("reply").code, 250);
    let list = queue.list(Default::default()).await.expect("list");
    let body = queue.body(list[0].0).await.expect("body");
    assert!(
        body.starts_with(b"Received: from client.test (unknown [IPv6:::1])\r\n"),
        "{}",
        body.escape_ascii()
    );
    assert_eq!(list[0].1.client.addr, Some("::1".parse().expect("literal")));
    stage.stop().await;
    task.await.expect("server task");
    queue.close().await.expect("close");
}

#[tokio::test]
async fn commands_without_arguments_refuse_arguments_and_stay_in_command_mode() {
    let server = Server::start(relay_settings()).await;
    let mut c = Raw::ehlo(server.addr).await;
    assert_eq!(c.cmd("MAIL FROM:<a@source.test>").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<user@relay.test>").await.code, 250);
    // Not 354: what follows is still read as commands, as Postfix does.
    assert_eq!(c.cmd("DATA now").await.text(), "501 5.5.4 Syntax: DATA");
    assert_eq!(c.cmd("RSET all").await.text(), "501 5.5.4 Syntax: RSET");
    assert_eq!(c.cmd("QUIT later").await.text(), "501 5.5.4 Syntax: QUIT");
    // The transaction survived the refusals; trailing white space is no argument.
    assert_eq!(c.cmd("DATA \t").await.code, 354);
    c.send(b"Subject: after\r\n\r\nbody\r\n.\r\n").await;
    assert_eq!(c.reply().await.expect("reply").code, 250);
    assert_eq!(c.cmd("QUIT ").await.code, 221);
    assert_eq!(server.messages().await.len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_disconnects_mid_message_has_nothing_queued() {
    let server = Server::start(relay_settings()).await;
    // DATA cut off anywhere before the final CRLF.CRLF, BDAT mid-chunk and
    // between chunks: none of it is a message.
    let cuts: [&[u8]; 6] = [
        b"",
        b"Subject: half\r\n\r\nbody\r\n",
        b"Subject: half\r\n\r\nbody\r\n.",
        b"Subject: half\r\n\r\nbody\r\n.\r",
        b"BDAT 100 LAST\r\nSubject: half\r\n",
        b"BDAT 16\r\nSubject: half!\r\n",
    ];
    for cut in cuts {
        let mut c = Raw::ehlo(server.addr).await;
        assert_eq!(c.cmd("MAIL FROM:<a@source.test>").await.code, 250);
        assert_eq!(c.cmd("RCPT TO:<user@relay.test>").await.code, 250);
        if !cut.starts_with(b"BDAT") {
            assert_eq!(c.cmd("DATA").await.code, 354);
        }
        c.send(cut).await;
        if cut.starts_with(b"BDAT 16\r\n") {
            assert_eq!(c.reply().await.expect("chunk").text(), "250 2.0.0 Ok: 16 bytes");
        }
        drop(c);
    }
    // A complete message afterwards is the only one in the queue.
    let mut c = Raw::ehlo(server.addr).await;
    assert_eq!(c.cmd("MAIL FROM:<a@source.test>").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<user@relay.test>").await.code, 250);
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send(b"Subject: whole\r\n\r\nbody\r\n.\r\n").await;
    assert_eq!(c.reply().await.expect("reply").code, 250);
    assert_eq!(c.cmd("QUIT").await.code, 221);
    let msgs = server.messages().await;
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    server.stop().await;
}
