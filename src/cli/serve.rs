//! `sluice serve`: loads the configuration, sets up logging (before any
//! thread starts, so every line has its format), builds the runtime and
//! runs the daemon (`server::daemon`) on it. A configuration with errors
//! is reported line by line and exits 1 before anything is opened.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use tracing::warn;

use super::args::ServeArgs;
use crate::config::Config;
use crate::server;
use crate::server::admin::log as alog;

/// `sluice serve`: runs the daemon until SIGTERM or `sluice stop`.
pub fn run(config_dir: &Path, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let loaded = match Config::load(config_dir) {
        Ok(l) => l,
        Err(errors) => {
            for d in &errors.0 {
                eprintln!("sluice: fatal: {d}");
            }
            return Ok(ExitCode::from(1));
        }
    };
    let config = &loaded.config;
    let format = match config.string("sluice_log_format") {
        "json" => alog::Format::Json,
        _ => alog::Format::Text,
    };
    let file = args.log_file.clone().or_else(|| {
        let f = config.string("maillog_file");
        (!f.is_empty()).then(|| PathBuf::from(f))
    });
    let logfile = alog::init(format, config.string("myhostname"), file.as_deref()).with_context(|| {
        format!("opening log file {}", file.as_deref().unwrap_or(Path::new("")).display())
    })?;
    for w in &loaded.warnings {
        warn!(target: "master", "{w}");
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("sluice").build()?;
    let code = rt.block_on(server::daemon(config_dir.to_owned(), loaded, logfile));
    // Blocking reads still running (none should be) must not hold up exit.
    rt.shutdown_timeout(Duration::from_secs(2));
    Ok(code?)
}
