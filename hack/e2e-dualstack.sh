#!/usr/bin/env bash
# The lab e2e suites of a cluster with IPv6, one lab per routing mode, in turn:
#
#   hack/e2e-dualstack.sh FAMILY MODE...     FAMILY dual or ipv6; MODE auto, native or vxlan
#
# For each mode a lab is brought up with --ip-family FAMILY --routing-mode MODE
# (by the first suite's harness, kept with TRELLIS_LAB_KEEP=1), the suites
# run against it, and it is taken down. In the first mode given: the whole
# dual-stack suite (test/e2e/dualstack) and the NetworkPolicy truth tables and
# random differential test (test/e2e/policy) over every family of the lab. In
# the other modes only what depends on the routing mode: the pod truth
# tables, node to pod, Services across nodes and full-size UDP.
#
# Environment: GO, E2E_TIMEOUT (per mode, default 20m), DS_LAB_NAME (the lab's
# name, default the family), DS_POLICY_CASES (TestE2EPolicyRandom's cases,
# default 4) and the harness's TRELLIS_LAB_* settings (TRELLIS_LAB_BIN,
# TRELLIS_LAB_INSTALL, TRELLIS_LAB_IMAGE_TAR, ...). Exit status non-zero when
# any run fails; every mode runs regardless.
set -uo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
E2E_TIMEOUT=${E2E_TIMEOUT:-20m}
[ $# -ge 2 ] || { echo "usage: $0 dual|ipv6 MODE..." >&2; exit 2; }
fam=$1; shift
case $fam in dual|ipv6) ;; *) echo "$0: family must be dual or ipv6, got '$fam'" >&2; exit 2 ;; esac
name=${DS_LAB_NAME:-$fam}
lab=${TRELLIS_LAB_BIN:-bin/trellis-lab}
routed='^TestE2EDualStack(PodTruthTables|NodeAndPod|Services|LargeUDPNoFragmentation)$'
rc=0 first=1
for m in "$@"; do
  start=$SECONDS
  echo "== dual-stack e2e: --ip-family $fam --routing-mode $m (lab $name)"
  run='^TestE2E'
  [ $first = 1 ] || run=$routed
  TRELLIS_LAB_NAME=$name TRELLIS_LAB_IP_FAMILY=$fam TRELLIS_LAB_ROUTING=$m TRELLIS_LAB_KEEP=1 \
    $GO test -count=1 -tags e2e,dualstack -timeout "$E2E_TIMEOUT" -run "$run" -v ./test/e2e/dualstack/ || rc=1
  status=$("$lab" --name "$name" status 2>/dev/null || true) # whole, not piped: see hack/lab-demo.sh
  if [ $first = 1 ] && [[ $status == *"phase running"* ]]; then
    echo "== NetworkPolicy truth tables and random test over every family (lab $name)"
    TRELLIS_LAB_NAME=$name TRELLIS_LAB_REUSE=1 TRELLIS_LAB_KEEP=1 \
      $GO test -count=1 -tags e2e -timeout "$E2E_TIMEOUT" -run '^TestE2EPolicy(TruthTables|Random)$' -v ./test/e2e/policy/ \
      -args -policy.cases="${DS_POLICY_CASES:-4}" || rc=1
  fi
  "$lab" --name "$name" down || rc=1
  echo "== dual-stack e2e: $fam $m done in $((SECONDS - start)) s (exit so far $rc)"
  first=0
done
exit $rc
