//! Logging setup: Postfix-style lines by default, JSON on request.
//!
//! Each event becomes one line in syslog layout,
//! `Nov 25 07:55:51 mx1 sluice/smtpd[4242]: 4Hx...: client=host[192.0.2.1]`,
//! so tools that read Postfix logs (pflogsumm, fail2ban filters, log
//! shippers) read ours with the syslog name `sluice`. The program part after
//! `sluice/` is the event's Postfix role: an event names it with
//! `target: "smtpd"` (also `cleanup`, `qmgr`, `lmtp`, `smtp`, `error`,
//! `discard`, `bounce`, `postsuper`, `master`); events from a module path
//! get the role of their module. pflogsumm counts by these names: `client=`
//! and `reject:` lines only from `smtpd`, `from=<...>, size=` only from
//! another program than `smtpd` (Postfix's `qmgr`), `to=<...>, status=` from
//! the delivery agents.
//! Under systemd (stderr is the journal) the timestamp and host are left to
//! journald.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// Log line format (`sluice_log_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Postfix-style syslog lines.
    Text,
    /// One JSON object per event.
    Json,
}

/// The Postfix program name for an event's target.
pub fn program(target: &str) -> &str {
    if !target.contains("::") && !target.contains('_') {
        return target;
    }
    let path = target.strip_prefix("sluice::").unwrap_or(target);
    if path.starts_with("smtp") {
        "smtpd"
    } else if path.starts_with("delivery::bounce") {
        "bounce"
    } else if path.starts_with("delivery") || target.starts_with("sluice_queue") {
        "qmgr"
    } else {
        "master"
    }
}

/// Formats events as Postfix-style syslog lines.
#[derive(Debug, Clone)]
pub struct PostfixFormat {
    hostname: String,
    pid: u32,
    /// Print `Mmm dd hh:mm:ss host ` before the program (not under journald).
    syslog_prefix: bool,
    /// The last second's `Mmm dd hh:mm:ss host ` prefix: a busy server logs
    /// several lines per message, and formatting the local time (chrono
    /// parses the strftime pattern and converts the zone each time) showed
    /// in its profile; within one second the prefix is the same text.
    stamp: Arc<Mutex<(u64, String)>>,
}

impl PostfixFormat {
    pub fn new(hostname: impl Into<String>, syslog_prefix: bool) -> Self {
        PostfixFormat {
            hostname: hostname.into(),
            pid: std::process::id(),
            syslog_prefix,
            stamp: Arc::new(Mutex::new((u64::MAX, String::new()))),
        }
    }

    /// Writes `Mmm dd hh:mm:ss host ` for the current second.
    fn write_prefix(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        let now = crate::clock::system_time();
        let secs = now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut stamp = self.stamp.lock().unwrap_or_else(|e| e.into_inner());
        if stamp.0 != secs {
            let local = chrono::DateTime::<chrono::Local>::from(now);
            stamp.1.clear();
            write!(stamp.1, "{} {} ", local.format("%b %e %H:%M:%S"), self.hostname)?;
            stamp.0 = secs;
        }
        w.write_str(&stamp.1)
    }
}

/// Collects the message and the other fields of an event.
#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.rest, ", {}={}", field.name(), value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.rest, ", {}={:?}", field.name(), value);
        }
    }
}

impl<S, N> FormatEvent<S, N> for PostfixFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        if self.syslog_prefix {
            self.write_prefix(&mut w)?;
        }
        write!(w, "sluice/{}[{}]: ", program(meta.target()), self.pid)?;
        match *meta.level() {
            Level::ERROR => w.write_str("error: ")?,
            Level::WARN => w.write_str("warning: ")?,
            _ => {}
        }
        let mut f = Fields::default();
        event.record(&mut f);
        // One event, one line: a peer's multi-line text must not forge
        // lines, and no control character (a client's ESC sequence, a
        // backend's NUL) reaches the log, whatever the event quoted.
        let mut line = f.message;
        line.push_str(&f.rest);
        if line.contains(['\r', '\n']) {
            line = line.replace(['\r', '\n'], " ");
        }
        writeln!(w, "{}", crate::reply::printable(&line, crate::reply::IN_TEXT))
    }
}

