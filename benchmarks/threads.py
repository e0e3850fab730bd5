"""Where intra-op threads start to pay: decode and prefill by model width, 1 vs N threads.

    python benchmarks/threads.py [--bench build/h-S/csrc/bench/sage-edge-bench-decode]
                                 [--widths 256,512,1024,2048] [--threads 2] [--rounds 3]

Each model is the shipped model's configuration (sage_edge/models/default.sage: its vocabulary,
layers, horizons and attention) with d_model and d_ff scaled by the width / 256 and random q8_0
weights, written to a temporary directory. For each, sage-edge-bench-decode runs with 1 and with
N threads in alternation (`--rounds` times, medians reported): decode microseconds per token at
1 024 past tokens and prefill tokens per second for a 256-token block. A script that prints
numbers, not a test.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import statistics
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from sage_edge import format as sage_format

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "sage_edge" / "models" / "default.sage"


def scaled_model(width: int, path: Path, seed: int = 0) -> Path:
    """The shipped model's configuration at d_model = width (d_ff and heads scaled with it)."""
    base = sage_format.read(SHIPPED)
    factor = width / base.d_model
    n_heads = max(base.n_kv_heads, int(base.n_heads * factor))
    model = dataclasses.replace(
        base, d_model=width, d_ff=int(base.d_ff * factor), n_heads=n_heads, tensors={}
    )
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, shape in model.expected_shapes().items():
        if name == "alibi_slopes":
            values = 2.0 ** (-8.0 * (np.arange(n_heads) + 1) / n_heads)
            tensors[name] = sage_format.Tensor.from_array(values.astype(np.float32))
        elif len(shape) == 1:
            tensors[name] = sage_format.Tensor.from_array(np.ones(shape, np.float32))
        else:
            values = rng.standard_normal(shape).astype(np.float32) / np.sqrt(shape[-1])
            tensors[name] = sage_format.Tensor.from_array(values, base.matrix_dtype)
    model.tensors = tensors
    sage_format.write(path, model)
    return path


def measure(bench: str, model: Path, threads: int) -> tuple[float, float]:
    """(decode us per token at 1 024 past tokens, prefill tokens per second of 256 tokens)."""
    out = subprocess.run(
        [bench, str(model), "--positions", "1024", "--steps", "200", "--threads", str(threads)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    decode = float(re.search(r"decode at +1024 past tokens: +([\d.]+) us", out).group(1))
    prefill = float(re.search(r"prefill of \d+ tokens: [\d.]+ ms, (\d+) tokens/s", out).group(1))
    return decode, prefill


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--bench", default=str(ROOT / "build/h-S/csrc/bench/sage-edge-bench-decode")
    )
    parser.add_argument("--widths", default="256,512,1024,2048")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    n = args.threads
    print(
        f"{'d_model':>8} {'MB':>7} {'decode 1t us':>13} {f'decode {n}t us':>13} "
        f"{'prefill 1t tok/s':>17} {f'prefill {n}t tok/s':>17}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for width in (int(w) for w in args.widths.split(",")):
            model = scaled_model(width, Path(tmp) / f"d{width}.sage")
            runs = {1: [], n: []}
            for _ in range(args.rounds):  # alternate, so both see the same machine load
                for threads in (1, n):
                    runs[threads].append(measure(args.bench, model, threads))
            med = {t: [statistics.median(r[i] for r in runs[t]) for i in (0, 1)] for t in runs}
            size = model.stat().st_size / 1e6
            print(
                f"{width:>8} {size:>7.1f} {med[1][0]:>13.1f} {med[n][0]:>13.1f} "
                f"{med[1][1]:>17.0f} {med[n][1]:>17.0f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
