//! Wiring: opens the queue, starts listeners, the scheduler and the admin
//! endpoints, and owns the order of shutdown.

use std::path::Path;
use std::process::ExitCode;

/// `sluice serve`.
pub fn main(_config_dir: &Path, _args: crate::admin::cli::ServeArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not yet wired")
}
