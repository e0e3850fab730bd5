"""Evaluate a ``.sage`` model on the test split: perplexity, the continuation benchmark (NMSI),
distribution metrics and music-theory measures against the real pieces, all through the C++ engine.

    python -m training.evaluate --model runs/default/model_q8_0.sage --data data/corpus \\
        [--json] [--max-pieces N] [--seed S] [--max-bars 8] [--temperature 1.0] [--top-p 0.95] \\
        [--music-pieces 8] [--music-bars 16] [--long-run-bars 512] [--adherence-seeds 8]

``--data`` is a prepared corpus (its ``test`` split), an ``.npz`` of token ids per piece (such as
``tests/data/corpus_test_split.npz``, the shipped model's test split) or any folder of MIDI files.
``docs/evaluation.md`` defines every number printed; ``training/metrics.py`` and
``training/music_theory.py`` compute them.

``--backend torch`` runs the same file through the PyTorch reference model instead (weights
dequantized, no grammar mask): a cross-check of the engine, and a way to evaluate before the engine
is built.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sage_edge import format as sage_format
from sage_edge.errors import UnplayedProgramsError
from sage_edge.tokenizer import Tokenizer
from sage_edge.vocab import Kind
from training import metrics, music_theory

PROMPT_BARS = 4
DEFAULT_MAX_BARS = 8  # continuation bars generated per piece, at most (runtime)
FEED_CHUNK = 512  # tokens per feed call when scoring: bounds the [n, V] logits buffer
# Perplexities also reported with these kinds of target token left out
PERPLEXITY_WITHOUT = {
    "program": (Kind.PROGRAM,),
    "program_velocity": (Kind.PROGRAM, Kind.VELOCITY),
}
GENERATE_CHUNK = 16  # tokens per generate call between checks for the last bar
# The reference may use this many times the real continuation's tokens (the engine: its own cap).
TOKENS_PER_BAR_CAP = 4
# Music-theory measures (docs/evaluation.md): seeded pieces of MUSIC_BARS bars against the real
# test pieces' last MUSIC_BARS bars, key stability over one long run, program adherence.
MUSIC_PIECES = 8
MUSIC_BARS = 16
LONG_RUN_BARS = 512
ADHERENCE_SEEDS = 8
ADHERENCE_BARS = 4


# ---------------------------------------------------------------------------------------------
# Backends: the C++ engine, or the PyTorch reference with the same two calls


def engine_available() -> tuple[bool, str]:
    """Whether ``sage_edge.Engine`` can run here, and why not."""
    try:
        _engine_class()
    except ImportError as exc:
        return False, str(exc)
    return True, ""


def _engine_class():
    try:
        from sage_edge import Engine
    except ImportError:
        from sage_edge.engine import Engine
    return Engine


class EngineBackend:
    """Sessions of the C++ engine (``sage_edge.Engine``), one thread, the grammar mask on."""

    name = "engine"

    def __init__(self, path: str | Path, kv_memory: str | None = None):
        chosen = {} if kv_memory is None else {"kv_memory": kv_memory}  # None: the engine's default
        self.engine = _engine_class()(str(path), **chosen)

    def session(self, seed: int):
        return self.engine.session(seed=seed)

    def continuation(self, prompt: np.ndarray, n_bars: int, seed: int, sampling: dict, _cap: int):
        """``n_bars`` bars after ``prompt`` (token ids ending before a Bar) by ``Engine.generate``:
        the engine's bar loop, its token cap; its grammar never allows EOS, and a continuation
        stops mid-piece, so no cadence ends it."""
        from sage_edge import _engine
        from sage_edge.engine import Controls, SamplingParams

        result = self.engine.generate(
            prompt.tolist(),
            n_bars,
            seed=seed,
            sampling=SamplingParams(**sampling),
            controls=Controls(end="none"),
        )
        capped = result.generated_tokens >= _engine.MAX_TOKENS_PER_BAR * (n_bars + 1)
        ids = result.tokens[1 + len(prompt) :]  # the Bar closing the prompt, then the new bars
        return Continuation(ids, n_bars, "cap" if capped else "bars")


class ReferenceSession:
    """``feed``/``generate`` of the PyTorch reference: the model's DSMR memory carried across
    calls, numpy sampling with temperature and top-p. No grammar mask."""

    def __init__(self, model, seed: int):
        import torch

        self.torch, self.model = torch, model
        self.memory = model.init_memory(1)
        self.rng = np.random.default_rng(seed)
        self.last_logits: np.ndarray | None = None

    def feed(self, ids, all_logits: bool = False) -> np.ndarray:
        torch = self.torch
        ids = torch.as_tensor(np.asarray(ids, dtype=np.int64)).view(1, -1)
        with torch.no_grad():
            logits, self.memory = self.model.forward_segment(ids, self.memory)
        logits = logits[0].numpy()
        self.last_logits = logits[-1]
        return logits if all_logits else logits[-1]

    def generate(self, n: int, temperature: float = 1.0, top_p: float = 1.0) -> list[int]:
        out = []
        for _ in range(n):
            token = sample(self.last_logits, temperature, top_p, self.rng)
            self.feed([token])
            out.append(token)
        return out


def sample(logits: np.ndarray, temperature: float, top_p: float, rng: np.random.Generator) -> int:
    """Temperature, then the smallest set of tokens whose probability reaches ``top_p``."""
    if temperature <= 0:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / temperature
    p = np.exp(z - z.max())
    p /= p.sum()
    order = np.argsort(-p, kind="stable")
    keep = order[: int(np.searchsorted(np.cumsum(p[order]), top_p) + 1)]
    q = p[keep] / p[keep].sum()
    return int(keep[rng.choice(len(keep), p=q)])


class ReferenceBackend:
    name = "torch"

    def __init__(self, path: str | Path):
        from training.model import load_model_file  # torch only for this backend

        self.model = load_model_file(path)
        tokenizer = Tokenizer.from_json(self.model.tokenizer_json)
        self.kinds = tokenizer.token_table()["kind"]
        self.bos, self.eos = tokenizer.id_of("BOS_None"), tokenizer.id_of("EOS_None")

    def session(self, seed: int) -> ReferenceSession:
        return ReferenceSession(self.model, seed)

    def continuation(self, prompt: np.ndarray, n_bars: int, seed: int, sampling: dict, cap: int):
        """``n_bars`` bars after ``prompt`` sampled without a grammar (:func:`generate_bars`)."""
        session = self.session(seed)
        session.feed([self.bos, *prompt.tolist()])
        return generate_bars(session, n_bars, cap, self.kinds, self.eos, sampling)


# ---------------------------------------------------------------------------------------------
# Test pieces


@dataclass
class Piece:
    name: str
    ids: np.ndarray  # token ids, no BOS/EOS


def load_pieces(data: str | Path, tokenizer: Tokenizer, max_pieces: int | None) -> list[Piece]:
    """The test split of a prepared corpus, the token ids saved in an ``.npz`` file (one array
    per piece, as ``tests/data/corpus_test_split.npz``), or every MIDI file under a folder."""
    data = Path(data)
    if data.suffix == ".npz" and data.is_file():
        with np.load(data) as saved:
            pieces = [Piece(name, saved[name].astype(np.int64)) for name in saved.files]
    elif (data / "manifest.json").exists():
        from training.data import load_manifest, load_split

        names = load_manifest(data)["splits"]["test"]
        seqs = load_split(data, "test", tokenizer)
        pieces = [Piece(n, np.asarray(s)) for n, s in zip(names, seqs, strict=True)]
    elif data.is_dir():
        paths = sorted(
            p for p in data.rglob("*") if p.suffix.lower() in (".mid", ".midi") and p.is_file()
        )
        if max_pieces:
            paths = paths[:max_pieces]
        pieces = [Piece(p.stem, np.asarray(tokenizer.encode(p), np.int64)) for p in paths]
    else:
        raise ValueError(
            f"{data}: neither a prepared corpus (manifest.json), an .npz of token ids nor a folder"
        )
    if max_pieces:
        pieces = pieces[:max_pieces]
    if not pieces:
        raise ValueError(f"{data}: no test pieces")
    return pieces


# ---------------------------------------------------------------------------------------------
# Perplexity


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def token_nll(session, ids: np.ndarray, bos: int, eos: int) -> np.ndarray:
    """Negative log-likelihood (nats) of each token of ``ids`` and of EOS after BOS, streamed
    through one session in chunks."""
    sequence = np.concatenate([[bos], ids, [eos]]).astype(np.int64)
    inputs, targets = sequence[:-1], sequence[1:]
    nll = np.empty(len(targets))
    for start in range(0, len(inputs), FEED_CHUNK):
        chunk = inputs[start : start + FEED_CHUNK]
        logits = np.asarray(session.feed(chunk.tolist(), all_logits=True)).reshape(len(chunk), -1)
        logp = log_softmax(logits)
        nll[start : start + len(chunk)] = -logp[
            np.arange(len(chunk)), targets[start : start + len(chunk)]
        ]
    return nll


def piece_nll(session, ids: np.ndarray, bos: int, eos: int) -> tuple[float, int]:
    """Total negative log-likelihood (nats) of ``ids`` and EOS after BOS (:func:`token_nll`), with
    the number of predicted tokens."""
    nll = token_nll(session, ids, bos, eos)
    return float(nll.sum()), len(nll)


# ---------------------------------------------------------------------------------------------
# Continuations


@dataclass
class Continuation:
    ids: list[int]  # the generated tokens kept (up to the bar after the last one asked for)
    bars: int  # bars begun by generated Bar tokens
    ended: str  # "bars", "eos" or "cap"


def generate_bars(session, n_bars: int, max_tokens: int, kinds, eos: int, sampling) -> Continuation:
    """The PyTorch reference's continuation: generate until ``n_bars`` new bars are complete (the
    next Bar token), EOS (it samples without the engine's grammar, so EOS can come), or the cap.
    The engine generates through its own bar loop (:meth:`EngineBackend.continuation`)."""
    kept: list[int] = []
    bars = 0
    while len(kept) < max_tokens:
        chunk = session.generate(min(GENERATE_CHUNK, max_tokens - len(kept)), **sampling)
        for token in np.asarray(chunk).tolist():
            if token == eos:
                return Continuation(kept, bars, "eos")
            if kinds[token] == Kind.BAR:
                if bars == n_bars:
                    return Continuation(kept, bars, "bars")
                bars += 1
            kept.append(token)
            if len(kept) >= max_tokens:
                break
    return Continuation(kept, bars, "cap")


def bar_starts(ids: np.ndarray, kinds: np.ndarray) -> np.ndarray:
    """Token index of every Bar token."""
    return np.flatnonzero(kinds[np.asarray(ids)] == Kind.BAR)


def repeat_bars(prompt: metrics.Notes, n_bars: int) -> metrics.Notes:
    """The prompt's bars cycled ``n_bars`` times: bar ``j`` is prompt bar ``j mod P``."""
    P = prompt.n_bars
    lengths = np.diff(prompt.bars)
    which = np.arange(n_bars) % P
    lines = np.concatenate([[0.0], np.cumsum(lengths[which])])
    bar = prompt.bar_of_note
    columns = [[], [], [], [], []]
    for j, source in enumerate(which):
        keep = bar == source
        columns[0].append(prompt.onset[keep] - prompt.bars[source] + lines[j])
        columns[1].append(prompt.duration[keep])
        columns[2].append(prompt.pitch[keep])
        columns[3].append(prompt.velocity[keep])
        columns[4].append(prompt.program[keep])
    return metrics.notes_from_arrays(*(np.concatenate(c) for c in columns), bars=lines)


# ---------------------------------------------------------------------------------------------
# Music-theory measures: seeded generations against the real test pieces


@dataclass
class MusicOptions:
    pieces: int = MUSIC_PIECES  # seeded generations from scratch (0: no music-theory section)
    bars: int = MUSIC_BARS  # bars of each generation and of each real excerpt
    long_run_bars: int = LONG_RUN_BARS  # one generation for key stability (0: skip)
    adherence_seeds: int = ADHERENCE_SEEDS  # generations per General MIDI family (0: skip)
    adherence_bars: int = ADHERENCE_BARS
    # Musical controls for every generation (sage_edge.Controls keywords: docs/controls.md),
    # e.g. {"key": "D:minor", "no-parallels": "strict"}; empty: the model alone.
    controls: dict[str, str] = field(default_factory=dict)


def generated_notes(
    engine, bars: int, seed: int, sampling: dict, programs=None, controls=None
) -> metrics.Notes:
    """``bars`` bars generated from scratch by ``Engine.generate``, as notes in bars."""
    from sage_edge.engine import SamplingParams

    generation = engine.generate(
        bars=bars,
        seed=seed,
        programs=programs,
        sampling=SamplingParams(**sampling),
        controls=controls or None,
    )
    return metrics.notes_from_score(generation.score, n_bars=bars)


def program_adherence(engine, options: MusicOptions, seed: int, sampling: dict) -> dict:
    """Per General MIDI family asked for alone (its first program), the share of seeded
    generations that play at least one note of it."""
    families = {}
    for family, program in music_theory.ADHERENCE_FAMILIES.items():
        played = 0
        for s in range(options.adherence_seeds):
            bars = options.adherence_bars
            try:
                notes = generated_notes(
                    engine, bars, seed + s, sampling, [program], options.controls
                )
            except UnplayedProgramsError:  # never learned, or silent in this generation
                continue
            played += bool(np.any(notes.program == program))
        families[family] = {
            "program": program,
            "played": played,
            "share": played / options.adherence_seeds,
        }
    return {"seeds": options.adherence_seeds, "bars": options.adherence_bars, "families": families}


def _stability(same: int, pairs: int, bars: int) -> dict:
    return {"bars": bars, "same": same, "pairs": pairs, "share": same / pairs if pairs else None}


def music_report(engine, real_pieces: list[metrics.Notes], options, seed, sampling, progress):
    """The music-theory section: generations and real pieces through the same measures."""
    generated = []
    for i in range(options.pieces):
        generated.append(
            music_theory.analyze(
                generated_notes(engine, options.bars, seed + i, sampling, None, options.controls)
            )
        )
        if progress:
            print(f"music piece {i + 1}/{options.pieces}", file=sys.stderr)
    # The real side: each test piece's last `bars` bars (its ending), the whole piece if shorter.
    real = [
        music_theory.analyze(
            metrics.slice_bars(notes, max(0, notes.n_bars - options.bars), notes.n_bars)
        )
        for notes in real_pieces
    ]
    window = music_theory.KEY_WINDOW_BARS
    report = {
        "bars": options.bars,
        "controls": dict(options.controls),
        "generated": music_theory.summarize(generated),
        "real": music_theory.summarize(real),
        "key_stability": {"window_bars": window, "generated": None, "real": None},
        "program_adherence": None,
    }
    if options.long_run_bars:
        long_run = generated_notes(
            engine, options.long_run_bars, seed, sampling, None, options.controls
        )
        report["key_stability"]["generated"] = _stability(
            *music_theory.key_stability(long_run, window), options.long_run_bars
        )
        real_same = real_pairs = 0
        for notes in real_pieces:
            same, pairs = music_theory.key_stability(notes, window)
            real_same, real_pairs = real_same + same, real_pairs + pairs
        report["key_stability"]["real"] = _stability(
            real_same, real_pairs, sum(n.n_bars for n in real_pieces)
        )
        if progress:
            print(f"long run of {options.long_run_bars} bars", file=sys.stderr)
    if options.adherence_seeds:
        report["program_adherence"] = program_adherence(engine, options, seed, sampling)
    return report


@dataclass
class Results:
    pieces: int = 0
    tokens: int = 0
    notes: int = 0
    nll_nats: float = 0.0
    nll_without: dict = field(default_factory=lambda: dict.fromkeys(PERPLEXITY_WITHOUT, 0.0))
    tokens_without: dict = field(default_factory=lambda: dict.fromkeys(PERPLEXITY_WITHOUT, 0))
    continuation_pieces: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    rows: dict[str, list[dict]] = field(default_factory=dict)
    distributions: dict[str, list[dict]] = field(default_factory=dict)
    outputs: int = 0
    decoded: int = 0
    generated_tokens: int = 0
    generated_pitch_tokens: int = 0
    generated_notes: int = 0
    ended: dict[str, int] = field(default_factory=dict)
    music: dict | None = None  # the music-theory section; None with the torch backend


def evaluate(
    model_path: str | Path,
    data: str | Path,
    max_pieces: int | None = None,
    seed: int = 0,
    max_bars: int = DEFAULT_MAX_BARS,
    temperature: float = 1.0,
    top_p: float = 0.95,
    backend: str = "engine",
    progress: bool = False,
    music: MusicOptions | None = None,
    kv_memory: str | None = None,
) -> dict:
    """Every number of the evaluation as a JSON-ready dict (``docs/evaluation.md``). ``music``
    sizes the music-theory section (engine backend only); None takes the defaults. ``kv_memory``
    is the engine sessions' key/value memory (None: ``sage_edge.Engine``'s default)."""
    if max_bars < 1:
        raise ValueError(f"max_bars must be at least 1, got {max_bars}")
    music = music or MusicOptions()
    if music.pieces < 0 or music.bars < 1 or music.long_run_bars < 0:
        raise ValueError("music pieces and long-run bars must be >= 0 and music bars >= 1")
    if music.adherence_seeds < 0 or music.adherence_bars < 1:
        raise ValueError("adherence seeds must be >= 0 and adherence bars >= 1")
    t0 = time.perf_counter()
    model_file = sage_format.read(model_path)
    tokenizer = Tokenizer.from_json(model_file.tokenizer_json())
    kinds = tokenizer.token_table()["kind"]
    is_note = (kinds == Kind.PITCH) | (kinds == Kind.PITCH_DRUM)
    bos, eos = tokenizer.id_of("BOS_None"), tokenizer.id_of("EOS_None")
    if backend == "engine":
        runner = EngineBackend(model_path, kv_memory)
    elif kv_memory not in (None, "f32"):  # the reference holds its memory in f32
        raise ValueError(f"kv_memory {kv_memory!r} needs the engine backend")
    else:
        runner = ReferenceBackend(model_path)
    pieces = load_pieces(data, tokenizer, max_pieces)
    sampling = {"temperature": temperature, "top_p": top_p}
    r = Results(pieces=len(pieces))

    # Perplexity: every test piece streamed whole through a fresh session.
    for i, piece in enumerate(pieces):
        nll = token_nll(runner.session(seed + i), piece.ids, bos, eos)
        target_kinds = kinds[np.append(piece.ids, eos)]
        r.nll_nats += float(nll.sum())
        r.tokens += len(nll)
        for name, left_out in PERPLEXITY_WITHOUT.items():
            kept = ~np.isin(target_kinds, left_out)
            r.nll_without[name] += float(nll[kept].sum())
            r.tokens_without[name] += int(kept.sum())
        r.notes += int(is_note[piece.ids].sum())
        if progress:
            print(f"perplexity {i + 1}/{len(pieces)} {piece.name}", file=sys.stderr)

    # The continuation benchmark.
    usable = []
    real_notes = {}  # every test piece decoded, in its bars
    for piece in pieces:
        starts = bar_starts(piece.ids, kinds)
        score = tokenizer.decode(piece.ids)
        real_notes[piece.name] = metrics.notes_from_score(score, n_bars=len(starts))
        if len(starts) > PROMPT_BARS:
            usable.append((piece, starts))
        else:
            r.skipped.append(piece.name)
    for name in ("generated", "other_piece", "repeat_prompt"):
        r.rows[name] = []
    r.distributions = {"generated": [], "real": []}
    for i, (piece, starts) in enumerate(usable):
        all_bars = real_notes[piece.name]
        n_cont = min(all_bars.n_bars - PROMPT_BARS, max_bars)
        real = metrics.slice_bars(all_bars, PROMPT_BARS, PROMPT_BARS + n_cont)
        stop = starts[PROMPT_BARS + n_cont] if PROMPT_BARS + n_cont < len(starts) else None
        real_tokens = len(piece.ids[starts[PROMPT_BARS] : stop])

        prompt = piece.ids[: starts[PROMPT_BARS]]
        cap = max(TOKENS_PER_BAR_CAP * real_tokens, 64)  # the reference's; the engine has its own
        cont = runner.continuation(prompt, n_cont, seed + i, sampling, cap)
        r.ended[cont.ended] = r.ended.get(cont.ended, 0) + 1
        ids = np.concatenate([prompt, np.asarray(cont.ids, np.int64)])
        r.outputs += 1
        r.generated_tokens += len(cont.ids)
        r.generated_pitch_tokens += int(is_note[np.asarray(cont.ids, np.int64)].sum())
        try:
            generated_score = tokenizer.decode(ids)
        except Exception as exc:  # a stream miditok cannot decode: counted, not fatal
            print(f"{piece.name}: the generated tokens do not decode ({exc})", file=sys.stderr)
            continue
        r.decoded += 1
        generated_all = metrics.notes_from_score(generated_score, n_bars=PROMPT_BARS + cont.bars)
        generated = metrics.slice_bars(generated_all, PROMPT_BARS, PROMPT_BARS + cont.bars)
        r.generated_notes += generated.n_notes
        r.rows["generated"].append(metrics.nmsi(generated, real).as_dict())

        other_piece, _ = usable[(i + 1) % len(usable)]
        other_all = real_notes[other_piece.name]
        other_stop = min(other_all.n_bars, PROMPT_BARS + n_cont)
        other = metrics.slice_bars(other_all, PROMPT_BARS, other_stop)
        r.rows["other_piece"].append(metrics.nmsi(other, real).as_dict())

        repeated = repeat_bars(metrics.slice_bars(all_bars, 0, PROMPT_BARS), n_cont)
        r.rows["repeat_prompt"].append(metrics.nmsi(repeated, real).as_dict())

        r.distributions["generated"].append(metrics.distribution(generated))
        r.distributions["real"].append(metrics.distribution(real))
        r.continuation_pieces.append(piece.name)
        if progress:
            print(f"continuation {i + 1}/{len(usable)} {piece.name}", file=sys.stderr)

    if backend == "engine" and music.pieces:
        r.music = music_report(
            runner.engine, list(real_notes.values()), music, seed, sampling, progress
        )
    report = _report(r, model_path, data, model_file, backend, seed, max_bars, sampling, t0)
    report["kv_memory"] = runner.engine.kv_memory if backend == "engine" else "f32"
    return report


def _mean_dict(rows: list[dict]) -> dict[str, float]:
    if not rows:
        return {}
    return {k: float(np.mean([row[k] for row in rows])) for k in rows[0]}


def _report(r: Results, model_path, data, model_file, backend, seed, max_bars, sampling, t0):
    nats_per_token = r.nll_nats / max(r.tokens, 1)
    return {
        "model": str(model_path),
        "quantization": model_file.matrix_dtype,
        "data": str(data),
        "backend": backend,
        "seed": seed,
        "sampling": sampling,
        "prompt_bars": PROMPT_BARS,
        "max_bars": max_bars,
        "perplexity": {
            "pieces": r.pieces,
            "tokens": r.tokens,
            "notes": r.notes,
            "nats_per_token": nats_per_token,
            "perplexity": math.exp(nats_per_token),
            "bits_per_note": r.nll_nats / math.log(2) / max(r.notes, 1),
            # augmentation makes Program tokens, dynamics make Velocity tokens harder to predict
            # than in a corpus of one program per voice and one velocity: the rest, compared alone
            "without": {
                name: math.exp(r.nll_without[name] / max(r.tokens_without[name], 1))
                for name in PERPLEXITY_WITHOUT
            },
        },
        "continuation": {
            "pieces": len(r.continuation_pieces),
            "skipped_short": r.skipped,
            "nmsi": {name: _mean_dict(rows) for name, rows in r.rows.items()},
        },
        "distribution": {name: _mean_dict(rows) for name, rows in r.distributions.items()},
        "decode": {
            "outputs": r.outputs,
            "decoded": r.decoded,
            "share": r.decoded / r.outputs if r.outputs else 1.0,
            "generated_tokens": r.generated_tokens,
            "generated_pitch_tokens": r.generated_pitch_tokens,
            "generated_notes_in_bars": r.generated_notes,
            "ended": r.ended,
        },
        "music": r.music,
        "seconds": round(time.perf_counter() - t0, 2),
    }


def print_table(report: dict, out=None) -> None:
    p = report["perplexity"]
    w = (out or sys.stdout).write
    w(f"model {report['model']} ({report['quantization']}, {report['backend']}, ")
    w(f"{report['kv_memory']} key/value memory), ")
    w(f"data {report['data']}, seed {report['seed']}\n\n")
    w(f"test pieces {p['pieces']}   tokens {p['tokens']}   notes {p['notes']}\n")
    w(f"perplexity/token {p['perplexity']:.3f}   nats/token {p['nats_per_token']:.4f}   ")
    w(f"bits/note {p['bits_per_note']:.3f}\n")
    for name, perplexity in p["without"].items():
        w(f"perplexity/token without {name.replace('_', ' ')} tokens {perplexity:.3f}\n")
    w("\n")

    c = report["continuation"]
    s = report["sampling"]
    w(
        f"continuation: {report['prompt_bars']}-bar prompt, up to {report['max_bars']} bars, "
        f"{c['pieces']} pieces, temperature {s['temperature']}, top-p {s['top_p']}\n"
    )
    w(f"{'row':16} {'NMSI':>7} {'chroma':>7} {'groove':>7} {'struct':>7} {'density':>7}\n")
    for name, row in c["nmsi"].items():
        if not row:
            w(f"{name:16} {'-':>7}\n")
            continue
        w(
            f"{name:16} {row['nmsi']:7.2f} {row['chroma']:7.3f} {row['groove']:7.3f} "
            f"{row['structure']:7.3f} {row['density']:7.3f}\n"
        )
    w("\n")
    dist = report["distribution"]
    names = list(metrics.DISTRIBUTION_METRICS)
    w(f"{'distribution':20} {'generated':>10} {'real':>10}\n")
    for name in names:
        g = dist["generated"].get(name, float("nan"))
        t = dist["real"].get(name, float("nan"))
        w(f"{name:20} {g:10.3f} {t:10.3f}\n")
    d = report["decode"]
    w(
        f"\ndecoded {d['decoded']}/{d['outputs']} ({100 * d['share']:.1f} %), "
        f"{d['generated_tokens']} tokens generated, ended {d['ended']}\n"
    )
    if report["music"] is not None:
        print_music_table(report["music"], w)
    w(f"{report['seconds']} s\n")


def print_music_table(music: dict, w) -> None:
    """The music-theory section: one row per measure, generated against real."""
    gen, real = music["generated"], music["real"]
    w(
        f"\nmusic theory: {gen['excerpts']} generated pieces of {music['bars']} bars against "
        f"{real['excerpts']} real pieces' last {music['bars']} bars\n"
    )
    if music.get("controls"):
        w("controls: " + ", ".join(f"{k}={v}" for k, v in music["controls"].items()) + "\n")
    w(f"{'measure':30} {'generated':>10} {'real':>10}\n")
    for key, label, scale, fmt in music_theory.TABLE_ROWS:
        g = music_theory.format_value(gen[key], scale, fmt)
        t = music_theory.format_value(real[key], scale, fmt)
        w(f"{label:30} {g:>10} {t:>10}\n")
    stability = music["key_stability"]
    if stability["generated"] is not None:
        g, t = stability["generated"], stability["real"]
        label = f"same key, next {stability['window_bars']} bars %"
        g_share = music_theory.format_value(g["share"], 100.0, "{:.1f}")
        t_share = music_theory.format_value(t["share"], 100.0, "{:.1f}")
        w(f"{label:30} {g_share:>10} {t_share:>10}")
        w(f"   ({g['pairs']} window pairs in {g['bars']} bars; real: {t['pairs']} pairs)\n")
    adherence = music["program_adherence"]
    if adherence is not None:
        w(
            f"\nprogram adherence: each family asked for alone, {adherence['seeds']} seeds of "
            f"{adherence['bars']} bars; share that play it\n"
        )
        for family, row in adherence["families"].items():
            w(f"  {family:22} ({row['program']:3}) {100 * row['share']:6.1f} %\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m training.evaluate", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--model", required=True, help="a .sage model file")
    ap.add_argument("--data", required=True, help="a prepared corpus or a folder of MIDI files")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ap.add_argument("--max-pieces", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-bars", type=int, default=DEFAULT_MAX_BARS)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--backend", choices=("engine", "torch"), default="engine")
    ap.add_argument("--progress", action="store_true", help="report each piece on stderr")
    ap.add_argument(
        "--kv-memory",
        choices=("f32", "int8"),
        help="the engine sessions' key/value memory (default: the engine's)",
    )
    music = ap.add_argument_group("music-theory measures (engine backend)")
    music.add_argument(
        "--music-pieces",
        type=int,
        default=MUSIC_PIECES,
        help=f"seeded generations from scratch ({MUSIC_PIECES}; 0 = no music-theory section)",
    )
    music.add_argument(
        "--music-bars", type=int, default=MUSIC_BARS, help=f"bars per piece ({MUSIC_BARS})"
    )
    music.add_argument(
        "--long-run-bars",
        type=int,
        default=LONG_RUN_BARS,
        help=f"bars of the key-stability run ({LONG_RUN_BARS}; 0 = skip)",
    )
    music.add_argument(
        "--adherence-seeds",
        type=int,
        default=ADHERENCE_SEEDS,
        help=f"generations per General MIDI family ({ADHERENCE_SEEDS}; 0 = skip)",
    )
    music.add_argument(
        "--adherence-bars",
        type=int,
        default=ADHERENCE_BARS,
        help=f"bars per adherence generation ({ADHERENCE_BARS})",
    )
    music.add_argument(
        "--control",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a musical control for the generations, e.g. key=D:minor (docs/controls.md); "
        "repeat for several",
    )
    args = ap.parse_args(argv)
    controls = {}
    for item in args.control:
        name, equals, value = item.partition("=")
        if not equals or not name:
            ap.error(f"--control takes NAME=VALUE, not {item!r}")
        controls[name] = value
    if args.backend == "engine":
        ok, why = engine_available()
        if not ok:
            print(
                f"the C++ engine is not available ({why}); build it or use --backend torch",
                file=sys.stderr,
            )
            return 2
    report = evaluate(
        args.model,
        args.data,
        max_pieces=args.max_pieces,
        seed=args.seed,
        max_bars=args.max_bars,
        temperature=args.temperature,
        top_p=args.top_p,
        backend=args.backend,
        progress=args.progress,
        kv_memory=args.kv_memory,
        music=MusicOptions(
            args.music_pieces,
            args.music_bars,
            args.long_run_bars,
            args.adherence_seeds,
            args.adherence_bars,
            controls,
        ),
    )
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
