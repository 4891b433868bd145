"""The benchmark matrix: interleaved rounds, every round's samples, a run's variants with their
accuracy, the plot, the device identity, and the noise-aware comparison of two results."""

from __future__ import annotations

import json
import os
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from edgeship.cli import app
from edgeship.errors import ConfigError
from edgeship.runtime.bench_compare import compare_results, load_result, parse_litert_log, ratio_of_medians_ci
from edgeship.runtime.bench_matrix import MatrixConfig, bench_matrix, bench_targets, pareto_front, parse_threads
from edgeship.runtime.device_info import device_identity, parse_cpuinfo
from edgeship.runtime.rundir import RunDir
import test_platform_check

runner = CliRunner()
CORAL_MODEL = Path(__file__).parent / "data" / "coral" / "mobilenet_v1_0.25_128_quant.tflite"
FAST = dict(num_warmup_runs=1, num_round_warmup_runs=0)


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


# --------------------------------------------------------------------------- the matrix


def test_rounds_are_interleaved_and_every_round_is_kept(runtime_setup):
    models, _, _ = runtime_setup
    order = []
    config = MatrixConfig(threads=(1, 2), rounds=3, num_runs=6, **FAST)
    result = bench_matrix([models["float"], models["uint8"]], config,
                          progress=lambda round_index, label: order.append((round_index, label)))
    cells = ["colour_float.tflite x1", "colour_float.tflite x2", "colour_uint8.tflite x1", "colour_uint8.tflite x2"]
    # All cells load first; then each round times every cell once, in the same order.
    assert order == [(-1, c) for c in cells] + [(r, c) for r in range(3) for c in cells]
    assert [(Path(c["model"]).name, c["num_threads"]) for c in result["results"]] == [
        ("colour_float.tflite", 1), ("colour_float.tflite", 2), ("colour_uint8.tflite", 1), ("colour_uint8.tflite", 2)]
    for cell in result["results"]:
        assert cell["num_rounds"] == 3 and [len(r) for r in cell["rounds"]] == [2, 2, 2] and cell["num_runs"] == 6
        samples = np.concatenate(cell["rounds"])
        assert cell["median_ms"] == pytest.approx(np.median(samples))
        assert cell["std_ms"] == pytest.approx(np.std(samples, ddof=1))
        assert cell["min_ms"] <= cell["median_ms"] <= cell["p90_ms"] <= cell["p99_ms"] <= cell["max_ms"]
        assert cell["images_per_s"] == pytest.approx(1000 / cell["median_ms"])
        for key in ("init_ms", "first_inference_ms", "peak_memory_mb", "size_bytes"):
            assert cell[key] > 0, key
        assert cell["target"] == "local" and "pareto" not in cell  # no accuracy: no front
    assert result["config"]["threads"] == [1, 2] and result["config"]["runs_per_round"] == 2


def test_a_cell_that_cannot_run_is_an_error_row_and_the_others_go_on(runtime_setup):
    models, _, _ = runtime_setup
    result = bench_matrix([models["custom"], models["float"]], MatrixConfig(rounds=2, num_runs=2, **FAST))
    broken, timed = result["results"]
    assert "fake-op-double" in broken["error"] and "rounds" not in broken
    assert len(timed["rounds"]) == 2


