"""Extracts libtorch's CPU half, or its CUDA half, from the torch and NVIDIA wheels.

usage: extract_libtorch.py WHEEL_DIR OUT_DIR
       extract_libtorch.py --cuda WHEEL_DIR OUT_DIR

The CPU half: OUT_DIR receives include/, share/, lib/ (CPU libraries plus libcudart and
libcupti, which libtorch_cpu.so links) and build-version, the layout tch's build script expects
of LIBTORCH.

The CUDA half (--cuda), for OUT_DIR to become LIBTORCH/cuda: the layout of a Python
environment's site-packages, torch/lib/ (libtorch_cuda.so and torch's other CUDA libraries) and
nvidia/<package>/lib/ (the NVIDIA libraries, as their wheels lay them out). The torch wheel's
libraries carry the RPATH $ORIGIN/../../nvidia/{cudnn,nvshmem,nccl,cusparselt,cu13}/lib:$ORIGIN,
so the dynamic loader finds every NVIDIA library without LD_LIBRARY_PATH and without patching.
The CPU libraries they link (libtorch_cpu.so, libc10.so, libcudart.so.13, ...) are relative
symbolic links into LIBTORCH/lib, so that each library exists once.
"""

import pathlib
import re
import shutil
import sys
import zipfile

# torch's CUDA libraries: the CUDA half, not needed to build or to run on the CPU.
CUDA_LIBS = re.compile(r"^(libtorch_cuda.*|libtorch_nvshmem|libc10_cuda|libcaffe2_nvrtc)\.so")
# Python bindings: in neither half.
PYTHON_LIBS = re.compile(r"^libtorch_python\.so")
# The NVIDIA libraries libtorch_cpu.so links: in the CPU half's lib/.
NVIDIA_LIBS = ("libcudart.so.13", "libcupti.so.13")
# The NVIDIA libraries torch's CUDA libraries link (readelf -d, NEEDED), which --cuda must find
# in the NVIDIA wheels given.
CUDA_NEEDED = (
    "libcublas.so.13", "libcublasLt.so.13", "libcudnn.so.9", "libcufft.so.12", "libcufile.so.0",
    "libcurand.so.10", "libcusolver.so.12", "libcusparse.so.12", "libcusparseLt.so.0",
    "libnccl.so.2", "libnvJitLink.so.13", "libnvrtc.so.13", "libnvshmem_host.so.3",
)


def torch_lib(name: str) -> str | None:
    """The file name of a library in the torch wheel's torch/lib/ (not the Python bindings)."""
    parts = name.split("/")
    if len(parts) == 3 and parts[:2] == ["torch", "lib"] and ".so" in parts[2]:
        return None if PYTHON_LIBS.match(parts[2]) else parts[2]
    return None


def cpu_target(name: str, out: pathlib.Path) -> pathlib.Path | None:
    """Where a wheel member goes in the CPU half, or None to leave it out."""
    parts = name.split("/")
    if name.endswith("/"):
        return None
    if parts[0] == "torch" and len(parts) > 2 and parts[1] in ("include", "share"):
        return out.joinpath(*parts[1:])
    lib = torch_lib(name)
    if lib is not None:
        return None if CUDA_LIBS.match(lib) else out / "lib" / lib
    if parts[0] == "nvidia" and parts[-1] in NVIDIA_LIBS:
        return out / "lib" / parts[-1]
    return None


def cuda_target(name: str, out: pathlib.Path) -> pathlib.Path | None:
    """Where a wheel member goes in the CUDA half, or None to leave it out."""
    lib = torch_lib(name)
    if lib is not None:
        return out / "torch" / "lib" / lib if CUDA_LIBS.match(lib) else None
    parts = name.split("/")
    # nvidia/<package>/lib/<library>: the shared libraries only (no headers, no tools)
    if len(parts) == 4 and parts[0] == "nvidia" and parts[2] == "lib" and ".so" in parts[3]:
        return out.joinpath(*parts)
    return None


def link_cpu_half(torch_wheel: pathlib.Path, out: pathlib.Path) -> None:
    """Links every CPU-half library into the CUDA half's torch/lib/, as in the torch wheel."""
    with zipfile.ZipFile(torch_wheel) as zf:
        cpu_libs = [lib for lib in map(torch_lib, zf.namelist()) if lib and not CUDA_LIBS.match(lib)]
    lib_dir = out / "torch" / "lib"
    lib_dir.mkdir(parents=True, exist_ok=True)
    for lib in [*cpu_libs, *NVIDIA_LIBS]:
        # OUT_DIR becomes LIBTORCH/cuda: from LIBTORCH/cuda/torch/lib, LIBTORCH/lib is ../../../lib
        (lib_dir / lib).symlink_to(pathlib.Path("..", "..", "..", "lib", lib))


def extract(wheel: pathlib.Path, out: pathlib.Path, member_target) -> int:
    count = 0
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            target = member_target(info.filename, out)
            if target is None:
                continue
            if ".." in pathlib.PurePosixPath(info.filename).parts:
                raise SystemExit(f"refusing wheel member outside the target: {info.filename}")
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            if info.filename.split("/")[-1].find(".so") >= 0:
                target.chmod(0o755)
            count += 1
    return count


def torch_version(wheel: pathlib.Path) -> str:
    with zipfile.ZipFile(wheel) as zf:
        text = zf.read("torch/version.py").decode()
    match = re.search(r"^__version__\s*=\s*'([^']+)'", text, re.M)
    if not match:
        raise SystemExit(f"no __version__ in {wheel}:torch/version.py")
    return match.group(1)


def main() -> None:
    args = sys.argv[1:]
    cuda = args[:1] == ["--cuda"]
    if cuda:
        args = args[1:]
    if len(args) != 2:
        raise SystemExit(__doc__)
    wheels, out = pathlib.Path(args[0]), pathlib.Path(args[1])
    torch_wheels = sorted(wheels.glob("torch-*.whl"))
    if len(torch_wheels) != 1:
        raise SystemExit(f"expected one torch wheel in {wheels}, found {len(torch_wheels)}")
    out.mkdir(parents=True)
    for wheel in sorted(wheels.glob("*.whl")):
        extract(wheel, out, cuda_target if cuda else cpu_target)
    if cuda:
        link_cpu_half(torch_wheels[0], out)
        found = {p.name for p in out.glob("nvidia/*/lib/*")}
        missing = [n for n in ("libtorch_cuda.so", "libc10_cuda.so") if not (out / "torch" / "lib" / n).exists()]
        missing += [n for n in CUDA_NEEDED if n not in found]
    else:
        missing = [n for n in ("libtorch_cpu.so", "libtorch.so", "libc10.so", *NVIDIA_LIBS) if not (out / "lib" / n).exists()]
    if missing:
        raise SystemExit(f"the wheels lacked {', '.join(missing)}")
    (out / "build-version").write_text(torch_version(torch_wheels[0]) + "\n")


if __name__ == "__main__":
    main()
