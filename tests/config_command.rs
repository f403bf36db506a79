//! `sluice config` through its entry point: postconf-style output, single
//! values, defaults, and `check` with and without `--strict`, on the
//! shipped configurations too.

use std::path::Path;

use clap::Parser;
use sluice::cli::postconf::{ConfigArgs, run_to};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: ConfigArgs,
}

/// Runs `sluice config ARGS` on `dir`: (exit code, stdout, stderr).
fn run(dir: &Path, argv: &[&str]) -> (u8, String, String) {
    let cli =
        Cli::try_parse_from(std::iter::once("config").chain(argv.iter().copied())).expect("arguments parse");
    let mut out = Vec::new();
    let mut err = Vec::new();
    let code = run_to(dir, &cli.args, &mut out, &mut err).expect("runs");
    (code, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
}

fn write(dir: &Path, main: &str, master: &str) {
    std::fs::write(dir.join("main.cf"), main).unwrap();
    std::fs::write(dir.join("master.cf"), master).unwrap();
}

#[test]
fn prints_set_parameters_like_postconf_n() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "relay_domains = example.com\nmyhostname = mx.example.com\nsmtpd_banner = $myhostname   ESMTP\nbiff = no\nrelayhost =\n",
        "",
    );
    let (code, out, err) = run(d.path(), &[]);
    assert_eq!(code, 0, "{err}");
    let dir = d.path().display();
    assert_eq!(
        out,
        format!(
            "config_directory = {dir}\nmyhostname = mx.example.com\nrelay_domains = example.com\nrelayhost =\nsmtpd_banner = $myhostname ESMTP\n"
        )
    );
    let (_, out, _) = run(d.path(), &["-n", "-x"]);
    assert!(out.contains("smtpd_banner = mx.example.com ESMTP\n"), "{out}");
}

#[test]
fn single_values_value_only_and_expanded() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "myhostname = mx.example.com\n", "");
    let (code, out, err) = run(d.path(), &["myorigin", "message_size_limit", "smtpd_banner"]);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "myorigin = $myhostname\nmessage_size_limit = 10240000\nsmtpd_banner = $myhostname ESMTP $mail_name\n"
    );
    assert!(err.is_empty());
    let (_, out, _) = run(d.path(), &["-H", "-x", "myorigin", "smtpd_banner"]);
    assert_eq!(out, "mx.example.com\nmx.example.com ESMTP sluice\n");
    let (_, out, _) = run(d.path(), &["-H", "--expand", "smtpd_hard_error_limit"]);
    assert_eq!(out, "20\n");
    let (code, out, err) = run(d.path(), &["nosuch_param", "biff", "relayhost"]);
    assert_eq!(code, 0, "as postconf: warnings only");
    assert_eq!(out, "relayhost =\n");
    assert!(err.contains("nosuch_param: unknown parameter"), "{err}");
    assert!(err.contains("biff: not implemented by sluice: "), "{err}");
}

#[test]
fn defaults_ignore_main_cf() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "message_size_limit = 1\n", "");
    let (_, out, _) = run(
        d.path(),
        &["-d", "message_size_limit", "maximal_queue_lifetime", "relay_destination_concurrency_limit"],
    );
    assert_eq!(
        out,
        "message_size_limit = 10240000\nmaximal_queue_lifetime = 5d\nrelay_destination_concurrency_limit = $default_destination_concurrency_limit\n"
    );
    let (_, all, _) = run(d.path(), &["-d"]);
    assert!(all.lines().count() > 100, "{all}");
    assert!(all.contains("\nsluice_log_format = text\n"));
    // Broken main.cf does not matter for -d.
    write(d.path(), "message_size_limit = ten\n", "");
    let (code, _, _) = run(d.path(), &["-d", "message_size_limit"]);
    assert_eq!(code, 0);
    let (code, _, err) = run(d.path(), &["message_size_limit"]);
    assert_eq!(code, 1);
    assert!(err.contains("main.cf:1: message_size_limit: bad size value \"ten\""), "{err}");
}

