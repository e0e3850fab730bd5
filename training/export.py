"""Export a trained checkpoint to a ``.sage`` model file (docs/format.md).

    python -m training.export runs/tiny/best.pt --data data/corpus --quant q8_0 --out tiny.sage

Every matrix (the embeddings and the output projection included) is stored in the chosen dtype;
the norms' gains and the ALiBi slopes stay f32. Prints the file size and each tensor's
quantization error: the largest absolute error and the RMS error relative to the RMS weight.

The file also records the model's learned programs: the General MIDI programs of the train split
of ``--data`` (the corpus the checkpoint was trained on), with their note counts; when the run
redrew programs (``train.program_augment``), the counts are those of one epoch as the training
stream re-orchestrated it. A run that started from a model file (``--init``) adds the programs
that file had learned and the corpus lacks.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import sage_edge
from sage_edge import format as sage_format
from sage_edge.quant import DTYPES
from sage_edge.tokenizer import Tokenizer
from sage_edge.vocab import Kind
from training import data
from training.model import SageModel, load_checkpoint


@dataclass
class TensorError:
    """How far a stored tensor's values are from the model's."""

    dtype: str
    max_abs: float
    relative_rms: float  # RMS(stored − original) / RMS(original)


@dataclass
class ExportResult:
    path: Path
    file_size: int
    errors: dict[str, TensorError]


def learned_programs(pieces: Iterable[np.ndarray], tokenizer: Tokenizer) -> dict[int, int]:
    """Notes per General MIDI program (-1 = drums) in token sequences, ascending by program.

    Every note is a Program token followed by its Pitch (or PitchDrum) token, so a note of
    program p is a Program_p token with a pitch after it.
    """
    table = tokenizer.token_table()
    counts = np.zeros(129, np.int64)  # index program + 1
    for ids in pieces:
        kinds = table["kind"][np.asarray(ids)]
        is_note = (kinds[:-1] == Kind.PROGRAM) & np.isin(kinds[1:], (Kind.PITCH, Kind.PITCH_DRUM))
        programs = table["a"][np.asarray(ids)[:-1][is_note]]
        counts += np.bincount(programs + 1, minlength=129)
    return {int(i) - 1: int(counts[i]) for i in np.flatnonzero(counts)}


def corpus_learned_programs(
    data_dir: str | Path, tokenizer: Tokenizer, program_augment: float = 0.0, seed: int = 0
) -> dict[int, int]:
    """The learned programs of a model trained on the prepared corpus ``data_dir``: those of its
    train split, with a ``program_augment`` share of its pieces re-orchestrated as the training
    stream does (``data.redraw_programs``, one seeded draw per piece; transposition keeps
    programs)."""
    pieces = data.load_split(data_dir, "train", tokenizer)
    rng = np.random.default_rng(seed)
    streamed = [
        data.redraw_programs(ids, rng, tokenizer) if rng.random() < program_augment else ids
        for ids in pieces
    ]
    counts = learned_programs(streamed, tokenizer)
    if not counts:
        raise ValueError(f"{data_dir}: the train split holds no notes")
    return counts


def checkpoint_learned_programs(model: SageModel, data_dir: str | Path) -> dict[int, int]:
    """The learned programs of a checkpoint (:func:`training.model.load_checkpoint`) trained on
    ``data_dir``, with the program augmentation of its training config.

    A run started from a model file (``--init``) also keeps the programs that file had learned
    and ``data_dir`` lacks, with the file's note counts: a model fine-tuned on a folder of choir
    pieces still plays the piano it learned before, and front ends must not refuse it."""
    train_config = model.checkpoint_info["train_config"]
    programs = corpus_learned_programs(
        data_dir,
        Tokenizer.from_json(model.tokenizer_json),
        train_config.get("program_augment", 0.0),
        train_config.get("seed", 0),
    )
    inherited = {int(p): int(n) for p, n in train_config.get("init_programs") or ()}
    return dict(sorted((inherited | programs).items()))


def model_file(
    model: SageModel,
    tokenizer_json: str,
    quant: str,
    provenance: dict | None = None,
    programs: dict[int, int] | None = None,
) -> sage_format.ModelFile:
    """The ``.sage`` contents of ``model`` with its matrices stored as ``quant``. ``programs``
    (program → notes in the training data, from :func:`learned_programs`) is recorded as the
    model's learned programs; None records nothing (nothing is known of what it plays)."""
    if quant not in DTYPES:
        raise ValueError(f"quant must be one of {', '.join(DTYPES)}, not {quant!r}")
    config = model.config
    tokenizer = Tokenizer.from_json(tokenizer_json)
    table = tokenizer.token_table()
    if len(table) != config.vocab_size:
        raise ValueError(
            f"the tokenizer has {len(table)} tokens but the model's vocabulary is "
            f"{config.vocab_size}: they were not trained together"
        )
    if not np.array_equal(table["family"], np.asarray(config.families)):
        raise ValueError("the tokenizer's attribute families differ from the model's")

    model_config = {k: v for k, v in config.to_dict().items() if k != "families"}
    metadata = {
        "tokenizer": json.loads(tokenizer_json),
        "model": {**(provenance or {}), "config": model_config, "quantization": quant},
    }
    tensors = {}
    for name, weight in model.tensors().items():
        values = weight.detach().to("cpu").float().numpy()
        dtype = "f32" if values.ndim == 1 else quant  # vectors are always f32
        tensors[name] = sage_format.Tensor.from_array(values, dtype)
    contents = sage_format.ModelFile(
        vocab_size=config.vocab_size,
        n_layers=config.n_layers,
        d_model=config.d_model,
        n_heads=config.n_heads,
        n_kv_heads=config.n_kv_heads,
        d_head=config.d_head,
        d_ff=config.d_ff,
        attention=config.attention,
        norm_eps=config.norm_eps,
        ticks_per_quarter=tokenizer.ticks_per_quarter,
        horizons=tuple(config.horizons),
        vocabulary=table,
        metadata=metadata,
        tensors=tensors,
    )
    contents.learned_programs = programs
    return contents


