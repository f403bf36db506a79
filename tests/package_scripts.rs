//! postinst's decision to start the service, under a running systemd, which
//! the package test cannot reach on a machine without systemd: with a
//! failing `sluice config check`, with another program listening on an
//! smtpd port of master.cf, on a first install, on the upgrade of a running
//! daemon, on the upgrade of a disabled service, and without systemd.
//!
//! Runs the real packaging/debian/postinst with its fixed paths (spool,
//! /etc/sluice, /run/systemd/system) moved into a temp dir and the system
//! commands it calls (systemctl, deb-systemd-helper, deb-systemd-invoke,
//! adduser, chown, sluice) replaced by stubs that log their arguments. The
//! port check uses the real `ss` against a real listener. Needs no root.
//!
//! And the removal scripts (prerm, postrm) against a spool in which the
//! daemon's user planted symlinks: root never writes through a path that
//! user controls, so the files the links point to stay as they were.

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const POSTINST: &str = include_str!("../packaging/debian/postinst");
const PRERM: &str = include_str!("../packaging/debian/prerm");
const POSTRM: &str = include_str!("../packaging/debian/postrm");

/// A postinst with its paths in a temp dir and stubbed commands.
struct Sandbox {
    dir: tempfile::TempDir,
}

/// What a stubbed run did.
struct Run {
    /// postinst's stdout and stderr.
    output: String,
    /// One line per stubbed systemd call: `deb-systemd-invoke start sluice.service`.
    calls: String,
    success: bool,
}

impl Sandbox {
    fn new(master_cf: &str) -> Sandbox {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        fs::create_dir_all(root.join("etc")).expect("mkdir etc");
        fs::create_dir_all(root.join("run-systemd")).expect("mkdir run-systemd");
        fs::create_dir_all(root.join("bin")).expect("mkdir bin");
        fs::write(root.join("etc/master.cf"), master_cf).expect("write master.cf");

        let mut script = POSTINST.to_owned();
        for (from, to) in [
            ("SPOOL=/var/spool/sluice\n", format!("SPOOL={}/spool\n", root.display())),
            ("CONFIG_DIR=/etc/sluice\n", format!("CONFIG_DIR={}/etc\n", root.display())),
            ("/run/systemd/system", format!("{}/run-systemd", root.display())),
            ("#DEBHELPER#", String::new()),
        ] {
            assert!(script.contains(from), "postinst no longer contains {from:?}; update this test");
            script = script.replace(from, &to);
        }
        write_executable(&root.join("postinst"), &script);

        let log = root.join("calls");
        let stub_log = format!("#!/bin/sh\necho \"$(basename \"$0\") $*\" >>{}\n", log.display());
        // Users and groups exist; services resolve through the real getent.
        write_executable(
            &root.join("bin/getent"),
            "#!/bin/sh\ncase \"$1\" in passwd|group) exit 0 ;; esac\nexec /usr/bin/getent \"$@\"\n",
        );
        write_executable(&root.join("bin/dpkg-statoverride"), "#!/bin/sh\nexit 1\n");
        for noop in ["adduser", "addgroup", "chown"] {
            write_executable(&root.join("bin").join(noop), "#!/bin/sh\nexit 0\n");
        }
        write_executable(
            &root.join("bin/sluice"),
            "#!/bin/sh\nif [ \"$STUB_CHECK_RC\" != 0 ]; then echo \"main.cf:3: relay_domains: bad value\" >&2; fi\nexit \"$STUB_CHECK_RC\"\n",
        );
        write_executable(
            &root.join("bin/systemctl"),
            &format!("{stub_log}case \"$*\" in *is-active*) exit \"$STUB_ACTIVE\" ;; esac\nexit 0\n"),
        );
        write_executable(
            &root.join("bin/deb-systemd-helper"),
            &format!("{stub_log}case \"$*\" in *was-enabled*) exit \"$STUB_WAS_ENABLED\" ;; esac\nexit 0\n"),
        );
        write_executable(&root.join("bin/deb-systemd-invoke"), &format!("{stub_log}exit 0\n"));
        Sandbox { dir }
    }

    /// Runs `postinst configure [previous_version]`.
    fn configure(
        &self,
        previous_version: Option<&str>,
        check_rc: u8,
        active: bool,
        was_enabled: bool,
    ) -> Run {
        let root = self.dir.path();
        let _ = fs::remove_file(root.join("calls"));
        let path = format!("{}:{}", root.join("bin").display(), std::env::var("PATH").unwrap_or_default());
        let mut cmd = Command::new(root.join("postinst"));
        cmd.arg("configure")
            .args(previous_version)
            .env("PATH", path)
            .env("STUB_CHECK_RC", check_rc.to_string())
            .env("STUB_ACTIVE", if active { "0" } else { "3" })
            .env("STUB_WAS_ENABLED", if was_enabled { "0" } else { "1" });
        let out = cmd.output().expect("run postinst");
        Run {
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            calls: fs::read_to_string(root.join("calls")).unwrap_or_default(),
            success: out.status.success(),
        }
    }

