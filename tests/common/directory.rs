//! Private directory servers for the lookup-table tests, each in its own
//! temp dir on a free 127.0.0.1 port, stopped by PID when dropped:
//! OpenLDAP `slapd` (a `slapd.conf` and an LDIF loaded with `slapadd`),
//! PostgreSQL (`initdb`, then `postgres` in the foreground) and MariaDB
//! (`mariadb-install-db`, then `mariadbd`). Each logs the queries it gets
//! (slapd's stats level, `log_statement = all`, the general log), so a
//! test counts what reached the server, and each can be stopped and
//! started again on the same port and data to play an outage.
//!
//! Also [`postmap`]: Postfix's own answer for a table, for comparison.
//! PostgreSQL refuses to run as root: as root its commands run as the
//! `postgres` user the Debian package creates.
#![allow(dead_code)]
// Files are dated in the past with the system clock (see `age`).
#![allow(clippy::disallowed_methods)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{ChildGuard, free_port, need, wait_for_port};

/// The LDAP tree every LDAP test uses (suffix `dc=example,dc=com`).
pub const LDIF: &str = "\
dn: dc=example,dc=com
objectClass: dcObject
objectClass: organization
o: Example
dc: example

dn: ou=people,dc=example,dc=com
objectClass: organizationalUnit
ou: people

dn: ou=groups,dc=example,dc=com
objectClass: organizationalUnit
ou: groups

dn: uid=joe,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
objectClass: inetLocalMailRecipient
uid: joe
cn: Joe
sn: User
mail: joe@example.com
mailLocalAddress: joe@example.com
mailLocalAddress: joseph@example.com
mailRoutingAddress: joe@mbx1.example.com
mailHost: mbx1.example.com

dn: uid=ann,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
objectClass: inetLocalMailRecipient
uid: ann
cn: Ann
sn: User
mail: ann@example.com
mailLocalAddress: ann@example.com
mailRoutingAddress: ann@mbx2.example.com
mailHost: mbx2.example.com

dn: uid=star,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
objectClass: inetLocalMailRecipient
uid: star
cn: Star
sn: User
mail: a*b@example.com
mailLocalAddress: a*b@example.com
mailRoutingAddress: star@mbx1.example.com

dn: cn=staff,ou=groups,dc=example,dc=com
objectClass: groupOfNames
objectClass: inetLocalMailRecipient
cn: staff
mailLocalAddress: staff@example.com
member: uid=joe,ou=people,dc=example,dc=com
member: uid=ann,ou=people,dc=example,dc=com

dn: cn=everyone,ou=groups,dc=example,dc=com
objectClass: groupOfURLs
objectClass: inetLocalMailRecipient
cn: everyone
mailLocalAddress: everyone@example.com
memberURL: ldap:///ou=people,dc=example,dc=com?mail?one?(objectClass=inetOrgPerson)
";

/// Runs a command to completion; panics with its output when it fails.
fn run(what: &str, cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A private slapd.
#[derive(Debug)]
pub struct Slapd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// The `ldaps://` port, when started with TLS.
    pub ldaps_port: Option<u16>,
    child: Option<ChildGuard>,
}

impl Slapd {
    /// Loads `ldif` (under `dc=example,dc=com`) and starts slapd.
    pub fn start(ldif: &str) -> Slapd {
        Slapd::start_with(ldif, None)
    }

    /// [`Slapd::start`] with TLS: this certificate chain and key (PEM) for
    /// STARTTLS on the plain port and for an `ldaps://` port.
    pub fn start_tls(ldif: &str, cert_pem: &str, key_pem: &str) -> Slapd {
        Slapd::start_with(ldif, Some((cert_pem, key_pem)))
    }

