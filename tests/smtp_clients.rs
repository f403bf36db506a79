//! Real SMTP clients against the inbound server: lettre (Rust), Python's
//! smtplib and swaks, over plain TCP and STARTTLS with a certificate made
//! by rcgen, plus the STARTTLS command-injection case from a raw client.

mod common;

use std::sync::Arc;

use common::clients::{Raw, python, swaks, text};
use common::inbound::{Server, TestPki, relay_settings};
use lettre::message::Mailbox;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use sluice::smtp::TlsLevel;
use sluice_queue::{BodyType, DsnRet};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

fn lettre_message(subject: &str) -> Message {
    Message::builder()
        .from("Sender <a@source.test>".parse::<Mailbox>().expect("from"))
        .to("User <user@relay.test>".parse::<Mailbox>().expect("to"))
        .subject(subject)
        .body(String::from(".starts with a dot\r\nplain body\r\n"))
        .expect("message")
}

#[tokio::test]
async fn lettre_sends_over_plain_smtp_and_starttls() {
    let pki = TestPki::new();
    let server = Server::start(pki.settings(TlsLevel::May)).await;
    let port = server.addr.port();

    let plain = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1").port(port).build();
    let r = plain.send(lettre_message("plain")).await.expect("plain send");
    assert_eq!(r.code().to_string(), "250");
    assert!(r.message().collect::<Vec<_>>().join(" ").contains("queued as"), "{r:?}");

    let tls = TlsParameters::builder("localhost".to_owned())
        .add_root_certificate(Certificate::from_pem(pki.ca_pem.as_bytes()).expect("ca"))
        .build_rustls()
        .expect("tls params");
    let secure = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(port)
        .tls(Tls::Required(tls))
        .build();
    secure.send(lettre_message("secure")).await.expect("starttls send");

    let msgs = server.messages().await;
    assert_eq!(msgs.len(), 2);
    let bodies: Vec<String> = msgs.iter().map(|m| String::from_utf8_lossy(&m.2).into_owned()).collect();
    assert!(
        bodies[0].contains("Subject: plain") && bodies[0].contains("\r\n.starts with a dot\r\n"),
        "{}",
        bodies[0]
    );
    assert!(!bodies[0].contains("(using TLS"));
    assert_eq!(msgs[0].1.client.protocol, "ESMTP");
    assert!(bodies[1].contains("Subject: secure"));
    assert!(bodies[1].contains("\t(using TLSv1.3 with cipher "), "{}", bodies[1]);
    assert!(bodies[1].contains(" with ESMTPS id "), "{}", bodies[1]);
    assert_eq!(msgs[1].1.client.protocol, "ESMTPS");
    server.stop().await;
}

const SMTPLIB: &str = r#"
import smtplib, ssl, sys
host, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = smtplib.SMTP(host, port, timeout=20)
code, _ = s.ehlo("py.client.test")
assert code == 250, code
for k in ["pipelining", "size", "8bitmime", "enhancedstatuscodes", "dsn", "smtputf8", "chunking", "binarymime", "starttls"]:
    assert k in s.esmtp_features, (k, s.esmtp_features)
assert s.esmtp_features["size"] == "1000000"
s.starttls(context=ssl.create_default_context(cafile=ca))
s.ehlo("py.client.test")
assert "starttls" not in s.esmtp_features
msg = "From: a@source.test\r\nTo: user@relay.test\r\nSubject: smtplib\r\n\r\n.dot line\r\nbody\r\n"
refused = s.sendmail("a@source.test", ["user@relay.test", "x@elsewhere.test", "ghost@relay.test"], msg,
                     mail_options=["BODY=8BITMIME", "RET=FULL", "ENVID=py1"], rcpt_options=["NOTIFY=SUCCESS,FAILURE"])
