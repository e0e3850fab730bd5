"""Call-and-response latency: how late the engine's answer starts, measured on real bytes.

Part 1 (end to end, this machine): sage-edge-run --midi-in/--midi-out on two ptys, 1-bar phrases
in 2/4 at 240 BPM; a scripted musician plays the soprano of a held-out chorale (bwv1.6, in the
validation split), one phrase bar then one bar of rest for the answer, PHRASES times. For every
answer it takes the arrival of its first byte and reports, p50/p99/max:
  - lateness: first byte minus the grid time of the answer's first note (--events gives it):
    what the engine and the pty add;
  - from the bar line: first byte minus the answer's bar line (adds where the model put its
    first note, which is music, not delay);
  - from the last note: first byte minus the musician's last note-off of the phrase.
Part 2 (engine work, in process, simulated clock): the poll that takes a phrase's last bar feeds
it and generates until the answer's first note; its wall time, the tokens it prefilled and
generated, and a Pi 4 estimate from those counts and docs/deploy.md's per-token figures.

    python benchmarks/jam_latency.py [--phrases 200] [--runner PATH] [--skip-end-to-end]
"""

from __future__ import annotations

import argparse
import os
import pty
import re
import subprocess
import threading
import time
from pathlib import Path

import numpy as np

import sage_edge
from sage_edge.live import Jam, MidiEvent, midi_bytes, now_us, score_events
from sage_edge.tokenizer import load_score
from sage_edge.vocab import Kind

ROOT = Path(__file__).resolve().parent.parent
TEMPO, METER, TICKS = 240, 2, 12
QUARTER = round(60e6 / TEMPO)
BAR = METER * QUARTER
# docs/deploy.md, section 5: a decode token on a Pi 4 (1.5 GHz, q8_0) takes 1.1-2.0 ms; a token
# of a prefill block shares the weights' reads, leaving the int8 compute and attention: 0.5-0.9 ms.
PI4_DECODE_MS, PI4_PREFILL_MS = (1.1, 2.0), (0.5, 0.9)


