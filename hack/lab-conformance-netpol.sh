#!/usr/bin/env bash
# make conformance-netpol: the upstream Kubernetes NetworkPolicy e2e specs
# (e2e.test v1.37.2, --ginkgo.focus=Netpol, SCTP skipped: no SCTP sockets in
# this kernel) against a lab; prints the pass/fail count. Reuses a running lab,
# otherwise brings one up and removes it afterwards.
set -uo pipefail
LAB=$1 E2E=$2
# Its own lab instance, so a demo or someone else's lab is never disturbed.
export TRELLIS_LAB_NAME=${TRELLIS_LAB_NAME:-netpol}
FOCUS=${NETPOL_FOCUS:-Netpol}
SKIP=${NETPOL_SKIP:-SCTP}
owned=0
status=$("$LAB" status 2>/dev/null || true) # whole, not piped: see hack/lab-demo.sh
if [[ $status != *"phase running"* ]]; then
  "$LAB" up --nodes "${LAB_NODES:-3}" --subnets "${LAB_SUBNETS:-2}" || exit 1
  owned=1
fi
out=${TRELLIS_CACHE:-/var/cache/trellis}/logs/conformance-netpol-$(date +%Y%m%d-%H%M%S)
mkdir -p "$out"
echo "== e2e.test --ginkgo.focus=$FOCUS --ginkgo.skip=$SKIP (log: $out/e2e.log)"
start=$SECONDS
"$E2E" --kubeconfig="$("$LAB" kubeconfig)" --provider=local \
  --ginkgo.focus="$FOCUS" --ginkgo.skip="$SKIP" --ginkgo.timeout=4h --ginkgo.no-color \
  --ginkgo.junit-report="$out/junit.xml" --report-dir="$out" >"$out/e2e.log" 2>&1
rc=$?
echo "== finished in $((SECONDS - start))s, exit $rc"
grep -E '^(Ran [0-9]+ of|SUCCESS!|FAIL!)' "$out/e2e.log" | tail -3
grep -E '^\s*\[FAIL\]' "$out/e2e.log" | sort -u | head -60
[ $owned = 1 ] && "$LAB" down
exit $rc
