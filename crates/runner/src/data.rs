//! CIFAR-10 in its official binary layout.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Bytes per record: one label byte, then 1024 red, 1024 green and 1024 blue pixel bytes.
pub const RECORD_BYTES: u64 = 1 + 3 * 32 * 32;
/// Records per file.
pub const RECORDS_PER_FILE: u64 = 10_000;
/// The five training files and the test file, in order.
pub const FILES: [&str; 6] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
    "test_batch.bin",
];

/// The data folder: `--data-dir`, else `$CIFAR10_DIR`, else `data/cifar-10-batches-bin`.
pub fn resolve_dir(cli: Option<&Path>) -> PathBuf {
    if let Some(dir) = cli {
        return dir.to_path_buf();
    }
    match std::env::var_os("CIFAR10_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from("data/cifar-10-batches-bin"),
    }
}

/// Checks that the folder holds the six files with the sizes of the official layout.
pub fn check_dir(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        bail!("no folder {}", dir.display());
    }
    for name in FILES {
        let path = dir.join(name);
        let len = std::fs::metadata(&path)
            .with_context(|| format!("missing {}", path.display()))?
            .len();
        if len != RECORD_BYTES * RECORDS_PER_FILE {
            bail!(
                "{} has {len} bytes; a CIFAR-10 batch file has {}",
                path.display(),
                RECORD_BYTES * RECORDS_PER_FILE
            );
        }
    }
    Ok(())
}
