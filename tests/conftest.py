"""Shared fixtures. Keep each fixture small and documented; heavy ones are session-scoped."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA_DIR = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def chorale_dir() -> Path:
    """Twelve Bach chorales as multi-track MIDI (S 52, A 53, T 54, B 42), produced by
    ``training.data.score_to_midi``; includes two pairs of versions of one chorale
    (bwv18.5-lz/-w, bwv248.23-2/-s)."""
    return DATA_DIR / "chorales"


@pytest.fixture(scope="session")
def chorale_paths(chorale_dir: Path) -> list[Path]:
    return sorted(chorale_dir.glob("*.mid"))


@pytest.fixture(scope="session")
def tokenizer():
    """The project's tokenizer (``Tokenizer.default()``), built once."""
    from sage_edge.tokenizer import Tokenizer

    return Tokenizer.default()


@pytest.fixture(scope="session")
def tiny_models() -> dict[str, Path]:
    """A tiny random-weight askv model with the project's tokenizer (d 32, 2 layers, horizons 32
    and 8), exported as f32 and q8_0 by ``tests/data/make_tiny_model.py``: the real file format
    and vocabulary in a few hundred KB, for tests of everything downstream of training."""
    return {quant: DATA_DIR / f"tiny_{quant}.sage" for quant in ("f32", "q8_0")}
