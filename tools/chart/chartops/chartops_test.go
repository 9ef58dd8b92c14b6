package chartops

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

var (
	chartDir  = filepath.Join("..", "..", "..", "deploy", "helm", "trellis")
	deployDir = filepath.Join("..", "..", "..", "deploy")
)

// decode decodes every document of a rendered manifest strictly (unknown
// fields fail) into its client-go type.
func decode(t *testing.T, manifest string) []runtime.Object {
	t.Helper()
	dec := serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()
	var objs []runtime.Object
	for _, doc := range strings.Split(manifest, "\n---\n") {
		if onlyComments(doc) {
			continue
		}
		obj, gvk, err := dec.Decode([]byte(doc), nil, nil)
		if err != nil {
			t.Fatalf("decode %q: %v", doc, err)
		}
		if gvk.Kind == "" {
			t.Fatalf("document without kind: %q", doc)
		}
		objs = append(objs, obj)
	}
	return objs
}

func onlyComments(doc string) bool {
	for _, l := range strings.Split(doc, "\n") {
		if l = strings.TrimSpace(l); l != "" && l != "---" && !strings.HasPrefix(l, "#") {
			return false
		}
	}
	return true
}

func render(t *testing.T, set ...string) []runtime.Object {
	t.Helper()
	m, err := Render(Options{Chart: chartDir, Set: set})
	if err != nil {
		t.Fatal(err)
	}
	return decode(t, m)
}

// The default render is exactly the installation: a ServiceAccount, RBAC,
// the ConfigMap and the DaemonSet, namespaced objects in kube-system.
func TestRenderDefaults(t *testing.T) {
	var kinds []string
	var ds *appsv1.DaemonSet
	for _, o := range render(t) {
		switch v := o.(type) {
		case *corev1.ServiceAccount:
			kinds = append(kinds, "ServiceAccount")
			if v.Namespace != DefaultNamespace {
				t.Errorf("ServiceAccount in %q", v.Namespace)
			}
		case *corev1.ConfigMap:
			kinds = append(kinds, "ConfigMap")
			if v.Namespace != DefaultNamespace || !strings.Contains(v.Data["config.yaml"], "routingMode: auto") {
				t.Errorf("ConfigMap %s/%s: %q", v.Namespace, v.Name, v.Data["config.yaml"])
			}
		case *rbacv1.ClusterRole:
			kinds = append(kinds, "ClusterRole")
		case *rbacv1.ClusterRoleBinding:
			kinds = append(kinds, "ClusterRoleBinding")
		case *rbacv1.Role:
			kinds = append(kinds, "Role")
			if v.Namespace != DefaultNamespace {
				t.Errorf("Role in %q", v.Namespace)
			}
		case *rbacv1.RoleBinding:
			kinds = append(kinds, "RoleBinding")
		case *appsv1.DaemonSet:
			kinds = append(kinds, "DaemonSet")
			ds = v
		case *admissionv1.ValidatingAdmissionPolicy:
			kinds = append(kinds, "ValidatingAdmissionPolicy")
		case *admissionv1.ValidatingAdmissionPolicyBinding:
			kinds = append(kinds, "ValidatingAdmissionPolicyBinding")
		default:
			t.Errorf("unexpected object %T", o)
		}
	}
	slices.Sort(kinds)
	if want := []string{"ClusterRole", "ClusterRoleBinding", "ConfigMap", "DaemonSet", "Role", "RoleBinding", "ServiceAccount",
		"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "ValidatingAdmissionPolicyBinding"}; !slices.Equal(kinds, want) {
		t.Fatalf("kinds %v, want %v", kinds, want)
	}
	if ds.Namespace != DefaultNamespace || ds.Name != "trellis-agent" {
		t.Errorf("DaemonSet %s/%s", ds.Namespace, ds.Name)
	}
	if mu := ds.Spec.UpdateStrategy.RollingUpdate.MaxUnavailable; mu == nil || mu.IntValue() != 1 {
		t.Errorf("maxUnavailable %v, want 1", mu)
	}
	c := ds.Spec.Template.Spec.Containers[0]
	if strings.HasSuffix(c.Image, ":latest") || !strings.HasPrefix(c.Image, "ghcr.io/trellisnet/trellis:") {
		t.Errorf("image %q", c.Image)
	}
	if c.ImagePullPolicy != corev1.PullIfNotPresent {
		t.Errorf("pullPolicy %q", c.ImagePullPolicy)
	}
	checkLeastPrivilege(t, c)
	if !slices.Contains(c.Args, "--sysctl-root=/host/proc/sys") {
		t.Errorf("args %v lack --sysctl-root", c.Args)
	}
}

