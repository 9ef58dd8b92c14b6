#!/usr/bin/env bash
# `make test`: every tier, in order, with the time each took.
#
#   hack/make-test.sh TARGET... -- LAB_TARGET
#
# The TARGETs (the tiers that need no lab) run one after another while the
# pinned lab binaries build beside them (hack/build-pinned.sh: ~13 minutes on
# a cold machine, instant when cached), at a lower CPU priority so that the
# tiers keep the machine and the build takes what they leave idle (module
# downloads, the kernel tier's waits). LAB_TARGET (the lab tier) runs once both
# are done. The build's output goes to $BIN/lab-binaries.log and is printed when
# the build ends; a failed build fails `make test` with that log. A failed tier
# stops everything, the background build included (the cache keeps only
# finished binaries). Environment: MAKE, BIN.
set -uo pipefail
cd "$(dirname "$0")/.."
MAKE=${MAKE:-make}
BIN=${BIN:-$PWD/bin}

tiers=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do tiers+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
lab_tier=${1:-}
[ ${#tiers[@]} -gt 0 ] && [ -n "$lab_tier" ] || { echo "usage: $0 TARGET... -- LAB_TARGET" >&2; exit 2; }

mkdir -p "$BIN"
log=$BIN/lab-binaries.log
start=$SECONDS
# Own session, so that stopping it reaches the go builds it runs.
setsid nice -n 10 hack/build-pinned.sh >"$log" 2>&1 &
build=$!
stop_build() { kill -- -"$build" 2>/dev/null; wait "$build" 2>/dev/null; }
trap 'stop_build; exit 130' INT TERM
echo "== make test: the pinned lab binaries build in the background (pid $build, log $log)"

times=()
run() { # TARGET: make it, record its time; exit (stopping the build) if it fails
  local t=$1 s=$SECONDS
  echo "== make test: $t"
  if ! "$MAKE" --no-print-directory "$t"; then
    echo "== make test: $t failed after $((SECONDS - s)) s" >&2
    stop_build
    exit 1
  fi
  times+=("$(printf '%-20s %5d s' "$t" $((SECONDS - s)))")
}

for t in "${tiers[@]}"; do run "$t"; done

waited=$SECONDS
if ! wait "$build"; then
  echo "== make test: the pinned lab binaries failed to build; $log:" >&2
  cat "$log" >&2
  exit 1
fi
cat "$log"
times+=("$(printf '%-20s %5d s' "(lab binaries)" $((SECONDS - waited)))")
trap - INT TERM

run "$lab_tier"

echo "== make test: passed in $((SECONDS - start)) s; time per step (\"(lab binaries)\": waiting for their build after the other tiers):"
printf '   %s\n' "${times[@]}"
