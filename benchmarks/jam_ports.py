"""How far from the grid `sage-edge jam`'s notes arrive, through ptys and through JACK ports.

The same jam both ways, alternating, RUNS times each: call and response in 2-bar phrases at 300
BPM, a scripted musician playing the first 6 bars of bwv1.6's soprano (held out of training) at
the times the jam announces, its messages written whole; a reader stamps each message of the
answers as it arrives. For every note-on it takes the distance to the nearest grid tick (the
jam's own error plus the transport's), and prints p50/p99/max per transport.

JACK: start a server first and leave it running, e.g. (no sound card needed)
    jackd --no-realtime --sync -d dummy -r 48000 -p 64 &
then
    python benchmarks/jam_ports.py [--runs 5]
Needs the ports extra (python-rtmidi) and mido.
"""

from __future__ import annotations

import argparse
import os
import pty
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import mido
import numpy as np
import rtmidi

from sage_edge.live import ByteRecorder, now_us, score_events, sleep_until
from sage_edge.tokenizer import load_score, notated_bar_at

ROOT = Path(__file__).resolve().parent.parent
TEMPO, TICKS, BARS = 300, 12, 6
QUARTER = round(60e6 / TEMPO)
JAM = [sys.executable, "-m", "sage_edge.cli", "jam", "--mode", "call-response", "--bars", "2"]
JAM += ["--programs", "53,54,42", "--musician-program", "52", "--tempo", str(TEMPO), "--seed", "1"]


def soprano() -> list[tuple[int, bytes]]:
    """The soprano's first BARS bars as (time, whole message)."""
    score = load_score(ROOT / "tests/data/chorales/bwv1.6.mid")
    score.tracks = [score.tracks[0]]
    end = notated_bar_at(score, 0).start
    for _ in range(BARS):
        end = notated_bar_at(score, end).end
    score.tracks[0].notes = [n for n in score.tracks[0].notes if n.time < end]
    events, _ = score_events(score, QUARTER // score.ticks_per_quarter)
    return [(e.time_us, bytes([0x90 | e.channel, e.pitch, e.velocity])) for e in events]


def play(jam: subprocess.Popen, send, wait_after: int) -> int:
    """Plays the soprano into a started jam at its announced times; returns bar 0's time."""
    start = int(re.search(r"bar 0 at monotonic (\d+) us", jam.stderr.readline()).group(1))
    for t, message in soprano():
        sleep_until(start + t, 2000)
        send(message)
    sleep_until(start + wait_after)
    return start


def through_ptys() -> tuple[int, list[tuple[int, bytes]]]:
    in_master, in_slave = pty.openpty()
    out_master, out_slave = pty.openpty()
    command = [*JAM, "--in", os.ttyname(in_slave), "--out", os.ttyname(out_slave)]
    jam = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    receiver = ByteRecorder(out_master)
    start = play(jam, lambda m: os.write(in_master, m), 0)
    os.close(in_master)  # the input ends: the jam answers the last phrase and stops
    jam.communicate(timeout=120)
    time.sleep(0.1)
    return start, receiver.chunks


def through_jack() -> tuple[int, list[tuple[int, bytes]]]:
    received = []
    musician = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name="bench-musician")
    musician.open_virtual_port("soprano")
    ears = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, name="bench-listener")
    ears.set_callback(lambda event, _: received.append((now_us(), bytes(event[0]))))
    ears.open_virtual_port("ears")
    command = [*JAM, "--in", "bench-musician:soprano", "--out", "bench-listener:ears"]
    jam = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        start = play(jam, musician.send_message, (BARS + 3) * 4 * QUARTER)
        jam.send_signal(signal.SIGINT)  # a named port never ends
        jam.communicate(timeout=120)
    finally:
        musician.delete()
        ears.delete()
    return start, received


def grid_errors(start: int, chunks: list[tuple[int, bytes]]) -> list[float]:
    """Each answer note-on's distance to the nearest grid tick, in ms."""
    tick, parser, errors = QUARTER / TICKS, mido.Parser(), []
    for t, data in chunks:
        parser.feed(data)
        for m in parser:
            if m.type == "note_on" and m.velocity > 0:
                ticks = (t - start) / tick
                errors.append(abs(ticks - round(ticks)) * tick / 1000)
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    errors = {"ptys": [], "jack": []}
    for _ in range(args.runs):
        for name, run in (("ptys", through_ptys), ("jack", through_jack)):
            errors[name] += grid_errors(*run())
    print("load average: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    for name, values in errors.items():
        p50, p99 = np.percentile(values, [50, 99])
        print(
            f"{name}: {len(values)} note-ons, from the grid p50 {p50:.2f} ms, p99 {p99:.2f} ms, "
            f"max {max(values):.2f} ms"
        )


if __name__ == "__main__":
    main()
