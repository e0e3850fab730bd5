"""Plant known bugs one at a time in a scratch copy of the repository; report which tests miss.

    python tools/mutate.py                 # every mutant (10-15 minutes on 2 cores)
    python tools/mutate.py --only alibi    # mutants whose name contains "alibi"
    python tools/mutate.py --list

A benchmark-like check of the test suite, run by hand before and after a large change (not in
CI). It copies the working tree's files (tracked and untracked, not ignored) to a temporary
directory, builds the C++ tests and the Python module there once, checks that the chosen tests
pass on the unchanged copy, then for each mutant replaces one piece of code, rebuilds
(incrementally), runs the tests that should catch it and puts the code back. A mutant whose text
is no longer in the source once, or that no longer compiles, is reported as "stale" so that the
list is kept up to date.

The Python tests run against the scratch copy's own ``sage_edge`` and ``_engine`` (the editable
install's import hook is removed for them), so the checkout and the installed module are never
touched.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pybind11  # the build dependency pip would provide

ROOT = Path(__file__).resolve().parents[1]
JOBS = "2"


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    old: str
    new: str
    ctest: str = ""  # a ctest -R regex; "" runs no C++ test
    pytest: tuple[str, ...] = ()  # pytest node ids or files


SESSION = "csrc/engine/session.cpp"
KERNELS_SCALAR = "csrc/kernels/kernels_scalar.cpp"
KERNELS_X86 = "csrc/kernels/kernels_x86_impl.h"  # the AVX2 and AVX-512 paths
SAMPLER = "csrc/engine/sampler.cpp"
LOADER = "csrc/engine/model_file.cpp"
DETOKENIZER = "csrc/engine/detokenizer.cpp"
GRAMMAR = "csrc/engine/grammar.cpp"
FORMAT = "sage_edge/format.py"
REFERENCE_TEST = "test_reference"  # the forward-pass mutants must be caught by this one alone
KERNELS_TEST = "test_kernels"
FORMAT_TESTS = ("tests/test_format.py",)

MUTANTS = (
    # The forward pass (issue 18: only the Python parity tests used to see these). What the session
    # computes and hands to the kernels is planted in session.cpp, so every kernel path gets the
    # bug; what a kernel computes is planted in the scalar reference, which test_reference runs
    # beside the other paths (and whose bits the SIMD paths must reproduce, test_kernels).
    Mutant(
        "alibi_slope_per_kv_group",
        KERNELS_SCALAR,
        "dot * a.scale - a.slopes[i] * distance",
        "dot * a.scale - a.slopes[0] * distance",
        REFERENCE_TEST,
    ),
    Mutant(
        "alibi_slopes_indexed_by_kv_group",
        SESSION,
        "a.slopes = model_.weights.alibi_slopes + first_head;",
        "a.slopes = model_.weights.alibi_slopes + g;",
        REFERENCE_TEST,
    ),
    Mutant(
        "alibi_distance_reversed",
        KERNELS_SCALAR,
        "static_cast<float>(a.window - 1 - j);",
        "static_cast<float>(j);",
        REFERENCE_TEST,
    ),
    Mutant(
        "window_one_short_when_ring_full",
        SESSION,
        "std::min<uint64_t>(position + 1, memory.horizon)",
        "std::min<uint64_t>(position + 1, memory.horizon - 1)",
        REFERENCE_TEST,
    ),
    Mutant(
        "askv_always_family_0",
        SESSION,
        "const bool per_family = config_.attention == Attention::Askv;",
        "const bool per_family = false;",
        REFERENCE_TEST,
    ),
    Mutant(
        "attention_scale_dropped",
        SESSION,
        "a.scale = 1.0f / std::sqrt(static_cast<float>(dh));",
        "a.scale = 1.0f;",
        REFERENCE_TEST,
    ),
    Mutant(
        "ffn_norm_gain_ignored",
        SESSION,
        "rmsnorm(x + t * d, w.ffn_norm, u + t * d);",
        "rmsnorm(x + t * d, w.attn_norm, u + t * d);",
        REFERENCE_TEST,
    ),
    Mutant(
        "swiglu_gate_and_up_swapped",
        KERNELS_SCALAR,
        "gate[i] = (gate[i] / (1.0f + exp_f32(-gate[i]))) * up[i];",
        "gate[i] = (up[i] / (1.0f + exp_f32(-up[i]))) * gate[i];",
        REFERENCE_TEST,
    ),
    # A SIMD path that stops agreeing with the scalar reference (here only on the keys it scores
    # eight at a time). x86 only: where the file is not compiled, this mutant survives.
    Mutant(
        "x86_alibi_slope_per_kv_group",
        KERNELS_X86,
        "slope[h] = _mm256_set1_ps(a.slopes[h0 + h]);",
        "slope[h] = _mm256_set1_ps(a.slopes[h0]);",
        f"{KERNELS_TEST}|{REFERENCE_TEST}",
    ),
    # Sampling.
    Mutant(
        "top_p_boundary_exclusive",
        SAMPLER,
        "if (mass >= target) break;",
        "if (mass > target) break;",
        "test_sampler",
    ),
    # The loader (C++) and the reader (Python).
    Mutant(
        "q8_0_scale_finiteness_unchecked",
        LOADER,
        "ok = finite_at(36 * b);",
        "ok = true;",
        "fuzz_loader",
    ),
    Mutant(
        "q8_0_value_minus_128_unchecked",
        LOADER,
        "ok = p[36 * b + 4 + i] != 0x80;",
        "ok = true;",
        "fuzz_loader",
    ),
    Mutant(
        "checksum_not_verified",
        LOADER,
        "if (crc32(data, size - 4) != stored_crc)",
        "if (false)",
        "fuzz_loader",
    ),
    Mutant(
        "q4_scale_finiteness_unchecked",
        LOADER,
        "for (uint64_t b = 0; b < rows * blocks && ok; ++b) ok = finite_at(20 * b);",
        "",
        "fuzz_loader",
    ),
    Mutant(
        "ticks_per_quarter_unbounded",
        LOADER,
        "tpq >= 1 && tpq <= kMaxTicksPerQuarter",
        "tpq >= 1",
        "fuzz_loader",
    ),
    Mutant(
        "mha_kv_heads_unchecked_python",
        FORMAT,
        'if m.attention == "mha" and m.n_kv_heads != m.n_heads:',
        "if False:",
        pytest=FORMAT_TESTS,
    ),
    Mutant(
        "python_scale_finiteness_unchecked",
        FORMAT,
        'if not np.isfinite(tensor.data["scale"]).all():',
        "if False:",
        pytest=FORMAT_TESTS,
    ),
    Mutant(
        "python_q4_scale_finiteness_unchecked",
        FORMAT,
        'if not np.isfinite(tensor.data["scale"]).all():',
        'if tensor.dtype == "q8_0" and not np.isfinite(tensor.data["scale"]).all():',
        pytest=FORMAT_TESTS,
    ),
    Mutant(
        "python_ticks_per_quarter_unbounded",
        FORMAT,
        '"ticks_per_quarter", m.ticks_per_quarter, 1, MAX_TICKS_PER_QUARTER',
        '"ticks_per_quarter", m.ticks_per_quarter, 1, 2**32 - 1',
        pytest=FORMAT_TESTS,
    ),
    # Turning tokens into notes and keeping the stream decodable.
    Mutant(
        "detokenizer_duration_off_by_one_tick",
        DETOKENIZER,
        "static_cast<double>(info.a) / ticks_per_quarter_",
        "static_cast<double>(info.a + 1) / ticks_per_quarter_",
        "test_detokenizer",
        ("tests/test_engine.py::test_events_match_the_tokenizer_decoding",),
    ),
    Mutant(
        "grammar_bar_length_ignores_time_signature",
        GRAMMAR,
        "bar_ticks_ = bar_length(info.a, info.b, ticks_per_quarter_);",
        "bar_ticks_ = bar_length(4, 4, ticks_per_quarter_);",
        "test_grammar",
    ),
    Mutant(
        "detokenizer_time_signature_ignored",
        DETOKENIZER,
        "if (ticks > 0)",
        "if (ticks < 0)",
        "test_detokenizer",
    ),
)


def copy_tree(destination: Path, commit: str | None) -> None:
    if commit:
        archive = subprocess.run(
            ["git", "archive", commit], cwd=ROOT, capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(destination)], input=archive.stdout, check=True)
        return
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def run(command: list[str], cwd: Path, show_errors=False) -> bool:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0 and show_errors:
        print((result.stdout + result.stderr)[-3000:])
    return result.returncode == 0


def build(scratch: Path, show_errors=False) -> bool:
    ok = run(["cmake", "--build", "build", "-j", JOBS], scratch, show_errors=show_errors)
    if ok:  # the scratch copy's own Python module, where its sage_edge package imports it
        for module in (scratch / "build/csrc/python").glob("_engine*.so"):
            shutil.copy2(module, scratch / "sage_edge" / module.name)
    return ok


# pytest with the scratch copy's sage_edge: the editable install's import hook would otherwise
# send `import sage_edge` back to the checkout.
PYTEST = (
    "import sys, pytest; "
    "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in type(f).__module__]; "
    "sys.exit(pytest.main(['-q', '-x', '-p', 'no:cacheprovider', *sys.argv[1:]]))"
)


def failing_suites(scratch: Path, mutant: Mutant) -> list[str]:
    """The mutant's tests that fail, by name (ctest's tests, pytest's node ids)."""
    failing = []
    if mutant.ctest:
        ctest = ["ctest", "--test-dir", "build", "-R", mutant.ctest, "-j", JOBS]
        result = subprocess.run(ctest, cwd=scratch, capture_output=True, text=True)
        if result.returncode != 0:  # ctest lists them as "  3 - test_reference (Failed)"
            names = re.findall(r"^\s*\d+ - (\S+) \(", result.stdout, re.MULTILINE)
            failing += names or ["ctest"]
    if mutant.pytest:
        env = {**os.environ, "PYTHONPATH": str(scratch)}
        pytest = [sys.executable, "-c", PYTEST, *mutant.pytest]
        result = subprocess.run(pytest, cwd=scratch, env=env, capture_output=True, text=True)
        if result.returncode != 0:  # pytest -q lists them as "FAILED tests/x.py::test_y - ..."
            names = re.findall(r"^(?:FAILED|ERROR) (\S+)", result.stdout, re.MULTILINE)
            failing += names or ["pytest"]
    return failing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", default="", help="comma-separated parts of names: run only the mutants they match"
    )
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--commit", help="mutate this commit instead of the working tree")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copy")
    args = parser.parse_args(argv)
    wanted = args.only.split(",")
    mutants = [m for m in MUTANTS if any(part in m.name for part in wanted)]
    if args.list:
        for m in mutants:
            print(f"{m.name:45} {m.path}")
        return 0

    scratch = Path(tempfile.mkdtemp(prefix="sage-mutate-"))
    start = time.monotonic()
    try:
        copy_tree(scratch, args.commit)
        configure = ["cmake", "-S", ".", "-B", "build", "-DCMAKE_BUILD_TYPE=Release"]
        configure += [
            "-DSAGE_EDGE_PYTHON=ON",
            "-DSAGE_EDGE_RUNNER=OFF",  # what the mutants' tests do not use
            "-DSAGE_EDGE_EXAMPLES=OFF",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DPython_EXECUTABLE={sys.executable}",
        ]
        if not (run(configure, scratch, show_errors=True) and build(scratch, show_errors=True)):
            print(f"the unchanged copy does not build (in {scratch})")
            return 2
        groups = {(m.ctest, m.pytest) for m in mutants}
        broken = [g for g in groups if failing_suites(scratch, Mutant("", "", "", "", *g))]
        if broken:
            print(f"tests fail on the unchanged copy, fix them first: {broken}")
            return 2

        survived, stale = [], []
        for m in mutants:
            path = scratch / m.path
            original = path.read_text()
            if original.count(m.old) != 1:
                outcome = "stale (text not found once)"
                stale.append(m.name)
            else:
                path.write_text(original.replace(m.old, m.new))
                if not build(scratch):  # a mutant the compiler refuses tests nothing
                    outcome = "stale (does not build)"
                    stale.append(m.name)
                elif failing := failing_suites(scratch, m):
                    outcome = "caught by " + " and ".join(failing)
                else:
                    outcome = "SURVIVED"
                    survived.append(m.name)
                path.write_text(original)
            tests = " + ".join(filter(None, [m.ctest and f"ctest -R {m.ctest}", *m.pytest]))
            print(f"{m.name:42} {outcome}\n{'':42} tests: {tests}", flush=True)
        build(scratch)
        planted = len(mutants) - len(stale)
        print(
            f"\n{planted - len(survived)} of {planted} planted mutants caught"
            f" ({len(stale)} stale) in {time.monotonic() - start:.0f} s"
        )
        return 1 if survived or stale else 0
    finally:
        if args.keep:
            print(f"scratch copy kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