def test_threads_all_is_the_usable_core_count(runtime_setup):
    models, _, _ = runtime_setup
    cores = len(os.sched_getaffinity(0))
    assert parse_threads("all") == (cores,) and parse_threads("2,1,all") == tuple(sorted({1, 2, cores}))
    result = run("bench", models["float"], "--threads", "all", "--rounds", 2, "--num-runs", 2, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["config"]["threads"] == [cores] and report["results"][0]["num_threads"] == cores
    bad = run("bench", models["float"], "--threads", "1,many")
    assert bad.exit_code == 1 and "'all'" in bad.output
    with pytest.raises(ConfigError, match="rounds"):
        MatrixConfig(rounds=0)


def test_a_run_directory_benches_every_variant_with_its_accuracy(tiny_export, tmp_path):
    run_copy = tmp_path / "run"
    shutil.copytree(tiny_export.parent, run_copy, symlinks=True)  # the session's run stays as it was
    report = RunDir(run_copy).read_json(RunDir(run_copy).report_path)
    result = run("bench", run_copy, "--rounds", 2, "--num-runs", 4, "--num-warmup-runs", 1, "--threads", "1")
    assert result.exit_code == 0, result.output
    assert "accuracy %" in result.stdout and "front" in result.stdout
    bench_dir = RunDir(run_copy).bench_dir
    written = json.loads((bench_dir / "bench.json").read_text())
    cells = written["results"]
    assert sorted(c["variant"] for c in cells) == sorted(report["variants"])
    for cell in cells:
        variant = report["variants"][cell["variant"]]
        assert Path(cell["model"]).name == variant["file"]
        assert cell["test_accuracy"] == variant["test_accuracy"] and cell["agreement"] == variant["agreement"]
        assert isinstance(cell["pareto"], bool) and len(cell["rounds"]) == 2
    fastest = min(cells, key=lambda c: c["median_ms"])
    best = max(c["test_accuracy"] for c in cells)
    assert fastest["pareto"] and any(c["pareto"] for c in cells if c["test_accuracy"] == best)
    assert "| accuracy % |" in (bench_dir / "bench.md").read_text()
    with Image.open(bench_dir / "bench.png") as image:
        image.load()
        assert image.format == "PNG" and image.size == (760, 480)
        # Dots were drawn: the picture is not blank.
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 16) or []) > 10


def test_pareto_front():
    points = [(1.0, 0.80), (2.0, 0.90), (3.0, 0.85), (4.0, 0.95), (4.0, 0.95), (5.0, 0.95)]
    assert pareto_front(points) == [True, True, False, True, True, False]


def test_remote_targets_merge_into_one_result(runtime_setup, monkeypatch):
    """The ssh transport is the boundary here: a stand-in runs the same argv with this machine's CLI."""
    models, _, _ = runtime_setup
    calls = []

    def run_remote(target, argv, files):
        calls.append((target, argv, files))
        result = runner.invoke(app, [*argv, "--json"])
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        report["device"] = dict(report["device"], board="Raspberry Pi 5 Model B Rev 1.0")
        return report

    monkeypatch.setitem(sys.modules, "edgeship.runtime.remote", types.SimpleNamespace(run_remote=run_remote))
    config = MatrixConfig(threads=(1,), rounds=2, num_runs=2, **FAST)
    result = bench_targets([models["float"]], ["local", "pi5"], config, threads_text="all")
    (target, argv, files), = calls
    assert target == "pi5" and files == [models["float"]] and argv[:2] == ["bench", str(models["float"])]
    assert argv[argv.index("--threads") + 1] == "all" and argv[argv.index("--rounds") + 1] == "2"
    assert [c["target"] for c in result["results"]] == ["local", "pi5"]
    assert result["devices"]["pi5"]["board"] == "Raspberry Pi 5 Model B Rev 1.0"
    assert result["devices"]["local"] == result["device"]


# --------------------------------------------------------------------------- identity

X86_CPUINFO = """\
processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 106
model name\t: Intel(R) Xeon(R) Gold 6330 CPU @ 2.00GHz
stepping\t: 6
cpu MHz\t\t: 1995.312
cache size\t: 43008 KB
physical id\t: 0
siblings\t: 2
core id\t\t: 0
cpu cores\t: 2
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ss \
ht syscall nx pdpe1gb rdtscp lm constant_tsc rep_good nopl xtopology cpuid tsc_known_freq pni pclmulqdq ssse3 fma \
cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c rdrand hypervisor lahf_lm abm 3dnowprefetch \
fsgsbase bmi1 avx2 smep bmi2 erms invpcid avx512f avx512dq rdseed adx smap avx512ifma clflushopt clwb avx512cd \
sha_ni avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves avx512vbmi umip pku ospke avx512_vbmi2 gfni vaes \
vpclmulqdq avx512_vnni avx512_bitalg avx512_vpopcntdq rdpid md_clear arch_capabilities
bogomips\t: 3990.62

processor\t: 1
vendor_id\t: GenuineIntel
model\t\t: 106
model name\t: Intel(R) Xeon(R) Gold 6330 CPU @ 2.00GHz
flags\t\t: fpu vme de pse sse sse2 avx avx2 avx512f avx512_vnni
"""

