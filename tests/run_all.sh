#!/usr/bin/env bash
# Installs the test requirements and runs every test of the project: linters, the C++ tests
# (Release, ASan+UBSan, and aarch64 under qemu for the Pi 4 and Pi 5 cores), then pytest.
# This is the README's test command; .ci/run runs it after installing system packages.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc 2>/dev/null || echo 2)
step() { printf '\n==> %s\n' "$*"; }

step "Python requirements (torch pinned: an unpinned torch pulls a multi-GB CUDA build)"
python -m pip install --quiet torch==2.13.0
python -m pip install --quiet -e ".[test]"

step "ruff"
ruff check .
ruff format --check .

step "clang-format"
git ls-files -co --exclude-standard 'csrc/*.h' 'csrc/*.cpp' 'examples/*.c' 'examples/*.h' \
    | xargs -r clang-format --dry-run -Werror

step "C++ tests, Release"
cmake -S . -B build/ci-release -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/ci-release -j "$jobs"
ctest --test-dir build/ci-release --output-on-failure

step "C++ tests, Debug with AddressSanitizer and UndefinedBehaviorSanitizer"
cmake -S . -B build/ci-asan -DCMAKE_BUILD_TYPE=Debug -DSAGE_EDGE_SANITIZE=ON >/dev/null
cmake --build build/ci-asan -j "$jobs"
ctest --test-dir build/ci-asan --output-on-failure

if command -v aarch64-linux-gnu-g++ >/dev/null && command -v qemu-aarch64 >/dev/null; then
    step "C++ tests, aarch64 cross-build under qemu (Pi 4: cortex-a72, Pi 5: cortex-a76)"
    cmake -S . -B build/ci-aarch64 -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake \
        -DCMAKE_BUILD_TYPE=Release -DSAGE_EDGE_QEMU_CPU=cortex-a72 >/dev/null
    cmake --build build/ci-aarch64 -j "$jobs"
    SAGE_EDGE_EXPECT_KERNEL=neon ctest --test-dir build/ci-aarch64 --output-on-failure
    cmake -S . -B build/ci-aarch64 -DSAGE_EDGE_QEMU_CPU=cortex-a76 >/dev/null
    SAGE_EDGE_EXPECT_KERNEL=neondot ctest --test-dir build/ci-aarch64 --output-on-failure
    # -- Raspberry Pi deployment (docs/deploy.md): an emulated aarch64 CPython 3.11 with the engine
    # module, used by tests/test_aarch64.py (which also byte-compares build/ci-aarch64's runner
    # with build/ci-release's under qemu) during pytest below. --
    step "aarch64 CPython with the engine module (tools/aarch64_python.sh)"
    bash tools/aarch64_python.sh
    cmake --list-presets=all >/dev/null  # CMakePresets.json parses
    # -- end of the Raspberry Pi deployment step --
elif [ -n "${CI:-}" ]; then
    echo "aarch64 toolchain missing: apt-get install g++-aarch64-linux-gnu qemu-user" >&2
    exit 1
else
    step "SKIPPED aarch64 tests: apt-get install g++-aarch64-linux-gnu qemu-user to run them"
fi

step "pytest"
python -m pytest -q