func checkLeastPrivilege(t *testing.T, c corev1.Container) {
	t.Helper()
	sc := c.SecurityContext
	if sc == nil || sc.Privileged == nil || *sc.Privileged || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Fatalf("%s: securityContext %+v must set privileged: false and allowPrivilegeEscalation: false", c.Name, sc)
	}
	if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("%s: capabilities %+v must drop ALL", c.Name, sc.Capabilities)
	}
	allowed := []corev1.Capability{"NET_ADMIN", "BPF", "PERFMON"}
	if c.Name == "agent" {
		allowed = append(allowed, "NET_BIND_SERVICE") // the BGP speaker's port 179
	}
	for _, capa := range sc.Capabilities.Add {
		if !slices.Contains(allowed, capa) {
			t.Errorf("%s: capability %s is not in the documented set", c.Name, capa)
		}
	}
}

// Values reach the objects; :latest is refused.
func TestRenderValues(t *testing.T) {
	for _, o := range render(t, "image.tag=0123456789ab", "config.mtu=1400", "config.routingMode=vxlan", "maxUnavailable=2",
		"nodeSelector.pool=net") {
		switch v := o.(type) {
		case *corev1.ConfigMap:
			cfg := v.Data["config.yaml"]
			if !strings.Contains(cfg, "mtu: 1400") || !strings.Contains(cfg, "routingMode: vxlan") {
				t.Errorf("config.yaml %q", cfg)
			}
		case *appsv1.DaemonSet:
			if img := v.Spec.Template.Spec.Containers[0].Image; img != "ghcr.io/trellisnet/trellis:0123456789ab" {
				t.Errorf("image %q", img)
			}
			if v.Spec.UpdateStrategy.RollingUpdate.MaxUnavailable.IntValue() != 2 {
				t.Errorf("maxUnavailable not set")
			}
			if v.Spec.Template.Spec.NodeSelector["pool"] != "net" {
				t.Errorf("nodeSelector %v", v.Spec.Template.Spec.NodeSelector)
			}
		}
	}
	if _, err := Render(Options{Chart: chartDir, Set: []string{"image.tag=latest"}}); err == nil || !strings.Contains(err.Error(), "latest") {
		t.Errorf("image.tag=latest: err = %v", err)
	}
}