print("refused", sorted((k, v[0], v[1].decode()) for k, v in refused.items()))
utf8 = "From: s\u00e9nder@source.test\r\nSubject: utf8\r\n\r\nh\u00e9llo\r\n".encode("utf-8")
s.sendmail("s\u00e9nder@source.test", ["other@relay.test"], utf8, mail_options=["SMTPUTF8", "BODY=8BITMIME"])
code, _ = s.docmd("MAIL FROM:<a@source.test>")
assert code == 250, code
code, _ = s.docmd("RCPT TO:<third@relay.test>")
assert code == 250, code
s.send(b"BDAT 21\r\nSubject: bdat\r\n\r\n1234")
code, resp = s.getreply()
assert code == 250, (code, resp)
s.send(b"BDAT 6 LAST\r\n56789\n")
code, resp = s.getreply()
assert code == 250 and b"queued as" in resp, (code, resp)
code, resp = s.docmd("VRFY", "user@relay.test")
print("vrfy", code, resp.decode())
s.quit()
print("done")
"#;

#[tokio::test]
async fn python_smtplib_uses_every_extension() {
    let pki = TestPki::new();
    let server = Server::start(pki.settings(TlsLevel::May)).await;
    let ca = server.dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).expect("write ca");
    let out = python(server.addr, SMTPLIB, &[ca.to_str().expect("utf-8 path")]).await;
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains(
        "refused [('ghost@relay.test', 550, '5.1.1 <ghost@relay.test>: Recipient address rejected: User unknown in relay recipient table'), ('x@elsewhere.test', 554, '5.7.1 <x@elsewhere.test>: Relay access denied')]"
    ), "{log}");
    assert!(log.contains("vrfy 502 5.5.1 VRFY command is disabled"), "{log}");
    let msgs = server.messages().await;
    assert_eq!(msgs.len(), 3, "{log}");
    let (_, env, body) = &msgs[0];
    assert_eq!(env.recipients.len(), 1);
    assert!(env.recipients[0].notify.success && env.recipients[0].notify.failure);
    assert_eq!(env.ret, DsnRet::Full);
    assert_eq!(env.envid.as_deref(), Some("py1"));
    assert_eq!(env.body_type, BodyType::EightBitMime);
    assert_eq!(env.client.protocol, "ESMTPS");
    assert!(common::inbound::strip_received(body).ends_with(b"\r\n\r\n.dot line\r\nbody\r\n"));
    let (_, env, body) = &msgs[1];
    assert!(env.smtputf8);
    assert_eq!(env.sender, "s\u{e9}nder@source.test");
    assert!(String::from_utf8_lossy(body).contains("h\u{e9}llo"));
    // BDAT content is stored as sent, with the bare LF normalized.
    assert_eq!(common::inbound::strip_received(&msgs[2].2), b"Subject: bdat\r\n\r\n123456789\r\n");
    server.stop().await;
}

#[tokio::test]
async fn swaks_pipelines_and_uses_starttls() {
    let pki = TestPki::new();
    let server = Server::start(pki.settings(TlsLevel::May)).await;
    let out = swaks(
        server.addr,
        &[
            "--from",
            "a@source.test",
            "--to",
            "user@relay.test,other@relay.test",
            "--pipeline",
            "--body",
            ".dot\n..two\nend",
        ],
    )
    .await;
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(!log.contains("<** 5"), "{log}");
    assert!(log.contains("250 2.0.0 Ok: queued as"), "{log}");

    let out = swaks(server.addr, &["--from", "a@source.test", "--to", "user@relay.test", "--tls"]).await;
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("220 2.0.0 Ready to start TLS"), "{log}");
    assert!(log.contains("250 2.0.0 Ok: queued as"), "{log}");

    let out = swaks(server.addr, &["--from", "a@source.test", "--to", "x@elsewhere.test"]).await;
    let log = text(&out);
    assert!(log.contains("554 5.7.1 <x@elsewhere.test>: Relay access denied"), "{log}");

    let msgs = server.messages().await;
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0].1.recipients.len(), 2);
    let body = common::inbound::strip_received(&msgs[0].2);
    // swaks dot-stuffs on the wire; the stored body has the lines as given.
    let want: &[u8] = b"\r\n\r\n.dot\r\n..two\r\nend\r\n";
    assert!(body.windows(want.len()).any(|w| w == want), "{}", body.escape_ascii());
    assert_eq!(msgs[1].1.client.protocol, "ESMTPS");
    server.stop().await;
}

