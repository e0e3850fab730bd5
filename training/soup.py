"""Average the weights of model files fine-tuned from one start (a uniform "model soup").

    python -m training.soup runs/a.sage runs/b.sage runs/c.sage --out soup.sage

Runs that start from the same weights and differ in batch, learning rate, data weights or seed
end in one basin of the loss; their mean often lies lower in it than any of them (Wortsman et al.,
"Model soups", 2022). docs/model.md measured it: four runs averaged beat each of the four on
validation loss. The files are read dequantized, averaged tensor by tensor, and written with the
matrices stored as ``--quant``; the learned programs recorded are every program any file learned,
with the mean of the files' note counts.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np
import torch

import sage_edge
from sage_edge import format as sage_format
from sage_edge.quant import DTYPES
from training.export import export, print_report
from training.model import load_model_file


def ingredient(path: str | Path, contents: sage_format.ModelFile) -> dict:
    """What the soup's record says of one of its files: which file, and the run that made it."""
    made = contents.metadata.get("model", {})
    return {
        "file": Path(path).name,
        "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest(),
        **{key: made[key] for key in ("name", "step", "best_valid_loss", "commit") if key in made},
    }


def soup(paths: list[str | Path], quant: str, out: str | Path):
    """Write the mean of the model files at ``paths`` to ``out``; return the export's result."""
    if len(paths) < 2:
        raise ValueError("a soup needs at least two model files")
    files = [sage_format.read(p) for p in paths]
    first = files[0]
    for path, f in zip(paths[1:], files[1:], strict=True):
        if f.expected_shapes() != first.expected_shapes() or f.horizons != first.horizons:
            raise ValueError(f"{path}: its architecture differs from {paths[0]}'s")
        if not np.array_equal(f.vocabulary, first.vocabulary):
            raise ValueError(f"{path}: its vocabulary differs from {paths[0]}'s")
    weights = [f.dequantized_tensors() for f in files]
    mean = {name: np.mean([w[name] for w in weights], axis=0) for name in weights[0]}
    model = load_model_file(first)
    model.load_tensors({name: torch.from_numpy(values) for name, values in mean.items()})

    programs: dict[int, list[int]] = {}
    for f in files:
        for program, notes in (f.learned_programs or {}).items():
            programs.setdefault(int(program), []).append(int(notes))
    learned = {p: round(sum(n) / len(files)) for p, n in sorted(programs.items())} or None
    provenance = {
        "name": Path(out).stem,
        "soup_of": [ingredient(p, f) for p, f in zip(paths, files, strict=True)],
        "sage_edge_version": sage_edge.__version__,
    }
    return export(model, model.tokenizer_json, quant, out, provenance, learned)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.soup", description=__doc__.split("\n")[0]
    )
    parser.add_argument("files", nargs="+", help="model files (.sage) of one architecture")
    parser.add_argument("--quant", choices=DTYPES, default="q8_0", help="dtype of the matrices")
    parser.add_argument("--out", required=True, help="the .sage file to write")
    args = parser.parse_args(argv)
    try:
        result = soup(args.files, args.quant, args.out)
    except (ValueError, sage_edge.SageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
