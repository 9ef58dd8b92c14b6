#!/usr/bin/env bash
# Installs the Debian packages Trellis' builds, tests and lab need. Idempotent:
# apt runs only when a command is missing. Must run as root.
set -euo pipefail

# command -> Debian package
declare -A need=(
  [ip]=iproute2
  [nft]=nftables
  [iperf3]=iperf3
  [containerd]=containerd
  [runc]=runc
  [conntrack]=conntrack
  [socat]=socat
  [tcpdump]=tcpdump
  # internal/hostfw's kernel test makes a host with the iptables FORWARD policy DROP
  [iptables-nft]=iptables
  [ethtool]=ethtool
  [sysctl]=procps
  [nsenter]=util-linux
  [ping]=iputils-ping
  # BIRD 2: internal/bgp/speaker's kernel test peers with it; the lab's
  # top-of-rack router (trellis-lab up --bgp) and its CLI
  [bird]=bird2
  [birdc]=bird2
  # the eBPF fast path's object is rebuilt and checked by `make bpf-check`
  [clang]=clang
  [llvm-strip]=llvm
)
missing=()
for cmd in "${!need[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || missing+=("${need[$cmd]}")
done
[ -f /usr/include/bpf/bpf_helpers.h ] || missing+=(libbpf-dev)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages (${missing[*]}) and not root: run as root or install them" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# bird2's package enables a BIRD service in the machine's own namespace; the
# lab runs its own BIRD inside its router namespace and needs none outside.
if [[ " ${missing[*]} " == *" bird2 "* ]] && [ -d /run/systemd/system ]; then
  systemctl disable --now bird.service >/dev/null 2>&1 || true
fi
