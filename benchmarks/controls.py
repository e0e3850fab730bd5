"""The musical controls' effect and cost on a model: the evaluation's music-theory measures with
each control off, soft and strict, side by side on the same seeds, and the decode step's time with
every control on against the plain decode, in the same run.

    python benchmarks/controls.py [--model FILE] [--pieces 8] [--bars 16] [--long-run-bars 128]

Each setting generates ``--pieces`` pieces of ``--bars`` bars from scratch (seeds 0, 1, ...) for
choir and cello (programs 52, 53, 54, 42, the shipped model's chorale voices) through
``Engine.generate`` with the CLI's sampling defaults, and measures them with
``training.music_theory`` (docs/evaluation.md, "Music-theory measures"): out-of-key share against
the key each piece is heard in and against the key locked (D minor), parallels per 100 beats,
range violations against the usual ranges, notes per bar, final chord on the tonic, and the
negative log-likelihood of the generated pitches under the plain model (how much of the model's
own choice a rule overrides: a soft rule should cost less than a strict one); a long run of
``--long-run-bars`` bars gives the key stability across 16-bar windows. The cost: median
microseconds per token of ``Session.generate`` over ``--steps`` tokens, plain (a session's
defaults) and with all controls on (soft and strict), interleaved ``--repeats`` times on one
session each; and the controls' own work, the mask for the next token with more rules against
fewer over one stream, the defaults' no-parallels included (``--cost-only``: only the cost).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import numpy as np  # noqa: E402

from sage_edge import _engine  # noqa: E402
from sage_edge.engine import DEFAULT_MODEL, Controls, Engine  # noqa: E402
from sage_edge.vocab import Kind  # noqa: E402
from training import metrics, music_theory  # noqa: E402

PROGRAMS = [52, 53, 54, 42]
KEY = "D:minor"
D_MINOR = 12 + 2  # training.music_theory's key numbering: minor keys are 12 + tonic
EVERYTHING = dict(
    key=KEY, range="usual", velocity="60-100", max_polyphony=4, density="4-24", plays_after=1
)
# Each setting is one rule (or the named set) on top of OFF: the defaults' soft parallels and
# cadence off, so a row shows its own rule; the silent-program bonus stays (plays-after 1).
OFF = dict(no_parallels="off", end="none")
SETTINGS = {
    name: {**OFF, **rules}
    for name, rules in {
        "off": {},
        "key soft 1.5": dict(key=KEY, key_mode="soft", key_penalty=1.5),
        "key soft 3": dict(key=KEY, key_mode="soft", key_penalty=3),
        "key strict": dict(key=KEY),
        "range usual": dict(range="usual"),
        "parallels soft": dict(no_parallels="soft"),
        "parallels strict": dict(no_parallels="strict"),
        "cadence (by ear)": dict(end="cadence"),
        "cadence + key": dict(key=KEY, end="cadence"),
        "all strict": dict(EVERYTHING, no_parallels="strict", end="cadence"),
    }.items()
}


def locked_key_share(notes: metrics.Notes, classes: int) -> float:
    pitched = notes.pitch[notes.pitched]
    return float(sum(not (classes >> (int(p) % 12) & 1) for p in pitched)) / max(len(pitched), 1)


def pitch_nll(engine: Engine, tokens: list[int]) -> tuple[float, int]:
    """Negative log-likelihood (nats) of the tokens' pitch tokens under the plain model, and how
    many: how far from the model's own choices the controls pushed it."""
    logits = np.asarray(engine.session(seed=0).feed(tokens, all_logits=True))
    logits = logits.reshape(len(tokens), -1)[:-1]
    logp = logits - logits.max(axis=1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
    following = np.asarray(tokens[1:])
    pitch = np.asarray(engine._model.vocabulary()["kind"])[following] == Kind.PITCH
    nll = -logp[np.arange(len(following)), following][pitch]
    return float(nll.sum()), int(pitch.sum())


def measure(engine: Engine, settings: dict, pieces: int, bars: int, long_run: int) -> dict:
    controls = Controls(**settings) if settings else None
    classes = Controls(key=KEY).settings.key_classes
    analyses, outside_locked, notes_per_bar, ended = [], [], [], 0
    nll, pitches, ends_on_d = 0.0, 0, []
    for seed in range(pieces):
        generation = engine.generate(bars=bars, seed=seed, programs=PROGRAMS, controls=controls)
        notes = metrics.notes_from_score(generation.score, n_bars=bars)
        analyses.append(music_theory.analyze(notes))
        ends_on_d.append(bool(music_theory.final_on_tonic(notes, D_MINOR)))
        outside_locked.append(locked_key_share(notes, classes))
        notes_per_bar.append(len(generation.notes) / bars)
        ended += generation.tokens[-1] == engine.tokenizer.id_of("EOS_None")
        piece_nll, piece_pitches = pitch_nll(engine, generation.tokens)
        nll, pitches = nll + piece_nll, pitches + piece_pitches
    summary = music_theory.summarize(analyses)
    row = {
        "out of key %": 100 * summary["out_of_key_share"],
        "out of D minor %": 100 * statistics.mean(outside_locked),
        "par. fifths/100 beats": summary["parallel_fifths_per_100_beats"],
        "par. octaves/100 beats": summary["parallel_octaves_per_100_beats"],
        "out of range %": 100 * summary["range_violation_share"],
        "notes/bar": statistics.mean(notes_per_bar),
        "ends on tonic %": 100 * (summary["final_on_tonic_rate"] or 0),
        "ends on D %": 100 * statistics.mean(ends_on_d),
        "ended by EOS": f"{ended}/{pieces}",
        "pitch NLL (plain model)": nll / pitches,
    }
    if long_run:
        generation = engine.generate(bars=long_run, seed=0, programs=PROGRAMS, controls=controls)
        notes = metrics.notes_from_score(generation.score, n_bars=long_run)
        same, pairs = music_theory.key_stability(notes)
        row["same key next 16 bars %"] = 100 * same / pairs if pairs else None
    return row


def decode_cost(engine: Engine, steps: int, repeats: int) -> dict:
    """Median microseconds per generated token, plain and with every control on (one session
    each, interleaved so that the shared machine's noise hits every variant), and the controls'
    own cost per token: the mask for the next token (``allowed_next``: grammar, then controls)
    timed on a session with every control on and on a plain one fed the same tokens, the
    difference's median over ``steps`` positions of one stream."""
    variants = {
        "plain": None,
        "all soft": Controls(**EVERYTHING, key_mode="soft", no_parallels="soft"),
        "all strict": Controls(**EVERYTHING, no_parallels="strict"),
    }
    sessions = {}
    for name, controls in variants.items():
        sessions[name] = engine.session(seed=1, programs=PROGRAMS, controls=controls)
        sessions[name].generate(200)  # warm up, past the first bars
    times = {name: [] for name in variants}
    for _ in range(repeats):
        for name, session in sessions.items():
            started = time.perf_counter()
            session.generate(steps)
            times[name].append(1e6 * (time.perf_counter() - started) / steps)
    cost = {name: statistics.median(values) for name, values in times.items()}
    # The controls' own work: the same stream's mask with more rules on against fewer. A session's
    # defaults (what "plain" has) already turn no-parallels soft on, so the defaults' parallels rule
    # is timed against the defaults with it off. Pitch steps are about one token in five, so the
    # median hides them: the mean is the cost per generated token.
    pairs = {
        "all soft": (variants["all soft"], None),
        "all strict": (variants["all strict"], None),
        "defaults' parallels": (Controls(), Controls(no_parallels="off")),
    }
    for name, (more, fewer) in pairs.items():
        controlled = engine.session(seed=2, programs=PROGRAMS, controls=more)
        plain = engine.session(seed=2, programs=PROGRAMS, controls=fewer)
        differences = []
        for _ in range(steps):

            def mask_time(session) -> float:
                best = float("inf")
                for _ in range(5):
                    started = time.perf_counter()
                    session.allowed_next()
                    best = min(best, time.perf_counter() - started)
                return best

            differences.append(1e6 * (mask_time(controlled) - mask_time(plain)))
            token = controlled.sample()
            controlled.feed([token])
            plain.feed([token])
        cost[f"{name}: controls' mask"] = statistics.median(differences)
        cost[f"{name}: controls' mask, mean"] = statistics.mean(differences)
    return cost


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--pieces", type=int, default=8)
    ap.add_argument("--bars", type=int, default=16)
    ap.add_argument("--long-run-bars", type=int, default=128)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--cost-only", action="store_true", help="only the decode step's cost")
    args = ap.parse_args(argv)
    engine = Engine(args.model)
    print(f"model {args.model}, kernel {_engine.kernel()}, programs {PROGRAMS}")
    print(f"{args.pieces} pieces x {args.bars} bars per setting (seeds 0..{args.pieces - 1})\n")
    rows = {}
    for name, settings in {} if args.cost_only else SETTINGS.items():
        rows[name] = measure(engine, settings, args.pieces, args.bars, args.long_run_bars)
    for name, row in rows.items():
        if name == next(iter(rows)):
            print(f"{'setting':18}" + "".join(f"{c:>24}" for c in row))
        cells = [
            f"{v:.2f}" if isinstance(v, float) else ("-" if v is None else str(v))
            for v in row.values()
        ]
        print(f"{name:18}" + "".join(f"{c:>24}" for c in cells))
    cost = decode_cost(engine, args.steps, args.repeats)
    plain = cost["plain"]
    print(f"\ndecode step, median of {args.repeats} x {args.steps} tokens:")
    for name in ("plain", "all soft", "all strict"):
        micros = cost[name]
        print(f"  {name:10} {micros:7.1f} us/token  ({100 * (micros / plain - 1):+.1f} %)")
    print(f"the controls' own cost per token (median / mean over {args.steps} positions):")
    for name in ("all soft", "all strict", "defaults' parallels"):
        micros, mean = cost[f"{name}: controls' mask"], cost[f"{name}: controls' mask, mean"]
        print(
            f"  {name:20} {micros:5.2f} / {mean:5.2f} us/token"
            f"  (mean {100 * mean / plain:.1f} % of a plain step)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
