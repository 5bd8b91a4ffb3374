package broker

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Names of the objects EnsureCertificate keeps in the controller's
// namespace.
const (
	// CertificateSecret holds the broker's key and certificate.
	CertificateSecret = "artifacts-broker-tls"
	// CAConfigMap publishes the certificate (key CAKey) for node plugins
	// to trust.
	CAConfigMap = "artifacts-broker-ca"
	CAKey       = "ca.crt"
)

// certificateValidity is how long a made certificate is valid.
const certificateValidity = 10 * 365 * 24 * time.Hour

// EnsureCertificate returns the broker's serving certificate, kept in the
// Secret CertificateSecret of namespace: made (ECDSA P-256, self-signed,
// valid for hosts, which are DNS names or IP addresses) when the Secret
// is missing, and published in the ConfigMap CAConfigMap either way. It
// is idempotent, and safe for several replicas starting at once: the
// first Secret created wins and the others read it.
func EnsureCertificate(ctx context.Context, kube kubernetes.Interface, namespace string, hosts []string) (tls.Certificate, error) {
	secrets := kube.CoreV1().Secrets(namespace)
	sec, err := secrets.Get(ctx, CertificateSecret, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		certPEM, keyPEM, merr := makeCertificate(hosts)
		if merr != nil {
			return tls.Certificate{}, merr
		}
		sec, err = secrets.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: CertificateSecret, Namespace: namespace},
			Type: corev1.SecretTypeTLS, Data: map[string][]byte{corev1.TLSCertKey: certPEM, corev1.TLSPrivateKeyKey: keyPEM}}, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			sec, err = secrets.Get(ctx, CertificateSecret, metav1.GetOptions{})
		}
	}
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("broker certificate: Secret %s/%s: %w", namespace, CertificateSecret, err)
	}
	cert, err := tls.X509KeyPair(sec.Data[corev1.TLSCertKey], sec.Data[corev1.TLSPrivateKeyKey])
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("broker certificate: Secret %s/%s: %w", namespace, CertificateSecret, err)
	}
	if err := publish(ctx, kube, namespace, sec.Data[corev1.TLSCertKey]); err != nil {
		return tls.Certificate{}, err
	}
	return cert, nil
}

// publish writes certPEM into the ConfigMap CAConfigMap, if it differs.
func publish(ctx context.Context, kube kubernetes.Interface, namespace string, certPEM []byte) error {
	cms := kube.CoreV1().ConfigMaps(namespace)
	cm, err := cms.Get(ctx, CAConfigMap, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: CAConfigMap, Namespace: namespace},
			Data: map[string]string{CAKey: string(certPEM)}}, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return publish(ctx, kube, namespace, certPEM)
		}
	case err == nil && cm.Data[CAKey] != string(certPEM):
		cm.Data = map[string]string{CAKey: string(certPEM)}
		_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("broker certificate: ConfigMap %s/%s: %w", namespace, CAConfigMap, err)
	}
	return nil
}

// makeCertificate returns a self-signed serving certificate for hosts and
// its key, in PEM.
func makeCertificate(hosts []string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "artifacts-broker"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(certificateValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true, // its own root: node plugins trust exactly it
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}