#[test]
fn check_reports_errors_and_strict_fails_on_warnings() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "relay_domains = example.com\n", "smtp inet n - y - - smtpd\n");
    let (code, out, err) = run(d.path(), &["check"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("configuration ok: 1 listener(s)"), "{out}");
    assert!(err.is_empty(), "{err}");
    let (code, _, _) = run(d.path(), &["check", "--strict"]);
    assert_eq!(code, 0);

    write(
        d.path(),
        "relay_domains = example.com\nmydestination = localhost\nmesage_size_limit = 5\n",
        "smtp inet n - y - - smtpd\n",
    );
    let (code, _, err) = run(d.path(), &["check"]);
    assert_eq!(code, 0);
    assert!(
        err.contains("sluice: warning: ") && err.contains("main.cf:3: mesage_size_limit: unknown parameter"),
        "{err}"
    );
    let (code, _, err) = run(d.path(), &["check", "--strict"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("sluice: error: ") && err.contains("mydestination: not implemented by sluice"),
        "{err}"
    );

    write(d.path(), "message_size_limit = ten\nsmtpd_timeout = forever\n", "smtp inet n - y - - smtpd\n");
    let (code, _, err) = run(d.path(), &["check"]);
    assert_eq!(code, 1);
    assert!(err.contains("main.cf:1: message_size_limit: bad size value \"ten\""), "{err}");
    assert!(err.contains("main.cf:2: smtpd_timeout: bad time value \"forever\""), "{err}");
    assert!(err.contains("2 error(s); the configuration is refused"), "{err}");
}

#[test]
fn the_shipped_configurations_pass_a_strict_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
    for dir in [root.clone(), root.join("dev")] {
        let (code, out, err) = run(&dir, &["check", "--strict"]);
        assert_eq!(code, 0, "{}: {err}", dir.display());
        assert!(out.contains("configuration ok"), "{out}");
    }
}

#[test]
fn the_dev_configuration_listens_on_loopback_and_routes_dev_test_to_lmtp() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/dev");
    let c = sluice::config::Config::load(&dir).expect("conf/dev loads").config;
    let addrs: Vec<String> =
        c.smtpd_services().iter().flat_map(|s| s.addrs.iter().map(|a| a.to_string())).collect();
    assert_eq!(addrs, vec!["127.0.0.1:2525"]);
    assert_eq!(c.socket_addr("sluice_metrics_listen"), Some("127.0.0.1:9025".parse().unwrap()));
    assert_eq!(c.string("queue_directory"), "var/spool");
    assert_eq!(c.string("sluice_admin_socket"), "var/spool/admin.sock");
    assert_eq!(
        c.route("someone@dev.test").unwrap(),
        sluice::config::Route::Deliver {
            transport: "lmtp".into(),
            protocol: sluice::config::Protocol::Lmtp,
            nexthop: sluice::config::NextHop::Host { host: "127.0.0.1".into(), port: 24240 },
            by_domain: false,
        }
    );
    assert!(!c.is_relay_domain("example.com").unwrap());
}

#[test]
fn the_packaged_configuration_is_a_closed_mx() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
    let c = sluice::config::Config::load(&dir).expect("conf loads").config;
    assert_eq!(c.smtpd_services()[0].addrs.iter().map(|a| a.port()).collect::<Vec<_>>(), vec![25, 25]);
    assert!(!c.is_relay_domain("example.com").unwrap());
    assert_eq!(c.string("queue_directory"), "/var/spool/sluice");
    let names: Vec<&str> = c.transports().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, vec!["lmtp", "smtp", "relay"]);
}

#[test]
fn serve_refuses_a_broken_configuration_with_the_messages_check_gives() {
    let d = tempfile::tempdir().unwrap();
    let spool = d.path().join("spool");
    write(
        d.path(),
        &format!(
            "queue_directory = {}\ninet_interfaces = loopback-only\ninet_protocols = ipv4\n\
             message_size_limit = ten\nsmtpd_recipient_restrictions = {{ permit_mynetworks\n",
            spool.display()
        ),
        "127.0.0.1:2 inet n - n - smtpd\n",
    );
    let (code, _, check) = run(d.path(), &["check"]);
    assert_eq!(code, 1, "{check}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("-c")
        .arg(d.path())
        .arg("serve")
        .output()
        .expect("run sluice serve");
    let serve = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{serve}");
    assert!(!serve.contains("panicked"), "{serve}");
    let dir = d.path().display();
    for e in [
        format!("{dir}/main.cf:4: message_size_limit: bad size value \"ten\""),
        format!("{dir}/main.cf:5: smtpd_recipient_restrictions: unbalanced '{{'"),
        format!("{dir}/master.cf:1: expected service type private unpriv chroot wakeup maxproc command"),
    ] {
        assert!(check.contains(&format!("sluice: error: {e}")), "check: missing {e:?} in\n{check}");
        assert!(serve.contains(&format!("sluice: fatal: {e}")), "serve: missing {e:?} in\n{serve}");
    }
    // Nothing was started: no queue was created.
    assert!(!spool.exists());
}
