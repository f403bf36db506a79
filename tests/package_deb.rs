//! The Debian package end to end, on this machine: builds the .deb with
//! `scripts/build-deb`, checks it with lintian, installs it with apt-get,
//! runs the installed binary as the `sluice` user on the installed
//! configuration (moved to a loopback port), sends a message with Python's
//! smtplib and sees it queued, upgrades to a newer version of the same
//! package (an admin's edit of a conffile and the queued mail survive), then
//! removes and purges it and checks that what is left matches the policy in
//! packaging/README.md: `remove` keeps configuration, queue and user; `purge`
//! keeps the queue and the user while mail is queued (first round) and
//! removes everything once the queue is empty (second round).
//!
//! Needs root, dpkg and apt-get; skipped with a printed reason without them.
//! It also refuses to run (skips) when sluice, its user, `/etc/sluice` or
//! `/var/spool/sluice` already exist here, since it purges all of them.
//! A guard purges the package, deletes what the test created and kills the
//! daemon by PID even when an assertion fails, so the machine is left as it
//! was found.

mod common;

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{ChildGuard, free_port, have, wait_for_port};

const SPOOL: &str = "/var/spool/sluice";
const CONFIG_DIR: &str = "/etc/sluice";
const BINARY: &str = "/usr/sbin/sluice";
/// Written by prerm on removal with the number of queued messages.
/// In root's own directory, never in the spool the sluice user controls.
const COUNT_FILE: &str = "/var/lib/sluice/queued-at-removal";
/// Relay domain used when the packaged main.cf names none we can use.
const TEST_DOMAIN: &str = "package-test.example";

