"""Does the runtime-only install classify on a Raspberry Pi's CPU? Each ai-edge-litert version,
under qemu-user on this x86 machine, with Raspberry Pi OS's Python (Debian bookworm, 3.11).

For each version and emulated CPU model (``cortex-a72``: Pi 4; ``cortex-a76``: Pi 5; ``max``:
every extension qemu knows) it runs ``pi_emulated_run.py`` twice, differing only in what the
program reads as /proc/cpuinfo:

- ``qemu``: what qemu-user passes through. qemu 7.2 does not emulate that file for aarch64, so
  the program reads the x86 host's, which lists no ARM processor.
- ``device``: a file that describes the emulated CPU as an arm64 kernel would (its MIDR and the
  features qemu reports). qemu-user looks every path up under its ``-L`` prefix first, so the
  script writes ``<rootfs>/proc/cpuinfo`` for that run and removes it afterwards.

Each run builds a one-op (ADD) model and runs it with the bare interpreter, then classifies
Coral's ``cat.bmp`` with ``mobilenet_v1_0.25_128_quant.tflite`` through ``edgeship.runtime``
(``load_model``, ``predict``) when ``../shared/external/coral`` exists. It records the exit
status or signal, the last stage reached and the top-1 class. Runs that die of a signal are
repeated under ``gdb-multiarch`` (when installed) for the backtrace. Single-instruction
probes show which extensions each CPU model executes, and ``aarch64_isa.py`` counts what
each version's libraries contain. Results: ``results/pi_emulation.json`` and ``.md``.

Set-up, once (Debian bookworm host, as root; about 300 MB under the cache folder):
    apt-get update
    apt-get install qemu-user-static debootstrap binutils-aarch64-linux-gnu gdb-multiarch
    mkdir -p ../pi-cache   # debootstrap does not make the parent folder
    debootstrap --arch=arm64 --foreign --variant=minbase --include=python3.11 \\
        bookworm ../pi-cache/rootfs http://deb.debian.org/debian
    # --foreign unpacks the base system only; unpack Python and its libraries too:
    for deb in ../pi-cache/rootfs/var/cache/apt/archives/*.deb; do dpkg-deb -x "$deb" ../pi-cache/rootfs; done
The wheels are installed by this script (host pip with ``--platform``, ``--target``) into
``<cache>/site/litert-<version>`` unless ``--no-download``. No binfmt registration is needed:
qemu is called directly. Each run is bounded by ``--timeout``; runs go one at a time.

Exits 0 without writing results, after saying what is missing, when qemu or the root
filesystem is absent.

Usage:
    python benchmarks/pi_emulation.py
    python benchmarks/pi_emulation.py --versions 2.1.6 2.3.0 --cpus cortex-a72 --no-scan
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aarch64_isa
from common import machine

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
CORAL = ROOT.parent / "shared" / "external" / "coral"
CHILD = Path(__file__).resolve().parent / "pi_emulated_run.py"

VERSIONS = ("1.4.0", "2.0.3", "2.1.4", "2.1.6", "2.2.0", "2.3.0")
CPUS = ("cortex-a72", "cortex-a76", "max")
CPUINFO_MODES = ("qemu", "device")
DEVICES = {"cortex-a72": "Raspberry Pi 4", "cortex-a76": "Raspberry Pi 5", "max": "no device"}
# (implementer, variant, part, revision) of qemu 7.2's models (target/arm/cpu64.c); "max" is QEMU's own id.
MIDR = {"cortex-a72": (0x41, 0x0, 0xD08, 3), "cortex-a76": (0x41, 0x4, 0xD0B, 1),
        "neoverse-n1": (0x41, 0x4, 0xD0C, 1), "max": (0x00, 0x0, 0x051, 0)}
PLATFORMS = ("manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_27_aarch64", "manylinux_2_28_aarch64")
LIBRARIES = ("libpywrap_litert_common.so", "libLiteRt.so")
CORAL_CASE = "libcoral_mnv1_025_128_cat"


def qemu_version(qemu: str) -> str:
    return subprocess.run([qemu, "--version"], capture_output=True, text=True).stdout.splitlines()[0]


def install_wheels(version: str, site: Path, download: bool) -> bool:
    """ai-edge-litert ``version`` with numpy, Pillow and flatbuffers for aarch64 CPython 3.11, in ``site``."""
    if (site / "ai_edge_litert").is_dir():
        return True
    if not download:
        return False
    platforms = [arg for name in PLATFORMS for arg in ("--platform", name)]
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(site), *platforms,
               "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp",
               f"ai-edge-litert=={version}", "numpy", "pillow", "flatbuffers"]
    return subprocess.run(command).returncode == 0


def _processor_count() -> int:
    try:  # the child's cpuinfo library counts processors from the host's sysfs: list as many
        last = Path("/sys/devices/system/cpu/present").read_text().strip().split(",")[-1].split("-")[-1]
        return int(last) + 1
    except (OSError, ValueError):
        return os.cpu_count() or 1


def device_cpuinfo(cpu: str, features: list[str]) -> str:
    """/proc/cpuinfo as an arm64 Linux kernel writes it for ``cpu`` (arch/arm64/kernel/cpuinfo.c)."""
    implementer, variant, part, revision = MIDR[cpu]
    block = (f"BogoMIPS\t: 108.00\nFeatures\t: {' '.join(features)}\nCPU implementer\t: 0x{implementer:02x}\n"
             f"CPU architecture: 8\nCPU variant\t: 0x{variant:x}\nCPU part\t: 0x{part:03x}\n"
             f"CPU revision\t: {revision}\n")
    return "".join(f"processor\t: {i}\n{block}\n" for i in range(_processor_count()))


class Emulator:
    """Runs the child program under qemu-user with the Debian arm64 root filesystem."""

    def __init__(self, qemu: str, rootfs: Path, timeout: float):
        self.qemu, self.rootfs, self.timeout = qemu, rootfs, timeout
        self.python = rootfs / "usr" / "bin" / "python3.11"
        (rootfs / "proc" / "cpuinfo").unlink(missing_ok=True)  # left by an interrupted run, it would skew "qemu"

    def command(self, cpu: str, args: list[str], gdb_port: int | None = None) -> list[str]:
        debug = ["-g", str(gdb_port)] if gdb_port else []
        return [self.qemu, "-L", str(self.rootfs), "-cpu", cpu, *debug, str(self.python), str(CHILD), *args]

    def environment(self, site: Path | None) -> dict:
        paths = [str(ROOT)] + ([str(site)] if site else [])
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": os.pathsep.join(paths),
                "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1"}

    def run(self, cpu: str, args: list[str], site: Path | None = None, cpuinfo: str | None = None) -> dict:
        """One emulated run: its stages (parsed JSON lines), exit status and time."""
        fake = self.rootfs / "proc" / "cpuinfo"
        if cpuinfo is not None:
            fake.parent.mkdir(exist_ok=True)
            fake.write_text(cpuinfo)
        start = time.perf_counter()
        try:
            completed = subprocess.run(self.command(cpu, args), env=self.environment(site), capture_output=True,
                                       text=True, timeout=self.timeout, cwd=self.rootfs, preexec_fn=_no_core_dumps)
            status, stdout, stderr = _exit_status(completed.returncode), completed.stdout, completed.stderr
        except subprocess.TimeoutExpired as timeout:
            status, stdout, stderr = "timeout", _text(timeout.stdout), _text(timeout.stderr)
        finally:
            fake.unlink(missing_ok=True)
        stages = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
        return {"exit": status, "stages": stages, "seconds": round(time.perf_counter() - start, 1),
                "stderr_tail": stderr.strip().splitlines()[-3:]}

    def backtrace(self, cpu: str, args: list[str], site: Path, cpuinfo: str | None) -> list[str]:
        """The crashing thread's innermost frames, from gdb-multiarch attached to qemu's gdb stub."""
        if shutil.which("gdb-multiarch") is None:
            return ["gdb-multiarch not installed"]
        fake = self.rootfs / "proc" / "cpuinfo"
        if cpuinfo is not None:
            fake.write_text(cpuinfo)
        port = _free_port()
        child = subprocess.Popen(self.command(cpu, args, gdb_port=port), env=self.environment(site), cwd=self.rootfs,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_no_core_dumps)
        try:
            time.sleep(1)  # let qemu open its gdb stub
            script = [f"set sysroot {self.rootfs}", f"set solib-search-path {site / 'ai_edge_litert'}",
                      "set pagination off", f"target remote :{port}", "continue",
                      "bt 8", "x/i $pc"]
            gdb = subprocess.run(["gdb-multiarch", "-q", "-batch", *[a for s in script for a in ("-ex", s)],
                                  str(self.python)], capture_output=True, text=True, timeout=self.timeout)
            return [line for line in gdb.stdout.splitlines() if line.startswith(("#", "=>", "Thread", "Program"))]
        except subprocess.TimeoutExpired:
            return ["gdb timed out"]
        finally:
            child.kill()
            child.wait()
            fake.unlink(missing_ok=True)


def _no_core_dumps() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _text(data: bytes | str | None) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else (data or "")


def _exit_status(returncode: int) -> str:
    if returncode == 0:
        return "ok"
    if returncode < 0:
        return signal.Signals(-returncode).name
    return f"exit {returncode}"


def coral_case() -> dict | None:
    """The upstream expectation for Coral's smallest model on cat.bmp, or None without the shared data."""
    cases = CORAL / "cases.json"
    if not cases.exists():
        return None
    return next(case for case in json.loads(cases.read_text())["cases"] if case["id"] == CORAL_CASE)


