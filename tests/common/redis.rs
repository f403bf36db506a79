//! A private Redis for fleet tests: `redis-server` on a free loopback
//! port, in a temp dir, no persistence, stopped by PID when dropped; it can
//! be stopped and started again on the same port (a Redis outage). With
//! [`Redis::start_tls`] it speaks TLS only (`rediss://`). [`Redis::start_with`]
//! gives it more options (a password, `--replicaof`), and [`Sentinel`] is a
//! private Redis Sentinel watching one of them.
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
    /// More `redis-server` options, given at every start.
    args: Vec<String>,
}

impl Redis {
    pub fn start() -> Redis {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut r = Redis { port: free_port(), dir, guard: None, tls: false, args: Vec::new() };
        r.first_start();
        r
    }

    /// A Redis started with more options (`["--requirepass", "pw"]`,
    /// `["--replicaof", "127.0.0.1", "6379"]`).
    pub fn start_with(args: &[&str]) -> Redis {
        let dir = tempfile::tempdir().expect("temp dir");
        let args = args.iter().map(|a| a.to_string()).collect();
        let mut r = Redis { port: free_port(), dir, guard: None, tls: false, args };
        r.first_start();
        r
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A synchronous connection for the test's own checks.
    pub fn connection(&self, password: Option<&str>) -> redis::Connection {
        let mut info = redis::IntoConnectionInfo::into_connection_info(self.url().as_str()).expect("url");
        if let Some(p) = password {
            info = info.clone().set_redis_settings(info.redis_settings().clone().set_password(p));
        }
        redis::Client::open(info).and_then(|c| c.get_connection()).expect("connect to redis")
    }

    /// A Redis that speaks TLS only (`--port 0 --tls-port`), with the
    /// server certificate and key given (PEM); clients are not asked for
    /// certificates.
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> Redis {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("cert.pem"), cert_pem).expect("cert");
        std::fs::write(dir.path().join("key.pem"), key_pem).expect("key");
        let mut r = Redis { port: free_port(), dir, guard: None, tls: true, args: Vec::new() };
        r.first_start();
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

    /// The first start: on another free port when something else took
    /// this one between `free_port` and the bind (another test binary's
    /// listener: seen once as a "Redis" that refused connections later).
    fn first_start(&mut self) {
        for _ in 0..3 {
            if self.try_start() {
                return;
            }
            self.port = free_port();
        }
        panic!("redis-server did not start (log: {})", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// Starts it (again) on the same port.
    pub fn resume(&mut self) {
        assert!(self.try_start(), "redis-server did not start (log: {})", self.log());
    }

    /// Starts it on its port and waits until its own log says it serves
    /// (not merely until something answers on the port); false when it
    /// exited first (the port was taken).
    fn try_start(&mut self) -> bool {
        let _ = std::fs::remove_file(self.dir.path().join("redis.log"));
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
        cmd.args(&self.args);
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
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if self.log().contains("Ready to accept connections") {
                break;
            }
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", guard.pid())).unwrap_or_default();
            if stat.is_empty() || stat.contains(") Z ") || std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(wait_for_port(self.addr(), Duration::from_secs(10)), "redis-server did not start");
        self.guard = Some(guard);
        true
    }
}

/// A private Redis Sentinel on a free loopback port, watching one master
/// with a quorum of 1 and short delays (down after 500 ms, failover
/// timeout 2 s), so a failover takes seconds; stopped by PID when dropped.
#[derive(Debug)]
pub struct Sentinel {
    port: u16,
    _dir: tempfile::TempDir,
    _guard: ChildGuard,
    password: Option<String>,
    tls: bool,
}

/// A sentinel's TLS: its certificate and key, and the CA it checks the
/// servers' certificates against (PEM).
pub struct SentinelTls<'a> {
    pub cert_pem: &'a str,
    pub key_pem: &'a str,
    pub ca_pem: &'a str,
}

impl Sentinel {
    /// Watches `master` as `name`. `auth`: the servers' password (`sentinel
    /// auth-pass`) and the sentinel's own (`requirepass`).
    pub fn start(name: &str, master: SocketAddr, auth: Option<(&str, &str)>) -> Sentinel {
        Sentinel::start_with(name, master, auth, None)
    }

    /// As [`Sentinel::start`], speaking TLS only, to its clients and to
    /// the servers (which must speak TLS: [`Redis::start_tls`]).
    pub fn start_with(
        name: &str,
        master: SocketAddr,
        auth: Option<(&str, &str)>,
        tls: Option<SentinelTls<'_>>,
    ) -> Sentinel {
        let bin = need("redis-server", "redis-server");
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let mut conf = match &tls {
            None => format!("port {port}\n"),
            Some(t) => {
                for (file, pem) in [("cert.pem", t.cert_pem), ("key.pem", t.key_pem), ("ca.pem", t.ca_pem)] {
                    std::fs::write(dir.path().join(file), pem).expect("sentinel pem");
                }
                format!(
                    "port 0\ntls-port {port}\ntls-cert-file {d}/cert.pem\ntls-key-file {d}/key.pem\n\
                     tls-ca-cert-file {d}/ca.pem\ntls-auth-clients no\ntls-replication yes\n",
                    d = dir.path().display()
                )
            }
        };
        conf += &format!(
            "bind 127.0.0.1\ndaemonize no\ndir {dir}\nlogfile {dir}/sentinel.log\n\
             sentinel monitor {name} {ip} {mport} 1\n\
             sentinel down-after-milliseconds {name} 500\n\
             sentinel failover-timeout {name} 2000\n",
            dir = dir.path().display(),
            ip = master.ip(),
            mport = master.port(),
        );
        if let Some((servers, own)) = auth {
            conf.push_str(&format!("sentinel auth-pass {name} {servers}\nrequirepass {own}\n"));
        }
        // The sentinel rewrites its file: it lives in the temp dir.
        let path = dir.path().join("sentinel.conf");
        std::fs::write(&path, conf).expect("sentinel.conf");
        let guard = ChildGuard::spawn(
            "redis-sentinel",
            Command::new(bin).arg(&path).arg("--sentinel").stdout(Stdio::null()).stderr(Stdio::null()),
        );
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        assert!(wait_for_port(addr, Duration::from_secs(10)), "redis-server --sentinel did not start");
        Sentinel {
            port,
            _dir: dir,
            _guard: guard,
            password: auth.map(|(_, own)| own.to_owned()),
            tls: tls.is_some(),
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Runs `SENTINEL args...` on it.
    pub fn ask<T: redis::FromRedisValue>(&self, args: &[&str]) -> redis::RedisResult<T> {
        let mut info = redis::IntoConnectionInfo::into_connection_info(self.url().as_str())?;
        if let Some(p) = &self.password {
            info = info.clone().set_redis_settings(info.redis_settings().clone().set_password(p));
        }
        let mut conn = redis::Client::open(info)?.get_connection()?;
        redis::cmd("SENTINEL").arg(args).query(&mut conn)
    }

    /// The port of the master `name` it names now.
    pub fn master_port(&self, name: &str) -> Option<u16> {
        let addr: Option<(String, u16)> = self.ask(&["get-master-addr-by-name", name]).ok().flatten();
        addr.map(|(_, p)| p)
    }

    /// Waits until it has seen `n` healthy replicas of `name` (it learns
    /// them from the master's INFO; a failover needs one).
    pub fn wait_replicas(&self, name: &str, n: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let replicas: Vec<std::collections::HashMap<String, String>> =
                self.ask(&["replicas", name]).unwrap_or_default();
            let healthy = replicas
                .iter()
                .filter(|r| {
                    r.get("flags").is_some_and(|f| !f.contains("down") && !f.contains("disconnected"))
                })
                .filter(|r| r.get("master-link-status").is_some_and(|s| s == "ok"))
                .count();
            if healthy >= n {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "the sentinel saw {healthy} replicas of {name}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
