#!/usr/bin/env bash
# An emulated aarch64 CPython 3.11 with the sage_edge runtime package and its C++ engine
# cross-built for aarch64, to test the Python side of a Raspberry Pi deployment on an x86 machine.
#
#   bash tools/aarch64_python.sh            # set up (idempotent, cached under build/)
#   QEMU_CPU=cortex-a76 build/aarch64-python/bin/python3.11 -c 'import sage_edge.engine'
#
# What it does, each step skipped when its inputs have not changed:
#   1. Debian bookworm arm64 packages of CPython 3.11 (interpreter, standard library, headers) and
#      the C/C++ runtime, fetched with apt-get download into a private apt state (no
#      `dpkg --add-architecture`, no chroot, no binfmt) and unpacked with dpkg-deb -x into a sysroot.
#   2. The runtime dependencies from pyproject.toml (numpy, miditok, symusic, ...) as aarch64
#      manylinux wheels from PyPI, installed with `pip install --target --platform`.
#   3. sage_edge._engine cross-compiled with aarch64-linux-gnu-g++ against that CPython's headers
#      (CMake, cmake/aarch64-linux-gnu.cmake, build dir build/ci-aarch64-python), staged with a
#      copy of the sage_edge sources in build/aarch64-python/pkg.
#   4. A wrapper bin/python3.11 that runs the interpreter under qemu-aarch64 -L <sysroot>;
#      QEMU_CPU (default cortex-a72) picks the emulated core. It runs with -P -s: neither the
#      current directory nor the host's user site can shadow the staged package.
# Needs: g++-aarch64-linux-gnu, qemu-user, cmake, apt-get and dpkg-deb (Debian), network access to
# Debian's mirrors and PyPI on the first run. About 15 MB of .debs and 125 MB of wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=${SAGE_EDGE_AARCH64_PYTHON:-$root/build/aarch64-python}
module_build=${SAGE_EDGE_AARCH64_PYTHON_BUILD:-$root/build/ci-aarch64-python}
jobs=$(nproc 2>/dev/null || echo 2)
mkdir -p "$out"
log=$out/setup.log
: >"$log"
say() { printf '  aarch64-python: %s\n' "$*"; }
fail() {
    echo "aarch64-python: $* (log: $log)" >&2
    tail -n 30 "$log" >&2
    exit 1
}
for tool in aarch64-linux-gnu-g++ qemu-aarch64 apt-get dpkg-deb cmake; do
    command -v "$tool" >/dev/null || fail "$tool is missing (apt-get install g++-aarch64-linux-gnu qemu-user cmake)"
done

