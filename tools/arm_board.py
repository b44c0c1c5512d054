"""An emulated aarch64 board: run the device side of lhp-tf under qemu-user on an x86-64 Linux host.

The mission's boards are ARM; this gives every x86 machine (and CI) one to test on::

    python tools/arm_board.py setup                        # both runtimes, idempotent
    python tools/arm_board.py run -- python -m lhp_tf.bench model_int8.tflite --data test.npz
    python tools/arm_board.py run --runtime tflite-runtime -- python -c "import platform; print(platform.machine())"

What it builds under ``--cache`` (default ``.cache/arm-board`` in the repository, gitignored):

- ``qemu-aarch64-static`` from Debian's ``qemu-user-static`` (installed with apt-get when
  missing; that needs root and a Debian/Ubuntu host);
- ``sysroot/``: an arm64 CPython 3.11 (Debian bookworm's ``python3.11``) unpacked from Debian's
  arm64 packages. apt resolves and downloads them with a private configuration (its own state,
  cache and ``APT::Architecture=arm64``, the host's package sources); the packages are unpacked
  with ``dpkg-deb -x``, so the host's dpkg state never changes;
- ``site-litert/`` (numpy + ai-edge-litert, by default the version this host runs, so the two
  compare like for like) and ``site-tflite-runtime/`` (numpy<2 + tflite-runtime 2.14): aarch64
  wheels installed by the host's pip with ``--platform`` (pip does not widen a manylinux tag to
  older ones, so every tag is listed);
- ``lhp/``: this working tree's lhp-tf, installed ``--no-deps`` (the board install of the
  README), reinstalled whenever its sources change.

Two traps of qemu 7.2 (Debian 12) that this handles, both measured:

- the guest reads the host's x86 ``/proc/cpuinfo``, and LiteRT's CPU detection then crashes in
  ``allocate_tensors``. qemu-user opens an absolute path inside ``QEMU_LD_PREFIX`` when that
  file exists there, so ``sysroot/proc/cpuinfo`` holds an ARM one (Cortex-A72);
- qemu's default CPU (``max``) advertises SME, with which LiteRT's int8 kernels return wrong
  numbers without any error. ``QEMU_CPU=cortex-a72`` pins a plain ARMv8.0 core with NEON.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = REPO / ".cache" / "arm-board"

#: the guest CPU: ARMv8.0-A with NEON, no SVE/SME (see the module docstring)
QEMU_CPU = "cortex-a72"
#: Debian packages whose dependency closure is the guest's Python (libstdc++ for the runtimes)
SYSROOT_PACKAGES = ("python3.11-minimal", "libpython3.11-stdlib", "libstdc++6")
GUEST_PYTHON = "usr/bin/python3.11"
#: manylinux tags an aarch64 glibc-2.36 system (bookworm) accepts, newest first
WHEEL_PLATFORMS = ("manylinux_2_34_aarch64", "manylinux_2_28_aarch64", "manylinux_2_27_aarch64",
                   "manylinux_2_17_aarch64", "manylinux2014_aarch64")
#: what the board install needs besides lhp-tf (README, "Benchmark on a board"), per runtime
RUNTIMES = {
    "litert": ("numpy", "ai-edge-litert"),
    # tflite-runtime 2.14 fails to import with numpy>=2
    "tflite-runtime": ("numpy<2", "tflite-runtime==2.14.0"),
}
#: what a source install of lhp-tf reads (setup.cfg maps converters/, quantize/ and recipes/ into
#: lhp_tf); tests/conftest.py builds the x86 board venv and the wheel from the same list
PACKAGE_SOURCES = ("setup.cfg", "pyproject.toml", "README.md", "lhp_tf", "converters", "quantize", "recipes")

#: /proc/cpuinfo of a Cortex-A72 as Linux prints it (one block per processor)
CPUINFO_BLOCK = """processor\t: {index}
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x0
CPU part\t: 0xd08
CPU revision\t: 3

