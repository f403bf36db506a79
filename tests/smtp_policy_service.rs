//! `check_policy_service` against a real policy server: a small Python
//! server speaking Postfix's SMTPD policy delegation protocol (as
//! policyd-spf and postgrey do) on a loopback port, started by the test.
//! Its answers are access(5) results: REJECT, DEFER_IF_PERMIT (greylisting:
//! refused unless something else rejects), PREPEND (a `Received-SPF:`
//! header, written before our `Received:` as Postfix does), DUNNO. A
//! server that is down gets `smtpd_policy_service_default_action`.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::clients::Raw;
use common::inbound::Server;
use common::{ChildGuard, free_port, need, wait_for_port};
use sluice::config::Config;
use sluice::smtp::Settings;

/// Answers by recipient local part and writes every request it gets to the
/// log file named by argv[2], one JSON object per line.
const POLICY_SERVER: &str = r#"
import json, socketserver, sys
port, log = int(sys.argv[1]), sys.argv[2]
class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        while True:
            attrs = {}
            while True:
                line = self.rfile.readline()
                if not line:
                    return
                line = line.decode().rstrip('\n')
                if line == '':
                    break
                k, _, v = line.partition('=')
                attrs[k] = v
            with open(log, 'a') as f:
                f.write(json.dumps(attrs) + '\n')
            user = attrs.get('recipient', '').split('@')[0]
            action = {
                'reject': 'REJECT Go away',
                'grey': 'DEFER_IF_PERMIT Greylisted, try again later',
                'spf': 'PREPEND Received-SPF: Pass (policy.test: sender is allowed) client-ip=' + attrs['client_address'],
                'split': 'REJECT no\r250 2.1.5 Ok\x1b[2J\x00',
                'esc': 'PREPEND X-Policy: said \x1b]0;owned\x07 ' + attrs['helo_name'],
            }.get(user, 'DUNNO')
            self.wfile.write(('action=' + action + '\n\n').encode())
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer(('127.0.0.1', port), Handler).serve_forever()
"#;

struct PolicyServer {
    _child: ChildGuard,
    port: u16,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl PolicyServer {
    fn start() -> PolicyServer {
        let python = need("python3", "python3");
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("requests.jsonl");
        let port = free_port();
        let child = ChildGuard::spawn(
            "policy server",
            Command::new(python)
                .args(["-c", POLICY_SERVER, &port.to_string()])
                .arg(&log)
                .stdout(Stdio::null()),
        );
        assert!(wait_for_port(([127, 0, 0, 1], port).into(), Duration::from_secs(10)), "policy server up");
        PolicyServer { _child: child, port, log, _dir: dir }
    }

    fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect()
    }
}

fn settings(policy: &str) -> Settings {
    let dir = tempfile::tempdir().expect("tempdir");
    let main = format!(
        "myhostname = mx.test\nrelay_domains = relay.test\nmynetworks = 192.0.2.0/24\n\
         smtpd_recipient_restrictions = reject_unauth_destination, check_policy_service {policy}\n\
         smtpd_policy_service_timeout = 5s\n"
    );
    let loaded = Config::from_texts(dir.path(), &main, "smtp inet n - n - - smtpd\n")
        .unwrap_or_else(|e| panic!("config: {e}"));
    Settings::from_config(&loaded.config).expect("settings")
}

