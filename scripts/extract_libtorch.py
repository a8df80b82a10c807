"""Extracts a CPU libtorch folder from the torch and NVIDIA runtime wheels.

usage: extract_libtorch.py WHEEL_DIR OUT_DIR

OUT_DIR receives include/, share/, lib/ (CPU libraries plus libcudart and libcupti, which
libtorch_cpu.so links) and build-version, the layout tch's build script expects of LIBTORCH.
"""

import pathlib
import re
import shutil
import sys
import zipfile

# CUDA kernels and Python bindings: not needed to build or to run on the CPU. On a GPU the
# runner loads libtorch_cuda.so from an installed PyTorch at run time.
SKIP_LIBS = re.compile(r"^(libtorch_cuda.*|libtorch_python|libtorch_nvshmem|libc10_cuda|libcaffe2_nvrtc)\.so")
NVIDIA_LIBS = ("libcudart.so.13", "libcupti.so.13")


def member_target(name: str, out: pathlib.Path) -> pathlib.Path | None:
    """Where a wheel member goes in OUT_DIR, or None to leave it out."""
    parts = name.split("/")
    if name.endswith("/"):
        return None
    if parts[0] == "torch" and len(parts) > 2 and parts[1] in ("include", "share"):
        return out.joinpath(*parts[1:])
    if parts[0] == "torch" and len(parts) == 3 and parts[1] == "lib":
        if ".so" in parts[2] and not SKIP_LIBS.match(parts[2]):
            return out / "lib" / parts[2]
        return None
    if parts[0] == "nvidia" and parts[-1] in NVIDIA_LIBS:
        return out / "lib" / parts[-1]
    return None


def extract(wheel: pathlib.Path, out: pathlib.Path) -> int:
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
    wheels, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    torch_wheels = sorted(wheels.glob("torch-*.whl"))
    if len(torch_wheels) != 1:
        raise SystemExit(f"expected one torch wheel in {wheels}, found {len(torch_wheels)}")
    out.mkdir(parents=True)
    for wheel in sorted(wheels.glob("*.whl")):
        extract(wheel, out)
    missing = [n for n in ("libtorch_cpu.so", "libtorch.so", "libc10.so", *NVIDIA_LIBS) if not (out / "lib" / n).exists()]
    if missing:
        raise SystemExit(f"the wheels lacked {', '.join(missing)}")
    (out / "build-version").write_text(torch_version(torch_wheels[0]) + "\n")


if __name__ == "__main__":
    main()
