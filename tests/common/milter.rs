//! Milters for tests, each a private instance on loopback in a temp dir,
//! killed by PID when dropped:
//!
//! - [`TestMilter`]: `tests/milter/test_milter.py`, a libmilter filter
//!   (Debian's python3-milter) that answers what its JSON script says and
//!   logs every event it sees;
//! - [`Rspamd`]: Debian's rspamd with its own configuration (proxy worker
//!   in milter mode with `self_scan`, no Redis, DNS pointed at a closed
//!   loopback port so nothing leaves the host);
//! - [`AuthFilter`]: Debian's OpenDKIM (verifying) or OpenDMARC, each with
//!   its own configuration, resolving through a DNS server the test runs
//!   on port 53 of a loopback address.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{ChildGuard, free_port, need, wait_for_port};

/// The libmilter test filter.
#[derive(Debug)]
pub struct TestMilter {
    /// First, so it is killed before its directory goes.
    child: Option<ChildGuard>,
    pub dir: tempfile::TempDir,
    /// How sluice names it: `inet:127.0.0.1:PORT` or `unix:/path`.
    pub endpoint: String,
    script: PathBuf,
    log: PathBuf,
}

impl TestMilter {
    /// Starts it on a free loopback TCP port with `script`.
    pub fn start(script: serde_json::Value) -> TestMilter {
        let port = free_port();
        let m =
            TestMilter::launch(script, format!("inet:{port}@127.0.0.1"), format!("inet:127.0.0.1:{port}"));
        assert!(
            wait_for_port(([127, 0, 0, 1], port).into(), Duration::from_secs(20)),
            "test milter did not listen on {port}; log:\n{}",
            m.raw_log()
        );
        m
    }

