"""Clock following: how soon after its pulse each answer note goes out, writer and reader apart.

sage-edge-run --midi-in/--midi-out (or sage-edge jam --in/--out: --front-end cli) on two ptys,
--clock in, call and response with 1-bar phrases
in 2/4 at 240 BPM (tests/test_jam.py's drifting-clock scenario): a writer *process* plays Start,
then 24 pulses per quarter note drifting by +-2 % (a sine over 200 pulses), with a quarter-note
phrase on the pulses of every other bar, stamping each pulse just before it writes it; this
process only reads the runner's output (one thread, nothing else running in it) and stamps each
read. For each answer note-on (the runner's --events gives its tick and when it was decoded):
arrival minus the write of its tick's pulse, p50/p99/max over RUNS runs, for all notes and apart
for those decoded before their pulse came (what clock following adds) and after it (an answer's
note generated late), and how many came early or on another pulse; and the front end's CPU time.

The writer starts the clock 100 ms into one of the runner's bars (of its own clock, which runs
until Start), and the pulses count from that bar. Front ends (--front-end runner|cli, repeated;
the runner's binary --runner, repeated), their arguments (--runner-args, repeated, given to each
front end: e.g. "--rt-priority 50", which both take; "" for none) and readers (--reader block: a
read that sleeps until bytes come; rt: the same at real-time priority, SCHED_FIFO 40, so that the
reader's own wait for a CPU is out of the figures) are compared in one run, every combination once
per seed, in turn.

    python benchmarks/clock_follow.py [--runs 10] [--front-end runner|cli ...] [--runner PATH ...]
                                      [--runner-args=ARGS ...] [--reader block|rt ...]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import pty
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import mido
import numpy as np

from sage_edge.live import ByteRecorder, sleep_until

ROOT = Path(__file__).resolve().parent.parent
PULSES = 10 * 48  # 10 bars of 2/4
PULSE_US = 250_000 / 24  # 240 BPM
BAR_US = 500_000


def writer(fd: int) -> None:
    """The clock and the musician, in their own process: prints the pulses' write times."""
    melody = [60, 62, 64, 65]  # a quarter-note phrase in bars 0, 2, 4
    sent = []
    # The runner is ready, its bar 0 (on its own clock) at bar_0: Start 100 ms into one of its
    # bars, at least 20 ms from now, well clear of its bar lines; the pulses count from that bar.
    bar_0 = int(sys.stdin.readline())
    start_bar = max(0, (time.monotonic_ns() // 1000 + 20_000 - bar_0 - 100_000) // BAR_US + 1)
    t = bar_0 + start_bar * BAR_US + 100_000
    sleep_until(t, 500)
    os.write(fd, bytes([0xFA]))
    for p in range(PULSES):
        t += round(PULSE_US * (1 + 0.02 * math.sin(2 * math.pi * p / 200)))
        sleep_until(t, 500)
        data = [0xF8]
        bar, in_bar = divmod(p, 48)
        if bar % 2 == 0 and bar < 6 and in_bar % 12 == 0:
            data += [0x90, melody[in_bar // 12], 90]
        if bar % 2 == 0 and bar < 6 and in_bar % 12 == 10:
            data += [0x90, melody[in_bar // 12], 0]
        sent.append(time.monotonic_ns() // 1000)
        os.write(fd, bytes(data))
    os.close(fd)
    print(json.dumps({"bar": start_bar, "sent": sent}))


class RealTimeReader(ByteRecorder):
    """A sleeping read at real-time priority (SCHED_FIFO 40; pid 0 is the calling thread): woken
    ahead of the host's other work."""

    def _run(self) -> None:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(40))
        super()._run()


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def command(front_end: Path | str, midi_in: str, midi_out: str, seed: int, args: str) -> list[str]:
    """The scenario's command line: sage-edge-run (``front_end`` its path) or sage-edge jam
    (``"cli"``), the same options under their two front ends' names."""
    if front_end == "cli":
        ports = [sys.executable, "-m", "sage_edge.cli", "jam", "--in", midi_in, "--out", midi_out]
    else:
        model = str(ROOT / "sage_edge/models/default.sage")
        ports = [str(front_end), "--model", model, "--midi-in", midi_in, "--midi-out", midi_out]
    return [
        *ports,
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
        *args.split(),
    ]


def run_once(
    front_end: Path | str, seed: int, args: str = "", reader: str = "block"
) -> tuple[list[int], int, list[bool], float]:
    """Lateness of each answer note-on after its pulse (us), how many went out on a pulse other
    than their own, whether each was decoded before its pulse came, and the front end's CPU
    seconds (user + system, from loading the model to its exit). ``front_end``: the runner's
    path, or ``"cli"`` for sage-edge jam."""
    in_master, in_slave = pty.openpty()
    out_master, out_slave = pty.openpty()
    # The writer's process starts first and waits for a line: its clock must start at once once
    # the runner runs. A clock started later than the runner's first bar (a process starting on a
    # busy host) would be anchored at the bar then open, and the pulses below count from bar 0.
    writer_process = subprocess.Popen(
        [sys.executable, __file__, "--write", str(in_master)],
        pass_fds=[in_master],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    os.close(in_master)
    command_line = command(front_end, os.ttyname(in_slave), os.ttyname(out_slave), seed, args)
    process = subprocess.Popen(
        command_line, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    line = process.stderr.readline()  # the runner has opened both ptys: ours can close
    bar_0 = int(re.search(r"bar 0 at monotonic (\d+) us", line).group(1))
    os.close(in_slave)
    os.close(out_slave)  # the reader's read ends when the runner's side closes
    readers = {"block": ByteRecorder, "rt": RealTimeReader}
    recorder = readers[reader](out_master)
    played, _ = writer_process.communicate(f"{bar_0}\n", timeout=60)
    if writer_process.returncode != 0:
        raise RuntimeError("the writer failed")
    played = json.loads(played)
    sent, first = played["sent"], played["bar"] * 48  # the pulse of Start's downbeat
    cpu_before = children_cpu()  # the writer's process counted, the runner's not yet
    out, err = process.communicate(timeout=60)
    cpu = children_cpu() - cpu_before
    recorder.thread.join(timeout=1)
    os.close(out_master)
    if process.returncode != 0:
        raise RuntimeError(err)
    parser, ons = mido.Parser(), []
    for t, data in recorder.chunks:
        parser.feed(data)
        ons += [t for m in parser if m.type == "note_on" and m.velocity > 0]
    # Each note's pulse and the moment the runner decoded it (its --events line).
    notes = sorted(
        # (a runner without the decode time in --events: counted as decoded ahead)
        (round(float(f[0]) * 24) - first, int(f[5]) if len(f) > 5 else 0)
        for f in map(str.split, out.splitlines())
        if f
    )
    notes = [(p, decoded) for p, decoded in notes if 0 <= p < PULSES]
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
    return late, wrong, ahead, cpu


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--write":
        writer(int(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--front-end", action="append", choices=("runner", "cli"))
    parser.add_argument("--runner", type=Path, action="append")
    parser.add_argument("--runner-args", action="append", help='e.g. "--rt-priority 50"')
    parser.add_argument("--reader", action="append", choices=("block", "rt"))
    args = parser.parse_args()
    runners = args.runner or [ROOT / "build/native/csrc/runner/sage-edge-run"]
    front_ends = [
        f
        for kind in args.front_end or ["runner"]
        for f in (runners if kind == "runner" else ["cli"])
    ]
    variants = list(
        itertools.product(front_ends, args.runner_args or [""], args.reader or ["block"])
    )
    results = {v: ([], 0, [], 0.0) for v in variants}
    load = [os.getloadavg()[0]]
    for seed in range(args.runs):
        for v in variants:
            late, wrong, ahead, cpu = results[v]
            run_late, run_wrong, run_ahead, run_cpu = run_once(v[0], seed + 2, v[1], v[2])
            results[v] = (late + run_late, wrong + run_wrong, ahead + run_ahead, cpu + run_cpu)
        load.append(os.getloadavg()[0])
    import sage_edge

    print(
        f"load average {min(load):.2f}-{max(load):.2f} (1 min, between rounds); {args.runs} runs "
        f"of each; kernel {sage_edge.Engine().info['kernel']}"
    )
    for (front_end, runner_args, reader), (late, wrong, ahead, cpu) in results.items():
        v, ahead = np.asarray(late, dtype=float) / 1000, np.asarray(ahead)
        way = {"block": "sleeping", "rt": "real-time"}[reader]
        name = "sage-edge jam" if front_end == "cli" else front_end
        print(
            f"{name} {runner_args}, {way} reader: {len(v)} answer note-ons, "
            f"front end CPU {cpu / args.runs:.3f} s a run"
        )
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
