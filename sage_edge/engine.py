"""The C++ inference engine from Python: load a ``.sage`` model, run sessions, read notes.

    engine = Engine("model.sage")
    session = engine.session(seed=1, programs=[0, 40])
    session.feed([bos])
    tokens = session.generate(256, temperature=0.9, top_p=0.95)
    notes = session.pop_events()

A thin layer over ``sage_edge._engine`` (csrc/python/bindings.cpp): the C++ side validates the
file, allocates everything a session needs when it is created, and releases the GIL while it
computes. A broken or missing model file raises :class:`sage_edge.ModelFormatError`; a bad
argument raises ``ValueError``.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Union

import numpy as np
import symusic

from sage_edge.errors import ModelFormatError, UnplayedProgramsError
from sage_edge.pianoroll import instrument_name
from sage_edge.tokenizer import (
    Tokenizer,
    load_score,
    notated_bar_at,
    quarter_note_meter,
    score_from_midi_bytes,
)

if TYPE_CHECKING:
    from sage_edge.live import Jam

try:
    from sage_edge import _engine
except ImportError as exc:  # pragma: no cover - only without a built extension
    raise ImportError(
        "sage_edge._engine (the C++ engine) is not built: run `pip install -e . "
        "--no-build-isolation` in the source tree"
    ) from exc

DEFAULT_MODEL = Path(__file__).resolve().parent / "models" / "default.sage"
# Defined once in C++ (csrc/engine/sampler.h, csrc/include/sage_edge/sage_edge.h): the sampling
# defaults of every front end, the tempos (BPM) a MIDI file can hold, and a session's default
# key/value memory (sage_session_options_default).
DEFAULT_SAMPLING: dict = dict(_engine.DEFAULT_SAMPLING)
TEMPO_RANGE_BPM: tuple[float, float] = tuple(_engine.TEMPO_RANGE_BPM)
DEFAULT_KV_MEMORY: str = _engine.DEFAULT_KV_MEMORY


# The musical controls the engine knows: (name, value syntax, help), from the C API's table
# (csrc/engine/controls.cpp); the CLI's flags and Controls' keywords are these names.
CONTROLS: tuple[tuple[str, str, str], ...] = tuple(_engine.controls_described())


class Controls:
    """Musical controls, applied by the engine before each token is drawn (docs/controls.md):
    strict rules mask what they forbid, soft ones bias the logits. Every rule is off until set but
    two soft ones, the silent-program bonus (``plays_after`` 1, ``plays_bonus`` 8: a requested
    program silent for a bar is brought in) and ``no_parallels="soft"``, and ``end="cadence"``:
    a piece of ``bars`` bars ends on the tonic triad of its key (``end="none"`` to leave it open).

    Keywords are the names of :data:`CONTROLS` with ``_`` for ``-``, and the values their text
    (numbers are written as text)::

        Controls(key="D:minor", key_mode="soft", range="usual,52:60-79", velocity="60-100",
                 max_polyphony=4, density="4-12", no_parallels="strict", end="cadence")

    The engine parses and checks every value (``ValueError`` on a bad one), the same parser the
    ``sage-edge`` and ``sage-edge-run`` flags go through.
    """

    def __init__(self, **settings: str | int | float):
        self._controls = _engine.Controls()
        for name, value in settings.items():
            self.set(name, value)

    def set(self, name: str, value: str | int | float) -> Controls:
        """Sets one control (``name`` as in :data:`CONTROLS`, ``_`` or ``-``); returns self."""
        if isinstance(value, bool) or not isinstance(value, (str, int, float, np.integer)):
            raise ValueError(f"control {name!r} takes text or a number, not {value!r}")
        self._controls.set(name.replace("_", "-"), str(value))
        return self

    @property
    def settings(self):
        """The engine's struct (``sage_controls``), read-only."""
        return self._controls

    def __repr__(self) -> str:
        return f"Controls(key_mode={self._controls.key_mode}, end={self._controls.end}, ...)"


def _controls_or_none(controls) -> Controls | None:
    if controls is None or isinstance(controls, Controls):
        return controls
    if isinstance(controls, dict):
        return Controls(**controls)
    raise ValueError(f"controls must be a Controls or a dict of controls, not {controls!r}")


