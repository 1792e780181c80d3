package forward

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// CA file names `condaproxy ca init` writes.
const (
	CACertFile = "ca.pem"
	CAKeyFile  = "ca-key.pem"
)

// ErrExists is a CA already in the directory, kept unless forced.
var ErrExists = errors.New("a CA is already there")

// InitCA writes a new CA to dir: ca.pem (the certificate clients trust) and
// ca-key.pem (readable by its owner only). An existing one is kept unless
// force: clients that trust it would stop working.
func InitCA(dir string, force bool) (certPath, keyPath string, err error) {
	certPath, keyPath = filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	if !force {
		for _, p := range []string{certPath, keyPath} {
			if _, err := os.Stat(p); err == nil {
				return "", "", fmt.Errorf("%s: %w (--force replaces it, and every client must trust the new one)", p, ErrExists)
			}
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return "", "", err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "condaproxy forward-proxy CA", Organization: []string{"condaproxy"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", err
	}
	// The key first, mode 0600 from its creation: never readable by others,
	// not even for a moment.
	if err := writeFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return "", "", err
	}
	if err := writeFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return "", "", err
	}
	return certPath, keyPath, nil
}

func writeFile(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	os.Remove(tmp)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}

// LoadCA reads a CA certificate and its key (PEM).
func LoadCA(certPath, keyPath string) (*tls.Certificate, error) {
	ca, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return nil, err
	}
	if ca.Leaf, err = x509.ParseCertificate(ca.Certificate[0]); err != nil {
		return nil, err
	}
	if !ca.Leaf.IsCA {
		return nil, fmt.Errorf("%s is not a CA certificate", certPath)
	}
	return &ca, nil
}

// leafCache signs one certificate per intercepted host and keeps it: signing
// on every CONNECT would cost a key generation each (goproxy has no cache by
// default). Concurrent CONNECTs to one host share one signing.
type leafCache struct {
	ca    *tls.Certificate
	mu    sync.Mutex
	certs map[string]*tls.Certificate
	group singleflight.Group
}

func newLeafCache(ca *tls.Certificate) *leafCache {
	return &leafCache{ca: ca, certs: map[string]*tls.Certificate{}}
}

// get returns the certificate for host (a name or an IP: an IP goes in an IP
// SAN, as clients check it there), signing it on first use or near its end.
func (c *leafCache) get(host string) (*tls.Certificate, error) {
	c.mu.Lock()
	cert, ok := c.certs[host]
	c.mu.Unlock()
	if ok && time.Until(cert.Leaf.NotAfter) > 24*time.Hour {
		return cert, nil
	}
	v, err, _ := c.group.Do(host, func() (any, error) {
		cert, err := c.sign(host)
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
		c.certs[host] = cert
		c.mu.Unlock()
		return cert, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*tls.Certificate), nil
}

func (c *leafCache) sign(host string) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: host},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(0, 0, 90),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if ip := net.ParseIP(host); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{host}
	}
	if tmpl.NotAfter.After(c.ca.Leaf.NotAfter) {
		tmpl.NotAfter = c.ca.Leaf.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.ca.Leaf, &key.PublicKey, c.ca.PrivateKey)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der, c.ca.Certificate[0]}, PrivateKey: key, Leaf: leaf}, nil
}