def record_learned_programs(path: str | Path, programs: dict[int, int]) -> int:
    """Rewrite the ``.sage`` file at ``path`` with ``programs`` as its learned programs, keeping
    everything else it holds (every tensor byte for byte); return the new file size. For a model
    exported before files recorded them (``training.release --learned-programs-only``)."""
    contents = sage_format.read(path)
    contents.learned_programs = programs
    return sage_format.write(path, contents)


def export(
    model: SageModel,
    tokenizer_json: str,
    quant: str,
    path: str | Path,
    provenance: dict | None = None,
    programs: dict[int, int] | None = None,
) -> ExportResult:
    """Write ``model`` as a ``.sage`` file at ``path``; return its size and quantization errors.
    ``programs``: the learned programs to record (:func:`model_file`)."""
    contents = model_file(model, tokenizer_json, quant, provenance, programs)
    file_size = sage_format.write(path, contents)
    originals = {name: t.detach().to("cpu").float().numpy() for name, t in model.tensors().items()}
    errors = {}
    for name in contents.expected_shapes():  # the file's order
        tensor = contents.tensors[name]
        original = originals[name].astype(np.float64)
        difference = tensor.dequantize().astype(np.float64) - original
        rms = np.sqrt(np.mean(original**2))
        errors[name] = TensorError(
            dtype=tensor.dtype,
            max_abs=float(np.abs(difference).max()),
            relative_rms=float(np.sqrt(np.mean(difference**2)) / rms) if rms > 0 else 0.0,
        )
    return ExportResult(Path(path), file_size, errors)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def checkpoint_provenance(checkpoint: str | Path, model: SageModel) -> dict:
    """Where a model came from: the checkpoint, its training run and the code that exported it."""
    info = getattr(model, "checkpoint_info", {}) or {}
    train_config = info.get("train_config") or {}
    return {
        "name": train_config.get("name"),
        "checkpoint": Path(checkpoint).name,
        "step": info.get("step"),
        "best_valid_loss": info.get("best_valid_loss"),
        "train_config": train_config,
        "commit": _git_commit(),
        "sage_edge_version": sage_edge.__version__,
    }


def print_report(result: ExportResult, out=None) -> None:
    out = out or sys.stdout
    print(f"{result.path}: {result.file_size:,} bytes", file=out)
    width = max(len(name) for name in result.errors)
    print(f"{'tensor':<{width}}  dtype  {'max |err|':>10}  {'rel RMS':>9}", file=out)
    for name, err in result.errors.items():
        print(
            f"{name:<{width}}  {err.dtype:<5}  {err.max_abs:10.3e}  {err.relative_rms:9.3e}",
            file=out,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.export", description=__doc__.split("\n")[0]
    )
    parser.add_argument("checkpoint", help="a training checkpoint (.pt)")
    parser.add_argument(
        "--data",
        required=True,
        help="the prepared corpus the checkpoint was trained on: its train split's programs are "
        "recorded as the programs the model learned",
    )
    parser.add_argument("--quant", choices=DTYPES, default="q8_0", help="dtype of the matrices")
    parser.add_argument("--out", required=True, help="the .sage file to write")
    args = parser.parse_args(argv)

    model = load_checkpoint(args.checkpoint)
    if model.tokenizer_json is None:
        parser.error(f"{args.checkpoint} holds no tokenizer configuration")
    provenance = checkpoint_provenance(args.checkpoint, model)
    programs = checkpoint_learned_programs(model, args.data)
    result = export(model, model.tokenizer_json, args.quant, args.out, provenance, programs)
    print_report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
