package cluster

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// certLifetime is how long the cluster's certificates are valid: longer
// than any test, short enough that a forgotten work directory does not
// hold a useful CA for long.
const certLifetime = 7 * 24 * time.Hour

// keyPair is a certificate with its private key.
type keyPair struct {
	cert *x509.Certificate
	key  crypto.Signer
}

// clientIdentity is a component that authenticates to the API server with
// a client certificate, and the kubeconfig written for it.
type clientIdentity struct {
	file string // kubeconfig and certificate base name
	cn   string
	orgs []string
}

// clientIdentities returns the components' identities for node nodeName.
func clientIdentities(nodeName string) []clientIdentity {
	return []clientIdentity{
		{file: "admin", cn: "sluice-e2e-admin", orgs: []string{"system:masters"}},
		{file: "kcm", cn: "system:kube-controller-manager"},
		{file: "scheduler", cn: "system:kube-scheduler"},
		{file: "kubelet", cn: "system:node:" + nodeName, orgs: []string{"system:nodes"}},
		{file: "proxy", cn: "system:kube-proxy"},
	}
}

// writePKI creates the cluster CA, the API server's serving and
// kubelet-client certificates, the service-account key pair, and a client
// certificate plus kubeconfig for each component, under WorkDir/pki and
// WorkDir/kubeconfig.
func writePKI(c Config) error {
	pki := c.path("pki")
	if err := os.MkdirAll(pki, 0o700); err != nil {
		return err
	}
	if err := os.MkdirAll(c.path("kubeconfig"), 0o700); err != nil {
		return err
	}
	ca, err := newCA("sluice-e2e-ca")
	if err != nil {
		return err
	}
	if err := writeKeyPair(pki, "ca", ca); err != nil {
		return err
	}
	serving, err := ca.issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{c.NodeIP.AsSlice(), c.serviceIP().AsSlice(), net.IPv4(127, 0, 0, 1)},
		DNSNames: []string{
			"kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc.cluster.local", "localhost", c.NodeName,
		},
	})
	if err != nil {
		return err
	}
	if err := writeKeyPair(pki, "apiserver", serving); err != nil {
		return err
	}
	kubeletClient, err := ca.issue(clientTemplate("kube-apiserver-kubelet-client", "system:masters"))
	if err != nil {
		return err
	}
	if err := writeKeyPair(pki, "apiserver-kubelet-client", kubeletClient); err != nil {
		return err
	}
	sa, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	if err := writeKey(filepath.Join(pki, "sa.key"), sa); err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(sa.Public())
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(pki, "sa.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o600); err != nil {
		return err
	}
	server := fmt.Sprintf("https://%s:%d", c.NodeIP, c.APIServerPort)
	for _, id := range clientIdentities(c.NodeName) {
		kp, err := ca.issue(clientTemplate(id.cn, id.orgs...))
		if err != nil {
			return err
		}
		if err := writeKeyPair(pki, id.file, kp); err != nil {
			return err
		}
		if err := writeKubeconfig(c.path("kubeconfig", id.file+".conf"), server, ca, kp, id.cn); err != nil {
			return err
		}
	}
	return nil
}

func clientTemplate(cn string, orgs ...string) *x509.Certificate {
	return &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn, Organization: orgs},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
}

func newCA(cn string) (keyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return keyPair{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(certLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return keyPair{}, fmt.Errorf("self-signing the cluster CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return keyPair{}, err
	}
	return keyPair{cert: cert, key: key}, nil
}

// issue signs tmpl (subject, SANs and extended key usages filled in) with
// the CA and a new P-256 key.
func (ca keyPair) issue(tmpl *x509.Certificate) (keyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return keyPair{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return keyPair{}, err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(certLifetime)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return keyPair{}, fmt.Errorf("signing the certificate for %q: %w", tmpl.Subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return keyPair{}, err
	}
	return keyPair{cert: cert, key: key}, nil
}

func (kp keyPair) certPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: kp.cert.Raw})
}

func keyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func writeKey(path string, key crypto.Signer) error {
	b, err := keyPEM(key)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

// writeKeyPair writes dir/name.crt and dir/name.key.
func writeKeyPair(dir, name string, kp keyPair) error {
	if err := os.WriteFile(filepath.Join(dir, name+".crt"), kp.certPEM(), 0o644); err != nil {
		return err
	}
	return writeKey(filepath.Join(dir, name+".key"), kp.key)
}

// writeKubeconfig writes a kubeconfig with the CA, client certificate and
// key embedded, so it stays valid if copied elsewhere.
func writeKubeconfig(path, server string, ca, client keyPair, user string) error {
	key, err := keyPEM(client.key)
	if err != nil {
		return err
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["sluice-e2e"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca.certPEM()}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificateData: client.certPEM(), ClientKeyData: key}
	cfg.Contexts["sluice-e2e"] = &clientcmdapi.Context{Cluster: "sluice-e2e", AuthInfo: user}
	cfg.CurrentContext = "sluice-e2e"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("writing kubeconfig %s: %w", path, err)
	}
	return nil
}
