"""Quality gate for quantization: test-split perplexity of f32, q8_0 and q4 exports.

    python benchmarks/quant_quality.py --checkpoint runs/default/best.pt --data data/corpus \\
        [--max-tokens N] [--keep DIR]

Each dtype is exported to a ``.sage`` file, read back, dequantized, and loaded into the PyTorch
reference model, so the numbers measure exactly the weights the engine runs (the engine's
activation quantization is not included: that is the engine's own parity test). Every test piece
is streamed in segments with ``forward_segment`` carrying the DSMR memory, as in training
(BOS … EOS around each piece when the run trained that way). Target: q8_0 perplexity within 1 % of
f32; q4 is reported as is.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from sage_edge import format as sage_format  # noqa: E402
from sage_edge.tokenizer import Tokenizer  # noqa: E402
from training import data  # noqa: E402
from training.export import checkpoint_provenance, export  # noqa: E402
from training.model import SageModel, load_checkpoint  # noqa: E402

QUANTS = ("f32", "q8_0", "q4")
Q8_0_TARGET = 0.01  # q8_0 perplexity at most 1 % above f32


def test_sequences(
    data_dir: str | Path, tokenizer: Tokenizer, add_bos_eos: bool, max_tokens: int | None
) -> list[np.ndarray]:
    """The test split's pieces as the model streams them, cut to ``max_tokens`` predictions."""
    pieces = data.load_split(data_dir, "test", tokenizer)
    bos, eos = tokenizer.id_of("BOS_None"), tokenizer.id_of("EOS_None")
    sequences, predictions = [], 0
    for ids in pieces:
        sequence = np.concatenate([[bos], ids, [eos]]) if add_bos_eos else np.asarray(ids)
        sequence = sequence.astype(np.int64)
        if max_tokens is not None:
            sequence = sequence[: max_tokens - predictions + 1]
        if len(sequence) < 2:
            break
        sequences.append(sequence)
        predictions += len(sequence) - 1
    return sequences


@torch.no_grad()
def mean_nll(model: SageModel, sequences: list[np.ndarray], segment: int) -> tuple[float, int]:
    """Mean negative log-likelihood per predicted token; each piece starts from an empty memory."""
    total, count = 0.0, 0
    for sequence in sequences:
        ids = torch.from_numpy(sequence)
        memory = model.init_memory(1)
        for start in range(0, len(ids) - 1, segment):
            inputs = ids[start : start + segment]
            targets = ids[start + 1 : start + segment + 1]
            inputs = inputs[: len(targets)]
            logits, memory = model.forward_segment(inputs[None], memory)
            total += F.cross_entropy(logits[0].double(), targets, reduction="sum").item()
            count += len(targets)
    return total / max(count, 1), count


def run(
    checkpoint: str, data_dir: str, max_tokens: int | None, keep: str | None, out=None
) -> dict[str, dict]:
    model = load_checkpoint(checkpoint)
    train_config = (getattr(model, "checkpoint_info", {}) or {}).get("train_config") or {}
    segment = int(train_config.get("segment", 256))
    add_bos_eos = bool(train_config.get("add_bos_eos", True))
    tokenizer = Tokenizer.from_json(model.tokenizer_json)
    sequences = test_sequences(data_dir, tokenizer, add_bos_eos, max_tokens)
    if not sequences:
        raise SystemExit(f"{data_dir}: the test split holds no tokens")
    provenance = checkpoint_provenance(checkpoint, model)

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for quant in QUANTS:
            path = folder / f"{Path(checkpoint).stem}_{quant}.sage"
            export(model, model.tokenizer_json, quant, path, provenance)
            weights = sage_format.read(path).dequantized_tensors()
            evaluated = SageModel(model.config).eval()
            evaluated.load_tensors({name: torch.from_numpy(w) for name, w in weights.items()})
            started = time.perf_counter()
            nll, count = mean_nll(evaluated, sequences, segment)
            results[quant] = {
                "file_size": path.stat().st_size,
                "nll": nll,
                "perplexity": math.exp(nll),
                "tokens": count,
                "seconds": time.perf_counter() - started,
            }
    print_table(checkpoint, results, out)
    return results


def print_table(checkpoint: str, results: dict[str, dict], out=None) -> None:
    out = out or sys.stdout
    reference = results["f32"]["perplexity"]
    tokens = results["f32"]["tokens"]
    print(f"{checkpoint}: test split, {tokens} predicted tokens", file=out)
    print(
        f"{'quant':<6} {'file bytes':>12} {'NLL/token':>10} {'perplexity':>11} {'vs f32':>8}",
        file=out,
    )
    for quant, r in results.items():
        change = r["perplexity"] / reference - 1
        print(
            f"{quant:<6} {r['file_size']:>12,} {r['nll']:>10.5f} {r['perplexity']:>11.4f} "
            f"{change:>+8.3%}",
            file=out,
        )
    q8_change = results["q8_0"]["perplexity"] / reference - 1
    verdict = "PASS" if q8_change <= Q8_0_TARGET else "FAIL"
    print(f"q8_0 target: within {Q8_0_TARGET:.0%} of f32 → {verdict} ({q8_change:+.3%})", file=out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a training checkpoint (.pt)")
    parser.add_argument("--data", required=True, help="a corpus prepared by training.data")
    parser.add_argument("--max-tokens", type=int, default=None, help="predict at most N tokens")
    parser.add_argument("--keep", default=None, help="keep the exported .sage files in this folder")
    args = parser.parse_args(argv)
    if args.max_tokens is not None and args.max_tokens < 1:
        parser.error("--max-tokens must be at least 1")
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    results = run(args.checkpoint, args.data, args.max_tokens, args.keep)
    q8_change = results["q8_0"]["perplexity"] / results["f32"]["perplexity"] - 1
    return 0 if q8_change <= Q8_0_TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
