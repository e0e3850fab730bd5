"""The engine's grammar mask against real music: every token of every real piece is allowed at its
step (the mask never rejects what the tokenizer produces), and what it forbids is undecodable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sage_edge.engine import Engine
from sage_edge.vocab import Kind

FIXTURE_MODEL = Path(__file__).parent / "data" / "tiny_q8_0.sage"


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(FIXTURE_MODEL)


def test_every_token_of_real_pieces_is_allowed(engine, chorale_paths):
    tokenizer = engine.tokenizer
    bos = tokenizer.id_of("BOS_None")
    strings = tokenizer.token_strings()
    session = engine.session(seed=0)
    for path in chorale_paths:
        session.reset()
        ids = tokenizer.encode(path)
        session.feed([bos])
        for step, token in enumerate(ids):
            allowed = session.allowed_next()
            assert allowed[token], f"{path.name}: {strings[token]} refused at token {step}"
            session.feed([token])


def test_the_mask_forbids_undecodable_continuations(engine):
    tokenizer = engine.tokenizer
    kinds = tokenizer.token_table()["kind"]
    session = engine.session(seed=0)
    session.feed([tokenizer.id_of("BOS_None")])
    allowed = session.allowed_next()
    assert not allowed[kinds == Kind.PITCH].any()  # no pitch before a program
    assert not allowed[kinds == Kind.PAD].any()
    generated = session.generate(400)
    # After a Pitch only a Velocity may come, after a Velocity only a Duration.
    for previous, token in zip(generated, generated[1:], strict=False):
        if kinds[previous] == Kind.PITCH:
            assert kinds[token] == Kind.VELOCITY
        if kinds[previous] == Kind.VELOCITY:
            assert kinds[token] == Kind.DURATION
    assert np.isin(kinds[generated], [Kind.PAD, Kind.MASK, Kind.BOS]).sum() == 0