# ---- 1. CPython 3.11 for arm64 from Debian ----
debs="libc6 libgcc-s1 libstdc++6 zlib1g libexpat1 libffi8 libbz2-1.0 liblzma5 libssl3 libuuid1
libcrypt1 libsqlite3-0 libpython3.11-minimal libpython3.11-stdlib python3.11-minimal
libpython3.11-dev"
debs=$(echo $debs)
if [ "$(cat "$out/sysroot.stamp" 2>/dev/null)" != "$debs" ]; then
    say "downloading Debian arm64 packages: $debs"
    apt_state=$out/apt
    rm -rf "$apt_state" "$out/debs" "$out/sysroot"
    mkdir -p "$apt_state/lists/partial" "$apt_state/cache/archives/partial" "$out/debs"
    touch "$apt_state/status"
    apt_options=(-q -o APT::Architecture=arm64 -o APT::Architectures::=arm64
        -o Dir::State::Lists="$apt_state/lists" -o Dir::State::status="$apt_state/status"
        -o Dir::Cache="$apt_state/cache" -o APT::Sandbox::User=root)
    apt-get "${apt_options[@]}" update >>"$log" 2>&1 || fail "apt-get update (arm64 lists) failed"
    (cd "$out/debs" && apt-get "${apt_options[@]}" download $debs) >>"$log" 2>&1 \
        || fail "apt-get download failed"
    for deb in "$out"/debs/*.deb; do dpkg-deb -x "$deb" "$out/sysroot"; done
    # Debian's pyconfig.h dispatches on the compiler's target to <aarch64-linux-gnu/...>; put the
    # aarch64 one in its place so the include directory stands alone.
    cp "$out/sysroot/usr/include/aarch64-linux-gnu/python3.11/pyconfig.h" \
        "$out/sysroot/usr/include/python3.11/pyconfig.h"
    rm -rf "$apt_state" "$out/debs"
    echo "$debs" >"$out/sysroot.stamp"
fi
python_arm=$out/sysroot/usr/bin/python3.11

# ---- 2. The runtime dependencies as aarch64 wheels ----
requirements=$(python -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))')
if [ "$(cat "$out/site.stamp" 2>/dev/null)" != "$requirements" ]; then
    say "installing aarch64 wheels: $requirements"
    rm -rf "$out/site"
    # shellcheck disable=SC2086  # the requirements are one word each
    python -m pip install --quiet --no-warn-script-location --disable-pip-version-check \
        --target "$out/site" --implementation cp --python-version 3.11 --only-binary=:all: \
        --platform manylinux2014_aarch64 --platform manylinux_2_28_aarch64 \
        $requirements \
        >>"$log" 2>&1 || fail "pip install of the aarch64 wheels failed"
    echo "$requirements" >"$out/site.stamp"
fi

# ---- 3. sage_edge._engine for aarch64 ----
python -c 'import pybind11' 2>/dev/null || python -m pip install --quiet "pybind11>=2.12" >>"$log" 2>&1
say "cross-building sage_edge._engine in ${module_build#"$root"/}"
suffix=.cpython-311-aarch64-linux-gnu.so
cmake -S . -B "$module_build" -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake \
    -DCMAKE_BUILD_TYPE=Release -DSAGE_EDGE_PYTHON=ON -DSAGE_EDGE_TESTS=OFF \
    -DSAGE_EDGE_RUNNER=OFF -DSAGE_EDGE_EXAMPLES=OFF \
    -Dpybind11_DIR="$(python -m pybind11 --cmakedir)" \
    -DPython_INCLUDE_DIR="$out/sysroot/usr/include/python3.11" \
    -DPYTHON_MODULE_EXTENSION=$suffix >>"$log" 2>&1 || fail "cmake configure failed"
cmake --build "$module_build" --target _engine -j "$jobs" >>"$log" 2>&1 || fail "cmake build failed"

# Stage the package: the sources of this tree and the aarch64 module (the host's x86 module in
# sage_edge/, if any, has a suffix this interpreter ignores, but a staged copy keeps them apart).
rm -rf "$out/pkg"
mkdir -p "$out/pkg/sage_edge"
find sage_edge -maxdepth 1 -type f -name '*.py' -exec cp {} "$out/pkg/sage_edge/" \;
[ -d sage_edge/models ] && ln -s "$root/sage_edge/models" "$out/pkg/sage_edge/models"
cp "$module_build/csrc/python/_engine$suffix" "$out/pkg/sage_edge/"

# ---- 4. The wrapper ----
mkdir -p "$out/bin"
cat >"$out/bin/python3.11" <<EOF
#!/bin/sh
# aarch64 CPython 3.11 under qemu (made by tools/aarch64_python.sh); QEMU_CPU picks the core.
export PYTHONPATH="$out/pkg:$out/site\${PYTHONPATH:+:\$PYTHONPATH}"
exec qemu-aarch64 -L "$out/sysroot" -cpu "\${QEMU_CPU:-cortex-a72}" "$python_arm" -P -s "\$@"
EOF
chmod +x "$out/bin/python3.11"
"$out/bin/python3.11" -c 'import platform, sage_edge._engine as e; print("  aarch64-python: ok,", platform.machine(), "kernel", e.kernel())' \
    || fail "the emulated interpreter cannot import sage_edge._engine"