"""


class BoardError(Exception):
    """The board could not be set up (missing host tool, failed download): one line for the user."""


def _log(text: str) -> None:
    print(f"arm_board: {text}", file=sys.stderr, flush=True)


def _check(cmd: Sequence[str], what: str, **kwargs: object) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise BoardError(f"{what} failed (exit {proc.returncode}): {' | '.join(tail)}")
    return proc


def require_host() -> None:
    """The board runs on x86-64 Linux (an ARM host needs no emulation: use a plain venv)."""
    if sys.platform != "linux" or os.uname().machine != "x86_64":
        raise BoardError(f"needs an x86-64 Linux host, this is {sys.platform}/{os.uname().machine}")


def ensure_qemu() -> str:
    """Path of ``qemu-aarch64-static``, installing Debian's ``qemu-user-static`` when missing."""
    found = shutil.which("qemu-aarch64-static")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise BoardError("qemu-aarch64-static not found; install it: apt-get install qemu-user-static")
    _log("installing qemu-user-static with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _check(["apt-get", "update", "-qq"], "apt-get update", env=env, timeout=600)
    _check(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "qemu-user-static"],
           "apt-get install qemu-user-static", env=env, timeout=900)
    found = shutil.which("qemu-aarch64-static")
    if not found:
        raise BoardError("qemu-user-static installed but qemu-aarch64-static is not on PATH")
    return found


def _stamp_ok(stamp: Path, key: str) -> bool:
    return stamp.exists() and stamp.read_text() == key


def _fresh_dir(path: Path) -> Path:
    """An empty ``path``; callers write their stamp file only once it is complete."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def ensure_sysroot(cache: Path) -> Path:
    """Unpack an arm64 Python 3.11 into ``cache/sysroot`` (once) with a fake ARM cpuinfo."""
    root = cache / "sysroot"
    stamp = cache / "sysroot.done"
    key = " ".join(SYSROOT_PACKAGES) + "\n" + CPUINFO_BLOCK
    if _stamp_ok(stamp, key) and (root / GUEST_PYTHON).exists():
        return root
    for tool in ("apt-get", "dpkg-deb"):
        if not shutil.which(tool):
            raise BoardError(f"{tool} not found: the sysroot is built from Debian packages")
    stamp.unlink(missing_ok=True)
    apt = cache / "apt"
    (apt / "state" / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (apt / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    (apt / "state" / "status").write_text("")  # nothing installed: apt fetches the whole closure
    options = [f"-oDir::State={apt / 'state'}", f"-oDir::State::status={apt / 'state' / 'status'}",
               f"-oDir::Cache={apt / 'cache'}", "-oAPT::Architecture=arm64",
               "-oAPT::Architectures::=arm64", "-oDebug::NoLocking=1", "-qq"]
    _log("resolving the arm64 Python packages (private apt state, host sources)")
    _check(["apt-get", *options, "update"], "apt-get update (arm64, private state)", timeout=600)
    _check(["apt-get", *options, "install", "-y", "--download-only", "--no-install-recommends",
            *SYSROOT_PACKAGES], "apt-get install --download-only (arm64)", timeout=900)
    _fresh_dir(root)
    debs = sorted((apt / "cache" / "archives").glob("*.deb"))
    if not debs:
        raise BoardError(f"apt downloaded no packages into {apt / 'cache' / 'archives'}")
    for deb in debs:
        _check(["dpkg-deb", "-x", str(deb), str(root)], f"dpkg-deb -x {deb.name}")
    proc = root / "proc"
    proc.mkdir(exist_ok=True)
    cpus = os.cpu_count() or 1
    (proc / "cpuinfo").write_text("".join(CPUINFO_BLOCK.format(index=i) for i in range(cpus)))
    stamp.write_text(key)
    return root


def _pip(*args: str, what: str) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args]
    _check(cmd, what, timeout=900)


def runtime_requirements(runtime: str) -> tuple[str, ...]:
    """The pip requirements of one runtime; LiteRT pinned to the version this host runs."""
    reqs = RUNTIMES[runtime]
    if runtime == "litert":
        try:
            version = importlib.metadata.version("ai-edge-litert")
        except importlib.metadata.PackageNotFoundError:
            return reqs
        return tuple(f"ai-edge-litert=={version}" if r == "ai-edge-litert" else r for r in reqs)
    return reqs


def ensure_runtime(cache: Path, runtime: str) -> Path:
    """aarch64 wheels of ``runtime`` (and its numpy) installed into ``cache/site-<runtime>``."""
    site = cache / f"site-{runtime}"
    stamp = cache / f"site-{runtime}.done"
    reqs = runtime_requirements(runtime)
    key = "\n".join(reqs)
    if _stamp_ok(stamp, key) and site.is_dir():
        return site
    stamp.unlink(missing_ok=True)
    _fresh_dir(site)
    _log(f"installing aarch64 wheels: {' '.join(reqs)}")
    platforms = [arg for tag in WHEEL_PLATFORMS for arg in ("--platform", tag)]
    _pip("install", "--target", str(site), "--only-binary=:all:", "--python-version", "3.11",
         "--implementation", "cp", "--abi", "cp311", *platforms, *reqs,
         what=f"pip install (aarch64) {' '.join(reqs)}")
    stamp.write_text(key)
    return site


def _source_digest() -> str:
    digest = hashlib.sha256()
    for name in PACKAGE_SOURCES:
        top = REPO / name
        files = sorted(top.rglob("*")) if top.is_dir() else [top]
        for f in files:
            if f.is_file() and "__pycache__" not in f.parts:
                digest.update(str(f.relative_to(REPO)).encode() + b"\0" + f.read_bytes())
    return digest.hexdigest()


def ensure_package(cache: Path) -> Path:
    """This working tree's lhp-tf installed ``--no-deps`` into ``cache/lhp`` (pure Python)."""
    site = cache / "lhp"
    stamp = cache / "lhp.done"
    key = _source_digest()
    if _stamp_ok(stamp, key) and site.is_dir():
        return site
    stamp.unlink(missing_ok=True)
    _fresh_dir(site)
    with tempfile.TemporaryDirectory() as tmp:
        # Build from a copy: pip builds in-tree and a build/ folder would keep stale files.
        src = Path(tmp) / "src"
        src.mkdir()
        for name in PACKAGE_SOURCES:
            if (REPO / name).is_dir():
                shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
            elif (REPO / name).exists():
                shutil.copy2(REPO / name, src / name)
        _pip("install", "--no-deps", "--no-build-isolation", "--target", str(site), str(src),
             what="pip install --no-deps lhp-tf")
    stamp.write_text(key)
    return site