def summarize(run: dict, case: dict | None) -> dict:
    stages = {stage["stage"]: stage for stage in run["stages"]}
    last = run["stages"][-1]["stage"] if run["stages"] else None
    summary = {"exit": run["exit"], "last_stage": last, "seconds": run["seconds"],
               "one_op_ok": stages.get("one_op", {}).get("ok"), "top1": None, "coral_case_passed": None,
               "features": stages.get("hwcap", {}).get("features"),
               "proc_cpuinfo_features": stages.get("hwcap", {}).get("proc_cpuinfo_features")}
    summary["known_problems"] = stages.get("known_problems", {}).get("problems")
    classes = stages.get("classify", {}).get("classes")
    if classes:
        summary["top1"] = classes[0]
        if case:
            hit = [c for c in classes[:case["top_k"]] if c["id"] == case["expected_label_index"]]
            summary["coral_case_passed"] = bool(hit) and hit[0]["score"] >= case["min_score"]
    if run["exit"] != "ok":
        summary["stderr_tail"] = run["stderr_tail"]
    return summary


def measure(args: argparse.Namespace, emulator: Emulator) -> dict:
    case = coral_case()
    model_args = (["--model", str(CORAL / case["model"]), "--image", str(CORAL / case["image"])] if case else [])
    cpus = {}
    for cpu in args.cpus:
        features = emulator.run(cpu, ["--features-only"])["stages"][0]["features"]
        probes = {name: emulator.run(cpu, ["--probe", name])["exit"] for name in args.probes}
        cpus[cpu] = {"device": DEVICES.get(cpu), "features": features, "probes": probes,
                     "cpuinfo": device_cpuinfo(cpu, features).split("\n\n")[0]}
        print(f"{cpu}: {' '.join(features)}; probes {probes}", file=sys.stderr)
    runs = []
    for version in args.versions:
        site = args.cache / "site" / f"litert-{version}"
        if not install_wheels(version, site, download=not args.no_download):
            runs.append({"version": version, "error": f"wheels not installed in {site}"})
            continue
        for cpu in args.cpus:
            for mode in args.cpuinfo:
                cpuinfo = device_cpuinfo(cpu, cpus[cpu]["features"]) if mode == "device" else None
                run = emulator.run(cpu, model_args, site, cpuinfo)
                summary = {"version": version, "cpu": cpu, "cpuinfo": mode, **summarize(run, case)}
                if run["exit"] not in ("ok", "timeout", "exit 1") and not args.no_backtrace:
                    summary["backtrace"] = emulator.backtrace(cpu, model_args, site, cpuinfo)
                print(f"{version} {cpu} cpuinfo={mode}: {summary['exit']} after {summary['last_stage']}, "
                      f"top-1 {summary['top1']}", file=sys.stderr)
                runs.append(summary)
    scans = {}
    if not args.no_scan:
        for version in args.versions:
            folder = args.cache / "site" / f"litert-{version}" / "ai_edge_litert"
            scans[version] = {lib: {"load_alignment": aarch64_isa.load_alignment(folder / lib),
                                    **_scan_summary(aarch64_isa.scan(folder / lib))}
                              for lib in LIBRARIES if (folder / lib).exists()}
    return {"cpus": cpus, "runs": runs, "instructions": scans, "coral_case": case}