/// A line-oriented reader over any stream (the TLS one here).
async fn tls_reply<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> (u16, Vec<String>) {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(common::clients::REPLY_WAIT, r.read_line(&mut line))
            .await
            .expect("reply in time")
            .expect("read");
        assert!(n > 0, "connection closed");
        let code: u16 = line[..3].parse().expect("code");
        lines.push(line[4..].trim_end().to_owned());
        if line.as_bytes()[3] == b' ' {
            return (code, lines);
        }
    }
}

#[tokio::test]
async fn commands_pipelined_after_starttls_are_discarded() {
    let pki = TestPki::new();
    let server = Server::start(pki.settings(TlsLevel::May)).await;
    let mut c = Raw::ehlo(server.addr).await;
    // The classic injection: plaintext commands sent along with STARTTLS
    // must not be executed as if they came over TLS.
    c.send(b"STARTTLS\r\nMAIL FROM:<evil@attacker.test>\r\nRCPT TO:<user@relay.test>\r\n").await;
    let r = c.reply().await.expect("reply");
    assert_eq!(r.text(), "220 2.0.0 Ready to start TLS");
    let tcp = c.into_stream();
    let connector = tokio_rustls::TlsConnector::from(pki.client_config());
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let tls = connector.connect(name, tcp).await.expect("handshake");
    let (rd, mut wr) = tokio::io::split(tls);
    let mut rd = BufReader::new(rd);
    wr.write_all(b"EHLO client.test\r\n").await.expect("write");
    let (code, lines) = tls_reply(&mut rd).await;
    assert_eq!(code, 250, "{lines:?}");
    assert_eq!(lines[0], "mx.test", "the first reply over TLS is EHLO's: {lines:?}");
    assert!(!lines.iter().any(|l| l == "STARTTLS"));
    // The injected MAIL never happened: there is no transaction.
    wr.write_all(b"RCPT TO:<user@relay.test>\r\n").await.expect("write");
    assert_eq!(tls_reply(&mut rd).await, (503, vec!["5.5.1 Error: need MAIL command".to_owned()]));
    wr.write_all(b"STARTTLS\r\n").await.expect("write");
    assert_eq!(tls_reply(&mut rd).await.0, 554);
    wr.write_all(b"MAIL FROM:<a@source.test>\r\n").await.expect("write");
    assert_eq!(tls_reply(&mut rd).await.0, 250);
    wr.write_all(b"RCPT TO:<user@relay.test>\r\n").await.expect("write");
    assert_eq!(tls_reply(&mut rd).await.0, 250);
    wr.write_all(b"DATA\r\n").await.expect("write");
    assert_eq!(tls_reply(&mut rd).await.0, 354);
    wr.write_all(b"Subject: tls\r\n\r\nsecret\r\n.\r\nQUIT\r\n").await.expect("write");
    assert_eq!(tls_reply(&mut rd).await.0, 250);
    assert_eq!(tls_reply(&mut rd).await.0, 221);
    let msgs = server.messages().await;
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].1.sender, "a@source.test");
    server.stop().await;
}