#[test]
fn package_installs_serves_and_purges_per_policy() {
    if let Some(reason) = skip_reason() {
        println!("SKIPPED package_installs_serves_and_purges_per_policy: {reason}");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let deb = build_deb(root);
    lint(&deb);

    let mut machine = Machine::new();
    let upgrade = repack_with_newer_version(&deb, machine.work.path());
    let install = machine.install(&deb);
    if Path::new("/run/systemd/system").is_dir() {
        println!("systemd runs here: postinst's start was refused by policy-rc.d");
    } else {
        assert!(
            install.contains("systemd is not running"),
            "postinst must say it did not start sluice without systemd:\n{install}"
        );
    }
    // Collected and asserted at the end, so that a missing file does not
    // hide what the rest of the scenario would find.
    let missing = missing_files();
    check_control_fields();
    check_user_and_spool();
    check_unit();

    let version = stdout_of(Command::new(BINARY).arg("--version"));
    assert_eq!(version.trim(), format!("sluice {}", env!("CARGO_PKG_VERSION")), "sluice --version");
    succeed(Command::new(BINARY).args(["config", "check", "-c", CONFIG_DIR]), "sluice config check");

    // Round 1: one message queued, then remove and purge keep it.
    let recipient = machine.serve_and_send();
    let listing = queue_json(CONFIG_DIR);
    assert_eq!(listing.lines().filter(|l| !l.trim().is_empty()).count(), 1, "queued after stop:\n{listing}");
    assert!(listing.contains(&recipient), "queue list names {recipient}:\n{listing}");

    // Upgrade: the admin's edit of a conffile stays, and so do queue and user.
    let uid = nix::unistd::User::from_name("sluice").ok().flatten().map(|u| u.uid);
    let edit = "# local edit: kept across upgrades\n";
    let main_cf = Path::new(CONFIG_DIR).join("main.cf");
    let edited = fs::read_to_string(&main_cf).expect("read main.cf") + edit;
    fs::write(&main_cf, &edited).expect("edit main.cf");
    machine.install(&upgrade);
    assert_eq!(fs::read_to_string(&main_cf).ok(), Some(edited), "upgrade keeps the edited conffile");
    assert_eq!(nix::unistd::User::from_name("sluice").ok().flatten().map(|u| u.uid), uid, "same sluice user");
    check_user_and_spool();
    let listing = queue_json(CONFIG_DIR);
    assert!(listing.contains(&recipient), "the queued message survives the upgrade:\n{listing}");

    apt(&["remove"]);
    assert!(!Path::new(BINARY).exists(), "remove deletes the binary");
    for f in ["main.cf", "master.cf", "transport"] {
        assert!(Path::new(CONFIG_DIR).join(f).is_file(), "remove keeps {CONFIG_DIR}/{f}");
    }
    assert!(Path::new(SPOOL).join("db").is_dir(), "remove keeps the queue");
    assert!(user_exists(), "remove keeps the sluice user");
    assert_eq!(
        fs::read_to_string(COUNT_FILE).unwrap_or_default().trim(),
        "1",
        "prerm records the queued count"
    );
    assert_eq!(dpkg_status().as_deref(), Some("deinstall ok config-files"));

    let purge = apt(&["purge"]);
    assert!(
        purge.contains(&format!("{SPOOL} holds 1 queued message")),
        "purge warns about the kept queue:\n{purge}"
    );
    assert!(!Path::new(CONFIG_DIR).exists(), "purge removes {CONFIG_DIR}");
    assert!(Path::new(SPOOL).join("db").is_dir(), "purge keeps a queue that holds mail");
    assert!(user_exists(), "purge keeps the user while its queue holds mail");
    assert_eq!(dpkg_status(), None, "purged package is unknown to dpkg");

    // Round 2: reinstall (as the warning suggests), find the mail still
    // there, delete it, and purge removes queue and user.
    machine.install(&deb);
    let listing = queue_json(CONFIG_DIR);
    assert!(listing.contains(&recipient), "the kept message survives purge and reinstall:\n{listing}");
    assert!(!Path::new(COUNT_FILE).exists(), "postinst drops the stale count");
    let mut delete = Command::new(BINARY);
    delete.args(["-c", CONFIG_DIR, "queue", "delete", "ALL"]);
    succeed(as_sluice(&mut delete), "sluice queue delete ALL");
    assert_eq!(queue_json(CONFIG_DIR).trim(), "", "queue empty after delete");

    apt(&["remove"]);
    assert_eq!(fs::read_to_string(COUNT_FILE).unwrap_or_default().trim(), "0");
    let purge = apt(&["purge"]);
    assert!(!purge.contains("warning"), "no warning when the queue is empty:\n{purge}");
    for gone in [CONFIG_DIR, SPOOL, BINARY, "/var/lib/sluice"] {
        assert!(!Path::new(gone).exists(), "purge leaves no {gone}");
    }
    assert!(!user_exists(), "purge removes the sluice user");
    assert!(!group_exists(), "purge removes the sluice group");
    assert_eq!(dpkg_status(), None);
    for state in [
        "/var/lib/systemd/deb-systemd-helper-enabled/sluice.service.dsh-also",
        "/var/lib/systemd/deb-systemd-helper-masked/sluice.service",
    ] {
        assert!(!Path::new(state).exists(), "purge leaves no {state}");
    }

    assert!(missing.is_empty(), "the package lacks: {missing:?}");
}

/// Why this machine cannot run the test, if it cannot.
fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root to install a package".into());
    }
    for tool in ["dpkg", "dpkg-deb", "apt-get"] {
        if !have(tool) {
            return Some(format!("{tool} is not available"));
        }
    }
    if let Some(status) = dpkg_status() {
        return Some(format!("package sluice is already known to dpkg ({status}); the test would purge it"));
    }
    for path in [CONFIG_DIR, SPOOL, "/var/lib/sluice"] {
        if Path::new(path).exists() {
            return Some(format!("{path} exists; the test would delete it"));
        }
    }
    if user_exists() || group_exists() {
        return Some("a sluice user or group exists; the test would delete it".into());
    }
    None
}

/// Runs scripts/build-deb; returns the .deb it printed last.
fn build_deb(root: &Path) -> PathBuf {
    let out = Command::new(root.join("scripts/build-deb"))
        .current_dir(root)
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/build-deb");
    assert!(out.status.success(), "scripts/build-deb failed: {}", out.status);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default().trim();
    let deb = root.join(last);
    let name = deb.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    assert!(
        name.starts_with(&format!("sluice_{}-", env!("CARGO_PKG_VERSION"))) && name.ends_with(".deb"),
        "build-deb printed {last:?}"
    );
    assert!(deb.is_file(), "{} exists", deb.display());
    deb
}

