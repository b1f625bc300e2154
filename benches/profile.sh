#!/usr/bin/env bash
# Where Kiln's time goes in one phase of `kiln bench`: perf samples bucketed by the kind of work.
#
#   benches/profile.sh MODEL_DIR prefill|decode [BACKEND] [KILN]
#
# prefill: one 512-token call; decode: 128 one-token calls. BACKEND defaults to jit, KILN to
# target/release/kiln. Samples of the bench's own setup (compiling the spec, the read-bandwidth
# probe) are counted apart and left out of the percentages. Needs `perf` (developer-only).
set -euo pipefail
dir=${1:?model dir}
phase=${2:?prefill or decode}
backend=${3:-jit}
kiln=${4:-$(dirname "$0")/../target/release/kiln}
case $phase in
  prefill) flags=(--prefill 512 --decode 1 --warmup 0) ;;
  decode) flags=(--prefill 1 --decode 128 --warmup 1) ;;
  *) echo "phase must be prefill or decode" >&2; exit 2 ;;
esac
data=$(mktemp /tmp/kiln-profile.XXXXXX)
trap 'rm -f "$data"' EXIT
perf record -q -o "$data" -F 999 "$kiln" bench "$dir" --backend "$backend" --reps 1 "${flags[@]}" >/dev/null 2>&1
perf report -i "$data" --stdio --no-children --sort dso,sym -F overhead,dso,sym --percent-limit 0 2>/dev/null |
  awk -v phase="$phase" -v backend="$backend" '
    /^#/ || NF < 3 { next }
    {
      pct = $1; sub(/%/, "", pct); line = $0
      if (line ~ /read_bandwidth|sum_avx512/) k = "setup"
      else if (line ~ /cranelift|regalloc2|kiln_passes|kiln_frontend|memory_plan/) k = "setup"
      else if (line ~ /gemm_/) k = "products: gemm tiles"
      else if (line ~ /matvec|interp::matmul/) k = "products: matrix-vector / interpreter loops"
      else if (line ~ /\[JIT\]/) k = "compiled kernels"
      else if (line ~ /interp::(kernel|elementwise|reduce)/) k = "interpreted kernels"
      else if (line ~ /memmove|memcpy|memset|strided_copy|write_at|shape_ops/) k = "data movement (copies, slices, concat)"
      else if (line ~ /team::helper/) k = "idle: decode team helpers spinning between loops"
      else if (line ~ /\[kernel/ || line ~ /sched_yield|futex|rayon/) k = "OS, page faults, thread wake-ups"
      else k = "executor (plan walk, row bases, allocation)"
      sum[k] += pct
      if (k != "setup") total += pct
    }
    END {
      printf "%s %s, share of samples outside setup:\n", backend, phase
      for (k in sum) if (k != "setup") printf "  %6.1f%%  %s\n", 100 * sum[k] / total, k | "sort -rn"
    }'
