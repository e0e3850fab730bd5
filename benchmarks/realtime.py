"""Real-time streaming: how late notes come when the engine plays along at a fast tempo.

    python benchmarks/realtime.py [--model FILE] [--seconds 60] [--tempo 240] [--seed 0] [--json]

Streams ``--seconds`` of music at ``--tempo`` BPM with ``Engine.stream(realtime=True)``: a thread
generates ahead while the iterator hands over each note at its playback time. Lateness is how long
after its playback time each note was handed over (0 is perfect; the stream never hands a note
over early). Prints the distribution; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from sage_edge.engine import Engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a .sage file (default: the shipped model)")
    parser.add_argument("--seconds", type=float, default=60.0, help="music to stream")
    parser.add_argument("--tempo", type=float, default=240.0, help="BPM")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    engine = Engine(args.model)
    quarters = args.seconds * args.tempo / 60.0
    bars = int(np.ceil(quarters / 4)) + 1  # 4/4 bars; the stream is cut at --seconds of music
    stream = engine.stream(bars=bars, seed=args.seed, tempo=args.tempo, realtime=True)
    started = time.perf_counter()
    notes = 0
    first = None
    for note in stream:
        first = note.time if first is None else first
        if note.time - first > quarters:
            break
        notes += 1
    wall = time.perf_counter() - started
    lateness_ms = np.asarray(stream.lateness[:notes]) * 1e3
    results = {
        "model": str(engine.path),
        "tempo_bpm": args.tempo,
        "music_seconds": args.seconds,
        "wall_seconds": wall,
        "notes": notes,
        "lateness_ms": {
            "median": float(np.median(lateness_ms)),
            "p99": float(np.percentile(lateness_ms, 99)),
            "max": float(lateness_ms.max()),
        },
    }
    if args.json:
        print(json.dumps(results, indent=2))
        return
    late = results["lateness_ms"]
    print(
        f"{notes} notes over {args.seconds:.0f} s of music at {args.tempo:.0f} BPM "
        f"(wall {wall:.1f} s), {engine.info['kernel']}, 1 thread"
    )
    print(
        f"lateness: median {late['median']:.3f} ms, p99 {late['p99']:.3f} ms, "
        f"max {late['max']:.3f} ms"
    )


if __name__ == "__main__":
    main()