/// An append-mode log file that can be reopened (after logrotate moved it).
///
/// Lines are written without a lock: each event is formatted whole and
/// handed to one `write(2)` on a file opened with `O_APPEND`, which the
/// kernel appends atomically (the inode's lock is held for the whole
/// write), so lines from different threads never interleave. A mutex of
/// ours around it only added a futex sleep and wake-up for a thread that
/// logs while another is in `write(2)` (the queue's writer thread logs
/// `removed` while the sessions log theirs). The current file is swapped
/// atomically on reopen; a line being written to the old one lands there.
#[derive(Debug, Clone)]
pub struct LogFile {
    path: PathBuf,
    file: Arc<ArcSwap<File>>,
}

impl LogFile {
    pub fn open(path: &Path) -> std::io::Result<LogFile> {
        let file = append(path)?;
        Ok(LogFile { path: path.to_owned(), file: Arc::new(ArcSwap::from_pointee(file)) })
    }

    /// Reopens the file by name (on SIGHUP), keeping the old one on error.
    pub fn reopen(&self) -> std::io::Result<()> {
        let f = append(&self.path)?;
        self.file.store(Arc::new(f));
        Ok(())
    }
}

fn append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// A writer handing out the current file (for one event's line).
#[derive(Debug)]
pub struct LogFileWriter(arc_swap::Guard<Arc<File>>);

impl std::io::Write for LogFileWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // The whole line in one call (see `LogFile`): `write_all` only
        // loops on a short write, which a regular file makes only when its
        // disk is full.
        let mut file: &File = &self.0;
        file.write_all(buf).map(|_| buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogFile {
    type Writer = LogFileWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LogFileWriter(self.file.load())
    }
}

/// Default filter: sluice at info, chatty libraries at warn; `SLUICE_LOG`
/// overrides with `EnvFilter` syntax.
fn filter() -> EnvFilter {
    EnvFilter::try_from_env("SLUICE_LOG").unwrap_or_else(|_| {
        EnvFilter::new("info,hickory_proto=warn,hickory_resolver=warn,rustls=warn,hyper=warn,rocksdb=warn")
    })
}

/// This host's name for log lines (`myhostname` is used when configured).
pub fn system_hostname() -> String {
    nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "localhost".into())
}