def _scan_summary(report: dict) -> dict:
    return {ext: {"instructions": v["instructions"], "functions": v["functions"],
                  "unnamed": dict(list(v["unnamed"].items())[:10])} for ext, v in report.items()}


def _cell(run: dict) -> str:
    if run["exit"] != "ok":
        return f"**{run['exit']}** after `{run['last_stage']}`"
    if run["top1"]:
        return f"ok: {run['top1']['label']} {run['top1']['score']:.2f}"
    return "ok (one-op)" if run["one_op_ok"] else f"wrong one-op result ({run['last_stage']})"


def render(report: dict) -> str:
    runs = [run for run in report["runs"] if "error" not in run]
    columns = list(dict.fromkeys((run["cpu"], run["cpuinfo"]) for run in runs))
    versions = list(dict.fromkeys(run["version"] for run in runs))
    by_key = {(run["version"], run["cpu"], run["cpuinfo"]): run for run in runs}
    machine = report["machine"]
    lines = [
        f"ai-edge-litert on emulated aarch64 CPUs: {machine['qemu']}, Debian bookworm arm64 Python "
        f"{machine['emulated_python']}; one-op ADD model, then `edgeship.runtime.predict` of Coral's "
        f"mobilenet_v1_0.25_128_quant on cat.bmp (top-1 shown; upstream expects tiger cat, score >= 0.25). "
        f"/proc/cpuinfo `qemu`: what qemu passes through (the x86 host's file); `device`: one describing the "
        f"emulated CPU, as a real kernel does. Host: {machine['host']}; {machine['date']}.",
        "",
        "| ai-edge-litert | " + " | ".join(f"{cpu} ({DEVICES.get(cpu, cpu)}), cpuinfo {mode}" for cpu, mode in columns)
        + " |",
        "| --- |" + " --- |" * len(columns),
    ]
    for version in versions:
        cells = [_cell(by_key[(version, *column)]) if (version, *column) in by_key else "" for column in columns]
        lines.append(f"| {version} | " + " | ".join(cells) + " |")
    checked = [run for run in runs if run.get("known_problems") is not None]
    if checked:
        agree = sum((run["exit"] != "ok") == bool(run["known_problems"]) for run in checked)
        crashed = sum(run["exit"] != "ok" for run in checked)
        lines += ["", f"`platform_check.known_problems`, run inside each emulated Python before LiteRT loads: "
                  f"its answer matched the outcome (a warning and a crash, or none and a classification) in "
                  f"{agree} of {len(checked)} runs, {crashed} of which crashed."]
    probes = sorted({name for cpu in report["cpus"].values() for name in cpu["probes"]})
    if probes:
        lines += ["", "Which extensions each emulated CPU executes (one instruction each; SIGILL = absent):", "",
                  "| CPU model | features qemu reports | " + " | ".join(probes) + " |",
                  "| --- | --- |" + " --- |" * len(probes)]
        for cpu, info in report["cpus"].items():
            marks = ["yes" if info["probes"].get(p) == "ok" else info["probes"].get(p, "") for p in probes]
            lines.append(f"| {cpu} | {' '.join(info['features'])} | " + " | ".join(marks) + " |")
    if report["instructions"]:
        extensions = aarch64_isa.EXTENSIONS
        lines += ["", "Instructions beyond Armv8.0 in each version's `libpywrap_litert_common.so` "
                  "(in functions named for their extension / elsewhere), and the alignment of its LOAD segments "
                  "(a Pi 5 kernel has 16 KiB pages):", "",
                  "| ai-edge-litert | " + " | ".join(extensions) + " | LOAD alignment |",
                  "| --- |" + " ---: |" * (len(extensions) + 1)]
        for version, libraries in report["instructions"].items():
            scan = libraries.get(LIBRARIES[0])
            if scan:
                cells = [f"{scan[e]['instructions'] - sum(scan[e]['unnamed'].values())} / "
                         f"{sum(scan[e]['unnamed'].values())}" for e in extensions]
                lines.append(f"| {version} | " + " | ".join(cells) + f" | {scan['load_alignment'] // 1024} KiB |")
    crashes = [run for run in runs if run.get("backtrace")]
    if crashes:
        run = crashes[0]
        frames = [re.sub(r" from \S*/", " from ", line) for line in run["backtrace"]]
        lines += ["", f"Backtrace of {run['version']} on {run['cpu']} (cpuinfo {run['cpuinfo']}), gdb-multiarch "
                  "on qemu's gdb stub, and the faulting instruction:", "", "```", *frames, "```"]
    return "\n".join(lines) + "\n"