/// A client that comes back resumes its TLS session with the ticket the
/// server gave it, as MTAs do: no certificate signature the second time.
#[tokio::test]
async fn a_returning_client_resumes_its_tls_session() {
    let pki = TestPki::new();
    let mut settings = pki.settings(TlsLevel::May);
    // Without its in-memory session cache, the server can resume only by
    // the stateless ticket it issued: rustls's cache alone would resume this
    // client too, so with it the test would pass without tickets.
    let mut tls = (**settings.tls.as_ref().expect("tls")).clone();
    tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    settings.tls = Some(Arc::new(tls));
    let server = Server::start(settings).await;
    // One client configuration, so one ticket store, for both connections.
    let connector = tokio_rustls::TlsConnector::from(pki.client_config());
    let mut kinds = Vec::new();
    for _ in 0..2 {
        let mut c = Raw::ehlo(server.addr).await;
        c.send(b"STARTTLS\r\n").await;
        assert_eq!(c.reply().await.expect("reply").text(), "220 2.0.0 Ready to start TLS");
        let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
        let tls = connector.connect(name, c.into_stream()).await.expect("handshake");
        kinds.push(tls.get_ref().1.handshake_kind());
        let (rd, mut wr) = tokio::io::split(tls);
        let mut rd = BufReader::new(rd);
        // Reading a reply takes in the tickets sent after the handshake.
        wr.write_all(b"EHLO client.test\r\n").await.expect("write");
        assert_eq!(tls_reply(&mut rd).await.0, 250);
        wr.write_all(b"QUIT\r\n").await.expect("write");
        assert_eq!(tls_reply(&mut rd).await.0, 221);
    }
    assert_eq!(kinds, [Some(rustls::HandshakeKind::Full), Some(rustls::HandshakeKind::Resumed)]);
    server.stop().await;
}

#[tokio::test]
async fn encrypt_level_requires_starttls_before_mail() {
    let pki = TestPki::new();
    let server = Server::start(pki.settings(TlsLevel::Encrypt)).await;
    let mut c = Raw::ehlo(server.addr).await;
    assert_eq!(
        c.cmd("MAIL FROM:<a@source.test>").await.text(),
        "530 5.7.0 Must issue a STARTTLS command first"
    );
    server.stop().await;
    // Without a TLS configuration STARTTLS is not offered nor accepted.
    let server = Server::start(relay_settings()).await;
    let mut c = Raw::ehlo(server.addr).await;
    assert_eq!(c.cmd("STARTTLS").await.text(), "502 5.5.1 Error: command not implemented");
    server.stop().await;
}

const STARTTLS_VERSION: &str = r#"
import smtplib, ssl, sys
host, port, ca, highest = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
if highest == "1.2":
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
s = smtplib.SMTP(host, port, timeout=20)
s.ehlo("py.client.test")
try:
    s.starttls(context=ctx)
except ssl.SSLError as e:
    print("handshake failed:", e.reason)
    sys.exit(0)
print("version", s.sock.version())
s.ehlo("py.client.test")
s.sendmail("a@source.test", ["user@relay.test"], "Subject: tls\r\n\r\nbody\r\n")
s.quit()
"#;

