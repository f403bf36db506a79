//! `sluice config` (placeholder until the configuration module lands).

/// Arguments of `sluice config`.
#[derive(Debug, clap::Args)]
pub struct ConfigArgs {}

/// Placeholder.
pub fn run(_dir: &std::path::Path, _args: &ConfigArgs) -> anyhow::Result<std::process::ExitCode> {
    Ok(std::process::ExitCode::SUCCESS)
}