    fn start_with(ldif: &str, tls: Option<(&str, &str)>) -> Slapd {
        let slapd = need("slapd", "slapd");
        let slapadd = need("slapadd", "slapd");
        let dir = tempfile::Builder::new().prefix("sluice-slapd-").tempdir().expect("temp dir");
        let d = dir.path();
        std::fs::create_dir(d.join("db")).expect("db dir");
        let conf = format!(
            "include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
include /etc/ldap/schema/misc.schema
include /etc/ldap/schema/dyngroup.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {dir}/slapd.pid
database mdb
suffix \"dc=example,dc=com\"
rootdn \"cn=admin,dc=example,dc=com\"
rootpw secret
directory {dir}/db
maxsize 10485760
",
            dir = d.display()
        );
        let mut conf = conf;
        if let Some((cert, key)) = tls {
            std::fs::write(d.join("cert.pem"), cert).expect("cert");
            std::fs::write(d.join("key.pem"), key).expect("key");
            // Global TLS settings go before the database section.
            conf = conf.replacen(
                "pidfile",
                &format!(
                    "TLSCertificateFile {dir}/cert.pem\nTLSCertificateKeyFile {dir}/key.pem\npidfile",
                    dir = d.display()
                ),
                1,
            );
        }
        std::fs::write(d.join("slapd.conf"), conf).expect("slapd.conf");
        std::fs::write(d.join("data.ldif"), ldif).expect("ldif");
        run(
            "slapadd",
            Command::new(slapadd).arg("-f").arg(d.join("slapd.conf")).arg("-l").arg(d.join("data.ldif")),
        );
        let _ = slapd;
        let ldaps_port = tls.map(|_| free_port());
        let mut s = Slapd { port: free_port(), ldaps_port, dir, child: None };
        s.resume();
        s
    }

    /// `ldap://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// Stops slapd (SIGTERM by PID): lookups now fail.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.terminate(Duration::from_secs(10));
        }
    }

    /// Starts slapd again on the same port and data.
    pub fn resume(&mut self) {
        let d = self.dir.path();
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(d.join("slapd.log")).expect("log");
        let mut urls = format!("ldap://127.0.0.1:{}/", self.port);
        if let Some(p) = self.ldaps_port {
            urls.push_str(&format!(" ldaps://127.0.0.1:{p}/"));
        }
        // -d 256: stay in the foreground and log every operation (stats).
        let child = ChildGuard::spawn(
            "slapd",
            Command::new(need("slapd", "slapd"))
                .arg("-f")
                .arg(d.join("slapd.conf"))
                .arg("-h")
                .arg(urls)
                .arg("-d")
                .arg("256")
                .stdout(Stdio::null())
                .stderr(log),
        );
        self.child = Some(child);
        assert!(
            wait_for_port(([127, 0, 0, 1], self.port).into(), Duration::from_secs(20)),
            "slapd did not start:\n{}",
            self.log()
        );
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("slapd.log")).unwrap_or_default()
    }

    /// Searches the server has run whose filter contains `text`.
    pub fn searches(&self, text: &str) -> usize {
        self.log().lines().filter(|l| l.contains(" SRCH base=") && l.contains(text)).count()
    }
}

/// The uid and gid PostgreSQL runs as: the `postgres` user when this
/// process is root, else this process's own.
fn postgres_ids() -> Option<(u32, u32)> {
    if !nix::unistd::getuid().is_root() {
        return None;
    }
    let u = nix::unistd::User::from_name("postgres")
        .ok()
        .flatten()
        .expect("user postgres (Debian package postgresql)");
    Some((u.uid.as_raw(), u.gid.as_raw()))
}

