#!/usr/bin/env bash
# Runs the lab e2e tier of `make test` in two lanes at once, each on its own
# lab, to keep `make test` inside its time budget on a 2-core machine:
#
#   lane A  every suite under test/e2e but those of lane B (one lab per suite, in
#           turn), then the agent suite in routing modes native and vxlan, then
#           the suites of an IPv6-only cluster (hack/e2e-dualstack.sh ipv6: the
#           dual-stack suite in all three routing modes, the policy truth tables
#           and random test, on one lab)
#   lane B  the API-server-outage suite (mostly waiting out a 5-minute outage),
#           the trellisctl suite, the encryption suite (its own lab, brought
#           up with --encryption wireguard) and the BGP suite (its own lab,
#           brought up with --routing-mode bgp: BIRD as the nodes' ToR), then
#           the same suites as lane A's IPv6-only ones on a dual-stack lab
#           (hack/e2e-dualstack.sh dual: every test over both families)
#
# Lane A writes to stdout as it runs; lane B to a log printed when it ends.
# The exit status is non-zero when either lane fails. Environment: GO,
# E2E_TIMEOUT, E2E_LAB_NAME, E2E_DUALSTACK (0: leave the IPv6 labs out) and
# the TRELLIS_LAB_* settings of the harness.
set -uo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
E2E_TIMEOUT=${E2E_TIMEOUT:-30m}

laneB=(./test/e2e/resilience/ ./test/e2e/ctl/ ./test/e2e/encryption/ ./test/e2e/bgp/)
if [ "${1:-}" = "--lane-b" ]; then
  echo "== lane B: ${laneB[*]}"
  rc=0
  TRELLIS_LAB_NAME=e2eb $GO test -count=1 -p 1 -tags e2e -timeout "$E2E_TIMEOUT" -run '^TestE2E' -v "${laneB[@]}" || rc=1
  if [ "${E2E_DUALSTACK:-1}" != 0 ]; then
    GO=$GO DS_LAB_NAME=e2edual hack/e2e-dualstack.sh dual || rc=1
  fi
  exit $rc
fi

mapfile -t laneA < <($GO list -tags e2e ./test/e2e/... | sed 's#^github.com/trellisnet/trellis/#./#' |
  grep -v -e '/framework$' -e '/resilience$' -e '/ctl$' -e '/encryption$' -e '/bgp$')
logB=$(mktemp /tmp/trellis-e2e-laneB.XXXXXX.log)
start=$SECONDS
# Lane B in a session (process group) of its own, so that Ctrl-C or a CI
# timeout stops its tests too.
setsid "$0" --lane-b >"$logB" 2>&1 &
pidB=$!
trap 'kill -- -"$pidB" 2>/dev/null; exit 130' INT TERM

echo "== lane A: ${laneA[*]} (lane B runs beside it; its log: $logB)"
(
  set -e
  TRELLIS_LAB_NAME=${E2E_LAB_NAME:-e2e} $GO test -count=1 -p 1 -tags e2e -timeout "$E2E_TIMEOUT" -run '^TestE2E' -v "${laneA[@]}"
  for m in native vxlan; do
    echo "== lane A: agent e2e, routing mode $m"
    TRELLIS_LAB_NAME=$m TRELLIS_LAB_ROUTING=$m $GO test -count=1 -tags e2e -timeout 20m -run '^TestE2E' \
      -skip 'TestE2EAgentMemoryAt100Nodes2000Pods' -v ./test/e2e/agent/
  done
  if [ "${E2E_DUALSTACK:-1}" != 0 ]; then
    GO=$GO DS_LAB_NAME=e2eipv6 hack/e2e-dualstack.sh ipv6
  fi
)
rcA=$?
echo "== lane A finished (exit $rcA) after $((SECONDS - start)) s; waiting for lane B"
wait "$pidB"
rcB=$?
echo "== lane B log (exit $rcB, $((SECONDS - start)) s since start):"
cat "$logB"
rm -f "$logB"
echo "== e2e lanes: A exit $rcA, B exit $rcB, $((SECONDS - start)) s"
[ "$rcA" -eq 0 ] && [ "$rcB" -eq 0 ]
