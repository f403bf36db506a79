//! The `sluice` binary: parses the command line and hands over to `admin`.

fn main() -> anyhow::Result<()> {
    Ok(())
}
