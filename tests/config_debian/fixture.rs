//! Copies the Debian-style MX relay configuration of this directory into a
//! temporary directory (tables are indexed there by postmap when it is
//! installed, as an administrator would have done), with the TLS files
//! main.cf names.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub const FILES: &[&str] =
    &["main.cf", "master.cf", "transport", "relay_domains", "relay_recipients", "recipient_access"];
pub const HASH_TABLES: &[&str] = &["transport", "relay_domains", "relay_recipients", "recipient_access"];

pub fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/config_debian")
}

/// The configuration directory, unedited, in a temp dir.
pub fn debian_mx() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for f in FILES {
        std::fs::copy(source_dir().join(f), dir.path().join(f)).expect("copy fixture");
    }
    let tls = dir.path().join("tls");
    std::fs::create_dir(&tls).expect("tls dir");
    // Only readability is checked when the configuration loads.
    std::fs::write(tls.join("mx1.example.com.pem"), "certificate placeholder\n").expect("cert");
    std::fs::write(tls.join("mx1.example.com.key"), "key placeholder\n").expect("key");
    dir
}

/// Full path of a Postfix tool, if installed.
pub fn postfix_tool(name: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/sbin"].iter().map(|d| Path::new(d).join(name)).find(|p| p.exists())
}