#[tokio::test]
async fn policy_answers_decide_and_prepend() {
    let policy = PolicyServer::start();
    let server = Server::start(settings(&format!("inet:127.0.0.1:{}", policy.port))).await;
    let mut c = Raw::ehlo(server.addr).await;
    assert_eq!(c.cmd("MAIL FROM:<a@sender.test> SIZE=100").await.code, 250);
    assert_eq!(
        c.cmd("RCPT TO:<reject@relay.test>").await.text(),
        "554 5.7.1 <reject@relay.test>: Recipient address rejected: Go away"
    );
    assert_eq!(
        c.cmd("RCPT TO:<grey@relay.test>").await.text(),
        "450 4.7.1 <grey@relay.test>: Recipient address rejected: Greylisted, try again later"
    );
    assert_eq!(c.cmd("RCPT TO:<spf@relay.test>").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<plain@relay.test>").await.code, 250);
    // Relay control (smtpd_relay_restrictions' default defers with 454)
    // comes first: the server is not asked about this one.
    assert_eq!(c.cmd("RCPT TO:<x@elsewhere.test>").await.code, 454);
    assert_eq!(c.cmd("DATA").await.code, 354);
    let message = "Subject: policy\r\n\r\nbody\r\n";
    c.send(format!("{message}.\r\n").as_bytes()).await;
    assert_eq!(c.reply().await.expect("reply").code, 250);
    c.cmd("QUIT").await;

    let msgs = server.messages().await;
    let (id, env, body) = &msgs[0];
    let to: Vec<_> = env.recipients.iter().map(|r| r.address.as_str()).collect();
    assert_eq!(to, ["spf@relay.test", "plain@relay.test"]);
    let body = String::from_utf8_lossy(body);
    assert!(
        body.starts_with(
            "Received-SPF: Pass (policy.test: sender is allowed) client-ip=127.0.0.1\r\nReceived: from client.test"
        ),
        "{body}"
    );
    assert!(body.ends_with(message), "the message itself is stored as sent: {body}");

    let reqs = policy.requests();
    assert_eq!(reqs.len(), 4, "one request per recipient past relay control: {reqs:#?}");
    let r = &reqs[2];
    assert_eq!(r["request"], "smtpd_access_policy");
    assert_eq!(r["protocol_state"], "RCPT");
    assert_eq!(r["protocol_name"], "ESMTP");
    assert_eq!(r["helo_name"], "client.test");
    assert_eq!(r["sender"], "a@sender.test");
    assert_eq!(r["recipient"], "spf@relay.test");
    assert_eq!(r["client_address"], "127.0.0.1");
    assert_eq!(r["size"], "100");
    assert_eq!(r["queue_id"], "", "no queue ID before the first accepted recipient");
    assert_eq!(reqs[3]["queue_id"], id.to_string());
    assert_eq!(reqs[3]["recipient_count"], "1");
    assert!(
        reqs.iter().all(|q| q["instance"] == reqs[0]["instance"] && q["instance"] != ""),
        "one instance per transaction"
    );
    server.stop().await;
}

/// A policy server's text may hold a bare CR or a control (it often
/// quotes what the client said): the reply stays one clean line, and a
/// PREPEND header gets no control character.
#[tokio::test]
async fn a_policy_servers_text_never_splits_a_reply_or_reaches_a_header_raw() {
    let policy = PolicyServer::start();
    let server = Server::start(settings(&format!("inet:127.0.0.1:{}", policy.port))).await;
    let mut c = Raw::ehlo(server.addr).await;
    assert_eq!(c.cmd("MAIL FROM:<a@sender.test>").await.code, 250);
    let r = c.cmd("RCPT TO:<split@relay.test>").await;
    assert_eq!(r.text(), "554 5.7.1 <split@relay.test>: Recipient address rejected: no_250 2.1.5 Ok_[2J_");
    assert_eq!(c.cmd("RCPT TO:<esc@relay.test>").await.code, 250, "the reply after it is its own");
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send(b"Subject: policy\r\n\r\nbody\r\n.\r\n").await;
    assert_eq!(c.reply().await.expect("reply").code, 250);
    c.cmd("QUIT").await;
    let msgs = server.messages().await;
    let body = String::from_utf8_lossy(&msgs[0].2);
    assert!(body.starts_with("X-Policy: said ?]0;owned? client.test\r\nReceived: "), "{body:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_server_that_is_down_gets_the_default_action() {
    let port = free_port();
    let server = Server::start(settings(&format!("inet:127.0.0.1:{port}"))).await;
    let mut c = Raw::ehlo(server.addr).await;
    assert_eq!(c.cmd("MAIL FROM:<a@sender.test>").await.code, 250);
    assert_eq!(
        c.cmd("RCPT TO:<plain@relay.test>").await.text(),
        "451 4.3.5 <plain@relay.test>: Recipient address rejected: Server configuration problem"
    );
    c.cmd("QUIT").await;
    server.stop().await;
}
