#!/usr/bin/env bash
# make demo-lab: a 3-node Trellis lab, agnhost pods in three namespaces spread
# over the nodes by kube-scheduler, the pod-to-pod connectivity matrix and a
# Service looked up by name through the cluster DNS.
# Trellis is installed as an operator installs it: the image from `make image`
# imported into every node and the shipped deploy/trellis.yaml applied, so
# kubelet runs the agent as a DaemonSet pod (INSTALL=helm|process to change).
# A second run reuses the running lab. `make demo-down` removes it.
set -euo pipefail
LAB=$1 NODES=${2:-3} SUBNETS=${3:-2} MODE=${4:-auto} INSTALL=${5:-daemonset}

# Read status whole first: `status | grep -q` under pipefail can fail on SIGPIPE
# and make a running lab look absent.
status=$("$LAB" status 2>/dev/null || true)
if [[ $status == *"phase running"* ]]; then
  echo "== reusing the running lab"
else
  echo "== bringing up a lab: $NODES nodes over $SUBNETS subnets (routing mode $MODE, Trellis installed as $INSTALL)"
  "$LAB" up --nodes "$NODES" --subnets "$SUBNETS" --routing-mode "$MODE" --install "$INSTALL"
fi
if [[ $INSTALL != process ]]; then
  echo
  echo "== the Trellis agent: a DaemonSet from deploy/trellis.yaml, one pod per node"
  "$LAB" kubectl -- -n kube-system get ds trellis-agent
  "$LAB" kubectl -- -n kube-system get pods -l app.kubernetes.io/name=trellis-agent -o wide
fi

manifest() {
  for ns in x y z; do
    cat <<YAML
apiVersion: v1
kind: Namespace
metadata: {name: "$ns", labels: {ns: "$ns"}}
---
YAML
    for pod in a b c; do
      cat <<YAML
apiVersion: v1
kind: Pod
metadata: {name: "$pod", namespace: "$ns", labels: {pod: "$pod", demo: trellis}}
spec:
  terminationGracePeriodSeconds: 0
  topologySpreadConstraints:
  - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: ScheduleAnyway, labelSelector: {matchLabels: {demo: trellis}}}
  containers:
  - name: agnhost
    image: registry.k8s.io/e2e-test-images/agnhost:2.66.1
    imagePullPolicy: IfNotPresent
    args: [netexec, --http-port=80, --udp-port=81]
    readinessProbe: {tcpSocket: {port: 80}, periodSeconds: 1}
---
YAML
    done
  done
}
echo "== deploying 9 agnhost pods (namespaces x, y, z; pods a, b, c)"
manifest | "$LAB" kubectl -- apply -f - >/dev/null
"$LAB" kubectl -- wait --for=condition=Ready pod -l demo=trellis -A --timeout=120s >/dev/null
echo
"$LAB" status | sed -n '/^NODE/,/^$/p'
echo
"$LAB" kubectl -- get pods -A -l demo=trellis -o custom-columns=POD:.metadata.namespace,NAME:.metadata.name,IP:.status.podIP,NODE:.spec.nodeName
echo
rc=0
"$LAB" matrix -n x,y,z --port 80/tcp --expect all || rc=$?
echo
echo "== a NetworkPolicy: namespace y accepts ingress only from namespace x"
"$LAB" kubectl -- apply -f - >/dev/null <<'YAML'
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: demo-allow-from-x, namespace: "y"}
spec:
  podSelector: {}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {ns: "x"}}
YAML
sleep 1 # the agents program it well within this (make bench-policy: p99 < 0.5 s)
"$LAB" matrix -n x,y,z --port 80/tcp
"$LAB" kubectl -- delete networkpolicy -n y demo-allow-from-x >/dev/null
echo "(policy deleted again; while it existed, columns y/* were reachable only from rows x/* and each pod from itself)"
echo
echo "== cluster DNS: a Service y/web in front of pod y/b, looked up by name from pods"
"$LAB" kubectl -- apply -f - >/dev/null <<'YAML'
apiVersion: v1
kind: Service
metadata: {name: web, namespace: "y"}
spec:
  selector: {pod: b}
  ports: [{port: 80, protocol: TCP}]
YAML
echo "web.y ClusterIP: $("$LAB" kubectl -- get svc -n y web -o jsonpath='{.spec.clusterIP}')"
"$LAB" dns x/a web.y.svc.cluster.local || rc=$?
"$LAB" dns y/a web || rc=$?
# kube-proxy programs the new Service within a few seconds; until then a
# connect is refused. Give it 20 s, then count a failure.
connected=
for _ in $(seq 20); do
  if "$LAB" exec x/a -- /agnhost connect --timeout=3s web.y:80 2>/dev/null; then connected=1; break; fi
  sleep 1
done
if [[ -n $connected ]]; then echo "x/a connected to web.y:80 by name"; else echo "x/a could not connect to web.y:80" >&2; rc=1; fi
echo
cat <<TXT
What you are looking at:
  * Every node is a network namespace on this machine running a real containerd, kubelet and
    kube-proxy (nftables); kubelet runs the Trellis agent as a DaemonSet pod from the image
    'make image' built (imported into each node's containerd, nothing pulled), and the agent
    installed the plugin and the conflist on its node. The control plane (etcd, kube-apiserver,
    controller-manager, scheduler) runs in its own namespace. Nodes sit on $SUBNETS underlay
    subnets (bridges) joined by a router namespace: node pairs on different subnets have
    no L2 adjacency.
  * Each pod got its address from trellis-cni (called by containerd), from its node's
    pod CIDR. The matrix shows TCP connects on port 80 from each pod (rows) to each pod
    (columns), made from inside the source pod's network namespace: '.' = connected,
    'X' = no answer ('!' marks a cell that differs from the expectation "all connect").
  * The second matrix is the same probe while a NetworkPolicy isolates namespace y: the
    agents compiled it into nftables (table inet trellis-policy) on every node.
  * Names: kubelet points every pod at 10.96.0.10, the kube-dns Service in front of two
    CoreDNS replicas on different nodes. 'dns' asks it from inside a pod with the pod's own
    resolv.conf ("web" alone goes through the search path y.svc.cluster.local), and agnhost
    inside x/a connected to "web.y:80" with its own resolver. Only cluster names resolve:
    the lab sends no query outside.

Next commands to try:
  $LAB status
  $LAB matrix -n x,y,z --port 81/udp
  $LAB probe x/a y/b 80/tcp
  $LAB dns z/c web.y --tcp
  $LAB dns x/a kubernetes.default
  $LAB exec x/a -- /agnhost connect --protocol=tcp --timeout=1s \$($LAB kubectl -- get pod -n y b -o jsonpath='{.status.podIP}'):80
  $LAB restart-agent node2 && $LAB matrix -n x,y,z      # deletes node2's agent pod, waits for the new one
  $LAB logs node1 trellis-agent                          # the agent pod's log
  $LAB kubectl -- -n kube-system rollout history ds trellis-agent
  $LAB upgrade --image-tar bin/image/trellis-image.tar   # roll the DaemonSet to a (new) image, time per node
  $LAB rollback                                          # back to the previous revision
  export KUBECONFIG=\$($LAB kubeconfig)
  make demo-down        # removes everything
TXT
exit $rc