/// STARTTLS as main.cf configures it: the key and chain in one
/// `smtpd_tls_chain_files` file, and the protocol versions from
/// `smtpd_tls_protocols` (level may) or `smtpd_tls_mandatory_protocols`
/// (level encrypt), in Postfix's syntax; a client limited to a version the
/// server does not offer fails the handshake.
#[tokio::test]
async fn tls_protocols_and_chain_files_from_main_cf() {
    let pki = TestPki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = dir.path().join("chain.pem");
    std::fs::write(&chain, format!("{}{}", pki.key_pem, pki.cert_pem)).expect("write chain");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).expect("write ca");
    let settings = |level: &str, protocols: &str, mandatory: &str| {
        let main = format!(
            "smtpd_tls_security_level = {level}\nsmtpd_tls_chain_files = {}\n\
             smtpd_tls_protocols = {protocols}\nsmtpd_tls_mandatory_protocols = {mandatory}\n",
            chain.display()
        );
        let loaded = sluice::config::Config::from_texts(dir.path(), &main, "smtp inet n - n - - smtpd\n")
            .unwrap_or_else(|e| panic!("config: {e}"));
        let tls = sluice::smtp::Settings::from_config(&loaded.config).expect("settings");
        sluice::smtp::Settings { tls_level: tls.tls_level, tls: tls.tls, ..relay_settings() }
    };
    let ca = ca.to_str().expect("utf-8 path");
    for (level, protocols, mandatory, highest, want) in [
        ("may", ">=TLSv1.3", "<=TLSv1.2", "1.3", "version TLSv1.3"),
        ("may", ">=TLSv1.3", "<=TLSv1.2", "1.2", "handshake failed"),
        ("may", "!SSLv2, !SSLv3, !TLSv1.3", ">=TLSv1.3", "1.3", "version TLSv1.2"),
        ("encrypt", "<=TLSv1.2", ">=TLSv1.3", "1.2", "handshake failed"),
        ("encrypt", "<=TLSv1.2", ">=TLSv1.3", "1.3", "version TLSv1.3"),
    ] {
        let server = Server::start(settings(level, protocols, mandatory)).await;
        let out = python(server.addr, STARTTLS_VERSION, &[ca, highest]).await;
        let log = text(&out);
        let case = format!(
            "level {level}, protocols {protocols}, mandatory {mandatory}, client up to TLSv{highest}"
        );
        assert!(out.status.success(), "{case}: {log}");
        assert!(log.contains(want), "{case}: {log}");
        let msgs = server.messages().await;
        assert_eq!(msgs.len(), usize::from(want.starts_with("version")), "{case}: {log}");
        server.stop().await;
    }
}

/// `smtpd_discard_ehlo_keywords`: what is not announced is not honoured
/// either, for a client that uses it anyway.
#[tokio::test]
async fn discarded_ehlo_keywords_are_neither_announced_nor_honoured() {
    let pki = TestPki::new();
    let discard = ["chunking", "dsn", "starttls", "enhancedstatuscodes", "pipelining", "silent-discard"];
    let settings = sluice::smtp::Settings {
        discard_ehlo_keywords: discard.map(String::from).to_vec(),
        ..pki.settings(TlsLevel::May)
    };
    let server = Server::start(settings).await;
    let mut c = Raw::connect(server.addr).await;
    let ehlo = c.cmd("EHLO client.test").await;
    let keywords: Vec<&str> = ehlo.lines.iter().skip(1).map(String::as_str).collect();
    assert_eq!(keywords, ["SIZE 1000000", "8BITMIME", "SMTPUTF8", "BINARYMIME"], "{:?}", ehlo.lines);
    // No enhanced status codes in replies.
    assert_eq!(c.cmd("STARTTLS").await.text(), "502 Error: command not implemented");
    assert_eq!(c.cmd("MAIL FROM:<a@source.test> RET=HDRS").await.text(), "555 Unsupported option: RET");
    assert_eq!(c.cmd("MAIL FROM:<a@source.test>").await.text(), "250 Ok");
    assert_eq!(
        c.cmd("RCPT TO:<user@relay.test> NOTIFY=SUCCESS").await.text(),
        "555 Unsupported option: NOTIFY"
    );
    assert_eq!(c.cmd("RCPT TO:<user@relay.test>").await.text(), "250 Ok");
    c.send(b"BDAT 4 LAST\r\nabcd").await;
    assert_eq!(c.reply().await.expect("reply").text(), "502 Error: command not implemented");
    // Without PIPELINING announced, commands sent ahead are a violation.
    c.send(b"MAIL FROM:<a@source.test>\r\nRCPT TO:<user@relay.test>\r\n").await;
    assert_eq!(c.reply().await.expect("reply").text(), "554 Error: SMTP protocol synchronization");
    assert!(c.closed().await);
    assert!(server.messages().await.is_empty());
    server.stop().await;
}
