"""``python -m bench [AREA ...]``: run the benchmarks (all by default), each in its own process."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path


def available() -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in Path(__file__).parent.glob("bench_*.py"))


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("areas", nargs="*", help=f"subset to run (default all: {', '.join(available())})")


def run(args: argparse.Namespace) -> int:
    areas = args.areas or available()
    unknown = sorted(set(areas) - set(available()))
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(available())}")
        return 2
    failed = []
    for area in areas:
        print(f"\n=== bench {area} ===", flush=True)
        start = time.monotonic()
        code = subprocess.call([sys.executable, "-m", f"bench.bench_{area}"])
        print(f"=== bench {area}: {'ok' if code == 0 else f'FAILED ({code})'} in {time.monotonic() - start:.0f} s")
        if code:
            failed.append(area)
    return 1 if failed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench")
    configure(parser)
    sys.exit(run(parser.parse_args()))
