//! The removal of forged Authentication-Results headers in the inbound
//! session (in process, no DNS needed): over DATA and over BDAT with the
//! forged field split across chunks, every other byte stored as sent; a
//! client in `sluice_auth_exempt_clients` keeps them.

mod common;

use common::clients::Raw;
use common::inbound::{Server, relay_settings};
use sluice::auth::Exempt;
use sluice::smtp::Settings;

fn settings() -> Settings {
    let mut s = relay_settings();
    s.auth.authserv_id = "mx.test".into();
    s
}

const FORGED: &str = "Authentication-Results: MX.test;\r\n\tdkim=pass header.d=bank.test\r\n";
const KEPT: &str = "Authentication-Results: upstream.test; spf=pass smtp.mailfrom=a@source.test\r\n";
const REST: &str = "From: a@source.test\r\nSubject: hi\r\n\r\nAuthentication-Results: mx.test; body text\r\n";

#[tokio::test]
async fn forged_results_are_removed_over_data_and_bdat() {
    let server = Server::start(settings()).await;
    let mut c = Raw::ehlo(server.addr).await;
    c.cmd("MAIL FROM:<a@source.test>").await;
    c.cmd("RCPT TO:<user@relay.test>").await;
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send(format!("{FORGED}{KEPT}{REST}.\r\n").as_bytes()).await;
    assert_eq!(c.reply().await.expect("reply").code, 250);
    assert_eq!(String::from_utf8(server.only_body().await).unwrap(), format!("{KEPT}{REST}"));
    server.stop().await;

    let server = Server::start(settings()).await;
    let mut c = Raw::ehlo(server.addr).await;
    c.cmd("MAIL FROM:<a@source.test>").await;
    c.cmd("RCPT TO:<user@relay.test>").await;
    // The forged field ends in the second chunk, its continuation line
    // starts the third.
    let all = format!("{FORGED}{KEPT}{REST}");
    let (a, b, rest) = (&all[..20], &all[20..37], &all[37..]);
    let mut pipelined = Vec::new();
    for (chunk, last) in [(a, ""), (b, ""), (rest, " LAST")] {
        pipelined.extend_from_slice(format!("BDAT {}{last}\r\n{chunk}", chunk.len()).as_bytes());
    }
    c.send(&pipelined).await;
    let replies = c.replies(3).await;
    assert!(replies[2].text().starts_with("250 2.0.0 Ok: queued as"), "{replies:?}");
    assert_eq!(String::from_utf8(server.only_body().await).unwrap(), format!("{KEPT}{REST}"));
    server.stop().await;
}

#[tokio::test]
async fn an_exempt_client_keeps_its_results() {
    let mut s = settings();
    s.auth.exempt = Exempt::List(vec!["127.0.0.0/8".parse().unwrap()]);
    let server = Server::start(s).await;
    let mut c = Raw::ehlo(server.addr).await;
    c.cmd("MAIL FROM:<a@source.test>").await;
    c.cmd("RCPT TO:<user@relay.test>").await;
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send(format!("{FORGED}{REST}.\r\n").as_bytes()).await;
    assert_eq!(c.reply().await.expect("reply").code, 250);
    assert_eq!(String::from_utf8(server.only_body().await).unwrap(), format!("{FORGED}{REST}"));
    server.stop().await;
}
