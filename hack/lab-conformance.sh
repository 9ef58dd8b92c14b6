#!/usr/bin/env bash
# The upstream Kubernetes e2e specs (e2e.test v1.37.2) against a lab; prints
# the pass/fail count (ginkgo's summary) and the failed specs.
#
#   hack/lab-conformance.sh netpol LAB E2E      make conformance-netpol: --ginkgo.focus=Netpol
#   hack/lab-conformance.sh dualstack LAB E2E   make conformance-dualstack: --ginkgo.focus=\[Feature:IPv6DualStack\]
#
# The [Feature:SCTPConnectivity] specs are skipped in both (they open SCTP
# sockets, which this kernel does not have); the Netpol specs about SCTP
# policies probed over TCP run. The lab's IP
# family: CONFORMANCE_IP_FAMILY (ipv4, ipv6 or dual; netpol's default ipv4,
# dualstack's dual, which it needs). Reuses a running lab of that family,
# otherwise brings one up and removes it afterwards. FOCUS / SKIP override the
# suite's ginkgo focus and skip; CONFORMANCE_TIMEOUT the whole run's limit
# (ginkgo's --timeout: netpol 4h, dualstack 1h, because upstream's
# hostNetwork dual-stack spec sleeps 10 hours when its node-to-Service UDP
# dial fails; at the limit ginkgo fails the running spec and skips the rest).
set -uo pipefail
suite=$1 LAB=$2 E2E=$3
case $suite in
  netpol)
    family=${CONFORMANCE_IP_FAMILY:-ipv4}
    focus=${FOCUS:-${NETPOL_FOCUS:-Netpol}} skip=${SKIP:-${NETPOL_SKIP:-'\[Feature:SCTPConnectivity\]'}} timeout=${CONFORMANCE_TIMEOUT:-4h} ;;
  dualstack)
    family=${CONFORMANCE_IP_FAMILY:-dual}
    [ "$family" = dual ] || { echo "conformance-dualstack needs a dual-stack lab (CONFORMANCE_IP_FAMILY=dual), got $family" >&2; exit 2; }
    # [Feature:SCTPConnectivity]: the pod-Service sctp spec (no SCTP sockets here).
    focus=${FOCUS:-'\[Feature:IPv6DualStack\]'} skip=${SKIP:-'\[Feature:SCTPConnectivity\]'} timeout=${CONFORMANCE_TIMEOUT:-1h} ;;
  *) echo "usage: $0 netpol|dualstack LAB E2E" >&2; exit 2 ;;
esac
case $family in ipv4|ipv6|dual) ;; *) echo "CONFORMANCE_IP_FAMILY must be ipv4, ipv6 or dual, got $family" >&2; exit 2 ;; esac
# Its own lab instance, so a demo or someone else's lab is never disturbed
# (netpol, netpol6, netpold; dsconf).
case $suite-$family in
  netpol-ipv4) default_name=netpol ;; netpol-ipv6) default_name=netpol6 ;; netpol-dual) default_name=netpold ;;
  *) default_name=dsconf ;;
esac
export TRELLIS_LAB_NAME=${TRELLIS_LAB_NAME:-$default_name}
owned=0
status=$("$LAB" status 2>/dev/null || true) # whole, not piped: see hack/lab-demo.sh
if [[ $status == *"phase running"* ]]; then
  have=ipv4
  [[ $status =~ IP\ family:\ ([a-z0-9]+) ]] && have=${BASH_REMATCH[1]}
  if [ "$have" != "$family" ]; then
    echo "lab $TRELLIS_LAB_NAME is running with IP family $have, not $family: take it down or name another (TRELLIS_LAB_NAME)" >&2
    exit 2
  fi
else
  "$LAB" up --nodes "${LAB_NODES:-3}" --subnets "${LAB_SUBNETS:-2}" --ip-family "$family" || exit 1
  owned=1
fi
out=${TRELLIS_CACHE:-/var/cache/trellis}/logs/conformance-$suite-$family-$(date +%Y%m%d-%H%M%S)
mkdir -p "$out"
echo "== e2e.test --ginkgo.focus=$focus --ginkgo.skip=$skip against a $family lab ($TRELLIS_LAB_NAME; log: $out/e2e.log)"
start=$SECONDS
"$E2E" --kubeconfig="$("$LAB" kubeconfig)" --provider=local \
  --ginkgo.focus="$focus" --ginkgo.skip="$skip" --ginkgo.timeout="$timeout" --ginkgo.no-color \
  --ginkgo.junit-report="$out/junit.xml" --report-dir="$out" >"$out/e2e.log" 2>&1
rc=$?
echo "== finished in $((SECONDS - start))s, exit $rc"
grep -E '^(Ran [0-9]+ of|SUCCESS!|FAIL!)' "$out/e2e.log" | tail -3
grep -E '^\s*\[FAIL\]' "$out/e2e.log" | sort -u | head -60
[ $owned = 1 ] && "$LAB" down
exit $rc
