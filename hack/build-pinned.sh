#!/usr/bin/env bash
# Builds the pinned third-party binaries the Trellis lab needs from source, through
# the Go module proxy, into a machine-wide cache keyed by version:
#
#   $TRELLIS_CACHE/<component>-<version>/<component>
#
# A warm run is instant (present binaries are skipped). Each build goes to a
# temporary directory that is renamed into place only when complete, so an
# interrupted build never leaves a half-written binary behind.
#
# Usage: hack/build-pinned.sh [component...]   (default: everything but e2e.test)
#        hack/build-pinned.sh --print-dir COMPONENT
# Components: kube-apiserver kube-controller-manager kube-scheduler kubelet
#             kube-proxy kubectl agnhost etcd coredns loopback ptp host-local bridge
#             e2e.test kube-router
# (kube-router is the peer of `make compare`, built for the lab only and never
# shipped; it is not in the default set.)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
export PATH=/usr/local/go/bin:$PATH GOTOOLCHAIN=local GOFLAGS=-mod=mod
TRELLIS_CACHE=${TRELLIS_CACHE:-/var/cache/trellis}

K8S_VERSION=v1.37.2
ETCD_VERSION=v3.7.3
CNI_PLUGINS_VERSION=v1.10.0
COREDNS_VERSION=v1.15.0
KUBE_ROUTER_VERSION=v2.1.0

declare -A version pkg module
for c in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl; do
  version[$c]=$K8S_VERSION; pkg[$c]=k8s.io/kubernetes/cmd/$c; module[$c]=k8s
done
version[agnhost]=$K8S_VERSION; pkg[agnhost]=k8s.io/kubernetes/test/images/agnhost; module[agnhost]=k8s
version[e2e.test]=$K8S_VERSION; pkg[e2e.test]=k8s.io/kubernetes/test/e2e; module[e2e.test]=k8s-test
version[etcd]=$ETCD_VERSION; pkg[etcd]=go.etcd.io/etcd/server/v3; module[etcd]=etcd
version[coredns]=$COREDNS_VERSION; pkg[coredns]=github.com/trellisnet/trellis/tools/coredns/coredns; module[coredns]=coredns
for c in loopback ptp bridge; do
  version[$c]=$CNI_PLUGINS_VERSION; pkg[$c]=github.com/containernetworking/plugins/plugins/main/$c; module[$c]=cni
done
version[kube-router]=$KUBE_ROUTER_VERSION; pkg[kube-router]=github.com/cloudnativelabs/kube-router/v2/cmd/kube-router; module[kube-router]=kube-router
version[host-local]=$CNI_PLUGINS_VERSION; pkg[host-local]=github.com/containernetworking/plugins/plugins/ipam/host-local; module[host-local]=cni

DEFAULT=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl agnhost etcd coredns loopback ptp host-local)

dir_of() { echo "$TRELLIS_CACHE/$1-${version[$1]}"; }

if [ "${1:-}" = "--print-dir" ]; then
  [ -n "${2:-}" ] && [ -n "${version[$2]:-}" ] || { echo "build-pinned: unknown component '${2:-}'" >&2; exit 2; }
  dir_of "$2"; exit 0
fi