fn as_postgres(cmd: &mut Command) -> &mut Command {
    if let Some((uid, gid)) = postgres_ids() {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

/// The directory of PostgreSQL 15's server programs.
fn pg_bin(program: &str) -> PathBuf {
    let p = PathBuf::from("/usr/lib/postgresql/15/bin").join(program);
    assert!(
        p.exists(),
        "{} is missing (Debian package postgresql-15; scripts/bootstrap test installs it)",
        p.display()
    );
    p
}

/// A private PostgreSQL 15: superuser `postgres` (trust on its socket),
/// TCP logins with SCRAM passwords.
#[derive(Debug)]
pub struct Postgres {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Option<ChildGuard>,
}

impl Postgres {
    pub fn start() -> Postgres {
        let dir = tempfile::Builder::new().prefix("sluice-pg-").tempdir().expect("temp dir");
        let d = dir.path();
        if let Some((uid, gid)) = postgres_ids() {
            nix::unistd::chown(d, Some(uid.into()), Some(gid.into())).expect("chown");
        }
        std::fs::write(d.join("pw"), "postgres-secret\n").expect("pwfile");
        if let Some((uid, gid)) = postgres_ids() {
            nix::unistd::chown(&d.join("pw"), Some(uid.into()), Some(gid.into())).expect("chown");
        }
        run(
            "initdb",
            as_postgres(
                Command::new(pg_bin("initdb"))
                    .arg("-D")
                    .arg(d.join("data"))
                    .args([
                        "-U",
                        "postgres",
                        "--auth-local=trust",
                        "--auth-host=scram-sha-256",
                        "-E",
                        "UTF8",
                        "--no-locale",
                    ])
                    .arg(format!("--pwfile={}", d.join("pw").display())),
            ),
        );
        let mut p = Postgres { port: free_port(), dir, child: None };
        p.resume();
        p
    }

    /// A fast shutdown (SIGINT): open connections are closed, as when a
    /// database server goes down.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg("-INT").arg(c.pid().to_string()).status();
            c.terminate(Duration::from_secs(20));
        }
    }

    pub fn resume(&mut self) {
        let d = self.dir.path();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(d.join("pg.log")).expect("log");
        if let Some((uid, gid)) = postgres_ids() {
            let _ = nix::unistd::chown(&d.join("pg.log"), Some(uid.into()), Some(gid.into()));
        }
        let child = ChildGuard::spawn(
            "postgres",
            as_postgres(
                Command::new(pg_bin("postgres"))
                    .arg("-D")
                    .arg(d.join("data"))
                    .arg("-k")
                    .arg(d)
                    .args(["-p", &self.port.to_string()])
                    .args(["-c", "listen_addresses=127.0.0.1", "-c", "log_statement=all", "-c", "fsync=off"])
                    .args(["-c", "shared_buffers=16MB", "-c", "max_connections=50"])
                    .stdout(Stdio::null())
                    .stderr(log),
            ),
        );
        self.child = Some(child);
        assert!(
            wait_for_port(([127, 0, 0, 1], self.port).into(), Duration::from_secs(30)),
            "postgres did not start:\n{}",
            self.log()
        );
        // Listening comes a moment before logins are accepted.
        for _ in 0..100 {
            let ok = as_postgres(Command::new("psql").arg("-h").arg(d).args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-Atc",
                "SELECT 1",
            ]))
            .output()
            .is_ok_and(|o| o.status.success());
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("postgres does not accept logins:\n{}", self.log());
    }

    /// Runs SQL as the superuser in database `db`.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        let d = self.dir.path();
        run(
            "psql",
            as_postgres(Command::new("psql").arg("-h").arg(d).args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-v",
                "ON_ERROR_STOP=1",
                "-qAt",
                "-c",
                sql,
            ])),
        )
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pg.log")).unwrap_or_default()
    }

    /// Statements the server has run that contain `text`.
    pub fn statements(&self, text: &str) -> usize {
        self.log().lines().filter(|l| l.contains("statement:") && l.contains(text)).count()
    }
}

/// A private MariaDB as root with a TCP port and a socket in its dir.
#[derive(Debug)]
pub struct Mariadb {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Option<ChildGuard>,
}

