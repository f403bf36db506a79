//! Capturing the log lines a test's in-process server writes, in
//! Postfix's format.
//!
//! One subscriber is installed for the whole test binary, and it writes to
//! the buffer of whichever test runs on the current thread. A per-test
//! `set_default` subscriber would race with tracing's global callsite
//! interest cache: a callsite first hit by a parallel test without a
//! subscriber could be cached as "never" and its lines lost.

use std::cell::RefCell;
use std::sync::{Arc, Mutex, Once};

use sluice::server::admin::log::PostfixFormat;

/// Log lines written by the server, in Postfix's format. The server runs on
/// the test's own thread (tokio's current-thread test runtime), so the
/// thread's buffer sees exactly this test's lines.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<u8>>>);

thread_local! {
    static CURRENT: RefCell<Option<Log>> = const { RefCell::new(None) };
}

/// Writes to the current thread's capture, if any.
struct ThreadWriter;

impl std::io::Write for ThreadWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        CURRENT.with(|c| {
            if let Some(log) = c.borrow().as_ref() {
                log.0.lock().expect("log buffer").extend_from_slice(b);
            }
        });
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A `Log` is also a writer of its own, for a test binary that installs
/// its own formatter (smtp_log_lines, which runs alone in its process).
impl std::io::Write for Log {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Ends the capture on this thread when dropped.
pub struct Capture(());

impl Drop for Capture {
    fn drop(&mut self) {
        CURRENT.with(|c| c.borrow_mut().take());
    }
}

impl Log {
    pub fn capture() -> (Log, Capture) {
        static INSTALL: Once = Once::new();
        INSTALL.call_once(|| {
            let sub = tracing_subscriber::fmt()
                .event_format(PostfixFormat::new("mx.test", false))
                .with_writer(|| ThreadWriter)
                .with_max_level(tracing::Level::INFO)
                .finish();
            tracing::subscriber::set_global_default(sub).expect("one global subscriber per test binary");
        });
        let log = Log::default();
        CURRENT.with(|c| *c.borrow_mut() = Some(log.clone()));
        (log, Capture(()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
    }
}
