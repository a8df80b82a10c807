//! Lets binaries and tests find libtorch without any exported variable (build/libtorch.rs,
//! shared with the runner), and compiles the fused batch-norm operation (csrc/bn_relu.cpp)
//! against it.

use std::path::Path;

#[path = "build/libtorch.rs"]
mod libtorch;

fn main() {
    let lib_dir = libtorch::link_libtorch();
    compile_fused_kernels(&lib_dir);
}

/// csrc/bn_relu.cpp against libtorch's headers (as torch-sys compiles its own C++: C++17, the
/// C++11 ABI of the PyPI wheels), always optimised: its loops are the point of it.
fn compile_fused_kernels(lib_dir: &Path) {
    let source = "csrc/bn_relu.cpp";
    println!("cargo:rerun-if-changed={source}");
    let include = lib_dir.join("..").join("include");
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag("-D_GLIBCXX_USE_CXX11_ABI=1")
        // its 64-byte vectors never cross a function boundary (all inlined)
        .flag("-Wno-psabi")
        // at::parallel_for is inline and, in libtorch built with OpenMP, an `omp parallel`:
        // without this flag it would run on one thread (libgomp is linked by torch-sys)
        .flag("-fopenmp")
        .opt_level(3)
        .file(source)
        .compile("resnet_fused");
}
