//go:build e2e

package framework

import "k8s.io/apimachinery/pkg/util/intstr"

func portOf(port int) intstr.IntOrString { return intstr.FromInt32(int32(port)) }
