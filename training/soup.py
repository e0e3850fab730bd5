"""Average the weights of model files fine-tuned from one start (a uniform "model soup").

    python -m training.soup runs/a.sage runs/b.sage runs/c.sage --out soup.sage

Runs that start from the same weights and differ in batch, learning rate, data weights or seed
end in one basin of the loss; their mean often lies lower in it than any of them (Wortsman et al.,
"Model soups", 2022). docs/model.md measured it: four runs averaged beat each of the four on
validation loss. The files are read dequantized, averaged tensor by tensor, and written with the
matrices stored as ``--quant``; the learned programs recorded are every program any file learned,
with the mean of the files' note counts.

``--greedy DATA`` makes a greedy soup instead (Wortsman et al.'s "greedy soup"): the files are
ordered by their validation loss on DATA's valid split (``--valid-collections`` keeps only those
collections' pieces: the music a model is judged on), and each joins the mean only if the mean's
loss falls. The table of losses it printed is how docs/model.md chose its ingredients.

    python -m training.soup start.sage runs/*.sage --greedy data/corpus2 \
        --valid-collections bach,trecento,beethoven --out soup.sage
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
from sage_edge.tokenizer import Tokenizer
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


def read_one_architecture(paths: list[str | Path]) -> list[sage_format.ModelFile]:
    """The model files at ``paths``, refused unless they share one architecture and vocabulary."""
    if len(paths) < 2:
        raise ValueError("a soup needs at least two model files")
    files = [sage_format.read(p) for p in paths]
    first = files[0]
    for path, f in zip(paths[1:], files[1:], strict=True):
        if f.expected_shapes() != first.expected_shapes() or f.horizons != first.horizons:
            raise ValueError(f"{path}: its architecture differs from {paths[0]}'s")
        if not np.array_equal(f.vocabulary, first.vocabulary):
            raise ValueError(f"{path}: its vocabulary differs from {paths[0]}'s")
    return files


def mean_model(template: sage_format.ModelFile, weights: list[dict[str, np.ndarray]]):
    """The reference model (``training.model.SageModel``) of ``template``'s architecture holding
    the mean of ``weights`` (model files' ``dequantized_tensors()``)."""
    mean = {name: np.mean([w[name] for w in weights], axis=0) for name in weights[0]}
    model = load_model_file(template)
    model.load_tensors({name: torch.from_numpy(values) for name, values in mean.items()})
    return model


def soup(paths: list[str | Path], quant: str, out: str | Path):
    """Write the mean of the model files at ``paths`` to ``out``; return the export's result."""
    files = read_one_architecture(paths)
    model = mean_model(files[0], [f.dequantized_tensors() for f in files])

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


def greedy_choice(
    paths: list[str | Path], data_dir: str | Path, collections: list[str] | None = None
) -> tuple[list[str | Path], list[dict]]:
    """The files a greedy soup keeps, and a row per step: the files ordered by their own
    validation loss on ``data_dir``'s valid split (only ``collections``' pieces when given), each
    kept only if the mean with it scores lower than the mean without it."""
    from training import data
    from training.train import Dist, TrainConfig, evaluate

    files = read_one_architecture(paths)
    weights = [f.dequantized_tensors() for f in files]  # once: each step means a few of them
    tokenizer = Tokenizer.from_json(files[0].tokenizer_json())
    pieces = data.load_split(data_dir, "valid", tokenizer)
    if collections:
        of = data.split_collections(data_dir, "valid")
        unknown = set(collections) - set(of)
        if unknown:
            raise ValueError(f"{data_dir}: no valid pieces of collections {sorted(unknown)}")
        pieces = [p for p, c in zip(pieces, of, strict=True) if c in collections]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    config = TrainConfig(max_steps=1)

    def loss(indices: list[int]) -> float:
        model = mean_model(files[0], [weights[i] for i in indices]).to(device)
        with torch.no_grad():
            return evaluate(model, pieces, tokenizer, config, Dist(), device)[0]

    own = [loss([i]) for i in range(len(files))]
    order = sorted(range(len(files)), key=own.__getitem__)
    kept, best = [order[0]], own[order[0]]
    rows = [{"file": str(paths[order[0]]), "own": own[order[0]], "mean": best, "kept": True}]
    for i in order[1:]:
        with_it = loss(kept + [i])
        rows.append({"file": str(paths[i]), "own": own[i], "mean": with_it, "kept": with_it < best})
        if with_it < best:
            kept, best = kept + [i], with_it
    return [paths[i] for i in kept], rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.soup", description=__doc__.split("\n")[0]
    )
    parser.add_argument("files", nargs="+", help="model files (.sage) of one architecture")
    parser.add_argument("--quant", choices=DTYPES, default="q8_0", help="dtype of the matrices")
    parser.add_argument("--out", required=True, help="the .sage file to write")
    parser.add_argument(
        "--greedy",
        metavar="DATA",
        help="a greedy soup: keep a file only if it lowers the mean's loss on DATA's valid split",
    )
    parser.add_argument(
        "--valid-collections",
        default="",
        help="with --greedy: comma-separated collections of the valid split to score on (all)",
    )
    args = parser.parse_args(argv)
    try:
        paths = args.files
        if args.greedy:
            collections = [c for c in args.valid_collections.split(",") if c]
            paths, rows = greedy_choice(args.files, args.greedy, collections or None)
            for row in rows:
                print(
                    f"{row['file']}: own {row['own']:.4f}, mean with it {row['mean']:.4f}"
                    f" ({'kept' if row['kept'] else 'left out'})"
                )
            if len(paths) < 2:
                raise ValueError(f"{paths[0]} alone scores lowest: no soup lowers it")
        result = soup(paths, args.quant, args.out)
    except (ValueError, sage_edge.SageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
