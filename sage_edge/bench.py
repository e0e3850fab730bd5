"""Speed and memory of the engine on this machine: `sage-edge bench`.

Everything is measured in one process, so the numbers can be compared as ratios: decode latency
(median and p99 of single sample-and-feed steps, the real-time loop) at positions up to 50 000,
prefill throughput, the session's memory, the model's bytes, and the machine's memory read
bandwidth with the roofline it implies (bytes one token must read / bandwidth). Prints numbers;
asserts nothing. benchmarks/ compares the same weights against PyTorch and ONNX Runtime.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from sage_edge import format as sage_format

DEFAULT_POSITIONS = (100, 1_000, 10_000, 50_000)
BANDWIDTH_BYTES = 256 << 20  # far larger than any CPU cache
# `sage-edge bench --quick`: a few seconds, and a 32 MB bandwidth buffer (still 64 times a Pi
# Zero 2's 512 KB cache) instead of 256 MB, so that it fits a Pi Zero's 512 MB. A server whose
# last-level cache holds much of 32 MB reads it faster than its main memory.
QUICK = {
    "positions": (100, 1_000),
    "steps": 50,
    "bandwidth_bytes": 32 << 20,
    "prefill_tokens": 1024,
    "music_bars": 4,
}


def bytes_per_token(path: str | Path, kv_bytes: int | None = None) -> int:
    """Bytes one decode step reads: each matrix row it multiplies (one embedding row, one
    family's key/value rows), the vectors, and every layer's ring memory of keys and values
    (``kv_bytes``, a session's ``Engine.info["kv_bytes"]``; None: the f32 rings)."""
    model = sage_format.read(path)
    total = 0
    for name, tensor in model.tensors.items():
        nbytes = tensor.nbytes
        if name == "tok_embedding":
            nbytes //= model.vocab_size
        elif name.endswith((".wk", ".wv")):
            nbytes //= model.n_families
        total += nbytes
    if kv_bytes is None:
        kv_bytes = sum(model.horizons) * model.n_kv_heads * model.d_head * 2 * 4
    return total + kv_bytes


def read_bandwidth(nbytes: int = BANDWIDTH_BYTES, repeats: int = 5) -> float:
    """Bytes per second at which one core reads a buffer of ``nbytes``, read again and again
    (numpy's max of its bytes, best of ``repeats``). A buffer far larger than the caches gives
    main memory's bandwidth; one the size of what a decode step reads, that of the cache level
    that keeps it between steps. An integer max is one SIMD instruction per vector, so the reads
    bound it: numpy's float sum, used before, was bound by its additions (about 25 GB/s on the
    project's EPYC, whose one core reads DRAM at 31 GB/s and its L3 at 92, and 8 GB/s on an
    Intel Xeon whose one core reads DRAM at 15 GB/s)."""
    buffer = np.ones(max(nbytes, 4096), dtype=np.uint8)
    buffer.max()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        buffer.max()
        best = min(best, time.perf_counter() - start)
    return buffer.nbytes / best


def _summary(seconds: list[float]) -> dict:
    micros = np.asarray(seconds) * 1e6
    return {"median_us": float(np.median(micros)), "p99_us": float(np.percentile(micros, 99))}


def _filler(engine, n: int, seed: int = 0) -> np.ndarray:
    """Tokens to fill the memory with: a generated stream, so every ring holds real keys."""
    from sage_edge.engine import SamplingParams

    session = engine.session(seed=seed)
    session.feed([engine.tokenizer.id_of("BOS_None")])
    return np.asarray(session.generate(n, SamplingParams(temperature=1.0)), dtype=np.int32)


def decode_latency(engine, positions=DEFAULT_POSITIONS, steps: int = 200, seed: int = 0) -> dict:
    """Median and p99 microseconds of one sample-and-feed step at each position."""
    filler = _filler(engine, min(4096, max(positions, default=1)), seed)
    session = engine.session(seed=seed)
    results = {}
    for position in sorted(positions):
        session.reset()
        fed = 0
        while fed < position:  # prefill up to the position in blocks of the filler stream
            n = min(len(filler), position - fed)
            session.feed(filler[:n])
            fed += n
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            session.generate(1)
            times.append(time.perf_counter() - start)
        results[position] = _summary(times)
    return results


def prefill_throughput(engine, tokens: int = 4096, repeats: int = 3, seed: int = 0) -> float:
    """Tokens per second fed in one block (logits of the last token only), best of repeats."""
    filler = _filler(engine, tokens, seed)
    session = engine.session(seed=seed)
    best = float("inf")
    for _ in range(repeats):
        session.reset()
        start = time.perf_counter()
        session.feed(filler)
        best = min(best, time.perf_counter() - start)
    return len(filler) / best


def music_token_rate(engine, bars: int = 16, seed: int = 0) -> float:
    """Tokens per second of music: the tokens of ``bars`` generated bars over their playing time
    at the tempo the model chose. The engine must produce tokens faster than this to play live."""
    result = engine.generate(bars=bars, seed=seed)
    score = result.score
    tempo = score.tempos[0].qpm if len(score.tempos) else 120.0
    quarters = sum(
        signature.numerator * 4 / signature.denominator
        for signature in _bar_signatures(score, bars)
    )
    return result.generated_tokens / (quarters * 60.0 / tempo)


def _bar_signatures(score, bars: int):
    """The time signature of each of the first ``bars`` bars (4/4 where the score has none)."""
    import symusic

    signatures = sorted(score.time_signatures, key=lambda s: s.time) or [
        symusic.TimeSignature(0, 4, 4)
    ]
    tpq, time_, index, out = score.ticks_per_quarter, 0, 0, []
    while len(out) < bars:
        while index + 1 < len(signatures) and signatures[index + 1].time <= time_:
            index += 1
        signature = signatures[index]
        out.append(signature)
        time_ += round(signature.numerator * 4 / signature.denominator * tpq)
    return out


def run(
    engine,
    positions=DEFAULT_POSITIONS,
    steps: int = 200,
    bandwidth_bytes: int = BANDWIDTH_BYTES,
    prefill_tokens: int = 4096,
    music_bars: int = 16,
) -> dict:
    """Every number of `sage-edge bench` as a JSON-ready dict (``**QUICK`` for the quick run)."""
    info = engine.info
    latency = decode_latency(engine, positions, steps)
    need = bytes_per_token(engine.path, info["kv_bytes"])
    bandwidth = read_bandwidth(bandwidth_bytes)
    bound_us = need / bandwidth * 1e6
    # The step's own bytes, read again and again as decoding does: where they stay in a cache
    # (6.5 MB in a 32 MB L3), that cache's bandwidth bounds the step, not main memory's.
    working_set_bandwidth = read_bandwidth(need)
    working_set_bound_us = need / working_set_bandwidth * 1e6
    medians = [row["median_us"] for row in latency.values()]
    tokens_per_second = 1e6 / float(np.median(medians))
    music_rate = music_token_rate(engine, music_bars)
    return {
        "model": str(engine.path),
        "kernel": info["kernel"],
        "parameters": info["parameters"],
        "quantization": info["quantization"],
        "model_bytes": info["file_bytes"],
        "session_bytes": info["session_bytes"],
        "kv_memory": info["kv_memory"],
        "kv_bytes": info["kv_bytes"],
        "activation_bytes": info["activation_bytes"],
        "decode": {str(p): row for p, row in latency.items()},
        "tokens_per_second": tokens_per_second,
        "music_tokens_per_second": music_rate,
        "realtime_margin": tokens_per_second / music_rate,
        "prefill_tokens_per_second": prefill_throughput(engine, prefill_tokens),
        "bytes_per_token": need,
        "read_bandwidth_bytes_per_second": bandwidth,
        "read_bandwidth_buffer_bytes": bandwidth_bytes,
        "roofline_us": bound_us,
        "median_over_roofline": float(np.median(medians)) / bound_us,
        "working_set_bandwidth_bytes_per_second": working_set_bandwidth,
        "working_set_roofline_us": working_set_bound_us,
        "median_over_working_set_roofline": float(np.median(medians)) / working_set_bound_us,
    }


def plot(results: dict, path: str | Path) -> None:
    """Latency against position (log scale), median and p99."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    positions = [int(p) for p in results["decode"]]
    median = [results["decode"][str(p)]["median_us"] for p in positions]
    p99 = [results["decode"][str(p)]["p99_us"] for p in positions]
    figure, axes = plt.subplots(figsize=(7, 4), dpi=100)
    axes.plot(positions, median, "o-", label="median")
    axes.plot(positions, p99, "s--", label="p99")
    axes.axhline(results["roofline_us"], color="0.5", lw=0.8, label="main memory roofline")
    axes.axhline(
        results["working_set_roofline_us"], color="0.5", lw=0.8, ls=":", label="cache roofline"
    )
    axes.set_xscale("log")
    axes.set_ylim(bottom=0)
    axes.set_xlabel("position (tokens already in the session)")
    axes.set_ylabel("decode step (µs)")
    axes.set_title(f"sage-edge decode latency ({results['kernel']})")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def report(results: dict) -> str:
    lines = [
        f"model {results['model']}: {results['parameters'] / 1e6:.2f} M parameters, "
        f"{results['quantization']}, {results['model_bytes'] / 1e6:.2f} MB",
        f"kernel {results['kernel']}",
        f"session memory {results['session_bytes'] / 1e6:.2f} MB "
        f"(key/value rings {results['kv_bytes'] / 1e6:.2f} MB, {results['kv_memory']})",
        "decode step, µs (median / p99):",
    ]
    for position, row in results["decode"].items():
        lines.append(
            f"  position {int(position):>7,}: {row['median_us']:8.1f} / {row['p99_us']:8.1f}"
        )
    lines += [
        f"tokens/s (decode): {results['tokens_per_second']:,.0f}",
        f"tokens/s (prefill): {results['prefill_tokens_per_second']:,.0f}",
        f"real-time margin: {results['realtime_margin']:,.0f}x (the music needs "
        f"{results['music_tokens_per_second']:.1f} tokens/s)",
        f"roofline: {results['bytes_per_token'] / 1e6:.2f} MB/token; from main memory "
        f"({results['read_bandwidth_buffer_bytes'] / 2**20:.0f} MB buffer) at "
        f"{results['read_bandwidth_bytes_per_second'] / 1e9:.1f} GB/s = "
        f"{results['roofline_us']:.1f} µs, from a cache (the step's bytes read again) at "
        f"{results['working_set_bandwidth_bytes_per_second'] / 1e9:.1f} GB/s = "
        f"{results['working_set_roofline_us']:.1f} µs; the engine takes "
        f"{results['median_over_roofline']:.2f}x / "
        f"{results['median_over_working_set_roofline']:.2f}x those",
    ]
    return "\n".join(lines)
