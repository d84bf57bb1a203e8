"""Profile one gateway under load with py-spy (``pip install py-spy``), and summarise the hot spots.

Usage: python bench/hotspots.py [ailb|ailb-key|passthrough] [json|stream] [concurrency] [seconds]
Defaults: ailb json 32 10. ``ailb-key`` is the same AILB process called with the bench's
virtual key (limits, budget, ledger), as bench/run.py's target of that name. Writes
bench/out/profile-TARGET-SCENARIO.txt (collapsed stacks, for flamegraph.pl or speedscope) and
prints the functions with the most samples.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import targets
from loadgen import run_load
from upstream import check_upstream, start_upstream

OUT = targets.HERE / "out"
TOP = 25


def _short(frame: str) -> str:
    """``func (path/to/file.py:12)`` -> ``func (file.py)``; line numbers merged."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(path).parts
    keep = parts[parts.index("ailb"):] if "ailb" in parts else parts[-2:]
    return f"{name} ({'/'.join(keep)})"


def _package(frame: str) -> str:
    """The top-level package of a frame's file (py-spy prints paths below site-packages)."""
    path = frame.partition(" (")[2].rstrip(")").rsplit(":", 1)[0]
    top = Path(path).parts[0].removesuffix(".py") if path else "?"
    return f"{top} (stdlib)" if top in sys.stdlib_module_names else top


def summarise(collapsed: Path) -> str:
    pkg_c: Counter[str] = Counter()
    self_c: Counter[str] = Counter()
    incl_c: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        raw_frames = stack.split(";")
        frames = [_short(f) for f in raw_frames]
        pkg_c[_package(raw_frames[-1])] += count
        total += count
        self_c[frames[-1]] += count
        for f in set(frames):
            incl_c[f] += count
    if not total:
        return "no samples"
    lines = [f"{total} samples", "", "self time by package:"]
    lines += [f"  {100 * c / total:5.1f}%  {p}" for p, c in pkg_c.most_common(12)]
    lines += ["", "self time (top):"]
    lines += [f"  {100 * c / total:5.1f}%  {f}" for f, c in self_c.most_common(TOP)]
    lines += ["", "inclusive time, AILB code only (top):"]
    ailb = [(f, c) for f, c in incl_c.most_common() if "(ailb/" in f][:TOP]
    lines += [f"  {100 * c / total:5.1f}%  {f}" for f, c in ailb]
    return "\n".join(lines)


def main() -> int:
    args = sys.argv[1:]
    name = args[0] if args else "ailb"
    stream = (args[1] if len(args) > 1 else "json") == "stream"
    conc = int(args[2]) if len(args) > 2 else 32
    seconds = min(60.0, float(args[3]) if len(args) > 3 else 10.0)
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(pyspy).exists():
        print("py-spy not found: pip install py-spy", file=sys.stderr)
        return 2
    cpus = sorted(os.sched_getaffinity(0))
    gw_core, lg_core = (cpus[0], cpus[1]) if len(cpus) > 1 else (None, None)
    if lg_core is not None:
        os.sched_setaffinity(0, {lg_core})
    OUT.mkdir(parents=True, exist_ok=True)
    raw = OUT / f"profile-{name}-{'stream' if stream else 'json'}.txt"
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ailb-prof-")))
        up = start_upstream(tmp, OUT, lg_core, 1.0)
        stack.callback(up.close)
        check_upstream(up)
        if name in ("ailb", "ailb-key"):
            target = targets.ailb(up, gw_core, OUT, tmp)
            stack.callback(target.close)
            if name == "ailb-key":  # the same process, the virtual key's requests
                target = targets.ailb_with_key(target)
        else:
            target = targets.passthrough(up, gw_core, OUT)
            stack.callback(target.close)
        target.sanity_check()
        request = target.raw_request(stream)

        def check(body: bytes, full: bool) -> str | None:
            return targets.validate(body, full, stream)

        run_load("127.0.0.1", target.port(stream), request, concurrency=conc, duration=1.0,
                 validate=check)
        spy = subprocess.Popen([pyspy, "record", "--pid", str(target.pid), "--rate", "250",
                                "--duration", str(int(seconds)), "--format", "raw",
                                "--output", str(raw), "--nonblocking"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            res = run_load("127.0.0.1", target.port(stream), request, concurrency=conc,
                           duration=seconds + 1, validate=check)
            _, err = spy.communicate(timeout=seconds + 30)
        finally:
            if spy.poll() is None:
                spy.kill()
                spy.wait()
        print(f"{name} {'stream' if stream else 'json'} c={conc}: {res.ok / res.seconds:.0f} "
              f"req/s, {res.errors} errors")
    if not raw.exists():
        print(f"py-spy wrote nothing: {err.decode(errors='replace')[-500:]}", file=sys.stderr)
        return 1
    print(summarise(raw))
    print(f"\ncollapsed stacks: {raw}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
