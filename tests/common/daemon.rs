//! The real `sluice` binary as a daemon under test: a config directory
//! (main.cf, master.cf, tables) in a temp dir, a loopback SMTP port, the
//! queue, admin socket, metrics endpoint and log file under the temp dir.
//! Stopped with SIGTERM on drop (SIGKILL if it does not exit).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use super::{ChildGuard, free_port, wait_for_port};

/// Path of the binary under test.
pub fn sluice_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sluice"))
}

/// A configuration directory for a test daemon.
#[derive(Debug)]
pub struct TestConfig {
    pub dir: tempfile::TempDir,
    pub smtp: SocketAddr,
    pub metrics: SocketAddr,
}

impl TestConfig {
    /// An MX for `relay.test` (any recipient; the test client 127.0.0.1 is
    /// outside mynetworks, so relay control applies to it) routed to `transport` (a
    /// transport(5) result such as `lmtp:[127.0.0.1]:PORT`); `extra` lines
    /// are appended to main.cf. Clients are not looked up in DNS
    /// (`smtpd_peername_lookup = no`): the machine's resolver is not the
    /// test's to rely on, so every client is `unknown`, as in Postfix. For
    /// the same reason no sender authentication check runs
    /// (`sluice_auth_checks =`); tests of those set it with
    /// `sluice_dns_servers` pointing at their own DNS server.
    pub fn new(transport: &str, extra: &str) -> TestConfig {
        let dir = tempfile::tempdir().expect("tempdir");
        let smtp: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let d = dir.path();
        let main_cf = format!(
            "# test daemon\n\
             myhostname = mx.test\n\
             queue_directory = {q}\n\
             inet_interfaces = loopback-only\n\
             inet_protocols = ipv4\n\
             mynetworks = 127.0.0.2/32\n\
             relay_domains = relay.test\n\
             transport_maps = texthash:{d}/transport\n\
             sluice_metrics_listen = {metrics}\n\
             maillog_file = {d}/mail.log\n\
             minimal_backoff_time = 1s\n\
             maximal_backoff_time = 2s\n\
             queue_run_delay = 1s\n\
             sluice_shutdown_grace = 2s\n\
             smtpd_peername_lookup = no\n\
             sluice_auth_checks =\n\
             {extra}\n",
            q = d.join("spool").display(),
            d = d.display(),
        );
        std::fs::write(d.join("main.cf"), main_cf).expect("main.cf");
        std::fs::write(d.join("master.cf"), format!("{smtp} inet n - n - - smtpd\n")).expect("master.cf");
        std::fs::write(d.join("transport"), format!("relay.test {transport}\n")).expect("transport");
        TestConfig { dir, smtp, metrics }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Appends to main.cf (then reload or restart).
    pub fn append_main_cf(&self, text: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(self.path().join("main.cf")).expect("open");
        writeln!(f, "{text}").expect("append");
    }

    /// The log written so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path().join("mail.log")).unwrap_or_default()
    }

    /// Runs a `sluice` command against this config and returns its output.
    pub fn sluice(&self, args: &[&str]) -> Output {
        Command::new(sluice_bin()).arg("-c").arg(self.path()).args(args).output().expect("run sluice")
    }

    /// Like [`sluice`](Self::sluice), feeding `stdin`.
    pub fn sluice_stdin(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        let mut child = Command::new(sluice_bin())
            .arg("-c")
            .arg(self.path())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write");
        child.wait_with_output().expect("wait")
    }
}

/// A running daemon.
#[derive(Debug)]
pub struct Daemon {
    pub child: ChildGuard,
}

impl Daemon {
    /// Starts `sluice serve` on `config` and waits for its SMTP port.
    pub fn start(config: &TestConfig) -> Daemon {
        Daemon::start_with_env(config, &[])
    }

    /// Starts it with these environment variables set (`SSL_CERT_FILE`: the
    /// roots its TLS clients trust).
    pub fn start_with_env(config: &TestConfig, env: &[(&str, &std::path::Path)]) -> Daemon {
        let mut cmd = Command::new(sluice_bin());
        cmd.envs(env.iter().copied());
        cmd.arg("-c").arg(config.path()).arg("serve").stdout(Stdio::null()).stderr(Stdio::inherit());
        let mut child = ChildGuard::spawn("sluice", &mut cmd);
        if !wait_for_port(config.smtp, Duration::from_secs(30)) {
            let st = child.child.try_wait();
            panic!("sluice did not listen on {} (exit: {st:?}); log:\n{}", config.smtp, config.log());
        }
        Daemon { child }
    }

    /// SIGTERM and wait for a clean exit (returns the status).
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.child.terminate(Duration::from_secs(60)).expect("sluice did not stop within 60 s")
    }

    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.pid().to_string())
            .status()
            .expect("kill");
        assert!(st.success());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.child.try_wait() {
            let _ = self.child.terminate(Duration::from_secs(20));
        }
    }
}

/// Sends one message over SMTP with Python's smtplib (a real client);
/// returns the final reply line (e.g. `250 2.0.0 Ok: queued as ...`).
pub fn send(addr: SocketAddr, from: &str, to: &[&str], body: &str) -> Result<String, String> {
    let script = r#"
import smtplib, sys
host, port, sender, rcpts, body = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4].split(','), sys.stdin.read()
s = smtplib.SMTP(host, port, timeout=30)
s.ehlo('client.test')
s.mail(sender)
for r in rcpts:
    code, msg = s.rcpt(r)
    if code >= 400:
        print(code, msg.decode()); sys.exit(1)
code, msg = s.data(body.encode())
print(code, msg.decode())
s.quit()
sys.exit(0 if code == 250 else 1)
"#;
    use std::io::Write;
    let mut child = Command::new("python3")
        .args(["-c", script, &addr.ip().to_string(), &addr.port().to_string(), from, &to.join(",")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    child.stdin.take().expect("stdin").write_all(body.as_bytes()).map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("{text} {}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// The queue ID from a `250 ... queued as ID` reply.
pub fn queued_id(reply: &str) -> String {
    reply.rsplit(' ').next().expect("queue id").trim().to_owned()
}
