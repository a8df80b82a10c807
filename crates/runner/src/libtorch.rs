//! Which libtorch this process runs on, read at run time.
//!
//! The binary was linked against libtorch 2.11.0, but the loader may have picked other files
//! (`LD_LIBRARY_PATH` on a GPU machine, say). We find the `libtorch_cpu.so` actually mapped and
//! read the version recorded beside it: `build-version` in a libtorch folder, or `version.py`
//! in a PyTorch installation.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::device::find_loaded;

/// The libtorch version tch 0.24.0 is written against.
pub const EXPECTED_VERSION: &str = "2.11.0";

/// `2.11` of [`EXPECTED_VERSION`]: an installed PyTorch of this minor carries the same
/// libraries (its CUDA half can serve this binary).
pub fn expected_minor() -> &'static str {
    EXPECTED_VERSION
        .rsplit_once('.')
        .map_or(EXPECTED_VERSION, |(minor, _)| minor)
}

/// The libtorch folder the binary was linked against (set by the build script).
pub const LINKED_LIB_DIR: &str = env!("LIBTORCH_LINKED_DIR");

/// The libtorch this process has loaded.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LibtorchInfo {
    /// The folder holding the loaded `libtorch_cpu.so`.
    pub lib_dir: PathBuf,
    /// Its version, e.g. `2.11.0+cu130`, when the folder records one.
    pub version: Option<String>,
}

impl LibtorchInfo {
    /// The version without its local part (`2.11.0+cu130` gives `2.11.0`).
    pub fn base_version(&self) -> Option<&str> {
        self.version
            .as_deref()
            .map(|v| v.split('+').next().unwrap_or(v))
    }

    /// What a run's records say of it: the version and where it came from, without a path
    /// (records are committed and compared across machines): `2.11.0+cu130 (.libtorch)`.
    pub fn provenance(&self) -> String {
        let from_env = std::env::var_os("LIBTORCH").map(PathBuf::from);
        format!(
            "{} ({})",
            self.version.as_deref().unwrap_or("unknown version"),
            source_of(&self.lib_dir, from_env.as_deref())
        )
    }
}

/// Where the libtorch in `lib_dir` came from, in words: the project's `.libtorch` (what
/// `just setup` provisions), the user's `$LIBTORCH` (`libtorch_env`), an installed PyTorch,
/// or another folder.
fn source_of(lib_dir: &Path, libtorch_env: Option<&Path>) -> &'static str {
    if libtorch_env.is_some_and(|root| lib_dir.starts_with(root)) {
        return "$LIBTORCH";
    }
    let root = lib_dir.parent();
    if root.is_some_and(|r| r.file_name().is_some_and(|n| n == ".libtorch")) {
        return ".libtorch";
    }
    if root.is_some_and(|r| r.join("version.py").is_file() && r.join("__init__.py").is_file()) {
        return "an installed PyTorch";
    }
    "a libtorch outside the project"
}

/// Finds the loaded libtorch and its version.
pub fn loaded() -> Result<LibtorchInfo> {
    // Make sure libtorch has been touched (it is mapped at start-up in any case).
    let _ = tch::get_num_threads();
    let cpu_lib =
        find_loaded("libtorch_cpu.so").context("libtorch_cpu.so is not mapped in this process")?;
    let lib_dir = cpu_lib.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok(LibtorchInfo {
        version: version_beside(&lib_dir),
        lib_dir,
    })
}

/// Fails with a message naming `just setup` when the loaded libtorch is not 2.11.0.
pub fn check() -> Result<LibtorchInfo> {
    let info = loaded()?;
    match info.base_version() {
        Some(EXPECTED_VERSION) | None => Ok(info),
        Some(other) => bail!(
            "the loaded libtorch ({}) is version {other}, but this build needs {EXPECTED_VERSION}; \
             run `just setup` (and unset LD_LIBRARY_PATH if it points at another libtorch)",
            info.lib_dir.display()
        ),
    }
}

fn version_beside(lib_dir: &Path) -> Option<String> {
    let root = lib_dir.parent()?;
    if let Ok(text) = std::fs::read_to_string(root.join("build-version")) {
        return Some(text.trim().to_string());
    }
    let text = std::fs::read_to_string(root.join("version.py")).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("__version__ = "))
        .map(|v| v.trim().trim_matches(|c| c == '\'' || c == '"').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_expected_minor_is_the_version_without_its_patch() {
        assert_eq!(expected_minor(), "2.11");
    }

    /// The provisioning scripts download the version the binary checks for: one version,
    /// written in the scripts (`TORCH_VERSION` of scripts/pypi.sh) and here.
    #[test]
    fn the_scripts_provision_the_expected_version() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/pypi.sh");
        let script = std::fs::read_to_string(path).unwrap();
        let line = script
            .lines()
            .find(|l| l.starts_with("TORCH_VERSION="))
            .expect("TORCH_VERSION= in scripts/pypi.sh");
        assert_eq!(line, format!("TORCH_VERSION={EXPECTED_VERSION}"));
    }

    #[test]
    fn the_loaded_libtorch_is_2_11_0() {
        let info = check().unwrap();
        assert_eq!(info.base_version(), Some(EXPECTED_VERSION), "{info:?}");
        assert!(info.lib_dir.join("libtorch_cpu.so").exists());
    }

    /// Records name the version and the kind of source, never a machine's path.
    #[test]
    fn provenance_names_the_source_without_a_path() {
        let info = loaded().unwrap();
        let text = info.provenance();
        assert!(text.starts_with(EXPECTED_VERSION), "{text}");
        assert!(!text.contains('/'), "{text}");
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let project = root.join("checkout/.libtorch");
        assert_eq!(source_of(&project.join("lib"), None), ".libtorch");
        // a user's LIBTORCH wins, wherever it is
        assert_eq!(source_of(&project.join("lib"), Some(&project)), "$LIBTORCH");
        let torch = root.join("site-packages/torch");
        std::fs::create_dir_all(torch.join("lib")).unwrap();
        std::fs::write(torch.join("version.py"), "__version__ = '2.11.0'\n").unwrap();
        std::fs::write(torch.join("__init__.py"), "").unwrap();
        assert_eq!(source_of(&torch.join("lib"), None), "an installed PyTorch");
        assert_eq!(
            source_of(&root.join("opt/libtorch/lib"), None),
            "a libtorch outside the project"
        );
    }

    #[test]
    fn version_is_read_from_a_pytorch_installation() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("lib")).unwrap();
        std::fs::write(
            dir.path().join("version.py"),
            "__all__ = []\n__version__ = '2.11.0+cu130'\n",
        )
        .unwrap();
        assert_eq!(
            version_beside(&dir.path().join("lib")).as_deref(),
            Some("2.11.0+cu130")
        );
        std::fs::write(dir.path().join("build-version"), "2.10.0\n").unwrap();
        assert_eq!(
            version_beside(&dir.path().join("lib")).as_deref(),
            Some("2.10.0")
        );
    }
}
