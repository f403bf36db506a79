//! The commands that are admin API requests (`queue`, `backend`, `reload`,
//! `stop`, `status`): sent to the daemon over the admin socket, or, when
//! the daemon is not running, executed against the queue directly (as
//! `postqueue`/`postsuper` do on a stopped Postfix).
//!
//! The fallback opens RocksDB itself, and RocksDB creates files (log,
//! manifest, options, info log) whenever it opens a database, even read
//! only. Run as root, those files would belong to root inside a spool the
//! daemon (running as the spool's owner) must write, and the next start
//! would fail. So a root fallback first becomes the owner of
//! `queue_directory`, as Postfix's `postsuper` becomes `mail_owner`.

use std::io::{BufRead, IsTerminal};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};

use super::args::{BackendCommand, Command, IdArgs, QueueCommand};
use crate::clock;
use crate::config::Config;
use crate::server::admin::api::{Handler, Ids, Request, Response};
use crate::server::admin::socket::{self, SocketError};
use crate::server::admin::view::{self, MessageView};
use crate::server::{admin_socket, queue_db_dir};

/// How long a command waits for the daemon's answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `command` (one of the request commands) with the configuration
/// in `config_dir`.
pub fn run(config_dir: &Path, command: Command) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(client(config_dir, command))
}

fn load_config(dir: &Path) -> anyhow::Result<Arc<Config>> {
    match Config::load(dir) {
        Ok(loaded) => Ok(loaded.config),
        Err(errors) => bail!("{errors}"),
    }
}

/// Reads queue IDs: `ALL`, `-` (stdin, one per line, as postsuper), or a list.
fn ids(args: &IdArgs) -> anyhow::Result<Ids> {
    if args.ids.iter().any(|s| s == "ALL") {
        if args.ids.len() > 1 {
            bail!("ALL cannot be combined with queue IDs");
        }
        return Ok(Ids::All);
    }
    let mut out = Vec::new();
    for a in &args.ids {
        if a == "-" {
            for line in std::io::stdin().lock().lines() {
                let line = line.context("reading queue IDs from stdin")?;
                out.extend(line.split_whitespace().map(str::to_owned));
            }
        } else {
            out.push(a.clone());
        }
    }
    Ok(Ids::Some(out))
}

/// Sends `req` to the daemon; when it is not running, executes queue
/// requests directly against the queue.
async fn client(config_dir: &Path, command: Command) -> anyhow::Result<ExitCode> {
    let config = load_config(config_dir)?;
    let mut json = false;
    let req = match command {
        Command::Queue(q) => match q {
            QueueCommand::List { json: j } => {
                json = j;
                Request::QueueList
            }
            QueueCommand::Show { id } => Request::QueueShow { id },
            QueueCommand::Flush { backend, domain } => Request::QueueFlush { backend, domain },
            QueueCommand::Hold(a) => Request::Hold { ids: ids(&a)? },
            QueueCommand::Release(a) => Request::Release { ids: ids(&a)? },
            QueueCommand::Delete(a) => Request::Delete { ids: ids(&a)? },
            QueueCommand::Requeue(a) => Request::Requeue { ids: ids(&a)? },
            QueueCommand::Summary => Request::Summary,
        },
        Command::Backend(b) => match b {
            BackendCommand::List { json: j } => {
                json = j;
                Request::BackendList
            }
            BackendCommand::Pause { name, duration, local } => Request::BackendPause {
                name,
                local,
                until: duration.map(|d| clock::unix_millis().saturating_add(d.as_millis() as u64)),
            },
            BackendCommand::Resume { name, local } => Request::BackendResume { name, local },
        },
        Command::Reload => Request::Reload,
        Command::Stop => Request::Stop,
        Command::Status => Request::Status,
        Command::Serve(_)
        | Command::Config(_)
        | Command::Top(_)
        | Command::Completions { .. }
        | Command::Man { .. } => {
            unreachable!("handled by cli::run")
        }
    };
    let list = matches!(req, Request::QueueList);
    let path = admin_socket(&config);
    let resp = match socket::call(&path, &req, CALL_TIMEOUT).await {
        Ok(r) => r,
        Err(SocketError::NotRunning(_)) => match direct(&config, req).await? {
            Some(r) => r,
            None => {
                eprintln!("sluice: the mail system is not running");
                return Ok(ExitCode::from(1));
            }
        },
        Err(e) => return Err(e.into()),
    };
    print(&resp, json, list)
}