def setup(cache: Path, runtimes: Sequence[str]) -> dict[str, Path]:
    """Build whatever is missing; returns the qemu binary, sysroot, package and runtime dirs."""
    require_host()
    start = time.perf_counter()
    cache.mkdir(parents=True, exist_ok=True)
    paths = {"qemu": Path(ensure_qemu()), "sysroot": ensure_sysroot(cache),
             "lhp": ensure_package(cache)}
    for runtime in runtimes:
        paths[runtime] = ensure_runtime(cache, runtime)
    _log(f"board ready in {time.perf_counter() - start:.1f} s ({cache})")
    return paths


def guest_command(paths: dict[str, Path], runtime: str, argv: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """The host command and environment that run ``argv`` (``python ...``) on the board."""
    if not argv or argv[0] not in ("python", "python3", "python3.11"):
        raise BoardError(f"the board runs Python commands ('python ...'), got {' '.join(argv) or 'nothing'}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update({
        "QEMU_LD_PREFIX": str(paths["sysroot"]),
        "QEMU_CPU": QEMU_CPU,
        "PYTHONPATH": os.pathsep.join([str(paths["lhp"]), str(paths[runtime])]),
        "PYTHONNOUSERSITE": "1",
    })
    return [str(paths["qemu"]), str(paths["sysroot"] / GUEST_PYTHON), *argv[1:]], env


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="arm_board", description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                        help=f"where the board lives (default {DEFAULT_CACHE})")
    sub = parser.add_subparsers(dest="command", required=True)
    p_setup = sub.add_parser("setup", help="build the board (idempotent)")
    p_setup.add_argument("--runtime", choices=[*RUNTIMES, "all"], default="all")
    p_run = sub.add_parser("run", help="run 'python ...' on the board (sets it up first)")
    p_run.add_argument("--runtime", choices=list(RUNTIMES), default="litert")
    p_run.add_argument("cmd", nargs=argparse.REMAINDER, help="-- python ARGS...")
    args = parser.parse_args(argv)
    try:
        if args.command == "setup":
            setup(args.cache, list(RUNTIMES) if args.runtime == "all" else [args.runtime])
            return 0
        cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
        paths = setup(args.cache, [args.runtime])
        host_cmd, env = guest_command(paths, args.runtime, cmd)
    except BoardError as exc:
        print(f"arm_board: error: {exc}", file=sys.stderr)
        return 2
    return subprocess.run(host_cmd, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
