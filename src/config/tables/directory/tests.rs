//! Tests of what every directory table shares (cache, breakers, time
//! bounds, failures), against a real socketmap server run here on a
//! loopback port: it answers from a map, counts the requests it gets, and
//! can be told to fail or to stop answering.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

/// How the test server behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Answer,
    /// Replies `TEMP`.
    Temp,
    /// Reads requests and never replies.
    Silent,
}

#[derive(Debug)]
struct Server {
    port: u16,
    requests: Arc<AtomicUsize>,
    mode: Arc<Mutex<Mode>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one netstring request; `None` at the end of the stream.
async fn read_request(s: &mut tokio::net::TcpStream) -> Option<String> {
    let mut len = 0usize;
    loop {
        let mut b = [0u8; 1];
        if s.read(&mut b).await.ok()? == 0 {
            return None;
        }
        match b[0] {
            d @ b'0'..=b'9' => len = len * 10 + usize::from(d - b'0'),
            b':' => break,
            _ => return None,
        }
    }
    let mut body = vec![0u8; len + 1];
    s.read_exact(&mut body).await.ok()?;
    body.pop();
    String::from_utf8(body).ok()
}

async fn server(map: &[(&str, &str)]) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let map: Arc<HashMap<String, String>> =
        Arc::new(map.iter().map(|(k, v)| (format!("users {k}"), v.to_string())).collect());
    let requests = Arc::new(AtomicUsize::new(0));
    let mode = Arc::new(Mutex::new(Mode::Answer));
    let (r, m) = (requests.clone(), mode.clone());
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (map, r, m) = (map.clone(), r.clone(), m.clone());
            tokio::spawn(async move {
                while let Some(req) = read_request(&mut s).await {
                    r.fetch_add(1, Ordering::SeqCst);
                    let mode = *m.lock().unwrap();
                    let reply = match mode {
                        Mode::Silent => continue,
                        Mode::Temp => "TEMP database restarting".to_owned(),
                        Mode::Answer => match map.get(&req) {
                            Some(v) => format!("OK {v}"),
                            None => "NOTFOUND ".to_owned(),
                        },
                    };
                    let wire = format!("{}:{reply},", reply.len());
                    if s.write_all(wire.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Server { port, requests, mode, task }
}

fn settings() -> DirectorySettings {
    DirectorySettings {
        timeout: Duration::from_millis(500),
        cooldown: Duration::from_millis(300),
        max_cooldown: Duration::from_secs(1),
        threshold: 2,
        ..DirectorySettings::default()
    }
}

fn table(port: u16, s: &DirectorySettings) -> DirectoryTable {
    let spec = format!("inet:127.0.0.1:{port}:users");
    let source = socketmap::SocketmapSource::parse(&spec, Path::new("/"), s).expect("spec");
    DirectoryTable::new(&format!("socketmap:{spec}"), Box::new(source), s.timeout, true, s)
}

#[tokio::test]
async fn answers_are_cached_and_cache_hits_do_not_ask_the_server() {
    let srv = server(&[("joe@example.com", "ok")]).await;
    let t = table(srv.port, &settings());
    assert_eq!(t.query("joe@example.com").await.unwrap(), Some("ok".into()));
    assert_eq!(t.query("nobody@example.com").await.unwrap(), None);
    assert_eq!(srv.requests.load(Ordering::SeqCst), 2);
    for _ in 0..5 {
        assert_eq!(t.query("joe@example.com").await.unwrap(), Some("ok".into()));
        assert_eq!(t.query("nobody@example.com").await.unwrap(), None);
    }
    assert_eq!(srv.requests.load(Ordering::SeqCst), 2, "hits are answered from the cache");
}

#[tokio::test]
async fn the_negative_lifetime_lets_a_new_user_in() {
    let srv = server(&[]).await;
    let mut s = settings();
    s.cache.negative = Duration::from_millis(100);
    let t = table(srv.port, &s);
    assert_eq!(t.query("new@example.com").await.unwrap(), None);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(t.query("new@example.com").await.unwrap(), None);
    assert_eq!(srv.requests.load(Ordering::SeqCst), 2, "the expired answer was asked again");
}

#[tokio::test]
async fn a_failing_server_is_an_error_never_not_found_and_never_cached() {
    let srv = server(&[("joe@example.com", "ok")]).await;
    let t = table(srv.port, &settings());
    *srv.mode.lock().unwrap() = Mode::Temp;
    let e = t.query("joe@example.com").await.unwrap_err();
    assert!(e.message.contains("temporary error: database restarting"), "{e}");
    assert_eq!(e.table, format!("socketmap:inet:127.0.0.1:{}:users", srv.port));
    *srv.mode.lock().unwrap() = Mode::Answer;
    assert_eq!(t.query("joe@example.com").await.unwrap(), Some("ok".into()));
}

#[tokio::test]
async fn a_silent_server_times_out_and_its_breaker_then_answers_at_once() {
    let srv = server(&[("joe@example.com", "ok")]).await;
    *srv.mode.lock().unwrap() = Mode::Silent;
    let s = settings();
    let t = table(srv.port, &s);
    for _ in 0..s.threshold {
        let start = clock::instant();
        assert!(t.query("joe@example.com").await.is_err());
        assert!(start.elapsed() >= s.timeout, "the lookup waited out its timeout");
    }
    // The breaker is open: no wait, no request.
    let asked = srv.requests.load(Ordering::SeqCst);
    let start = clock::instant();
    let e = t.query("joe@example.com").await.unwrap_err();
    assert!(start.elapsed() < Duration::from_millis(100), "failed at once");
    assert!(e.message.contains("not asked"), "{e}");
    assert_eq!(srv.requests.load(Ordering::SeqCst), asked);
    // After the cool-down one lookup probes; the server is back.
    *srv.mode.lock().unwrap() = Mode::Answer;
    tokio::time::sleep(s.cooldown).await;
    assert_eq!(t.query("joe@example.com").await.unwrap(), Some("ok".into()));
    assert_eq!(t.query("other@example.com").await.unwrap(), None);
}

#[tokio::test]
async fn a_dead_server_opens_its_breaker() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let s = settings();
    let t = table(port, &s);
    for _ in 0..s.threshold {
        let e = t.query("joe@example.com").await.unwrap_err();
        assert!(e.message.contains("connect"), "{e}");
    }
    let e = t.query("joe@example.com").await.unwrap_err();
    assert!(e.message.contains("not asked"), "{e}");
}

#[tokio::test]
async fn connections_are_reused() {
    let srv = server(&[("a@example.com", "1"), ("b@example.com", "2")]).await;
    let t = table(srv.port, &settings());
    assert_eq!(t.query("a@example.com").await.unwrap(), Some("1".into()));
    assert_eq!(t.query("b@example.com").await.unwrap(), Some("2".into()));
    assert_eq!(srv.requests.load(Ordering::SeqCst), 2);
}

#[test]
fn keys_a_table_rules_out_answer_synchronously() {
    let s = DirectorySettings::default();
    let source = socketmap::SocketmapSource::parse("inet:127.0.0.1:9:users", Path::new("/"), &s).unwrap();
    let t = DirectoryTable::new("socketmap:inet:127.0.0.1:9:users", Box::new(source), s.timeout, true, &s);
    assert!(t.is_directory() && t.is_pattern());
    assert!(t.skips(""));
    assert_eq!(t.lookup("").unwrap(), None);
    assert!(t.lookup("joe@example.com").is_err(), "only asynchronous lookups ask the server");
}

#[test]
fn percent_escapes_decode() {
    assert_eq!(percent_decode("a%40b%2Fc").unwrap(), "a@b/c");
    assert!(percent_decode("a%4").is_err());
    assert!(percent_decode("%zz").is_err());
}
