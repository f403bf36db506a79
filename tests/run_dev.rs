//! The README's first command, `scripts/run-dev`, end to end: it starts its
//! private Dovecot and sluice, the `swaks` line it prints (the README's,
//! with the test's port) delivers a message that lands byte-exact in the
//! Maildir it names and can be read over IMAP with the login it prints, its
//! `queue list`/`backend list` lines and metrics URL work, and a SIGTERM or
//! a Ctrl-C stops everything it started.
//!
//! The script runs with a temp var directory, free ports and the test build
//! of the binary (`SLUICE_BIN`), in its own process group. It never touches
//! the repository's `var/`, the fixed dev ports or a system Dovecot; if a
//! test fails half-way, the guard stops the script by PID and then kills
//! whatever it had started.
// Waiting for a port or for a process to exit is real time by design.
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use common::dovecot::Dovecot;
use common::{free_port, wait_for_port, wait_until};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Fails the test when the dev run's peers are missing.
fn require_peers() {
    Dovecot::require();
    common::need("swaks", "swaks");
}

/// A process as `/proc` knows it: PID and start time (clock ticks after
/// boot), so that a reused PID is not mistaken for it.
type Proc = (u32, u64);

/// Every process in `/proc`: PID -> (parent PID, start time, state).
fn proc_table() -> HashMap<u32, (u32, u64, char)> {
    let mut t = HashMap::new();
    let Ok(rd) = std::fs::read_dir("/proc") else { return t };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { continue };
        // The command name (field 2) is in parentheses and may hold spaces.
        let Some(close) = stat.rfind(')') else { continue };
        let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        // f[0] is field 3 (state), f[1] field 4 (ppid), f[19] field 22 (starttime).
        if let (Some(state), Some(ppid), Some(start)) = (
            f.first().and_then(|s| s.chars().next()),
            f.get(1).and_then(|s| s.parse().ok()),
            f.get(19).and_then(|s| s.parse().ok()),
        ) {
            t.insert(pid, (ppid, start, state));
        }
    }
    t
}

/// `root` and every process below it.
fn tree(root: u32) -> BTreeSet<Proc> {
    let t = proc_table();
    let mut out = BTreeSet::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        if let Some(&(_, start, _)) = t.get(&p) {
            out.insert((p, start));
        }
        todo.extend(t.iter().filter(|(_, (ppid, _, _))| *ppid == p).map(|(pid, _)| *pid));
    }
    out
}

/// The processes of `procs` that still run (a zombie no longer runs).
fn running(procs: &BTreeSet<Proc>) -> Vec<Proc> {
    let t = proc_table();
    procs
        .iter()
        .filter(|(pid, start)| matches!(t.get(pid), Some(&(_, s, state)) if s == *start && state != 'Z'))
        .copied()
        .collect()
}

fn signal(target: &str, sig: &str) {
    let _ = Command::new("kill").arg(format!("-{sig}")).arg("--").arg(target).status();
}

/// Free loopback ports for one run.
#[derive(Debug, Clone, Copy)]
struct Ports {
    smtp: u16,
    lmtp: u16,
    imap: u16,
    metrics: u16,
}

/// `scripts/run-dev` with `dir/var`, these ports and the test binary.
fn script(dir: &Path, ports: Ports) -> Command {
    let mut cmd = Command::new(repo().join("scripts/run-dev"));
    // Not the repository: the script finds its own way there.
    cmd.current_dir(dir)
        .env("SLUICE_BIN", env!("CARGO_BIN_EXE_sluice"))
        .env("SLUICE_DEV_VAR", dir.join("var"))
        .env("SLUICE_DEV_SMTP_PORT", ports.smtp.to_string())
        .env("SLUICE_DEV_LMTP_PORT", ports.lmtp.to_string())
        .env("SLUICE_DEV_IMAP_PORT", ports.imap.to_string())
        .env("SLUICE_DEV_METRICS_PORT", ports.metrics.to_string());
    cmd
}

/// `scripts/run-dev` running in a temp dir; stopped (and everything it
/// started killed) on drop.
struct RunDev {
    dir: tempfile::TempDir,
    ports: Ports,
    child: Child,
    /// Every process seen under the script while it ran.
    seen: BTreeSet<Proc>,
}