    /// Starts it on a unix socket in its temp dir.
    pub fn start_unix(script: serde_json::Value) -> TestMilter {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("milter.sock");
        let mut m = TestMilter::launch_in(
            dir,
            script,
            format!("unix:{}", sock.display()),
            format!("unix:{}", sock.display()),
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !sock.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "test milter made no socket; log:\n{}",
                m.raw_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        m.endpoint = format!("unix:{}", sock.display());
        m
    }

    fn launch(script: serde_json::Value, socket: String, endpoint: String) -> TestMilter {
        TestMilter::launch_in(tempfile::tempdir().expect("tempdir"), script, socket, endpoint)
    }

    fn launch_in(
        dir: tempfile::TempDir,
        script: serde_json::Value,
        socket: String,
        endpoint: String,
    ) -> TestMilter {
        // libmilter comes with Debian's python3, not with another python3
        // that may be first on PATH.
        let python = PathBuf::from("/usr/bin/python3");
        assert!(python.exists(), "/usr/bin/python3 is missing (Debian package python3-milter)");
        let script_path = dir.path().join("script.json");
        let log = dir.path().join("events.jsonl");
        std::fs::write(&script_path, script.to_string()).expect("write script");
        std::fs::write(&log, "").expect("create log");
        let program = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/milter/test_milter.py");
        let mut cmd = Command::new(python);
        cmd.arg(program)
            .arg(&socket)
            .arg(&script_path)
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let child = ChildGuard::spawn("test milter", &mut cmd);
        TestMilter { dir, endpoint, script: script_path, log, child: Some(child) }
    }

    /// Replaces the script (read again at the next SMTP connection).
    pub fn set_script(&self, script: serde_json::Value) {
        std::fs::write(&self.script, script.to_string()).expect("write script");
    }

    /// Every event logged so far, in order.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.raw_log().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// The events of one kind (`connect`, `header`, `eom`, ...).
    pub fn events_named(&self, name: &str) -> Vec<serde_json::Value> {
        self.events().into_iter().filter(|e| e["event"] == name).collect()
    }

    /// Waits until an event of this kind has been logged `n` times
    /// (events are written by the milter's threads as they happen).
    pub fn wait_for(&self, name: &str, n: usize) -> Vec<serde_json::Value> {
        super::wait_until(
            &format!("{n} '{name}' events from the test milter"),
            Duration::from_secs(20),
            || self.events_named(name).len() >= n,
            || self.raw_log(),
        );
        self.events_named(name)
    }

    pub fn raw_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills it (its socket stops answering).
    pub fn stop(&mut self) {
        self.child.take();
    }
}

/// A private rspamd.
#[derive(Debug)]
pub struct Rspamd {
    /// Stopped (by `Drop`) before its directory goes.
    pub dir: tempfile::TempDir,
    /// The milter port (proxy worker).
    pub port: u16,
    pub endpoint: String,
    child: Option<ChildGuard>,
}

impl Rspamd {
    /// Starts rspamd and waits until its milter port answers.
    pub fn start() -> Rspamd {
        let rspamd = need("rspamd", "rspamd");
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        for sub in ["local/override.d", "db", "run", "log"] {
            std::fs::create_dir_all(d.join(sub)).expect("mkdir");
        }
        let (port, normal, controller) = (free_port(), free_port(), free_port());
        let write = |name: &str, text: String| {
            std::fs::write(d.join("local/override.d").join(name), text).expect("write")
        };
        write(
            "worker-proxy.inc",
            format!(
                "bind_socket = \"127.0.0.1:{port}\";\nmilter = yes;\ntimeout = 120s;\ncount = 1;\n\
                 upstream \"local\" {{\n  default = yes;\n  self_scan = yes;\n}}\n"
            ),
        );
        write("worker-normal.inc", format!("bind_socket = \"127.0.0.1:{normal}\";\ncount = 1;\n"));
        write("worker-controller.inc", format!("bind_socket = \"127.0.0.1:{controller}\";\ncount = 1;\n"));
        // No DNS leaves the host (a closed loopback port refuses at once);
        // a short TLD list and no hyperscan make it start in seconds
        // instead of compiling for half a minute.
        std::fs::write(d.join("tld.dat"), "com\nnet\norg\ntest\nexample\ninvalid\n").expect("write");
        write(
            "options.inc",
            format!(
                "dns {{\n  nameserver = [\"127.0.0.1:1\"];\n  timeout = 0.5s;\n  retransmits = 1;\n}}\n\
                 disable_hyperscan = true;\nurl_tld = \"{}\";\n",
                d.join("tld.dat").display()
            ),
        );
        // Its headers on every message, local clients included (the
        // tests' clients are on loopback).
        std::fs::create_dir_all(d.join("local/local.d")).expect("mkdir");
        std::fs::write(
            d.join("local/local.d/milter_headers.conf"),
            "use = [\"x-spamd-result\", \"x-rspamd-server\", \"x-spam-status\", \"x-spam-level\"];\n\
             skip_local = false;\nskip_authenticated = false;\n",
        )
        .expect("write");
        write(
            "logging.inc",
            format!(
                "type = \"file\";\nfilename = \"{}\";\nlevel = \"info\";\n",
                d.join("log/rspamd.log").display()
            ),
        );
        let var = |k: &str, sub: &str| format!("--var={k}={}", d.join(sub).display());
        let mut cmd = Command::new(rspamd);
        // -i: the tests run as root here; rspamd would otherwise want a
        // user to drop to.
        cmd.args(["-f", "-i", "-c", "/etc/rspamd/rspamd.conf"])
            .arg(var("LOCAL_CONFDIR", "local"))
            .arg(var("DBDIR", "db"))
            .arg(var("RUNDIR", "run"))
            .arg(var("LOGDIR", "log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Its own process group (led by the main process, whose PID names
        // it), so stopping it reaches every worker and helper it forked.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = ChildGuard::spawn("rspamd", &mut cmd);
        let r = Rspamd { endpoint: format!("inet:127.0.0.1:{port}"), port, dir, child: Some(child) };
        assert!(
            wait_for_port(([127, 0, 0, 1], port).into(), Duration::from_secs(90)),
            "rspamd did not listen on {port}; log:\n{}",
            r.log()
        );
        r
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log/rspamd.log")).unwrap_or_default()
    }

    /// Stops every rspamd process: SIGTERM to the process group the main
    /// process leads (it stops its workers; the group catches a helper
    /// that outlives it), then SIGKILL to what is left of the group.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let group = format!("-{}", child.pid());
            let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = child.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = Command::new("kill").args(["-KILL", "--", &group]).stderr(Stdio::null()).status();
            drop(child);
        }
    }
}

impl Drop for Rspamd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// OpenDKIM or OpenDMARC as an MX runs them: verifying what arrives and
/// adding `Authentication-Results:` for `authserv_id`.
///
/// Neither lets a test name a DNS port, and both read /etc/resolv.conf
/// (OpenDMARC's system resolver; OpenDKIM's libunbound adds its servers to
/// any it is given): each runs in a mount namespace of its own where
/// /etc/resolv.conf names the test's server, on port 53 of a loopback
/// address (`unshare -m`; the tests run as root, as the other filters'
/// tests do), and OpenDKIM's libunbound is told to forward there too.
/// Nothing outside the filter sees the change.
#[derive(Debug)]
pub struct AuthFilter {
    /// First, so it is killed before its directory goes.
    child: Option<ChildGuard>,
    pub endpoint: String,
    pub dir: tempfile::TempDir,
}

/// Which filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthKind {
    OpenDkim,
    OpenDmarc,
}

