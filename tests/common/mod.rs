//! Shared harness for integration tests: free loopback ports, temp dirs,
//! child processes that are killed (by PID) when the test ends, waiting for
//! a port to listen. Each peer (Dovecot, Postfix tools, Python, the
//! directory servers, a socketmap server) has its own file here.
#![allow(dead_code)]
// Test harness timing (waiting for ports, child exit) is real time by design.
#![allow(clippy::disallowed_methods)]

pub mod clients;
pub mod config;
pub mod daemon;
pub mod fleet;
pub mod inbound;
pub mod log;
pub mod milter;
pub mod redis;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound then released; tests run in
/// parallel, so bind promptly). Never the same port twice in one test
/// binary: the kernel may hand a released port out again, and two tests
/// of one binary would then meet on it.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind 127.0.0.1:0");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Waits until something accepts connections on `addr`.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Polls `f` every `every` until it holds; panics naming `what` (and
/// whatever `context` says then) after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool, context: impl Fn() -> String) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}\n{}", context());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A child process that is SIGKILLed and reaped when dropped, so a failing
/// test never leaves a server behind.
#[derive(Debug)]
pub struct ChildGuard {
    pub child: Child,
    pub name: String,
}

impl ChildGuard {
    pub fn spawn(name: &str, cmd: &mut Command) -> ChildGuard {
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        ChildGuard { child, name: name.to_owned() }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits up to `timeout` for exit; returns the exit
    /// status if it exited in time.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// True when an external program is on PATH (including /usr/sbin).
pub fn have(program: &str) -> bool {
    which(program).is_some()
}

/// The path of a program a test needs as its peer; a missing one fails
/// the test (a test that passes without its peer proves nothing).
/// `scripts/test` installs every peer through `scripts/bootstrap test`.
pub fn need(program: &str, package: &str) -> std::path::PathBuf {
    which(program).unwrap_or_else(|| {
        panic!("{program} is not installed (Debian package {package}; scripts/bootstrap test installs it)")
    })
}

/// Full path of a program on PATH or in the sbin dirs Debian uses.
pub fn which(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/lib/postfix/sbin"])
        .map(|d| std::path::Path::new(d).join(program))
        .find(|p| p.is_file())
}

pub mod backend;
pub mod delivery;
pub mod directory;
pub mod dns_server;
pub mod dovecot;
pub mod signing;
pub mod socketmap;