impl RunDev {
    /// Starts the script and waits until sluice listens.
    fn start() -> RunDev {
        let dir = tempfile::Builder::new().prefix("sluice-run-dev-").tempdir().expect("temp dir");
        let ports = Ports { smtp: free_port(), lmtp: free_port(), imap: free_port(), metrics: free_port() };
        let out = std::fs::File::create(dir.path().join("run-dev.out")).expect("stdout file");
        let err = std::fs::File::create(dir.path().join("run-dev.err")).expect("stderr file");
        let child = script(dir.path(), ports)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own process group, as a shell gives a foreground job: the
            // Ctrl-C test signals the group the way a terminal does.
            .process_group(0)
            .spawn()
            .expect("start scripts/run-dev");
        let mut r = RunDev { dir, ports, child, seen: BTreeSet::new() };
        let smtp: SocketAddr = ([127, 0, 0, 1], ports.smtp).into();
        let deadline = Instant::now() + Duration::from_secs(90);
        // Up means: this script started its sluice (its PID file is
        // written after Dovecot's) and something listens on the port.
        let started = |r: &RunDev| r.var().join("run-dev/sluice.pid").exists();
        while !(started(&r) && wait_for_port(smtp, Duration::from_millis(500))) {
            let exited = r.child.try_wait().ok().flatten();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "run-dev did not bring sluice up on {smtp} (exit: {exited:?})\n{}",
                r.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        r.observe();
        r
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn var(&self) -> PathBuf {
        self.dir.path().join("var")
    }

    /// Records the processes now running under the script.
    fn observe(&mut self) {
        let now = tree(self.pid());
        self.seen.extend(now);
    }

    /// What the script printed so far, and Dovecot's log.
    fn output(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        let dovecot = std::fs::read_to_string(self.var().join("dovecot/dovecot.log")).unwrap_or_default();
        format!(
            "--- stdout\n{}\n--- stderr\n{}\n--- dovecot.log\n{dovecot}",
            read("run-dev.out"),
            read("run-dev.err")
        )
    }

    /// The banner line labelled `label` (`send`, `queue`, ...), without it.
    fn banner(&self, label: &str) -> String {
        let out = std::fs::read_to_string(self.dir.path().join("run-dev.out")).unwrap_or_default();
        out.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(label).filter(|rest| rest.starts_with(' ')))
            .map(|rest| rest.trim().to_owned())
            .unwrap_or_else(|| panic!("no `{label}` line in the banner\n{}", self.output()))
    }

    /// The PID the script recorded for `name` (`sluice`, `dovecot`).
    fn pid_file(&self, name: &str) -> u32 {
        let path = self.var().join("run-dev").join(format!("{name}.pid"));
        std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(|| panic!("no PID in {}", path.display()))
    }

    /// Waits for the script to exit after a signal.
    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st;
            }
            assert!(Instant::now() < deadline, "run-dev did not stop within 60 s\n{}", self.output());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Messages in user's Maildir `new/`, oldest first by file name.
    fn maildir_new(&self, user: &str) -> Vec<Vec<u8>> {
        let new = self.var().join("mail").join(user).join("Maildir/new");
        let mut files: Vec<PathBuf> = match std::fs::read_dir(new) {
            Ok(rd) => rd.flatten().map(|e| e.path()).collect(),
            Err(_) => Vec::new(),
        };
        files.sort();
        files.into_iter().filter_map(|p| std::fs::read(p).ok()).collect()
    }
}

