//! A private Redis for fleet tests: `redis-server` on a free loopback
//! port, in a temp dir, no persistence, stopped by PID when dropped; it can
//! be stopped and started again on the same port (a Redis outage).
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
}

impl Redis {
    pub fn start() -> Redis {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut r = Redis { port: free_port(), dir, guard: None };
        r.resume();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
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
        let guard = ChildGuard::spawn(
            "redis-server",
            Command::new(bin)
                .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
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
