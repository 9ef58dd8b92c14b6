package clusterdns

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/trellisnet/trellis/internal/lab/images"
	"github.com/trellisnet/trellis/internal/lab/topology"
)

// typed decodes every object of the manifest into its Go type, strictly: a
// misspelt field fails here rather than being dropped by the API server.
func typed(t *testing.T) (sa *corev1.ServiceAccount, cr *rbacv1.ClusterRole, crb *rbacv1.ClusterRoleBinding,
	cm *corev1.ConfigMap, d *appsv1.Deployment, svc *corev1.Service) {
	t.Helper()
	objs, err := Objects()
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, u := range objs {
		kinds = append(kinds, u.GetKind())
		var into any
		switch u.GetKind() {
		case "ServiceAccount":
			sa = &corev1.ServiceAccount{}
			into = sa
		case "ClusterRole":
			cr = &rbacv1.ClusterRole{}
			into = cr
		case "ClusterRoleBinding":
			crb = &rbacv1.ClusterRoleBinding{}
			into = crb
		case "ConfigMap":
			cm = &corev1.ConfigMap{}
			into = cm
		case "Deployment":
			d = &appsv1.Deployment{}
			into = d
		case "Service":
			svc = &corev1.Service{}
			into = svc
		default:
			t.Fatalf("unexpected kind %s in the manifest", u.GetKind())
		}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, into, true); err != nil {
			t.Fatalf("%s %s: %v", u.GetKind(), u.GetName(), err)
		}
	}
	want := []string{"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment", "Service"}
	if !slices.Equal(kinds, want) {
		t.Fatalf("manifest kinds (apply order) = %v, want %v", kinds, want)
	}
	return
}

func TestManifestServesTheAddressKubeletHandsOut(t *testing.T) {
	_, _, _, _, d, svc := typed(t)
	if svc.Name != Service || svc.Namespace != Namespace || svc.Spec.ClusterIP != topology.ClusterDNSIP {
		t.Errorf("service %s/%s clusterIP %s, want %s/%s %s (kubelet's clusterDNS)", svc.Namespace, svc.Name,
			svc.Spec.ClusterIP, Namespace, Service, topology.ClusterDNSIP)
	}
	protos := map[corev1.Protocol]bool{}
	for _, p := range svc.Spec.Ports {
		if p.Port == 53 && p.TargetPort.IntValue() == 53 {
			protos[p.Protocol] = true
		}
	}
	if !protos[corev1.ProtocolUDP] || !protos[corev1.ProtocolTCP] {
		t.Errorf("service ports %+v: want 53/UDP and 53/TCP", svc.Spec.Ports)
	}
	sel := svc.Spec.Selector
	if d.Spec.Template.Labels["k8s-app"] != sel["k8s-app"] || sel["k8s-app"] != strings.TrimPrefix(Selector, "k8s-app=") {
		t.Errorf("service selector %v does not select the deployment's pods %v", sel, d.Spec.Template.Labels)
	}
}

func TestManifestDeploymentRunsThePinnedImage(t *testing.T) {
	_, _, _, _, d, _ := typed(t)
	if d.Name != Deployment || d.Namespace != Namespace || d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
		t.Errorf("deployment %s/%s replicas %v, want %s/%s with 2", d.Namespace, d.Name, d.Spec.Replicas, Namespace, Deployment)
	}
	c := d.Spec.Template.Spec.Containers[0]
	if c.Image != images.CoreDNSImage || c.ImagePullPolicy != corev1.PullIfNotPresent {
		t.Errorf("image %s (%s), want %s IfNotPresent: the lab imports it, nothing may pull", c.Image, c.ImagePullPolicy, images.CoreDNSImage)
	}
	aff := d.Spec.Template.Spec.Affinity
	if aff == nil || aff.PodAntiAffinity == nil || len(aff.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) == 0 ||
		aff.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution[0].PodAffinityTerm.TopologyKey != "kubernetes.io/hostname" {
		t.Errorf("replicas are not spread over nodes: affinity %+v", aff)
	}
	if d.Spec.Template.Spec.DNSPolicy != corev1.DNSDefault {
		t.Errorf("dnsPolicy %s: CoreDNS must not use itself as its resolver", d.Spec.Template.Spec.DNSPolicy)
	}
}

