//! Choosing the training device, and loading libtorch's CUDA kernels at run time.
//!
//! The project links the CPU libraries of libtorch 2.11.0, so one binary serves every machine.
//! On a GPU machine the CUDA half of libtorch (`libtorch_cuda.so`, which registers the CUDA
//! backend when it is loaded) comes from `.libtorch/cuda/` (`just setup-cuda`), a folder the
//! user names, or an installed PyTorch 2.11, and is loaded with `dlopen(RTLD_NOW | RTLD_GLOBAL)`
//! before any tensor touches the device.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{bail, Result};
use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};

/// What the user asked for with `--device`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// CUDA when it works here, else the CPU (and say so).
    Auto,
    Cpu,
    Cuda,
}

/// The library file that holds libtorch's CUDA kernels.
const CUDA_LIB: &str = "libtorch_cuda.so";

/// Where `scripts/setup-cuda.sh` puts `libtorch_cuda.so`, relative to the libtorch folder of the
/// CPU half (`.libtorch/`): the torch wheel's own layout, whose RPATHs find the NVIDIA libraries
/// in `cuda/nvidia/*/lib`.
const CUDA_HALF_LIB_DIR: &str = "cuda/torch/lib";

/// The places `libtorch_cuda.so` is looked for, in order.
#[derive(Debug, Clone, Copy)]
enum CudaSource {
    /// `cuda/torch/lib/` beside the CPU half this process loaded (`.libtorch/`, normally the
    /// one it was linked against): made for that CPU half, so it comes first.
    CudaHalf,
    /// `$LIBTORCH_CUDA_DIR`.
    EnvDir,
    /// The `lib/` folder of an installed PyTorch 2.11.
    Python,
    /// The dynamic loader's search path (`LD_LIBRARY_PATH`, the binary's RUNPATH, the cache).
    Loader,
}

impl CudaSource {
    const ORDER: [CudaSource; 4] = [Self::CudaHalf, Self::EnvDir, Self::Python, Self::Loader];

    fn label(self) -> &'static str {
        match self {
            Self::CudaHalf => ".libtorch CUDA half",
            Self::EnvDir => "$LIBTORCH_CUDA_DIR",
            Self::Python => "installed PyTorch",
            Self::Loader => "loader path",
        }
    }

    /// The file to try, or why there is none; computed only when the places before failed
    /// (asking Python takes a second or two).
    fn candidate(self) -> Result<PathBuf, String> {
        match self {
            Self::CudaHalf => {
                let cpu_lib_dir = crate::libtorch::loaded()
                    .map(|info| info.lib_dir)
                    .unwrap_or_else(|_| PathBuf::from(crate::libtorch::LINKED_LIB_DIR));
                let root = cpu_lib_dir.parent().unwrap_or(&cpu_lib_dir);
                let path = root.join(CUDA_HALF_LIB_DIR).join(CUDA_LIB);
                if path.exists() {
                    Ok(path)
                } else {
                    Err(format!(
                        "no {} (`just setup-cuda` provisions it)",
                        path.display()
                    ))
                }
            }
            Self::EnvDir => match std::env::var_os("LIBTORCH_CUDA_DIR") {
                Some(dir) => Ok(Path::new(&dir).join(CUDA_LIB)),
                None => Err("not set".into()),
            },
            Self::Python => python_torch_lib_dir().map(|dir| dir.join(CUDA_LIB)),
            // A bare name makes dlopen search LD_LIBRARY_PATH, the cache and the default folders.
            Self::Loader => Ok(PathBuf::from(CUDA_LIB)),
        }
    }
}

/// Where `libtorch_cuda.so` was looked for, and what came of it.
#[derive(Debug, Clone)]
pub struct CudaLoad {
    /// The file that loaded, if any.
    pub loaded_from: Option<PathBuf>,
    /// One line per place tried, for error messages and `runner doctor`.
    pub attempts: Vec<String>,
}

impl fmt::Display for CudaLoad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.loaded_from {
            Some(path) => write!(f, "{}", path.display()),
            None => write!(f, "not found ({})", self.attempts.join("; ")),
        }
    }
}

