"""The vocabulary's kinds and families are one fact: Python (sage_edge.vocab), C (sage_edge.h) and
the C++ engine (vocab.h) agree, and a model's tokenizer is checked against its file's table."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from sage_edge import ModelFormatError, _engine
from sage_edge import format as sage_format
from sage_edge.engine import DEFAULT_MODEL, Engine
from sage_edge.vocab import KIND_FAMILY, Family, Kind


def test_python_and_c_name_the_same_kinds_and_families() -> None:
    assert {kind.name: kind.value for kind in Kind} == _engine.KINDS
    assert {family.name: family.value for family in Family} == _engine.FAMILIES
    assert set(KIND_FAMILY) == set(Kind)


def test_the_engine_gives_each_kind_the_family_python_does() -> None:
    # The C++ loader refuses a table whose families disagree with vocab.h's family_of_kind, so
    # the shipped model's table is C++'s statement of it for every kind it holds.
    table = _engine.Model(str(DEFAULT_MODEL)).vocabulary()
    kinds_seen = set()
    for kind, family in zip(table["kind"], table["family"], strict=True):
        assert KIND_FAMILY[Kind(int(kind))] == Family(int(family))
        kinds_seen.add(Kind(int(kind)))
    assert {Kind.BOS, Kind.BAR, Kind.PITCH, Kind.PITCH_DRUM, Kind.DURATION} <= kinds_seen


def test_the_rebuilt_tokenizer_matches_the_file_table(tiny_models) -> None:
    engine = Engine(tiny_models["q8_0"])
    file_table = engine._model.vocabulary()
    rebuilt = engine.tokenizer.token_table()
    for field in ("family", "kind", "a", "b"):
        assert np.array_equal(rebuilt[field], file_table[field])


def test_a_file_whose_table_disagrees_with_its_tokenizer_is_refused(tiny_models, tmp_path) -> None:
    model = sage_format.read(tiny_models["f32"])
    vocabulary = model.vocabulary.copy()
    pitch_ids = np.flatnonzero(vocabulary["kind"] == Kind.PITCH)
    moved = int(pitch_ids[10])
    vocabulary["a"][moved] += 1  # what another miditok version numbering pitches differently does
    path = tmp_path / "renumbered.sage"
    sage_format.write(path, dataclasses.replace(model, vocabulary=vocabulary))
    engine = Engine(path)  # the C++ loader accepts it: the table is well-formed
    with pytest.raises(ModelFormatError, match=rf"token {moved} \('Pitch_"):
        _ = engine.tokenizer
