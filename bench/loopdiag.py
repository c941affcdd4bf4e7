"""`python -m bench.loopdiag`: what holds the event loops of our web and worker during a
benchmark, attributed: the diagnosis behind issue 22's p99 (bench/README.md, latency).

    .venv/bin/python -m bench.loopdiag run DIR -- .venv/bin/python -m bench.latency \
        --runs 1 --rates 50,100 --seconds 20 --servers ours --baseline BASE
    .venv/bin/python -m bench.loopdiag report DIR [--window T0:T1]

`run` starts the command with a `sitecustomize` on PYTHONPATH that loads this file into
every `python -m realtime serve|process` it starts (any checkout: the file is loaded by
path), and `install` writes to DIR/<checkout>-<web|worker>-<pid>.log:

- `gc`: each cyclic collection, its generation, wall and CPU time;
- `busy`: a 2 ms heartbeat on the event loop; between two beats, the main thread's CPU
  time (a busy stall, whatever the machine's load: time off the CPU does not count)
  and, when it exceeds BUSY_MS, the stacks a watchdog thread sampled while the beat
  was overdue (what ran);
- `hist`: once a second, the main thread's CPU share and histograms of both gaps.

`report` sums them per file over a window (epoch seconds; the `hist` lines show where
the steps were: the CPU share rises with the rate). The heartbeat and the watchdog cost
CPU and take the GIL: use it to attribute stalls, not to time latency
(`realtime_event_loop_lag_seconds` is the cheap, always-on view).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

BEAT_S = 0.002
BUSY_MS = 3.0
BOUNDS_MS = (1, 2, 3, 5, 10, 20, 50)
SHIM = """import importlib.util, os, sys
if os.environ.get("LOOPDIAG_DIR") and sys.orig_argv[1:3] == ["-m", "realtime"]:
    spec = importlib.util.spec_from_file_location("_loopdiag", {path!r})
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.install(os.environ["LOOPDIAG_DIR"])
"""


def _bucket(ms: float) -> str:
    return next((f"<{b}" for b in BOUNDS_MS if ms < b), f">={BOUNDS_MS[-1]}")


def install(directory: str) -> None:
    """In a `realtime serve|process` process, before its event loop exists."""
    argv = sys.orig_argv
    if "serve" not in argv and "process" not in argv:
        return
    role = "web" if "serve" in argv else "worker"
    name = f"{Path.cwd().name}-{role}-{os.getpid()}.log"
    out = open(Path(directory) / name, "a", buffering=1)  # noqa: SIM115 - the process's life
    main = threading.main_thread()
    assert main.ident is not None
    main_clock = time.pthread_getcpuclockid(main.ident)
    started = [0.0, 0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[:] = [time.perf_counter(), time.thread_time()]
            return
        wall = (time.perf_counter() - started[0]) * 1000
        cpu = (time.thread_time() - started[1]) * 1000
        out.write(f"gc {time.time():.4f} gen={info['generation']} ms={wall:.3f} cpu={cpu:.3f}\n")

    import gc

    gc.callbacks.append(on_gc)
    beat = {"at": time.perf_counter(), "cpu": 0.0}
    on = threading.Event()
    cpu_gaps: collections.Counter[str] = collections.Counter()
    wall_gaps: collections.Counter[str] = collections.Counter()
    samples: list[str] = []

    def heartbeat() -> None:
        import asyncio

        loop = asyncio.get_event_loop()

        def tick() -> None:
            now, cpu = time.perf_counter(), time.thread_time()
            busy = (cpu - beat["cpu"]) * 1000
            cpu_gaps[_bucket(busy)] += 1
            wall_gaps[_bucket((now - beat["at"]) * 1000 - BEAT_S * 1000)] += 1
            if busy > BUSY_MS:
                seen = collections.Counter(samples)
                out.write(f"busy {time.time():.4f} cpu={busy:.1f} samples={len(samples)}\n")
                for stack, n in seen.most_common(6):
                    out.write(f"   {n} {stack}\n")
            samples.clear()
            beat["at"], beat["cpu"] = now, cpu
            loop.call_later(BEAT_S, tick)

        beat["at"], beat["cpu"] = time.perf_counter(), time.thread_time()
        on.set()
        loop.call_later(BEAT_S, tick)

    def watchdog() -> None:
        while True:
            time.sleep(0.001)
            if on.is_set() and (time.perf_counter() - beat["at"]) * 1000 > BUSY_MS:
                frame = sys._current_frames().get(main.ident or 0)
                if frame is not None:
                    stack = [
                        f"{Path(f.filename).name}:{f.lineno}:{f.name}"
                        for f in traceback.extract_stack(frame)
                        if "runpy" not in f.filename and not f.filename.endswith("cli.py")
                    ]
                    samples.append(" < ".join(reversed(stack[-9:])))

    def dump() -> None:
        last = time.clock_gettime(main_clock)
        while True:
            time.sleep(1.0)
            now = time.clock_gettime(main_clock)
            cpu, wall = json.dumps(dict(cpu_gaps)), json.dumps(dict(wall_gaps))
            out.write(
                f"hist {time.time():.4f} busy%={(now - last) * 100:.0f} cpu {cpu} wall {wall}\n"
            )
            cpu_gaps.clear()
            wall_gaps.clear()
            last = now

    threading.Thread(target=watchdog, daemon=True).start()
    threading.Thread(target=dump, daemon=True).start()
    import uvloop

    new_loop = uvloop.new_event_loop

    def new_event_loop() -> Any:
        loop = new_loop()
        loop.call_soon(heartbeat)
        return loop

    uvloop.new_event_loop = new_event_loop


def _cause(stacks: list[str]) -> str:
    text = " ".join(stacks)
    if "sessions.py" in text or "checkpoints" in text:
        return "recovery checkpoint (sessions.py, recovery.py)"
    if "hub.py" in text:
        return "hand-out (hub.py)"
    # (`__main__.py:<module>` alone: inside the loop's run, in uvloop's C code)
    found = [s.split(" ", 1)[1] for s in stacks if ".py:" in s]
    found = [f for f in found if not f.startswith("__main__.py")]
    return f"other: {found[0][:100]}" if found else "other (no Python frame: uvloop's C code)"


def report(path: Path, window: tuple[float, float] | None) -> str:
    low, high = window or (0.0, float("inf"))
    pauses: dict[str, list[float]] = collections.defaultdict(list)
    stalls: list[tuple[float, list[str]]] = []
    timeline = []
    stalls_open = False  # the stack lines that follow belong to a stall in the window
    for line in path.read_text().splitlines():
        parts = line.split()
        if line.startswith(("gc ", "busy ", "hist ")) and not low <= float(parts[1]) <= high:
            stalls_open = False
            continue
        if line.startswith("gc "):
            pauses[parts[2]].append(float(parts[4].split("=")[1]))
        elif line.startswith("busy "):
            stalls.append((float(parts[2].split("=")[1]), []))
            stalls_open = True
        elif line.startswith("   ") and stalls and stalls_open:
            stalls[-1][1].append(line.strip())
        elif line.startswith("hist "):
            timeline.append(f"{float(parts[1]):.0f} {parts[2]}")
    lines = [f"== {path.name}" + (f", {high - low:g} s" if window else ""), ""]
    if window is None:
        lines += ["per second (epoch, the main thread's CPU share):", " ".join(timeline), ""]
    for generation, gc_cpu in sorted(pauses.items()):
        lines.append(
            f"GC {generation}: {len(gc_cpu)} collections, CPU max {max(gc_cpu):.1f} ms,"
            f" sum {sum(gc_cpu):.1f} ms, over 5 ms {sum(c > 5 for c in gc_cpu)}"
        )
    if not pauses:
        lines.append("GC: no collection")
    by_bucket = collections.Counter(_bucket(cpu) for cpu, _ in stalls)
    lines.append(f"loop busy over {BUSY_MS:g} ms between two beats (CPU ms): {dict(by_bucket)}")
    causes: dict[str, list[float]] = collections.defaultdict(list)
    for cpu, stacks in stalls:
        causes[_cause(stacks)].append(cpu)
    for cause, cpus in sorted(causes.items(), key=lambda kv: -sum(kv[1])):
        lines.append(
            f"  {len(cpus):4d} x, max {max(cpus):5.1f} ms, over 10 ms"
            f" {sum(c > 10 for c in cpus):3d}: {cause}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loopdiag", description=__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    run = sub.add_parser("run", help="run a command with the web and worker instrumented")
    run.add_argument("dir", type=Path)
    run.add_argument("command", nargs=argparse.REMAINDER)
    rep = sub.add_parser("report", help="sum up the logs of a run")
    rep.add_argument("dir", type=Path)
    rep.add_argument("--window", help="T0:T1, epoch seconds (default: everything)")
    args = parser.parse_args()
    if args.what == "run":
        command = args.command[1:] if args.command[:1] == ["--"] else args.command
        args.dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as shim:
            Path(shim, "sitecustomize.py").write_text(SHIM.format(path=str(Path(__file__))))
            path = os.pathsep.join(p for p in (shim, os.environ.get("PYTHONPATH")) if p)
            env = {**os.environ, "PYTHONPATH": path, "LOOPDIAG_DIR": str(args.dir.resolve())}
            return subprocess.run(command, env=env, check=False).returncode
    window = None
    if args.window:
        t0, t1 = args.window.split(":")
        window = (float(t0), float(t1))
    for log in sorted(args.dir.glob("*.log")):
        print(report(log, window), end="\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