@dataclass(frozen=True)
class SamplingParams:
    """How each next token is drawn from the model's distribution, under the grammar mask.

    ``temperature`` >= 0 (0 = greedy), ``top_k`` >= 0 (0 = off), ``top_p`` in (0, 1] (1 = off),
    ``min_p`` in [0, 1) (0 = off). The defaults are the C++ engine's, the same in every front
    end (``DEFAULT_SAMPLING``). Checked when made, by the engine's own rules.
    """

    temperature: float = DEFAULT_SAMPLING["temperature"]
    top_k: int = DEFAULT_SAMPLING["top_k"]
    top_p: float = DEFAULT_SAMPLING["top_p"]
    min_p: float = DEFAULT_SAMPLING["min_p"]

    def __post_init__(self) -> None:
        for name in ("temperature", "top_p", "min_p"):
            _check_type(name, getattr(self, name))
        _check_type("top_k", self.top_k, integer=True)
        _engine.check_sampling(*self.values())

    def values(self) -> tuple[float, int, float, float]:
        """(temperature, top_k, top_p, min_p), the order the engine takes them in."""
        return (self.temperature, self.top_k, self.top_p, self.min_p)


def _sampling_or_default(sampling: SamplingParams | None) -> SamplingParams:
    if sampling is None:
        return SamplingParams()
    if not isinstance(sampling, SamplingParams):
        raise ValueError(f"sampling must be a SamplingParams, not {sampling!r}")
    return sampling


# What a generation may continue: nothing, a MIDI file (path or bytes), a score or token ids.
Prompt = Union[str, os.PathLike, bytes, bytearray, "symusic.Score", Sequence[int], np.ndarray, None]


class Bar(NamedTuple):
    """Where a session's token stream is: the bar the engine is decoding."""

    index: int  # Bar tokens fed since the session started or was reset (0 before the first)
    start: float  # where the bar starts, in quarter notes from the start
    numerator: int  # its time signature (the bar's TimeSig token; 4/4 before any)
    denominator: int


class NoteEvent(NamedTuple):
    """A note decoded from the token stream; times in quarter notes from the session's start."""

    time: float
    duration: float
    pitch: int
    velocity: int
    program: int  # General MIDI program 0..127, -1 for drums
    lateness: float = 0.0  # real-time streaming: seconds after its playback time it was yielded