// The admission policy that confines each agent to its own Node matches
// the agent's ServiceAccount in the release namespace, compares the
// token's bound node with the object, is bound with Deny, fails closed,
// and can be turned off.
func TestRenderNodeWriteRestriction(t *testing.T) {
	vap, binding := policy(t, "trellis-agent-own-node")
	if vap.Spec.FailurePolicy == nil || *vap.Spec.FailurePolicy != admissionv1.Fail {
		t.Errorf("failurePolicy %v, want Fail", vap.Spec.FailurePolicy)
	}
	if len(vap.Spec.MatchConditions) != 1 || !strings.Contains(vap.Spec.MatchConditions[0].Expression, "'system:serviceaccount:"+DefaultNamespace+":trellis-agent'") {
		t.Errorf("match conditions %+v, want the agent's ServiceAccount in %s", vap.Spec.MatchConditions, DefaultNamespace)
	}
	rules := vap.Spec.MatchConstraints.ResourceRules
	if len(rules) != 1 || !slices.Equal(rules[0].Resources, []string{"nodes", "nodes/status"}) || !slices.Contains(rules[0].Operations, admissionv1.Update) {
		t.Errorf("resource rules %+v, want UPDATE of nodes and nodes/status", rules)
	}
	all := ""
	for _, v := range vap.Spec.Variables {
		all += v.Expression + "\n"
	}
	for _, v := range vap.Spec.Validations {
		all += v.Expression + "\n"
	}
	for _, want := range []string{"request.userInfo.extra['authentication.kubernetes.io/node-name']", "[object.metadata.name]", "object.spec == oldObject.spec"} {
		if !strings.Contains(all, want) {
			t.Errorf("policy expressions lack %q:\n%s", want, all)
		}
	}
	if binding.Spec.PolicyName != vap.Name || !slices.Equal(binding.Spec.ValidationActions, []admissionv1.ValidationAction{admissionv1.Deny}) {
		t.Errorf("binding %+v, want Deny of %s", binding.Spec, vap.Name)
	}
	for _, o := range render(t, "restrictNodeWrites=false") {
		if _, ok := o.(*admissionv1.ValidatingAdmissionPolicy); ok {
			t.Error("restrictNodeWrites=false still renders the policy")
		}
	}
}

// policy returns the named admission policy of the default render and its
// binding.
func policy(t *testing.T, name string) (*admissionv1.ValidatingAdmissionPolicy, *admissionv1.ValidatingAdmissionPolicyBinding) {
	t.Helper()
	var vap *admissionv1.ValidatingAdmissionPolicy
	var binding *admissionv1.ValidatingAdmissionPolicyBinding
	for _, o := range render(t) {
		switch v := o.(type) {
		case *admissionv1.ValidatingAdmissionPolicy:
			if v.Name == name {
				vap = v
			}
		case *admissionv1.ValidatingAdmissionPolicyBinding:
			if v.Name == name {
				binding = v
			}
		}
	}
	if vap == nil || binding == nil {
		t.Fatalf("policy %s: %v, binding %v: want both", name, vap, binding)
	}
	return vap, binding
}

// Each agent writes only the BGPNodeStatus named after its node (token's
// bound node == object name), creates or updates it, deletes none, and
// the policy fails closed.
func TestRenderBGPStatusWriteRestriction(t *testing.T) {
	vap, binding := policy(t, "trellis-agent-own-bgp-status")
	if vap.Spec.FailurePolicy == nil || *vap.Spec.FailurePolicy != admissionv1.Fail {
		t.Errorf("failurePolicy %v, want Fail", vap.Spec.FailurePolicy)
	}
	rules := vap.Spec.MatchConstraints.ResourceRules
	if len(rules) != 1 || !slices.Equal(rules[0].APIGroups, []string{"bgp.trellis.dev"}) || !slices.Equal(rules[0].Resources, []string{"bgpnodestatuses"}) ||
		!slices.Contains(rules[0].Operations, admissionv1.Delete) {
		t.Errorf("resource rules %+v, want CREATE/UPDATE/DELETE of bgp.trellis.dev bgpnodestatuses", rules)
	}
	if len(vap.Spec.MatchConditions) != 1 || !strings.Contains(vap.Spec.MatchConditions[0].Expression, "'system:serviceaccount:"+DefaultNamespace+":trellis-agent'") {
		t.Errorf("match conditions %+v", vap.Spec.MatchConditions)
	}
	if len(vap.Spec.Validations) != 1 || !strings.Contains(vap.Spec.Validations[0].Expression, "variables.boundNode == [object.metadata.name]") ||
		strings.Contains(vap.Spec.Validations[0].Expression, "DELETE") {
		t.Errorf("validations %+v, want create/update of the own node's object only", vap.Spec.Validations)
	}
	if binding.Spec.PolicyName != vap.Name || !slices.Equal(binding.Spec.ValidationActions, []admissionv1.ValidationAction{admissionv1.Deny}) {
		t.Errorf("binding %+v, want Deny of %s", binding.Spec, vap.Name)
	}
}