def goal(report: dict) -> dict:
    """Where the goal stands: every version classifies on the emulated Pi CPUs when they see a
    device's /proc/cpuinfo, as on a board."""
    runs = [run for run in report["runs"] if "error" not in run and run["cpuinfo"] == "device"]
    passed = [run for run in runs if run["exit"] == "ok"]
    versions = sorted({run["version"] for run in runs})
    return {
        "claim": "the runtime on a Raspberry Pi 4 / Pi 5 CPU (qemu-user, a device's /proc/cpuinfo)",
        "goal": "every ai-edge-litert release classifies",
        "measured": f"{len(passed)} of {len(runs)} runs ({', '.join(versions)})",
        "verdict": "met" if runs and len(passed) == len(runs) else "missed",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=ROOT.parent / "pi-cache",
                        help="Holds rootfs/ and site/litert-<version>/ (default: ../pi-cache).")
    parser.add_argument("--qemu", default="qemu-aarch64-static")
    parser.add_argument("--versions", nargs="+", default=list(VERSIONS))
    parser.add_argument("--cpus", nargs="+", default=list(CPUS), choices=sorted(MIDR))
    parser.add_argument("--cpuinfo", nargs="+", default=list(CPUINFO_MODES), choices=CPUINFO_MODES)
    parser.add_argument("--probes", nargs="*", default=["dotprod", "fp16", "lse", "i8mm", "sve", "crypto"])
    parser.add_argument("--timeout", type=float, default=300, help="Seconds per emulated run.")
    parser.add_argument("--no-download", action="store_true", help="Skip versions whose wheels are not installed.")
    parser.add_argument("--no-scan", action="store_true", help="Skip the instruction scan of the libraries.")
    parser.add_argument("--no-backtrace", action="store_true", help="Do not rerun crashed runs under gdb.")
    parser.add_argument("--out", type=Path, default=RESULTS / "pi_emulation.json")
    parser.add_argument("--render", action="store_true", help="Only rewrite the .md from the existing --out JSON.")
    args = parser.parse_args()
    if args.render:
        args.out.with_suffix(".md").write_text(render(json.loads(args.out.read_text())))
        return 0

    qemu = shutil.which(args.qemu)
    rootfs = args.cache / "rootfs"
    if qemu is None:
        print(f"skipped: {args.qemu} not found. Set-up: see the docstring of {Path(__file__).name} "
              "(apt-get install qemu-user-static).", file=sys.stderr)
        return 0
    if not (rootfs / "usr" / "bin" / "python3.11").exists():
        print(f"skipped: no arm64 Python at {rootfs}/usr/bin/python3.11. Set-up: see the docstring of "
              f"{Path(__file__).name} (debootstrap --arch=arm64 ...).", file=sys.stderr)
        return 0
    if not args.no_scan and shutil.which(aarch64_isa.OBJDUMP) is None:
        print(f"{aarch64_isa.OBJDUMP} not found: the instruction scan is skipped.", file=sys.stderr)
        args.no_scan = True

    emulator = Emulator(qemu, rootfs, args.timeout)
    emulated_python = emulator.run("cortex-a72", ["--features-only"])  # also proves the rootfs runs
    if emulated_python["exit"] != "ok":
        print(f"skipped: the arm64 Python at {rootfs} does not start under qemu: {emulated_python['stderr_tail']}",
              file=sys.stderr)
        return 0
    report = {
        "benchmark": "pi_emulation",
        "machine": {**machine(), "host": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
                    "qemu": qemu_version(qemu), "emulated_python": _deb_version(rootfs, "python3.11-minimal")},
        **measure(args, emulator),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(render(report))
    print(render(report))
    return 0


def _deb_version(rootfs: Path, package: str) -> str:
    """The version of an unpacked package, read from the .deb file name debootstrap left in the cache."""
    debs = sorted((rootfs / "var" / "cache" / "apt" / "archives").glob(f"{package}_*_arm64.deb"))
    return debs[-1].name.split("_")[1] if debs else "unknown"


if __name__ == "__main__":
    sys.exit(main())