impl Drop for RunDev {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.observe();
            // The script's trap stops sluice and Dovecot in order.
            signal(&self.pid().to_string(), "TERM");
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // Whatever is left of what it started: by PID, checked against its
        // start time.
        for (pid, _) in running(&self.seen) {
            signal(&pid.to_string(), "KILL");
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a banner command line (words split on spaces) from the repository
/// root, as a reader would paste it.
fn run_line(line: &str) -> Output {
    let words: Vec<&str> = line.split_whitespace().collect();
    let (prog, args) = words.split_first().expect("a command");
    Command::new(repo().join(prog)).args(args).current_dir(repo()).output().expect("run banner command")
}

/// The message swaks sent, from its transcript: the ` -> ` lines between
/// the `354` and the final dot, with CRLF line ends.
fn sent_message(transcript: &str) -> Vec<u8> {
    let mut lines = transcript.lines().skip_while(|l| !l.starts_with("<-  354"));
    lines.next().expect("a 354 reply in the swaks transcript");
    let mut msg = Vec::new();
    for l in lines {
        let data = l.strip_prefix(" -> ").or_else(|| l.strip_prefix(" ->")).expect("a client line");
        if data == "." {
            return msg;
        }
        msg.extend_from_slice(data.as_bytes());
        msg.extend_from_slice(b"\r\n");
    }
    panic!("no final dot in the swaks transcript:\n{transcript}");
}

fn lf(b: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(b).replace("\r\n", "\n").into_bytes()
}

/// Splits a stored message into Dovecot's `Return-Path:` line, sluice's
/// `Received:` header (with its continuation lines) and the rest.
fn split_trace(stored: &str) -> (&str, &str, &str) {
    let rp_end = stored.find('\n').expect("a first line") + 1;
    let (rp, rest) = stored.split_at(rp_end);
    let mut end = rest.find('\n').expect("a Received line") + 1;
    while rest[end..].starts_with('\t') || rest[end..].starts_with(' ') {
        end += rest[end..].find('\n').expect("a folded line") + 1;
    }
    let (received, body) = rest.split_at(end);
    (rp, received, body)
}

/// One message over IMAP with Python's imaplib (a real client).
fn imap_fetch_first(port: u16, user: &str, password: &str) -> Vec<u8> {
    let script = r#"
import imaplib, sys
m = imaplib.IMAP4('127.0.0.1', int(sys.argv[1]))
m.login(sys.argv[2], sys.argv[3])
m.select('INBOX')
typ, data = m.fetch('1', '(BODY.PEEK[])')
sys.stdout.buffer.write(data[0][1])
m.logout()
"#;
    let out = Command::new("python3")
        .args(["-c", script, &port.to_string(), user, password])
        .output()
        .expect("run python3");
    assert!(out.status.success(), "imap fetch: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn http_get(url: &str) -> String {
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut s = TcpStream::connect(host).expect("connect to the metrics endpoint");
    s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").expect("write");
    let mut body = String::new();
    s.read_to_string(&mut body).expect("read");
    body
}

#[test]
fn readme_swaks_line_lands_byte_exact_in_the_maildir_and_sigterm_stops_everything() {
    require_peers();
    let mut run = RunDev::start();
    let p = run.ports;

    // The banner's send line is the README's, with this run's port.
    let send = run.banner("send");
    assert_eq!(send, format!("swaks --server 127.0.0.1:{} --to user@dev.test", p.smtp));
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let want = send.replace(&format!(":{}", p.smtp), ":2525");
    assert!(
        readme.lines().map(str::trim).any(|l| l == want || l.starts_with(&format!("{want} "))),
        "README.md shows the banner's swaks line with port 2525: {want}"
    );
    let maildir = run.banner("lands in");
    assert!(maildir.starts_with(&format!("{}/mail/user/Maildir/new/", run.var().display())), "{maildir}");

    // The script started both servers, and knows them by PID.
    let sluice = run.pid_file("sluice");
    let dovecot = run.pid_file("dovecot");
    let pids: Vec<u32> = run.seen.iter().map(|(pid, _)| *pid).collect();
    assert!(pids.contains(&sluice) && pids.contains(&dovecot), "{pids:?} holds sluice and dovecot");

    // Send with exactly that line.
    let words: Vec<&str> = send.split_whitespace().collect();
    let out = Command::new(words[0]).args(&words[1..]).output().expect("run swaks");
    let transcript = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "swaks failed:\n{transcript}\n{}", String::from_utf8_lossy(&out.stderr));
    let queue_id =
        transcript.lines().find_map(|l| l.split("queued as ").nth(1)).expect("a queue ID").trim().to_owned();
    let sent = sent_message(&transcript);

    wait_until(
        "the message in the Maildir",
        Duration::from_secs(60),
        || !run.maildir_new("user").is_empty(),
        || run.output(),
    );
    run.observe();
    let stored = run.maildir_new("user");
    assert_eq!(stored.len(), 1, "one message");
    let stored = String::from_utf8(stored[0].clone()).expect("utf-8 message");
    let (return_path, received, rest) = split_trace(&stored);
    assert!(return_path.starts_with("Return-Path: <") && return_path.ends_with(">\n"), "{return_path}");
    assert!(received.starts_with("Received: from "), "{received}");
    assert!(received.contains(&format!("id {queue_id}\n\tfor <user@dev.test>;")), "{received}");
    assert_eq!(rest.as_bytes(), lf(&sent).as_slice(), "the message as swaks sent it, byte for byte");

    // Over IMAP with the banner's login: the same message, CRLF line ends.
    assert_eq!(run.banner("IMAP"), format!("127.0.0.1:{}, login user@dev.test, password dev", p.imap));
    let over_imap = imap_fetch_first(p.imap, "user@dev.test", "dev");
    assert_eq!(lf(&over_imap), stored.as_bytes(), "IMAP serves the stored message");

    // The banner's queue, backend and metrics lines work as printed.
    let queue = run.banner("queue");
    wait_until(
        "an empty queue",
        Duration::from_secs(30),
        || String::from_utf8_lossy(&run_line(&queue).stdout).contains("Mail queue is empty"),
        || format!("{queue}: {:?}\n{}", run_line(&queue), run.output()),
    );
    let backends = run_line(&run.banner("backends"));
    let table = String::from_utf8_lossy(&backends.stdout);
    assert!(table.contains(&format!("lmtp:[127.0.0.1]:{}", p.lmtp)), "{table}");
    let metrics = run.banner("metrics");
    assert_eq!(metrics, format!("http://127.0.0.1:{}/metrics", p.metrics));
    let reply = http_get(&metrics);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");

    // SIGTERM to the script: sluice and Dovecot (and Dovecot's children)
    // are gone when it exits, and sluice stopped cleanly.
    run.observe();
    assert!(run.seen.len() >= 4, "sluice, dovecot and its helpers were seen: {:?}", run.seen);
    signal(&run.pid().to_string(), "TERM");
    let status = run.wait_exit();
    assert!(status.success(), "run-dev exits with sluice's status 0: {status:?}\n{}", run.output());
    let left = running(&run.seen);
    assert!(left.is_empty(), "left running: {left:?}\n{}", run.output());
    assert!(
        !run.var().join("run-dev/sluice.pid").exists() && !run.var().join("run-dev/dovecot.pid").exists()
    );
}

#[test]
fn ctrl_c_stops_sluice_once_and_dovecot_and_a_second_run_on_the_same_ports_refuses() {
    require_peers();
    let mut run = RunDev::start();
    let dovecot = run.pid_file("dovecot");
    assert!(run.seen.iter().any(|(pid, _)| *pid == dovecot));

    // A second run on the same ports (one left open in another terminal)
    // refuses to start, and leaves the first one alone.
    let second = tempfile::tempdir().expect("temp dir");
    let out = script(second.path(), run.ports).stdin(Stdio::null()).output().expect("run a second run-dev");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("is already in use"), "{err}");
    assert!(run.child.try_wait().expect("try_wait").is_none(), "the first run-dev still runs");
    let servers: BTreeSet<Proc> =
        run.seen.iter().filter(|(pid, _)| [dovecot, run.pid_file("sluice")].contains(pid)).copied().collect();
    assert_eq!(running(&servers).len(), 2, "its sluice and dovecot too");
    // A terminal's Ctrl-C: SIGINT to the whole foreground process group.
    signal(&format!("-{}", run.pid()), "INT");
    let status = run.wait_exit();
    let out = run.output();
    assert!(status.success(), "run-dev exits with sluice's status 0: {status:?}\n{out}");
    // sluice heard one signal (from the script), not a second one that
    // would make it exit at once.
    assert_eq!(out.matches("terminating on signal").count(), 1, "{out}");
    assert!(!out.contains("second signal"), "{out}");
    assert!(out.contains("daemon stopped"), "{out}");
    let left = running(&run.seen);
    assert!(left.is_empty(), "left running: {left:?}\n{out}");
}

#[test]
fn dev_config_loads_from_the_relative_path_the_readme_uses() {
    // `-c conf/dev` from the repository root, as the banner and README
    // print it: tables named `$config_directory/...` must resolve once.
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["-c", "conf/dev", "config", "check"])
        .current_dir(repo())
        .output()
        .expect("run sluice config check");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