impl Mariadb {
    pub fn start() -> Mariadb {
        let dir = tempfile::Builder::new().prefix("sluice-mariadb-").tempdir().expect("temp dir");
        let d = dir.path();
        let user = nix::unistd::User::from_uid(nix::unistd::getuid())
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or("root".into());
        run(
            "mariadb-install-db",
            Command::new(need("mariadb-install-db", "mariadb-server"))
                .arg("--no-defaults")
                .arg(format!("--datadir={}", d.join("data").display()))
                .arg(format!("--user={user}"))
                .args(["--auth-root-authentication-method=normal", "--skip-test-db"]),
        );
        let mut m = Mariadb { port: free_port(), dir, child: None };
        m.resume();
        m
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.terminate(Duration::from_secs(30));
        }
    }

    pub fn resume(&mut self) {
        let d = self.dir.path();
        let user = nix::unistd::User::from_uid(nix::unistd::getuid())
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or("root".into());
        let log = std::fs::OpenOptions::new().create(true).append(true).open(d.join("err.log")).expect("log");
        let child = ChildGuard::spawn(
            "mariadbd",
            Command::new(need("mariadbd", "mariadb-server"))
                .arg("--no-defaults")
                .arg(format!("--datadir={}", d.join("data").display()))
                .arg(format!("--socket={}", self.socket().display()))
                .arg(format!("--port={}", self.port))
                .arg(format!("--pid-file={}", d.join("pid").display()))
                .arg(format!("--general-log-file={}", d.join("general.log").display()))
                .arg(format!("--user={user}"))
                .args([
                    "--bind-address=127.0.0.1",
                    "--skip-log-bin",
                    "--general-log",
                    "--innodb-buffer-pool-size=16M",
                ])
                .stdout(Stdio::null())
                .stderr(log),
        );
        self.child = Some(child);
        assert!(
            wait_for_port(([127, 0, 0, 1], self.port).into(), Duration::from_secs(60)),
            "mariadbd did not start:\n{}",
            std::fs::read_to_string(d.join("err.log")).unwrap_or_default()
        );
    }

    /// Runs SQL as root over the socket.
    pub fn sql(&self, sql: &str) -> String {
        run(
            "mariadb",
            Command::new(need("mariadb", "mariadb-client"))
                .arg("--no-defaults")
                .arg("-S")
                .arg(self.socket())
                .args(["-u", "root", "-N", "-B", "-e", sql]),
        )
    }

    /// Queries the server has run that contain `text`.
    pub fn queries(&self, text: &str) -> usize {
        std::fs::read_to_string(self.dir.path().join("general.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("Query") && l.contains(text))
            .count()
    }
}

/// A temp dir with a main.cf for postmap: a host name given, so Postfix
/// does not ask DNS for its own (there is no DNS in tests).
fn postmap_conf() -> tempfile::TempDir {
    let conf = tempfile::Builder::new().prefix("sluice-postmap-").tempdir().expect("temp dir");
    std::fs::write(
        conf.path().join("main.cf"),
        "compatibility_level = 3.6\nmyhostname = mx.example.com\nmydomain = example.com\n",
    )
    .expect("main.cf");
    age(&conf.path().join("main.cf"));
    conf
}

/// What Postfix's `postmap -q KEY TABLE` says: `Ok(Some(result))`,
/// `Ok(None)` for not found, `Err(stderr)` for a lookup error. Runs with
/// its own main.cf in a temp dir, so no system Postfix configuration is
/// needed.
pub fn postmap(table: &str, key: &str) -> Result<Option<String>, String> {
    let conf = postmap_conf();
    let out = Command::new(need("postmap", "postfix"))
        .arg("-c")
        .arg(conf.path())
        .arg("-q")
        .arg(key)
        .arg(table)
        .output()
        .expect("run postmap");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if stderr.contains("fatal:") {
        return Err(stderr);
    }
    match out.status.code() {
        Some(0) => Ok(Some(String::from_utf8_lossy(&out.stdout).trim_end_matches('\n').to_owned())),
        Some(1) => Ok(None),
        _ => Err(stderr),
    }
}

/// `postmap -q - TABLE` with `keys` on its input, in one run: the found
/// keys and their results; `Err` when any lookup failed.
fn postmap_batch(table: &str, keys: &[&str]) -> Result<std::collections::HashMap<String, String>, String> {
    use std::io::Write;
    let conf = postmap_conf();
    let mut child = Command::new(need("postmap", "postfix"))
        .arg("-c")
        .arg(conf.path())
        .args(["-q", "-", table])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run postmap");
    let mut input = child.stdin.take().expect("stdin");
    for k in keys {
        writeln!(input, "{k}").expect("write keys");
    }
    drop(input);
    let out = child.wait_with_output().expect("postmap output");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if stderr.contains("fatal:") {
        return Err(stderr);
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

/// Fails the test unless Postfix's client for `kind` tables is installed
/// (`postfix-ldap`, `postfix-pgsql`, ...): a comparison with Postfix that
/// silently skipped would prove nothing.
pub fn need_postfix_map(kind: &str) {
    let lib = format!("/usr/lib/postfix/postfix-{kind}.so");
    assert!(
        Path::new(&lib).exists(),
        "{lib} is missing (Debian package postfix-{kind}; scripts/bootstrap test installs it)"
    );
}

/// Writes `text` to `dir/name` and returns the path. The file is dated a
/// minute back: Postfix waits (in steps of 0.3 s) until a configuration
/// file is older than a second before trusting what it read.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    age(&p);
    p
}

/// Sets a file's modification time a minute back.
pub fn age(path: &Path) {
    let past = std::time::SystemTime::now() - Duration::from_secs(60);
    let f = std::fs::File::options().write(true).open(path).expect("open to age");
    f.set_modified(past).expect("set mtime");
}

/// The table `spec` as sluice opens it from a main.cf naming it in
/// relay_recipient_maps (plus `main_extra`), with `dir` as the
/// configuration directory.
pub fn sluice_table(dir: &Path, spec: &str, main_extra: &str) -> std::sync::Arc<dyn sluice::config::Table> {
    let main = format!("relay_recipient_maps = {spec}\n{main_extra}");
    let loaded = sluice::config::Config::from_texts(dir, &main, "smtp inet n - n - - smtpd\n")
        .unwrap_or_else(|e| panic!("the configuration should load:\n{e}"));
    loaded.config.maps("relay_recipient_maps").tables[0].clone()
}

/// The configuration errors loading `spec` gives, one line each.
pub fn sluice_errors(dir: &Path, spec: &str) -> Vec<String> {
    let main = format!("relay_recipient_maps = {spec}\n");
    match sluice::config::Config::from_texts(dir, &main, "smtp inet n - n - - smtpd\n") {
        Ok(_) => Vec::new(),
        Err(e) => e.0.iter().map(|d| d.to_string()).collect(),
    }
}

/// One runtime for every lookup of a test binary, as the daemon has one:
/// pooled connections belong to the runtime that opened them.
static RUNTIME: std::sync::LazyLock<tokio::runtime::Runtime> = std::sync::LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
});

/// Looks `key` up as sluice does.
pub fn sluice_query(
    table: &std::sync::Arc<dyn sluice::config::Table>,
    key: &str,
) -> Result<Option<String>, String> {
    RUNTIME.block_on(table.query(key)).map_err(|e| e.to_string())
}

/// Asserts that sluice and `postmap -q` give the same answer for each key
/// (the same result, both "not found", or both an error), and returns
/// sluice's answers. Postfix is asked for all keys in one run, and key by
/// key only when that run fails.
pub fn same_as_postmap(
    table: &std::sync::Arc<dyn sluice::config::Table>,
    spec: &str,
    keys: &[&str],
) -> Vec<Result<Option<String>, String>> {
    let batch = postmap_batch(spec, keys);
    keys.iter()
        .map(|k| {
            let ours = sluice_query(table, k);
            let theirs = match &batch {
                Ok(found) => Ok(found.get(*k).cloned()),
                Err(_) => postmap(spec, k),
            };
            match (&ours, &theirs) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{spec} {k:?}: sluice and postmap differ"),
                (Err(_), Err(_)) => {}
                _ => panic!("{spec} {k:?}: sluice says {ours:?}, postmap says {theirs:?}"),
            }
            ours
        })
        .collect()
}