class Engine:
    """A validated, memory-mapped model, shared by any number of sessions.

    ``model`` is a path to a ``.sage`` file, or None for the packaged default model.
    ``kv_memory`` says how its sessions hold past keys and values: ``"f32"`` or ``"int8"`` (one
    scale per key/value head and position, about a quarter of the memory; its quality against
    f32 is in docs/results.md); the default is ``DEFAULT_KV_MEMORY``.
    """

    def __init__(
        self, model: str | os.PathLike | None = None, *, kv_memory: str = DEFAULT_KV_MEMORY
    ):
        path = DEFAULT_MODEL if model is None else Path(model)
        if not path.exists():  # anything else that is not a model file, the C++ loader names
            hint = (
                " (no default model is packaged yet: pass the path of a .sage file)"
                if model is None
                else ""
            )
            raise ModelFormatError(f"model file {str(path)!r} does not exist{hint}")
        self.path = path
        self._model = _engine.Model(str(path))
        self._model.session_memory(kv_memory)  # the engine checks the name (ValueError)
        self.kv_memory = kv_memory
        self._info: dict | None = None
        self._tokenizer: Tokenizer | None = None

    @property
    def info(self) -> dict:
        """Hyperparameters, quantization, attention mode, horizons and budget, parameter count,
        file and per-session memory in bytes, and the kernel path in use."""
        if self._info is None:
            info = self._model.info()
            memory = self._model.session_memory(self.kv_memory)
            info["kv_memory"] = self.kv_memory
            info["session_bytes"] = memory["total_bytes"]
            info["kv_bytes"] = memory["kv_bytes"]
            info["activation_bytes"] = memory["activation_bytes"]
            info["kernel"] = _engine.kernel()
            self._info = info
        return dict(self._info)

    @functools.cached_property
    def learned_programs(self) -> dict[int, int] | None:
        """The General MIDI programs (-1 = drums) the model learned, each with its notes in the
        training data, ascending by program (docs/format.md, "learned_programs"); None when the
        file does not record them. :meth:`generate` refuses other programs."""
        return self._model.learned_programs()

    @property
    def tokenizer(self) -> Tokenizer:
        """The tokenizer the model was trained with, rebuilt from the model file's configuration
        and checked against the vocabulary table the file carries (the one the engine uses)."""
        if self._tokenizer is None:
            metadata = json.loads(self._model.metadata_json())
            tokenizer = Tokenizer.from_json(json.dumps(metadata["tokenizer"]))
            _check_vocabulary(tokenizer, self._model.vocabulary(), self.path)
            self._tokenizer = tokenizer
        return self._tokenizer

    def generate(
        self,
        prompt: Prompt = None,
        bars: int = 8,
        *,
        sampling: SamplingParams | None = None,
        seed: int | None = None,
        programs: Sequence[int] | None = None,
        tempo: float | None = None,
        controls: Controls | dict | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Generation:
        """Music: ``bars`` new notated bars continuing ``prompt``, as a :class:`Generation` (the
        score, the new notes, the tokens and the time it took).

        ``prompt`` is None (start from scratch), a MIDI path, the bytes of a MIDI file, a
        ``symusic.Score`` or token ids; its notes and its time signatures up to its last bar line
        are kept unchanged at the start of the result. The new music starts on that bar line (the
        one after the prompt's last onset, as the prompt notates it), and each new bar carries
        the time signature the model gave it, written in the prompt's meter where the model's
        ``n/4`` is that meter's quarter-note form (3/4 after 3/8 is two bars of 3/8), else as it
        is; notes are cut at the last bar line, so the result holds exactly ``bars`` new bars
        (docs/data.md, "Meters outside the tokenizer's set"). ``sampling`` (None: the engine's
        defaults, :class:`SamplingParams`) says how tokens are drawn; ``seed`` None draws one at
        random; ``programs`` limits the instruments of the new notes; ``tempo`` (BPM, within
        ``TEMPO_RANGE_BPM``, the range a MIDI file holds) sets the result's tempo. ``controls``
        (:class:`Controls`, or a dict of its keywords) constrain the new notes; with
        ``end="cadence"`` the piece may end early, on an EOS in its last bar. ``progress`` is
        called with (bars done, bars asked) as bars complete.
        """
        run = _Run(self, prompt, bars, sampling, seed, programs, tempo, controls)
        started = time.perf_counter()
        notes = []
        for events in run.notes_by_bar(progress):
            notes.extend(events)
        seconds = time.perf_counter() - started
        return Generation(run.tokens, run.prompt_length, notes, seconds, run.score(notes))

    def stream(
        self,
        prompt: Prompt = None,
        bars: int = 8,
        *,
        sampling: SamplingParams | None = None,
        seed: int | None = None,
        programs: Sequence[int] | None = None,
        tempo: float | None = None,
        controls: Controls | dict | None = None,
        realtime: bool = False,
    ) -> NoteStream:
        """The new notes of :meth:`generate` as they are generated, an iterator of
        :class:`NoteEvent` (time and duration in quarter notes from the start of the music).

        With ``realtime`` each note is yielded at its playback time at ``tempo`` BPM (120 when
        None) while a thread generates ahead; each note carries how late it came, and the
        iterator's ``lateness`` lists them all.
        """
        run = _Run(self, prompt, bars, sampling, seed, programs, tempo, controls)
        return NoteStream(run, realtime, tempo if tempo is not None else 120.0)

    def jam(self, mode: str = "call-response", **options) -> Jam:
        """Play with a musician: a :class:`sage_edge.live.Jam` (its options: ``programs``,
        ``bars``, ``rest``, ``lookahead``, ``listen_ticks``, ``react``, ``predict``, ``tempo``,
        ``meter``, ``musician_program``, ``channel_programs``, ``start_us``, ``sampling``,
        ``seed``, ``controls``, ``clock``; docs/jam.md)."""
        from sage_edge import live

        return live.Jam(self, mode, **options)

    def session(
        self,
        seed: int | None = None,
        programs: Sequence[int] | None = None,
        controls: Controls | dict | None = None,
    ) -> Session:
        """A new session. ``seed`` None draws one at random (``Session.seed`` tells which);
        ``programs`` restricts generated notes to these General MIDI programs (-1 = drums);
        ``controls`` (:class:`Controls`) apply from the first token."""
        return Session(self, seed, programs, controls)

    def __repr__(self) -> str:
        return f"Engine({str(self.path)!r}, kv_memory={self.kv_memory!r})"


class Session:
    """One stream of tokens: the model's per-layer ring memories, the sampler and the grammar.

    Everything is allocated when the session is created; feeding and generating allocate nothing
    in the engine, and a token costs the same at position 10 and 10 000 000.
    """

    def __init__(
        self,
        engine: Engine,
        seed: int | None = None,
        programs: Sequence[int] | None = None,
        controls: Controls | dict | None = None,
    ):
        if seed is None:
            seed = int.from_bytes(os.urandom(8), "little")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"seed must be an integer, not {seed!r}")
        if not 0 <= int(seed) < 2**64:
            raise ValueError(f"seed must be in 0..2**64-1, not {seed}")
        self.engine = engine
        self.seed = int(seed)
        self._session = _engine.Session(engine._model, self.seed, engine.kv_memory)
        if programs is not None:
            self.set_programs(programs)
        if controls is not None:
            self.set_controls(controls)

    def feed(self, ids: Sequence[int] | np.ndarray, all_logits: bool = False) -> np.ndarray:
        """Run the model over token ids. Returns float32 logits after the last token ``[V]``,
        or after every token ``[n, V]`` with ``all_logits``."""
        tokens = np.atleast_1d(np.asarray(ids))
        if tokens.ndim != 1:
            raise ValueError(f"ids must be a 1-D sequence of token ids, got shape {tokens.shape}")
        if tokens.size and not np.issubdtype(tokens.dtype, np.integer):
            raise ValueError(f"ids must be integers, got {tokens.dtype}")
        if tokens.size and (tokens.min() < 0 or tokens.max() >= 2**31):
            bad = tokens[(tokens < 0) | (tokens >= 2**31)][0]
            raise ValueError(f"token {bad} outside 0..{self.engine.info['vocab_size'] - 1}")
        return self._session.feed(tokens.astype(np.int32), bool(all_logits))

    def sample(self, sampling: SamplingParams | None = None) -> int:
        """The next token under the grammar mask, drawn from the last fed token's logits (not
        fed). ``sampling`` None uses the engine's defaults. The token drawn is kept until
        something is fed (or the session is reset or its programs change): sampling again gives
        the same token. A session that has been fed nothing (new or reset) starts a new piece:
        BOS is fed first."""
        return int(self._session.sample(*_sampling_or_default(sampling).values()))

    def generate(self, n_tokens: int, sampling: SamplingParams | None = None) -> list[int]:
        """Sample and feed ``n_tokens`` tokens; returns them. A session that has been fed nothing
        (new or reset) starts a new piece: BOS is fed first."""
        _check_type("n_tokens", n_tokens, integer=True)
        if not 0 <= n_tokens <= MAX_TOKENS_PER_CALL:
            raise ValueError(f"n_tokens must be in 0..{MAX_TOKENS_PER_CALL}, not {n_tokens}")
        values = _sampling_or_default(sampling).values()
        return self._session.generate(n_tokens, *values).tolist()

    def set_programs(self, programs: Sequence[int]) -> None:
        """Restrict generated notes to these programs (-1 = drums); an empty list allows all."""
        for program in programs:
            if isinstance(program, bool) or not isinstance(program, (int, np.integer)):
                raise ValueError(f"programs must be integers, not {program!r}")
        self._session.set_programs([int(p) for p in programs])

    def set_controls(self, controls: Controls | dict) -> None:
        """Apply musical controls from the next token on (a knob turned while playing): no
        allocation, no new session; a token already drawn is drawn again under them."""
        self._session.set_controls(_controls_or_none(controls).settings)

    @property
    def controls(self):
        """The controls in force (the engine's ``sage_controls``, read-only)."""
        return self._session.controls()

    def allowed_next(self) -> np.ndarray:
        """The mask for the next token: ``[V]`` bool, True where a token may follow (the
        grammar's, narrowed by the controls)."""
        return self._session.allowed_next()

    def reset(self) -> None:
        """Forget every token: position 0, empty memory and events; the seed restarts."""
        self._session.reset()

    def pop_events(self) -> list[NoteEvent]:
        """The notes completed since the last call, in the order they were decoded."""
        return [NoteEvent(*event) for event in self._session.pop_events()]

    @property
    def position(self) -> int:
        """Tokens fed since the session started or was reset."""
        return self._session.position

    @property
    def bar(self) -> Bar:
        """The bar the tokens are in, as the engine decodes them (:class:`Bar`)."""
        return Bar(*self._session.bar)

    @property
    def dropped_events(self) -> int:
        """Notes lost because the event queue (4096 notes) filled before pop_events."""
        return self._session.dropped_events

    @property
    def memory(self) -> dict[str, int]:
        """Bytes: weights (the mapped file), activations, kv (ring memories), total."""
        return self._session.memory()