want=("$@")
[ ${#want[@]} -eq 0 ] && want=("${DEFAULT[@]}")
for c in "${want[@]}"; do
  [ -n "${version[$c]:-}" ] || { echo "build-pinned: unknown component '$c'" >&2; exit 2; }
done

missing() { # components among $@ that are not cached yet
  local c; for c in "$@"; do [ -x "$(dir_of "$c")/$c" ] || echo "$c"; done
}
mapfile -t todo < <(missing "${want[@]}")
[ ${#todo[@]} -eq 0 ] && exit 0

mkdir -p "$TRELLIS_CACHE/logs"
# One builder at a time per machine; the others wait and then find the result.
exec 9>"$TRELLIS_CACHE/.build.lock"
flock 9
mapfile -t todo < <(missing "${want[@]}")
[ ${#todo[@]} -eq 0 ] && exit 0

k8s_ldflags="-s -w \
 -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 \
 -X k8s.io/component-base/version.gitMinor=37 -X k8s.io/component-base/version.gitTreeState=clean \
 -X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z \
 -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1 \
 -X k8s.io/client-go/pkg/version.gitMinor=37"

# install TMPDIR COMPONENT...: move finished binaries into their versioned dirs.
install_built() {
  local tmp=$1 c d; shift
  for c in "$@"; do
    d=$(dir_of "$c")
    mkdir -p "$d.partial"
    mv "$tmp/$c" "$d.partial/$c"
    rm -rf "$d"
    mv "$d.partial" "$d"
    echo "build-pinned: $c ${version[$c]} -> $d/$c"
  done
}

# build MODULE_DIR LOG COMPONENT...: one go build for several main packages.
build_group() {
  local mod=$1 log=$2; shift 2
  [ $# -eq 0 ] && return 0
  local tmp pkgs=() c ldflags="-s -w"
  tmp=$(mktemp -d "$TRELLIS_CACHE/.tmp-build.XXXXXX")
  trap 'rm -rf "$tmp"' RETURN
  for c in "$@"; do pkgs+=("${pkg[$c]}"); done
  [ "$mod" = k8s ] && ldflags=$k8s_ldflags
  [ "$mod" = kube-router ] && ldflags="-s -w \
 -X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=$KUBE_ROUTER_VERSION \
 -X github.com/cloudnativelabs/kube-router/v2/pkg/version.BuildDate=1970-01-01T00:00:00Z"
  echo "build-pinned: building $* (log: $log)"
  local start=$SECONDS
  if ! (cd "$ROOT/tools/$mod" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$tmp/" "${pkgs[@]}") >"$log" 2>&1; then
    echo "build-pinned: build of $* failed; last lines of $log:" >&2
    tail -20 "$log" >&2
    return 1
  fi
  # go build names each binary after its package directory.
  # (etcd's main package is go.etcd.io/etcd/server/v3: the binary is "server").
  if [[ " $* " == *" etcd "* ]] && [ -e "$tmp/server" ]; then mv "$tmp/server" "$tmp/etcd"; fi
  for c in "$@"; do
    if [ ! -e "$tmp/$c" ]; then
      local base; base=$(basename "${pkg[$c]}")
      [ -e "$tmp/$base" ] && mv "$tmp/$base" "$tmp/$c"
    fi
  done
  install_built "$tmp" "$@"
  echo "build-pinned: $* built in $((SECONDS - start))s"
}

declare -a g_k8s=() g_etcd=() g_coredns=() g_cni=() g_e2e=() g_kr=()
for c in "${todo[@]}"; do
  case ${module[$c]} in
    k8s) g_k8s+=("$c") ;; etcd) g_etcd+=("$c") ;; coredns) g_coredns+=("$c") ;;
    cni) g_cni+=("$c") ;; k8s-test) g_e2e+=("$c") ;; kube-router) g_kr+=("$c") ;;
  esac
done

build_group cni "$TRELLIS_CACHE/logs/cni-plugins-$CNI_PLUGINS_VERSION.log" "${g_cni[@]}"
build_group etcd "$TRELLIS_CACHE/logs/etcd-$ETCD_VERSION.log" "${g_etcd[@]}"
build_group coredns "$TRELLIS_CACHE/logs/coredns-$COREDNS_VERSION.log" "${g_coredns[@]}"
build_group k8s "$TRELLIS_CACHE/logs/kubernetes-$K8S_VERSION.log" "${g_k8s[@]}"
build_group kube-router "$TRELLIS_CACHE/logs/kube-router-$KUBE_ROUTER_VERSION.log" "${g_kr[@]}"

if [ ${#g_e2e[@]} -gt 0 ]; then
  tmp=$(mktemp -d "$TRELLIS_CACHE/.tmp-build.XXXXXX")
  log="$TRELLIS_CACHE/logs/e2e.test-$K8S_VERSION.log"
  echo "build-pinned: building e2e.test (log: $log)"
  start=$SECONDS
  if ! (cd "$ROOT/tools/k8s" && CGO_ENABLED=0 go test -c -trimpath -ldflags "$k8s_ldflags" -o "$tmp/e2e.test" k8s.io/kubernetes/test/e2e) >"$log" 2>&1; then
    echo "build-pinned: build of e2e.test failed; last lines of $log:" >&2
    tail -20 "$log" >&2; rm -rf "$tmp"; exit 1
  fi
  install_built "$tmp" e2e.test; rm -rf "$tmp"
  echo "build-pinned: e2e.test built in $((SECONDS - start))s"
fi
