#!/usr/bin/env bash
# The lab e2e suites of a cluster with IPv6, on one lab:
#
#   hack/e2e-dualstack.sh dual|ipv6
#
# A lab is brought up with --ip-family dual (or ipv6) in routing mode
# TRELLIS_LAB_ROUTING (default auto) by the first suite's harness and kept
# (TRELLIS_LAB_KEEP=1) for the second, then taken down:
#   1. the dual-stack suite (test/e2e/dualstack), whose routed tests run again
#      in the two other routing modes, the agents reconfigured live;
#   2. the NetworkPolicy truth tables and random differential test
#      (test/e2e/policy) over every family of the lab.
#
# Environment: GO, E2E_TIMEOUT (per suite, default 20m), DS_LAB_NAME (the
# lab's name, default the family), DS_POLICY_CASES (TestE2EPolicyRandom's
# cases, default 4) and the harness's TRELLIS_LAB_* settings (TRELLIS_LAB_BIN,
# TRELLIS_LAB_INSTALL, TRELLIS_LAB_IMAGE_TAR, ...). The exit status is
# non-zero when either suite fails; the second runs regardless.
set -uo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
E2E_TIMEOUT=${E2E_TIMEOUT:-20m}
fam=${1:-}
case $fam in dual|ipv6) ;; *) echo "usage: $0 dual|ipv6" >&2; exit 2 ;; esac
name=${DS_LAB_NAME:-$fam}
lab=${TRELLIS_LAB_BIN:-bin/trellis-lab}
mode=${TRELLIS_LAB_ROUTING:-auto}
start=$SECONDS rc=0
echo "== dual-stack e2e: --ip-family $fam --routing-mode $mode (lab $name)"
TRELLIS_LAB_NAME=$name TRELLIS_LAB_IP_FAMILY=$fam TRELLIS_LAB_ROUTING=$mode TRELLIS_LAB_KEEP=1 \
  $GO test -count=1 -tags e2e,dualstack -timeout "$E2E_TIMEOUT" -run '^TestE2E' -v ./test/e2e/dualstack/ || rc=1
echo "== dual-stack e2e: test/e2e/dualstack done after $((SECONDS - start)) s"
status=$("$lab" --name "$name" status 2>/dev/null || true) # whole, not piped: see hack/lab-demo.sh
if [[ $status == *"phase running"* ]]; then
  TRELLIS_LAB_NAME=$name TRELLIS_LAB_REUSE=1 TRELLIS_LAB_KEEP=1 \
    $GO test -count=1 -tags e2e -timeout "$E2E_TIMEOUT" -run '^TestE2EPolicy(TruthTables|Random)$' -v ./test/e2e/policy/ \
    -args -policy.cases="${DS_POLICY_CASES:-4}" || rc=1
  echo "== dual-stack e2e: test/e2e/policy (truth tables, random) done after $((SECONDS - start)) s"
else
  echo "== dual-stack e2e: no running lab $name for the policy suite" >&2
  rc=1
fi
"$lab" --name "$name" down >/dev/null || rc=1
echo "== dual-stack e2e: $fam, $((SECONDS - start)) s with the lab's up and down, exit $rc"
exit $rc