// deploy/trellis.yaml installs the BGP CRDs (one per kind, cluster-scoped,
// served v1alpha1 with a schema), before everything else; the uninstall
// manifest holds none (deleting it deletes no user object), and neither
// does a plain render (helm installs crds/ itself and never deletes them).
func TestManifestsCRDs(t *testing.T) {
	files, err := Manifests(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	sch := runtime.NewScheme()
	if err := apiextensionsv1.AddToScheme(sch); err != nil {
		t.Fatal(err)
	}
	dec := serializer.NewCodecFactory(sch, serializer.EnableStrict).UniversalDeserializer()
	var plurals []string
	seenOther := false
	for _, doc := range strings.Split(files[ManifestInstall], "\n---\n") {
		if !strings.Contains(doc, "kind: CustomResourceDefinition") {
			seenOther = seenOther || !onlyComments(doc)
			continue
		}
		obj, _, err := dec.Decode([]byte(doc), nil, nil)
		if err != nil {
			t.Fatalf("decode CRD: %v", err)
		}
		crd := obj.(*apiextensionsv1.CustomResourceDefinition)
		if seenOther {
			t.Errorf("CRD %s after other objects: CRDs come first", crd.Name)
		}
		if crd.Spec.Group != "bgp.trellis.dev" || crd.Spec.Scope != apiextensionsv1.ClusterScoped || len(crd.Spec.Versions) != 1 ||
			crd.Spec.Versions[0].Name != "v1alpha1" || !crd.Spec.Versions[0].Served || crd.Spec.Versions[0].Schema == nil {
			t.Errorf("CRD %s: %+v", crd.Name, crd.Spec)
		}
		plurals = append(plurals, crd.Spec.Names.Plural)
	}
	if want := []string{"bgpadvertisements", "bgpconfigurations", "bgpnodestatuses", "bgppeers"}; !slices.Equal(plurals, want) {
		t.Errorf("CRDs %v, want %v", plurals, want)
	}
	for _, name := range []string{ManifestUninstall, ManifestRBAC} {
		if strings.Contains(files[name], "CustomResourceDefinition") {
			t.Errorf("deploy/%s holds a CRD", name)
		}
	}
	m, err := Render(Options{Chart: chartDir})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(m, "CustomResourceDefinition") {
		t.Error("a render without IncludeCRDs holds a CRD")
	}
}

// mode=uninstall renders only the cleanup DaemonSet, least privilege too,
// without API access.
func TestRenderUninstall(t *testing.T) {
	objs := render(t, "mode=uninstall")
	if len(objs) != 1 {
		t.Fatalf("%d objects, want the cleanup DaemonSet alone", len(objs))
	}
	ds, ok := objs[0].(*appsv1.DaemonSet)
	if !ok || ds.Name != "trellis-uninstall" {
		t.Fatalf("object %T %v", objs[0], objs[0])
	}
	spec := ds.Spec.Template.Spec
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Error("the cleanup needs no API access: automountServiceAccountToken must be false")
	}
	if len(spec.InitContainers) != 1 || !slices.Contains(spec.InitContainers[0].Args, "--uninstall") {
		t.Fatalf("init containers %+v", spec.InitContainers)
	}
	checkLeastPrivilege(t, spec.InitContainers[0])
	checkLeastPrivilege(t, spec.Containers[0])
}

func TestLint(t *testing.T) {
	for _, set := range [][]string{nil, {"mode=uninstall"}} {
		if err := Lint(Options{Chart: chartDir, Set: set}); err != nil {
			t.Errorf("helm lint %v: %v", set, err)
		}
	}
}

// deploy/*.yaml are the chart rendered with its defaults: edit the chart,
// then `make manifests`.
func TestShippedManifestsMatchChart(t *testing.T) {
	files, err := Manifests(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(deployDir, name))
		if err != nil {
			t.Fatalf("%v (run make manifests)", err)
		}
		if string(got) != want {
			t.Errorf("deploy/%s differs from the chart's render: run make manifests", name)
		}
	}
}

