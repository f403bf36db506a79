//! The operator's view during an incident, checked against real peers:
//! the alert rules under `promtool test rules`; and one daemon under load
//! (a healthy LMTP backend that gets paused, and a dead one whose breaker
//! opens) watched three ways: `sluice top`'s plain-text frame against
//! `sluice backend list`, a private Prometheus (Debian's, on a loopback
//! port, its own config and data dir) answering every query of the
//! Grafana dashboard, and the same Prometheus evaluating the alert rules
//! to what the situation is.
// Waiting for the daemon and Prometheus is real time by design.
#![allow(clippy::disallowed_methods)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::backend::{Backend, Mode, Proto};
use common::daemon::{Daemon, TestConfig, send};
use common::{ChildGuard, free_port, wait_for_port, wait_until};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn alert_rules_pass_their_promtool_unit_tests() {
    let dir = repo("packaging/prometheus");
    let check =
        Command::new("promtool").args(["check", "rules", "sluice-alerts.yml"]).current_dir(&dir).output();
    let check = check.expect("promtool (Debian package prometheus; scripts/bootstrap test installs it)");
    assert!(check.status.success(), "{}", text(&check));
    let out = Command::new("promtool")
        .args(["test", "rules", "sluice-alerts.test.yml"])
        .current_dir(&dir)
        .output()
        .expect("promtool");
    assert!(out.status.success(), "{}", text(&out));
}

/// Every panel query of the dashboard (rows hold no query), with Grafana's
/// variables replaced by what they mean against one Prometheus.
fn dashboard_queries() -> Vec<(String, String)> {
    let json = std::fs::read_to_string(repo("packaging/grafana/sluice-dashboard.json")).expect("dashboard");
    let d: serde_json::Value = serde_json::from_str(&json).expect("dashboard is JSON");
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"]
                .as_str()
                .expect("expr")
                .replace("$instance", ".*")
                .replace("$__rate_interval", "1m");
            out.push((p["title"].as_str().unwrap_or("").to_owned(), expr));
        }
    }
    out
}

#[test]
fn dashboard_is_importable_and_provisionable() {
    let json = std::fs::read_to_string(repo("packaging/grafana/sluice-dashboard.json")).expect("dashboard");
    let d: serde_json::Value = serde_json::from_str(&json).expect("dashboard is JSON");
    assert_eq!(d["uid"], "sluice-overview");
    // No `__inputs`: the data source is a variable, so the same file is
    // imported by hand and provisioned from disk.
    assert!(d.get("__inputs").is_none());
    let vars = d["templating"]["list"].as_array().expect("variables");
    assert!(vars.iter().any(|v| v["name"] == "datasource" && v["type"] == "datasource"));
    let mut ids = std::collections::HashSet::new();
    for p in d["panels"].as_array().expect("panels") {
        assert!(ids.insert(p["id"].as_u64().expect("id")), "panel ids are unique: {p}");
        if p["type"] != "row" {
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
            assert!(!p["targets"].as_array().expect("targets").is_empty(), "{}", p["title"]);
        }
    }
    assert!(dashboard_queries().len() >= 15);
}

/// A private Prometheus scraping `target` every second and evaluating the
/// alert rules every second.
struct Prometheus {
    _dir: tempfile::TempDir,
    addr: SocketAddr,
    _child: ChildGuard,
}

