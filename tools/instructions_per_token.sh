#!/usr/bin/env bash
# Guest instructions per generated token of the aarch64 runner, counted under qemu-aarch64: the
# work per token that docs/deploy.md turns into a Cortex-A53 (Pi Zero 2 W / Pi 3) estimate.
#
#   bash tools/instructions_per_token.sh [--by-function] [FIRST LAST] [-- runner options]
#   e.g. bash tools/instructions_per_token.sh 560 600 -- --kv-memory int8
#
# Runs build/aarch64/csrc/runner/sage-edge-run (cmake --preset aarch64) on the shipped model
# twice, generating FIRST and LAST tokens (default 560 and 600: every layer's window is full from
# position 512 on), and prints (instructions(LAST) - instructions(FIRST)) / (LAST - FIRST), so that
# loading the model and starting the session cancel out. qemu's log gives the instructions: each
# translated block's guest instructions (-d in_asm) times the times it ran (-d exec, with nochain so
# every run is logged). The log is streamed through awk, never written (about 4 GB at 600 tokens).
# With --by-function it also prints the 15 functions that take the most instructions per token and
# their share (each block counted in the function its first instruction lies in, by the runner's
# symbols, aarch64-linux-gnu-nm; qemu-user loads the position-independent runner at 0x5500000000).
# Needs qemu-user and the aarch64 sysroot of g++-aarch64-linux-gnu; QEMU_CPU defaults to
# cortex-a53 (the emulated core does not change the count for this code; it picks the kernel path:
# cortex-a76 for the Pi 5's neondot).
set -euo pipefail
cd "$(dirname "$0")/.."
by_function=0
[[ ${1:-} == --by-function ]] && { by_function=1; shift; }
first=${1:-560}
last=${2:-600}
shift $(($# >= 2 ? 2 : $#))
[[ ${1:-} == -- ]] && shift
runner=build/aarch64/csrc/runner/sage-edge-run
[[ -x $runner ]] || { echo "build $runner first: cmake --preset aarch64 && cmake --build --preset aarch64" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# "address name" of every function, by address, for the per-function counts; past the runner's
# end (_end) lie the shared libraries
aarch64-linux-gnu-nm -C -n --defined-only "$runner" | awk '
    $2 ~ /^[tT]$/ { a = $1; $1 = $2 = ""; sub(/^ +/, ""); print a, $0 }
    $3 == "_end" { print $1, "(the shared libraries)" }' >"$work/symbols"

count() {  # guest instructions of one run generating $1 tokens; per function into $work/$1
    QEMU_CPU=${QEMU_CPU:-cortex-a53} qemu-aarch64 -L /usr/aarch64-linux-gnu \
        -d in_asm,exec,nochain -D /dev/stderr \
        "$runner" --model sage_edge/models/default.sage --tokens "$1" --seed 1 "${@:2}" \
        2>&1 >/dev/null | awk -v symbols="$work/symbols" -v out="$work/$1" '
        function hex(s,    i, v) { v = 0; for (i = 1; i <= length(s); i++) v = v * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1; return v }
        function function_of(a,    lo, hi, mid) {  # the last symbol at or below a
            if (a < addr[1]) return "(before the runner)"
            lo = 1; hi = n_symbols
            while (lo < hi) { mid = int((lo + hi + 1) / 2); if (addr[mid] <= a) lo = mid; else hi = mid - 1 }
            return name[lo]
        }
        BEGIN { while ((getline line < symbols) > 0) { n_symbols++; i = index(line, " ")
                addr[n_symbols] = hex(substr(line, 1, i - 1)) + hex("5500000000"); name[n_symbols] = substr(line, i + 1) } }
        /^IN:/ { block = 1; pc = ""; n = 0; next }
        block && /^0x[0-9a-f]+:/ { if (pc == "") pc = substr($1, 1, length($1) - 1); n++; next }
        block && /^$/ { if (pc != "") { sub(/^0x0*/, "", pc); size[pc] = n }; block = 0; next }
        /^Trace / { split($0, f, "/"); pc = f[2]; sub(/^0*/, "", pc); total += size[pc]; runs[pc]++ }
        END {
            for (pc in runs) by[function_of(hex(pc))] += size[pc] * runs[pc]
            for (fn in by) printf "%d\t%s\n", by[fn], fn > out
            printf "%d\n", total
        }'
}

a=$(count "$first" "$@")
b=$(count "$last" "$@")
echo "instructions: $a at $first tokens, $b at $last tokens"
echo "per token: $(((b - a) / (last - first)))"
if ((by_function)); then
    echo "per token by function (the most first):"
    awk -F'\t' -v tokens=$((last - first)) -v total=$((b - a)) '
        FNR == NR { before[$2] = $1; next }
        { d = ($1 - before[$2]) / tokens; if (d > 0) printf "%10.0f %5.1f %%  %s\n", d, 100 * d * tokens / total, $2 }' \
        "$work/$first" "$work/$last" | sort -rn | head -15
fi