/// Executes a request without the daemon. `None` for requests that need it.
async fn direct(config: &Arc<Config>, req: Request) -> anyhow::Result<Option<Response>> {
    if matches!(
        req,
        Request::Reload
            | Request::Stop
            | Request::Status
            | Request::BackendPause { .. }
            | Request::BackendResume { .. }
            | Request::Top { .. }
    ) {
        return Ok(None);
    }
    let dir = queue_db_dir(config);
    let read_only = matches!(
        req,
        Request::QueueList | Request::QueueShow { .. } | Request::Summary | Request::BackendList
    );
    if !dir.exists() {
        // No queue was ever created here: for a listing that is an empty
        // queue, for anything else a mistake worth naming.
        if matches!(req, Request::QueueList) {
            return Ok(Some(Response::listing(&[])));
        }
        bail!(
            "queue directory {} does not exist (queue_directory in {})",
            dir.display(),
            config.dir().display()
        );
    }
    eprintln!("sluice: warning: mail system is down -- accessing queue directly");
    become_spool_owner(Path::new(config.string("queue_directory")))?;
    let opened = if read_only {
        sluice_queue::Queue::open_read_only(&dir)
    } else {
        sluice_queue::Queue::open(&dir, &sluice_queue::Options::default(), clock::unix_millis())
    };
    let queue = opened.with_context(|| {
        format!("opening the queue at {} as uid {}", dir.display(), nix::unistd::geteuid())
    })?;
    let cfg = config.clone();
    let handler = Handler {
        queue: queue.clone(),
        config: Arc::new(move || cfg.clone()),
        backends: None,
        top: None,
        control: None,
    };
    let resp = handler.handle(req).await;
    if !read_only {
        queue.close().await?;
    }
    Ok(Some(resp))
}

/// Who the direct fallback runs as while it has the queue open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Identity {
    /// Stay as we are: not root (we cannot switch, and whatever we may
    /// create is ours to create), or root with a spool owned by root.
    Unchanged,
    /// Become the spool's owner before RocksDB creates a file.
    Owner { uid: u32, gid: u32 },
}

/// Decides who opens the queue. `spool_uid`/`spool_gid` own
/// `queue_directory`; `owner_gid` is the primary group of that uid's passwd
/// entry, if it has one (otherwise the directory's group stands in).
fn fallback_identity(euid: u32, spool_uid: u32, spool_gid: u32, owner_gid: Option<u32>) -> Identity {
    if euid != 0 || spool_uid == 0 {
        return Identity::Unchanged;
    }
    Identity::Owner { uid: spool_uid, gid: owner_gid.unwrap_or(spool_gid) }
}

/// When running as root, permanently becomes the owner of `queue_directory`
/// (groups, then gid, then uid: each later step needs the earlier
/// privilege). Supplementary groups are reduced to the owner's primary
/// group, as Postfix's `set_ugid` does. A failure is an error, never a
/// silent carry-on as root.
fn become_spool_owner(queue_directory: &Path) -> anyhow::Result<()> {
    use nix::unistd::{Gid, Uid, User, geteuid, setgid, setgroups, setuid};
    let euid = geteuid();
    if !euid.is_root() {
        return Ok(());
    }
    let meta = std::fs::metadata(queue_directory)
        .with_context(|| format!("reading the owner of {}", queue_directory.display()))?;
    // An owner without a passwd entry (a bare uid) is still an owner.
    let owner = User::from_uid(Uid::from_raw(meta.uid())).ok().flatten();
    match fallback_identity(euid.as_raw(), meta.uid(), meta.gid(), owner.map(|u| u.gid.as_raw())) {
        Identity::Unchanged => Ok(()),
        Identity::Owner { uid, gid } => {
            let gid = Gid::from_raw(gid);
            setgroups(&[gid]).context("setgroups to the queue owner's group")?;
            setgid(gid).with_context(|| format!("setgid {gid}"))?;
            setuid(Uid::from_raw(uid)).with_context(|| format!("setuid {uid}"))?;
            Ok(())
        }
    }
}

fn print(resp: &Response, json: bool, list: bool) -> anyhow::Result<ExitCode> {
    if !resp.ok {
        eprintln!("sluice: fatal: {}", resp.text);
        return Ok(ExitCode::from(1));
    }
    if json && list {
        let msgs: Vec<MessageView> = serde_json::from_value(resp.data.clone())?;
        print!("{}", view::mailq_json(&msgs));
    } else if json {
        println!("{}", serde_json::to_string_pretty(&resp.data)?);
    } else if list || std::io::stdout().is_terminal() || !resp.text.is_empty() {
        print!("{}", resp.text);
        if !resp.text.ends_with('\n') {
            println!();
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_becomes_the_owner_of_a_spool_owned_by_someone_else() {
        assert_eq!(fallback_identity(0, 101, 102, Some(103)), Identity::Owner { uid: 101, gid: 103 });
        // No passwd entry: the directory's group.
        assert_eq!(fallback_identity(0, 65534, 65534, None), Identity::Owner { uid: 65534, gid: 65534 });
    }

    #[test]
    fn root_stays_root_on_a_root_owned_spool_and_others_stay_themselves() {
        assert_eq!(fallback_identity(0, 0, 0, Some(0)), Identity::Unchanged);
        assert_eq!(fallback_identity(0, 0, 101, Some(0)), Identity::Unchanged);
        assert_eq!(fallback_identity(101, 101, 101, Some(101)), Identity::Unchanged);
        assert_eq!(fallback_identity(1000, 101, 101, Some(101)), Identity::Unchanged);
    }
}
