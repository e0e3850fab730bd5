"""Engine speed and memory of the attention and memory ablations, as ratios to the default.

    python benchmarks/ablations.py [--positions 100,1000,10000,50000] [--steps 200] [--json]

Each configuration of training/configs (default = askv + two_scale; mha_full, mha_two_scale,
askv_full, gqa_two_scale: the same width and depth) is built with random weights, exported as
q8_0, and timed in the engine in this one process, one thread: the decode step's median and p99
at each position, and the session's key/value memory. Speed does not depend on the weights'
values, so random weights measure what the trained ones would. Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from sage_edge import _engine, bench
from sage_edge.engine import Engine
from sage_edge.tokenizer import Tokenizer
from training.export import export
from training.model import SageModel
from training.train import build_model_config, load_config

CONFIGS = ("default", "gqa_two_scale", "mha_two_scale", "askv_full", "mha_full")
CONFIG_DIR = Path(__file__).resolve().parents[1] / "training" / "configs"


def measure(name: str, tokenizer: Tokenizer, workdir: Path, positions, steps: int) -> dict:
    _, model_table, _ = load_config(CONFIG_DIR / f"{name}.toml")
    torch.manual_seed(0)
    model = SageModel(build_model_config(model_table, tokenizer)).eval()
    path = workdir / f"{name}.sage"
    export(model, tokenizer.to_json(), "q8_0", path)
    engine = Engine(path)
    info = engine.info
    return {
        "attention": info["attention"],
        "horizons": info["horizons"],
        "budget": info["budget"],
        "parameters": info["parameters"],
        "model_bytes": info["file_bytes"],
        "kv_bytes": info["kv_bytes"],
        "session_bytes": info["session_bytes"],
        "bytes_per_token": bench.bytes_per_token(path),
        "decode": {str(p): r for p, r in bench.decode_latency(engine, positions, steps).items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--positions", default="100,1000,10000,50000")
    parser.add_argument("--steps", type=int, default=200, help="decode steps timed per position")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    positions = [int(p) for p in args.positions.split(",")]

    tokenizer = Tokenizer.default()
    with tempfile.TemporaryDirectory() as tmp:
        results = {
            name: measure(name, tokenizer, Path(tmp), positions, args.steps) for name in CONFIGS
        }
    if args.json:
        print(json.dumps(results, indent=2))
        return

    base = results["default"]
    print(f"engine q8_0, 1 thread, kernel {_engine.kernel()}")
    header = f"{'config':15}{'attention':>10}{'budget':>8}{'params':>9}{'kv MB':>8}{'kv ×':>7}"
    header += "".join(f"{'pos ' + str(p) + ' µs':>16}{'×':>6}" for p in positions)
    print(header)
    for name, r in results.items():
        row = (
            f"{name:15}{r['attention']:>10}{r['budget']:>8}{r['parameters'] / 1e6:>8.2f}M"
            f"{r['kv_bytes'] / 1e6:>8.2f}{r['kv_bytes'] / base['kv_bytes']:>7.2f}"
        )
        for p in positions:
            median = r["decode"][str(p)]["median_us"]
            row += f"{median:>16.1f}{median / base['decode'][str(p)]['median_us']:>6.2f}"
        print(row)
    print("× = ratio to default (askv, two_scale); µs = median decode step (sample + feed)")


if __name__ == "__main__":
    main()