    fn without_systemd(&self) {
        fs::remove_dir(self.dir.path().join("run-systemd")).expect("remove run-systemd");
    }

    fn spool(&self) -> PathBuf {
        self.dir.path().join("spool")
    }
}

fn write_executable(path: &Path, text: &str) {
    fs::write(path, text).expect("write script");
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod script");
}

fn smtpd_line(port: u16) -> String {
    format!(
        "# service type private unpriv chroot wakeup maxproc command\n127.0.0.1:{port} inet n - n - - smtpd\n  -o smtpd_tls_security_level=may\nlmtp unix - - n - - lmtp\n"
    )
}

/// A loopback port nothing listens on (bound, then released).
fn unused_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("bind 127.0.0.1:0")
}

fn started(run: &Run) -> bool {
    run.calls.lines().any(|l| l == "deb-systemd-invoke start sluice.service")
}

#[test]
fn first_install_enables_and_starts_when_config_and_ports_are_fine() {
    let sandbox = Sandbox::new(&smtpd_line(unused_port()));
    let run = sandbox.configure(None, 0, false, false);
    assert!(run.success, "{}", run.output);
    assert!(run.calls.lines().any(|l| l == "deb-systemd-helper enable sluice.service"), "{}", run.calls);
    assert!(started(&run), "calls:\n{}\noutput:\n{}", run.calls, run.output);
    let mode = fs::metadata(sandbox.spool()).expect("spool created").permissions().mode() & 0o7777;
    assert_eq!(mode, 0o750, "spool mode");
}

#[test]
fn failing_config_check_is_reported_and_nothing_starts() {
    let sandbox = Sandbox::new(&smtpd_line(unused_port()));
    let run = sandbox.configure(None, 1, false, false);
    assert!(run.success, "a failed check must not fail the install: {}", run.output);
    assert!(!started(&run), "{}", run.calls);
    assert!(run.output.contains("not starting"), "{}", run.output);
    assert!(run.output.contains("relay_domains: bad value"), "the check's output is shown: {}", run.output);
    assert!(run.output.contains("systemctl enable --now sluice"), "says what to do: {}", run.output);
}

#[test]
fn port_held_by_another_program_is_named_and_nothing_starts() {
    assert!(
        Command::new("ss").arg("-V").output().is_ok(),
        "ss is not installed (Debian package iproute2; scripts/bootstrap test installs it)"
    );
    let other_mta = TcpListener::bind("127.0.0.1:0").expect("bind a listener");
    let port = other_mta.local_addr().expect("local addr").port();
    let sandbox = Sandbox::new(&smtpd_line(port));
    let run = sandbox.configure(None, 0, false, false);
    drop(other_mta);
    assert!(run.success, "a busy port must not fail the install: {}", run.output);
    assert!(!started(&run), "{}", run.calls);
    assert!(run.output.contains(&format!("port {port} is in use")), "names the port: {}", run.output);
    assert!(run.output.contains("master.cf"), "says what to do: {}", run.output);
}

#[test]
fn upgrade_restarts_a_running_daemon_even_on_its_own_port() {
    let own = TcpListener::bind("127.0.0.1:0").expect("bind a listener");
    let sandbox = Sandbox::new(&smtpd_line(own.local_addr().expect("local addr").port()));
    let run = sandbox.configure(Some("0.1.0-1"), 0, true, true);
    assert!(run.success, "{}", run.output);
    assert!(run.calls.lines().any(|l| l == "deb-systemd-invoke restart sluice.service"), "{}", run.calls);
    assert!(!run.output.contains("in use"), "{}", run.output);
}

#[test]
fn upgrade_with_a_failing_config_keeps_the_running_daemon() {
    let sandbox = Sandbox::new(&smtpd_line(unused_port()));
    let run = sandbox.configure(Some("0.1.0-1"), 1, true, true);
    assert!(run.success, "{}", run.output);
    assert!(!run.calls.contains("restart"), "{}", run.calls);
    assert!(run.output.contains("keeps its previous configuration"), "{}", run.output);
}

#[test]
fn upgrade_leaves_a_disabled_service_disabled() {
    let sandbox = Sandbox::new(&smtpd_line(unused_port()));
    let run = sandbox.configure(Some("0.1.0-1"), 0, false, false);
    assert!(run.success, "{}", run.output);
    assert!(!started(&run), "{}", run.calls);
    assert!(run.output.contains("is disabled"), "{}", run.output);
}

#[test]
fn without_systemd_nothing_is_enabled_or_started() {
    let sandbox = Sandbox::new(&smtpd_line(unused_port()));
    sandbox.without_systemd();
    let run = sandbox.configure(None, 0, false, false);
    assert!(run.success, "{}", run.output);
    assert!(run.calls.is_empty(), "no systemd calls: {}", run.calls);
    assert!(run.output.contains("systemd is not running"), "{}", run.output);
    assert!(sandbox.spool().is_dir(), "the spool is created anyway");
}