// The RBAC golden file (deploy/rbac.yaml) grants exactly what the agent's
// controllers use: no wildcards, no Secret but the BGP passwords by name,
// nothing namespaced but events and that Secret.
func TestRBACGolden(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(deployDir, ManifestRBAC))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"/nodes":                            {"get", "list", "watch", "patch"},
		"/nodes/status":                     {"patch"},
		"/pods":                             {"list", "watch"},
		"/namespaces":                       {"list", "watch"},
		"networking.k8s.io/networkpolicies": {"list", "watch"},
		"/events":                           {"create", "patch"},
		"events.k8s.io/events":              {"create", "patch"},
		"/services":                         {"get", "list", "watch"},
		"bgp.trellis.dev/bgpconfigurations": {"get", "list", "watch"},
		"bgp.trellis.dev/bgppeers":          {"get", "list", "watch"},
		"bgp.trellis.dev/bgpadvertisements": {"get", "list", "watch"},
		"bgp.trellis.dev/bgpnodestatuses":   {"create", "get", "list", "watch", "patch"},
		// The one Secret, by name, in the agent's namespace (a Role).
		DefaultNamespace + ":/secrets[trellis-bgp-passwords]": {"get", "list", "watch"},
	}
	got := map[string][]string{}
	for _, o := range decode(t, string(data)) {
		var rules []rbacv1.PolicyRule
		prefix := ""
		switch role := o.(type) {
		case *rbacv1.ClusterRole:
			rules = role.Rules
		case *rbacv1.Role:
			rules, prefix = role.Rules, role.Namespace+":"
		default:
			continue
		}
		for _, r := range rules {
			if len(r.ResourceNames) > 0 {
				for i := range r.Resources {
					r.Resources[i] += "[" + strings.Join(r.ResourceNames, ",") + "]"
				}
			} else if prefix != "" {
				t.Errorf("Role rule %+v without resourceNames", r)
			}
			for _, g := range r.APIGroups {
				for _, res := range r.Resources {
					got[prefix+g+"/"+res] = append(got[prefix+g+"/"+res], r.Verbs...)
				}
			}
		}
	}
	gotY, _ := yaml.Marshal(got)
	wantY, _ := yaml.Marshal(want)
	if string(gotY) != string(wantY) {
		t.Errorf("ClusterRole grants\n%s\nwant\n%s", gotY, wantY)
	}
}

// config.metricsListen: the loopback by default (the probes go there too),
// the node's address through the downward API, or every address; anything
// else is refused.
func TestRenderMetricsListen(t *testing.T) {
	for _, tc := range []struct {
		set, config, flag, probeHost string
	}{
		{"", "metricsBindAddress: 127.0.0.1:9465", "", "127.0.0.1"},
		{"config.metricsListen=node", "metricsBindAddress: 127.0.0.1:9465", "--metrics-bind-address=[$(NODE_IP)]:9465", ""},
		{"config.metricsListen=all", "metricsBindAddress: 0.0.0.0:9465", "", "127.0.0.1"},
	} {
		var sets []string
		if tc.set != "" {
			sets = append(sets, tc.set)
		}
		for _, o := range render(t, sets...) {
			switch v := o.(type) {
			case *corev1.ConfigMap:
				if !strings.Contains(v.Data["config.yaml"], tc.config) {
					t.Errorf("%q: config.yaml lacks %q:\n%s", tc.set, tc.config, v.Data["config.yaml"])
				}
			case *appsv1.DaemonSet:
				c := v.Spec.Template.Spec.Containers[0]
				var flag string
				for _, a := range c.Args {
					if strings.HasPrefix(a, "--metrics-bind-address") {
						flag = a
					}
				}
				if flag != tc.flag {
					t.Errorf("%q: metrics flag %q, want %q", tc.set, flag, tc.flag)
				}
				hasIP := slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool {
					return e.Name == "NODE_IP" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "status.hostIP"
				})
				if hasIP != (tc.flag != "") {
					t.Errorf("%q: NODE_IP from status.hostIP present=%v", tc.set, hasIP)
				}
				for _, p := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe} {
					if p.HTTPGet == nil || p.HTTPGet.Host != tc.probeHost || p.HTTPGet.Port.IntValue() != 9465 {
						t.Errorf("%q: probe %+v, want host %q port 9465", tc.set, p.HTTPGet, tc.probeHost)
					}
				}
			}
		}
	}
	if _, err := Render(Options{Chart: chartDir, Set: []string{"config.metricsListen=everywhere"}}); err == nil ||
		!strings.Contains(err.Error(), "metricsListen") {
		t.Errorf("config.metricsListen=everywhere: err = %v", err)
	}
}

