"""Plant known bugs one at a time in a scratch copy of the repository; report which tests miss.

    python tools/mutate.py                 # every mutant (10-15 minutes on 2 cores)
    python tools/mutate.py --only alibi    # mutants whose name contains "alibi"
    python tools/mutate.py --list

A benchmark-like check of the test suite, run by hand before and after a large change (not in
CI). It copies the working tree's files (tracked and untracked, not ignored) to a temporary
directory, builds the C++ tests and the Python module there once, checks that the chosen tests
pass on the unchanged copy, then for each mutant replaces one piece of code, rebuilds
(incrementally), runs the tests that should catch it and puts the code back. A mutant whose text
is no longer in the source is reported as "stale" so that the list is kept up to date.

The Python tests run against the scratch copy's own ``sage_edge`` and ``_engine`` (the editable
install's import hook is removed for them), so the checkout and the installed module are never
touched.
"""

from __future__ import annotations

import argparse
import os
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
SAMPLER = "csrc/engine/sampler.cpp"
LOADER = "csrc/engine/model_file.cpp"
DETOKENIZER = "csrc/engine/detokenizer.cpp"
GRAMMAR = "csrc/engine/grammar.cpp"
FORMAT = "sage_edge/format.py"
REFERENCE_TEST = "test_reference"  # the forward-pass mutants must be caught by this one alone
FORMAT_TESTS = ("tests/test_format.py",)

MUTANTS = (
    # The forward pass (issue 18: only the Python parity tests used to see these).
    Mutant(
        "alibi_slope_per_kv_group",
        SESSION,
        "model_.weights.alibi_slopes[i];",
        "model_.weights.alibi_slopes[g];",
        REFERENCE_TEST,
    ),
    Mutant(
        "alibi_distance_reversed",
        SESSION,
        "static_cast<float>(window - 1 - j);",
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
        "? static_cast<int>(model_.vocab[chunk[t]].family)",
        "? 0 * static_cast<int>(model_.vocab[chunk[t]].family)",
        REFERENCE_TEST,
    ),
    Mutant(
        "attention_scale_dropped",
        SESSION,
        "dot(q, k, dh) * inv_sqrt_dh",
        "dot(q, k, dh)",
        REFERENCE_TEST,
    ),
    Mutant(
        "ffn_norm_gain_ignored",
        SESSION,
        "rmsnorm(x, w.ffn_norm, state_.u.data());",
        "rmsnorm(x, w.attn_norm, state_.u.data());",
        REFERENCE_TEST,
    ),
    Mutant(
        "swiglu_gate_and_up_swapped",
        SESSION,
        "silu_f32(state_.gate[i]) * state_.up[i]",
        "silu_f32(state_.up[i]) * state_.gate[i]",
        REFERENCE_TEST,
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


def run(command: list[str], cwd: Path, env: dict | None = None, show_errors=False) -> bool:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
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
    """Which of the mutant's test suites fail: "ctest", "pytest", both or neither."""
    failing = []
    if mutant.ctest and not run(
        ["ctest", "--test-dir", "build", "-R", mutant.ctest, "-j", JOBS], scratch
    ):
        failing.append("ctest")
    if mutant.pytest:
        env = {**os.environ, "PYTHONPATH": str(scratch)}
        if not run([sys.executable, "-c", PYTEST, *mutant.pytest], scratch, env):
            failing.append("pytest")
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
                failing = failing_suites(scratch, m) if build(scratch) else ["build"]
                outcome = "caught by " + " and ".join(failing) if failing else "SURVIVED"
                if not failing:
                    survived.append(m.name)
                path.write_text(original)
            tests = " + ".join(filter(None, [m.ctest and f"ctest -R {m.ctest}", *m.pytest]))
            print(f"{m.name:45} {outcome:28} {tests}", flush=True)
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
