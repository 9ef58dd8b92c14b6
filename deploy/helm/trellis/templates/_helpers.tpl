{{/* The agent image reference: repository:tag (tag defaults to appVersion). */}}
{{- define "trellis.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- if eq (toString $tag) "latest" -}}
{{- fail "image.tag: latest is refused: tag images by content (make image writes bin/image/image.ref)" -}}
{{- end -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "trellis.labels" -}}
app.kubernetes.io/part-of: trellis
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{/* Capabilities of both DaemonSets (docs/install.md justifies each);
     with (dict "bgp" true), the agent's: NET_BIND_SERVICE too, for the BGP
     speaker's listener on port 179. */}}
{{- define "trellis.securityContext" -}}
privileged: false
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
  add: ["NET_ADMIN", "BPF", "PERFMON"{{ if and (kindIs "map" .) (hasKey . "bgp") }}, "NET_BIND_SERVICE"{{ end }}]
{{- end -}}

{{/* Host directories both DaemonSets mount. */}}
{{- define "trellis.hostVolumeMounts" -}}
- name: cni-conf
  mountPath: /host/etc/cni/net.d
- name: cni-bin
  mountPath: /host/opt/cni/bin
- name: state
  mountPath: /var/lib/trellis
- name: proc-sys-net
  mountPath: /host/proc/sys/net
{{- end -}}

{{- define "trellis.hostVolumes" -}}
- name: cni-conf
  hostPath:
    path: {{ .Values.hostPaths.cniConfDir }}
    type: DirectoryOrCreate
- name: cni-bin
  hostPath:
    path: {{ .Values.hostPaths.cniBinDir }}
    type: DirectoryOrCreate
- name: state
  hostPath:
    path: {{ .Values.hostPaths.stateDir }}
    type: DirectoryOrCreate
- name: proc-sys-net
  hostPath:
    path: /proc/sys/net
    type: Directory
{{- end -}}

{{/* Flags pointing the agent at the host mounts. */}}
{{- define "trellis.hostArgs" -}}
- --cni-bin-dir=/host/opt/cni/bin
- --cni-conf-dir=/host/etc/cni/net.d
- --node-state-file=/var/lib/trellis/node-state.json
- --sysctl-root=/host/proc/sys
{{- end -}}

{{/*
The metrics and health listener (values config.metricsListen, metricsPort).
"node" needs the node's address, which only the pod knows: the ConfigMap
keeps the loopback and a flag built from the downward API overrides it.
*/}}
{{- define "trellis.metricsConfigAddress" -}}
{{- $c := .Values.config -}}
{{- if eq $c.metricsListen "all" -}}
0.0.0.0:{{ int $c.metricsPort }}
{{- else if has $c.metricsListen (list "localhost" "node") -}}
127.0.0.1:{{ int $c.metricsPort }}
{{- else -}}
{{- fail (printf "config.metricsListen: %q is not one of localhost, node, all" $c.metricsListen) -}}
{{- end -}}
{{- end -}}

{{/*
"true" when the agent may run the userspace WireGuard engine (encryption
wireguard, engine auto or userspace): it then needs /dev/net/tun and a
writable /var/run/wireguard. Empty otherwise.
*/}}
{{- define "trellis.wireguardTUN" -}}
{{- $c := .Values.config -}}
{{- if and (eq $c.encryption "wireguard") (ne $c.wireguard.engine "kernel") -}}
true
{{- else if not (has $c.encryption (list "none" "wireguard")) -}}
{{- fail (printf "config.encryption: %q is not one of none, wireguard" $c.encryption) -}}
{{- end -}}
{{- end -}}
