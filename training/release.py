"""Ship a trained checkpoint as the package's default model.

    python -m training.release CHECKPOINT --data DIR [--quant q8_0]
    python -m training.release --learned-programs-only --data DIR

Exports the checkpoint to ``sage_edge/models/default.sage``, measures its test perplexity per
token with the C++ engine on the corpus test split, and records what ``tests/test_default_model.py``
checks: the file's SHA-256, the perplexity, and the test split's token ids
(``tests/data/corpus_test_split.npz``, so the check runs without the corpus). docs/model.md cites
the record. The file records the programs of the corpus's train split as the model's learned
programs; ``--learned-programs-only`` records them in the shipped file as it is (every tensor kept)
and updates the record, for a file exported before files recorded them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
from pathlib import Path

import numpy as np

from sage_edge.engine import DEFAULT_MODEL, Engine
from sage_edge.quant import DTYPES
from training import data
from training.evaluate import piece_nll
from training.export import (
    checkpoint_learned_programs,
    checkpoint_provenance,
    corpus_learned_programs,
    export,
    record_learned_programs,
)
from training.model import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
RECORD = DEFAULT_MODEL.with_suffix(".json")
TEST_SPLIT = ROOT / "tests" / "data" / "corpus_test_split.npz"


def test_perplexity(model_path: Path, pieces: dict[str, np.ndarray]) -> tuple[float, int]:
    """Perplexity per token of BOS + piece + EOS over the pieces, and the tokens predicted."""
    engine = Engine(model_path)
    bos, eos = engine.tokenizer.id_of("BOS_None"), engine.tokenizer.id_of("EOS_None")
    session = engine.session(seed=0)
    total, count = 0.0, 0
    for ids in pieces.values():
        session.reset()
        nll, n = piece_nll(session, ids.astype(np.int64), bos, eos)
        total, count = total + nll, count + n
    return math.exp(total / count), count


def relabel_learned_programs(data_dir: str) -> None:
    """Record the train split's programs in the shipped file, which must have been trained on this
    corpus (its test split is the recorded one), and update the record's SHA-256 and size."""
    record = json.loads(RECORD.read_text())
    if data.load_manifest(data_dir)["splits"]["test"] != record["test_pieces"]:
        raise SystemExit(f"{data_dir} is not the corpus {DEFAULT_MODEL.name} was trained on")
    programs = corpus_learned_programs(data_dir, Engine(DEFAULT_MODEL).tokenizer)
    record_learned_programs(DEFAULT_MODEL, programs)
    record["sha256"] = hashlib.sha256(DEFAULT_MODEL.read_bytes()).hexdigest()
    record["file_bytes"] = DEFAULT_MODEL.stat().st_size
    RECORD.write_text(json.dumps(record, indent=2) + "\n")
    print(f"{DEFAULT_MODEL}: learned programs {programs}; sha256 {record['sha256']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", nargs="?")
    parser.add_argument("--data", required=True, help="the prepared corpus the model trained on")
    parser.add_argument("--quant", default="q8_0", choices=DTYPES)
    parser.add_argument(
        "--learned-programs-only",
        action="store_true",
        help="no checkpoint: record the learned programs in the shipped file and its record",
    )
    args = parser.parse_args(argv)
    if args.learned_programs_only:
        relabel_learned_programs(args.data)
        return
    if args.checkpoint is None:
        parser.error("give a checkpoint, or --learned-programs-only")

    model = load_checkpoint(args.checkpoint)
    provenance = checkpoint_provenance(args.checkpoint, model)
    programs = checkpoint_learned_programs(model, args.data)
    result = export(model, model.tokenizer_json, args.quant, DEFAULT_MODEL, provenance, programs)
    print(f"wrote {DEFAULT_MODEL} ({result.file_size:,} bytes)")

    manifest = data.load_manifest(args.data)
    names = manifest["splits"]["test"]
    pieces = dict(zip(names, data.load_split(args.data, "test"), strict=True))
    np.savez_compressed(TEST_SPLIT, **{name: ids.astype(np.int16) for name, ids in pieces.items()})
    perplexity, tokens = test_perplexity(DEFAULT_MODEL, pieces)
    record = {
        "sha256": hashlib.sha256(DEFAULT_MODEL.read_bytes()).hexdigest(),
        "file_bytes": DEFAULT_MODEL.stat().st_size,
        "quantization": args.quant,
        "horizons": Engine(DEFAULT_MODEL).info["horizons"],
        "test_perplexity": perplexity,
        "test_tokens": tokens,
        "test_pieces": names,
        "checkpoint": provenance,
    }
    RECORD.write_text(json.dumps(record, indent=2) + "\n")
    print(f"test perplexity {perplexity:.4f} over {tokens:,} tokens; sha256 {record['sha256']}")


if __name__ == "__main__":
    main()
