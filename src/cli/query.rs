//! `sluice config query TABLE KEY` (or `-` for keys on stdin): Postfix's
//! `postmap -q`, for any table sluice reads, directory tables included.
//!
//! Owns the command's output and exit status only: the table is opened as
//! the configuration in `-c DIR` would open it (relative names under that
//! directory, the `sluice_table_*` settings of its main.cf) and asked for
//! the key exactly as given, with no address-key expansion. One key: its
//! result on stdout. Keys from stdin: `key<TAB>result` for each found.
//! Exit status 0 when something was found, 1 when nothing was, 2 when a
//! lookup failed or the table cannot be opened.
//!
//! `sluice config query virtual_alias_maps ADDRESS` (the parameter's name
//! in place of a table) shows what RCPT would store for ADDRESS: its whole
//! virtual alias expansion (recursion, catch-all, extensions, limits), the
//! final addresses comma-separated as postmap prints a value.

use std::io::{BufRead, Write};
use std::path::Path;

use crate::config::Config;

/// Runs the query; `names` are the words after `query`.
pub fn run_to(
    config_dir: &Path,
    names: &[String],
    input: &mut dyn BufRead,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<u8> {
    let [table, key] = names else {
        writeln!(err, "usage: sluice config query TYPE:NAME KEY (or - to read keys from stdin)")?;
        return Ok(2);
    };
    // A configuration with errors elsewhere still names the table's
    // directory and settings; its own defaults do when main.cf is broken.
    let config = match Config::load(config_dir) {
        Ok(l) => l.config,
        Err(e) => {
            for d in &e.0 {
                writeln!(err, "sluice: warning: {d}")?;
            }
            Config::from_texts(config_dir, "", "").map_err(|e| anyhow::anyhow!("{e}"))?.config
        }
    };
    if table == "virtual_alias_maps" && key != "-" {
        return expand_alias(&config, key, out, err);
    }
    let t = match config.open_table(table) {
        Ok(t) => t,
        Err(e) => {
            for d in &e.0 {
                writeln!(err, "sluice: error: {d}")?;
            }
            return Ok(2);
        }
    };
    let keys: Vec<String> =
        if key == "-" { input.lines().collect::<Result<_, _>>()? } else { vec![key.clone()] };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut found = false;
    for k in &keys {
        match rt.block_on(t.query(k)) {
            Ok(Some(v)) if key == "-" => {
                found = true;
                writeln!(out, "{k}\t{v}")?;
            }
            Ok(Some(v)) => {
                found = true;
                writeln!(out, "{v}")?;
            }
            Ok(None) => {}
            Err(e) => {
                writeln!(err, "sluice: error: {table}: lookup error for \"{k}\": {}", e.message)?;
                return Ok(2);
            }
        }
    }
    Ok(if found { 0 } else { 1 })
}

/// The virtual alias expansion of `address` under `config`.
fn expand_alias(
    config: &Config,
    address: &str,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<u8> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut known = crate::config::Known::default();
    match rt.block_on(config.expand_virtual_alias(address, &mut known)) {
        Ok(Some(targets)) => {
            writeln!(out, "{}", targets.join(","))?;
            Ok(0)
        }
        Ok(None) => Ok(1),
        Err(e) => {
            writeln!(err, "sluice: error: virtual_alias_maps: {address}: {e}")?;
            Ok(2)
        }
    }
}
