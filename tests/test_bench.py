"""`sage-edge bench`: every number it promises is there and sane (timings are not judged)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

FIXTURE_MODEL = Path(__file__).parent / "data" / "tiny_q8_0.sage"


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
