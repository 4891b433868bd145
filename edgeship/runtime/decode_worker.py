"""One decoding process of :func:`edgeship.runtime.decoding.fill_cache`: ``python -P -m
edgeship.runtime.decode_worker``, started in an empty folder (:mod:`edgeship.runtime.child_process`).

It reads one JSON line saying which cache and key to fill, then one photo path per line (a JSON
string), and
answers each photo with a JSON line ``[digest, reason, decoded]`` as soon as its entry is
written, so the parent keeps its order and its progress bar. Pixels travel through the cache's
files, never through the pipe.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

__all__ = ["main"]


def main() -> int:
    from edgeship.runtime.decode_cache import DecodeCache
    from edgeship.runtime.decoding import fill_one

    header = json.loads(sys.stdin.readline())
    cache = DecodeCache(header["cache"], limit_bytes=header["limit_bytes"])
    size, method = tuple(header["size"]), header["method"]
    for line in sys.stdin:
        path = Path(json.loads(line))
        print(json.dumps(list(fill_one(path, cache, size, method))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
