//! libtorch for the crates that link it: present, version 2.11.0, and its `lib/` folder as
//! the run-time search path. Shared by the build scripts of `models` and `runner`.
//!
//! tch's build script (torch-sys) reports the libtorch `lib/` folder it linked against; we
//! record it as the run-time search path (RUNPATH, so `LD_LIBRARY_PATH` still overrides it,
//! as on a GPU machine whose own PyTorch provides the libraries).

use std::path::{Path, PathBuf};

const SETUP_HINT: &str = "run `just setup` to provision libtorch 2.11.0 into .libtorch/ \
                          (or export LIBTORCH=/path/to/libtorch-2.11.0)";

/// Checks libtorch (present, version 2.11.0) and records its `lib/` folder as the run-time
/// search path; returns that folder.
pub fn link_libtorch() -> PathBuf {
    let Some(lib_dir) = std::env::var_os("DEP_TCH_LIBTORCH_LIB") else {
        panic!("torch-sys did not report where libtorch is; {SETUP_HINT}");
    };
    let lib_dir = Path::new(&lib_dir);
    let cpu_lib = lib_dir.join("libtorch_cpu.so");
    // Rebuild (and re-check) when the library goes away or is replaced.
    println!("cargo:rerun-if-changed={}", cpu_lib.display());
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if !cpu_lib.exists() {
        panic!(
            "libtorch is missing: no {}; {SETUP_HINT}",
            cpu_lib.display()
        );
    }
    let version_file = lib_dir.join("..").join("build-version");
    if let Ok(version) = std::fs::read_to_string(&version_file) {
        let version = version.trim();
        if version.split('+').next() != Some("2.11.0") {
            panic!(
                "{} is libtorch {version}, but tch 0.24 needs 2.11.0; {SETUP_HINT}",
                lib_dir.display()
            );
        }
    }
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib_dir.display());
    println!("cargo:rustc-env=LIBTORCH_LINKED_DIR={}", lib_dir.display());
    lib_dir.to_path_buf()
}
