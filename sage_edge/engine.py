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

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from sage_edge.errors import ModelFormatError

try:
    from sage_edge import _engine
except ImportError as exc:  # pragma: no cover - only without a built extension
    raise ImportError(
        "sage_edge._engine (the C++ engine) is not built: run `pip install -e . "
        "--no-build-isolation` in the source tree"
    ) from exc

DEFAULT_MODEL = Path(__file__).resolve().parent / "models" / "default.sage"


class NoteEvent(NamedTuple):
    """A note decoded from the token stream; times in quarter notes from the session's start."""

    time: float
    duration: float
    pitch: int
    velocity: int
    program: int  # General MIDI program 0..127, -1 for drums


class Engine:
    """A validated, memory-mapped model, shared by any number of sessions.

    ``model`` is a path to a ``.sage`` file, or None for the packaged default model.
    ``threads`` is the number of intra-op threads each session uses for matrix-vector products.
    """

    def __init__(self, model: str | os.PathLike | None = None, threads: int = 1):
        path = DEFAULT_MODEL if model is None else Path(model)
        if not path.is_file():
            hint = (
                " (no default model is packaged yet: pass the path of a .sage file)"
                if model is None
                else ""
            )
            raise ModelFormatError(f"model file {str(path)!r} does not exist{hint}")
        if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 256:
            raise ValueError(f"threads must be an integer in 1..256, not {threads!r}")
        self.path = path
        self.threads = threads
        self._model = _engine.Model(str(path))
        self._info: dict | None = None

    @property
    def info(self) -> dict:
        """Hyperparameters, quantization, attention mode, horizons and budget, parameter count,
        file and per-session memory in bytes, and the kernel path in use."""
        if self._info is None:
            info = self._model.info()
            memory = _engine.Session(self._model, 0, self.threads).memory()
            info["session_bytes"] = memory["total_bytes"]
            info["kv_bytes"] = memory["kv_bytes"]
            info["activation_bytes"] = memory["activation_bytes"]
            info["kernel"] = _engine.kernel()
            info["threads"] = self.threads
            self._info = info
        return dict(self._info)

    def session(self, seed: int | None = None, programs=None) -> Session:
        """A new session. ``seed`` None draws one at random (``Session.seed`` tells which);
        ``programs`` restricts generated notes to these General MIDI programs (-1 = drums)."""
        return Session(self, seed, programs)

    def __repr__(self) -> str:
        return f"Engine({str(self.path)!r}, threads={self.threads})"


class Session:
    """One stream of tokens: the model's per-layer ring memories, the sampler and the grammar.

    Everything is allocated when the session is created; feeding and generating allocate nothing
    in the engine, and a token costs the same at position 10 and 10 000 000.
    """

    def __init__(self, engine: Engine, seed: int | None = None, programs=None):
        if seed is None:
            seed = int.from_bytes(os.urandom(8), "little")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"seed must be an integer, not {seed!r}")
        if not 0 <= int(seed) < 2**64:
            raise ValueError(f"seed must be in 0..2**64-1, not {seed}")
        self.engine = engine
        self.seed = int(seed)
        self._session = _engine.Session(engine._model, self.seed, engine.threads)
        if programs is not None:
            self.set_programs(programs)

    def feed(self, ids, all_logits: bool = False) -> np.ndarray:
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

    def sample(
        self, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0
    ) -> int:
        """The next token under the grammar mask, drawn from the last fed token's logits (not
        fed). ``temperature`` 0 is greedy."""
        return int(self._session.sample(temperature, top_k, top_p, min_p))

    def generate(
        self,
        n_tokens: int,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        min_p: float = 0.0,
    ) -> list[int]:
        """Sample and feed ``n_tokens`` tokens; returns them."""
        return self._session.generate(n_tokens, temperature, top_k, top_p, min_p).tolist()

    def set_programs(self, programs) -> None:
        """Restrict generated notes to these programs (-1 = drums); an empty list allows all."""
        self._session.set_programs([int(p) for p in programs])

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
    def bars(self) -> int:
        """Bar tokens fed since the session started or was reset."""
        return self._session.bars

    @property
    def dropped_events(self) -> int:
        """Notes lost because the event queue (4096 notes) filled before pop_events."""
        return self._session.dropped_events

    @property
    def memory(self) -> dict:
        """Bytes: weights (the mapped file), activations, kv (ring memories), total."""
        return self._session.memory()
