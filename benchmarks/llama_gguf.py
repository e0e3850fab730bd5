"""A Llama-architecture GGUF of the same shape as a ``.sage`` model, so llama.cpp can be a peer.

llama.cpp has no counterpart for the two ideas the engine is built on, so the peer is a plain
Llama of the same shape, not the same model:

- **AS-KVHS**: a ``.sage`` layer has one key/value projection per attribute family; a Llama layer
  has one. The GGUF gets the pitch family's (the commonest family in music), so a step costs
  the same one projection in both.
- **DSMR**: a ``.sage`` layer attends to its last ``h_l`` tokens; a Llama attends to every past
  token in every layer, so its step grows with the past length where the engine's stays flat.
- **Position**: ALiBi slopes in the ``.sage`` file, RoPE in the Llama (the slopes are not written).

Everything else maps one to one (pre-norm RMSNorm, grouped-query attention with ``G`` key/value
heads, a SwiGLU feed-forward ``w2(silu(w1 x) * w3 x)``, untied embedding and output), with the
same sizes read from the ``.sage`` file. The weights are the file's, dequantized to f32; the
Llama's logits are not the engine's (RoPE, one key/value family, full attention), so the peer is
timed, not checked against the reference. Quantization (Q8_0, Q4_0) is llama.cpp's own
(:func:`quantize`, which needs ``llama-cpp-python``; the writer needs only ``gguf``).
"""

from __future__ import annotations

import ctypes
import logging
import os
from pathlib import Path

import gguf
import numpy as np

from sage_edge import format as sage_format
from sage_edge.vocab import Family

ARCHITECTURE = "llama"
# The .sage tensor each Llama tensor comes from, per layer ("{}" is the layer index).
LAYER_TENSORS = {
    "blk.{}.attn_norm.weight": "layers.{}.attn_norm",
    "blk.{}.attn_q.weight": "layers.{}.wq",
    "blk.{}.attn_k.weight": "layers.{}.wk",
    "blk.{}.attn_v.weight": "layers.{}.wv",
    "blk.{}.attn_output.weight": "layers.{}.wo",
    "blk.{}.ffn_norm.weight": "layers.{}.ffn_norm",
    "blk.{}.ffn_gate.weight": "layers.{}.w1",
    "blk.{}.ffn_up.weight": "layers.{}.w3",
    "blk.{}.ffn_down.weight": "layers.{}.w2",
}
MODEL_TENSORS = {
    "token_embd.weight": "tok_embedding",
    "output_norm.weight": "final_norm",
    "output.weight": "output",
}
# llama.cpp's file type (enum llama_ftype) of each quantization the peer runs.
FILE_TYPES = {"Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "Q4_0": gguf.LlamaFileType.MOSTLY_Q4_0}


def key_value_family(model: sage_format.ModelFile) -> int:
    """Which attribute family's key/value projection the Llama's single one is."""
    return int(Family.PITCH) if model.n_families > 1 else 0


def llama_tensors(model: sage_format.ModelFile) -> dict[str, np.ndarray]:
    """The Llama's tensors by GGUF name, f32, in the shapes the ``.sage`` file gives
    (``[out, in]`` for a matrix: gguf writes numpy's row-major shape reversed, as ggml's ``ne``)."""
    family = key_value_family(model)
    names = dict(MODEL_TENSORS)
    for layer in range(model.n_layers):
        names.update({g.format(layer): s.format(layer) for g, s in LAYER_TENSORS.items()})
    tensors = {}
    for gguf_name, sage_name in names.items():
        values = model.dequantized(sage_name).astype(np.float32)
        if sage_name.endswith((".wk", ".wv")):
            values = values[family]  # [families, G·d_h, d] → [G·d_h, d]
        tensors[gguf_name] = np.ascontiguousarray(values)
    return tensors


def write_gguf(model: sage_format.ModelFile, path: str | os.PathLike, context_length: int) -> Path:
    """Write the same-shape Llama as an F32 GGUF at ``path``; ``context_length`` is the longest
    context it will be run with (llama.cpp warns past the trained length, it does not refuse)."""
    path = Path(path)
    writer = gguf.GGUFWriter(str(path), ARCHITECTURE)
    writer.add_name("sage-edge same-shape llama")
    writer.add_description(
        "A Llama of the same shape as a sage-edge model, its weights (one key/value family, "
        "RoPE for ALiBi, full attention for DSMR's horizons): a speed peer, not the same model."
    )
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_context_length(context_length)
    writer.add_embedding_length(model.d_model)
    writer.add_block_count(model.n_layers)
    writer.add_feed_forward_length(model.d_ff)
    writer.add_head_count(model.n_heads)
    writer.add_head_count_kv(model.n_kv_heads)
    writer.add_key_length(model.d_head)
    writer.add_value_length(model.d_head)
    writer.add_rope_dimension_count(model.d_head)
    writer.add_layer_norm_rms_eps(model.norm_eps)
    writer.add_vocab_size(model.vocab_size)
    # Music tokens are not text: no tokenizer, llama.cpp makes vocab_size placeholder tokens.
    writer.add_tokenizer_model("no_vocab")
    for name, values in llama_tensors(model).items():
        writer.add_tensor(name, values)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def quantize(source: str | os.PathLike, target: str | os.PathLike, file_type: str) -> Path:
    """Quantize an F32 GGUF with llama.cpp's own quantizer (``llama_model_quantize``), every
    matrix to ``file_type`` (``pure``: llama.cpp would otherwise keep the output matrix in Q6_K
    for Q4_0), one thread."""
    import llama_cpp

    # its log prints a line per tensor; keep warnings and errors
    logging.getLogger("llama-cpp-python").setLevel(logging.WARNING)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(FILE_TYPES[file_type])
    params.nthread = 1
    params.pure = True
    status = llama_cpp.llama_model_quantize(
        str(source).encode(), str(target).encode(), ctypes.byref(params)
    )
    if status != 0:
        raise RuntimeError(f"llama_model_quantize to {file_type} failed ({status}): {source}")
    return Path(target)