# One core's block of a Pi 4's /proc/cpuinfo, as the platform check's tests have it, for four cores.
_PI4_CORE = test_platform_check.PI4_CPUINFO.split("\n\n")[0] + "\n\n"
PI4_CPUINFO = "".join(_PI4_CORE.replace("processor\t: 0", f"processor\t: {core}") for core in range(4)) + """\
Revision\t: c03114
Serial\t\t: 100000003e6a0a8f
Model\t\t: Raspberry Pi 4 Model B Rev 1.4
"""

PI5_CPUINFO = "".join(f"""\
processor\t: {core}
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x4
CPU part\t: 0xd0b
CPU revision\t: 1

""" for core in range(4)) + """\
Revision\t: d04170
Serial\t\t: 3e8a3b0e2c1f5d7a
Model\t\t: Raspberry Pi 5 Model B Rev 1.0
"""

PI4_32BIT_CPUINFO = """\
processor\t: 0
model name\t: ARMv7 Processor rev 3 (v7l)
BogoMIPS\t: 108.00
Features\t: half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae evtstrm crc32
CPU implementer\t: 0x41
CPU architecture: 7
CPU variant\t: 0x0
CPU part\t: 0xd08
CPU revision\t: 3

Hardware\t: BCM2711
Revision\t: c03114
Model\t\t: Raspberry Pi 4 Model B Rev 1.4
"""


@pytest.mark.parametrize("text, cpu, features, board", [
    (X86_CPUINFO, "Intel(R) Xeon(R) Gold 6330 CPU @ 2.00GHz", ["avx2", "avx512_vnni", "avx512f"], None),
    (PI4_CPUINFO, "Cortex-A72", ["asimd"], "Raspberry Pi 4 Model B Rev 1.4"),
    (PI5_CPUINFO, "Cortex-A76", ["asimd", "asimddp"], "Raspberry Pi 5 Model B Rev 1.0"),
    (PI4_32BIT_CPUINFO, "Cortex-A72", ["neon"], "Raspberry Pi 4 Model B Rev 1.4"),
], ids=["x86", "pi4", "pi5", "pi4-32bit"])
def test_cpuinfo_parser(text, cpu, features, board):
    info = parse_cpuinfo(text)
    assert info == {"cpu_model": cpu, "isa_features": features, "board": board}


def test_every_result_says_what_it_ran_on(runtime_setup):
    models, _, _ = runtime_setup
    identity = device_identity()
    assert identity["cores"] == len(os.sched_getaffinity(0)) and identity["cpu_model"]
    assert identity["versions"]["ai-edge-litert"] and identity["versions"]["edgeship"]
    assert identity["python"] == ".".join(map(str, sys.version_info[:3])) and identity["os"]
    result = run("bench", models["uint8"], "--rounds", 1, "--num-runs", 2, "--json")
    assert json.loads(result.stdout)["device"].keys() == identity.keys()


# --------------------------------------------------------------------------- compare


def synthetic(scale: float = 1.0, seed: int = 0, round_noise: float = 0.03, sample_noise: float = 0.05,
              rounds: int = 5, runs: int = 20) -> dict:
    """A bench result of one cell: 10 ms invokes, a per-round spell and per-invoke jitter."""
    rng = np.random.default_rng(seed)
    samples = [(10.0 * scale * rng.lognormal(0, round_noise) * rng.lognormal(0, sample_noise, runs)).tolist()
               for _ in range(rounds)]
    return {"device": device_identity(), "results": [{"model": "/any/where/model_int8.tflite", "num_threads": 2,
                                                       "rounds": samples}]}


