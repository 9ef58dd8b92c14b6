package pki

import (
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
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
	kc := string(Kubeconfig("https://127.0.0.1:1", ca.CertPEM, nil, nil, "tok123", "agent"))
	if !strings.Contains(kc, "token: tok123") || strings.Contains(kc, "client-certificate-data") {
		t.Errorf("token kubeconfig wrong:\n%s", kc)
	}
}
