"""Accompaniment quality: the engine's lower voices under a real soprano played live, against an
unrelated baseline and Bach's own lower voices, for each way of accompanying (docs/jam.md).

For each held-out chorale (the test split, tests/data/corpus_test_split.npz, in 4/4 with the four
parts S 52, A 53, T 54, B 42) a scripted musician plays the soprano of bars 0..BARS into a jam in
accompaniment mode (the shipped model, engine programs 53, 54, 42, seeds i, i + 100, ... for the
i-th piece), on the simulated clock of ``Jam.play`` as tests/test_jam.py does, once per jam of
MODES. Bars 1..BARS are measured (bar 0 is often a pickup), each row pairing the real soprano with
lower voices from:

- 1 bar behind, as written: the engine's parts of bar b from the session's stream, written once
  the soprano's bar b was known (what the model chose for that soprano bar);
- <jam>, as heard: the notes the jam plays, at their times. One bar behind, bar b's parts sound
  during bar b + 1, so against the soprano's bar b + 1; in time (lookahead 0), in bar b;
- unrelated: the lower voices of the next chorale of the list (cyclic), transposed by the
  difference of the two pieces' Krumhansl-Kessler tonics (to within a tritone), bar b on bar b;
- Bach: the chorale's own lower voices (the ceiling).

Measures (training/metrics.py, training/music_theory.py): chroma agreement with the soprano (mean
per-bar cosine of the lower voices' chroma and the soprano's), chroma agreement with Bach's lower
voices, share of consonant soprano-to-lower-voice intervals at every moment a note starts
(unison/octave, thirds, fifth, sixths; the fourth counts as dissonant against the soprano), share
of moments with a semitone clash, parallel fifths and octaves per 100 beats over the four voices.

The work of a decision point of an in-time jam (going back to the bar line, feeding the bar so far,
generating up to 8 tokens) is timed per poll; the simulated clock hides it from the measures, so
"as heard" is the music with the engine's notes at their grid times (reacting, they really sound
that long after the musician's note).

    python benchmarks/accompaniment_quality.py [--pieces 16] [--bars 8] [--seeds 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sage_edge  # noqa: E402
from sage_edge.live import Jam, score_events  # noqa: E402
from sage_edge.tokenizer import Tokenizer  # noqa: E402
from training.metrics import (  # noqa: E402
    Notes,
    bar_chroma,
    chroma_similarity,
    cosine,
    notes_from_arrays,
    notes_from_score,
    slice_bars,
)
from training.music_theory import (  # noqa: E402
    parallels,
    piece_key,
    semitone_clashes,
    sounding,
)

SOPRANO, LOWER = 52, [53, 54, 42]
QUARTER_US = 500_000  # 120 BPM; 12 ticks per quarter divide it exactly
CONSONANT = (0, 3, 4, 7, 8, 9)  # interval classes against the soprano


def parts(notes: Notes, programs: list[int]) -> Notes:
    keep = np.isin(notes.program, programs)
    fields = (notes.onset, notes.duration, notes.pitch, notes.velocity, notes.program)
    return Notes(*(a[keep] for a in fields), notes.bars)


def together(a: Notes, b: Notes) -> Notes:
    fields = ("onset", "duration", "pitch", "velocity", "program")
    return notes_from_arrays(
        *(np.concatenate([getattr(a, f), getattr(b, f)]) for f in fields), bars=a.bars
    )


def transposed(notes: Notes, semitones: int) -> Notes:
    return replace(notes, pitch=notes.pitch + semitones)


def consonance(soprano: Notes, lower: Notes) -> tuple[int, int]:
    """(consonant pairs, pairs): the soprano's sounding pitch against each sounding lower-voice
    pitch, at every moment of the four voices together."""
    _, mask, pitch, program = sounding(together(soprano, lower))
    good = total = 0
    for row in mask:
        top = pitch[row & (program == SOPRANO)]
        below = pitch[row & (program != SOPRANO)]
        if len(top) == 0 or len(below) == 0:
            continue
        interval = np.abs(top.max() - below) % 12
        good += int(np.isin(interval, CONSONANT).sum())
        total += len(below)
    return good, total


def measure(soprano: Notes, lower: Notes, bach: Notes) -> dict[str, float]:
    s_chroma, l_chroma = bar_chroma(soprano), bar_chroma(lower)
    good, pairs = consonance(soprano, lower)
    clashes, two = semitone_clashes(together(soprano, lower))
    fifths, octaves, _ = parallels(together(soprano, lower))
    return {
        "chroma_soprano": float(
            np.mean([cosine(s, c) for s, c in zip(s_chroma, l_chroma, strict=True)])
        ),
        "chroma_bach": chroma_similarity(lower, bach),
        "consonant": (good, pairs),
        "clash": (clashes, two),
        "fifths": fifths,
        "octaves": octaves,
        "beats": float(soprano.bars[-1] - soprano.bars[0]),
    }


def pieces(tokenizer: Tokenizer, limit: int, bars: int):
    """(name, Notes of bars 0..bars, Score) of the test split's 4/4 four-part chorales."""
    split = np.load(ROOT / "tests/data/corpus_test_split.npz")
    out = []
    for name in split.files:
        score = tokenizer.decode(split[name].tolist())
        meters = {(t.numerator, t.denominator) for t in score.time_signatures}
        programs = [t.program for t in score.tracks]
        if not name.startswith("bach/") or meters != {(4, 4)} or programs != [SOPRANO, *LOWER]:
            continue
        if score.end() < (bars + 2) * 4 * score.ticks_per_quarter:
            continue
        out.append((name, notes_from_score(score, bars + 1), score))
    return out[:limit]