/// Loads `libtorch_cuda.so` once per process; later calls return the first result.
///
/// Looks in `.libtorch/cuda/torch/lib/` (beside the loaded CPU half; `just setup-cuda`), then
/// `$LIBTORCH_CUDA_DIR`, then the `lib/` folder of an installed PyTorch 2.11
/// (`python3 -c 'import torch'`), then the dynamic loader's usual search path.
pub fn load_cuda() -> &'static CudaLoad {
    static LOAD: OnceLock<CudaLoad> = OnceLock::new();
    LOAD.get_or_init(|| {
        let mut attempts = Vec::new();
        for source in CudaSource::ORDER {
            let origin = source.label();
            let path = match source.candidate() {
                Ok(path) => path,
                Err(why) => {
                    attempts.push(format!("{origin}: {why}"));
                    continue;
                }
            };
            if path.is_absolute() && !path.exists() {
                attempts.push(format!("{origin}: no {}", path.display()));
                continue;
            }
            // SAFETY: loading libtorch_cuda.so runs its static initialisers, which register the
            // CUDA backend with the libtorch already loaded in this process; it is never unloaded.
            match unsafe { Library::open(Some(&path), RTLD_NOW | RTLD_GLOBAL) } {
                Ok(lib) => {
                    std::mem::forget(lib);
                    let loaded = if path.is_absolute() {
                        path
                    } else {
                        find_loaded(CUDA_LIB).unwrap_or(path)
                    };
                    attempts.push(format!("{origin}: loaded {}", loaded.display()));
                    return CudaLoad {
                        loaded_from: Some(loaded),
                        attempts,
                    };
                }
                Err(err) => attempts.push(format!("{origin}: {}", error_chain(&err))),
            }
        }
        CudaLoad {
            loaded_from: None,
            attempts,
        }
    })
}

/// An error and its sources on one line (libloading keeps dlerror's text in the source).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// The `lib/` folder of the Python environment's PyTorch, if it is the linked version's
/// minor ([`crate::libtorch::expected_minor`]).
fn python_torch_lib_dir() -> Result<PathBuf, String> {
    let script = "import os, torch; print(torch.__version__); \
                  print(os.path.join(os.path.dirname(torch.__file__), 'lib'))";
    let output = Command::new("python3")
        .args(["-c", script])
        .output()
        .map_err(|e| format!("python3 did not run ({e})"))?;
    if !output.status.success() {
        return Err("python3 has no torch module".into());
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let mut lines = text.lines();
    let (Some(version), Some(dir)) = (lines.next(), lines.next()) else {
        return Err("could not read torch's version and folder".into());
    };
    let minor = crate::libtorch::expected_minor();
    if !version.starts_with(&format!("{minor}.")) {
        return Err(format!("its torch is {version}, not {minor}"));
    }
    Ok(PathBuf::from(dir))
}

/// The path of a shared library already mapped into this process, from `/proc/self/maps`.
pub fn find_loaded(file_name: &str) -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| {
            Path::new(path)
                .file_name()
                .is_some_and(|name| name == file_name)
        })
        .map(PathBuf::from)
}

/// The device a run uses, and why it is not the one asked for (when `auto` fell back).
#[derive(Debug, Clone)]
pub struct Resolved {
    pub device: tch::Device,
    /// Set when `auto` fell back to the CPU: the reason, for the log.
    pub fallback: Option<String>,
}

/// Turns `--device` into a tch device, loading CUDA first where it may be used.
///
/// `cuda` without a usable GPU is an error naming what was tried; `auto` falls back to the CPU
/// and gives the reason in [`Resolved::fallback`].
pub fn resolve(choice: DeviceChoice) -> Result<Resolved> {
    if choice == DeviceChoice::Cpu {
        return Ok(Resolved {
            device: tch::Device::Cpu,
            fallback: None,
        });
    }
    let load = load_cuda();
    if load.loaded_from.is_some() && tch::Cuda::is_available() {
        return Ok(Resolved {
            device: tch::Device::Cuda(0),
            fallback: None,
        });
    }
    if choice == DeviceChoice::Cuda {
        bail!("{}", no_cuda_reason(load));
    }
    Ok(Resolved {
        device: tch::Device::Cpu,
        fallback: Some(no_cuda_reason(load)),
    })
}

