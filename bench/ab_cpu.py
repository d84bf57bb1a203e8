"""A/B: CPU per request of two AILB sources side by side, in interleaved rounds, one upstream.

Usage: python bench/ab_cpu.py SRC_A SRC_B [rounds] [seconds] [key]   (CPU ms/req per row;
``key``: called with the virtual key, as target ailb-key, instead of the admin key)
Each source is a directory holding an ``ailb`` package. Both gateways run pinned to the same
core; rounds alternate A and B so that load from other processes falls on both alike.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import targets
from loadgen import run_load
from procstat import cpu_seconds
from upstream import check_upstream, start_upstream


def main() -> int:
    src = [Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 6
    seconds = float(sys.argv[4]) if len(sys.argv) > 4 else 2.0
    with_key = sys.argv[5:6] == ["key"]
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ailb-ab-")))
        up = start_upstream(tmp, targets.HERE / "out", None, 1.0)
        stack.callback(up.close)
        check_upstream(up)
        gws = []
        for i, s in enumerate(src):
            targets.AILB_SRC = s
            (tmp / str(i)).mkdir()
            gw = targets.ailb(up, 0, targets.HERE / "out", tmp / str(i))
            stack.callback(gw.close)
            gw.sanity_check()
            gws.append(targets.ailb_with_key(gw) if with_key else gw)
        for stream in (False, True):
            for conc in (1, 32):
                cpu: list[list[float]] = [[], []]
                for _ in range(rounds):
                    for i, gw in enumerate(gws):
                        request = gw.raw_request(stream)
                        before = cpu_seconds(gw.pid)
                        res = run_load("127.0.0.1", gw.port(stream), request,
                                       concurrency=conc, duration=seconds,
                                       validate=lambda body, full, s=stream:
                                       targets.validate(body, full, s))
                        assert not res.errors, res
                        cpu[i].append((cpu_seconds(gw.pid) - before) / max(1, res.ok) * 1000)
                a, b = (statistics.median(c) for c in cpu)
                print(f"{'stream' if stream else 'json':6} c={conc:<3} A {a:.3f} ms  "
                      f"B {b:.3f} ms  B/A {b / a:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
