package policy

import (
	"sort"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// SelectingPolicies returns, sorted, the names ("namespace/name") of the
// policies among nps that select pod for direction ("ingress" or
// "egress"): the ones that isolate it in that direction, with the same
// selector and policyTypes reading as the compiler's.
func SelectingPolicies(pod *corev1.Pod, nps []*networkingv1.NetworkPolicy, direction string) []string {
	var out []string
	for _, np := range nps {
		if np.Namespace != pod.Namespace {
			continue
		}
		in, eg := policyTypes(np)
		if (direction == "ingress" && !in) || (direction == "egress" && !eg) || (direction != "ingress" && direction != "egress") {
			continue
		}
		if selector(&np.Spec.PodSelector).Matches(labels.Set(pod.Labels)) {
			out = append(out, np.Namespace+"/"+np.Name)
		}
	}
	sort.Strings(out)
	return out
}