def test_compare_identical_passes_and_thirty_percent_slower_fails(tmp_path):
    old = synthetic(seed=1)
    same = compare_results(old, old)
    assert same["passed"] and same["cells"][0]["verdict"] == "same"
    low, high = same["cells"][0]["ci"]
    assert same["cells"][0]["ratio"] == 1.0 and low < 1 < high
    slower = json.loads(json.dumps(old))
    slower["results"][0]["rounds"] = [[1.3 * v for v in r] for r in old["results"][0]["rounds"]]
    verdict = compare_results(old, slower)
    assert not verdict["passed"] and verdict["cells"][0]["verdict"] == "slower"
    assert verdict["cells"][0]["ratio"] == pytest.approx(1.3) and verdict["cells"][0]["ci"][0] > 1.15

    (tmp_path / "old.json").write_text(json.dumps(old))
    (tmp_path / "new.json").write_text(json.dumps(slower))
    passed = run("bench", "--compare", tmp_path / "old.json", tmp_path / "old.json")
    assert passed.exit_code == 0, passed.output
    assert "model_int8.tflite" in passed.stdout and "passed" in passed.stdout
    failed = run("bench", "--compare", tmp_path / "old.json", tmp_path / "new.json", "--json")
    assert failed.exit_code == 3, failed.output
    assert json.loads(failed.stdout)["cells"][0]["verdict"] == "slower"
    tolerant = run("bench", "--compare", tmp_path / "old.json", tmp_path / "new.json", "--max-slowdown", "0.5")
    assert tolerant.exit_code == 0 and "slower within tolerance" in tolerant.stdout
    usage = run("bench", "--compare", tmp_path / "old.json")
    assert usage.exit_code == 2


def test_noisy_but_equal_pairs_pass():
    # Same distribution, heavy noise: spells of 10 % between rounds, 20 % jitter between invokes.
    outcomes = [compare_results(synthetic(seed=2 * i, round_noise=0.1, sample_noise=0.2),
                                synthetic(seed=2 * i + 1, round_noise=0.1, sample_noise=0.2))
                for i in range(20)]
    assert sum(not o["passed"] for o in outcomes) <= 1
    # The intervals are honest about the noise: wide, and around 1.
    assert all(o["cells"][0]["ci"][1] - o["cells"][0]["ci"][0] > 0.05 for o in outcomes)


def test_bootstrap_is_seeded_and_resamples_rounds():
    rounds_old = [[10.0] * 10, [12.0] * 10]
    rounds_new = [[10.0] * 10, [12.0] * 10]
    first = ratio_of_medians_ci(rounds_old, rounds_new, seed=3)
    assert first == ratio_of_medians_ci(rounds_old, rounds_new, seed=3)
    # No jitter within rounds, yet the interval is wide: the rounds' spells are the noise.
    assert first[1] < 0.9 and first[2] > 1.1


def test_compare_names_what_it_could_not_match():
    old, new = synthetic(), synthetic()
    new["results"][0]["num_threads"] = 4
    with pytest.raises(ConfigError, match="model_int8.tflite x2"):
        compare_results(old, new)


# --------------------------------------------------------------------------- LiteRT's benchmark_model

LITERT_LOG = """\
INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Min num runs: [50]
INFO: Num threads: [4]
INFO: Graph: [/data/local/tmp/model_int8.tflite]
INFO: #threads used for CPU inference: [4]
INFO: Loaded model /data/local/tmp/model_int8.tflite
INFO: The input model file size (MB): 2.61
INFO: Initialized session in 14.9ms.
INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=61 first=12004 curr=7919 min=7804 max=12004 avg=8190.4 std=561 p5=7830 median=8064 p95=8806

INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=124 first=8101 curr=7955 min=7790 max=9900 avg=8052.6 std=233 p5=7810 median=7990 p95=8420

INFO: Inference timings in us: Init: 14923, First inference: 12004, Warmup (avg): 8190.4, Inference (avg): 8052.6
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the \
actual memory footprint of the model at runtime. Take the information at your discretion.
INFO: Memory footprint delta from the start of the tool (MB): init=5.8 overall=11.2
INFO: Overall peak memory footprint (MB) via periodic monitoring: 17.4
INFO: STARTING!
INFO: Num threads: [4]
INFO: Graph: [/data/local/tmp/model_int8.tflite]
INFO: count=50 first=8300 curr=8050 min=7900 max=9100 avg=8110 std=190 p5=7950 median=8100 p95=8500
INFO: Inference timings in us: Init: 15210, First inference: 11800, Warmup (avg): 8300, Inference (avg): 8110
STARTING!
Num threads: [1]
Graph: [/data/local/tmp/model_int8.tflite]
count=1 curr=31000
count=50 first=25100 curr=24900 min=24700 max=26000 avg=25000.5 std=300
Inference timings in us: Init: 16000, First inference: 31000, Warmup (avg): 31000, Inference (avg): 25000.5
"""