/// A copy of `deb` with a higher Debian version (`+upgradetest` appended),
/// written into `dir`: an upgrade without a second build.
fn repack_with_newer_version(deb: &Path, dir: &Path) -> PathBuf {
    let field =
        |name: &str| stdout_of(Command::new("dpkg-deb").arg("-f").arg(deb).arg(name)).trim().to_owned();
    let version = format!("{}+upgradetest", field("Version"));
    let tree = dir.join("repack");
    succeed(Command::new("dpkg-deb").arg("-R").arg(deb).arg(&tree), "dpkg-deb -R");
    let control_path = tree.join("DEBIAN/control");
    let control = fs::read_to_string(&control_path).expect("read DEBIAN/control");
    let control: String = control
        .lines()
        .map(|l| if l.starts_with("Version:") { format!("Version: {version}\n") } else { format!("{l}\n") })
        .collect();
    fs::write(&control_path, control).expect("write DEBIAN/control");
    let out = dir.join(format!("sluice_{version}_{}.deb", field("Architecture")));
    succeed(Command::new("dpkg-deb").args(["--root-owner-group", "-b"]).arg(&tree).arg(&out), "dpkg-deb -b");
    fs::remove_dir_all(&tree).expect("remove repack tree");
    out
}

/// lintian finds no errors (warnings are listed in packaging/README.md).
fn lint(deb: &Path) {
    if !have("lintian") {
        println!("lintian is not installed: not linting {}", deb.display());
        return;
    }
    let out = run(Command::new("lintian").args(["--fail-on", "error", "--tag-display-limit", "0"]).arg(deb));
    let text = combined(&out);
    println!("lintian:\n{text}");
    assert!(out.status.success(), "lintian reports errors:\n{text}");
}

/// The machine while the package is being exercised. Dropping it kills the
/// daemon, purges the package and deletes what the package or the test left
/// (none of it existed before: see `skip_reason`).
struct Machine {
    work: tempfile::TempDir,
    daemon: Option<ChildGuard>,
    /// True when this test created /usr/sbin/policy-rc.d.
    policy_rc_added: bool,
}

impl Machine {
    fn new() -> Machine {
        let work = tempfile::tempdir().expect("temp dir");
        // The daemon, running as sluice, reads the copied configuration.
        fs::set_permissions(work.path(), fs::Permissions::from_mode(0o711)).expect("chmod temp dir");
        let mut policy_rc_added = false;
        let policy_rc = Path::new("/usr/sbin/policy-rc.d");
        if Path::new("/run/systemd/system").is_dir() && !policy_rc.exists() {
            // Under a running systemd, postinst would start the packaged
            // service on port 25; policy-rc.d makes deb-systemd-invoke refuse.
            fs::write(policy_rc, "#!/bin/sh\nexit 101\n").expect("write policy-rc.d");
            fs::set_permissions(policy_rc, fs::Permissions::from_mode(0o755)).expect("chmod policy-rc.d");
            policy_rc_added = true;
        }
        Machine { work, daemon: None, policy_rc_added }
    }

    /// apt-get install of a .deb; returns apt's output.
    fn install(&mut self, deb: &Path) -> String {
        let out = apt(&["install", &deb.to_string_lossy()]);
        assert_eq!(dpkg_status().as_deref(), Some("install ok installed"), "after install:\n{out}");
        out
    }

    /// Starts the installed binary as the sluice user on a copy of
    /// /etc/sluice that listens on a free loopback port (the queue stays
    /// /var/spool/sluice), sends one message, checks it is queued, and stops
    /// the daemon with SIGTERM. Returns the recipient.
    fn serve_and_send(&mut self) -> String {
        let conf = self.work.path().join("conf");
        let port = free_port();
        let domain = copy_config(&conf, port);
        let log_path = self.work.path().join("sluice.log");
        let log = fs::File::create(&log_path).expect("create daemon log");
        let mut cmd = Command::new(BINARY);
        cmd.args(["serve", "-c"]).arg(&conf).stdout(log.try_clone().expect("dup log")).stderr(log);
        let daemon = self.daemon.insert(ChildGuard::spawn("sluice serve", as_sluice(&mut cmd)));
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        if !wait_for_port(addr, Duration::from_secs(60)) {
            let status = daemon.child.try_wait().ok().flatten();
            panic!(
                "installed sluice did not listen on {addr} (exit: {status:?}); log:\n{}",
                fs::read_to_string(&log_path).unwrap_or_default()
            );
        }

        let recipient = format!("postmaster@{domain}");
        let reply = send_message(port, &recipient);
        assert!(reply.starts_with("250"), "DATA answered {reply}");
        let listing = queue_json(&conf.to_string_lossy());
        assert!(listing.contains(&recipient), "queued while running:\n{listing}");
        assert!(Path::new(SPOOL).join("db").is_dir(), "the queue lives in {SPOOL}/db");

        let status = daemon.terminate(Duration::from_secs(120));
        let log_text = fs::read_to_string(&log_path).unwrap_or_default();
        match status {
            Some(s) => assert!(s.success(), "sluice exited with {s} after SIGTERM; log:\n{log_text}"),
            None => panic!("sluice did not stop within 120 s of SIGTERM; log:\n{log_text}"),
        }
        self.daemon = None;
        recipient
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        // ChildGuard kills and reaps the daemon if it still runs.
        self.daemon = None;
        if dpkg_status().is_some() {
            let _ = run(&mut apt_command(&["purge"]));
        }
        let _ = fs::remove_dir_all(SPOOL);
        let _ = fs::remove_dir_all(CONFIG_DIR);
        if user_exists() {
            let _ = run(Command::new("userdel").arg("sluice"));
        }
        if group_exists() {
            let _ = run(Command::new("groupdel").arg("sluice"));
        }
        if self.policy_rc_added {
            let _ = fs::remove_file("/usr/sbin/policy-rc.d");
        }
    }
}

