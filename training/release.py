"""Ship a trained checkpoint as the package's default model.

    python -m training.release CHECKPOINT --data DIR [--quant q8_0] [--keep-test-split]
    python -m training.release MODEL.sage --data DIR [--keep-test-split]
    python -m training.release --learned-programs-only --data DIR

Exports the checkpoint (or copies a model file already exported from one, e.g. on the machine
that trained it) to ``sage_edge/models/default.sage``, measures its test perplexity per token with
the C++ engine on the corpus test split, and records what ``tests/test_default_model.py`` checks:
the file's SHA-256, the perplexity, and the test split's token ids
(``tests/data/corpus_test_split.npz``, so the check runs without the corpus).
``--keep-test-split`` measures on the recorded split as it is (its pieces must be in the corpus's
test split), so that a model trained on a larger corpus stays comparable with the ones before.
docs/model.md cites the record. The file records the programs of the corpus's train split as the
model's learned programs; ``--learned-programs-only`` records them in the shipped file as it is
(every tensor kept) and updates the record, for a file exported before files recorded them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np

from sage_edge import format as sage_format
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
    parser.add_argument("checkpoint", nargs="?", help="a training checkpoint (.pt) or a .sage file")
    parser.add_argument("--data", required=True, help="the prepared corpus the model trained on")
    parser.add_argument("--quant", default="q8_0", choices=DTYPES)
    parser.add_argument(
        "--keep-test-split",
        action="store_true",
        help="measure on the recorded test split, kept as it is, not the corpus's",
    )
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

    if Path(args.checkpoint).suffix == ".sage":
        contents = sage_format.read(args.checkpoint)  # a valid model file, or ModelFormatError
        if contents.learned_programs is None:
            parser.error(f"{args.checkpoint} records no learned programs")
        provenance, quant = contents.metadata["model"], contents.matrix_dtype
        shutil.copyfile(args.checkpoint, DEFAULT_MODEL)
    else:
        model = load_checkpoint(args.checkpoint)
        provenance, quant = checkpoint_provenance(args.checkpoint, model), args.quant
        programs = checkpoint_learned_programs(model, args.data)
        export(model, model.tokenizer_json, quant, DEFAULT_MODEL, provenance, programs)
    print(f"wrote {DEFAULT_MODEL} ({DEFAULT_MODEL.stat().st_size:,} bytes)")

    manifest = data.load_manifest(args.data)
    if args.keep_test_split:
        with np.load(TEST_SPLIT) as split:
            pieces = {name: split[name].astype(np.int32) for name in split.files}
        if not set(pieces) <= set(manifest["splits"]["test"]):
            raise SystemExit(f"{TEST_SPLIT}: pieces outside the test split of {args.data}")
    else:
        names = manifest["splits"]["test"]
        pieces = dict(zip(names, data.load_split(args.data, "test"), strict=True))
        arrays = {name: ids.astype(np.int16) for name, ids in pieces.items()}
        np.savez_compressed(TEST_SPLIT, **arrays)
    perplexity, tokens = test_perplexity(DEFAULT_MODEL, pieces)
    record = {
        "sha256": hashlib.sha256(DEFAULT_MODEL.read_bytes()).hexdigest(),
        "file_bytes": DEFAULT_MODEL.stat().st_size,
        "quantization": quant,
        "horizons": Engine(DEFAULT_MODEL).info["horizons"],
        "test_perplexity": perplexity,
        "test_tokens": tokens,
        "test_pieces": list(pieces),
        "checkpoint": provenance,
    }
    RECORD.write_text(json.dumps(record, indent=2) + "\n")
    print(f"test perplexity {perplexity:.4f} over {tokens:,} tokens; sha256 {record['sha256']}")


if __name__ == "__main__":
    main()