/// prerm and postrm in a temp dir whose spool the "sluice user" has
/// prepared: `.queued-at-removal` (where prerm used to write the count as
/// root) and a file name prerm might use are symlinks to a file root must
/// never write, as root would on a real system.
struct Removal {
    dir: tempfile::TempDir,
}

impl Removal {
    /// `queued`: the messages the stubbed `sluice queue list --json` lists.
    fn new(queued: usize) -> Removal {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        for d in ["etc", "run-systemd", "bin", "spool/db"] {
            fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        fs::write(root.join("victim"), "precious\n").expect("write victim");
        for link in [".queued-at-removal", "queued-at-removal"] {
            std::os::unix::fs::symlink(root.join("victim"), root.join("spool").join(link))
                .expect("plant symlink");
        }
        for (name, text) in [("prerm", PRERM), ("postrm", POSTRM)] {
            let mut script = text.to_owned();
            for (from, to) in [
                ("SPOOL=/var/spool/sluice\n", format!("SPOOL={}/spool\n", root.display())),
                ("CONFIG_DIR=/etc/sluice\n", format!("CONFIG_DIR={}/etc\n", root.display())),
                ("STATE_DIR=/var/lib/sluice\n", format!("STATE_DIR={}/state\n", root.display())),
                ("/run/systemd/system", format!("{}/run-systemd", root.display())),
                ("#DEBHELPER#", String::new()),
            ] {
                // postrm has no systemd test of its own.
                if name == "postrm" && from == "/run/systemd/system" {
                    continue;
                }
                assert!(script.contains(from), "{name} no longer contains {from:?}; update this test");
                script = script.replace(from, &to);
            }
            write_executable(&root.join(name), &script);
        }
        // `install -d -o root -g root` needs root; as another user the
        // directory is made the user's own, which is what the test runs as.
        write_executable(
            &root.join("bin/install"),
            "#!/bin/sh\nfor a; do d=$a; done\nexec mkdir -p \"$d\"\n",
        );
        write_executable(&root.join("bin/getent"), "#!/bin/sh\nexit 0\n");
        write_executable(
            &root.join("bin/runuser"),
            "#!/bin/sh\nwhile [ \"$1\" != -- ]; do shift; done\nshift\nexec \"$@\"\n",
        );
        let lines = "echo '{\"queue_id\":\"4Hx0000000\"}'\n".repeat(queued);
        write_executable(&root.join("bin/sluice"), &format!("#!/bin/sh\n{lines}exit 0\n"));
        for noop in ["deb-systemd-invoke", "deluser", "delgroup", "userdel", "groupdel", "dpkg-statoverride"]
        {
            write_executable(&root.join("bin").join(noop), "#!/bin/sh\nexit 0\n");
        }
        Removal { dir }
    }

    fn run(&self, script: &str, arg: &str) -> String {
        let root = self.dir.path();
        let path = format!("{}:{}", root.join("bin").display(), std::env::var("PATH").unwrap_or_default());
        let out = Command::new(root.join(script)).arg(arg).env("PATH", path).output().expect("run script");
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{script} {arg} failed: {text}");
        text
    }

    fn victim(&self) -> String {
        fs::read_to_string(self.dir.path().join("victim")).expect("victim still there")
    }
}

#[test]
fn removal_never_writes_through_a_symlink_in_the_spool() {
    let r = Removal::new(1);
    r.run("prerm", "remove");
    assert_eq!(r.victim(), "precious\n", "prerm wrote through a planted symlink");
    let count = fs::read_to_string(r.dir.path().join("state/queued-at-removal")).expect("count recorded");
    assert_eq!(count.trim(), "1");
    let out = r.run("postrm", "purge");
    assert!(out.contains("holds 1 queued message"), "{out}");
    assert!(r.dir.path().join("spool/db").is_dir(), "mail kept");
    assert!(!r.dir.path().join("state").exists(), "purge removes its state");
    assert_eq!(r.victim(), "precious\n");

    // An empty queue: the spool goes, and with it the links, never their
    // targets.
    let r = Removal::new(0);
    r.run("prerm", "remove");
    r.run("postrm", "purge");
    assert!(!r.dir.path().join("spool").exists(), "the spool of an empty queue is removed");
    assert_eq!(r.victim(), "precious\n");
}

#[test]
fn a_count_the_spool_could_have_forged_is_not_trusted() {
    // Even a count file in the state directory that is not a number (say,
    // a stale one replaced by something else) keeps the mail.
    let r = Removal::new(0);
    fs::create_dir_all(r.dir.path().join("state")).expect("mkdir state");
    fs::write(r.dir.path().join("state/queued-at-removal"), "0; rm -rf /\n").expect("write");
    let out = r.run("postrm", "purge");
    assert!(out.contains("an unknown number of messages"), "{out}");
    assert!(r.dir.path().join("spool/db").is_dir());
}
