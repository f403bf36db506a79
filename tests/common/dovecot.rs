//! A private Dovecot (LMTP + IMAP) for tests: its own directory, its own
//! configuration rendered from `tests/common/dovecot.conf.in`, listeners on
//! free 127.0.0.1 ports, run in the foreground (`dovecot -F -c FILE`) as the
//! current user, killed by PID when dropped.
//!
//! Mail is read back from the Maildir or over IMAP (a minimal blocking IMAP
//! client is here, enough for LOGIN/SELECT/FETCH BODY.PEEK[]).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{ChildGuard, free_port, wait_for_port, which};

/// The configuration template (see its header for the placeholders).
pub const TEMPLATE: &str = include_str!("dovecot.conf.in");

/// Values for the template's placeholders.
#[derive(Debug, Clone)]
pub struct Vars {
    pub dir: PathBuf,
    pub lmtp_port: u16,
    pub imap_port: u16,
    pub user: String,
    pub group: String,
    pub login_user: String,
    pub mail_uid: u32,
    pub quota_tempfail: bool,
    /// Certificate and key PEM files: TLS on (LMTP offers STARTTLS).
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// The template with every placeholder replaced.
pub fn render(v: &Vars) -> String {
    TEMPLATE
        .replace("@DIR@", &v.dir.display().to_string())
        .replace("@LMTP_PORT@", &v.lmtp_port.to_string())
        .replace("@IMAP_PORT@", &v.imap_port.to_string())
        .replace("@USER@", &v.user)
        .replace("@GROUP@", &v.group)
        .replace("@LOGIN_USER@", &v.login_user)
        .replace("@MAIL_UID@", &v.mail_uid.to_string())
        .replace("@QUOTA_TEMPFAIL@", if v.quota_tempfail { "yes" } else { "no" })
        // The setting's own line only: the comment naming the placeholder
        // must stay one comment line.
        .replace(
            "\n@SSL@\n",
            &match &v.tls {
                None => "\nssl = no\n".to_owned(),
                Some((cert, key)) => {
                    format!("\nssl = yes\nssl_cert = <{}\nssl_key = <{}\n", cert.display(), key.display())
                }
            },
        )
}

/// A mailbox user.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub password: String,
    /// Dovecot quota rule value, e.g. `*:storage=2K`; `None`: the default.
    pub quota: Option<String>,
}

impl User {
    pub fn new(name: &str) -> User {
        User { name: name.into(), password: "pw".into(), quota: None }
    }

    pub fn with_quota(name: &str, rule: &str) -> User {
        User { name: name.into(), password: "pw".into(), quota: Some(rule.into()) }
    }
}

/// A running private Dovecot.
#[derive(Debug)]
pub struct Dovecot {
    pub dir: tempfile::TempDir,
    pub lmtp_port: u16,
    pub imap_port: u16,
    child: ChildGuard,
    mail_uid: u32,
}