# The jams measured: (label, Jam keywords), each spelled out (the defaults are "react, every
# beat"). "1 bar behind" is heard one bar late; the others (anticipation, docs/jam.md) play each
# bar in it.
MODES = {
    "1 bar behind": {"lookahead": 1},
    "in time, bar lines": {"lookahead": 0, "listen_ticks": 0, "react": False},
    "in time, every beat": {"lookahead": 0, "listen_ticks": 12, "react": False},
    "in time, every beat, predict": {
        "lookahead": 0,
        "listen_ticks": 12,
        "react": False,
        "predict": True,
    },
    "react, every beat": {"lookahead": 0, "listen_ticks": 12, "react": True},
    "react, every beat, predict": {
        "lookahead": 0,
        "listen_ticks": 12,
        "react": True,
        "predict": True,
    },
    "react, every eighth": {"lookahead": 0, "listen_ticks": 6, "react": True},
}


def engine_parts(
    engine, score, seed: int, bars: int, mode: dict, work: list[float], fed: list[int]
):
    """(as written, as heard): the engine's notes over bars 0..bars + 1 with the soprano of
    bars 0..bars played into an accompanying jam; ``work`` receives the seconds of each poll
    that went back into the bar (in time: the work of one decision point) and, last, the tokens
    per bar of the stream; ``fed`` the tokens each of those polls replayed."""
    sop = score.copy()
    sop.tracks = [sop.tracks[0]]
    end = (bars + 1) * 4 * sop.ticks_per_quarter
    sop.tracks[0].notes = [n for n in sop.tracks[0].notes if n.time < end]
    events, _ = score_events(sop, QUARTER_US // sop.ticks_per_quarter)
    jam = Jam(
        engine, "accompany", programs=LOWER, musician_program=SOPRANO, start_us=0, seed=seed, **mode
    )
    heard = []
    until, t, step = (bars + 3) * 4 * QUARTER_US, 0, 1000  # Jam.play's simulated clock
    events = iter(events)
    event = next(events, None)
    while t <= until:
        while event is not None and event.time_us <= t:
            jam.note(*event)
            event = next(events, None)
        before = jam.state
        started = time.perf_counter()
        heard += jam.poll(t)
        elapsed = time.perf_counter() - started
        after = jam.state
        if after["replays"] != before["replays"]:
            work.append(elapsed)
            fed.append(after["replayed_tokens"] - before["replayed_tokens"])
        t += step
    work.append(len(jam.history()) / (bars + 3))
    lines = np.arange(bars + 3) * 4.0
    written = parts(notes_from_score(engine.tokenizer.decode(jam.history()), bars + 2), LOWER)
    written = replace(written, bars=lines)
    heard_notes = notes_from_arrays(
        [n.time_us / QUARTER_US for n in heard],
        [(n.end_us - n.time_us) / QUARTER_US for n in heard],
        [n.pitch for n in heard],
        [n.velocity for n in heard],
        [n.program for n in heard],
        bars=lines,
    )
    return written, heard_notes


def pooled(rows: list[dict]) -> dict[str, float]:
    beats = sum(r["beats"] for r in rows)
    return {
        "chroma_soprano": float(np.mean([r["chroma_soprano"] for r in rows])),
        "chroma_bach": float(np.mean([r["chroma_bach"] for r in rows])),
        "consonant": sum(r["consonant"][0] for r in rows) / sum(r["consonant"][1] for r in rows),
        "clash": sum(r["clash"][0] for r in rows) / max(1, sum(r["clash"][1] for r in rows)),
        "fifths": 100 * sum(r["fifths"] for r in rows) / beats,
        "octaves": 100 * sum(r["octaves"] for r in rows) / beats,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pieces", type=int, default=16)
    parser.add_argument("--seeds", type=int, default=3, help="engine takes per chorale")
    parser.add_argument("--bars", type=int, default=8, help="bars measured (1..BARS)")
    args = parser.parse_args()
    engine, tokenizer = sage_edge.Engine(), Tokenizer.default()
    chorales = pieces(tokenizer, args.pieces, args.bars)
    keys = [piece_key(parts(n, LOWER + [SOPRANO])) for _, n, _ in chorales]
    rows: dict[str, list[dict]] = {"1 bar behind, as written": []}
    rows.update({f"{label}, as heard": [] for label in MODES})
    rows.update({"unrelated chorale": [], "Bach (ceiling)": []})
    work: dict[str, list[float]] = {label: [] for label in MODES}
    stream: dict[str, list[float]] = {label: [] for label in MODES}  # tokens per bar
    fed: dict[str, list[int]] = {label: [] for label in MODES}  # tokens fed per decision
    started = time.perf_counter()
    for i, (name, notes, score) in enumerate(chorales):

        def window(n: Notes, start: int = 1) -> Notes:
            return slice_bars(n, start, start + args.bars)

        soprano, bach = window(parts(notes, [SOPRANO])), window(parts(notes, LOWER))
        j = (i + 1) % len(chorales)
        shift = ((keys[i] - keys[j]) % 12 + 6) % 12 - 6  # tonic to tonic, within a tritone
        other = transposed(window(parts(chorales[j][1], LOWER)), shift)
        # bar b of the engine sounds in bar b + 1: against the soprano and Bach of bar b + 1
        late_sop = window(parts(notes_from_score(score, args.bars + 2), [SOPRANO]), 2)
        late_bach = window(parts(notes_from_score(score, args.bars + 2), LOWER), 2)
        for label, mode in MODES.items():
            for k in range(args.seeds):
                seconds: list[float] = []
                written, heard = engine_parts(
                    engine, score, i + 100 * k, args.bars, mode, seconds, fed[label]
                )
                work[label] += seconds[:-1]
                stream[label].append(seconds[-1])
                if mode["lookahead"] == 1:
                    rows["1 bar behind, as written"].append(measure(soprano, window(written), bach))
                    rows[f"{label}, as heard"].append(
                        measure(late_sop, window(heard, 2), late_bach)
                    )
                else:
                    rows[f"{label}, as heard"].append(measure(soprano, window(heard), bach))
        rows["unrelated chorale"].append(measure(soprano, other, bach))
        rows["Bach (ceiling)"].append(measure(soprano, bach, bach))
        print(f"{name}: lower voices of {chorales[j][0]} moved {shift:+d}", file=sys.stderr)
    elapsed = time.perf_counter() - started
    print(
        f"{len(chorales)} chorales x bars 1..{args.bars} (4/4), soprano played live, "
        f"{args.seeds} engine takes each (seeds i, i + 100, ...); "
        f"{elapsed:.0f} s"
    )
    print()
    print(
        "| lower voices | chroma vs soprano | chroma vs Bach's | consonant vs soprano "
        "| semitone clashes | parallel 5ths /100 beats | parallel 8ves /100 beats |"
    )
    print("|---|---|---|---|---|---|---|")
    for label, measured in rows.items():
        p = pooled(measured)
        print(
            f"| {label} | {p['chroma_soprano']:.3f} | {p['chroma_bach']:.3f} "
            f"| {p['consonant']:.1%} | {p['clash']:.1%} | {p['fifths']:.2f} "
            f"| {p['octaves']:.2f} |"
        )
    print()
    print(
        "Work at a decision point (in time): the poll that goes back into the bar (to its anchor "
        "or its line), feeds what changed and generates up to 8 tokens; "
        f"kernel {engine.info['kernel']}"
    )
    print()
    print(
        "| jam | stream tokens per bar | decision points per bar | tokens fed per decision "
        "(mean, p99) | p50 ms | p99 ms | max ms |"
    )
    print("|---|---|---|---|---|---|---|")
    for label, seconds in work.items():
        if not seconds:
            continue
        ms = np.asarray(seconds) * 1e3
        per_bar = len(seconds) / (len(chorales) * args.seeds * (args.bars + 2))
        print(
            f"| {label} | {np.mean(stream[label]):.0f} | {per_bar:.1f} "
            f"| {np.mean(fed[label]):.1f}, {np.percentile(fed[label], 99):.0f} "
            f"| {np.percentile(ms, 50):.2f} | {np.percentile(ms, 99):.2f} | {ms.max():.2f} |"
        )


if __name__ == "__main__":
    main()
