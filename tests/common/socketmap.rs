//! A socketmap server (Sendmail's netstring protocol, socketmap_table(5))
//! for the lookup-table tests: threads on a free 127.0.0.1 port answering
//! `name key` from a map, counting the requests it gets, and switchable
//! to `TEMP` replies, silence, or refusing connections. Stopped (its
//! listener closed and its threads told to end) when dropped.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Answer,
    /// `TEMP` for every request.
    Temp,
    /// Reads requests, never replies.
    Silent,
}

#[derive(Debug)]
pub struct Socketmap {
    pub port: u16,
    requests: Arc<AtomicUsize>,
    mode: Arc<Mutex<Mode>>,
    map: Arc<Mutex<HashMap<String, String>>>,
    stop: Arc<AtomicBool>,
}

impl Socketmap {
    /// Serves `entries` (`(name, key) → value`).
    pub fn start(entries: &[(&str, &str, &str)]) -> Socketmap {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let map: HashMap<String, String> =
            entries.iter().map(|(n, k, v)| (format!("{n} {k}"), (*v).to_owned())).collect();
        let s = Socketmap {
            port,
            requests: Arc::new(AtomicUsize::new(0)),
            mode: Arc::new(Mutex::new(Mode::Answer)),
            map: Arc::new(Mutex::new(map)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (requests, mode, map, stop) = (s.requests.clone(), s.mode.clone(), s.map.clone(), s.stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (requests, mode, map, stop) =
                            (requests.clone(), mode.clone(), map.clone(), stop.clone());
                        std::thread::spawn(move || serve(conn, &requests, &mode, &map, &stop));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        s
    }

    pub fn set_mode(&self, m: Mode) {
        *self.mode.lock().unwrap() = m;
    }

    pub fn insert(&self, name: &str, key: &str, value: &str) {
        self.map.lock().unwrap().insert(format!("{name} {key}"), value.to_owned());
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Socketmap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn serve(
    mut conn: TcpStream,
    requests: &AtomicUsize,
    mode: &Mutex<Mode>,
    map: &Mutex<HashMap<String, String>>,
    stop: &AtomicBool,
) {
    let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
    loop {
        let req = match read_netstring(&mut conn, stop) {
            Some(r) => r,
            None => return,
        };
        requests.fetch_add(1, Ordering::SeqCst);
        let m = *mode.lock().unwrap();
        let reply = match m {
            Mode::Silent => continue,
            Mode::Temp => "TEMP directory restarting".to_owned(),
            Mode::Answer => match map.lock().unwrap().get(&req) {
                Some(v) => format!("OK {v}"),
                None => "NOTFOUND ".to_owned(),
            },
        };
        if conn.write_all(format!("{}:{reply},", reply.len()).as_bytes()).is_err() {
            return;
        }
    }
}

/// One netstring; `None` at the end of the stream, on bad input or when
/// the server stops.
fn read_netstring(conn: &mut TcpStream, stop: &AtomicBool) -> Option<String> {
    let read_byte = |conn: &mut TcpStream| -> Option<u8> {
        let mut b = [0u8; 1];
        loop {
            if stop.load(Ordering::SeqCst) {
                return None;
            }
            match conn.read(&mut b) {
                Ok(0) => return None,
                Ok(_) => return Some(b[0]),
                Err(e)
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => return None,
            }
        }
    };
    let mut len = 0usize;
    loop {
        match read_byte(conn)? {
            d @ b'0'..=b'9' => len = len.checked_mul(10)?.checked_add(usize::from(d - b'0'))?,
            b':' => break,
            _ => return None,
        }
        if len > 100_000 {
            return None;
        }
    }
    let mut body = Vec::with_capacity(len);
    for _ in 0..=len {
        body.push(read_byte(conn)?);
    }
    (body.pop() == Some(b',')).then_some(())?;
    String::from_utf8(body).ok()
}
