#!/usr/bin/env bash
# Installs the test requirements and runs every test of the project: linters, the C++ tests
# (Release, ASan+UBSan, and aarch64 under qemu for the Pi 4 and Pi 5 cores), then pytest.
# This is the README's test command; .ci/run runs it after installing system packages.
set -euo pipefail
cd "$(dirname "$0")/.."
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

# The C++ builds are the CMake presets (CMakePresets.json): build/native, build/asan, build/aarch64,
# the folders the pytest tests take their binaries from (tests/conftest.py, built_binary).
step "C++ tests, Release"
cmake --preset native >/dev/null
cmake --build --preset native
ctest --preset native

step "C++ tests, Debug with AddressSanitizer and UndefinedBehaviorSanitizer"
cmake --preset asan >/dev/null
cmake --build --preset asan
ctest --preset asan

if command -v aarch64-linux-gnu-g++ >/dev/null && command -v qemu-aarch64 >/dev/null; then
    step "C++ tests, aarch64 cross-build under qemu (Pi 4: cortex-a72, Pi 5: cortex-a76, Pi Zero 2 W / Pi 3: cortex-a53)"
    cmake --preset aarch64 >/dev/null
    cmake --build --preset aarch64
    for core in a72 a76 a53; do
        ctest --preset "aarch64-$core"
    done
    # -- Raspberry Pi deployment (docs/deploy.md): an emulated aarch64 CPython 3.11 with the engine
    # module, used by tests/test_aarch64.py (which also byte-compares build/aarch64's runner
    # with build/native's under qemu) during pytest below. --
    step "aarch64 CPython with the engine module (tools/aarch64_python.sh)"
    bash tools/aarch64_python.sh
    # -- end of the Raspberry Pi deployment step --
elif [ -n "${CI:-}" ]; then
    echo "aarch64 toolchain missing: apt-get install g++-aarch64-linux-gnu qemu-user" >&2
    exit 1
else
    step "SKIPPED aarch64 tests: apt-get install g++-aarch64-linux-gnu qemu-user to run them"
fi

step "pytest"
python -m pytest -q
