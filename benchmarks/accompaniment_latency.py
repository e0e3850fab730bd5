"""Accompaniment in time, reacting: how soon after the musician's note the engine's notes on that
beat go out, measured on real bytes (docs/jam.md, "In time").

sage-edge-run --midi-in/--midi-out on two ptys, accompaniment with --lookahead 0 --listen-ticks 12
--react (the defaults, spelled out) at 120 BPM in 4/4; a scripted musician plays the soprano of a
held-out chorale (bwv1.6, in the validation split) BARS bars, over and over. For every soprano
note-on on a beat where the engine also plays a note (--events gives the engine's onsets), the
reaction is the arrival of the engine's first note-on byte after the soprano's note-on was written,
minus that write; p50, p99 and max over all such beats. Both sides are this Python process (a writer
loop and a reading thread), so the figures include their own wake-ups. It also prints how many notes
the engine played and a digest of them (time, length, pitch, velocity, program): runs of one seed
on the same input play the same notes unless a note of the musician lands off its grid point.

    python benchmarks/accompaniment_latency.py [--bars 40] [--runner PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pty
import re
import subprocess
from pathlib import Path

import mido
import numpy as np

import sage_edge
from sage_edge.live import ByteRecorder, midi_bytes, now_us, score_events, sleep_until
from sage_edge.tokenizer import load_score

ROOT = Path(__file__).resolve().parent.parent
TICKS = 12
SCORE = ROOT / "tests/data/chorales/bwv1.6.mid"
# About 120 BPM, at a tempo whose grid is a whole number of microseconds per tick of the file, so
# that the notes stay on the model's grid however long it plays (at 500 000 us a quarter, 1 041
# us per file tick drifted the soprano half a grid step early in 33 s, where a read's jitter then
# decided the grid point of a note, and the stream).
FILE_TICKS = load_score(SCORE).ticks_per_quarter
QUARTER = round(60e6 / 120 / FILE_TICKS) * FILE_TICKS
TEMPO = 60e6 / QUARTER


def soprano(bars: int):
    """bwv1.6's soprano as timed events, repeated to `bars` bars (relative microseconds)."""
    score = load_score(SCORE)
    score.tracks = [score.tracks[0]]
    events, _ = score_events(score, QUARTER // score.ticks_per_quarter)
    length = (max(e.time_us for e in events) // (4 * QUARTER) + 1) * 4 * QUARTER
    out = []
    for k in range(bars * 4 * QUARTER // length + 1):
        out += [e._replace(time_us=e.time_us + k * length) for e in events]
    return [e for e in out if e.time_us < bars * 4 * QUARTER]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bars", type=int, default=40)
    parser.add_argument(
        "--runner", type=Path, default=ROOT / "build/native/csrc/runner/sage-edge-run"
    )
    args = parser.parse_args()
    in_master, in_slave = pty.openpty()
    out_master, out_slave = pty.openpty()
    command = [str(args.runner), "--model", str(ROOT / "sage_edge/models/default.sage")]
    command += ["--midi-in", os.ttyname(in_slave), "--midi-out", os.ttyname(out_slave)]
    command += ["--mode", "accompany", "--lookahead", "0", "--listen-ticks", str(TICKS), "--react"]
    command += ["--bars", "1", "--tempo", repr(TEMPO), "--programs", "53,54,42"]
    command += ["--musician-program", "52", "--seed", "1", "--events"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    start = int(re.search(r"monotonic (\d+) us", process.stderr.readline()).group(1))
    arrivals = ByteRecorder(out_master).chunks
    written: list[tuple[int, int]] = []  # (grid tick, when its note-on was written)
    events = soprano(args.bars)
    off_grid = 0  # writes later than half a grid step: the engine hears those notes elsewhere
    for (t, data), event in zip(midi_bytes(events), events, strict=True):
        sleep_until(start + t)
        os.write(in_master, data)
        off_grid += now_us() - (start + t) > QUARTER / TICKS / 2
        if event.velocity:
            written.append((round(event.time_us * TICKS / QUARTER), now_us()))
    os.close(in_master)
    out, _ = process.communicate(timeout=300)
    played = [line.split()[:5] for line in out.splitlines() if line]
    engine_ticks = {round(float(fields[0]) * TICKS) for fields in played}
    parser_, note_ons = mido.Parser(), []
    for t, data in arrivals:
        parser_.feed(data)
        note_ons += [t for m in parser_ if m.type == "note_on" and m.velocity > 0]
    note_ons.sort()
    reactions = []
    for tick, at in written:
        if tick % TICKS or tick < 4 * TICKS or tick not in engine_ticks:
            continue  # off the beat, bar 0 (listened to only), or the engine rests there
        first = next((t for t in note_ons if t >= at), None)
        if first is not None and first - at < QUARTER // 2:
            reactions.append((first - at) / 1000)
    ms = np.asarray(reactions)
    print(f"kernel {sage_edge.Engine().info['kernel']}, load average {os.getloadavg()[0]:.1f}")
    print(f"{len(ms)} beats: reaction p50 {np.percentile(ms, 50):.2f} ms, ", end="")
    print(f"p99 {np.percentile(ms, 99):.2f} ms, max {ms.max():.2f} ms")
    digest = hashlib.sha256(repr(played).encode()).hexdigest()[:12]
    print(f"the engine played {len(played)} notes (digest {digest}); {off_grid} of the musician's")
    print(f"{len(events)} events written more than half a grid step late")


if __name__ == "__main__":
    main()
