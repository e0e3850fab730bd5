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
It also says why two runs can play different notes: how late the script wrote each of the
musician's messages and how many notes that moved on the grid (another onset or length, so other
tokens), and the first answer whose notes differ from the same jam's in process with every note
exactly on time (`as_meant`): a difference with no note moved by the script is what the runner
heard late (it stamps bytes when it reads them; --rt-priority N keeps a busy host from delaying
that).
Part 2 (engine work, in process, simulated clock): the poll at a phrase's end feeds what is left
of its last bar and generates until the answer's first note; its wall time, the tokens it fed
and generated, and a Pi 4 estimate from those counts and docs/deploy.md's per-token figures; for
a jam polled every millisecond (notes fed once final) beside one polled only at phrase ends (the
last bar fed whole), in one run.

    python benchmarks/jam_latency.py [--phrases 200] [--runner PATH] [--runner-before PATH]
        [--skip-end-to-end] [--rt-priority N]
"""

from __future__ import annotations

import argparse
import os
import pty
import re
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

import sage_edge
from sage_edge.live import (
    ByteRecorder,
    Jam,
    MidiEvent,
    midi_bytes,
    now_us,
    score_events,
    sleep_until,
)
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


def end_to_end(runner: Path, count: int, rt_priority: int = 0) -> dict:
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
        "--rt-priority",
        str(rt_priority),
    ]
    # --events goes to a file: a pipe read only at the end fills (64 KiB, about 1 870 notes, the
    # 189th answer of 200) and stops the runner in its write until then, answers 11 s late.
    with tempfile.TemporaryFile("w+") as events:
        process = subprocess.Popen(command, stdout=events, stderr=subprocess.PIPE, text=True)
        start = int(re.search(r"monotonic (\d+) us", process.stderr.readline()).group(1))
        arrivals = ByteRecorder(out_master).chunks
        last_off = []
        played = []  # (the event as meant, when its bytes were written)
        for i, phrase in enumerate(phrases(count)):
            bar0 = start + 2 * i * BAR + BAR  # bar 0 is empty: phrases in bars 1, 3, 5, ...
            timed = [e._replace(time_us=e.time_us + bar0) for e in phrase]
            for e, (t, data) in zip(timed, midi_bytes(timed), strict=True):
                sleep_until(t)
                os.write(in_master, data)
                played.append((e, now_us()))
            last_off.append(bar0 + phrase[-1].time_us)
        os.close(in_master)
        _, err = process.communicate(timeout=120)
        events.seek(0)
        out = events.read()
    lines = [line.split() for line in out.splitlines() if line.strip()]
    onsets = sorted(float(line[0]) for line in lines)
    played_notes = [(round(float(line[0]) * TICKS), int(line[2]), int(line[4])) for line in lines]
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
        "musician": moved_on_the_grid(start, played),
        "notes": played_notes,
        "answers": len(lateness),
        "lateness": lateness,
        "from bar line": from_bar,
        "from last note": from_last,
        "runner": err.strip(),
    }


def grid_tick(time_us: int) -> int:
    """The grid point nearest a time from bar 0, halves up (the live encoder's rounding)."""
    return (time_us * TICKS + QUARTER // 2) // QUARTER


def moved_on_the_grid(start: int, played: list[tuple[MidiEvent, int]]) -> dict:
    """What the scripted musician's timing did: each write's lateness (after it, minus the time
    meant), and the notes it moved on the grid, so into other tokens and another answer: an onset
    at another grid point, or a length rounding to another count of ticks (a note cut by its
    phrase's end, whose note-off comes after the bar is taken, keeps its cut length)."""
    late = [actual - e.time_us for e, actual in played]
    onsets = lengths = 0
    sounding: dict[int, tuple[MidiEvent, int]] = {}
    for e, actual in played:
        if e.velocity:
            sounding[e.pitch] = (e, actual)
            onsets += grid_tick(e.time_us - start) != grid_tick(actual - start)
            continue
        on, on_actual = sounding.pop(e.pitch)
        bar_end = start + ((on.time_us - start) // BAR + 1) * BAR
        if e.time_us >= bar_end - QUARTER // TICKS // 2:
            continue  # cut at the phrase's end
        meant = max(1, grid_tick(e.time_us - on.time_us))
        lengths += meant != max(1, grid_tick(actual - on_actual))
    return {"late": late, "onsets moved": onsets, "lengths moved": lengths}


def runner_jam(engine, seed: int) -> Jam:
    """A jam in process set as end_to_end's runner (its seed aside), bar 0 at time 0."""
    return Jam(
        engine,
        "call-response",
        programs=[53, 54, 42],
        bars=1,
        tempo=TEMPO,
        meter=METER,
        musician_program=52,
        start_us=0,
        seed=seed,
    )


def as_meant(count: int) -> list[tuple[int, int, int]]:
    """The notes the runner's jam (seed 0, its defaults) plays when every note of the musician
    comes exactly on time: the same jam in process on a simulated clock, polled every
    millisecond; (grid tick, pitch, program) each, as the runner's --events give them."""
    jam = runner_jam(sage_edge.Engine(), seed=0)
    events = [
        e._replace(time_us=e.time_us + 2 * i * BAR + BAR)
        for i, phrase in enumerate(phrases(count))
        for e in phrase
    ]
    notes, t = [], 0
    for e in [*events, None]:
        until = (2 * count + 2) * BAR if e is None else e.time_us
        while t < until:
            notes += jam.poll(t)
            while jam.state["generating"]:  # as fast as need be: nothing waits for the engine
                notes += jam.poll(t)
            t += 1000
        if e is not None:
            jam.note(*e)
    return [(n.tick, n.pitch, n.program) for n in notes]


def first_difference(meant: list, played: list) -> int | None:
    """The first answer (counted from 0) whose notes differ, or None."""
    per_answer = METER * TICKS * 2  # an answer every other bar

    def answers(notes):
        out: dict[int, list] = {}
        for note in notes:
            out.setdefault(note[0] // per_answer, []).append(note)
        return {k: sorted(v) for k, v in out.items()}

    a, b = answers(meant), answers(played)
    different = [k for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)]
    return different[0] - 1 if different else None


def engine_work(count: int) -> dict:
    """The work at each phrase end, two jams side by side on one simulated clock, the same notes:
    "ahead" is polled every millisecond, as the runner does, so each note is fed once it is final
    and the phrase end leaves only what its last moments decide; "whole" is polled only after the
    phrase's last grid point, so its last bar is fed whole there (the work before notes were fed
    ahead). Also the longest poll of "ahead" during a phrase (the work moved into the bar)."""
    engine = sage_edge.Engine()
    kinds = engine.tokenizer.token_table()["kind"]

    def phrase_end(j, t) -> tuple[float, int, int, list]:
        """Polls at t until the answer's first note: wall time (us), tokens fed, tokens generated
        up to that note's Duration, the notes."""
        before = j.state["tokens"]
        began = time.perf_counter_ns()
        notes = j.poll(t)
        while not notes and j.state["answering"]:
            notes = j.poll(t)
        took = (time.perf_counter_ns() - began) / 1000
        new = j.history()[-(j.state["tokens"] - before) :]
        # The answer's Bar, fed with the rest of the phrase: the last Bar (no other comes before
        # the answer's first note).
        bar_at = max(k for k, token in enumerate(new) if kinds[token] == Kind.BAR)
        durations = [k for k in range(bar_at, len(new)) if kinds[new[k]] == Kind.DURATION]
        return took, bar_at + 1, (durations[0] if durations else len(new)) - bar_at, notes

    ahead, whole = runner_jam(engine, seed=1), runner_jam(engine, seed=1)
    out = {way: {"work_us": [], "fed": [], "decode": []} for way in ("ahead", "whole")}
    out["poll_in_bar_us"], out["same"] = [], []
    clock = 0  # the "ahead" jam's last poll
    for i, phrase in enumerate(phrases(count)):
        bar0 = 2 * i * BAR + BAR
        t = bar0 + BAR - int(QUARTER / TICKS / 2)  # the last grid point passed: the bar is due
        events = [e._replace(time_us=e.time_us + bar0) for e in phrase]
        # A note released after the phrase's end was cut there: its note-off comes afterwards.
        after = [e for e in events if e.time_us >= t]
        events = events[: len(events) - len(after)]
        longest = 0.0
        for e in events:
            whole.note(*e)
        for e in [*events, None]:  # "ahead": polled every millisecond, notes at their times
            until = t if e is None else e.time_us
            while clock + 1000 < until:
                clock += 1000
                began = time.perf_counter_ns()
                ahead.poll(clock)
                if clock >= bar0:
                    longest = max(longest, (time.perf_counter_ns() - began) / 1000)
            if e is not None:
                ahead.note(*e)
        out["poll_in_bar_us"].append(longest)
        first = []
        for way, j in (("ahead", ahead), ("whole", whole)):
            took, fed, decode, notes = phrase_end(j, t)
            out[way]["work_us"].append(took)
            out[way]["fed"].append(fed)
            out[way]["decode"].append(decode)
            first.append(notes[:1])
        out["same"].append(first[0] == first[1])
        for e in after:
            for j in (ahead, whole):
                j.note(*e)
        # The rest of the answer: "ahead" every millisecond up to the next phrase; "whole" until
        # just before the answer's bar is due (its next poll is the next phrase's end).
        for step in range(1, BAR // 1000):
            whole.poll(t + step * 1000)
        clock = t
    return out


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
    parser.add_argument(
        "--runner-before", type=Path, help="another build of the runner, measured after it"
    )
    parser.add_argument("--skip-end-to-end", action="store_true")
    parser.add_argument(
        "--rt-priority",
        type=int,
        default=0,
        metavar="N",
        help="the runner's --rt-priority (0: normal priority)",
    )
    args = parser.parse_args()
    print(
        f"kernel {sage_edge.Engine().info['kernel']}; {args.phrases} phrases, "
        f"1-bar phrases in {METER}/4 at {TEMPO} BPM; load average {os.getloadavg()[0]:.2f}"
    )
    w = engine_work(args.phrases)
    same = sum(w["same"])
    print(f"engine work at a phrase end (in process; {same}/{args.phrases} answers alike):")
    for way, label in (
        ("whole", "last bar fed whole at its end"),
        ("ahead", "notes fed once final (now)"),
    ):
        r = w[way]
        pi = [
            [
                p * PI4_PREFILL_MS[k] + d * PI4_DECODE_MS[k]
                for p, d in zip(r["fed"], r["decode"], strict=True)
            ]
            for k in (0, 1)
        ]
        print(f"  {label}: {summary(r['work_us'])}")
        print(
            f"    tokens fed p50 {np.median(r['fed']):.0f} max {max(r['fed'])}; "
            f"tokens to the first note p50 {np.median(r['decode']):.0f} max {max(r['decode'])}"
        )
        print(
            f"    Pi 4 estimate: p50 {np.median(pi[0]):.1f}-{np.median(pi[1]):.1f} ms, "
            f"p99 {np.percentile(pi[0], 99):.1f}-{np.percentile(pi[1], 99):.1f} ms, "
            f"max {max(pi[0]):.1f}-{max(pi[1]):.1f} ms"
        )
    print(f"  longest poll during a phrase bar (notes fed ahead): {summary(w['poll_in_bar_us'])}")
    if args.skip_end_to_end:
        return
    meant = as_meant(args.phrases)
    for runner in [args.runner] + ([args.runner_before] if args.runner_before else []):
        r = end_to_end(runner, args.phrases, args.rt_priority)
        print(
            f"end to end through ptys, {runner} ({r['answers']} answers with notes, load "
            f"average {os.getloadavg()[0]:.2f}): {r['runner']}"
        )
        for key in ("lateness", "from bar line", "from last note"):
            print(f"  first byte, {key}: {summary(r[key])}")
        m = r["musician"]
        print(
            f"  the musician's {len(m['late'])} writes, late by {summary(m['late'])}; notes "
            f"that moved on the grid (other tokens, another answer): {m['onsets moved']} "
            f"onsets, {m['lengths moved']} lengths"
        )
        differs = first_difference(meant, r["notes"])
        print(
            f"  played {len(r['notes'])} notes; in process, every note on time: {len(meant)}; "
            + ("the same" if differs is None else f"the first different answer: phrase {differs}")
        )


if __name__ == "__main__":
    main()