def phrases(count: int) -> list[list[MidiEvent]]:
    """`count` one-bar phrases (relative times) cut from bwv1.6's soprano, cycling through it."""
    score = load_score(ROOT / "tests/data/chorales/bwv1.6.mid")
    events, _ = score_events(score.copy(), 1)  # ticks
    tpq = score.ticks_per_quarter
    soprano = sorted((int(n.time), int(n.duration), int(n.pitch)) for n in score.tracks[0].notes)
    bar_ticks = METER * tpq
    by_bar: dict[int, list] = {}
    for start, length, pitch in soprano:
        end = min(start + length, (start // bar_ticks + 1) * bar_ticks)  # cut at the bar line
        by_bar.setdefault(start // bar_ticks, []).append((start % bar_ticks, end - start, pitch))
    bars = [by_bar[b] for b in sorted(by_bar)]
    out = []
    for i in range(count):
        notes = bars[i % len(bars)]
        phrase = []
        for start, length, pitch in notes:
            on = start * QUARTER // tpq
            off = (start + length) * QUARTER // tpq - 2000  # released just before the next note
            phrase += [MidiEvent(on, 0, pitch, 90), MidiEvent(max(off, on + 1000), 0, pitch, 0)]
        out.append(sorted(phrase, key=lambda e: (e.time_us, e.velocity > 0)))
    return out


def end_to_end(runner: Path, count: int) -> dict:
    in_master, in_slave = pty.openpty()
    out_master, out_slave = pty.openpty()
    command = [
        str(runner),
        "--model",
        str(ROOT / "sage_edge/models/default.sage"),
        "--midi-in",
        os.ttyname(in_slave),
        "--midi-out",
        os.ttyname(out_slave),
        "--mode",
        "call-response",
        "--bars",
        "1",
        "--meter",
        str(METER),
        "--tempo",
        str(TEMPO),
        "--programs",
        "53,54,42",
        "--musician-program",
        "52",
        "--events",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    start = int(re.search(r"monotonic (\d+) us", process.stderr.readline()).group(1))
    arrivals: list[tuple[int, bytes]] = []

    def read():
        while True:
            try:
                data = os.read(out_master, 4096)
            except OSError:
                return
            if not data:
                return
            arrivals.append((time.monotonic_ns() // 1000, data))

    threading.Thread(target=read, daemon=True).start()
    last_off = []
    for i, phrase in enumerate(phrases(count)):
        bar0 = start + 2 * i * BAR + BAR  # bar 0 is empty: phrases in bars 1, 3, 5, ...
        for t, data in midi_bytes([e._replace(time_us=e.time_us + bar0) for e in phrase]):
            while (left := t - now_us()) > 0:
                time.sleep(min(left, 1000) / 1e6)
            os.write(in_master, data)
        last_off.append(bar0 + phrase[-1].time_us)
    os.close(in_master)
    out, err = process.communicate(timeout=120)
    onsets = sorted(float(line.split()[0]) for line in out.splitlines() if line.strip())
    lateness, from_bar, from_last = [], [], []
    for i in range(count):
        line = (2 * i + 2) * METER  # the answer's bar line, in quarters
        first_note = next((q for q in onsets if line <= q < line + METER), None)
        if first_note is None:
            continue  # an answer bar the model left empty
        grid = start + first_note * QUARTER
        first = next(t for t, _ in arrivals if t >= grid - 5000)
        lateness.append(first - grid)
        from_bar.append(first - (start + line * QUARTER))
        from_last.append(first - last_off[i])
    return {
        "answers": len(lateness),
        "lateness": lateness,
        "from bar line": from_bar,
        "from last note": from_last,
        "runner": err.strip(),
    }


def engine_work(count: int) -> dict:
    engine = sage_edge.Engine()
    kinds = engine.tokenizer.token_table()["kind"]
    jam = Jam(
        engine,
        "call-response",
        programs=[53, 54, 42],
        bars=1,
        tempo=TEMPO,
        meter=METER,
        musician_program=52,
        start_us=0,
        seed=1,
    )
    work, prefill, decode = [], [], []
    for i, phrase in enumerate(phrases(count)):
        bar0 = 2 * i * BAR + BAR
        for e in phrase:
            jam.note(e.time_us + bar0, e.channel, e.pitch, e.velocity)
        t = bar0 + BAR - int(QUARTER / TICKS / 2)  # the last grid point passed: the bar is due
        before = jam.state["tokens"]
        began = time.perf_counter_ns()
        notes = jam.poll(t)
        while not notes and jam.state["answering"]:
            notes = jam.poll(t)
        work.append((time.perf_counter_ns() - began) / 1000)
        history = jam.history()
        fed = jam.state["tokens"] - before
        new = history[-fed:]
        bar_at = next(
            k
            for k in range(len(new) - 1, -1, -1)
            if kinds[new[k]] == Kind.BAR and k > 0 and kinds[new[k - 1]] != Kind.BAR
        )
        prefill.append(bar_at)  # the musician's last bar
        durations = [k for k in range(bar_at, len(new)) if kinds[new[k]] == Kind.DURATION]
        decode.append((durations[0] if durations else len(new)) - bar_at + 1)
        for step in range(2 * BAR // 1000):  # the rest of the answer, polled every millisecond
            jam.poll(t + step * 1000)
    return {"work_us": work, "prefill": prefill, "decode": decode}


def summary(values, unit="ms", scale=1e-3) -> str:
    v = np.asarray(values, dtype=float) * scale
    return (
        f"p50 {np.percentile(v, 50):.2f} {unit}, p99 {np.percentile(v, 99):.2f} {unit}, "
        f"max {v.max():.2f} {unit}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phrases", type=int, default=200)
    parser.add_argument(
        "--runner", type=Path, default=ROOT / "build/native/csrc/runner/sage-edge-run"
    )
    parser.add_argument("--skip-end-to-end", action="store_true")
    args = parser.parse_args()
    print(
        f"kernel {sage_edge.Engine().info['kernel']}; {args.phrases} phrases, "
        f"1-bar phrases in {METER}/4 at {TEMPO} BPM"
    )
    w = engine_work(args.phrases)
    print("engine work at a phrase end (in process):", summary(w["work_us"]))
    print(
        f"  prefill tokens p50 {np.median(w['prefill']):.0f} max {max(w['prefill'])}; "
        f"tokens to the first note p50 {np.median(w['decode']):.0f} max {max(w['decode'])}"
    )
    pi = [
        [
            p * PI4_PREFILL_MS[k] + d * PI4_DECODE_MS[k]
            for p, d in zip(w["prefill"], w["decode"], strict=True)
        ]
        for k in (0, 1)
    ]
    print(
        f"  Pi 4 estimate: p50 {np.median(pi[0]):.1f}-{np.median(pi[1]):.1f} ms, "
        f"p99 {np.percentile(pi[0], 99):.1f}-{np.percentile(pi[1], 99):.1f} ms, "
        f"max {max(pi[0]):.1f}-{max(pi[1]):.1f} ms"
    )
    if args.skip_end_to_end:
        return
    r = end_to_end(args.runner, args.phrases)
    print(f"end to end through ptys ({r['answers']} answers with notes): {r['runner']}")
    for key in ("lateness", "from bar line", "from last note"):
        print(f"  first byte, {key}: {summary(r[key])}")


if __name__ == "__main__":
    main()
