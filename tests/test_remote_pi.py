"""``edgeship bench --on`` and ``predict`` over ssh to a device that really is aarch64: a
Raspberry Pi 4's CPU emulated by qemu-user. Marked ``slow``; skipped unless the cache below exists.

The connection is tests/sshd.py's loopback OpenSSH server. The device's edgeship is laid out in a
temporary folder as a virtualenv on a Pi would be:

- ``bin/python3.11``: a shell script that runs Debian bookworm's arm64 Python (Raspberry Pi OS's)
  under ``qemu-aarch64-static -cpu cortex-a72`` (the Pi 4's core), with the aarch64 wheels and
  this repository's ``edgeship/`` on ``PYTHONPATH``;
- ``bin/edgeship``: pip's console script with that Python on its ``#!`` line, named by
  ``EDGESHIP_REMOTE_COMMAND``. remote.py checks the device's edgeship version with the Python
  that line names, so the version check runs emulated too.

qemu-user 7.2 shows emulated programs the host's x86 ``/proc/cpuinfo``, where a Pi's kernel lists
its own cores (ai-edge-litert >= 2.2 crashes without them: edgeship/runtime/platform_check.py).
qemu looks every path up under its ``-L`` root first, so the device's root is a folder of links
to the cached root filesystem plus a ``proc/cpuinfo`` for the emulated CPU, written by
``benchmarks/pi_emulation.py``'s ``device_cpuinfo``. Nothing in the cache is written.

Set-up, once, from the repository's folder (Debian bookworm, as root; about 450 MB in
``../pi-cache``, or ``$EDGESHIP_PI_CACHE``; the root filesystem is the one
``benchmarks/pi_emulation.py`` uses)::

    apt-get update && apt-get install -y qemu-user-static debootstrap
    mkdir -p ../pi-cache   # debootstrap does not make the parent folder
    debootstrap --arch=arm64 --foreign --variant=minbase --include=python3.11 \\
        bookworm ../pi-cache/rootfs http://deb.debian.org/debian
    for deb in ../pi-cache/rootfs/var/cache/apt/archives/*.deb; do dpkg-deb -x "$deb" ../pi-cache/rootfs; done
    .venv/bin/python -m pip install --target ../pi-cache/site/runtime --only-binary=:all: \\
        --python-version 3.11 --implementation cp --platform manylinux2014_aarch64 \\
        --platform manylinux_2_17_aarch64 --platform manylinux_2_27_aarch64 \\
        --platform manylinux_2_28_aarch64 ai-edge-litert numpy pillow typer rich flatbuffers

Every ``--platform`` is needed: pip does not widen a ``manylinux_2_X`` tag to older ones, and
ai-edge-litert 2.3's aarch64 wheel is tagged ``manylinux_2_27`` alone (with
``manylinux2014`` only, pip falls back to 1.4.0).

Run: ``.venv/bin/python -m pytest -q -m slow tests/test_remote_pi.py`` (a few minutes).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sshd import loopback_sshd  # noqa: F401  (the session fixture)

from edgeship.runtime.remote import REMOTE_COMMAND_ENV, SSH_CONFIG_ENV, run_remote

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("EDGESHIP_PI_CACHE") or ROOT.parent / "pi-cache")
ROOTFS, SITE = CACHE / "rootfs", CACHE / "site" / "runtime"
QEMU = "qemu-aarch64-static"
CPU = "cortex-a72"  # the Raspberry Pi 4's core: Armv8.0, so no dot product (asimddp)
RUNTIME = ("ai_edge_litert", "numpy", "PIL", "typer", "rich", "flatbuffers")  # import names
CORAL = Path(__file__).parent / "data" / "coral"
MODEL, IMAGE = CORAL / "mobilenet_v1_0.25_128_quant.tflite", CORAL / "cat.bmp"
EDGESHIP = str(Path(sys.executable).parent / "edgeship")
# Seconds per call, only to stop a hung run: each emulated edgeship start takes seconds, and the
# machine is shared.
TIMEOUT = 900


def _missing() -> str | None:
    """Why the emulated Pi cannot run here, or None."""
    setup = "set-up: the docstring of tests/test_remote_pi.py"
    if shutil.which(QEMU) is None:
        return f"{QEMU} not found (apt-get install qemu-user-static; {setup})"
    if not (ROOTFS / "usr" / "bin" / "python3.11").exists():
        return f"no arm64 Python at {ROOTFS}/usr/bin/python3.11 (debootstrap --arch=arm64 ...; {setup})"
    absent = [name for name in RUNTIME if not (SITE / name).is_dir()]
    if absent:
        return f"{SITE} lacks {', '.join(absent)} (pip install --target ... --platform manylinux...; {setup})"
    return None


def _device_cpuinfo() -> str:
    """/proc/cpuinfo as an arm64 kernel writes it for the features qemu's Cortex-A72 reports."""
    sys.path.insert(0, str(ROOT / "benchmarks"))  # imported as the benchmark scripts import each other
    try:
        import pi_emulation
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    run = pi_emulation.Emulator(shutil.which(QEMU), ROOTFS, timeout=300).run(CPU, ["--features-only"])
    assert run["exit"] == "ok", f"the arm64 Python at {ROOTFS} does not start under qemu: {run['stderr_tail']}"
    return pi_emulation.device_cpuinfo(CPU, run["stages"][0]["features"])


