package pki

import (
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

func TestCertificatesChainToTheLabCA(t *testing.T) {
	ca, err := NewCA("test-ca")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, _, err := ca.Issue(CertSpec{CommonName: "system:node:node1", Organization: []string{"system:nodes"}, Client: true})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(certPEM)
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client cert does not verify: %v", err)
	}
	if cert.Subject.CommonName != "system:node:node1" || cert.Subject.Organization[0] != "system:nodes" {
		t.Errorf("subject = %v", cert.Subject)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Error("a client-only certificate verified for server auth")
	}
	kcBytes, err := Kubeconfig("https://127.0.0.1:1", ca.CertPEM, nil, nil, "tok123", "agent")
	if err != nil {
		t.Fatal(err)
	}
	kc := string(kcBytes)
	if !strings.Contains(kc, "token: tok123") || strings.Contains(kc, "client-certificate-data") {
		t.Errorf("token kubeconfig wrong:\n%s", kc)
	}
	// client-go reads both kinds back as the lab's clients use them.
	certKC, err := Kubeconfig("https://127.0.0.1:2", ca.CertPEM, certPEM, []byte("key"), "", "system:node:node1")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		data  []byte
		check func(*rest.Config) bool
	}{
		{kcBytes, func(r *rest.Config) bool {
			return r.Host == "https://127.0.0.1:1" && r.BearerToken == "tok123" && len(r.CertData) == 0
		}},
		{certKC, func(r *rest.Config) bool {
			return r.Host == "https://127.0.0.1:2" && string(r.CertData) == string(certPEM) && string(r.KeyData) == "key"
		}},
	} {
		r, err := clientcmd.RESTConfigFromKubeConfig(c.data)
		if err != nil {
			t.Fatalf("client-go cannot load the kubeconfig: %v\n%s", err, c.data)
		}
		if !c.check(r) || string(r.CAData) != string(ca.CertPEM) {
			t.Errorf("kubeconfig loaded as host %s, token %q, cert %d bytes, CA %d bytes:\n%s", r.Host, r.BearerToken, len(r.CertData), len(r.CAData), c.data)
		}
	}
}