impl AuthFilter {
    /// Starts it, resolving through `dns` (port 53), and waits until its
    /// milter port answers. Mail from 127.0.0.1 is checked like any
    /// other: both leave local clients alone by default.
    pub fn start(kind: AuthKind, dns: std::net::SocketAddr, authserv_id: &str) -> AuthFilter {
        assert_eq!(dns.port(), 53, "the filters' resolvers ask port 53 only");
        // OpenDKIM refuses configuration files under a directory others
        // can write, such as /tmp.
        let dir = tempfile::Builder::new()
            .prefix("authfilter")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("tempdir");
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .expect("chmod");
        let d = dir.path();
        let port = free_port();
        let write = |name: &str, text: String| {
            let path = d.join(name);
            std::fs::write(&path, text).expect("write");
            path
        };
        // Only a documentation address is "internal" or "ignored".
        let hosts = write("hosts", "192.0.2.1\n".into());
        let output = std::fs::File::create(d.join("output.log")).expect("log file");
        let resolv = write("resolv.conf", format!("nameserver {}\noptions timeout:2 attempts:2\n", dns.ip()));
        let (program, conf) = match kind {
            AuthKind::OpenDkim => {
                // libunbound refuses loopback servers unless told, and
                // answers for test. itself (RFC 6761) unless told.
                let unbound = write(
                    "unbound.conf",
                    format!(
                        "server:\n  do-not-query-localhost: no\n  local-zone: \"test.\" nodefault\n\
                         forward-zone:\n  name: \".\"\n  forward-addr: {}\n",
                        dns.ip()
                    ),
                );
                let conf = write(
                    "opendkim.conf",
                    format!(
                        "Mode v\nSocket inet:{port}@127.0.0.1\nAuthservID {authserv_id}\n\
                         AlwaysAddARHeader yes\nInternalHosts {}\nResolverConfiguration {}\n\
                         Syslog no\n",
                        hosts.display(),
                        unbound.display(),
                    ),
                );
                (need("opendkim", "opendkim"), ("-x", conf))
            }
            AuthKind::OpenDmarc => {
                let conf = write(
                    "opendmarc.conf",
                    format!(
                        "Socket inet:{port}@127.0.0.1\nAuthservID {authserv_id}\n\
                         TrustedAuthservIDs {authserv_id}\nRejectFailures true\nIgnoreHosts {}\n\
                         SPFSelfValidate false\nSPFIgnoreResults true\nRequiredHeaders false\n\
                         FailureReports false\nSyslog false\n",
                        hosts.display(),
                    ),
                );
                (need("opendmarc", "opendmarc"), ("-c", conf))
            }
        };
        // A private /etc/resolv.conf: unshare(1) execs in place, and so
        // does sh, so the PID is the filter's own.
        let mut cmd = Command::new(need("unshare", "util-linux"));
        cmd.args(["-m", "--propagation", "private", "sh", "-c"])
            .arg("mount --bind \"$1\" /etc/resolv.conf && exec \"$2\" -f \"$3\" \"$4\"")
            .arg("sh")
            .arg(resolv)
            .arg(program)
            .arg(conf.0)
            .arg(conf.1);
        cmd.stdout(output.try_clone().expect("log file")).stderr(output);
        let name = match kind {
            AuthKind::OpenDkim => "opendkim",
            AuthKind::OpenDmarc => "opendmarc",
        };
        let child = ChildGuard::spawn(name, &mut cmd);
        let f = AuthFilter { child: Some(child), endpoint: format!("inet:127.0.0.1:{port}"), dir };
        assert!(
            wait_for_port(([127, 0, 0, 1], port).into(), Duration::from_secs(20)),
            "{name} did not listen on {port}; output:\n{}",
            f.output()
        );
        f
    }

    /// What it wrote on stdout and stderr.
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("output.log")).unwrap_or_default()
    }
}
