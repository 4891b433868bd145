"""The offline Edge TPU mapping prediction against what Google's compiler really did.

For every (source, compiled) pair found (``X.tflite`` beside ``X_edgetpu.tflite``), the truth is
read from the compiled file (ops left outside ``edgetpu-custom-op`` ran on the CPU; those that
feed it ran before it) and set beside :func:`edgeship.edgetpu.predict_mapping` of the source:
ops on the Edge TPU, ops on the CPU by name, ops before the segment, and whether they agree.
Pairs come in corpora, each from one public repository under its licence (``CORPORA``); a
model found in two corpora counts in the first only.

    python benchmarks/edgetpu_mapping.py                                  # the folders beside the project
    python benchmarks/edgetpu_mapping.py --git coralmicro=/path/to/coralmicro.git --pairs mine=FOLDER

``--git NAME=GITDIR`` reads corpus NAME's folder out of a bare or normal clone of its repository
(``git`` on PATH) into a temporary folder; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, machine, machine_line, write_results  # noqa: E402

SHARED = ROOT.parent / "shared" / "external"
VENDORED = ROOT / "tests" / "data" / "edgetpu"
_MAX_MODEL_BYTES = 64 << 20   # Coral's largest test model is under 40 MB


@dataclass(frozen=True)
class Corpus:
    repository: str
    folder: str          # where the pairs sit in the repository ("" for its root and below)
    licence: str
    what: str


CORPORA = {
    "coral-test-data": Corpus("github.com/google-coral/test_data", "", "Apache-2.0",
                              "Coral's test models: classifiers, DeepLab, PoseNet/BodyPix, MoveNet, a Keras LSTM, tools"),
    "coral-edgetpu": Corpus("github.com/google-coral/edgetpu", "test_data", "Apache-2.0",
                            "the same families as built by older compilers, MobileNet-EdgeTPU, iNat classifiers"),
    "project-bodypix": Corpus("github.com/google-coral/project-bodypix", "models", "Apache-2.0",
                              "BodyPix segmenters at eight input sizes, per-tensor and per-axis builds, PoseNet"),
    "project-posenet": Corpus("github.com/google-coral/project-posenet", "models/mobilenet", "Apache-2.0",
                              "PoseNet MobileNet v1 at three input sizes, decoder as a custom op"),
    "coralmicro": Corpus("github.com/google-coral/coralmicro", "models", "Apache-2.0",
                         "YAMNet audio classifier on spectrogram input (the one pair with its source)"),
}
DEFAULT_FOLDERS = [("coral-test-data", SHARED / "coral"), ("coral-test-data", SHARED / "edgetpu"),
                   ("coral-test-data", VENDORED), ("coral-test-data", VENDORED / "coral_test_data")]


def find_pairs(folders: list[tuple[str, Path]]) -> list[tuple[str, Path, Path]]:
    """(corpus, source, compiled) for every pair in the folders, each source model once."""
    pairs = {}
    for corpus, folder in folders:
        for compiled in sorted(folder.glob("*_edgetpu.tflite")):
            source = compiled.with_name(compiled.name.replace("_edgetpu.tflite", ".tflite"))
            if source.exists() and source.stat().st_size and compiled.stat().st_size:
                # The same model may sit in two folders under two names: count it once.
                pairs.setdefault(hashlib.sha256(source.read_bytes()).hexdigest(), (corpus, source, compiled))
    return list(pairs.values())


def _git(git_dir: Path, *arguments: str) -> bytes:
    return subprocess.run(["git", f"--git-dir={git_dir}", *arguments], capture_output=True, check=True).stdout


def extract_pairs(git_dir: Path, folder: str, target: Path) -> Path:
    """Copies the ``.tflite`` files under ``folder`` of ``git_dir``'s HEAD into ``target``, flat
    (``a/b.tflite`` becomes ``a_b.tflite``), skipping files the snapshot lacks or too large."""
    if not (git_dir / "HEAD").exists():
        git_dir = git_dir / ".git"
    listing = _git(git_dir, "ls-tree", "-r", "-l", "HEAD", *([folder] if folder else [])).decode()
    for line in listing.splitlines():
        meta, path = line.split("\t", 1)
        _mode, kind, blob, size = meta.split()
        if kind != "blob" or not path.endswith(".tflite") or not size.isdigit() or int(size) > _MAX_MODEL_BYTES:
            continue
        if subprocess.run(["git", f"--git-dir={git_dir}", "cat-file", "-e", blob], capture_output=True).returncode:
            continue  # listed in the tree, absent from a partial snapshot
        name = path[len(folder):].lstrip("/") if folder else path
        (target / name.replace("/", "_")).write_bytes(_git(git_dir, "cat-file", "blob", blob))
    return target


def measure(corpus: str, source: Path, compiled: Path) -> dict:
    from edgeship.edgetpu.mapping import compiled_mapping, predict_mapping
    from edgeship.runtime.graph import read_graph

    truth = compiled_mapping(compiled)
    num_ops = len(read_graph(source).ops)
    report = predict_mapping(source)
    actual_on_edgetpu = num_ops - sum(truth["on_cpu"].values())
    return {
        "corpus": corpus, "model": source.name, "num_ops": num_ops, "compilable": report.compilable,
        "predicted_on_edgetpu": report.on_edgetpu, "actual_on_edgetpu": actual_on_edgetpu,
        "predicted_on_cpu": report.on_cpu, "actual_on_cpu": truth["on_cpu"],
        "predicted_before_segment": report.num_before_segment, "actual_before_segment": truth["num_before_segment"],
        "actual_segments": truth["num_edgetpu_segments"], "actual_cpu_inside": truth["num_cpu_inside"],
        "min_runtime_version": report.min_runtime_version,
        "uncertain": sum(p.uncertain for p in report.placements),
        "agrees": report.compilable and report.on_cpu == truth["on_cpu"] and report.on_edgetpu == actual_on_edgetpu
        and report.num_before_segment == truth["num_before_segment"],
    }


def _corpus_table(rows: list[dict]) -> list[str]:
    lines = ["| corpus | source | licence | pairs | agree | ops on the Edge TPU, predicted / actual |",
             "| --- | --- | --- | ---: | ---: | ---: |"]
    for name, corpus in CORPORA.items():
        mine = [r for r in rows if r["corpus"] == name]
        if mine:
            predicted, actual = sum(r["predicted_on_edgetpu"] for r in mine), sum(r["actual_on_edgetpu"] for r in mine)
            lines.append(f"| {name} | {corpus.repository} (`{corpus.folder or '/'}`): {corpus.what} | "
                         f"{corpus.licence} | {len(mine)} | {sum(r['agrees'] for r in mine)} | {predicted} / {actual} |")
    return lines


def render(report: dict) -> str:
    """The results as markdown: agreement per corpus, then every pair (``report``: this script's JSON)."""
    rows, info = report["pairs"], report["machine"]

    def cpu(counts: dict) -> str:
        return ", ".join(f"{k} x{v}" for k, v in counts.items()) or "-"

    lines = ["| corpus | model | ops | on Edge TPU predicted / actual | before the segment predicted / actual | "
             "on CPU predicted | on CPU actual | runtime | agrees |",
             "| --- | --- | ---: | ---: | ---: | --- | --- | ---: | --- |"]
    for r in rows:
        lines.append(f"| {r['corpus']} | {r['model']} | {r['num_ops']} | {r['predicted_on_edgetpu']} / "
                     f"{r['actual_on_edgetpu']} | {r['predicted_before_segment']} / {r['actual_before_segment']} | "
                     f"{cpu(r['predicted_on_cpu'])} | {cpu(r['actual_on_cpu'])} | {r['min_runtime_version']} | "
                     f"{'yes' if r['agrees'] else '**no**'} |")
    agreed = sum(r["agrees"] for r in rows)
    segments = sum(r["actual_segments"] == 1 and r["actual_cpu_inside"] == 0 for r in rows)
    summary = (f"Prediction agrees with the compiled file on {agreed} of {len(rows)} pairs. {segments} of the "
               f"{len(rows)} compiled files hold one Edge TPU segment with no CPU op both fed by it and feeding it.")
    return "\n".join([summary, "", *_corpus_table(rows), "", *lines, "", machine_line(info)]) + "\n"


def goal(report: dict) -> dict:
    """Where the goal stands: the prediction agrees with the compiler on every pair."""
    pairs = report["pairs"]
    agree = sum(row["agrees"] for row in pairs)
    return {
        "claim": "offline Edge TPU mapping vs Google's compiler (ops on the Edge TPU and on the CPU)",
        "goal": "agrees on every pair",
        "measured": f"{agree} of {len(pairs)} pairs in {len({row['corpus'] for row in pairs})} corpora",
        "verdict": "met" if agree == len(pairs) else "missed",
    }


def _named(value: str) -> tuple[str, Path]:
    name, _, path = value.partition("=")
    if not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {value!r} (e.g. coralmicro=../coralmicro)")
    return name, Path(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=_named, nargs="*", default=[], help="More folders of pairs: CORPUS=FOLDER.")
    parser.add_argument("--git", type=_named, nargs="*", default=[],
                        help=f"Clones to read a corpus from: CORPUS=GITDIR, CORPUS one of {', '.join(CORPORA)}.")
    args = parser.parse_args()
    unknown = [name for name, _ in args.git if name not in CORPORA]
    if unknown:
        sys.exit(f"Unknown corpus {unknown[0]!r} for --git: use one of {', '.join(CORPORA)}, or --pairs for a folder.")
    with tempfile.TemporaryDirectory() as temporary:
        folders = list(DEFAULT_FOLDERS)
        for number, (name, git_dir) in enumerate(args.git):
            target = Path(temporary) / f"{number}-{name}"
            target.mkdir()
            folders.append((name, extract_pairs(git_dir, CORPORA[name].folder, target)))
        pairs = find_pairs(folders + args.pairs)
        if not pairs:
            sys.exit("No (X.tflite, X_edgetpu.tflite) pairs found; pass --pairs CORPUS=FOLDER or --git CORPUS=GITDIR.")
        rows = [measure(*pair) for pair in pairs]
    report = {"machine": machine(), "corpora": {k: vars(v) for k, v in CORPORA.items()}, "pairs": rows}
    path = write_results("edgetpu_mapping", report, render(report))
    print(path.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