fn no_cuda_reason(load: &CudaLoad) -> String {
    match &load.loaded_from {
        None => format!(
            "CUDA is not usable: {CUDA_LIB} was not found ({}). Run `just setup-cuda`, install \
             PyTorch 2.11 with CUDA, or set LIBTORCH_CUDA_DIR to the folder holding {CUDA_LIB}",
            load.attempts.join("; ")
        ),
        Some(path) => format!(
            "CUDA is not usable: {} loaded, but there is no CUDA device ({})",
            path.display(),
            no_device_reason()
        ),
    }
}

/// Why libtorch sees no CUDA device although `libtorch_cuda.so` loaded: no NVIDIA driver, or
/// what the CUDA runtime says.
pub fn no_device_reason() -> String {
    // SAFETY: the driver's library is what the CUDA runtime itself loads to find devices; this
    // takes and drops one reference to it.
    if let Err(err) = unsafe { Library::open(Some("libcuda.so.1"), RTLD_NOW) } {
        return format!("no NVIDIA driver ({})", error_chain(&err));
    }
    match runtime_device_count() {
        Ok(0) => "the driver lists none; is CUDA_VISIBLE_DEVICES empty?".into(),
        Ok(n) => format!("the CUDA runtime counts {n}, but libtorch none"),
        Err(err) => format!("{err:#}"),
    }
}

/// The CUDA runtime that libtorch loaded (`libcudart.so.13`, a dependency of libtorch_cpu.so).
fn cudart() -> Result<Library> {
    // SAFETY: the library is loaded already, so this only takes another reference to it.
    Ok(unsafe { Library::open(Some("libcudart.so.13"), RTLD_NOW) }?)
}

/// `cudaGetDeviceCount`, with the runtime's own words for an error.
fn runtime_device_count() -> Result<i32> {
    type GetCount = unsafe extern "C" fn(*mut i32) -> i32;
    type ErrorString = unsafe extern "C" fn(i32) -> *const std::ffi::c_char;
    let cudart = cudart()?;
    let mut count = 0;
    // SAFETY: CUDA runtime API signatures; `count` outlives the call, and the error string is
    // a static C string owned by the runtime.
    unsafe {
        let get: libloading::os::unix::Symbol<GetCount> = cudart.get(b"cudaGetDeviceCount\0")?;
        let status = get(&mut count);
        if status != 0 {
            let text: libloading::os::unix::Symbol<ErrorString> =
                cudart.get(b"cudaGetErrorString\0")?;
            let text = std::ffi::CStr::from_ptr(text(status)).to_string_lossy();
            bail!("the CUDA runtime says: {text} (error {status})");
        }
    }
    Ok(count)
}

/// A device as the command line spells it: `cpu`, `cuda:0`.
pub fn device_name(device: tch::Device) -> String {
    match device {
        tch::Device::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".into(),
    }
}

/// Name and total memory of a CUDA device, read through the CUDA runtime that libtorch loaded.
#[derive(Debug, Clone)]
pub struct GpuInfo {
    pub name: String,
    pub total_memory_bytes: u64,
    /// What the device has free now (other processes' allocations excluded).
    pub free_memory_bytes: u64,
}

