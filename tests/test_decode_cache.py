"""The machine-wide decode cache: reuse, invalidation, damage, eviction, a killed fill, two
processes filling it at once, and preparation memory that does not grow with the data set."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from edgeship.cli import app
from edgeship.runtime.decode_cache import DecodeCache, cache_root, parse_size
from edgeship.runtime.decoding import decode_file, fill_cache
from edgeship.runtime.image import preprocess
from edgeship.train.config import TrainConfig
from edgeship.train.data import load_data, prepare_data

from photos import write_photos

ROOT = Path(__file__).resolve().parents[1]
SIZE = (32, 32)
METHOD = "bilinear-asymmetric"


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    write_photos(root, ("a", "b", "c"), per_class=6, sizes=((64, 48), (40, 56)))
    return root


@pytest.fixture(scope="module")
def many_tiny(tmp_path_factory) -> Path:
    """3,000 tiny JPEGs, in 2 classes: enough to see memory grow if every image were held."""
    root = tmp_path_factory.mktemp("many")
    rng = np.random.default_rng(0)
    for index in range(3000):
        folder = root / ("odd" if index % 2 else "even")
        folder.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / f"{index:05d}.png")
    return root


def _config(data: Path, tmp_path: Path, cache: Path, **changes) -> TrainConfig:
    return TrainConfig.tiny(data_dir=str(data), out_dir=str(tmp_path / "run"), cache_dir=str(cache), **changes)


def _entries(cache: Path) -> list[Path]:
    return sorted(cache.rglob("*.px"))


def _subprocess_env(cache: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "EDGESHIP_CACHE_DIR": str(cache)}


def test_second_prepare_decodes_nothing_and_gives_the_same_pixels(photos, tmp_path):
    cache = tmp_path / "cache"
    first = prepare_data(_config(photos, tmp_path / "one", cache), tmp_path / "one")
    assert (first.decode_stats.decoded, first.decode_stats.reused) == (18, 0)
    assert isinstance(first.pixels, np.memmap) and not first.pixels.flags.writeable
    second = prepare_data(_config(photos, tmp_path / "two", cache), tmp_path / "two")
    assert (second.decode_stats.decoded, second.decode_stats.reused) == (0, 18)
    assert np.array_equal(np.asarray(first.pixels), np.asarray(second.pixels))
    # Each row is exactly what the device runtime computes from the file.
    rel, _, _ = first.split.test[0]
    row = len(first.split.train) + len(first.split.val)
    assert np.array_equal(first.pixels[row], preprocess(photos / rel, SIZE, METHOD))
    # Another size is another key: decoded again, the first size's entries stay.
    other = prepare_data(_config(photos, tmp_path / "three", cache, image_size=40), tmp_path / "three")
    assert other.decode_stats.decoded == 18 and other.pixels.shape[1:] == (40, 40, 3)
    assert DecodeCache(cache).info()["keys"] == {f"32x32-{METHOD}": 18, f"40x40-{METHOD}": 18}


def test_a_kept_run_array_is_linked_not_copied_and_checked_before_reuse(photos, tmp_path):
    cache = tmp_path / "cache"
    first = prepare_data(_config(photos, tmp_path / "one", cache), tmp_path / "one")
    second = prepare_data(_config(photos, tmp_path / "two", cache), tmp_path / "two")
    assert os.stat(first.pixels.filename).st_ino == os.stat(second.pixels.filename).st_ino  # one copy on disk
    kept, = cache.rglob("arrays/*.npy")
    damaged = bytearray(kept.read_bytes())
    damaged[-1] ^= 0xFF
    kept.unlink()
    kept.write_bytes(bytes(damaged))  # a file of its own: the runs' arrays stay as they were
    third = prepare_data(_config(photos, tmp_path / "three", cache), tmp_path / "three")
    assert os.stat(third.pixels.filename).st_ino != os.stat(first.pixels.filename).st_ino
    assert np.array_equal(np.asarray(third.pixels), np.asarray(first.pixels))


def test_a_changed_photo_is_decoded_again(photos, tmp_path):
    data = tmp_path / "data"
    write_photos(data, ("a", "b", "c"), per_class=4, sizes=((64, 48),))
    cache = tmp_path / "cache"
    prepare_data(_config(data, tmp_path / "one", cache), tmp_path / "one")
    changed = sorted(data.glob("b/*.jpg"))[0]
    Image.fromarray(np.full((48, 64, 3), 7, np.uint8)).save(changed, quality=90)
    again = prepare_data(_config(data, tmp_path / "two", cache), tmp_path / "two")
    assert (again.decode_stats.decoded, again.decode_stats.reused) == (1, 11)
    rows = [rel for name in ("train", "val", "test") for rel, _, _ in again.split.part(name)]
    assert np.array_equal(again.pixels[rows.index(str(changed.relative_to(data)))],
                          preprocess(changed, SIZE, METHOD))


def test_a_damaged_entry_is_decoded_again_not_trusted(photos, tmp_path):
    cache = DecodeCache(tmp_path / "cache")
    path = sorted(photos.rglob("*.jpg"))[0]
    (digest, reason), = fill_cache(cache, [path], SIZE, METHOD)[0]
    entry = cache.entry_path(digest, SIZE, METHOD)
    good = entry.read_bytes()
    for damaged in (good[:-1], good[:-1] + bytes([good[-1] ^ 1]), good[:4] + b"\xff\xff" + good[6:], b""):
        entry.write_bytes(damaged)
        assert cache.read(digest, SIZE, METHOD) is None and not entry.exists()
        _, stats = fill_cache(cache, [path], SIZE, METHOD)
        assert stats.decoded == 1 and entry.read_bytes() == good
    # A run's pixels are rebuilt from a damaged cache without a word from the user.
    config = _config(photos, tmp_path, tmp_path / "cache")
    for entry in _entries(tmp_path / "cache"):
        entry.write_bytes(entry.read_bytes()[:-3] + b"xyz")
    data = prepare_data(config, tmp_path / "run")
    assert data.decode_stats.decoded == 18 - 1 and data.decode_stats.reused == 1


def test_lost_run_pixels_are_rebuilt_from_the_cache(photos, tmp_path):
    config = _config(photos, tmp_path, tmp_path / "cache")
    first = prepare_data(config, tmp_path / "run")
    for array in (tmp_path / "run" / "cache").iterdir():
        array.unlink()
    again = load_data(tmp_path / "run", config)
    assert again.decode_stats.decoded == 0 and np.array_equal(np.asarray(again.pixels), np.asarray(first.pixels))


def test_cache_location_follows_flag_environment_and_xdg(tmp_path, monkeypatch):
    monkeypatch.delenv("EDGESHIP_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "edgeship"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "edgeship"
    monkeypatch.setenv("EDGESHIP_CACHE_DIR", str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env" and cache_root(tmp_path / "flag") == tmp_path / "flag"


def test_the_suite_never_writes_the_real_cache():
    assert Path(os.environ["EDGESHIP_CACHE_DIR"]).name.startswith("edgeship-test-cache-")


def test_eviction_removes_the_least_recently_used(tmp_path):
    pixels = np.zeros((*SIZE, 3), np.uint8)
    digests = [f"{i:064x}" for i in range(4)]
    cache = DecodeCache(tmp_path, limit_bytes=0)
    for age, digest in enumerate(digests):
        cache.write(digest, SIZE, METHOD, pixels)
        os.utime(cache.entry_path(digest, SIZE, METHOD), (1000 + age, 1000 + age))
    assert cache.read(digests[0], SIZE, METHOD) is not None  # used now: the most recent
    entry_bytes = cache.entry_path(digests[0], SIZE, METHOD).stat().st_size
    cache.limit_bytes = 2 * entry_bytes
    assert cache.evict() == 2
    assert [cache.has(d, SIZE, METHOD) for d in digests] == [True, False, False, True]
    assert parse_size("20G") == 20 << 30
    with pytest.raises(Exception, match="EDGESHIP_CACHE_LIMIT=20G"):
        parse_size("lots")


def test_cache_info_and_clear_commands(photos, tmp_path):
    cache = tmp_path / "cache"
    fill_cache(DecodeCache(cache), sorted(photos.rglob("*.jpg")), SIZE, METHOD)
    (cache / "keep.txt").write_text("not the cache's")
    runner = CliRunner()
    result = runner.invoke(app, ["cache", "info", "--cache-dir", str(cache), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["entries"] == 18 and info["bytes"] > 18 * 32 * 32 * 3 and info["path"] == str(cache)
    result = runner.invoke(app, ["cache", "clear", "--cache-dir", str(cache)])
    assert result.exit_code == 0 and "removed 18" in result.output, result.output
    assert DecodeCache(cache).info()["entries"] == 0 and (cache / "keep.txt").exists()


_FILL = """
import sys
from pathlib import Path
from edgeship.runtime.decode_cache import DecodeCache
from edgeship.runtime.decoding import fill_cache
paths = sorted(Path(sys.argv[1]).rglob("*.png"))
size = (int(sys.argv[3]),) * 2
results, stats = fill_cache(DecodeCache(), paths, size, "bilinear-asymmetric", int(sys.argv[2]))
print(stats.decoded, stats.reused, stats.failed)
"""


def test_a_killed_fill_resumes_where_it_stopped(many_tiny, tmp_path):
    cache = tmp_path / "cache"
    # At 160 px each photo takes a while, so that the kill lands mid-fill on a fast machine too.
    worker = subprocess.Popen([sys.executable, "-c", _FILL, str(many_tiny), "1", "160"], env=_subprocess_env(cache),
                              stdout=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 60
    while len(_entries(cache)) < 300 and time.monotonic() < deadline and worker.poll() is None:
        time.sleep(0.02)
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    assert worker.returncode == -signal.SIGKILL, "the fill finished before it could be killed"
    kept = len(_entries(cache))
    assert 300 <= kept < 3000
    assert not [p for p in cache.rglob("*") if p.is_file() and p.suffix != ".px" and p.name != ".fill.lock"
                and not p.name.startswith(".")]
    results, stats = fill_cache(DecodeCache(cache), sorted(many_tiny.rglob("*.png")), (160, 160), METHOD, 1)
    assert (stats.decoded, stats.reused, stats.failed) == (3000 - kept, kept, 0)


def test_two_processes_filling_one_cache_decode_each_photo_once(many_tiny, tmp_path):
    cache = tmp_path / "cache"
    workers = [subprocess.Popen([sys.executable, "-c", _FILL, str(many_tiny), "1", "32"], env=_subprocess_env(cache),
                                stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [w.communicate(timeout=120)[0].split() for w in workers]
    assert [w.returncode for w in workers] == [0, 0]
    counts = [list(map(int, out)) for out in outputs]
    assert sum(c[0] for c in counts) == 3000 and all(c[0] + c[1] == 3000 and c[2] == 0 for c in counts), counts
    entries = _entries(cache)
    assert len(entries) == 3000
    probe = DecodeCache(cache)
    for path in sorted(many_tiny.rglob("*.png"))[::250]:
        pixels, digest, _ = decode_file(path, SIZE, METHOD)
        assert np.array_equal(probe.read(digest, SIZE, METHOD), pixels)


_PREPARE_PEAK = """
import sys
from pathlib import Path
from edgeship.train.config import TrainConfig
from edgeship.train.data import prepare_data

