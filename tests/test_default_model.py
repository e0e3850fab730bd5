"""The shipped default model: the file is the one docs/model.md describes, and it still reaches the
test perplexity recorded there (the corpus test split's tokens are in tests/data)."""

from __future__ import annotations

import hashlib
import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest

from sage_edge.engine import DEFAULT_MODEL, Engine
from training.evaluate import piece_nll

ROOT = Path(__file__).resolve().parents[1]
RECORD = DEFAULT_MODEL.with_suffix(".json")
TEST_SPLIT = Path(__file__).parent / "data" / "corpus_test_split.npz"
# SHA-256 of the tensor data (data_offset up to the checksum) of the file as made: the mean of
# four runs (`training.soup`, docs/model.md). Rewriting its metadata (learned programs, names)
# keeps them.
TENSOR_DATA_SHA256 = "2a4119f8dd2a3ed76f85f2aa0494a9b7b969d30b1c2db4c1c2b67db806946b73"

pytestmark = pytest.mark.skipif(not DEFAULT_MODEL.is_file(), reason="no default model is packaged")


@pytest.fixture(scope="module")
def record() -> dict:
    return json.loads(RECORD.read_text())


def test_the_shipped_file_is_the_recorded_one(record):
    digest = hashlib.sha256(DEFAULT_MODEL.read_bytes()).hexdigest()
    assert digest == record["sha256"]
    assert digest in (ROOT / "docs" / "model.md").read_text()
    assert DEFAULT_MODEL.stat().st_size <= 16 * 1024 * 1024
    info = Engine().info
    assert info["attention"] == "askv" and info["quantization"] == "q8_0"
    assert info["horizons"] == record["horizons"]


def test_the_shipped_tensors_are_the_trained_ones():
    data = DEFAULT_MODEL.read_bytes()
    (data_offset,) = struct.unpack_from("<Q", data, 16)
    assert hashlib.sha256(data[data_offset:-4]).hexdigest() == TENSOR_DATA_SHA256


def test_the_shipped_model_reaches_its_recorded_test_perplexity(record):
    engine = Engine()
    tokenizer = engine.tokenizer
    bos, eos = tokenizer.id_of("BOS_None"), tokenizer.id_of("EOS_None")
    session = engine.session(seed=0)
    total, count = 0.0, 0
    with np.load(TEST_SPLIT) as split:
        assert sorted(split.files) == sorted(record["test_pieces"])
        for name in split.files:
            session.reset()
            nll, n = piece_nll(session, split[name].astype(np.int64), bos, eos)
            total, count = total + nll, count + n
    assert count == record["test_tokens"]
    perplexity = math.exp(total / count)
    assert perplexity == pytest.approx(record["test_perplexity"], rel=0.01)