def _device_root(folder: Path, cpuinfo: str) -> Path:
    """The cached root filesystem seen through links, with the device's own /proc/cpuinfo."""
    folder.mkdir()
    for entry in ROOTFS.iterdir():
        if entry.name != "proc":
            (folder / entry.name).symlink_to(entry)
    (folder / "proc").mkdir()
    (folder / "proc" / "cpuinfo").write_text(cpuinfo)
    return folder


def _write_install(folder: Path, root: Path) -> Path:
    """``bin/python3.11`` and ``bin/edgeship`` as a virtualenv lays them out; returns the command.

    The Python appends its working folder to ``folders.log`` at each start, so that the test
    can check that exactly its own runs' folders are gone (other tests may be running too)."""
    bin_folder = folder / "bin"
    bin_folder.mkdir(parents=True)
    python = bin_folder / "python3.11"
    emulated = shlex.join([shutil.which(QEMU), "-L", str(root), "-cpu", CPU, str(root / "usr" / "bin" / "python3.11")])
    python.write_text("\n".join([
        "#!/bin/sh",
        "# Raspberry Pi OS's Python on an emulated Raspberry Pi 4.",
        f"pwd >> {shlex.quote(str(folder / 'folders.log'))}",
        f"export PYTHONPATH={shlex.quote(f'{SITE}:{ROOT}')}",
        # Bytecode goes here, not into the cache or the repository.
        f"export PYTHONPYCACHEPREFIX={shlex.quote(str(folder / 'pycache'))}",
        "export PYTHONNOUSERSITE=1",
        f'exec {emulated} "$@"',
        "",
    ]))
    command = bin_folder / "edgeship"
    # Linux runs a #! interpreter that is itself a script, as bin/python3.11 is.
    command.write_text(f"#!{python}\nimport sys\nfrom edgeship.cli import main\nsys.exit(main())\n")
    for path in (python, command):
        path.chmod(0o755)
    return command


@pytest.fixture(scope="module")
def pi_edgeship(tmp_path_factory) -> Path:
    """The device's edgeship command: this repository's runtime on an emulated Raspberry Pi 4."""
    reason = _missing()
    if reason:
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("pi")
    return _write_install(folder, _device_root(folder / "root", _device_cpuinfo()))


def _ran_in(command: Path) -> list[Path]:
    """The device's temporary folders the emulated Python has started in so far."""
    log = command.parent.parent / "folders.log"
    return [Path(line) for line in log.read_text().splitlines()] if log.exists() else []


def _local_json(*argv: str) -> dict:
    done = subprocess.run([EDGESHIP, *argv, "--json"], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def test_bench_and_predict_on_an_emulated_pi_4(pi_edgeship, loopback_sshd):  # noqa: F811
    # `edgeship bench --on` as a user runs it: the device command and the ssh config from the environment.
    environment = {**os.environ, REMOTE_COMMAND_ENV: str(pi_edgeship), SSH_CONFIG_ENV: loopback_sshd.ssh_options[1]}
    bench = subprocess.run([EDGESHIP, "bench", str(MODEL), "--on", loopback_sshd.host, "--rounds", "1",
                            "--num-runs", "3", "--num-warmup-runs", "1", "--json"],
                           capture_output=True, text=True, env=environment, timeout=TIMEOUT, check=False)
    assert bench.returncode == 0, bench.stderr
    result = json.loads(bench.stdout)
    (row,) = result["results"]
    assert row["model"] == str(MODEL) and "error" not in row and row["median_ms"] > 0
    assert row["target"] == loopback_sshd.host
    device = result["devices"][loopback_sshd.host]
    assert device["machine"] == "aarch64"
    # The emulated CPU's identity, not this x86 host's: a Cortex-A72 with NEON and no dot product.
    assert device["cpu_model"] == "Cortex-A72" and device["isa_features"] == ["asimd"]

    argv = ["predict", str(MODEL), str(IMAGE), "--top-k", "1"]
    remote = run_remote(loopback_sshd.host, argv, [MODEL, IMAGE], timeout=TIMEOUT,
                        ssh_options=loopback_sshd.ssh_options, remote_command=str(pi_edgeship))
    (prediction,), (local,) = remote["predictions"], _local_json(*argv)["predictions"]
    assert prediction["path"] == str(IMAGE)
    (top,), (local_top,) = prediction["classes"], local["classes"]
    assert (top["id"], top["label"]) == (local_top["id"], local_top["label"]) and top["label"] == "tiger cat"
    # One uint8 step of the output: aarch64 and x86 kernels may round an accumulator differently.
    assert top["score"] == pytest.approx(local_top["score"], abs=1 / 256 + 1e-6)

    folders = _ran_in(pi_edgeship)
    assert folders and all(folder.name.startswith("edgeship.") for folder in folders)
    assert not [folder for folder in folders if folder.exists()], "the device kept a temporary folder"
