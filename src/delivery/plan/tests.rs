//! The plan of a claimed message against a configuration loaded from
//! text: grouping per backend, the recipient limit, the routes the
//! scheduler answers itself, and recipients already final.

use std::sync::Arc;

use sluice_queue::{Envelope, RcptState, Recipient};

use super::*;
use crate::config::{NextHop, Protocol};

const MASTER: &str = "\
smtp      inet  n  -  y  -  -   smtpd
smtp      unix  -  -  n  -  -   smtp
lmtp      unix  -  -  n  -  -   lmtp
error     unix  -  -  n  -  -   error
discard   unix  -  -  n  -  -   discard
";

/// A configuration whose transport map sends `a.test` and `b.test` to two
/// LMTP servers (at most two recipients per delivery), bounces `gone.test`
/// and discards `trap.test`.
fn config(dir: &std::path::Path) -> Arc<Config> {
    std::fs::write(
        dir.join("transport"),
        "a.test lmtp:[127.0.0.1]:24\nb.test lmtp:[127.0.0.1]:25\ngone.test error:5.1.1 no such domain\ntrap.test discard:\n",
    )
    .expect("write transport");
    let main = "\
relay_domains = a.test, b.test, gone.test, trap.test
transport_maps = texthash:$config_directory/transport
lmtp_destination_recipient_limit = 2
";
    match Config::from_texts(dir, main, MASTER) {
        Ok(l) => l.config,
        Err(e) => panic!("config should load:\n{e}"),
    }
}

fn envelope(rcpts: &[&str]) -> Envelope {
    Envelope { recipients: rcpts.iter().map(|r| Recipient::new(*r)).collect(), ..Envelope::default() }
}

fn lmtp(port: u16) -> BackendId {
    BackendId {
        transport: "lmtp".into(),
        protocol: Protocol::Lmtp,
        nexthop: NextHop::Host { host: "127.0.0.1".into(), port },
        by_domain: false,
    }
}

fn planned(config: &Arc<Config>, env: &Envelope) -> Plan {
    let routes =
        tokio::runtime::Builder::new_current_thread().build().expect("runtime").block_on(routes(config, env));
    plan(config, env, &routes, &mut |id| {
        Arc::new(BackendSettings::from_config(config, &id.transport, id.protocol))
    })
}

#[test]
fn recipients_are_grouped_per_backend_and_cut_by_the_recipient_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path());
    let env = envelope(&["x@a.test", "w@b.test", "y@a.test", "z@a.test"]);
    let p = planned(&config, &env);
    let jobs: Vec<(BackendId, Vec<usize>)> = p.jobs.into_iter().map(|(id, _, r)| (id, r)).collect();
    assert_eq!(jobs, vec![(lmtp(24), vec![0, 2]), (lmtp(24), vec![3]), (lmtp(25), vec![1])]);
    assert!(p.immediate.is_empty());
}

#[test]
fn error_and_discard_routes_are_answered_without_a_backend() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path());
    let env = envelope(&["u@gone.test", "u@trap.test", "u@a.test"]);
    let p = planned(&config, &env);
    assert_eq!(p.jobs.len(), 1);
    assert_eq!(
        p.immediate,
        vec![
            Immediate {
                index: 0,
                agent: Agent::Error,
                verdict: Verdict::Bounced,
                dsn: Status(5, 1, 1),
                text: "no such domain".into(),
            },
            Immediate {
                index: 1,
                agent: Agent::Discard,
                verdict: Verdict::Sent,
                dsn: Status(2, 0, 0),
                text: "discarded".into(),
            },
        ]
    );
}

#[test]
fn final_recipients_are_left_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path());
    let mut env = envelope(&["x@a.test", "y@a.test"]);
    env.recipients[0].state = RcptState::Delivered { at: 0, reply: "250 ok".into() };
    let p = planned(&config, &env);
    let jobs: Vec<Vec<usize>> = p.jobs.into_iter().map(|(_, _, r)| r).collect();
    assert_eq!(jobs, vec![vec![1]]);
}

#[test]
fn error_route_text_may_carry_its_status() {
    assert_eq!(split_status("5.1.1 no such user", Status(5, 0, 0)), (Status(5, 1, 1), "no such user".into()));
    assert_eq!(split_status("mailbox retired", Status(5, 0, 0)), (Status(5, 0, 0), "mailbox retired".into()));
}
