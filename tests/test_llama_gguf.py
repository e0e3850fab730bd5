"""benchmarks/llama_gguf.py: the same-shape Llama GGUF that llama.cpp runs as a peer, written from
the shipped model and read back with gguf's own reader (llama-cpp-python is not needed)."""

from __future__ import annotations

import numpy as np
import pytest

gguf = pytest.importorskip("gguf", reason="the test extra's gguf is not installed")

from benchmarks import llama_gguf  # noqa: E402
from sage_edge import format as sage_format  # noqa: E402
from sage_edge.engine import DEFAULT_MODEL  # noqa: E402
from sage_edge.vocab import Family  # noqa: E402


@pytest.fixture(scope="module")
def shipped():
    return sage_format.read(DEFAULT_MODEL)


@pytest.fixture(scope="module")
def written(shipped, tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "peer.gguf"
    llama_gguf.write_gguf(shipped, path, context_length=4_400)
    return gguf.GGUFReader(str(path))


def field(reader, key: str):
    return reader.fields[key].contents()


def test_the_metadata_states_the_sage_files_shape(shipped, written) -> None:
    assert field(written, "general.architecture") == "llama"
    assert field(written, "general.file_type") == gguf.LlamaFileType.ALL_F32
    assert field(written, "llama.context_length") == 4_400
    assert field(written, "llama.embedding_length") == shipped.d_model
    assert field(written, "llama.block_count") == shipped.n_layers
    assert field(written, "llama.feed_forward_length") == shipped.d_ff
    assert field(written, "llama.attention.head_count") == shipped.n_heads
    assert field(written, "llama.attention.head_count_kv") == shipped.n_kv_heads
    assert field(written, "llama.attention.key_length") == shipped.d_head
    assert field(written, "llama.attention.value_length") == shipped.d_head
    assert field(written, "llama.rope.dimension_count") == shipped.d_head
    assert field(written, "llama.vocab_size") == shipped.vocab_size
    assert field(written, "llama.attention.layer_norm_rms_epsilon") == pytest.approx(
        shipped.norm_eps
    )
    assert field(written, "tokenizer.ggml.model") == "no_vocab"


def test_every_llama_tensor_is_there_with_its_shape(shipped, written) -> None:
    d, v, f = shipped.d_model, shipped.vocab_size, shipped.d_ff
    q, kv = shipped.n_heads * shipped.d_head, shipped.n_kv_heads * shipped.d_head
    expected = {"token_embd.weight": (v, d), "output_norm.weight": (d,), "output.weight": (v, d)}
    for layer in range(shipped.n_layers):
        expected |= {
            f"blk.{layer}.attn_norm.weight": (d,),
            f"blk.{layer}.attn_q.weight": (q, d),
            f"blk.{layer}.attn_k.weight": (kv, d),
            f"blk.{layer}.attn_v.weight": (kv, d),
            f"blk.{layer}.attn_output.weight": (d, q),
            f"blk.{layer}.ffn_norm.weight": (d,),
            f"blk.{layer}.ffn_gate.weight": (f, d),
            f"blk.{layer}.ffn_up.weight": (f, d),
            f"blk.{layer}.ffn_down.weight": (d, f),
        }
    tensors = {t.name: t for t in written.tensors}
    assert set(tensors) == set(expected)
    for name, shape in expected.items():
        tensor = tensors[name]
        assert tensor.tensor_type == gguf.GGMLQuantizationType.F32, name
        # ggml's ne is numpy's shape reversed: ne[0] is the input width of a matrix
        assert tuple(int(n) for n in tensor.shape) == shape[::-1], name
        assert tensor.data.shape == shape, name


def test_the_weights_round_trip_from_the_sage_file(shipped, written) -> None:
    tensors = {t.name: np.asarray(t.data) for t in written.tensors}
    pairs = [("token_embd", "tok_embedding"), ("output", "output"), ("output_norm", "final_norm")]
    for layer in range(shipped.n_layers):
        blk, sage = f"blk.{layer}.", f"layers.{layer}."
        pairs += [
            (blk + "attn_norm", sage + "attn_norm"),
            (blk + "attn_q", sage + "wq"),
            (blk + "attn_k", sage + "wk"),
            (blk + "attn_v", sage + "wv"),
            (blk + "attn_output", sage + "wo"),
            (blk + "ffn_norm", sage + "ffn_norm"),
            (blk + "ffn_gate", sage + "w1"),
            (blk + "ffn_up", sage + "w3"),
            (blk + "ffn_down", sage + "w2"),
        ]
    assert llama_gguf.key_value_family(shipped) == int(Family.PITCH)
    for gguf_name, sage_name in pairs:
        expected = shipped.dequantized(sage_name)
        if sage_name.endswith((".wk", ".wv")):
            expected = expected[int(Family.PITCH)]  # the pitch family's key/value projection
        np.testing.assert_array_equal(tensors[gguf_name + ".weight"], expected, err_msg=gguf_name)
