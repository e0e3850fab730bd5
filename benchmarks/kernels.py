"""Kernel benchmark: matvec GMAC/s per kernel path and the memory read bandwidth.

A thin wrapper over the C++ binary ``sage-edge-bench-kernels`` (csrc/bench): configures and builds
it in ``build-bench`` (Release) unless ``--binary`` points at one, then runs it for every kernel
path this CPU supports and prints its table (or its JSON with ``--json``).

    python benchmarks/kernels.py [--json] [--bw-mb 256] [--seconds 0.1] [--binary PATH]

Numbers are throughput on the current machine; they are not pass/fail.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build(build_dir: Path) -> Path:
    subprocess.run(
        [
            "cmake",
            "-S",
            str(ROOT),
            "-B",
            str(build_dir),
            "-DCMAKE_BUILD_TYPE=Release",
            "-DSAGE_EDGE_BENCH=ON",
            "-DSAGE_EDGE_TESTS=OFF",
            "-DSAGE_EDGE_RUNNER=OFF",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    jobs = str(min(2, os.cpu_count() or 1))
    subprocess.run(
        ["cmake", "--build", str(build_dir), "--target", "sage-edge-bench-kernels", "-j", jobs],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return build_dir / "csrc" / "bench" / "sage-edge-bench-kernels"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", type=Path, help="an already built sage-edge-bench-kernels")
    parser.add_argument("--build-dir", type=Path, default=ROOT / "build-bench")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--bw-mb", type=int, default=256, help="bandwidth buffer, MB (0: skip)")
    parser.add_argument("--seconds", type=float, default=0.1, help="time budget per measurement")
    args = parser.parse_args(argv)

    binary = args.binary or build(args.build_dir)
    cmd = [str(binary), "--bw-mb", str(args.bw_mb), "--seconds", str(args.seconds)]
    if args.json:
        cmd.append("--json")
    return subprocess.run(cmd).returncode


if __name__ == "__main__":
    sys.exit(main())