impl Prometheus {
    fn start(target: SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let rules = repo("packaging/prometheus/sluice-alerts.yml");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: sluice\n    static_configs:\n      - targets: ['{target}']\n",
            rules.display()
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).expect("config");
        let mut cmd = Command::new("prometheus");
        cmd.arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = ChildGuard::spawn("prometheus", &mut cmd);
        assert!(wait_for_port(addr, Duration::from_secs(30)), "prometheus did not listen on {addr}");
        Prometheus { _dir: dir, addr, _child: child }
    }

    fn get(&self, path: &str, query: Option<&str>) -> serde_json::Value {
        let mut cmd = Command::new("curl");
        cmd.args(["-sf", "-G", &format!("http://{}{path}", self.addr)]);
        if let Some(q) = query {
            cmd.arg("--data-urlencode").arg(format!("query={q}"));
        }
        let out = cmd.output().expect("curl");
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }

    /// The result vector of an instant query.
    fn query(&self, q: &str) -> Vec<serde_json::Value> {
        self.get("/api/v1/query", Some(q))["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// Alerting rules by name: (health, labels of their pending or firing alerts).
    fn alerts(&self) -> Vec<(String, String, Vec<serde_json::Value>)> {
        let v = self.get("/api/v1/rules", None);
        let mut out = Vec::new();
        for g in v["data"]["groups"].as_array().into_iter().flatten() {
            for r in g["rules"].as_array().into_iter().flatten() {
                let labels =
                    r["alerts"].as_array().into_iter().flatten().map(|a| a["labels"].clone()).collect();
                out.push((
                    r["name"].as_str().unwrap_or("").to_owned(),
                    r["health"].as_str().unwrap_or("").to_owned(),
                    labels,
                ));
            }
        }
        out
    }
}

/// Sends `n` messages to `rcpt` over `sessions` SMTP sessions with
/// Postfix's smtp-source.
fn smtp_source(smtp: SocketAddr, rcpt: &str, n: usize, sessions: usize) {
    let out = Command::new("smtp-source")
        .args(["-s", &sessions.to_string(), "-m", &n.to_string(), "-f", "load@sender.test", "-t", rcpt])
        .arg(smtp.to_string())
        .output()
        .expect("smtp-source (Debian package postfix)");
    assert!(out.status.success(), "smtp-source: {}", text(&out));
}

fn backend_list(cfg: &TestConfig) -> Vec<serde_json::Value> {
    let out = cfg.sluice(&["backend", "list", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .expect("json")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// `name breaker in/limit` of each backend, as `sluice backend list` says.
fn gates(list: &[serde_json::Value]) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = list
        .iter()
        .map(|b| {
            let paused = b["paused_until"].as_u64().is_some();
            let state = if paused { "paused".into() } else { b["breaker"].as_str().unwrap_or("").to_owned() };
            (
                b["name"].as_str().unwrap_or("").to_owned(),
                state,
                format!("{}/{}", b["concurrency"], b["limit"]),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn a_daemon_under_load_is_seen_alike_by_top_prometheus_and_the_alerts() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let healthy = rt.block_on(Backend::start(Proto::Lmtp));
    let full = rt.block_on(Backend::start(Proto::Lmtp));
    rt.block_on(full.set_mode(Mode::PerRecipient {
        pattern: "@".into(),
        code: 452,
        text: "4.2.2 Mailbox full".into(),
    }));
    let good = format!("lmtp:[127.0.0.1]:{}", healthy.port());
    let failing = format!("lmtp:[127.0.0.1]:{}", full.port());
    let dead = format!("lmtp:[127.0.0.1]:{}", free_port());
    let cfg = TestConfig::new(
        &good,
        "relay_domains = relay.test sick.test full.test\n\
         sluice_breaker_failure_threshold = 2\n\
         sluice_breaker_cooldown = 1s\n\
         sluice_breaker_max_cooldown = 2s\n\
         delay_warning_time = 4h",
    );
    let transport = format!("relay.test {good}\nsick.test {dead}\nfull.test {failing}\n");
    std::fs::write(cfg.path().join("transport"), transport).expect("transport");
    let _daemon = Daemon::start(&cfg);
    let prom = Prometheus::start(cfg.metrics);

    // Load: mail for the three backends, and a client the relay rules refuse.
    smtp_source(cfg.smtp, "user@relay.test", 60, 4);
    smtp_source(cfg.smtp, "user@sick.test", 10, 2);
    smtp_source(cfg.smtp, "user@full.test", 10, 2);
    assert!(send(cfg.smtp, "x@sender.test", &["someone@elsewhere.test"], "Subject: x\r\n\r\nx\r\n").is_err());
    wait_until(
        "the healthy backend got the mail and the dead one's breaker opened",
        Duration::from_secs(60),
        || {
            healthy.delivered_rcpts() >= 60
                && gates(&backend_list(&cfg)).iter().any(|g| g.0 == dead && g.1 == "open")
        },
        || {
            format!(
                "delivered {}; backends {:?}\n{}",
                healthy.delivered_rcpts(),
                backend_list(&cfg),
                cfg.log()
            )
        },
    );
    let out = cfg.sluice(&["backend", "pause", &good]);
    assert!(out.status.success(), "{}", text(&out));
    // Mail that arrives now waits for the pause.
    smtp_source(cfg.smtp, "user@relay.test", 10, 2);

    // sluice top's plain-text frame (stdout is a pipe here) shows a row
    // per backend with what `sluice backend list` says of its gate; the
    // two lists read around it agreeing makes the comparison exact.
    // (A backend retrying mail changes its in-use count between reads.)
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let frame = loop {
        let before = gates(&backend_list(&cfg));
        let out = cfg.sluice(&["top"]);
        assert!(out.status.success(), "{}", text(&out));
        let frame = String::from_utf8_lossy(&out.stdout).into_owned();
        let stable = before == gates(&backend_list(&cfg));
        let shown = |(name, state, in_limit): &(String, String, String)| {
            frame.lines().any(|l| {
                l.contains(&format!("{name} "))
                    && l.contains(&format!(" {in_limit} "))
                    && l.contains(state.as_str())
            })
        };
        if before.len() == 3 && stable && before.iter().all(shown) {
            break frame;
        }
        assert!(std::time::Instant::now() < deadline, "top does not match backend list {before:?}:\n{frame}");
        std::thread::sleep(Duration::from_millis(200));
    };
    // `SLUICE_TOP_CAPTURE=FILE` keeps this frame: the README shows it.
    if let Some(path) = std::env::var_os("SLUICE_TOP_CAPTURE") {
        std::fs::write(path, &frame).expect("write the top capture");
    }
    assert!(frame.contains("rejects  RCPT 4"), "the relay refusal is counted:\n{frame}");
    assert!(frame.contains("SHAPE by age") && frame.contains("QUEUE  "), "{frame}");
    let once = text(&cfg.sluice(&["top", "--once", "--width", "100"]));
    assert!(once.lines().all(|l| l.chars().count() <= 100), "{once}");

    // Every dashboard query returns data once Prometheus has scraped the
    // paused backend (rates need two scrapes).
    let queries = dashboard_queries();
    wait_until(
        "every dashboard query returns data",
        Duration::from_secs(60),
        || {
            !prom.query(&format!("sluice_backend_paused{{backend=\"{good}\"}} == 1")).is_empty()
                && queries.iter().all(|(_, q)| !prom.query(q).is_empty())
        },
        || {
            let empty: Vec<&(String, String)> =
                queries.iter().filter(|(_, q)| prom.query(q).is_empty()).collect();
            let paused = prom.query(&format!("sluice_backend_paused{{backend=\"{good}\"}} == 1"));
            format!("no data for {empty:#?}\npaused: {paused:?}")
        },
    );

    // The alert expressions say what the situation is: the paused backend
    // and the open breaker are pending (their `for` has not passed), the
    // mailbox-full backend's deliveries fail (the dead one's may too, as
    // its probes fail), and nothing else is wrong.
    let expect: [(&str, &[&str], &[&str]); 3] = [
        ("SluiceBackendPaused", &[&good], &[]),
        ("SluiceBreakerOpen", &[&dead], &[]),
        ("SluiceDeliveriesFailing", &[&failing], &[&dead]),
    ];
    wait_until(
        "the alert rules evaluate to the situation",
        Duration::from_secs(60),
        || {
            let alerts = prom.alerts();
            alerts.len() == 8
                && alerts.iter().all(|(name, health, labels)| {
                    let got: Vec<&str> = labels.iter().map(|l| l["backend"].as_str().unwrap_or("")).collect();
                    let (need, may) = expect
                        .iter()
                        .find(|(n, _, _)| n == name)
                        .map(|(_, need, may)| (*need, *may))
                        .unwrap_or((&[], &[]));
                    health == "ok"
                        && need.iter().all(|b| got.contains(b))
                        && got.iter().all(|b| need.contains(b) || may.contains(b))
                })
        },
        || format!("{:#?}", prom.alerts()),
    );
    drop((healthy, full));
}
