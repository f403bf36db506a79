//! Arbitrary client bytes against a session over an in-memory duplex
//! stream (proptest): the session never panics, every reply has a valid
//! code (with an enhanced status code where one is due), and a message is
//! in the queue exactly when the client was told `queued as`.

mod common;

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use common::inbound::relay_settings;
use proptest::prelude::*;
use sluice::shutdown::Stage;
use sluice::smtp::{BareNewline, Inbound, Settings, serve_stream};
use sluice_queue::{Filter, Options, Queue};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct World {
    rt: tokio::runtime::Runtime,
    queue: Queue,
    _dir: tempfile::TempDir,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let queue = Queue::open(&dir.path().join("queue"), &Options::default(), sluice::clock::unix_millis())
            .expect("queue");
        World { rt, queue, _dir: dir }
    })
}

/// Pieces a client might send: real commands, line-end and dot tricks, and
/// raw noise.
fn piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"EHLO fuzz.test\r\n".to_vec()),
        Just(b"HELO fuzz.test\r\n".to_vec()),
        Just(b"MAIL FROM:<a@source.test>\r\n".to_vec()),
        Just(b"MAIL FROM:<> BODY=BINARYMIME SIZE=10\r\n".to_vec()),
        Just(b"RCPT TO:<user@relay.test> NOTIFY=SUCCESS\r\n".to_vec()),
        Just(b"RCPT TO:<x@elsewhere.test>\r\n".to_vec()),
        Just(b"DATA\r\n".to_vec()),
        Just(b"BDAT 5\r\n".to_vec()),
        Just(b"BDAT 3 LAST\r\n".to_vec()),
        Just(b"BDAT 0 LAST\r\n".to_vec()),
        Just(b"RSET\r\n".to_vec()),
        Just(b"NOOP\r\n".to_vec()),
        Just(b"VRFY x\r\n".to_vec()),
        Just(b"STARTTLS\r\n".to_vec()),
        Just(b"HELP\r\n".to_vec()),
        Just(b".\r\n".to_vec()),
        Just(b"\r\n.\r\n".to_vec()),
        Just(b"\n.\n".to_vec()),
        Just(b"\r.\r".to_vec()),
        Just(b"..".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"Received: from x by y; Mon, 1 Jan 2024 00:00:00 +0000\r\n".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..64),
        "[ -~]{0,40}\r\n".prop_map(String::into_bytes),
        (1usize..3000).prop_map(|n| vec![b'a'; n]),
    ]
}

fn settings() -> impl Strategy<Value = Settings> {
    (
        prop_oneof![Just(BareNewline::No), Just(BareNewline::Normalize), Just(BareNewline::Reject)],
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(bare_newline, forbid_unauth_pipelining, small)| Settings {
            bare_newline,
            forbid_unauth_pipelining,
            message_size_limit: if small { 200 } else { 1_000_000 },
            command_line_limit: 512,
            hopcount_limit: 3,
            recipient_limit: 2,
            hard_error_limit: 10,
            error_sleep: Duration::ZERO,
            timeout: Duration::from_secs(10),
            ..relay_settings()
        })
}

/// Checks the server's output; returns how many messages it said it queued.
fn check_replies(out: &[u8]) -> Result<usize, String> {
    let text = String::from_utf8(out.to_vec()).map_err(|e| format!("reply not UTF-8: {e}"))?;
    let mut queued = 0;
    let mut first_of_reply = true;
    let mut multiline_250 = false;
    for line in text.split_terminator("\r\n") {
        let b = line.as_bytes();
        if b.len() < 4 || !b[..3].iter().all(u8::is_ascii_digit) || !(b'2'..=b'5').contains(&b[0]) {
            return Err(format!("bad reply line {line:?}"));
        }
        if b[3] != b' ' && b[3] != b'-' {
            return Err(format!("bad separator in {line:?}"));
        }
        let code = &line[..3];
        let rest = &line[4..];
        let exempt = code == "220" && rest.starts_with("mx.test")
            || code == "354"
            || code == "250" && (rest == "mx.test" || !first_of_reply && multiline_250);
        if first_of_reply && !exempt {
            let status = rest.split(' ').next().unwrap_or("");
            let parts: Vec<&str> = status.split('.').collect();
            if parts.len() != 3 || parts[0] != &code[..1] || parts.iter().any(|p| p.parse::<u16>().is_err()) {
                return Err(format!("no enhanced status in {line:?}"));
            }
        }
        if first_of_reply {
            multiline_250 = code == "250" && b[3] == b'-';
        }
        if rest.contains("Ok: queued as ") {
            queued += 1;
        }
        first_of_reply = b[3] == b' ';
    }
    Ok(queued)
}

async fn run_case(input: Vec<u8>, settings: Settings, queue: Queue) -> Result<(), String> {
    let before = queue.list(Filter::default()).await.map_err(|e| e.to_string())?.len();
    let inbound = Inbound::new(queue.clone(), settings);
    let stage = Stage::new();
    let (mut client, server) = tokio::io::duplex(4096);
    let peer: SocketAddr = "198.51.100.9:40000".parse().expect("literal");
    let session = tokio::spawn(serve_stream(server, peer, inbound, stage.clone()));
    let (mut rd, mut wr) = tokio::io::split(&mut client);
    let reader = async {
        let mut out = Vec::new();
        let _ = rd.read_to_end(&mut out).await;
        out
    };
    let writer = async {
        let _ = wr.write_all(&input).await;
        let _ = wr.shutdown().await;
    };
    let (out, ()) = tokio::time::timeout(Duration::from_secs(30), async { tokio::join!(reader, writer) })
        .await
        .map_err(|_| "session did not end".to_owned())?;
    session.await.map_err(|e| format!("session panicked: {e}"))?;
    let queued = check_replies(&out)?;
    let after = queue.list(Filter::default()).await.map_err(|e| e.to_string())?.len();
    if after - before != queued {
        return Err(format!("{} messages stored, {queued} acknowledged", after - before));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_input_never_panics_and_always_gets_valid_replies(
        pieces in proptest::collection::vec(piece(), 0..40),
        settings in settings(),
    ) {
        let w = world();
        let input = pieces.concat();
        let r = w.rt.block_on(run_case(input.clone(), settings, w.queue.clone()));
        prop_assert!(r.is_ok(), "{:?} for input {:?}", r, input.escape_ascii().to_string());
    }
}

#[test]
fn the_checker_rejects_what_it_should() {
    assert!(check_replies(b"220 mx.test ESMTP\r\n250-mx.test\r\n250 PIPELINING\r\n250 2.1.0 Ok\r\n").is_ok());
    assert!(check_replies(b"250 Ok\r\n").is_err());
    assert!(check_replies(b"550 4.1.1 wrong class\r\n").is_err());
    assert!(check_replies(b"600 6.0.0 no\r\n").is_err());
    assert_eq!(check_replies(b"250 2.0.0 Ok: queued as X\r\n"), Ok(1));
}
