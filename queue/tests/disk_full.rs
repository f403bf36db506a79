//! A full file system under a real RocksDB: the queue in a size-limited
//! tmpfs the test mounts (as root; without root it says why and skips),
//! filled to the last byte by a file beside it. A commit then fails with
//! [`Error::NoSpace`] (the session's `452 4.3.1`) before RocksDB tries to
//! write, `admit` refuses new mail, nothing committed before is lost or
//! damaged, and once the file is removed the queue takes mail again by
//! itself and reopens whole. And writes that fail for another reason (a
//! stand-in for RocksDB refusing writes after a background error) stop
//! new mail until a write works again, which the queue finds out itself.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sluice_queue::{AcceptLimits, Error, Filter, Options, Queue, QueueId};
use support::{envelope, wall_millis};

/// A tmpfs of `size` mounted on a temp dir, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

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
        Some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// Fills the file system holding `path` to the last byte with the file
/// `path`; returns it.
fn fill(path: &Path) -> PathBuf {
    let mut f = std::fs::File::create(path).expect("create filler");
    let block = vec![0x5au8; 1 << 20];
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => break,
            Err(e) => panic!("filling: {e}"),
        }
    }
    let mut small = vec![0u8; 4096];
    while f.write(&small).is_ok_and(|n| n > 0) {
        small.truncate(small.len() / 2);
        if small.is_empty() {
            break;
        }
    }
    let _ = f.sync_all();
    path.to_path_buf()
}

async fn commit(q: &Queue, body: &[u8]) -> Result<QueueId, Error> {
    let mut d = q.begin();
    d.append(body).await?;
    d.commit(envelope("a@example.org", &["b@example.net"]), wall_millis()).await
}

fn body(i: usize) -> Vec<u8> {
    format!("Subject: {i}\r\n\r\n{}\r\n", "x".repeat(3000 + i)).into_bytes()
}

#[tokio::test]
async fn a_full_file_system_refuses_new_mail_keeps_the_old_and_recovers_by_itself() {
    let Some(fs) = Tmpfs::mount("256m") else { return };
    let dir = fs.path().join("queue");
    let opts = Options::default();
    let q = Queue::open(&dir, &opts, wall_millis()).expect("open");
    let mut kept = Vec::new();
    for i in 0..20 {
        kept.push((commit(&q, &body(i)).await.expect("commit before the disk is full"), body(i)));
    }

    let filler = fill(&fs.path().join("filler"));
    // Commits fail, as NoSpace (452), however many come; none panics.
    let mut refused = 0;
    for i in 100..140 {
        match commit(&q, &body(i)).await {
            Ok(id) => kept.push((id, body(i))),
            Err(Error::NoSpace(_)) => refused += 1,
            Err(e) => panic!("a full disk must read as NoSpace, got {e}"),
        }
    }
    assert_eq!(refused, 40, "no commit fits on a full file system");
    let limits = AcceptLimits::default();
    assert!(
        matches!(q.admit(&limits), Err(Error::Unwritable(_) | Error::DiskLow { .. })),
        "no new mail on a full disk: {:?}",
        q.admit(&limits)
    );

    // Everything committed is still there, byte for byte.
    let listed = q.list(Filter::default()).await.expect("list while full");
    assert_eq!(listed.len(), kept.len());
    for (id, b) in &kept {
        assert_eq!(&q.body(*id).await.expect("read while full"), b);
    }

    std::fs::remove_file(filler).expect("free the space");
    // The queue recovers by itself.
    wait_for_admit(&q, &limits, true, Duration::from_secs(60)).await;
    kept.push((commit(&q, &body(200)).await.expect("commit after recovery"), body(200)));

    q.close().await.expect("close");
    drop(q);
    let q = Queue::open(&dir, &opts, wall_millis()).expect("reopen");
    let listed = q.list(Filter::default()).await.expect("list");
    assert_eq!(listed.len(), kept.len(), "nothing committed is lost");
    for (id, b) in &kept {
        assert_eq!(&q.body(*id).await.expect("read"), b);
    }
    q.close().await.expect("close");
}

#[tokio::test]
async fn failing_writes_stop_new_mail_until_a_write_works_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = Queue::open(dir.path(), &Options::default(), wall_millis()).expect("open");
    let before = commit(&q, &body(1)).await.expect("commit");
    let limits = AcceptLimits::default();
    q.admit(&limits).expect("admits");

    q.debug_fail_writes(Some("Background error: injected"));
    assert!(matches!(commit(&q, &body(2)).await, Err(Error::Storage(_))));
    assert!(matches!(q.admit(&limits), Err(Error::Unwritable(_))), "surfaced: no new mail");
    assert_eq!(q.body(before).await.expect("still readable"), body(1));

    // Nobody writes; the queue's own probe finds out that writes work.
    q.debug_fail_writes(None);
    wait_for_admit(&q, &limits, true, Duration::from_secs(20)).await;
    commit(&q, &body(3)).await.expect("commit after resuming");
    assert_eq!(q.list(Filter::default()).await.expect("list").len(), 2);
    q.close().await.expect("close");
}

/// The writer's own sync of buffered changes (a claim) is a write like any
/// other: when it fails, no new mail is taken until a write works again.
#[tokio::test]
async fn a_failing_sync_of_buffered_changes_stops_new_mail_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = wall_millis();
    let q = Queue::open(dir.path(), &Options::default(), now).expect("open");
    commit(&q, &body(1)).await.expect("commit");
    let limits = AcceptLimits::default();
    // A claim is buffered: the writer syncs it once idle.
    assert_eq!(q.claim_due(now + 60_000, 10).await.expect("claim").len(), 1);
    q.debug_fail_writes(Some("Background error: injected"));
    wait_for_admit(&q, &limits, false, Duration::from_secs(10)).await;
    assert!(matches!(q.admit(&limits), Err(Error::Unwritable(_))), "{:?}", q.admit(&limits));
    q.debug_fail_writes(None);
    wait_for_admit(&q, &limits, true, Duration::from_secs(20)).await;
    q.close().await.expect("close");
}

/// Polls until the queue admits new mail (`admits`) or refuses it, failing
/// after `within`.
async fn wait_for_admit(q: &Queue, limits: &AcceptLimits, admits: bool, within: Duration) {
    let step = Duration::from_millis(50);
    let mut waited = Duration::ZERO;
    while q.admit(limits).is_ok() != admits {
        assert!(waited < within, "admit still {:?} after {within:?}", q.admit(limits));
        tokio::time::sleep(step).await;
        waited += step;
    }
}