// Encryption values reach the agent's configuration; the userspace engine
// gets /dev/net/tun and a per-pod /var/run/wireguard without any privilege
// beyond the documented set; encryption off (the default) or the kernel
// engine mount neither. An unknown encryption is refused.
func TestRenderEncryption(t *testing.T) {
	type result struct {
		config    string
		mounts    map[string]corev1.VolumeMount
		volumes   map[string]corev1.Volume
		container corev1.Container
	}
	get := func(set ...string) result {
		t.Helper()
		r := result{mounts: map[string]corev1.VolumeMount{}, volumes: map[string]corev1.Volume{}}
		for _, o := range render(t, set...) {
			switch v := o.(type) {
			case *corev1.ConfigMap:
				r.config = v.Data["config.yaml"]
			case *appsv1.DaemonSet:
				r.container = v.Spec.Template.Spec.Containers[0]
				for _, m := range r.container.VolumeMounts {
					r.mounts[m.MountPath] = m
				}
				for _, vol := range v.Spec.Template.Spec.Volumes {
					r.volumes[vol.Name] = vol
				}
			}
		}
		return r
	}
	off := get()
	if !strings.Contains(off.config, "encryption: none") || strings.Contains(off.config, "encryptionStrict") {
		t.Errorf("default config.yaml %q: want encryption none and no encryptionStrict (it needs wireguard)", off.config)
	}
	if _, ok := off.mounts["/dev/net/tun"]; ok {
		t.Error("encryption off mounts /dev/net/tun")
	}

	on := get("config.encryption=wireguard", "config.wireguard.port=51999")
	for _, want := range []string{"encryption: wireguard", "encryptionStrict: true", "device: trellis.wg", "port: 51999", "engine: auto"} {
		if !strings.Contains(on.config, want) {
			t.Errorf("config.yaml lacks %q:\n%s", want, on.config)
		}
	}
	tun, ok := on.mounts["/dev/net/tun"]
	if !ok || on.volumes[tun.Name].HostPath == nil || on.volumes[tun.Name].HostPath.Path != "/dev/net/tun" ||
		on.volumes[tun.Name].HostPath.Type == nil || *on.volumes[tun.Name].HostPath.Type != corev1.HostPathCharDev {
		t.Errorf("encryption on: /dev/net/tun mount %+v, volume %+v; want the host's character device", tun, on.volumes[tun.Name])
	}
	run, ok := on.mounts["/var/run/wireguard"]
	if !ok || run.ReadOnly || on.volumes[run.Name].EmptyDir == nil {
		t.Errorf("encryption on: /var/run/wireguard mount %+v, volume %+v; want a writable emptyDir", run, on.volumes[run.Name])
	}
	checkLeastPrivilege(t, on.container)

	if s := get("config.encryption=wireguard", "config.encryptionStrict=false").config; !strings.Contains(s, "encryptionStrict: false") {
		t.Errorf("encryptionStrict=false not rendered:\n%s", s)
	}
	if k := get("config.encryption=wireguard", "config.wireguard.engine=kernel"); len(k.mounts) != len(off.mounts) {
		t.Errorf("kernel engine: mounts %v, want those of encryption off (no TUN)", k.mounts)
	}
	if _, err := Render(Options{Chart: chartDir, Set: []string{"config.encryption=ipsec"}}); err == nil || !strings.Contains(err.Error(), "ipsec") {
		t.Errorf("config.encryption=ipsec: err = %v, want a refusal", err)
	}
}
