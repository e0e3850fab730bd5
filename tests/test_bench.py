"""`sage-edge bench`: every number it promises is there and sane (timings are not judged)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURE_MODEL = Path(__file__).parent / "data" / "tiny_q8_0.sage"

# Runs `sage-edge bench` as on a Raspberry Pi, where only the runtime package is installed:
# torch (which miditok imports when it can, ~200 MB here) is made unimportable. Prints the
# process's peak resident memory in KB on stderr's last line: VmHWM, as getrusage's ru_maxrss
# keeps the forking parent's peak across exec.
PI_LIKE_BENCH = """
import re, sys
sys.modules["torch"] = None
from sage_edge.cli import main
code = main(sys.argv[1:])
status = open("/proc/self/status").read()
print(re.search(r"VmHWM:\\s*(\\d+) kB", status).group(1), file=sys.stderr)
sys.exit(code)
"""


def test_bench_reports_latency_memory_bandwidth_and_plot(tmp_path):
    plot = tmp_path / "latency.png"
    done = subprocess.run(
        [sys.executable, "-m", "sage_edge.cli", "bench", "--model", str(FIXTURE_MODEL)]
        + ["--positions", "10,3000", "--steps", "20", "--json", "--plot", str(plot)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert set(results["decode"]) == {"10", "3000"}
    for row in results["decode"].values():
        assert 0 < row["median_us"] <= row["p99_us"]
    assert results["model_bytes"] == FIXTURE_MODEL.stat().st_size
    assert results["kv_bytes"] == (32 + 8) * 2 * 8 * 2 * 4  # horizons × G × d_h × (k, v) × f32
    assert results["session_bytes"] > results["kv_bytes"]
    assert results["read_bandwidth_bytes_per_second"] > 1e8
    assert results["realtime_margin"] > 0
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_quick_bench_fits_a_pi_zero():
    """`--quick` on the shipped model: a Pi Zero has 512 MB for the OS and everything else too."""
    from sage_edge.engine import DEFAULT_MODEL

    if not DEFAULT_MODEL.is_file():
        pytest.skip("no default model is packaged")
    done = subprocess.run(
        [sys.executable, "-c", PI_LIKE_BENCH, "bench", "--quick", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert set(results["decode"]) == {"100", "1000"}
    assert results["read_bandwidth_buffer_bytes"] == 32 << 20
    assert results["realtime_margin"] > 0
    peak_mb = int(done.stderr.splitlines()[-1]) / 1024
    assert peak_mb < 200, f"bench --quick peaked at {peak_mb:.0f} MB"