/// Installs the global subscriber. `file`: log there instead of stderr.
/// Returns the file handle so SIGHUP can reopen it.
pub fn init(format: Format, hostname: &str, file: Option<&Path>) -> std::io::Result<Option<LogFile>> {
    let journald = file.is_none() && std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt().with_env_filter(filter());
    let logfile = file.map(LogFile::open).transpose()?;
    let result = match (format, &logfile) {
        (Format::Text, Some(f)) => {
            builder.event_format(PostfixFormat::new(hostname, true)).with_writer(f.clone()).try_init()
        }
        (Format::Text, None) => builder
            .event_format(PostfixFormat::new(hostname, !journald))
            .with_writer(std::io::stderr)
            .try_init(),
        (Format::Json, Some(f)) => builder.json().with_current_span(false).with_writer(f.clone()).try_init(),
        (Format::Json, None) => {
            builder.json().with_current_span(false).with_writer(std::io::stderr).try_init()
        }
    };
    if let Err(e) = result {
        // Already initialised (tests starting the server twice): keep it.
        let _ = writeln!(std::io::stderr(), "sluice: logging already initialised: {e}");
    }
    Ok(logfile)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_targets_name_the_program() {
        for p in ["lmtp", "smtp", "smtpd", "cleanup", "qmgr", "bounce", "error", "discard", "postsuper"] {
            assert_eq!(program(p), p);
        }
    }

    #[test]
    fn module_paths_map_to_postfix_roles() {
        assert_eq!(program("sluice::smtp::session"), "smtpd");
        assert_eq!(program("sluice::delivery::scheduler"), "qmgr");
        assert_eq!(program("sluice::delivery::bounce"), "bounce");
        assert_eq!(program("sluice_queue::recover"), "qmgr");
        assert_eq!(program("sluice::server"), "master");
    }

    #[test]
    fn lines_follow_syslog_layout_and_never_span_lines() {
        use std::sync::Mutex as M;
        #[derive(Clone, Default)]
        struct Buf(Arc<M<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let out = buf.clone();
        let sub = tracing_subscriber::fmt()
            .event_format(PostfixFormat::new("mx1", true))
            .with_writer(move || buf.clone())
            .finish();
        tracing::subscriber::with_default(sub, || {
            tracing::info!(target: "lmtp", "4Hx0000000: to=<a@b>, status=sent (250 ok\r\nforged line)");
            tracing::warn!(target: "smtpd", "disk low");
            tracing::info!(target: "smtpd", "reject: from=<\"\u{1b}]0;x\u{7}\u{0}\"@a.b>");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        let pid = std::process::id();
        // `Nov 25 07:55:51 mx1 sluice/lmtp[PID]: ...`
        assert_eq!(
            &lines[0][15..],
            format!(" mx1 sluice/lmtp[{pid}]: 4Hx0000000: to=<a@b>, status=sent (250 ok  forged line)")
        );
        assert!(lines[1].ends_with(&format!("sluice/smtpd[{pid}]: warning: disk low")));
        assert!(lines[2].ends_with(r#"reject: from=<"?]0;x??"@a.b>"#), "{}", lines[2]);
        assert!(!text.bytes().any(|b| b < b' ' && b != b'\n'), "{text:?}");
    }

    /// Threads logging at once through one `LogFile` (no lock of ours
    /// around the write) leave whole lines, none lost or interleaved; a
    /// reopen after the file was moved away sends later lines to a new
    /// file by the old name.
    #[test]
    fn log_file_keeps_lines_whole_across_threads_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("maillog");
        let file = LogFile::open(&path).unwrap();
        let sub = tracing_subscriber::fmt()
            .event_format(PostfixFormat::new("mx1", false))
            .with_writer(file.clone())
            .finish();
        let dispatch = tracing::Dispatch::new(sub);
        // Lines longer than a page, so a torn write would show.
        let filler = "x".repeat(5000);
        std::thread::scope(|s| {
            for t in 0..8 {
                let (dispatch, filler) = (dispatch.clone(), &filler);
                s.spawn(move || {
                    tracing::dispatcher::with_default(&dispatch, || {
                        for i in 0..200 {
                            tracing::info!(target: "smtpd", "t{t} i{i} {filler} end");
                        }
                    })
                });
            }
        });
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 8 * 200);
        let mut seen = std::collections::HashSet::new();
        for l in &lines {
            let body = l.split_once("]: ").expect("program part").1;
            let (key, rest) = body.split_once(' ').expect("key");
            let (idx, rest) = rest.split_once(' ').expect("index");
            assert_eq!(rest, format!("{filler} end"), "a torn line");
            assert!(seen.insert(format!("{key} {idx}")), "line twice: {key} {idx}");
        }

        let moved = dir.path().join("maillog.1");
        std::fs::rename(&path, &moved).unwrap();
        tracing::dispatcher::with_default(&dispatch, || tracing::info!(target: "smtpd", "before reopen"));
        file.reopen().unwrap();
        tracing::dispatcher::with_default(&dispatch, || tracing::info!(target: "smtpd", "after reopen"));
        let old = std::fs::read_to_string(&moved).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert!(
            old.ends_with("before reopen\n") && !old.contains("after reopen"),
            "{}",
            &old[old.len() - 100..]
        );
        assert_eq!(new.lines().count(), 1, "{new}");
        assert!(new.ends_with("after reopen\n"), "{new}");
    }
}