/// Copies /etc/sluice into `dir`, changed to listen on 127.0.0.1:`port`
/// only (every other smtpd listener commented out) and, when main.cf sets
/// them, with the metrics endpoint on another free loopback port and no
/// recipient table. Returns a relay domain the copy accepts.
fn copy_config(dir: &Path, port: u16) -> String {
    fs::create_dir_all(dir).expect("create config copy");
    for entry in fs::read_dir(CONFIG_DIR).expect("read /etc/sluice") {
        let entry = entry.expect("dir entry");
        if entry.path().is_file() {
            fs::copy(entry.path(), dir.join(entry.file_name())).expect("copy config file");
        }
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).expect("chmod config copy");

    let master = fs::read_to_string(dir.join("master.cf")).expect("read master.cf");
    let mut out = String::new();
    let mut in_smtpd = false;
    for line in master.lines() {
        let continuation = line.starts_with([' ', '\t']);
        if !continuation && !line.trim_start().starts_with('#') {
            let f: Vec<&str> = line.split_whitespace().collect();
            in_smtpd = f.len() >= 8 && f[1] == "inet" && f[7] == "smtpd";
        }
        // A listener's `-o` continuation lines go with it.
        if in_smtpd && (continuation || !line.trim_start().starts_with('#')) {
            out.push('#');
        }
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(&format!("127.0.0.1:{port} inet n - n - - smtpd\n"));
    fs::write(dir.join("master.cf"), out).expect("write master.cf");

    let main_path = dir.join("main.cf");
    let mut main = fs::read_to_string(&main_path).expect("read main.cf");
    if param(&main, "sluice_metrics_listen").is_some_and(|v| !v.is_empty()) {
        main = set_param(&main, "sluice_metrics_listen", &format!("127.0.0.1:{}", free_port()));
    }
    if param(&main, "relay_recipient_maps").is_some_and(|v| !v.is_empty()) {
        main = set_param(&main, "relay_recipient_maps", "");
    }
    let packaged = param(&main, "relay_domains").unwrap_or_default();
    let usable = packaged
        .split([',', ' ', '\t'])
        .find(|d| d.contains('.') && !d.contains([':', '$', '/']))
        .map(str::to_owned);
    let domain = match usable {
        Some(d) => d,
        None => {
            main = set_param(&main, "relay_domains", TEST_DOMAIN);
            TEST_DOMAIN.to_owned()
        }
    };
    // Mail for the domain goes to a mailbox server that is down (a free
    // port nobody listens on), so it stays queued, deferred, through the
    // checks that follow.
    let down = free_port();
    main = set_param(&main, "transport_maps", &format!("inline:{{ {domain}=lmtp:[127.0.0.1]:{down} }}"));
    fs::write(&main_path, main).expect("write main.cf");
    domain
}

/// Value of a main.cf parameter (last definition wins, as in Postfix), with
/// continuation lines joined.
fn param(main_cf: &str, name: &str) -> Option<String> {
    let mut value = None;
    let mut current: Option<String> = None;
    for line in main_cf.lines() {
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(v) = current.as_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        if let Some(v) = current.take() {
            value = Some(v);
        }
        if let Some((k, v)) = line.split_once('=')
            && k.trim() == name
        {
            current = Some(v.trim().to_owned());
        }
    }
    current.or(value).map(|v| v.trim().to_owned())
}

/// main.cf with `name = value` appended; Postfix (and sluice) take the last
/// definition.
fn set_param(main_cf: &str, name: &str, value: &str) -> String {
    let mut out = main_cf.to_owned();
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&format!("{name} = {value}\n"));
    out
}

