//! Lets binaries and tests find libtorch without any exported variable.
//!
//! tch's build script (torch-sys) reports the libtorch `lib/` folder it linked against; we
//! record it as the run-time search path (RUNPATH, so `LD_LIBRARY_PATH` still overrides it,
//! as on a GPU machine whose own PyTorch provides the libraries). The runner crate uses the
//! same code (its build script includes this file as a module).

use std::path::Path;

const SETUP_HINT: &str = "run `just setup` to provision libtorch 2.11.0 into .libtorch/ \
                          (or export LIBTORCH=/path/to/libtorch-2.11.0)";

pub fn main() {
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
}
