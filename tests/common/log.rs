//! Capturing the log lines a test's in-process server writes, in
//! Postfix's format.

use std::sync::{Arc, Mutex};

use sluice::server::admin::log::PostfixFormat;

/// Log lines written by the server, in Postfix's format. The server runs on
/// the test's own thread (tokio's current-thread test runtime), so a
/// thread-local subscriber sees exactly this test's lines.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Log {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    pub fn capture() -> (Log, tracing::subscriber::DefaultGuard) {
        let log = Log::default();
        let writer = log.clone();
        let sub = tracing_subscriber::fmt()
            .event_format(PostfixFormat::new("mx.test", false))
            .with_writer(move || writer.clone())
            .with_max_level(tracing::Level::INFO)
            .finish();
        let guard = tracing::subscriber::set_default(sub);
        (log, guard)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
    }
}
