#!/usr/bin/env bash
# Guest instructions per generated token of the aarch64 runner, counted under qemu-aarch64: the
# work per token that docs/deploy.md turns into a Cortex-A53 (Pi Zero 2 W / Pi 3) estimate.
#
#   bash tools/instructions_per_token.sh [FIRST LAST] [-- runner options]
#   e.g. bash tools/instructions_per_token.sh 560 600 -- --kv-memory int8
#
# Runs build/aarch64/csrc/runner/sage-edge-run (cmake --preset aarch64) on the shipped model
# twice, generating FIRST and LAST tokens (default 560 and 600: every layer's window is full from
# position 512 on), and prints (instructions(LAST) - instructions(FIRST)) / (LAST - FIRST), so that
# loading the model and starting the session cancel out. qemu's log gives the instructions: each
# translated block's guest instructions (-d in_asm) times the times it ran (-d exec, with nochain so
# every run is logged). The log is streamed through awk, never written (about 4 GB at 600 tokens).
# Needs qemu-user and the aarch64 sysroot of g++-aarch64-linux-gnu; QEMU_CPU defaults to
# cortex-a53 (the emulated core does not change the count for this code; it picks the kernel path).
set -euo pipefail
cd "$(dirname "$0")/.."
first=${1:-560}
last=${2:-600}
shift $(($# >= 2 ? 2 : $#))
[[ ${1:-} == -- ]] && shift
runner=build/aarch64/csrc/runner/sage-edge-run
[[ -x $runner ]] || { echo "build $runner first: cmake --preset aarch64 && cmake --build --preset aarch64" >&2; exit 2; }

count() {  # guest instructions of one run generating $1 tokens
    QEMU_CPU=${QEMU_CPU:-cortex-a53} qemu-aarch64 -L /usr/aarch64-linux-gnu \
        -d in_asm,exec,nochain -D /dev/stderr \
        "$runner" --model sage_edge/models/default.sage --tokens "$1" --seed 1 "${@:2}" \
        2>&1 >/dev/null | awk '
        /^IN:/ { block = 1; pc = ""; n = 0; next }
        block && /^0x[0-9a-f]+:/ { if (pc == "") pc = substr($1, 1, length($1) - 1); n++; next }
        block && /^$/ { if (pc != "") { sub(/^0x0*/, "", pc); size[pc] = n }; block = 0; next }
        /^Trace / { split($0, f, "/"); pc = f[2]; sub(/^0*/, "", pc); total += size[pc] }
        END { printf "%d\n", total }'
}

a=$(count "$first" "$@")
b=$(count "$last" "$@")
echo "instructions: $a at $first tokens, $b at $last tokens"
echo "per token: $(((b - a) / (last - first)))"
