//! The `sluice` binary: parses the command line and hands over to
//! `sluice::cli::run`. Invoked as `mailq`, it lists the queue.

use std::process::ExitCode;

use clap::Parser;
use sluice::cli::Cli;

fn main() -> ExitCode {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let invoked_as = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name().map(|f| f.to_string_lossy().into_owned()))
        .unwrap_or_default();
    if invoked_as == "mailq" {
        // `mailq [-c DIR]` behaves as `sluice queue list`.
        args.splice(1..1, ["queue".into(), "list".into()]);
    }
    let cli = Cli::parse_from(args);
    match sluice::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sluice: fatal: {e:#}");
            ExitCode::from(1)
        }
    }
}
