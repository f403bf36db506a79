//! The command line: one binary, Postfix's words, `--help` worth reading.
//!
//! Definitions only; [`super::run`] dispatches. Completions and man
//! pages are generated from these same definitions (`sluice completions`,
//! `sluice man`), so they cannot drift from the code.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    about = "Inbound mail transfer agent for MX hosts",
    long_about = "sluice accepts internet mail over SMTP, keeps every accepted message in a durable \
                  queue, and delivers it to your mailbox servers over LMTP or SMTP through a gate \
                  per backend (rate limit, adaptive concurrency, circuit breaker).\n\n\
                  Configuration lives in main.cf and master.cf, with Postfix's syntax and parameter \
                  names. Commands other than `serve` talk to the running daemon over its admin \
                  socket; queue commands fall back to opening the queue directly when the daemon \
                  is not running.",
    after_help = "Invoked as `mailq`, sluice behaves as `sluice queue list`."
)]
pub struct Cli {
    /// Configuration directory holding main.cf and master.cf (like `postfix -c`).
    #[arg(short = 'c', long = "config-dir", global = true, env = "SLUICE_CONFIG_DIR", default_value = crate::config::DEFAULT_DIR)]
    pub config_dir: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground (for systemd): listeners, queue, delivery.
    Serve(ServeArgs),
    /// Inspect and manage the mail queue (mailq, postqueue, postsuper).
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Inspect and steer delivery backends (mailbox servers).
    #[command(subcommand)]
    Backend(BackendCommand),
    /// Show or check the configuration (like postconf).
    Config(super::postconf::ConfigArgs),
    /// Reload main.cf, master.cf and lookup tables in the running daemon (SIGHUP).
    Reload,
    /// Stop the running daemon gracefully (SIGTERM).
    Stop,
    /// Show whether the daemon runs, its queue at a glance, and which
    /// backends hold mail back (breaker open or paused) and why.
    Status,
    /// Live view of the daemon during an incident: backends, queue shape, rates.
    ///
    /// Keys: ↑/↓ select a backend, p pause it, r resume it, f flush its
    /// mail, F flush all mail (each asks y/n first), q quit. When stdout is
    /// not a terminal (or with --once) prints one plain-text frame.
    Top(TopArgs),
    /// Print a shell completion script to stdout.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Write man pages (sluice.8 and one per subcommand) into DIR.
    Man {
        /// Output directory.
        dir: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Append log lines to this file instead of stderr (overrides `maillog_file`).
    #[arg(long)]
    pub log_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct TopArgs {
    /// Print one plain-text frame and exit (the default when stdout is not a terminal).
    #[arg(long)]
    pub once: bool,
    /// Time between refreshes (`1s`, `500ms`).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: std::time::Duration,
    /// Width of the plain-text frame in columns.
    #[arg(long, default_value_t = 80)]
    pub width: u16,
}

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// List queued mail in mailq / `postqueue -p` layout.
    List {
        /// One JSON object per message, as `postqueue -j`.
        #[arg(long)]
        json: bool,
    },
    /// Show one message: envelope, per-recipient state, last reply, next attempt, headers.
    Show {
        /// Queue ID.
        id: String,
    },
    /// Make deferred mail due now (`postqueue -f`), optionally only for one backend or domain.
    Flush {
        /// Only mail routed to this backend (see `sluice backend list`).
        #[arg(long)]
        backend: Option<String>,
        /// Only mail with a recipient in this domain.
        #[arg(long)]
        domain: Option<String>,
    },
    /// Put messages on hold (`postsuper -h`): they stay queued but are not delivered.
    Hold(IdArgs),
    /// Release held messages (`postsuper -H`); they become due now.
    Release(IdArgs),
    /// Delete messages (`postsuper -d`). Deleted mail is gone: no bounce is sent.
    Delete(IdArgs),
    /// Make messages due now (`postsuper -r`-like; routing is decided again).
    Requeue(IdArgs),
    /// Counts by backend and by recipient domain, per age bucket (like qshape).
    Summary,
}

/// Queue IDs, `ALL`, or `-` to read IDs from standard input (one per line), as postsuper.
#[derive(Debug, Args)]
pub struct IdArgs {
    /// Queue IDs, `ALL` for every message, or `-` to read IDs from stdin.
    #[arg(required = true)]
    pub ids: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum BackendCommand {
    /// Each backend with breaker state, concurrency (current/limit), rate, latency and last error.
    List {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Hold a backend's mail in the queue without touching the queue (a sick mailbox server).
    Pause {
        /// Backend name as `sluice backend list` shows it.
        name: String,
        /// Resume by itself after this long (`30m`, `2h`); default: until `resume`.
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        duration: Option<std::time::Duration>,
        /// In fleet mode, pause this host only (default: the whole fleet).
        #[arg(long)]
        local: bool,
    },
    /// Resume delivery to a paused backend.
    Resume {
        /// Backend name.
        name: String,
        /// In fleet mode, end this host's own pause only (`pause --local`).
        #[arg(long)]
        local: bool,
    },
}

/// Builds the clap command (for completions and man pages).
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn pause_parses_a_human_duration() {
        let cli = Cli::try_parse_from(["sluice", "backend", "pause", "mbx1", "--for", "30m"]).unwrap();
        match cli.command {
            Command::Backend(BackendCommand::Pause { name, duration, local }) => {
                assert_eq!(name, "mbx1");
                assert_eq!(duration, Some(std::time::Duration::from_secs(1800)));
                assert!(!local);
            }
            other => panic!("unexpected {other:?}"),
        }
        let cli = Cli::try_parse_from(["sluice", "backend", "resume", "mbx1", "--local"]).unwrap();
        assert!(matches!(cli.command, Command::Backend(BackendCommand::Resume { local: true, .. })));
    }

    #[test]
    fn config_dir_is_global() {
        let cli = Cli::try_parse_from(["sluice", "queue", "list", "-c", "/tmp/x"]).unwrap();
        assert_eq!(cli.config_dir, PathBuf::from("/tmp/x"));
    }
}