fn id(flag: &str) -> String {
    Command::new("id")
        .arg(flag)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

impl Dovecot {
    /// True when Dovecot's LMTP server is installed here.
    pub fn available() -> bool {
        which("dovecot").is_some() && Path::new("/usr/lib/dovecot/lmtp").exists()
    }

    /// Fails the test when Dovecot's LMTP server is not installed.
    pub fn require() {
        assert!(
            Dovecot::available(),
            "dovecot-lmtpd is needed (Debian packages dovecot-lmtpd, dovecot-imapd; \
             scripts/bootstrap test installs them)"
        );
    }

    /// Starts Dovecot with these users. Panics when it does not come up (the
    /// log is printed).
    pub fn start(users: &[User], quota_tempfail: bool) -> Dovecot {
        Self::start_with(users, quota_tempfail, None)
    }

    /// Starts Dovecot with TLS: its LMTP offers STARTTLS with this
    /// certificate (chain) and key, PEM files.
    pub fn start_tls(users: &[User], cert: &Path, key: &Path) -> Dovecot {
        Self::start_with(users, false, Some((cert.to_path_buf(), key.to_path_buf())))
    }

    fn start_with(users: &[User], quota_tempfail: bool, tls: Option<(PathBuf, PathBuf)>) -> Dovecot {
        let dir = tempfile::Builder::new().prefix("sluice-dovecot-").tempdir().expect("temp dir");
        let uid: u32 = id("-u").parse().unwrap_or(0);
        // Dovecot refuses to deliver as root: root runs store mail as nobody.
        let mail_uid = if uid == 0 { 65534 } else { uid };
        let vars = Vars {
            dir: dir.path().to_path_buf(),
            lmtp_port: free_port(),
            imap_port: free_port(),
            user: id("-un"),
            group: id("-gn"),
            login_user: if uid == 0 { "dovenull".into() } else { id("-un") },
            mail_uid,
            quota_tempfail,
            tls,
        };
        let mail = dir.path().join("mail");
        std::fs::create_dir_all(&mail).expect("mail dir");
        let mut passwd = String::new();
        for u in users {
            let home = mail.join(&u.name);
            let mut line =
                format!("{}:{{PLAIN}}{}:{mail_uid}:{mail_uid}::{}::", u.name, u.password, home.display());
            if let Some(q) = &u.quota {
                line.push_str(&format!("userdb_quota_rule={q}"));
            }
            passwd.push_str(&line);
            passwd.push('\n');
        }
        std::fs::write(dir.path().join("users"), passwd).expect("users file");
        if uid == 0 {
            let _ = Command::new("chown").arg(format!("{mail_uid}:{mail_uid}")).arg(&mail).status();
        }
        let conf = dir.path().join("dovecot.conf");
        std::fs::write(&conf, render(&vars)).expect("dovecot.conf");
        let dovecot = which("dovecot").expect("dovecot installed");
        let child = ChildGuard::spawn(
            "dovecot",
            Command::new(dovecot).arg("-F").arg("-c").arg(&conf).stdout(Stdio::null()).stderr(Stdio::null()),
        );
        let d = Dovecot { dir, lmtp_port: vars.lmtp_port, imap_port: vars.imap_port, child, mail_uid };
        let lmtp: SocketAddr = ([127, 0, 0, 1], d.lmtp_port).into();
        let imap: SocketAddr = ([127, 0, 0, 1], d.imap_port).into();
        if !wait_for_port(lmtp, Duration::from_secs(15)) || !wait_for_port(imap, Duration::from_secs(5)) {
            panic!("dovecot did not start; log:\n{}", d.log());
        }
        d
    }

    /// Stops Dovecot (SIGTERM to its master, by PID) and waits until its
    /// LMTP port refuses connections: the mailbox server is down.
    pub fn stop(&mut self) {
        self.child.terminate(Duration::from_secs(10));
        let lmtp: SocketAddr = ([127, 0, 0, 1], self.lmtp_port).into();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&lmtp, Duration::from_millis(200)).is_ok() {
            assert!(std::time::Instant::now() < deadline, "dovecot still listens on {lmtp}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts Dovecot again after [`stop`](Self::stop): same configuration,
    /// same ports, same mailboxes.
    pub fn restart(&mut self) {
        let dovecot = which("dovecot").expect("dovecot installed");
        let conf = self.dir.path().join("dovecot.conf");
        self.child = ChildGuard::spawn(
            "dovecot",
            Command::new(dovecot).arg("-F").arg("-c").arg(&conf).stdout(Stdio::null()).stderr(Stdio::null()),
        );
        let lmtp: SocketAddr = ([127, 0, 0, 1], self.lmtp_port).into();
        if !wait_for_port(lmtp, Duration::from_secs(15)) {
            panic!("dovecot did not restart; log:\n{}", self.log());
        }
    }

    /// Dovecot's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }

    /// Messages in a user's Maildir INBOX (`new/` and `cur/`), as stored
    /// (Dovecot stores LF line ends), oldest first by file name.
    pub fn maildir(&self, user: &str) -> Vec<Vec<u8>> {
        let base = self.dir.path().join("mail").join(user).join("Maildir");
        let mut files = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(rd) = std::fs::read_dir(base.join(sub)) {
                files.extend(rd.flatten().map(|e| e.path()));
            }
        }
        files.sort();
        files.into_iter().filter_map(|p| std::fs::read(p).ok()).collect()
    }

    /// Every message in a user's INBOX read over IMAP (`BODY.PEEK[]`, CRLF
    /// line ends as IMAP sends them).
    pub fn imap_fetch_all(&self, user: &str, password: &str) -> Vec<Vec<u8>> {
        let mut imap = Imap::connect(([127, 0, 0, 1], self.imap_port).into());
        imap.command(&format!("LOGIN {user} {password}"));
        let select = imap.command("SELECT INBOX");
        let exists = select
            .iter()
            .filter_map(|l| {
                let s = String::from_utf8_lossy(l);
                let mut w = s.split_whitespace();
                match (w.next(), w.next(), w.next()) {
                    (Some("*"), Some(n), Some("EXISTS")) => n.parse::<usize>().ok(),
                    _ => None,
                }
            })
            .next()
            .unwrap_or(0);
        if exists == 0 {
            return Vec::new();
        }
        let out = imap.fetch_bodies("FETCH 1:* (BODY.PEEK[])");
        imap.command("LOGOUT");
        out
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        // SIGTERM the master by PID; its children exit with it. The guard
        // SIGKILLs it if it is still there.
        self.child.terminate(Duration::from_secs(5));
    }
}

/// A minimal IMAP client for reading test mail back.
struct Imap {
    r: BufReader<TcpStream>,
    w: TcpStream,
    tag: u32,
}

impl Imap {
    fn connect(addr: SocketAddr) -> Imap {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("imap connect");
        s.set_read_timeout(Some(Duration::from_secs(15))).expect("timeout");
        let mut imap = Imap { r: BufReader::new(s.try_clone().expect("clone")), w: s, tag: 0 };
        let mut greeting = Vec::new();
        imap.r.read_until(b'\n', &mut greeting).expect("imap greeting");
        assert!(greeting.starts_with(b"* OK"), "imap greeting: {}", String::from_utf8_lossy(&greeting));
        imap
    }

    /// Sends a command and returns the untagged lines up to its tagged OK.
    fn command(&mut self, cmd: &str) -> Vec<Vec<u8>> {
        self.tag += 1;
        let tag = format!("a{}", self.tag);
        write!(self.w, "{tag} {cmd}\r\n").expect("imap write");
        let mut lines = Vec::new();
        loop {
            let mut line = Vec::new();
            self.r.read_until(b'\n', &mut line).expect("imap read");
            assert!(!line.is_empty(), "imap connection closed during {cmd}");
            if line.starts_with(tag.as_bytes()) {
                let s = String::from_utf8_lossy(&line);
                assert!(s.contains(" OK"), "imap {cmd}: {s}");
                return lines;
            }
            lines.push(line);
        }
    }

    /// A FETCH whose responses carry one literal each: returns the literals.
    fn fetch_bodies(&mut self, cmd: &str) -> Vec<Vec<u8>> {
        self.tag += 1;
        let tag = format!("a{}", self.tag);
        write!(self.w, "{tag} {cmd}\r\n").expect("imap write");
        let mut bodies = Vec::new();
        loop {
            let mut line = Vec::new();
            self.r.read_until(b'\n', &mut line).expect("imap read");
            assert!(!line.is_empty(), "imap connection closed during FETCH");
            if line.starts_with(tag.as_bytes()) {
                return bodies;
            }
            let s = String::from_utf8_lossy(&line);
            if let Some(open) = s.rfind('{')
                && let Some(n) =
                    s[open + 1..].trim_end().strip_suffix('}').and_then(|n| n.parse::<usize>().ok())
            {
                let mut body = vec![0; n];
                self.r.read_exact(&mut body).expect("imap literal");
                bodies.push(body);
            }
        }
    }
}
