"""The decode step of ``training.model.SageModel`` as an ONNX graph, for ONNX Runtime.

One token in, its logits out; each layer's DSMR memory is a shifting window of ``h_l`` keys,
values and a validity mask, passed in and returned (the step drops the oldest entry and appends
the new one), so a caller carries the state exactly as the engine's ring buffers do.

``SageModel.forward_segment`` groups tokens by family with ``argsort``/``bincount``, which tracing
would freeze into constants, so :class:`DecodeStep` restates the same arithmetic for one token:
the family's key/value matrices are picked with a gather. :func:`check_against_reference` proves
the two agree before anything is timed.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from training.model import Memory, SageModel, rmsnorm


class DecodeStep(nn.Module):
    """``(token [1], keys_0, values_0, valid_0, …) → (logits [V], keys_0', values_0', valid_0', …)``

    with ``keys_l``/``values_l`` ``[h_l, G, d_h]`` (oldest first) and ``valid_l`` ``[h_l]`` float
    (1 where a token was written).
    """

    def __init__(self, model: SageModel):
        super().__init__()
        self.model = model
        # distance p − j of each window slot, oldest first: h_l − 1 … 0
        self.slot_distance = [
            torch.arange(block.horizon - 1, -1, -1, dtype=torch.float32) for block in model.layers
        ]

    def forward(self, token: torch.Tensor, *memory: torch.Tensor):
        model, c = self.model, self.model.config
        family = model.token_family[token]  # [1]
        x = model.tok_embedding[token]  # [1, d]
        outputs = []
        for index, block in enumerate(model.layers):
            past_keys, past_values, past_valid = memory[3 * index : 3 * index + 3]
            H, G, d_h = block.n_heads, block.n_kv_heads, block.d_head

            u = rmsnorm(x, block.attn_norm, block.eps)
            q = (u @ block.wq.t()).view(G, H // G, d_h)
            k = (u @ block.wk[family[0]].t()).view(1, G, d_h)
            v = (u @ block.wv[family[0]].t()).view(1, G, d_h)
            keys = torch.cat([past_keys[1:], k])  # the window (p − h_l, p]
            values = torch.cat([past_values[1:], v])
            valid = torch.cat([past_valid[1:], torch.ones(1)])

            scores = torch.einsum("gid,jgd->gij", q, keys) / math.sqrt(d_h)  # [G, H/G, h]
            slopes = model.alibi_slopes.view(G, H // G, 1)
            scores = scores - slopes * self.slot_distance[index]
            scores = scores.masked_fill(valid.view(1, 1, -1) < 0.5, float("-inf"))
            o = torch.einsum("gij,jgd->gid", torch.softmax(scores, dim=-1), values)
            x = x + o.reshape(1, H * d_h) @ block.wo.t()

            u = rmsnorm(x, block.ffn_norm, block.eps)
            hidden = torch.nn.functional.silu(u @ block.w1.t()) * (u @ block.w3.t())
            x = x + hidden @ block.w2.t()
            outputs += [keys, values, valid]
        logits = rmsnorm(x, model.final_norm, c.norm_eps) @ model.output.t()
        return (logits[0], *outputs)


def memory_arrays(memory: Memory) -> list[np.ndarray]:
    """``SageModel`` memory (batch 1) → the step's memory inputs."""
    out = []
    for layer in memory.layers:
        out += [
            layer.keys[0].numpy().astype(np.float32),
            layer.values[0].numpy().astype(np.float32),
            layer.valid[0].numpy().astype(np.float32),
        ]
    return out


def input_names(model: SageModel) -> list[str]:
    names = ["token"]
    for layer in range(model.config.n_layers):
        names += [f"keys_{layer}", f"values_{layer}", f"valid_{layer}"]
    return names


def output_names(model: SageModel) -> list[str]:
    return ["logits"] + [n + "_out" for n in input_names(model)[1:]]


def export_onnx(model: SageModel, path: str | Path) -> Path:
    """Write the decode step of ``model`` (f32) to ``path``."""
    path = Path(path)
    step = DecodeStep(model).eval()
    example = [torch.zeros(1, dtype=torch.long)]
    example += [torch.from_numpy(a) for a in memory_arrays(model.init_memory(1))]
    with torch.no_grad():
        torch.onnx.export(
            step,
            tuple(example),
            str(path),
            input_names=input_names(model),
            output_names=output_names(model),
            opset_version=17,
            do_constant_folding=True,
            dynamo=False,  # the TorchScript exporter: no onnxscript dependency
        )
    return path


def quantize_int8(f32_path: str | Path, int8_path: str | Path) -> Path:
    """ONNX Runtime's dynamic quantization: int8 weights, activations quantized per call.

    Only matrix products with a constant weight are quantized; the key/value projections gather
    their family's matrix at run time, so they stay f32.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(f32_path), str(int8_path), weight_type=QuantType.QInt8)
    return Path(int8_path)


class OrtDecoder:
    """An ONNX Runtime session of the decode step on one thread, carrying the memory."""

    def __init__(self, path: str | Path, model: SageModel, threads: int = 1):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.names = input_names(model)
        self.memory = memory_arrays(model.init_memory(1))

    def set_memory(self, memory: Memory) -> None:
        self.memory = memory_arrays(memory)

    def step(self, token: int) -> np.ndarray:
        feeds = dict(zip(self.names, [np.array([token], np.int64), *self.memory], strict=True))
        logits, *self.memory = self.session.run(None, feeds)
        return logits


def check_against_reference(
    model: SageModel, decoder: OrtDecoder, prefix: np.ndarray, steps: np.ndarray
) -> float:
    """Largest |logit difference| between ONNX Runtime and ``forward_segment`` over ``steps``
    decode steps after ``prefix`` tokens."""
    with torch.no_grad():
        memory = model.init_memory(1)
        if len(prefix):
            _, memory = model.forward_segment(torch.as_tensor(prefix).view(1, -1), memory)
        decoder.set_memory(memory)
        worst = 0.0
        for token in steps.tolist():
            expected, memory = model.forward_segment(torch.tensor([[token]]), memory)
            got = decoder.step(token)
            worst = max(worst, float(np.abs(got - expected[0, 0].numpy()).max()))
    return worst
