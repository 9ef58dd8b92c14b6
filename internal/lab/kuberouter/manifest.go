package kuberouter

// manifest follows kube-router's generic DaemonSet example (hostNetwork,
// privileged, the CNI directory and the xtables lock from the host), with
// the image built here (pulled never) and the CNI configuration written by
// the lab instead of an init container (the image has no shell). Its RBAC is
// the example's, less the legacy extensions group.
const manifest = `apiVersion: v1
kind: ServiceAccount
metadata:
  name: kube-router
  namespace: kube-system
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: kube-router
rules:
- apiGroups: [""]
  resources: [namespaces, pods, services, nodes, endpoints]
  verbs: [list, get, watch]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [list, get, watch]
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [get, create, update]
- apiGroups: [""]
  resources: [services/status]
  verbs: [update]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: kube-router
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: kube-router
subjects:
- kind: ServiceAccount
  name: kube-router
  namespace: kube-system
---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: kube-router
  namespace: kube-system
  labels: {k8s-app: kube-router, tier: node}
spec:
  selector:
    matchLabels: {k8s-app: kube-router, tier: node}
  template:
    metadata:
      labels: {k8s-app: kube-router, tier: node}
    spec:
      priorityClassName: system-node-critical
      serviceAccountName: kube-router
      hostNetwork: true
      hostPID: true
      tolerations:
      - {effect: NoSchedule, operator: Exists}
      - {key: CriticalAddonsOnly, operator: Exists}
      - {effect: NoExecute, operator: Exists}
      containers:
      - name: kube-router
        image: %s
        imagePullPolicy: Never
        args:
%s
        env:
        - name: NODE_NAME
          valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
        - name: POD_NAME
          valueFrom: {fieldRef: {fieldPath: metadata.name}}
        - name: KUBE_ROUTER_CNI_CONF_FILE
          value: %s
        livenessProbe:
          httpGet: {path: /healthz, port: 20244}
          initialDelaySeconds: 10
          periodSeconds: 3
        resources:
          requests: {cpu: 250m, memory: 250Mi}
        securityContext: {privileged: true}
        volumeMounts:
        - {name: lib-modules, mountPath: /lib/modules, readOnly: true}
        - {name: cni-conf-dir, mountPath: /etc/cni/net.d}
        - {name: xtables-lock, mountPath: /run/xtables.lock}
      volumes:
      - name: lib-modules
        hostPath: {path: /lib/modules}
      - name: cni-conf-dir
        hostPath: {path: /etc/cni/net.d}
      - name: xtables-lock
        hostPath: {path: /run/xtables.lock, type: FileOrCreate}
`
