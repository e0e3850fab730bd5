"""`sage-edge bench`: every number it promises, checked against the model file, the engine's
memory report and the other numbers it is derived from (timings themselves are not judged)."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from sage_edge import _engine
from sage_edge import format as sage_format
from sage_edge.engine import Engine

FIXTURE_MODEL = Path(__file__).parent / "data" / "tiny_q8_0.sage"
# Every field of `sage-edge bench --json`, no more.
BENCH_FIELDS = {
    "model", "kernel", "parameters", "quantization", "model_bytes", "session_bytes",
    "kv_memory", "kv_bytes", "activation_bytes", "decode", "tokens_per_second",
    "music_tokens_per_second", "realtime_margin", "prefill_tokens_per_second", "bytes_per_token",
    "read_bandwidth_bytes_per_second", "read_bandwidth_buffer_bytes", "roofline_us",
    "median_over_roofline", "working_set_bandwidth_bytes_per_second", "working_set_roofline_us",
    "median_over_working_set_roofline",
}  # fmt: skip

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
    assert set(results) == BENCH_FIELDS
    assert plot.read_bytes()[:4] == b"\x89PNG"

    # The model and the session, against the file and a session of the engine in this process.
    model = sage_format.read(FIXTURE_MODEL)
    memory = Engine(FIXTURE_MODEL).session().memory
    assert results["model"] == str(FIXTURE_MODEL)
    assert results["kernel"] == _engine.kernel()
    assert results["quantization"] == "q8_0"
    assert results["parameters"] == sum(math.prod(t.shape) for t in model.tensors.values())
    assert results["model_bytes"] == FIXTURE_MODEL.stat().st_size
    assert results["kv_memory"] == "int8"  # the engine's default
    # horizons × G × (key, value) × a row of d_h int8 and its f32 scale
    assert results["kv_bytes"] == (32 + 8) * 2 * 2 * (8 + 4)
    assert results["kv_bytes"] == memory["kv_bytes"]
    assert results["activation_bytes"] == memory["activation_bytes"]
    assert results["session_bytes"] == memory["total_bytes"]

    # Latency at the positions asked; the summary numbers are those of the medians.
    assert set(results["decode"]) == {"10", "3000"}
    for row in results["decode"].values():
        assert 0 < row["median_us"] <= row["p99_us"]
    median_us = statistics.median(row["median_us"] for row in results["decode"].values())
    assert results["tokens_per_second"] == pytest.approx(1e6 / median_us)
    assert results["realtime_margin"] == pytest.approx(
        results["tokens_per_second"] / results["music_tokens_per_second"]
    )
    assert results["music_tokens_per_second"] > 0 and results["prefill_tokens_per_second"] > 0

    # The roofline: a decode step reads one embedding row, one family's key and value matrices,
    # every other tensor whole, and every ring; at the measured bandwidth that takes roofline_us.
    unread = model.tensors["tok_embedding"].nbytes // model.vocab_size * (model.vocab_size - 1)
    for name, tensor in model.tensors.items():
        if name.endswith((".wk", ".wv")):
            unread += tensor.nbytes // model.n_families * (model.n_families - 1)
    tensor_bytes = sum(t.nbytes for t in model.tensors.values())
    assert results["bytes_per_token"] == tensor_bytes - unread + results["kv_bytes"]
    assert results["read_bandwidth_buffer_bytes"] == 256 << 20  # the default: past every cache
    assert results["read_bandwidth_bytes_per_second"] > 1e8
    assert results["roofline_us"] == pytest.approx(
        results["bytes_per_token"] / results["read_bandwidth_bytes_per_second"] * 1e6
    )
    assert results["median_over_roofline"] == pytest.approx(median_us / results["roofline_us"])
    # The same bytes from a buffer of their own size, read again and again as decoding does.
    assert results["working_set_bandwidth_bytes_per_second"] > 1e8
    assert results["working_set_roofline_us"] == pytest.approx(
        results["bytes_per_token"] / results["working_set_bandwidth_bytes_per_second"] * 1e6
    )
    assert results["median_over_working_set_roofline"] == pytest.approx(
        median_us / results["working_set_roofline_us"]
    )


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
