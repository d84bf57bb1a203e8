"""AILB soak: a bounded run of mixed JSON and streaming chat completions through AILB's HTTP port
with a virtual key, two fake OpenAI deployments (faults injected in one of them), and AILB
killed with SIGKILL and started again in the middle. See docs/soak.md.

It reports the RSS slope of the AILB process, client-visible errors by kind (at the kill,
explained by an injected fault, unexpected), requests served vs the SQLite ledger's rows, and the
key's spend vs the ledger; it exits 1 when an invariant breaks (docs/soak.md lists them).

Environment knobs: SOAK_SECONDS (default 600), SOAK_CLIENTS (16), SOAK_KILL_AT (fraction of the
run, 0.5), SOAK_FAULT_PHASE_S (15), SOAK_WARMUP_S (60, at most a quarter of each segment),
SOAK_SAMPLE_S (1), SOAK_MAX_UNEXPECTED_ERRORS (0), SOAK_MAX_RSS_MB_PER_HOUR (unset: reported
only), SOAK_OUT (default bench/out: soak.json and the gateway's logs).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import httpx
import soak_check
import targets
import trio
from procs import BenchError, Child, free_port, spawn, stop
from soak_check import Sample, Window
from soak_load import MODEL, Load, Tally, client
from soak_report import FAULTY, Run, Settings, describe, report

if str(targets.REPO) not in sys.path:
    sys.path.insert(1, str(targets.REPO))  # tests.fakes: the fake upstreams
import soak_faults

from tests.fakes.openai_upstream import FakeOpenAI, start_fake

KEY_ID = targets.VIRTUAL_KEY.split("-")[2]  # sk-ailb-<id>-<secret>
PRICE = {"input_per_mtok": 100, "output_per_mtok": 400}


def ailb_config(port: int, data_dir: Path, urls: dict[str, str]) -> str:
    """JSON (which is YAML): both fakes serve the model; short health and cooldown periods, so
    that the faulty deployment comes back (and fails again) many times in a run."""
    deployments = [{"name": name, "type": "openai", "base_url": url, "api_key": "x",
                    "models": [MODEL]} for name, url in urls.items()]
    return json.dumps({
        "HOST": "127.0.0.1", "HTTP_PORT": port, "GRPC_PORT": 0, "WORKERS": 1,
        "AILB_DATA_DIR": str(data_dir), "AILB_ADMIN_KEY": targets.ADMIN_KEY,
        "LOG_LEVEL": "warning", "ENABLE_MEMORY": False, "ENABLE_RAG": False,
        "ROUTING_STRATEGY": "load_balanced",
        "health": {"interval_s": 2, "timeout_s": 1, "jitter": 0.1},
        "routing": {"cooldown_s": 3, "failure_window_s": 10},
        "prices": {MODEL: PRICE},
        "keys": [{"key_env": "AILB_BENCH_VIRTUAL_KEY", "name": "soak", "rpm_limit": 10**8,
                  "tpm_limit": 2 * 10**9, "monthly_budget_usd": 10**9}],
        "deployments": deployments,
    }, indent=2)


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return None


class Gateway:
    """The AILB process; SIGKILLed and started again once."""

    def __init__(self, config: Path, port: int, logs: Path) -> None:
        self.config, self.port, self.logs = config, port, logs
        self.url = f"http://127.0.0.1:{port}"
        self.child: Child | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        self.child = spawn(f"ailb-{self.starts}", [sys.executable, "-m", "ailb", "--config",
                                                   str(self.config)],
                           core=None, log_path=self.logs / f"soak-ailb-{self.starts}.log",
                           env=targets.ailb_env(), cwd=targets.AILB_SRC)

    async def ready(self, http: httpx.AsyncClient, timeout_s: float = 90) -> None:
        assert self.child is not None
        deadline = trio.current_time() + timeout_s
        while True:
            if self.child.proc.poll() is not None:
                raise BenchError(f"AILB exited with {self.child.proc.returncode}:\n"
                                 f"{self.child.log_tail()}")
            if trio.current_time() > deadline:
                raise BenchError(f"AILB not ready after {timeout_s:g}s:\n"
                                 f"{self.child.log_tail()}")
            try:
                if (await http.get(f"{self.url}/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await trio.sleep(0.05)

    async def kill(self) -> None:
        assert self.child is not None
        self.child.proc.send_signal(signal.SIGKILL)
        await trio.to_thread.run_sync(self.child.proc.wait)
        self.child.log_file.close()

    def stop(self) -> int | None:
        """SIGTERM (a drain), then the exit code."""
        if self.child is None:
            return None
        stop(self.child, timeout=40)
        return self.child.proc.returncode


async def sample_rss(run: Run, gateway: Gateway, stop_at: float) -> None:
    while trio.current_time() < stop_at:
        child = gateway.child
        segment = len(run.segments) - 1  # 1 once AILB is back after the kill
        up = run.kill is None or segment == 1
        if child is not None and child.proc.poll() is None and up:
            mb = rss_mb(child.pid)
            if mb is not None:
                at = trio.current_time() - run.t0
                run.samples.append(Sample(at, mb, run.tally.finished, segment))
        await trio.sleep(run.settings.sample_s)


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def kill_and_restart(run: Run, gateway: Gateway, http: httpx.AsyncClient, at: float
                           ) -> None:
    await trio.sleep_until(at)
    child = gateway.child
    assert child is not None
    run.cpu_s += cpu_seconds(child.pid)
    killed = trio.current_time() - run.t0
    run.segments[0] = Window(run.segments[0].start, killed, "before the kill")
    print(f"[{killed:7.1f}s] SIGKILL AILB (pid {child.pid}); starting it again", flush=True)
    await gateway.kill()
    gateway.start()
    run.kill = Window(killed, float("inf"), "kill")
    await gateway.ready(http)
    back = trio.current_time() - run.t0
    run.kill = Window(killed, back + soak_check.KILL_GRACE_S, "kill")
    run.segments.append(Window(back, float("inf"), "after the restart"))
    print(f"[{back:7.1f}s] AILB ready again after {back - killed:.1f}s", flush=True)


async def progress(run: Run, stop_at: float) -> None:
    every = max(5.0, run.settings.seconds / 20)
    while trio.current_time() + every < stop_at:
        await trio.sleep(every)
        t = run.tally
        rss = f"{run.samples[-1].rss_mb:.1f} MB" if run.samples else "-"
        print(f"[{trio.current_time() - run.t0:7.1f}s] served {t.served}, errors "
              f"{len(t.errors)}, RSS {rss}", flush=True)


async def drive(settings: Settings, gateway: Gateway) -> Run:
    """Start the fakes, AILB, then the load, the fault cycle, the RSS sampler and the kill."""
    urls: dict[str, str] = {}
    async with trio.open_nursery() as fakes:
        healthy, faulty = FakeOpenAI(models=[MODEL]), FakeOpenAI(models=[MODEL])
        for app in (healthy, faulty):
            app.chunk_delay_s = 0.002
        urls["fake-a"] = await start_fake(fakes, healthy)
        urls[FAULTY] = await start_fake(fakes, faulty)
        faulty_port = int(urls[FAULTY].rsplit(":", 1)[1].split("/")[0])
        gateway.config.write_text(ailb_config(gateway.port, gateway.config.parent / "data",
                                              urls))
        limits = httpx.Limits(max_connections=settings.clients + 4)
        async with httpx.AsyncClient(timeout=httpx.Timeout(60, connect=5), limits=limits,
                                     trust_env=False) as http:
            gateway.start()
            await gateway.ready(http)
            t0 = trio.current_time()
            stop_at = t0 + settings.seconds
            run = Run(settings, Tally(), t0, [], [Window(0, float("inf"))], [])
            load = Load(gateway.url, targets.VIRTUAL_KEY, f"{int(time.time()):x}", t0, stop_at)
            print(f"soak: {settings.seconds:.0f}s, {settings.clients} clients, AILB pid "
                  f"{gateway.child.pid if gateway.child else '-'}", flush=True)
            async with trio.open_nursery() as nursery:
                for index in range(settings.clients):
                    nursery.start_soon(client, http, load, index, run.tally)
                nursery.start_soon(soak_faults.cycle, fakes, faulty, faulty_port,
                                   settings.fault_phase_s, t0, stop_at, run.faults)
                nursery.start_soon(sample_rss, run, gateway, stop_at)
                nursery.start_soon(progress, run, stop_at)
                nursery.start_soon(kill_and_restart, run, gateway, http,
                                   t0 + settings.seconds * settings.kill_at)
            end = trio.current_time() - t0
            run.segments[-1] = Window(run.segments[-1].start, end, run.segments[-1].name)
            if gateway.child is not None:
                run.cpu_s += cpu_seconds(gateway.child.pid)
        fakes.cancel_scope.cancel()
    return run


def _bench_error(exc: BaseException) -> BenchError | None:
    """The BenchError (AILB would not start) inside what the run raised, if that is what
    it was."""
    if isinstance(exc, BenchError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        return next((e for e in map(_bench_error, exc.exceptions) if e is not None), None)
    return None


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    settings = Settings.from_env()
    work = settings.out / "soak-work"  # AILB's config and data dir, kept for a post-mortem
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    gateway = Gateway(work / "ailb.yaml", free_port(), settings.out)
    load = os.getloadavg()[0]
    try:
        run = trio.run(drive, settings, gateway)
    except KeyboardInterrupt:
        gateway.stop()
        print("\ninterrupted; AILB stopped", file=sys.stderr)
        return 130
    except BaseException as exc:
        gateway.stop()
        failure = _bench_error(exc)
        if failure is None:
            raise
        print(f"soak failed: {failure}", file=sys.stderr)
        return 1
    exit_code = gateway.stop()
    ledger = soak_check.read_ledger(work / "data" / "ailb.db", KEY_ID)
    rep = report(run, ledger, exit_code, load)
    (settings.out / "soak.json").write_text(json.dumps(rep, indent=2) + "\n")
    print("\n" + describe(rep))
    print(f"\nwrote {settings.out / 'soak.json'}; AILB's logs and data in {settings.out}")
    return 0 if rep["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
