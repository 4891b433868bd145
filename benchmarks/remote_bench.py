"""Does `edgeship bench` over ssh measure the same invoke as `edgeship bench` run here?

Starts a real OpenSSH server on 127.0.0.1 (``tests/sshd.py``: throwaway keys, nothing in
``~/.ssh`` touched) and runs, on the same models, interleaved in one session:

- ``local``: ``edgeship bench MODEL --json`` in a fresh process here;
- ``ssh``: the same command through :func:`edgeship.runtime.remote.run_remote` to the loopback
  server, which copies the model over the ssh connection and runs it in a temporary folder.

The device is this machine, so any difference is the transport's. Each round runs both on every
model, alternating which goes first. Machines are shared and noisy, so only the ratio within one
session is meaningful, not the absolute times.

Reports, per model, the ratio of the ssh median to the local median (median over rounds of each
run's median invoke), and the wall time of a whole call either way (process start, copying,
loading, warm-up, timing). Goal: ratio <= 1.05, i.e. the transport adds nothing to the measured
invoke.

Usage:
    python benchmarks/remote_bench.py                    # the vendored Coral CPU models
    python benchmarks/remote_bench.py --model m.tflite --rounds 31 --runs 300

Writes benchmarks/results/remote_bench.json and remote_bench.md.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, machine_line, ratio_arguments, ratio_goal, ratio_report, write_results

sys.path.insert(0, str(ROOT / "tests"))  # the loopback sshd the tests use
from sshd import start_sshd

from edgeship.runtime.remote import run_remote

GOAL = 1.05
EDGESHIP = str(Path(sys.executable).parent / "edgeship")
VENDORED = ROOT / "tests" / "data" / "coral"


def bench_argv(model: Path, args) -> list[str]:
    return ["bench", str(model), "--threads", str(args.threads), "--num-runs", str(args.runs),
            "--num-warmup-runs", str(args.warmup), "--json"]


def run_local(model: Path, args, server) -> dict:
    done = subprocess.run([EDGESHIP, *bench_argv(model, args)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def run_ssh(model: Path, args, server) -> dict:
    return run_remote(server.host, bench_argv(model, args), [model], ssh_options=server.ssh_options,
                      remote_command=EDGESHIP)


MODES = {"local": run_local, "ssh": run_ssh}


def measure(models: list[Path], args, server) -> dict[str, dict[str, dict[str, list[float]]]]:
    """Per model and mode: each round's median invoke (ms) and whole-call wall time (s)."""
    samples = {str(m): {mode: {"median_ms": [], "wall_s": []} for mode in MODES} for m in models}
    for round_index in range(args.rounds):
        order = list(MODES) if round_index % 2 == 0 else list(reversed(MODES))
        for model in models:
            for mode in order:
                start = time.perf_counter()
                row = MODES[mode](model, args, server)["results"][0]
                wall = time.perf_counter() - start
                samples[str(model)][mode]["median_ms"].append(row["median_ms"])
                samples[str(model)][mode]["wall_s"].append(wall)
                print(f"round {round_index + 1}/{args.rounds} {model.name:40s} {mode:5s} "
                      f"{row['median_ms']:.3f} ms  ({wall:.2f} s call)", file=sys.stderr)
    return samples


def summary_row(model: Path, local: dict[str, list[float]], ssh: dict[str, list[float]]) -> dict:
    ratio = statistics.median(ssh["median_ms"]) / statistics.median(local["median_ms"])
    return {
        "model": model.name,
        "local_median_ms": statistics.median(local["median_ms"]),
        "ssh_median_ms": statistics.median(ssh["median_ms"]),
        "ratio": ratio,
        "per_round_ratios": [a / b for a, b in zip(ssh["median_ms"], local["median_ms"])],
        # Paired within a round (the two runs are neighbours in time): less moved by a busy spell.
        "median_round_ratio": statistics.median(a / b for a, b in zip(ssh["median_ms"], local["median_ms"])),
        "local_round_medians_ms": local["median_ms"],
        "ssh_round_medians_ms": ssh["median_ms"],
        "local_call_s": statistics.median(local["wall_s"]),
        "ssh_call_s": statistics.median(ssh["wall_s"]),
        "within_goal": ratio <= GOAL,
    }


def render(report: dict) -> str:
    """The markdown table of a remote-bench report."""
    settings = report["settings"]
    lines = [
        f"Median invoke latency, {settings['threads']} thread(s), {settings['runs']} runs x {settings['rounds']} "
        "interleaved rounds: `edgeship bench` here vs the same command over ssh to a real sshd on 127.0.0.1 "
        f"(the model copied over the connection); ratio = ssh median / local median (goal: <= "
        f"{report['goal_ratio_at_most']}). A call's wall time includes starting Python, copying and loading.",
        f"Machine: {machine_line(report['machine'])}",
        "",
        "| model | local ms | over ssh ms | ratio | median per-round ratio | local call s | ssh call s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ] + [
        f"| {r['model']} | {r['local_median_ms']:.3f} | {r['ssh_median_ms']:.3f} | {r['ratio']:.3f} | "
        f"{r['median_round_ratio']:.3f} | "
        f"{r['local_call_s']:.2f} | {r['ssh_call_s']:.2f} |"
        for r in report["results"]
    ]
    return "\n".join(lines) + "\n"


def goal(report: dict) -> dict:
    """Where the goal stands: the claim, the goal, what was measured, met or missed."""
    return ratio_goal(report, "`edgeship bench --on` over ssh measures the invoke as a local run does")


def main() -> int:
    parser = ratio_arguments(__doc__, rounds=21, runs_help="Timed runs per call.")
    args = parser.parse_args()

    models = sorted(p for p in VENDORED.glob("*.tflite") if not p.stem.endswith("_edgetpu")) + args.model
    folder = Path(tempfile.mkdtemp(prefix="edgeship-sshd-"))
    server = start_sshd(folder)
    try:
        samples = measure(models, args, server)
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
    rows = [summary_row(m, samples[str(m)]["local"], samples[str(m)]["ssh"]) for m in models]
    report = ratio_report("Median invoke latency: `edgeship bench` here vs over ssh to a loopback sshd (same "
                          "machine), same models and threads, interleaved rounds in one session.", args, rows, GOAL)
    markdown = render(report)
    write_results("remote_bench", report, markdown, args.out)
    print(markdown)
    return 0 if report["all_within_goal"] else 1


if __name__ == "__main__":
    sys.exit(main())