// The pinned version lives in hack/build-pinned.sh (what is built) and in
// images.CoreDNSVersion (what the lab imports and the manifest runs).
func TestBuildScriptPinsTheImageVersion(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "..", "hack", "build-pinned.sh"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^COREDNS_VERSION=(\S+)$`).FindSubmatch(data)
	if m == nil || string(m[1]) != images.CoreDNSVersion {
		t.Errorf("hack/build-pinned.sh COREDNS_VERSION = %q, images.CoreDNSVersion = %q", m, images.CoreDNSVersion)
	}
}

func TestCorefileServesTheClusterZoneAndNothingOutside(t *testing.T) {
	_, _, _, cm, d, _ := typed(t)
	corefile := cm.Data["Corefile"]
	if !strings.Contains(corefile, "kubernetes "+topology.ClusterDomain+" ") {
		t.Errorf("Corefile does not serve %s through the kubernetes plugin:\n%s", topology.ClusterDomain, corefile)
	}
	for _, p := range []string{"health", "ready"} {
		if !regexp.MustCompile(`(?m)^\s*` + p + `\b`).MatchString(corefile) {
			t.Errorf("Corefile lacks the %s plugin (the probes use it):\n%s", p, corefile)
		}
	}
	// The lab must never send traffic outside the machine: no plugin that
	// asks another server.
	for _, p := range []string{"forward", "grpc", "secondary", "route53", "azure", "clouddns", "etcd"} {
		if regexp.MustCompile(`(?m)^\s*` + p + `\b`).MatchString(corefile) {
			t.Errorf("Corefile uses %s, which sends queries out of the lab:\n%s", p, corefile)
		}
	}
	// Every server block is a cluster zone: a `.` block would claim all names.
	for _, line := range strings.Split(corefile, "\n") {
		if strings.HasSuffix(strings.TrimSpace(line), "{") && !strings.HasPrefix(line, " ") {
			for _, zone := range strings.Fields(strings.TrimSuffix(line, "{")) {
				z := strings.TrimSuffix(zone, ":53")
				if z != topology.ClusterDomain && z != "in-addr.arpa" && z != "ip6.arpa" {
					t.Errorf("server block for %q: only the cluster's zones are served", zone)
				}
			}
		}
	}
	vol := d.Spec.Template.Spec.Volumes[0]
	if vol.ConfigMap == nil || vol.ConfigMap.Name != cm.Name {
		t.Errorf("the deployment mounts %+v, not the ConfigMap %s", vol, cm.Name)
	}
}

func TestRBACIsReadOnlyAndCoversThePlugin(t *testing.T) {
	sa, cr, crb, _, d, _ := typed(t)
	need := map[string]bool{"/services": false, "/pods": false, "/namespaces": false, "discovery.k8s.io/endpointslices": false}
	for _, r := range cr.Rules {
		for _, v := range r.Verbs {
			if v != "list" && v != "watch" {
				t.Errorf("rule %+v grants %q: CoreDNS only lists and watches", r, v)
			}
		}
		if !slices.Contains(r.Verbs, "list") || !slices.Contains(r.Verbs, "watch") {
			continue
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				need[g+"/"+res] = true
			}
		}
	}
	for k, ok := range need {
		if !ok {
			t.Errorf("ClusterRole %s does not grant list+watch on %s", cr.Name, k)
		}
	}
	if crb.RoleRef.Name != cr.Name || len(crb.Subjects) != 1 || crb.Subjects[0].Name != sa.Name ||
		crb.Subjects[0].Namespace != sa.Namespace || d.Spec.Template.Spec.ServiceAccountName != sa.Name {
		t.Errorf("binding %+v does not tie %s to the deployment's service account %s/%s", crb, cr.Name, sa.Namespace, sa.Name)
	}
}

// kube-dns has one ClusterIP per family of the lab, primary first, and
// the IPv4 lab's Service stays as the manifest writes it.
func TestServiceClusterIPsPerIPFamily(t *testing.T) {
	for _, family := range topology.IPFamilies {
		topo, err := topology.Plan(topology.Options{Nodes: 1, Subnets: 1, RoutingMode: "auto", APIPort: 16443, IPFamily: family})
		if err != nil {
			t.Fatal(err)
		}
		objs, err := Objects()
		if err != nil {
			t.Fatal(err)
		}
		if err := WithClusterIPs(objs, topo.ClusterDNSIPs()); err != nil {
			t.Fatal(err)
		}
		var svc corev1.Service
		for _, u := range objs {
			if u.GetKind() == "Service" {
				if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, &svc, true); err != nil {
					t.Fatal(err)
				}
			}
		}
		want := []string{}
		for _, a := range topo.ClusterDNSIPs() {
			want = append(want, a.String())
		}
		switch family {
		case topology.IPv4:
			if svc.Spec.ClusterIP != topology.ClusterDNSIP || svc.Spec.ClusterIPs != nil || svc.Spec.IPFamilyPolicy != nil {
				t.Errorf("ipv4: the Service changed: %+v", svc.Spec)
			}
		case topology.Dual:
			if !slices.Equal(svc.Spec.ClusterIPs, want) || svc.Spec.ClusterIP != want[0] ||
				svc.Spec.IPFamilyPolicy == nil || *svc.Spec.IPFamilyPolicy != corev1.IPFamilyPolicyRequireDualStack ||
				!slices.Equal(svc.Spec.IPFamilies, []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}) {
				t.Errorf("dual: %+v", svc.Spec)
			}
		case topology.IPv6:
			if !slices.Equal(svc.Spec.ClusterIPs, want) || svc.Spec.ClusterIP != "fd74:7265:6c02::a" ||
				!slices.Equal(svc.Spec.IPFamilies, []corev1.IPFamily{corev1.IPv6Protocol}) {
				t.Errorf("ipv6: %+v", svc.Spec)
			}
		}
	}
}

// The lab's CoreDNS links only some plugins (tools/coredns/coredns): every
// directive of the Corefile must be one of them, or CoreDNS refuses to start
// ("unknown directive") and the lab has no cluster DNS.
func TestCorefileUsesOnlyLinkedPlugins(t *testing.T) {
	_, _, _, cm, _, _ := typed(t)
	src, err := os.ReadFile(filepath.Join("..", "..", "..", "tools", "coredns", "coredns", "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	linked := map[string]bool{}
	for _, m := range regexp.MustCompile(`"github.com/coredns/coredns/plugin/(\w+)"`).FindAllSubmatch(src, -1) {
		linked[string(m[1])] = true
	}
	// Directive names that differ from their plugin's package.
	pkgOf := map[string]string{"prometheus": "metrics"}
	depth, directives := 0, 0
	for _, line := range strings.Split(cm.Data["Corefile"], "\n") {
		fields := strings.Fields(line)
		if depth == 1 && len(fields) > 0 && fields[0] != "}" {
			directives++
			pkg := fields[0]
			if p, ok := pkgOf[pkg]; ok {
				pkg = p
			}
			if !linked[pkg] {
				t.Errorf("the Corefile uses %s, which tools/coredns/coredns/main.go does not link (package plugin/%s)", fields[0], pkg)
			}
		}
		depth += strings.Count(line, "{") - strings.Count(line, "}")
	}
	if directives == 0 {
		t.Fatalf("found no directive in the Corefile:\n%s", cm.Data["Corefile"])
	}
}
