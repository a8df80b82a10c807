//! The runner's build script: libtorch's run-time search path (shared with `models`), and the
//! source revision the binary is built from, baked in as `RUNNER_GIT_REVISION`.
//!
//! The revision is read here, at build time, and not by the binary when it runs: a binary
//! kept while its source tree moves on (a long training in the background) must record the
//! code it was built from, not the tree's state of the moment.

use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "../models/build/libtorch.rs"]
mod libtorch;

fn main() {
    libtorch::link_libtorch();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    println!("cargo:rustc-env=RUNNER_GIT_REVISION={}", revision(&root));
}

/// `rev-parse --short=12 HEAD`, with `-dirty` when the code the binary is built from (the
/// crates and the workspace's manifest and lock file) differs from that commit; `unknown`
/// outside a git checkout.
fn revision(root: &Path) -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let code = ["crates", "Cargo.toml", "Cargo.lock"];
    for path in code {
        println!("cargo:rerun-if-changed={}", root.join(path).display());
    }
    let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]).map(PathBuf::from) else {
        return "unknown".into();
    };
    // A commit moves HEAD or the branch it names; staging rewrites the index.
    for file in ["HEAD", "index", "packed-refs"] {
        println!("cargo:rerun-if-changed={}", git_dir.join(file).display());
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        println!("cargo:rerun-if-changed={}", git_dir.join(branch).display());
    }
    let Some(rev) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return "unknown".into();
    };
    let mut status = vec!["status", "--porcelain", "--untracked-files=no", "--"];
    status.extend(code);
    match git(&status) {
        Some(changes) if !changes.is_empty() => format!("{rev}-dirty"),
        _ => rev,
    }
}