@dataclass
class Generation:
    """The result of :meth:`Engine.generation`."""

    tokens: list[int]  # every token fed: BOS, the prompt, then the generated ones
    prompt_length: int  # how many of ``tokens`` are BOS, the prompt and the Bar closing it
    notes: list[NoteEvent]  # the generated notes, in the order they were decoded
    seconds: float  # wall time of the generation
    score: symusic.Score  # the prompt's notes then the generated ones

    @property
    def generated_tokens(self) -> int:
        return len(self.tokens) - self.prompt_length


# Session.generate returns its tokens in one array: a bound keeps a typo from asking for terabytes.
MAX_TOKENS_PER_CALL = 2**31 - 1


_MIDITOK_VERSION = importlib.metadata.version("miditok")


def _check_vocabulary(tokenizer: Tokenizer, file_table: dict, path: Path) -> None:
    """ModelFormatError unless the rebuilt tokenizer gives every id the meaning the file's table
    gives it: another miditok version could number the vocabulary differently, and prompts would
    then be encoded with ids the model reads as something else."""
    rebuilt = tokenizer.token_table()
    if len(rebuilt) != len(file_table["kind"]):
        raise ModelFormatError(
            f"{path}: the tokenizer rebuilt from the file's configuration (miditok "
            f"{_MIDITOK_VERSION}) has {len(rebuilt)} tokens, the file's vocabulary "
            f"{len(file_table['kind'])}"
        )
    fields = ("family", "kind", "a", "b")
    differs = np.zeros(len(rebuilt), dtype=bool)
    for field in fields:
        differs |= rebuilt[field] != file_table[field]
    if differs.any():
        i = int(np.flatnonzero(differs)[0])
        said = ", ".join(f"{f} {int(file_table[f][i])}" for f in fields)
        rebuilt_said = ", ".join(f"{f} {int(rebuilt[f][i])}" for f in fields)
        raise ModelFormatError(
            f"{path}: token {i} ({tokenizer.token_strings()[i]!r} to miditok "
            f"{_MIDITOK_VERSION}) "
            f"is {rebuilt_said} to the rebuilt tokenizer but {said} in the file's vocabulary: "
            "install the miditok version the model was exported with"
        )


