"""Make the tiny model files the C++ engine's tests load without Python.

    python tests/data/make_tiny_model.py            # from the repository root

writes ``tests/data/tiny_f32.sage``, ``tiny_q8_0.sage`` and ``tiny_q4.sage``: the same random-init
``training.model.SageModel`` (seed 0; 2 layers, d 32, 4 query heads sharing 2 key/value heads of
width 8, d_ff 64, askv attention, two-scale horizons 32 and 8) with the project's default
tokenizer, stored in f32, in q8_0 and in q4. Regenerate them (and commit all three) whenever
docs/format.md, the tokenizer's vocabulary or the model's tensors change; the output is the same
bytes on every run for a given torch and miditok.

The weights are drawn wider than training's initialisation (N(0, 0.1), the norm gains in
[0.5, 1.5]) so the logits and attention weights are far from uniform and an engine that drops a
gain, a family projection or a scale gives visibly different numbers.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sage_edge.tokenizer import Tokenizer  # noqa: E402
from training.export import export  # noqa: E402
from training.model import ModelConfig, SageModel, two_scale  # noqa: E402

SEED = 0
OUT = Path(__file__).resolve().parent


def tiny_model(tokenizer: Tokenizer) -> SageModel:
    config = ModelConfig(
        vocab_size=tokenizer.vocab_size,
        n_layers=2,
        d_model=32,
        n_heads=4,
        n_kv_heads=2,
        d_head=8,
        d_ff=64,
        attention="askv",
        families=tokenizer.families.tolist(),
        horizons=list(two_scale(2, 1, 32, 8).horizons),
    )
    model = SageModel(config).eval()
    generator = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, tensor in model.named_parameters():  # a fixed order: deterministic draws
            if tensor.ndim == 1:  # RMSNorm gains
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1)
            assert name in model.tensors()
    return model


def main() -> int:
    tokenizer = Tokenizer.default()
    model = tiny_model(tokenizer)
    provenance = {
        "name": "tiny-fixture",
        "seed": SEED,
        "generator": "tests/data/make_tiny_model.py",
    }
    for quant in ("f32", "q8_0", "q4"):
        result = export(model, tokenizer.to_json(), quant, OUT / f"tiny_{quant}.sage", provenance)
        print(f"{result.path.relative_to(ROOT)}: {result.file_size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
