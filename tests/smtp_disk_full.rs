//! The queue's file system fills up under the real daemon: a size-limited
//! tmpfs the test mounts as root (without root the test says why and
//! skips), filled to its last byte by a file beside the queue. New mail
//! gets `452 4.3.1` (at MAIL, and at the end of a message whose DATA was
//! already under way), the daemon keeps running and answering, the mail
//! it accepted before stays listed, and once the file is removed it takes
//! mail again by itself; every accepted message then reaches the mailbox
//! server whole.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::backend::{Backend, Mode, Proto};
use common::clients::Raw;
use common::daemon::{Daemon, TestConfig, send};
use common::delivery::{eventually, subject};

/// A tmpfs mounted on a temp dir, unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let uid = Command::new("id").arg("-u").output().expect("run id");
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            println!("SKIPPED: mounting a size-limited tmpfs for the queue needs root");
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "sluice-test"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(st.success(), "mount -t tmpfs failed");
        Some(Tmpfs(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

/// Fills the file system of `path` to its last byte with that file.
fn fill(path: &Path) -> PathBuf {
    let mut f = std::fs::File::create(path).expect("create filler");
    let mut block = vec![0x5au8; 1 << 20];
    while !block.is_empty() {
        match f.write(&block) {
            Ok(n) if n > 0 => {}
            _ => block.truncate(block.len() / 2),
        }
    }
    let _ = f.sync_all();
    path.to_path_buf()
}

fn message(i: usize) -> String {
    format!("Subject: kept {i}\r\n\r\n{}\r\n", format!("line {i}\r\n").repeat(200))
}

async fn send_async(cfg: &TestConfig, i: usize) -> Result<String, String> {
    let addr = cfg.smtp;
    tokio::task::spawn_blocking(move || send(addr, "a@source.test", &["user@relay.test"], &message(i)))
        .await
        .expect("send task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_disk_refuses_new_mail_keeps_the_old_and_recovers_by_itself() {
    let Some(fs) = Tmpfs::mount("256m") else { return };
    let backend = Backend::start(Proto::Lmtp).await;
    backend.set_mode(Mode::Refuse).await;
    // One attempt while the mailbox server is down, then none until the
    // test flushes: the disk fills with the mail only waiting.
    let extra = format!(
        "queue_directory = {}/spool\nminimal_backoff_time = 1h\nmaximal_backoff_time = 2h\n",
        fs.0.path().display()
    );
    let cfg = TestConfig::new(&format!("lmtp:[127.0.0.1]:{}", backend.port()), &extra);
    let mut daemon = Daemon::start(&cfg);
    for i in 0..5 {
        let r = send_async(&cfg, i).await.expect("accepted before the disk is full");
        assert!(r.starts_with("250 "), "{r}");
    }
    // Their one delivery attempt is recorded before the disk fills.
    let listing = || String::from_utf8_lossy(&cfg.sluice(&["queue", "list", "--json"]).stdout).into_owned();
    eventually("five deferred messages", Duration::from_secs(30), || {
        listing().lines().filter(|l| l.contains("delay_reason")).count() == 5
    })
    .await;
    // A session already in DATA when the disk fills.
    let mut late = Raw::ehlo(cfg.smtp).await;
    assert_eq!(late.cmd("MAIL FROM:<a@source.test>").await.code, 250);
    assert_eq!(late.cmd("RCPT TO:<user@relay.test>").await.code, 250);
    assert_eq!(late.cmd("DATA").await.code, 354);

    let filler = fill(&fs.0.path().join("filler"));
    late.send(message(99).as_bytes()).await;
    late.send(b".\r\n").await;
    assert_eq!(late.reply().await.expect("end of data").text(), "452 4.3.1 Insufficient system storage");
    assert_eq!(late.cmd("NOOP").await.code, 250, "the session goes on");
    // New mail: refused at MAIL once the free-space figure (a second old at
    // most) shows the disk full.
    let mut c = Raw::ehlo(cfg.smtp).await;
    let mut refused = None;
    for _ in 0..50 {
        let r = c.cmd("MAIL FROM:<a@source.test>").await;
        if r.code != 250 {
            refused = Some(r.text());
            break;
        }
        c.cmd("RSET").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(refused.as_deref(), Some("452 4.3.1 Insufficient system storage"));
    c.cmd("QUIT").await;
    assert!(send_async(&cfg, 98).await.is_err(), "no 250 on a full disk");
    assert!(daemon.child.child.try_wait().expect("wait").is_none(), "the daemon is still running");
    let listed = listing();
    assert_eq!(listed.lines().count(), 5, "the accepted mail is all there:\n{listed}");

    std::fs::remove_file(filler).expect("free the space");
    let mut accepted = None;
    for _ in 0..100 {
        if let Ok(r) = send_async(&cfg, 5).await {
            accepted = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(accepted.is_some_and(|r| r.starts_with("250 ")), "mail is taken again once there is room");

    backend.set_mode(Mode::Normal).await;
    assert!(cfg.sluice(&["queue", "flush"]).status.success());
    eventually("every accepted message delivered", Duration::from_secs(60), || backend.received().len() >= 6)
        .await;
    let mut subjects: Vec<String> = backend.received().iter().map(|m| subject(&m.data)).collect();
    subjects.sort();
    assert_eq!(subjects, (0..6).map(|i| format!("kept {i}")).collect::<Vec<_>>());
    for m in backend.received() {
        let i: usize = subject(&m.data)["kept ".len()..].parse().expect("number");
        assert!(m.data.ends_with(message(i).as_bytes()), "delivered whole: kept {i}");
    }
    let st = daemon.child.terminate(Duration::from_secs(60)).expect("stops");
    assert!(st.success(), "{st:?}");
    let log = cfg.log();
    assert!(!log.contains("panicked"), "{log}");
    assert!(log.contains("queue: writes fail"), "the failure is logged:\n{log}");
}
