//! The front door: the `sluice` command line. Parses nothing itself
//! (`args.rs` holds the clap definitions); dispatches each subcommand to
//! its module: `serve` starts the daemon (`serve.rs`), `config` prints and
//! checks the configuration (`postconf.rs`) and queries its tables
//! (`query.rs`, postmap -q), the queue, backend and daemon
//! commands go through the admin API (`request.rs`), `top` is the live
//! view (`top.rs`), and `completions` and
//! `man` are generated here from the same definitions.
//!
//! The only place `anyhow` is used: below the command line every error is
//! a typed one that names what failed; here they become one line on
//! stderr and an exit status. Nothing in the crate imports this module
//! (only `main.rs` does).

pub mod args;
pub mod postconf;
mod query;
mod request;
mod serve;
mod top;

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

pub use args::Cli;
use args::Command;

/// Runs the parsed command line; the binary's exit status.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve::run(&cli.config_dir, args),
        Command::Config(args) => postconf::run(&cli.config_dir, &args),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut args::command(), "sluice", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Top(args) => top::run(&cli.config_dir, &args),
        Command::Man { dir } => {
            write_man_pages(&dir)?;
            Ok(ExitCode::SUCCESS)
        }
        other => request::run(&cli.config_dir, other),
    }
}

/// `sluice man DIR`: sluice.8 plus one page per subcommand (sluice-queue.8 ...).
fn write_man_pages(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let cmd = args::command();
    let render = |cmd: clap::Command, name: String| -> anyhow::Result<()> {
        let man = clap_mangen::Man::new(cmd.clone().name(name.clone())).section("8");
        let mut buf = Vec::new();
        man.render(&mut buf)?;
        let path = dir.join(format!("{name}.8"));
        std::fs::write(&path, buf).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    };
    render(cmd.clone(), "sluice".into())?;
    for sub in cmd.get_subcommands() {
        if matches!(sub.get_name(), "completions" | "man" | "help") {
            continue;
        }
        render(sub.clone(), format!("sluice-{}", sub.get_name()))?;
    }
    Ok(())
}