def _check_type(name: str, value, integer: bool = False) -> None:
    """ValueError naming the argument unless ``value`` is an integer (or, without ``integer``, a
    real number); the engine checks the range."""
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if isinstance(value, bool) or not isinstance(value, kinds):
        wanted = "an integer" if integer else "a number"
        raise ValueError(f"{name} must be {wanted}, not {value!r}")


def _check_generation(bars, tempo) -> None:
    """Checks a generation's arguments before any work starts: their types here, their values by
    the engine's own rules (the C API's checks, the same for every front end)."""
    if isinstance(bars, bool) or not isinstance(bars, (int, np.integer)) or bars < 1:
        raise ValueError(f"bars must be a positive integer, not {bars!r}")
    if tempo is not None:
        _check_type("tempo", tempo)
        _engine.check_tempo(tempo)


def _token_ids(prompt, vocab_size: int) -> list[int]:
    """A prompt of token ids as a list, or ValueError saying what a prompt may be."""
    accepted = (
        "a prompt is None, a MIDI file path, the bytes of a MIDI file, a symusic.Score or a "
        "sequence of token ids"
    )
    if isinstance(prompt, np.ndarray):
        if prompt.ndim != 1 or (prompt.size and not np.issubdtype(prompt.dtype, np.integer)):
            raise ValueError(
                f"{accepted}, not an array of {prompt.dtype} with shape {prompt.shape}"
            )
        ids = prompt.tolist()
    elif isinstance(prompt, (list, tuple, range)):
        ids = list(prompt)
        for t in ids:
            if isinstance(t, bool) or not isinstance(t, (int, np.integer)):
                raise ValueError(f"prompt token ids must be integers, not {t!r}")
        ids = [int(t) for t in ids]
    else:
        raise ValueError(f"{accepted}, not {type(prompt).__name__} {prompt!r:.60}")
    if any(not 0 <= t < vocab_size for t in ids):
        raise ValueError(f"prompt token ids must be in 0..{vocab_size - 1}")
    return ids


def _names(programs) -> str:
    return ", ".join(instrument_name(p, is_drum=p < 0) for p in sorted(programs))


# An error names the learned programs one by one up to this many, and sums up more
BRIEF_LEARNED = 12


