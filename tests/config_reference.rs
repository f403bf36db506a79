//! conf/README.md is the parameter reference generated from the code's own
//! table (src/config/params.rs), so it cannot drift: this test fails when
//! the file is stale. Rewrite it with
//! `SLUICE_WRITE_REFERENCE=1 cargo test --test config_reference`.

use std::path::Path;

#[test]
fn conf_readme_is_generated_from_the_parameter_table() {
    let want = sluice::config::params::reference_markdown();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/README.md");
    if std::env::var_os("SLUICE_WRITE_REFERENCE").is_some() {
        std::fs::write(&path, &want).expect("write conf/README.md");
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    if have != want {
        let line = have.lines().zip(want.lines()).position(|(a, b)| a != b).map(|i| i + 1);
        panic!(
            "conf/README.md is stale (first difference at line {line:?}); regenerate it with\n  SLUICE_WRITE_REFERENCE=1 cargo test --test config_reference"
        );
    }
}

#[test]
fn every_supported_parameter_is_in_the_reference() {
    let text = sluice::config::params::reference_markdown();
    for p in sluice::config::params::PARAMS {
        assert!(text.contains(&format!("| `{}` |", p.name)), "{} missing", p.name);
    }
}