/// Sends one message over SMTP with Python's smtplib; returns the reply to
/// the end of DATA.
fn send_message(port: u16, recipient: &str) -> String {
    let script = r#"
import smtplib, sys
port, rcpt = int(sys.argv[1]), sys.argv[2]
msg = ("From: <sender@package-test.example>\r\nTo: <%s>\r\n"
       "Subject: package test\r\nMessage-ID: <package-test@package-test.example>\r\n\r\n"
       "Queued by the installed package.\r\n" % rcpt)
s = smtplib.SMTP("127.0.0.1", port, timeout=60)
s.ehlo("client.package-test.example")
s.mail("sender@package-test.example")
code, text = s.rcpt(rcpt)
if code != 250:
    sys.exit("RCPT TO <%s>: %d %s" % (rcpt, code, text.decode()))
code, text = s.data(msg)
print(code, text.decode())
s.quit()
"#;
    let out = run(Command::new("python3").arg("-c").arg(script).arg(port.to_string()).arg(recipient));
    assert!(out.status.success(), "smtplib failed:\n{}", combined(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `sluice queue list --json` as the sluice user (with the daemon stopped
/// it opens the queue directly; as root it could leave root-owned files).
fn queue_json(config_dir: &str) -> String {
    let mut cmd = Command::new(BINARY);
    cmd.args(["-c", config_dir, "queue", "list", "--json"]);
    stdout_of(as_sluice(&mut cmd))
}

/// Runs `cmd` as the sluice user and group. Not `runuser`: it forks, and on
/// SIGTERM it SIGKILLs the child two seconds later, which would cut the
/// graceful shutdown short and hide the daemon's PID.
fn as_sluice(cmd: &mut Command) -> &mut Command {
    let user = nix::unistd::User::from_name("sluice").ok().flatten().expect("sluice user exists");
    cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw()).current_dir("/")
}

/// Files the package must install, with the problems found.
fn missing_files() -> Vec<String> {
    let mut missing = Vec::new();
    let mut expect = |path: &str, mode: u32| match fs::metadata(path) {
        Ok(m) if m.is_file() && m.mode() & 0o7777 == mode && m.uid() == 0 => {}
        Ok(m) => missing.push(format!("{path} (mode {:o}, uid {})", m.mode() & 0o7777, m.uid())),
        Err(_) => missing.push(path.to_owned()),
    };
    expect(BINARY, 0o755);
    for f in ["main.cf", "master.cf", "transport"] {
        expect(&format!("{CONFIG_DIR}/{f}"), 0o644);
    }
    for f in [
        "/usr/share/doc/sluice/copyright",
        "/usr/share/doc/sluice/changelog.Debian.gz",
        "/usr/share/man/man8/sluice.8.gz",
        "/usr/share/man/man8/sluice-serve.8.gz",
        "/usr/share/man/man8/sluice-queue.8.gz",
        "/usr/share/bash-completion/completions/sluice",
        "/usr/share/zsh/vendor-completions/_sluice",
        "/usr/share/fish/vendor_completions.d/sluice.fish",
        "/usr/lib/systemd/system/sluice.service",
    ] {
        expect(f, 0o644);
    }
    let conffiles = fs::read_to_string("/var/lib/dpkg/info/sluice.conffiles").unwrap_or_default();
    for f in ["main.cf", "master.cf", "transport"] {
        let path = format!("{CONFIG_DIR}/{f}");
        if !conffiles.lines().any(|l| l.trim() == path) {
            missing.push(format!("{path} as a conffile"));
        }
    }
    let listed = stdout_of(Command::new("dpkg").args(["-L", "sluice"]));
    for clash in ["/usr/sbin/sendmail", "/usr/bin/mailq", "/usr/bin/newaliases", SPOOL] {
        if listed.lines().any(|l| l == clash) {
            missing.push(format!("NOT {clash} (clashes with MTAs, or belongs to postinst)"));
        }
    }
    missing
}

/// Depends is computed from the binary's libraries; no Provides of
/// mail-transport-agent (no /usr/sbin/sendmail).
fn check_control_fields() {
    let fields = stdout_of(Command::new("dpkg-query").args(["-W", "-f=${Depends}\n${Provides}\n", "sluice"]));
    let mut lines = fields.lines();
    let depends = lines.next().unwrap_or_default();
    let provides = lines.next().unwrap_or_default();
    assert!(depends.contains("libc6"), "Depends from $auto names libc6: {depends}");
    assert!(depends.contains("adduser"), "Depends names adduser (postinst): {depends}");
    let ldd = stdout_of(Command::new("ldd").arg(BINARY));
    if ldd.contains("librocksdb") {
        assert!(depends.contains("librocksdb"), "binary links librocksdb but Depends is: {depends}");
    }
    assert!(!provides.contains("mail-transport-agent"), "Provides: {provides}");
}

fn check_user_and_spool() {
    let user =
        nix::unistd::User::from_name("sluice").ok().flatten().expect("postinst creates the sluice user");
    assert!(user.uid.as_raw() < 1000, "sluice is a system user (uid {})", user.uid);
    assert_eq!(user.dir, Path::new(SPOOL), "home of sluice");
    let group =
        nix::unistd::Group::from_name("sluice").ok().flatten().expect("postinst creates the sluice group");
    assert_eq!(user.gid, group.gid, "primary group of sluice");
    let m = fs::metadata(SPOOL).expect("postinst creates the spool");
    assert!(m.is_dir());
    assert_eq!(
        (m.uid(), m.gid(), m.mode() & 0o7777),
        (user.uid.as_raw(), group.gid.as_raw(), 0o750),
        "{SPOOL}"
    );
}

/// The unit carries the decided settings; systemd-analyze accepts it.
fn check_unit() {
    let unit = fs::read_to_string("/usr/lib/systemd/system/sluice.service").expect("unit installed");
    for setting in [
        "Type=notify",
        "ExecStart=/usr/sbin/sluice serve -c /etc/sluice",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "User=sluice",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "Restart=on-failure",
        "TimeoutStopSec=120",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/spool/sluice",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
    ] {
        assert!(unit.lines().any(|l| l.trim() == setting), "sluice.service lacks {setting}");
    }
    if have("systemd-analyze") {
        let out =
            run(Command::new("systemd-analyze").args(["verify", "/usr/lib/systemd/system/sluice.service"]));
        let text = combined(&out);
        assert!(out.status.success() && !text.contains("sluice.service:"), "systemd-analyze verify:\n{text}");
    }
}

/// `apt-get -y ACTION... sluice` (or a .deb path); asserts success, returns
/// stdout and stderr together (maintainer scripts write to both).
fn apt(args: &[&str]) -> String {
    let out = run(&mut apt_command(args));
    let text = combined(&out);
    assert!(out.status.success(), "apt-get {args:?} failed:\n{text}");
    text
}

fn apt_command(args: &[&str]) -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.env("DEBIAN_FRONTEND", "noninteractive")
        .args(["-y", "-q", "-o", "DPkg::Lock::Timeout=300", "--no-install-recommends"])
        .args(args);
    if args.len() == 1 {
        cmd.arg("sluice");
    }
    cmd
}

/// dpkg's status of the sluice package (`install ok installed`,
/// `deinstall ok config-files`), None when dpkg does not know it.
fn dpkg_status() -> Option<String> {
    let out = Command::new("dpkg-query").args(["-W", "-f=${Status}", "sluice"]).output().ok()?;
    let status = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !status.is_empty() && !status.contains("not-installed")).then_some(status)
}

fn user_exists() -> bool {
    nix::unistd::User::from_name("sluice").ok().flatten().is_some()
}

fn group_exists() -> bool {
    nix::unistd::Group::from_name("sluice").ok().flatten().is_some()
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs `cmd`, asserts success, returns its stdout.
fn stdout_of(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(out.status.success(), "{cmd:?} failed:\n{}", combined(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn succeed(cmd: &mut Command, what: &str) {
    let out = run(cmd);
    assert!(out.status.success(), "{what} failed:\n{}", combined(&out));
}

fn combined(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}