def learned_programs_text(learned: dict[int, int], brief: bool = False) -> str:
    """The learned programs with their notes, for ``sage-edge info``; ``brief`` (for an error's
    one line) sums up more than BRIEF_LEARNED of them."""
    if brief and len(learned) > BRIEF_LEARNED:
        families = {p // 8 for p in learned if p >= 0}
        drums = "the drums" if -1 in learned else "no drums"
        return (
            f"{len(learned)} programs in {len(families)} of the 16 General MIDI families and "
            f"{drums} (`sage-edge info` lists them)"
        )
    return ", ".join(
        f"{instrument_name(p, is_drum=p < 0)} {n:,} notes" for p, n in sorted(learned.items())
    )


def _refuse_unlearned(engine: Engine, programs: list[int]) -> None:
    """Asking for a program the model never learned gives no notes of it (the model gives its
    Program token almost no probability): refuse before generating."""
    learned = engine.learned_programs
    unlearned = [p for p in programs if learned is not None and p not in learned]
    if unlearned:
        raise UnplayedProgramsError(
            f"this model cannot play {_names(unlearned)}: its training data had no notes of "
            f"{'it' if len(unlearned) == 1 else 'them'}; "
            f"it learned {learned_programs_text(learned, brief=True)}",
            unlearned,
            learned,
        )


class _Run:
    """One generation: a session primed with BOS and the prompt, advanced bar by bar."""

    def __init__(self, engine: Engine, prompt, bars, sampling, seed, programs, tempo, controls):
        _check_generation(bars, tempo)
        sampling = _sampling_or_default(sampling)
        # Checks the programs and the controls.
        self.session = engine.session(seed=seed, programs=programs, controls=controls)
        self.programs = sorted({int(p) for p in programs or ()})
        _refuse_unlearned(engine, self.programs)
        self.engine, self.bars_asked, self.sampling, self.tempo = engine, int(bars), sampling, tempo
        tokenizer = engine.tokenizer
        self.prompt_score = None
        if prompt is None:
            prompt_ids: list[int] = []
        elif isinstance(prompt, (str, os.PathLike)):
            self.prompt_score = load_score(prompt)
            prompt_ids = tokenizer.encode(self.prompt_score, name=str(prompt))
        elif isinstance(prompt, symusic.Score):
            # A score built in Python can hold tempos no MIDI file can (0, negative).
            for mark in prompt.tempos:
                if not mark.qpm > 0:
                    raise ValueError(
                        f"the prompt score has a tempo of {mark.qpm:g} BPM at tick {mark.time}: "
                        "tempos must be > 0"
                    )
            self.prompt_score = prompt
            prompt_ids = tokenizer.encode(prompt)
        elif isinstance(prompt, (bytes, bytearray, memoryview)):  # the content of a MIDI file
            self.prompt_score = score_from_midi_bytes(bytes(prompt), "the prompt's MIDI bytes")
            prompt_ids = tokenizer.encode(self.prompt_score, name="the prompt's MIDI bytes")
        else:
            prompt_ids = _token_ids(prompt, tokenizer.vocab_size)
        bos = tokenizer.id_of("BOS_None")
        self.tokens = [bos] + [t for t in prompt_ids if t != bos]
        # A prompt ends at its last bar line: a Bar closes its last bar, so the new music starts
        # on a bar of its own instead of filling the prompt's last bar after its last note.
        bar = tokenizer.id_of("Bar_None")
        if len(self.tokens) > 1 and self.tokens[-1] != bar:
            self.tokens.append(bar)
        self.prompt_length = len(self.tokens)
        self.session.feed(self.tokens)
        self.prompt_events = self.session.pop_events()
        self._place_the_seam(tokenizer)

    def _place_the_seam(self, tokenizer: Tokenizer) -> None:
        """Where the new music goes. ``seam`` is where the first new bar starts in the tokens'
        time (quarters); ``offset`` moves the new notes onto the bar line after the prompt's last
        onset as the prompt notates it (the two differ where the tokenizer's bar is not the
        notated one: docs/data.md, "Meters outside the tokenizer's set"). ``prompt_meter`` is the
        prompt's signature there with its :func:`quarter_note_meter` ``(n, k)``, or None."""
        self.seam, self.offset, self.prompt_meter = self.session.bar.start, 0.0, None
        # Per generated bar: start (quarters of the music), the written signature, notated bars.
        self.written: list[tuple[float, int, int, int]] = []
        if self.prompt_score is None:
            return
        last_onset = max(note.time for track in self.prompt_score.tracks for note in track.notes)
        last_bar = notated_bar_at(self.prompt_score, last_onset)
        self.offset = last_bar.end / self.prompt_score.ticks_per_quarter - self.seam
        meter = quarter_note_meter(last_bar.numerator, last_bar.denominator)
        if meter is not None:
            self.prompt_meter = (last_bar.numerator, last_bar.denominator, *meter)

    def _notation(self, numerator: int, denominator: int) -> tuple[int, int, int]:
        """How a generated bar in ``numerator/denominator`` (its TimeSig) is written: as
        ``(numerator, denominator, notated bars)``. A bar in the quarter-note form of the prompt's
        meter is written in the prompt's meter (3/4 after a 3/8 prompt: two bars of 3/8);
        any other as it is, one bar."""
        if self.prompt_meter is not None:
            prompt_numerator, prompt_denominator, quarters, bars = self.prompt_meter
            if (numerator, denominator) == (quarters, 4):
                return prompt_numerator, prompt_denominator, bars
        return numerator, denominator, 1

    def _placed(self, events: list[NoteEvent]) -> list[NoteEvent]:
        if not self.offset:
            return events
        return [event._replace(time=event.time + self.offset) for event in events]

    def notes_by_bar(self, progress=None) -> Iterator[list[NoteEvent]]:
        """The notes of each new bar (:meth:`_generate_bars`), then an error if a requested
        program played no note (the model learned it, but it stayed silent here)."""
        silent = set(self.programs)
        for events in self._generate_bars(progress):
            silent.difference_update(event.program for event in events)
            yield events
        learned = self.engine.learned_programs
        if silent and learned is not None:
            raise UnplayedProgramsError(
                f"the model played no notes for {_names(silent)} in {self.bars_asked} bar(s) "
                f"(seed {self.session.seed}): try another seed, more bars or fewer programs; "
                f"it learned {learned_programs_text(learned, brief=True)}",
                sorted(silent),
                learned,
            )

    def _generate_bars(self, progress=None) -> Iterator[list[NoteEvent]]:
        """Generates a token bar per engine call, yielding the notes completed in each, placed in
        the music. The engine's one bar-counting loop (sage_session_generate_bars) counts notated
        bars (:meth:`_notation`): it stops before the Bar that would open bar ``bars_asked + 1``,
        or, where one generated bar is several notated ones, before the first Position past the
        last bar asked for; a model that never closes a bar is stopped after
        ``MAX_TOKENS_PER_BAR * (bars_asked + 1)`` tokens.
        """
        meter = self.prompt_meter[2:] if self.prompt_meter is not None else (0, 0)
        stop = _engine.BarStop(self.bars_asked, *meter, each_bar=True, ends_piece=True)
        max_tokens = _engine.MAX_TOKENS_PER_BAR * (self.bars_asked + 1)
        session = self.session
        reason = "bar_line"
        while reason == "bar_line":
            opened = stop.opened
            tokens, reason = session._session.generate_bars(
                stop, max_tokens - stop.generated, *self.sampling.values()
            )
            self.tokens.extend(tokens.tolist())
            if stop.opened > opened:  # the bar's TimeSig opened notated bars
                _, bar_start, numerator, denominator = session.bar
                numerator, denominator, _ = self._notation(numerator, denominator)
                taken = stop.opened - opened
                self.written.append((bar_start + self.offset, numerator, denominator, taken))
            yield self._placed(session.pop_events())
            if progress is not None and reason != "max_tokens":
                progress(stop.opened, self.bars_asked)

    def score(self, notes: list[NoteEvent]) -> symusic.Score:
        """The prompt's own notes, then ``notes`` (placed by :meth:`bars`), cut at the last bar
        line. Time signatures: the prompt's before the seam, then each generated bar's as
        :meth:`_notation` writes it, one event wherever it changes; tempos from the tokens."""
        decoded = self.engine.tokenizer.decode(self.tokens)
        if self.written:  # nothing sounds past the last bar line: the file holds the bars asked
            start, numerator, denominator, count = self.written[-1]
            end = start + count * 4 * numerator / denominator
            notes = [n._replace(duration=min(n.duration, end - n.time)) for n in notes]
        if self.prompt_score is not None:
            result = self.prompt_score.copy()
        else:
            result = symusic.Score(decoded.ticks_per_quarter)
            notes = [*self.prompt_events, *notes]  # a prompt of token ids: its notes as decoded
        tpq = result.ticks_per_quarter
        scale = tpq / decoded.ticks_per_quarter
        seam = round((self.seam + self.offset) * tpq)
        if self.prompt_score is not None:
            before = [(s.time, s.numerator, s.denominator) for s in result.time_signatures]
            before = sorted(before) or [(0, 4, 4)]  # a MIDI file without one is in 4/4
        else:
            before = [
                (round(s.time * scale), s.numerator, s.denominator) for s in decoded.time_signatures
            ]
        signatures = [signature for signature in before if signature[0] < seam]
        for start, numerator, denominator, _ in self.written:
            if not signatures or signatures[-1][1:] != (numerator, denominator):
                signatures.append((round(start * tpq), numerator, denominator))
        result.time_signatures = symusic.core.TimeSignatureTickList(
            [symusic.TimeSignature(*signature) for signature in signatures]
        )
        if self.tempo is not None:
            result.tempos.clear()
            result.tempos.append(symusic.Tempo(0, self.tempo))
        elif self.prompt_score is None:
            for mark in decoded.tempos:
                result.tempos.append(symusic.Tempo(round(mark.time * scale), mark.qpm))
        tracks = {(t.program, t.is_drum): t for t in result.tracks}
        for note in sorted(notes, key=lambda n: (n.time, n.program, n.pitch)):
            key = (max(note.program, 0), note.program < 0)
            if key not in tracks:
                name = "Drums" if key[1] else f"Program {key[0]}"
                tracks[key] = symusic.Track(name, program=key[0], is_drum=key[1])
                result.tracks.append(tracks[key])
            track = tracks[key]
            track.notes.append(
                symusic.Note(
                    round(note.time * tpq),
                    max(1, round(note.duration * tpq)),
                    note.pitch,
                    note.velocity,
                )
            )
        for track in result.tracks:
            track.notes.sort()
            track.notes = symusic.core.NoteTickList(end_at_restrikes(track.notes))
        return result


def end_at_restrikes(notes) -> list[symusic.Note]:
    """``notes`` (one track, sorted by onset) with each note that is struck again while it
    sounds ended where it is struck again. A MIDI channel sounds a pitch once: left overlapping, a
    reader pairs the note-offs first in, first out and gives both notes wrong lengths (a held note
    of the prompt that the continuation strikes again on the seam, say)."""
    next_onset: dict[int, int] = {}
    ended = []
    for note in reversed(notes):
        restruck = next_onset.get(note.pitch)
        if restruck is not None and note.time < restruck < note.time + note.duration:
            note = symusic.Note(note.time, restruck - note.time, note.pitch, note.velocity)
        ended.append(note)
        next_onset[note.pitch] = note.time
    return ended[::-1]


class NoteStream:
    """An iterator of the notes of one generation (see :meth:`Engine.stream`).

    Stopping early in any way (``break``, an exception, ``KeyboardInterrupt``, closing or
    dropping the iterator) stops the real-time generating thread within a token and joins it.
    """

    # Real time: notes the generating thread may hold ready ahead of playback.
    MAX_AHEAD = 1024

    def __init__(self, run: _Run, realtime: bool, tempo: float):
        self._run, self.realtime, self.tempo = run, realtime, tempo
        self.lateness: list[float] = []  # seconds, one per note yielded in real time
        self._ready: queue.Queue | None = None  # real time: notes generated, not yet yielded

    @property
    def generated_ahead(self) -> int:
        """Real time: notes generated but not yet yielded (at most ``MAX_AHEAD``)."""
        return self._ready.qsize() if self._ready is not None else 0

    @property
    def tokens(self) -> list[int]:
        return self._run.tokens

    def __iter__(self) -> Iterator[NoteEvent]:
        if not self.realtime:
            for events in self._run.notes_by_bar():
                yield from events
            return
        yield from self._paced()

    def _paced(self) -> Iterator[NoteEvent]:
        # A thread generates ahead into a bounded queue (the engine releases the GIL while it
        # computes); this side sleeps until each note's playback time and records how late it
        # was handed over. The clock starts at the first generated note. The thread never blocks
        # for good: every put gives up once `stop` is set, so stopping and joining is prompt.
        ready: queue.Queue = queue.Queue(maxsize=self.MAX_AHEAD)
        self._ready = ready
        done = object()
        failure: list[BaseException] = []
        stop = threading.Event()

        def offer(item) -> bool:
            """Queues item, waiting for room; False if the consumer stopped first."""
            while not stop.is_set():
                try:
                    ready.put(item, timeout=0.05)
                    return True
                except queue.Full:
                    continue
            return False

        def produce():
            try:
                for events in self._run.notes_by_bar():
                    for event in events:
                        if not offer(event):
                            return
                    if stop.is_set():
                        return
            except BaseException as error:  # surfaced in the consumer
                failure.append(error)
            finally:
                offer(done)

        producer = threading.Thread(target=produce, name="sage-edge-generate", daemon=True)
        producer.start()
        seconds_per_quarter = 60.0 / self.tempo
        origin_time = origin_clock = None
        try:
            while True:
                event = ready.get()
                if event is done:
                    break
                if origin_time is None:
                    origin_time, origin_clock = event.time, time.perf_counter()
                due = origin_clock + (event.time - origin_time) * seconds_per_quarter
                while (wait := due - time.perf_counter()) > 0:
                    time.sleep(wait)
                lateness = max(0.0, time.perf_counter() - due)
                self.lateness.append(lateness)
                yield event._replace(lateness=lateness)
        finally:
            stop.set()
            producer.join()
            self._ready = None
        if failure:
            raise failure[0]


__all__ = ["Bar", "Engine", "Generation", "NoteEvent", "NoteStream", "SamplingParams", "Session"]
