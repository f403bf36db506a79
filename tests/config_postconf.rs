//! `sluice config` against Postfix's own `postconf -c DIR` on the same
//! files: every supported parameter Postfix also knows must have the same
//! value, as written (`postconf -h`) and expanded (`postconf -x`), except
//! the few whose default sluice changes on purpose (listed below with the
//! reason). Host-derived values (myhostname, mynetworks) must agree too:
//! both read the same host.

#[path = "config_debian/fixture.rs"]
mod fixture;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use sluice::cli::postconf::{ConfigArgs, run_to};

/// Defaults sluice changes on purpose; compared only when set in main.cf.
const DIFFERENT_DEFAULTS: &[(&str, &str)] = &[
    ("mail_name", "sluice names itself, as Postfix does"),
    ("queue_directory", "sluice's spool is /var/spool/sluice"),
    ("disable_vrfy_command", "an MX has no reason to confirm addresses: VRFY is off by default"),
    (
        "smtpd_forbid_bare_newline",
        "sluice uses Postfix 3.9's safe default (normalize); Debian 12's 3.7 backport says no",
    ),
    (
        "smtpd_forbid_unauth_pipelining",
        "sluice uses Postfix 3.9's default (yes); Debian 12's 3.7 backport says no",
    ),
    ("milter_macro_v", "the v macro names sluice's version ($mail_version is Postfix's)"),
    (
        "smtp_tls_security_level",
        "sluice's mail out by MX (bounces) uses opportunistic STARTTLS, as Debian's postfix configuration sets it",
    ),
];

/// Defaults written differently that expand to the same value.
const DIFFERENT_DEFAULT_TEXT: &[(&str, &str)] = &[
    (
        "smtpd_client_event_limit_exceptions",
        "Postfix's default first tries the pre-2.9 name smtpd_client_connection_limit_exceptions, which sluice does not know",
    ),
    ("address_verify_poll_count", "Postfix writes ${stress?{1}:{3}}; sluice's default is the unstressed 3"),
    (
        "unverified_recipient_tempfail_action",
        "Postfix writes $reject_tempfail_action, which sluice does not know; both mean defer_if_permit",
    ),
    (
        "virtual_alias_maps",
        "Postfix's default is the pre-2.0 name $virtual_maps (empty), which sluice does not know; both expand to empty",
    ),
];

/// postconf's `name = value` lines (names it does not know are absent).
fn postconf(dir: &Path, names: &[String], expand: bool) -> BTreeMap<String, String> {
    let postconf = fixture::postfix_tool("postconf").expect("postconf");
    let mut cmd = Command::new(postconf);
    cmd.arg("-c").arg(dir);
    if expand {
        cmd.arg("-x");
    }
    let out = cmd.args(names).output().expect("run postconf");
    parse(&String::from_utf8_lossy(&out.stdout))
}

/// `sluice config` (through the command's own entry point).
fn sluice(dir: &Path, names: &[String], expand: bool) -> BTreeMap<String, String> {
    let args = ConfigArgs { expand, names: names.to_vec(), ..ConfigArgs::default() };
    let mut out = Vec::new();
    let mut err = Vec::new();
    let code = run_to(dir, &args, &mut out, &mut err).expect("sluice config");
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&err));
    parse(&String::from_utf8_lossy(&out))
}

fn parse(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            l.split_once(" =")
                .map(|(n, v)| (n.to_owned(), v.split_whitespace().collect::<Vec<_>>().join(" ")))
        })
        .collect()
}

/// Compares all names sluice knows in `dir`; returns how many were compared.
fn compare(dir: &Path) -> usize {
    let cfg = sluice::config::Config::load(dir).expect("loads").config;
    let names: Vec<String> = cfg.all_raw().into_iter().map(|(n, _)| n).collect();
    let mut compared = 0;
    let mut problems = Vec::new();
    for expand in [false, true] {
        let theirs = postconf(dir, &names, expand);
        let ours = sluice(dir, &names, expand);
        assert!(theirs.len() > 60, "postconf answered for {} names only", theirs.len());
        for (name, their) in &theirs {
            let Some(our) = ours.get(name) else {
                problems.push(format!("{name}: postconf knows it, sluice printed nothing"));
                continue;
            };
            let set = cfg.is_set(name);
            if !set && DIFFERENT_DEFAULTS.iter().any(|(n, _)| n == name) {
                continue;
            }
            // Defaults Postfix writes as compatibility-level expressions
            // only agree once expanded.
            if !expand && !set && their.contains("compatibility_level") {
                continue;
            }
            if !expand && !set && DIFFERENT_DEFAULT_TEXT.iter().any(|(n, _)| n == name) {
                continue;
            }
            let mut our = our.clone();
            if expand && !cfg.is_set("mail_name") {
                // $mail_name inside other values (smtpd_banner).
                our = our.replace(cfg.string("mail_name"), "Postfix");
            }
            if our != *their {
                problems.push(format!(
                    "{name} ({}): sluice \"{our}\", postconf \"{their}\"",
                    if expand { "-x" } else { "raw" }
                ));
            }
            compared += 1;
        }
    }
    assert!(problems.is_empty(), "differences from postconf in {}:\n{}", dir.display(), problems.join("\n"));
    compared
}

/// Fails the test when Postfix's postconf is not installed.
fn require_postconf() {
    assert!(
        fixture::postfix_tool("postconf").is_some(),
        "postconf is not installed (Debian package postfix; scripts/bootstrap test installs it)"
    );
}

#[test]
fn values_match_postconf_on_the_debian_mx_config() {
    require_postconf();
    let dir = fixture::debian_mx();
    let n = compare(dir.path());
    eprintln!("compared {n} values with postconf");
}

#[test]
fn defaults_match_postconf_at_compatibility_level_3_6() {
    require_postconf();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("main.cf"), "compatibility_level = 3.6\n").unwrap();
    std::fs::write(dir.path().join("master.cf"), "smtp inet n - y - - smtpd\nmbx unix - - n - 10 lmtp\n")
        .unwrap();
    let n = compare(dir.path());
    eprintln!("compared {n} values with postconf");
}

#[test]
fn tricky_syntax_means_the_same_to_both() {
    require_postconf();
    let dir = tempfile::tempdir().unwrap();
    let main = "\
compatibility_level = 3.6
myhostname = mx.example.org
mydomain = example.org
smtpd_banner = $myhostname ESMTP ${stress?{busy}:{ready}} $$ ${mydomain:{nodomain}}
relayhost = ${{$mydomain} == {example.org} ? {[smart.example.org]:587} : {}}
mynetworks = 127.0.0.0/8,
    [::1]/128
  # a comment between continuation lines
    192.0.2.0/24
myorigin = $mydomain
message_size_limit = 20480000
message_size_limit = 30720000
smtpd_timeout = 2m
recipient_delimiter = +-
";
    std::fs::write(dir.path().join("main.cf"), main).unwrap();
    std::fs::write(dir.path().join("master.cf"), "").unwrap();
    compare(dir.path());
}