def peak_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1])

config = TrainConfig.tiny(data_dir=sys.argv[1], out_dir=sys.argv[2], image_size=int(sys.argv[3]))
prepare_data(TrainConfig.tiny(data_dir=sys.argv[4], out_dir=sys.argv[5], image_size=int(sys.argv[3])), sys.argv[5])
before = peak_kib()  # everything imported and warmed up on a small folder first
data = prepare_data(config, sys.argv[2])
print(before, peak_kib(), data.pixels.nbytes // 1024)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's /proc for the peak memory")
def test_preparing_data_holds_no_copy_of_the_pixels(many_tiny, photos, tmp_path):
    """3,000 photos at 128 px are 141 MiB of pixels; preparing them must not hold them in memory."""
    result = subprocess.run([sys.executable, "-c", _PREPARE_PEAK, str(many_tiny), str(tmp_path / "run"), "128",
                             str(photos), str(tmp_path / "warm")], env=_subprocess_env(tmp_path / "cache"),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    before, after, pixels = map(int, result.stdout.split())
    assert pixels > 140_000
    assert after - before < 30_000, f"peak memory grew by {(after - before) // 1024} MiB while preparing"


def test_decoding_processes_never_run_the_users_script_again(many_tiny, tmp_path):
    """A user's script with no ``if __name__ == "__main__":`` guard: multiprocessing's spawn would
    run it again in every worker (and fail); the workers run only edgeship's own module."""
    script, marker = tmp_path / "prepare.py", tmp_path / "runs.txt"
    script.write_text(f"with open({str(marker)!r}, 'a') as f:\n    f.write('ran\\n')\n" + _FILL)
    done = subprocess.run([sys.executable, str(script), str(many_tiny), "2", "16"], env=_subprocess_env(tmp_path / "c"),
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["3000", "0", "0"]
    assert marker.read_text() == "ran\n"
