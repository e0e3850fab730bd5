"""Clock following: how soon after its pulse each answer note goes out, writer and reader apart.

sage-edge-run --midi-in/--midi-out on two ptys, --clock in, call and response with 1-bar phrases
in 2/4 at 240 BPM (tests/test_jam.py's drifting-clock scenario): a writer *process* plays Start,
then 24 pulses per quarter note drifting by +-2 % (a sine over 200 pulses), with a quarter-note
phrase on the pulses of every other bar, stamping each pulse just before it writes it; this
process only reads the runner's output (one thread, nothing else running in it) and stamps each
read. For each answer note-on (the runner's --events gives its tick and when it was decoded):
arrival minus the write of its tick's pulse, p50/p99/max over RUNS runs, for all notes and apart
for those decoded before their pulse came (what clock following adds) and after it (an answer's
note generated late), and how many came early or on another pulse.

    python benchmarks/clock_follow.py [--runs 10] [--runner PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pty
import subprocess
import sys
import time
from pathlib import Path

import mido
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PULSES = 10 * 48  # 10 bars of 2/4
PULSE_US = 250_000 / 24  # 240 BPM


def writer(fd: int) -> None:
    """The clock and the musician, in their own process: prints the pulses' write times."""
    melody = [60, 62, 64, 65]  # a quarter-note phrase in bars 0, 2, 4
    sent = []
    t = time.monotonic_ns() // 1000 + 20_000
    os.write(fd, bytes([0xFA]))
    for p in range(PULSES):
        t += round(PULSE_US * (1 + 0.02 * math.sin(2 * math.pi * p / 200)))
        while (left := t - time.monotonic_ns() // 1000) > 0:
            time.sleep(min(left, 500) / 1e6)
        data = [0xF8]
        bar, in_bar = divmod(p, 48)
        if bar % 2 == 0 and bar < 6 and in_bar % 12 == 0:
            data += [0x90, melody[in_bar // 12], 90]
        if bar % 2 == 0 and bar < 6 and in_bar % 12 == 10:
            data += [0x90, melody[in_bar // 12], 0]
        sent.append(time.monotonic_ns() // 1000)
        os.write(fd, bytes(data))
    os.close(fd)
    print(json.dumps(sent))


def run_once(runner: Path, seed: int) -> tuple[list[int], int, list[bool]]:
    """Lateness of each answer note-on after its pulse (us), how many went out on a pulse other
    than their own, and whether each was decoded before its pulse came."""
    # Imported before the runner starts and not at the top: the writer's process (this file) must
    # start its clock at once. A clock started later than the runner's first bar is anchored at
    # the bar then open, and the pulse numbers below count from the runner's bar 0.
    from sage_edge.live import ByteRecorder

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
        "2",
        "--tempo",
        "240",
        "--clock",
        "in",
        "--programs",
        "53,54,42",
        "--musician-program",
        "52",
        "--seed",
        str(seed),
        "--events",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    process.stderr.readline()
    reader = ByteRecorder(out_master)
    chunks = reader.chunks
    play = subprocess.run(
        [sys.executable, __file__, "--write", str(in_master)],
        pass_fds=[in_master],
        capture_output=True,
        text=True,
        check=True,
    )
    os.close(in_master)
    sent = json.loads(play.stdout)
    out, err = process.communicate(timeout=60)
    time.sleep(0.1)
    if process.returncode != 0:
        raise RuntimeError(err)
    parser, ons = mido.Parser(), []
    for t, data in chunks:
        parser.feed(data)
        ons += [t for m in parser if m.type == "note_on" and m.velocity > 0]
    # Each note's pulse and the moment the runner decoded it (its --events line).
    notes = sorted(
        # (a runner without the decode time in --events: counted as decoded ahead)
        (round(float(f[0]) * 24), int(f[5]) if len(f) > 5 else 0)
        for f in map(str.split, out.splitlines())
        if f
    )
    notes = [(p, decoded) for p, decoded in notes if p < PULSES]
    due = [p for p, _ in notes]
    assert len(ons) == len(due), (len(ons), len(due))
    late = [arrival - sent[p] for arrival, p in zip(ons, due, strict=True)]
    ahead = [decoded < sent[p] for p, decoded in notes]
    # On another pulse: at or after the next pulse's write (pulses are 10.4 ms apart).
    wrong = sum(
        1
        for arrival, p in zip(ons, due, strict=True)
        if p + 1 < len(sent) and arrival >= sent[p + 1]
    )
    return late, wrong, ahead


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--write":
        writer(int(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument(
        "--runner", type=Path, default=ROOT / "build/native/csrc/runner/sage-edge-run"
    )
    args = parser.parse_args()
    late, wrong, ahead = [], 0, []
    for seed in range(args.runs):
        run_late, run_wrong, run_ahead = run_once(args.runner, seed + 2)
        late += run_late
        wrong += run_wrong
        ahead += run_ahead
    v, ahead = np.asarray(late, dtype=float) / 1000, np.asarray(ahead)
    print(f"load average {os.getloadavg()[0]:.2f}; {args.runs} runs, {len(v)} answer note-ons")
    for label, w in (
        ("all", v),
        ("decoded before their pulse (clock following)", v[ahead]),
        ("decoded after their pulse (the answer's generation)", v[~ahead]),
    ):
        if len(w) == 0:
            print(f"  {label}: none")
            continue
        print(
            f"  {label}, {len(w)}: after their pulse p50 {np.median(w):.3f} ms, "
            f"p99 {np.percentile(w, 99):.3f} ms, max {w.max():.3f} ms; "
            f"within 1 ms {100 * np.mean(w <= 1):.1f} %; early {int(np.sum(w < 0))}"
        )
    print(f"  on another pulse than their own: {wrong}")


if __name__ == "__main__":
    main()
