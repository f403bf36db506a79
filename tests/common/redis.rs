//! A private Redis for fleet tests: `redis-server` on a free loopback
//! port, in a temp dir, no persistence, stopped by PID when dropped; it can
//! be stopped and started again on the same port (a Redis outage). With
//! [`Redis::start_tls`] it speaks TLS only (`rediss://`).
#![allow(dead_code)]
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{ChildGuard, free_port, need, wait_for_port};

/// A running (or stopped) private Redis.
#[derive(Debug)]
pub struct Redis {
    port: u16,
    dir: tempfile::TempDir,
    guard: Option<ChildGuard>,
    /// Serves TLS only, with this certificate and key (PEM files in `dir`).
    tls: bool,
}

impl Redis {
    pub fn start() -> Redis {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut r = Redis { port: free_port(), dir, guard: None, tls: false };
        r.resume();
        r
    }

    /// A Redis that speaks TLS only (`--port 0 --tls-port`), with the
    /// server certificate and key given (PEM); clients are not asked for
    /// certificates.
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> Redis {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("cert.pem"), cert_pem).expect("cert");
        std::fs::write(dir.path().join("key.pem"), key_pem).expect("key");
        let mut r = Redis { port: free_port(), dir, guard: None, tls: true };
        r.resume();
        r
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}/", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Kills it (an outage: every key is gone, as after a crash without
    /// persistence).
    pub fn stop(&mut self) {
        self.guard.take();
    }

    /// Starts it (again) on the same port.
    pub fn resume(&mut self) {
        let bin = need("redis-server", "redis-server");
        let dir: &Path = self.dir.path();
        let port = self.port.to_string();
        let mut cmd = Command::new(bin);
        if self.tls {
            cmd.args(["--port", "0", "--tls-port", &port, "--tls-auth-clients", "no"])
                .arg("--tls-cert-file")
                .arg(dir.join("cert.pem"))
                .arg("--tls-key-file")
                .arg(dir.join("key.pem"));
        } else {
            cmd.args(["--port", &port]);
        }
        let guard = ChildGuard::spawn(
            "redis-server",
            cmd.args(["--bind", "127.0.0.1", "--save", ""])
                .args(["--appendonly", "no", "--daemonize", "no"])
                .arg("--dir")
                .arg(dir)
                .arg("--logfile")
                .arg(dir.join("redis.log"))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        assert!(wait_for_port(self.addr(), Duration::from_secs(10)), "redis-server did not start");
        self.guard = Some(guard);
    }
}
