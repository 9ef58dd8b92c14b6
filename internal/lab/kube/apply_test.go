package kube

import "testing"

func TestDecodeManifestSkipsEmptyDocumentsKeepsOrder(t *testing.T) {
	objs, err := DecodeManifest([]byte("# comment only\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: a, namespace: kube-system}\n---\n---\napiVersion: v1\nkind: Service\nmetadata: {name: b, namespace: kube-system}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 2 || objs[0].GetKind() != "ServiceAccount" || objs[1].GetName() != "b" {
		t.Fatalf("decoded %d objects: %v", len(objs), objs)
	}
}

func TestDecodeManifestRejects(t *testing.T) {
	for name, in := range map[string]string{
		"no kind":  "apiVersion: v1\nmetadata: {name: a}\n",
		"no name":  "apiVersion: v1\nkind: Service\nmetadata: {namespace: x}\n",
		"not yaml": "apiVersion: v1\nkind: [\n",
	} {
		if objs, err := DecodeManifest([]byte(in)); err == nil {
			t.Errorf("%s: accepted as %v", name, objs)
		}
	}
}