def test_litert_log_parser(tmp_path):
    result = parse_litert_log(LITERT_LOG)
    four, one = result["results"]
    assert (four["model"], four["num_threads"], four["num_rounds"]) == ("model_int8.tflite", 4, 2)
    assert four["rounds"] == [[7.99], [8.1]] and four["statistic"] == "median"  # each run's median, in ms
    assert four["median_ms"] == pytest.approx(8.045) and four["init_ms"] == pytest.approx(15.0665)
    assert four["first_inference_ms"] == pytest.approx(11.902) and four["peak_memory_mb"] == 17.4
    assert four["num_runs"] == 174 and four["min_ms"] == pytest.approx(7.79) and four["max_ms"] == pytest.approx(9.9)
    assert (one["num_threads"], one["statistic"], one["rounds"]) == (1, "avg", [[25.0005]])
    assert one["std_ms"] == pytest.approx(0.3) and one["images_per_s"] == pytest.approx(1000 / 25.0005)
    (tmp_path / "phone.log").write_text(LITERT_LOG)
    assert load_result(tmp_path / "phone.log")["results"] == result["results"]
    same = run("bench", "--compare", tmp_path / "phone.log", tmp_path / "phone.log")
    assert same.exit_code == 0 and "model_int8.tflite" in same.stdout, same.output
    (tmp_path / "other.txt").write_text("nothing here\n")
    unknown = run("bench", "--compare", tmp_path / "phone.log", tmp_path / "other.txt")
    assert unknown.exit_code == 1 and "benchmark_model" in unknown.output


def test_render_merges_a_phone_log_with_a_desk_result_in_one_table_and_plot(tmp_path):
    # A run with one exported variant; the phone benched the same file under the same name.
    run_dir = tmp_path / "run"
    (run_dir / "export").mkdir(parents=True)
    shutil.copy(CORAL_MODEL, run_dir / "export" / "model_int8.tflite")
    report = {"variants": {"int8": {"file": "model_int8.tflite", "test_accuracy": 0.875, "agreement": 0.99}}}
    (run_dir / "export" / "report.json").write_text(json.dumps(report))
    desk = run("bench", run_dir, "--rounds", 2, "--num-runs", 3, "--threads", "1", "--out", tmp_path / "desk")
    assert desk.exit_code == 0, desk.output
    (tmp_path / "pixel7.log").write_text(LITERT_LOG)

    out = tmp_path / "merged"
    result = run("bench", "--render", tmp_path / "desk" / "bench.json", tmp_path / "pixel7.log", "--run", run_dir,
                 "--out", out)
    assert result.exit_code == 0, result.output
    merged = json.loads((out / "bench.json").read_text())
    cells = {(c["target"], c["num_threads"]): c for c in merged["results"]}
    assert sorted(cells) == [("local", 1), ("pixel7", 1), ("pixel7", 4)]
    # The phone's cells carry the run's accuracy by file name; its numbers are the log's.
    assert cells["pixel7", 4]["test_accuracy"] == 0.875 and cells["pixel7", 4]["median_ms"] == pytest.approx(8.045)
    assert all(isinstance(cell["pareto"], bool) for cell in cells.values())
    markdown = (out / "bench.md").read_text()
    table = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| target | model |") and "| accuracy % |" in table[0]
    assert [line.split(" | ")[0] for line in table[1:]] == ["| local", "| pixel7", "| pixel7"]
    assert "8.045" in markdown and "`pixel7.log`" in markdown and "pixel7" in result.stdout
    with Image.open(out / "bench.png") as image:
        image.load()
        assert image.format == "PNG" and len(image.convert("RGB").getcolors(maxcolors=1 << 16) or []) > 10
    # Saved merged results are results again: --compare reads them.
    again = run("bench", "--compare", out / "bench.json", tmp_path / "pixel7.log")
    assert again.exit_code == 0, again.output

    # Without --run a log has no accuracy: its cells are in the table, not on a plot.
    plain = run("bench", "--render", tmp_path / "pixel7.log", "--json")
    assert plain.exit_code == 0, plain.output
    assert [c.get("test_accuracy") for c in json.loads(plain.stdout)["results"]] == [None, None]
    twice = run("bench", "--render", tmp_path / "pixel7.log", tmp_path / "pixel7.log")
    assert twice.exit_code == 1 and "rename a log" in twice.output
    misuse = run("bench", "--render", tmp_path / "pixel7.log", "--compare")
    assert misuse.exit_code == 2
