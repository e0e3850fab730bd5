"""Decode latency of the C++ engine against PyTorch eager, and against the memory roofline.

    python benchmarks/decode.py [--model default.sage] [--steps 300] [--positions 100 1000 50000]

Without --model it builds the default-size configuration with random weights (d 256, 6 layers,
H 8, G 2, d_h 32, d_ff 768, askv, two_scale 2×512 + 4×64, the tokenizer's vocabulary) and exports
it as q8_0 and f32. For each position it feeds tokens up to that position in prefill blocks, then
times single decode steps (sample + feed one token, the real-time loop) on one thread: median and
p99 per token. PyTorch runs the same f32 weights with training.model.forward_segment, one token at
a time with its key/value memory, torch.set_num_threads(1).

The roofline: the bytes one token must read (every matrix row it uses, once, plus the ring
memories) divided by the measured read bandwidth — of main memory, and of a buffer the size of
the weights (which may sit in cache on a desktop CPU, not on a Raspberry Pi). Timings include the
Python call overhead (about a microsecond). Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sage_edge.bench import bytes_per_token, decode_latency, read_bandwidth
from sage_edge.engine import Engine
from sage_edge.tokenizer import Tokenizer
from training.export import export
from training.model import SageModel
from training.train import build_model_config, load_config


def default_size_model(tokenizer: Tokenizer) -> SageModel:
    """The default configuration (training/configs/default.toml) with random weights."""
    _, model_table, _ = load_config(
        Path(__file__).resolve().parents[1] / "training" / "configs" / "default.toml"
    )
    torch.manual_seed(0)
    return SageModel(build_model_config(model_table, tokenizer)).eval()


def percentiles(times: list[float]) -> tuple[float, float]:
    t = np.asarray(times) * 1e6
    return float(np.median(t)), float(np.percentile(t, 99))


def time_engine(path: Path, positions: list[int], steps: int) -> dict:
    rows = decode_latency(Engine(path), positions, steps)
    return {p: (row["median_us"], row["p99_us"]) for p, row in rows.items()}


def time_torch(model: SageModel, positions: list[int], steps: int, tokens: np.ndarray) -> dict:
    torch.set_num_threads(1)
    results = {}
    with torch.no_grad():
        for position in positions:
            memory = model.init_memory(1)
            fed = 0
            while fed < position:
                n = min(1024, position - fed)
                ids = torch.as_tensor(np.resize(tokens, fed + n)[fed:])[None]
                _, memory = model.forward_segment(ids, memory)
                fed += n
            token = torch.tensor([[int(tokens[0])]])
            times = []
            for _ in range(steps):
                start = time.perf_counter()
                logits, memory = model.forward_segment(token, memory)
                token = logits[:, -1].argmax(-1, keepdim=True)
                times.append(time.perf_counter() - start)
            results[position] = percentiles(times)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="decode steps timed per position")
    parser.add_argument("--positions", type=int, nargs="+", default=[100, 1000, 50000])
    parser.add_argument("--skip-torch", action="store_true")
    args = parser.parse_args()

    tokenizer = Tokenizer.default()
    model = default_size_model(tokenizer)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, tokenizer.vocab_size, 8192)
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for quant in ("q8_0", "f32"):
            paths[quant] = Path(tmp) / f"default_{quant}.sage"
            export(model, tokenizer.to_json(), quant, paths[quant])
        info = Engine(paths["q8_0"]).info
        print(
            f"model: {info['parameters'] / 1e6:.2f} M parameters, {info['attention']}, "
            f"L {info['n_layers']} d {info['d_model']} H {info['n_heads']} G {info['n_kv_heads']} "
            f"d_h {info['d_head']} d_ff {info['d_ff']} V {info['vocab_size']}, horizons "
            f"{info['horizons']} (budget {info['budget']}), kernel {info['kernel']}, 1 thread"
        )
        rows = {}
        for quant, path in paths.items():
            rows[f"engine {quant}"] = time_engine(path, args.positions, args.steps)
            size, need = path.stat().st_size, bytes_per_token(path)
            print(f"  {quant}: file {size / 1e6:.2f} MB, reads {need / 1e6:.2f} MB/token")
        if not args.skip_torch:
            rows["pytorch f32 eager"] = time_torch(model, args.positions, args.steps, tokens)

        print(f"\ndecode step latency, microseconds per token (median / p99), {args.steps} steps")
        print(f"{'':22}" + "".join(f"{'pos ' + str(p):>20}" for p in args.positions))
        for name, results in rows.items():
            cells = "".join(
                f"{results[p][0]:>11.1f} / {results[p][1]:>6.1f}" for p in args.positions
            )
            print(f"{name:22}{cells}")
        if "pytorch f32 eager" in rows:
            for quant in paths:
                speedups = [
                    rows["pytorch f32 eager"][p][0] / rows[f"engine {quant}"][p][0]
                    for p in args.positions
                ]
                print(
                    f"speed-up of engine {quant} over PyTorch (median): "
                    + ", ".join(f"{s:.1f}x" for s in speedups)
                )

        print("\nroofline (bytes read per token / measured read bandwidth)")
        dram = read_bandwidth(256 << 20)
        for quant, path in paths.items():
            need = bytes_per_token(path)
            cached = read_bandwidth(path.stat().st_size)
            engine_us = np.median([rows[f"engine {quant}"][p][0] for p in args.positions])
            for label, bandwidth in (("main memory", dram), ("model-size buffer", cached)):
                bound = need / bandwidth * 1e6
                print(
                    f"  {quant}: {need / 1e6:.2f} MB / {bandwidth / 1e9:.1f} GB/s ({label}) = "
                    f"{bound:.1f} us; engine {engine_us:.1f} us = "
                    f"{engine_us / bound:.1f}x the bound"
                )


if __name__ == "__main__":
    main()
