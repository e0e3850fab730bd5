"""The Raspberry Pi builds, emulated: aarch64 binaries under qemu-aarch64 as a Pi 4 (cortex-a72:
NEON) and a Pi 5 (cortex-a76: NEON dot-product) must give exactly what the x86 build gives.

- The runner: `sage-edge-run --model MODEL --tokens 300 --seed 7 --events [--kv-memory int8]` of
  the aarch64 build (build/aarch64) prints the same bytes as the native build (build/native), with
  the f32 key/value memory and with the int8 one (whose attention runs on integer dot products).
- The Python package: in an emulated aarch64 CPython 3.11 (tools/aarch64_python.sh), the engine's
  logits over a real chorale are bit-identical to the x86 engine's, a seeded generation gives the
  same tokens and notes, and miditok/symusic decode the tokens to the same score.

MODEL is sage_edge/models/default.sage once it exists, else the tiny fixture. tests/run_all.sh
builds both CMake presets and runs tools/aarch64_python.sh before pytest; without them these tests
skip, unless the environment variable CI is set, where a missing piece fails. Other build trees:
SAGE_EDGE_BUILD_NATIVE, SAGE_EDGE_BUILD_AARCH64 (conftest.built_binary), SAGE_EDGE_AARCH64_PYTHON
(the directory tools/aarch64_python.sh made); another model: SAGE_EDGE_AARCH64_MODEL.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import built_binary, require

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / "sage_edge" / "models" / "default.sage"
MODEL = Path(
    os.environ.get(
        "SAGE_EDGE_AARCH64_MODEL",
        DEFAULT_MODEL if DEFAULT_MODEL.exists() else ROOT / "tests" / "data" / "tiny_q8_0.sage",
    )
).resolve()
TINY = MODEL.stat().st_size < 1_000_000 if MODEL.exists() else True
AARCH64_PYTHON = Path(
    os.environ.get("SAGE_EDGE_AARCH64_PYTHON", ROOT / "build" / "aarch64-python")
) / ("bin/python3.11")
SYSROOT = Path("/usr/aarch64-linux-gnu")  # the cross toolchain's C/C++ runtime
# The Pi's cores and the kernel path the engine must pick on each.
CPUS = {"cortex-a72": "neon", "cortex-a76": "neondot"}
RUNNER = "csrc/runner/sage-edge-run"


@pytest.fixture(scope="module")
def qemu() -> str:
    path = shutil.which("qemu-aarch64")
    require(path is not None, "qemu-aarch64 is missing: apt-get install qemu-user")
    return path


# ---- The runner ----

RUNNER_ARGS = ["--model", str(MODEL), "--tokens", "300", "--seed", "7", "--events"]
KV_MEMORIES = ("f32", "int8")


@pytest.fixture(scope="module")
def x86_events() -> dict[str, bytes]:
    events = {}
    for kv in KV_MEMORIES:
        result = subprocess.run(
            [str(built_binary(RUNNER)), *RUNNER_ARGS, "--kv-memory", kv],
            capture_output=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr.decode()
        assert result.stdout.count(b"\n") > 10
        events[kv] = result.stdout
    return events


@pytest.mark.parametrize("kv", KV_MEMORIES)
@pytest.mark.parametrize("cpu", CPUS)
def test_runner_prints_the_x86_bytes(qemu, x86_events, cpu, kv):
    runner = built_binary(RUNNER, "aarch64")
    result = subprocess.run(
        [qemu, "-L", str(SYSROOT), "-cpu", cpu, str(runner), *RUNNER_ARGS, "--kv-memory", kv],
        capture_output=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert f"kernel {CPUS[cpu]})" in result.stderr.decode()
    assert result.stdout == x86_events[kv]


# ---- The Python package ----

# Run by the x86 interpreter and by the emulated aarch64 one; saves what each computed.
PROBE = """
import sys
import numpy as np
from sage_edge import _engine
from sage_edge.engine import Engine, SamplingParams
from sage_edge.tokenizer import Tokenizer

model, chorale, out = sys.argv[1:4]
engine = Engine(model)
logits = engine.session(seed=0).feed(np.load(chorale), all_logits=True)
session = engine.session(seed=11)
session.feed([1])  # BOS
tokens = session.generate(GENERATE, SamplingParams(temperature=0.9, top_p=0.95))
events = np.array([(e.time, e.duration, e.pitch, e.velocity, e.program)
                   for e in session.pop_events()], dtype=np.float64).reshape(-1, 5)
score = Tokenizer.default().decode([1, *tokens])
notes = sorted((n.time, n.duration, n.pitch) for t in score.tracks for n in t.notes)
np.savez(out, logits=logits, tokens=np.array(tokens), events=events,
         notes=np.array(notes, dtype=np.int64).reshape(-1, 3), kernel=_engine.kernel())
"""
# Fewer tokens for a full-size model: qemu runs it at ~10-20 ms per token.
GENERATE = 200 if TINY else 128
CHORALE_TOKENS = 256


@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> tuple[Path, Path]:
    """The probe script and the token ids of a real chorale (its first CHORALE_TOKENS)."""
    from sage_edge.tokenizer import Tokenizer

    directory = tmp_path_factory.mktemp("aarch64")
    script = directory / "probe.py"
    script.write_text(PROBE.replace("GENERATE", str(GENERATE)))
    chorale = sorted((ROOT / "tests" / "data" / "chorales").glob("*.mid"))[0]
    ids = np.array(Tokenizer.default().encode(chorale)[:CHORALE_TOKENS], dtype=np.int64)
    np.save(directory / "chorale.npy", ids)
    return script, directory / "chorale.npy"


def run_probe(python: list[str], probe: tuple[Path, Path], out: Path, env=None) -> dict:
    script, chorale = probe
    result = subprocess.run(
        [*python, str(script), str(MODEL), str(chorale), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=out.parent,
    )
    assert result.returncode == 0, result.stderr
    with np.load(out) as saved:
        return {name: saved[name] for name in saved.files}


@pytest.fixture(scope="module")
def x86_probe(probe, tmp_path_factory) -> dict:
    try:
        from sage_edge import _engine  # noqa: F401
    except ImportError:
        require(False, "the x86 engine module is not built (pip install -e .)")
    out = tmp_path_factory.mktemp("x86") / "x86.npz"
    return run_probe([sys.executable], probe, out)


@pytest.mark.parametrize("cpu", CPUS)
def test_python_engine_matches_x86(qemu, probe, x86_probe, cpu, tmp_path):
    require(
        AARCH64_PYTHON.exists(),
        f"no emulated aarch64 Python at {AARCH64_PYTHON}: run bash tools/aarch64_python.sh",
    )
    env = {**os.environ, "QEMU_CPU": cpu}
    arm = run_probe([str(AARCH64_PYTHON)], probe, tmp_path / f"{cpu}.npz", env=env)
    assert str(arm["kernel"]) == CPUS[cpu]
    # Every kernel path is exact, so the logits are the same bits, not merely close.
    assert (
        arm["logits"].shape == x86_probe["logits"].shape == (CHORALE_TOKENS, arm["logits"].shape[1])
    )
    assert np.array_equal(arm["logits"].view(np.uint32), x86_probe["logits"].view(np.uint32))
    assert np.array_equal(arm["tokens"], x86_probe["tokens"])
    assert len(arm["tokens"]) == GENERATE
    assert np.array_equal(arm["events"], x86_probe["events"])
    assert np.array_equal(arm["notes"], x86_probe["notes"]) and len(arm["notes"]) > 0
