//! Loading main.cf and master.cf from text in the configuration tests.

use std::path::Path;

use sluice::config::{Config, ConfigErrors, Loaded};

/// A configuration that must load.
pub fn load(dir: &Path, main: &str, master: &str) -> Loaded {
    match Config::from_texts(dir, main, master) {
        Ok(l) => l,
        Err(e) => panic!("config should load:\n{e}"),
    }
}

/// The errors of a configuration that must be refused.
pub fn load_err(dir: &Path, main: &str, master: &str) -> Vec<String> {
    match Config::from_texts(dir, main, master) {
        Ok(_) => panic!("config should be refused"),
        Err(ConfigErrors(d)) => d.iter().map(|d| d.to_string()).collect(),
    }
}

pub fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}
