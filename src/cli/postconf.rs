//! `sluice config`: print parameters as `postconf` does, and `check` the
//! whole configuration.
//!
//! Owns the command's arguments and output only; [`super::run`] wires
//! `sluice config` and `-c DIR` to [`run`]. Output follows postconf:
//! `name = value` (white space runs collapsed), `name =` for an empty
//! value, warnings on stderr.
//!
//! - `sluice config` (or `-n`): parameters set in main.cf, as written.
//! - `sluice config -d [NAME...]`: defaults.
//! - `sluice config NAME...`: single values; `-H` prints values only
//!   (postconf's `-h`, which clap reserves for help), `-x` expands `$name`.
//! - `sluice config check [--strict]`: loads everything (tables included),
//!   prints warnings and errors, exits 1 on errors, and with `--strict` also
//!   on warnings (unknown and unsupported parameter names).
//! - `sluice config query TYPE:NAME KEY`: a table lookup, as `postmap -q`
//!   (`query.rs`).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use crate::config::{Config, normalize_space, params};

/// Arguments of `sluice config`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigArgs {
    /// Show default values instead of configured ones (postconf -d).
    #[arg(short = 'd', long = "defaults")]
    pub defaults: bool,
    /// Show only parameters set in main.cf (postconf -n); what is shown
    /// without NAMEs anyway.
    #[arg(short = 'n', long = "non-default")]
    pub non_default: bool,
    /// Print values only, without "name = " (postconf -h).
    #[arg(short = 'H', long = "value-only")]
    pub value_only: bool,
    /// Expand $name references in the values printed (postconf -x).
    #[arg(short = 'x', long = "expand")]
    pub expand: bool,
    /// With `check`: fail on warnings too (unknown or unsupported parameters,
    /// unused master.cf services).
    #[arg(long)]
    pub strict: bool,
    /// Parameter names to print, `check` to validate the configuration, or
    /// `query TYPE:NAME KEY` to look KEY up in a table (KEY `-`: keys on
    /// stdin), as postmap -q.
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
}

/// Runs `sluice config` on `config_dir`, printing to stdout and stderr.
pub fn run(config_dir: &Path, args: &ConfigArgs) -> anyhow::Result<ExitCode> {
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let code = run_to(config_dir, args, &mut stdout.lock(), &mut stderr.lock())?;
    Ok(ExitCode::from(code))
}

/// [`run`] with explicit output streams; returns the exit status.
pub fn run_to(
    config_dir: &Path,
    args: &ConfigArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<u8> {
    if args.names.first().map(String::as_str) == Some("check") {
        if args.names.len() > 1 {
            writeln!(err, "sluice config: check takes no parameter names")?;
            return Ok(2);
        }
        return check(config_dir, args.strict, out, err);
    }
    if args.names.first().map(String::as_str) == Some("query") {
        let stdin = std::io::stdin();
        return super::query::run_to(config_dir, &args.names[1..], &mut stdin.lock(), out, err);
    }
    let config = if args.defaults {
        // The defaults are the configuration of empty files: computed
        // defaults (host name, mynetworks) come out as this host computes them.
        Config::from_texts(config_dir, "", "")
    } else {
        Config::load(config_dir)
    };
    let config = match config {
        Ok(l) => l.config,
        Err(e) => {
            for d in &e.0 {
                writeln!(err, "sluice: error: {d}")?;
            }
            return Ok(1);
        }
    };
    let value = |name: &str| {
        let v = if args.expand { config.string(name) } else { config.raw(name) };
        normalize_space(v)
    };
    let print = |out: &mut dyn Write, name: &str, v: &str| -> std::io::Result<()> {
        if args.value_only {
            writeln!(out, "{v}")
        } else if v.is_empty() {
            writeln!(out, "{name} =")
        } else {
            writeln!(out, "{name} = {v}")
        }
    };
    if args.names.is_empty() {
        if args.defaults {
            for (name, _) in config.all_raw() {
                print(out, &name, &value(&name))?;
            }
        } else {
            for (name, raw) in config.non_default() {
                let v =
                    if args.expand { normalize_space(config.string(&name)) } else { normalize_space(&raw) };
                print(out, &name, &v)?;
            }
        }
        return Ok(0);
    }
    for name in &args.names {
        if config.knows(name) {
            print(out, name, &value(name))?;
        } else if let Some(reason) = params::unsupported_reason(name) {
            writeln!(err, "sluice: warning: {name}: not implemented by sluice: {reason}")?;
        } else {
            writeln!(err, "sluice: warning: {name}: unknown parameter")?;
        }
    }
    Ok(0)
}

fn check(dir: &Path, strict: bool, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<u8> {
    match Config::load(dir) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                writeln!(err, "sluice: {}: {w}", if strict { "error" } else { "warning" })?;
            }
            if strict && !loaded.warnings.is_empty() {
                writeln!(
                    err,
                    "sluice: {}: {} problem(s); --strict treats warnings as errors",
                    dir.display(),
                    loaded.warnings.len()
                )?;
                return Ok(1);
            }
            let cfg = &loaded.config;
            writeln!(
                out,
                "{}: configuration ok: {} listener(s), {} transport(s), {} warning(s)",
                dir.display(),
                cfg.smtpd_services().len(),
                cfg.transports().len(),
                loaded.warnings.len()
            )?;
            Ok(0)
        }
        Err(e) => {
            for d in &e.0 {
                writeln!(err, "sluice: error: {d}")?;
            }
            writeln!(err, "sluice: {}: {} error(s); the configuration is refused", dir.display(), e.0.len())?;
            Ok(1)
        }
    }
}
