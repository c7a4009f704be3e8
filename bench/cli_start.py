"""Start-up time of the ``mailcarrier`` command, measured as whole processes.

What a user waits for when they type ``mailcarrier --help`` or ``mailcarrier classify
"550 5.1.1 User unknown"``: interpreter start, imports, the work, exit. Each command runs
``--runs`` times after a warm-up, in turn with the peer (A B A B ...), so a drift of the
shared machine's speed hits both alike; each run's CPU time comes from the kernel's
accounting of the finished child (``os.wait4``), its wall time from the clock around it.
Medians are quoted.

Peer: the floor, ``python -c pass`` with the same interpreter (no command can start faster
in Python), and, when installed, ``swaks --version`` (a Perl SMTP tool) for scale. The
target of issue 19 is a median wall time of at most 0.3 s for both commands; the RESULT
line reports the slower of the two.

Run: ``python bench/cli_start.py [--runs N]`` from the checkout (its ``src`` is put first
on PYTHONPATH, so the console script of the environment runs this checkout's code).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET_S = 0.3


def _entry_point() -> list[str]:
    script = Path(sys.executable).parent / "mailcarrier"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "mailcarrier.cli.main"]


def run_once(argv: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """One whole-process run: (wall s, user+sys CPU s of the child, exit status)."""
    started = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here: keep Popen from waiting again
    return wall, usage.ru_utime + usage.ru_stime, child.returncode


def measure(commands: dict[str, list[str]], runs: int, warmup: int) -> dict[str, dict[str, float]]:
    """Median, min and max wall and CPU seconds of each command, runs interleaved."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH", "")) if p)}
    env.pop("MAILCARRIER_DATABASE_URL", None)
    walls: dict[str, list[float]] = {name: [] for name in commands}
    cpus: dict[str, list[float]] = {name: [] for name in commands}
    for index in range(warmup + runs):
        for name, argv in commands.items():
            wall, cpu, code = run_once(argv, env)
            if code != 0:
                raise SystemExit(f"{name}: {' '.join(argv)} exited with {code}")
            if index >= warmup:
                walls[name].append(wall)
                cpus[name].append(cpu)
    return {name: {"wall": statistics.median(walls[name]), "wall_min": min(walls[name]),
                   "wall_max": max(walls[name]), "cpu": statistics.median(cpus[name])}
            for name in commands}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="Counted runs of each command.")
    parser.add_argument("--warmup", type=int, default=1, help="Uncounted runs first.")
    args = parser.parse_args()
    entry = _entry_point()
    commands = {
        "help": [*entry, "--help"],
        "classify": [*entry, "classify", "550 5.1.1 User unknown"],
        "python_floor": [sys.executable, "-c", "pass"],
    }
    swaks = shutil.which("swaks")
    if swaks:
        commands["swaks"] = [swaks, "--version"]
    figures = measure(commands, args.runs, args.warmup)
    print(f"{args.runs} runs each after {args.warmup} warm-up, interleaved; seconds, median (min-max)")
    for name, argv in commands.items():
        f = figures[name]
        print(f"  {name:<13} wall {f['wall']:.3f} ({f['wall_min']:.3f}-{f['wall_max']:.3f})  "
              f"cpu {f['cpu']:.3f}   {' '.join(Path(argv[0]).name if i == 0 else a for i, a in enumerate(argv))}")
    slowest = max(figures["help"]["wall"], figures["classify"]["wall"])
    floor = figures["python_floor"]["wall"]
    verdict = "met" if slowest <= TARGET_S else "NOT met"
    print(f"target: --help and classify in <= {TARGET_S} s median wall: {verdict}")
    print(f"RESULT cli_start={slowest:.3f} s python_floor={floor:.3f} ratio={slowest / floor:.1f}")


if __name__ == "__main__":
    main()