/// Asks the CUDA runtime (`libcudart.so.13`, already loaded by libtorch) about device `index`.
pub fn gpu_info(index: i32) -> Result<GpuInfo> {
    type GetProps = unsafe extern "C" fn(*mut u8, i32) -> i32;
    type SetDevice = unsafe extern "C" fn(i32) -> i32;
    type MemGetInfo = unsafe extern "C" fn(*mut usize, *mut usize) -> i32;
    // The signatures below are those of the CUDA runtime API.
    let cudart = cudart()?;
    // cudaDeviceProp begins with `char name[256]` in every CUDA version; the buffer is larger
    // than the whole struct (about 1 KiB) in any of them.
    let mut props = vec![0u8; 8192];
    let mut status = -1;
    for symbol in [
        &b"cudaGetDeviceProperties_v2\0"[..],
        b"cudaGetDeviceProperties\0",
    ] {
        // SAFETY: see above; `props` outlives the call and is large enough.
        if let Ok(get) = unsafe { cudart.get::<GetProps>(symbol) } {
            status = unsafe { get(props.as_mut_ptr(), index) };
            break;
        }
    }
    if status != 0 {
        bail!("cudaGetDeviceProperties failed (error {status})");
    }
    let name_end = props[..256].iter().position(|&b| b == 0).unwrap_or(256);
    let name = String::from_utf8_lossy(&props[..name_end]).into_owned();
    let (mut free, mut total) = (0usize, 0usize);
    // SAFETY: plain CUDA runtime calls with valid out-pointers.
    unsafe {
        let set: libloading::os::unix::Symbol<SetDevice> = cudart.get(b"cudaSetDevice\0")?;
        let mem: libloading::os::unix::Symbol<MemGetInfo> = cudart.get(b"cudaMemGetInfo\0")?;
        if set(index) != 0 || mem(&mut free, &mut total) != 0 {
            bail!("cudaMemGetInfo failed for device {index}");
        }
    }
    Ok(GpuInfo {
        name,
        total_memory_bytes: total as u64,
        free_memory_bytes: free as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_always_available() {
        let resolved = resolve(DeviceChoice::Cpu).unwrap();
        assert_eq!(resolved.device, tch::Device::Cpu);
        assert!(resolved.fallback.is_none());
    }

    #[test]
    fn libtorch_cpu_is_found_among_loaded_libraries() {
        // Touch libtorch so that it is certainly mapped, then find it the way doctor does.
        let _ = tch::Tensor::zeros([1], (tch::Kind::Float, tch::Device::Cpu));
        let path = find_loaded("libtorch_cpu.so").expect("libtorch_cpu.so is mapped");
        assert!(path.is_absolute(), "{}", path.display());
        assert!(path.exists());
    }

    #[test]
    fn the_cuda_half_is_looked_for_beside_the_linked_libtorch() {
        // Tests run on the libtorch they were linked against, so the two folders agree.
        let linked = Path::new(crate::libtorch::LINKED_LIB_DIR);
        let expected = linked
            .parent()
            .unwrap()
            .join("cuda/torch/lib/libtorch_cuda.so");
        match CudaSource::CudaHalf.candidate() {
            Ok(path) => assert_eq!(path, expected),
            Err(why) => {
                assert!(why.contains(&*expected.to_string_lossy()), "{why}");
                assert!(why.contains("just setup-cuda"), "{why}");
            }
        }
    }

    #[test]
    fn a_provisioned_cuda_half_is_what_loads() {
        // Only meaningful after `just setup-cuda`; it comes before every other place.
        let Ok(path) = CudaSource::CudaHalf.candidate() else {
            return;
        };
        let load = load_cuda();
        assert_eq!(load.loaded_from.as_deref(), Some(path.as_path()), "{load}");
        assert_eq!(load.attempts.len(), 1, "{:?}", load.attempts);
    }

    #[test]
    fn cuda_request_without_gpu_is_a_clear_error() {
        // Only meaningful where no CUDA device is usable (CI and the CPU machines).
        if load_cuda().loaded_from.is_some() && tch::Cuda::is_available() {
            return;
        }
        let err = resolve(DeviceChoice::Cuda).unwrap_err().to_string();
        assert!(err.contains("CUDA is not usable"), "{err}");
        assert!(
            err.contains("LIBTORCH_CUDA_DIR") || err.contains("no CUDA device"),
            "{err}"
        );
        let auto = resolve(DeviceChoice::Auto).unwrap();
        assert_eq!(auto.device, tch::Device::Cpu);
        assert_eq!(auto.fallback.as_deref(), Some(err.as_str()));
    }
}
