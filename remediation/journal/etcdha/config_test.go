package etcdha

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	commoncfg "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/vps-exporter/vps_exporter/config"
)

// testCA is a certificate authority of the test's own.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	dir  string
	file string // its certificate, PEM
}

func newTestCA(t *testing.T, dir string) *testCA {
	t.Helper()
	ca := &testCA{dir: dir}
	ca.cert, ca.key = ca.issue(t, "ca", nil, true)
	return ca
}

// issue makes a certificate for name (an IP SAN when ip is set), signed
// by the CA (self-signed for the CA itself), and writes name.pem and
// name-key.pem; it returns the certificate and its key.
func (ca *testCA) issue(t *testing.T, name string, ip net.IP, isCA bool) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	if ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	}
	parent, signer := tmpl, key
	if isCA {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	} else {
		parent, signer = ca.cert, ca.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile := filepath.Join(ca.dir, name+".pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ca.dir, name+"-key.pem"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	if isCA {
		ca.file = certFile
	}
	return cert, key
}

// writeCert writes a certificate and its key (PEM) to dir.
func writeCert(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	ca := newTestCA(t, dir)
	ca.issue(t, "client", nil, false)
	return filepath.Join(dir, "client.pem"), filepath.Join(dir, "client-key.pem")
}

// FromConfig carries the file's settings over and reads the TLS files;
// errors name the key, never its value (a secret pasted in place of a file
// name), a key's or the password's content.
func TestFromConfig(t *testing.T) {
	dir := t.TempDir()
	cert, key := writeCert(t, dir)
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("key-SECRET-material"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := func(tls config.EtcdTLS) *config.HA {
		return &config.HA{AdvertiseURL: "http://r:9877/", Etcd: config.Etcd{Endpoints: []string{"https://e:2379"}, Prefix: "/p",
			LeaseTTL: model.Duration(5 * time.Second), TLS: tls, Username: "u", Password: "pw-SECRET"}}
	}
	for _, tc := range []struct {
		name    string
		tls     config.EtcdTLS
		wantErr string
		certs   int
		roots   bool
	}{
		{"no tls", config.EtcdTLS{}, "", 0, false},
		{"ca only", config.EtcdTLS{CAFile: cert}, "", 0, true},
		{"client cert", config.EtcdTLS{CAFile: cert, CertFile: cert, KeyFile: key}, "", 1, true},
		{"ca not pem", config.EtcdTLS{CAFile: notPEM}, "etcdha: remediation.ha.etcd.tls.ca_file: no PEM certificate in the file it names", 0, false},
		{"ca missing", config.EtcdTLS{CAFile: filepath.Join(dir, "none")}, "etcdha: remediation.ha.etcd.tls.ca_file: cannot read the file it names: no such file or directory", 0, false},
		{"key not pem", config.EtcdTLS{CertFile: cert, KeyFile: notPEM}, "etcdha: remediation.ha.etcd.tls: cannot load the key pair named by cert_file and key_file", 0, false},
		// A secret pasted in place of a file name is not repeated.
		{"secret as ca_file", config.EtcdTLS{CAFile: filepath.Join(dir, "tok-SECRET-ca")}, "etcdha: remediation.ha.etcd.tls.ca_file: cannot read the file it names: no such file or directory", 0, false},
		{"secret as cert_file", config.EtcdTLS{CertFile: "tok-SECRET-cert", KeyFile: key}, "etcdha: remediation.ha.etcd.tls: cannot load the key pair named by cert_file and key_file", 0, false},
		{"secret as key_file", config.EtcdTLS{CertFile: cert, KeyFile: "tok-SECRET-key"}, "etcdha: remediation.ha.etcd.tls: cannot load the key pair named by cert_file and key_file", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := FromConfig(base(tc.tls))
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("error %v, want %s", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "SECRET") {
					t.Errorf("a secret in the error: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.AdvertiseURL != "http://r:9877" || c.Prefix != "/p" || c.LeaseTTL != 5*time.Second || c.Username != "u" || c.Password != "pw-SECRET" ||
				len(c.Endpoints) != 1 || c.Endpoints[0] != "https://e:2379" {
				t.Errorf("config %+v", c)
			}
			if (c.TLS != nil) != tc.tls.Enabled() {
				t.Fatalf("tls %v, want set %v", c.TLS, tc.tls.Enabled())
			}
			if c.TLS != nil && (len(c.TLS.Certificates) != tc.certs || (c.TLS.RootCAs != nil) != tc.roots) {
				t.Errorf("tls: %d certificates, roots %v", len(c.TLS.Certificates), c.TLS.RootCAs != nil)
			}
		})
	}
}

// New refuses what would make the fence or the deadline meaningless.
func TestNewChecks(t *testing.T) {
	ok := Config{Endpoints: []string{"http://127.0.0.1:1"}, Prefix: "/p", LeaseTTL: 2 * time.Second, AdvertiseURL: "http://a:1"}
	for _, tc := range []struct {
		name   string
		change func(c *Config)
		want   string
	}{
		{"ok", func(*Config) {}, ""},
		{"no endpoints", func(c *Config) { c.Endpoints = nil }, "etcdha: no etcd endpoints"},
		{"prefix", func(c *Config) { c.Prefix = "p/" }, `etcdha: prefix "p/": want /name, no trailing /`},
		{"ttl short", func(c *Config) { c.LeaseTTL = time.Second }, "etcdha: lease TTL 1s: want a whole number of seconds, at least 2s"},
		{"ttl fraction", func(c *Config) { c.LeaseTTL = 2500 * time.Millisecond }, "etcdha: lease TTL 2.5s: want a whole number of seconds, at least 2s"},
		{"no advertise", func(c *Config) { c.AdvertiseURL = "" }, "etcdha: no advertise URL"},
		{"margin", func(c *Config) { c.SendMargin = 2 * time.Second }, "etcdha: send margin 2s: want [0, lease TTL)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.change(&c)
			m, err := NewMetrics(prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			e, err := New(c, m, nil)
			if e != nil {
				defer e.Close()
			}
			if (tc.want == "" && err != nil) || (tc.want != "" && (err == nil || err.Error() != tc.want)) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
}

// Without etcd nobody leads: a campaign fails with its context, the
// backend is down, and no leader URL is known (a standby answers 503).
func TestNoEtcd(t *testing.T) {
	dead := "http://" + freeAddr(t) // nothing listens there
	e := newElector(t, dead, "a", ttl)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	term, err := e.Campaign(ctx)
	if term != nil || err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("campaign without etcd: %v, %v", term, err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the campaign outlived its context: %v", took)
	}
	if gauge(e.metrics.BackendUp) != 0 || gauge(e.metrics.Leader) != 0 {
		t.Errorf("backend up %v, leader %v", gauge(e.metrics.BackendUp), gauge(e.metrics.Leader))
	}
	wctx, wcancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer wcancel()
	e.Watch(wctx) // returns with its context
	if u, ok := e.LeaderURL(); ok {
		t.Errorf("leader %q without etcd", u)
	}
}

// Write's operations, relative to the state prefix, in one fenced
// transaction; an empty key is refused before anything is sent.
func TestWriteOps(t *testing.T) {
	ep := startEtcd(t)
	op := rawClient(t, ep)
	a := newElector(t, ep, "a", ttl)
	r := lead(t, campaign(a, time.Minute), 15*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, tc := range []struct {
		name string
		ops  []Op
		want string // the state after, k=v sorted
		err  string
	}{
		{"puts", []Op{Put("a/1", []byte("x")), Put("a/2", []byte("y")), Put("b", []byte("z"))}, "a/1=x a/2=y b=z", ""},
		{"overwrite and delete", []Op{Put("b", []byte("w")), Delete("a/1")}, "a/2=y b=w", ""},
		// etcd refuses one transaction whose operations overlap; that is
		// no fence refusal: the term still leads.
		{"overlapping", []Op{Put("a/3", []byte("v")), DeletePrefix("a/")}, "a/2=y b=w", "etcdha: fenced write: etcdserver: duplicate key given in txn request"},
		{"delete prefix", []Op{DeletePrefix("a/")}, "b=w", ""},
		{"empty key", []Op{Put("c", []byte("c")), Delete("")}, "b=w", "etcdha: write: empty key"},
		{"empty prefix", []Op{DeletePrefix("")}, "b=w", "etcdha: write: empty key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rev, err := r.term.Write(ctx, tc.ops...)
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Errorf("error %v, want %s", err, tc.err)
				}
			} else if err != nil || rev == 0 {
				t.Fatalf("write: %d %v", rev, err)
			}
			resp, err := op.Get(ctx, a.StatePrefix(), clientv3.WithPrefix())
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, kv := range resp.Kvs {
				got = append(got, strings.TrimPrefix(string(kv.Key), a.StatePrefix())+"="+string(kv.Value))
			}
			if strings.Join(got, " ") != tc.want {
				t.Errorf("state %q, want %q", strings.Join(got, " "), tc.want)
			}
		})
	}
	if r.term.Err() != nil || gauge(a.metrics.FencingRefusals) != 0 {
		t.Errorf("the leader's own writes: err %v, refusals %v", r.term.Err(), gauge(a.metrics.FencingRefusals))
	}
}

// An elector built by FromConfig from the file's settings reaches an etcd
// that asks for TLS with client certificates and for a user's password:
// it leads and writes. The wrong CA, no client certificate or the wrong
// password get no leadership, and no error shows the password.
func TestTLSAndAuth(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, dir)
	ca.issue(t, "server", net.ParseIP("127.0.0.1"), false)
	ca.issue(t, "client", nil, false)
	other := newTestCA(t, t.TempDir())
	ep := startEtcdWith(t, "https", func(cfg *embed.Config) {
		cfg.ClientTLSInfo = transport.TLSInfo{CertFile: filepath.Join(dir, "server.pem"), KeyFile: filepath.Join(dir, "server-key.pem"),
			TrustedCAFile: ca.file, ClientCertAuth: true}
	})
	good := config.EtcdTLS{CAFile: ca.file, CertFile: filepath.Join(dir, "client.pem"), KeyFile: filepath.Join(dir, "client-key.pem")}
	// etcd's auth on: a root user and the exporter's user, whose role may
	// use the prefix.
	root, err := FromConfig(&config.HA{AdvertiseURL: "http://root:1", Etcd: config.Etcd{Endpoints: []string{ep}, Prefix: testPrefix,
		LeaseTTL: model.Duration(ttl), TLS: good}})
	if err != nil {
		t.Fatal(err)
	}
	admin, err := clientv3.New(clientv3.Config{Endpoints: root.Endpoints, TLS: root.TLS, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, step := range []func() error{
		func() error { _, err := admin.UserAdd(ctx, "root", "root-SECRET"); return err },
		func() error { _, err := admin.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := admin.RoleAdd(ctx, "exporter"); return err },
		func() error {
			_, err := admin.RoleGrantPermission(ctx, "exporter", testPrefix+"/", clientv3.GetPrefixRangeEnd(testPrefix+"/"), clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := admin.UserAdd(ctx, "vps", "etcd-SECRET-pw"); return err },
		func() error { _, err := admin.UserGrantRole(ctx, "vps", "exporter"); return err },
		func() error { _, err := admin.AuthEnable(ctx); return err },
	} {
		if err := step(); err != nil {
			t.Fatalf("set up etcd auth: %v", err)
		}
	}
	for _, tc := range []struct {
		name     string
		tls      config.EtcdTLS
		password string
		ok       bool
	}{
		{"tls and password", good, "etcd-SECRET-pw", true},
		{"wrong password", good, "etcd-SECRET-wrong", false},
		{"no client certificate", config.EtcdTLS{CAFile: ca.file}, "etcd-SECRET-pw", false},
		{"another CA", config.EtcdTLS{CAFile: other.file, CertFile: good.CertFile, KeyFile: good.KeyFile}, "etcd-SECRET-pw", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := FromConfig(&config.HA{AdvertiseURL: "http://a:9877", Etcd: config.Etcd{Endpoints: []string{ep}, Prefix: testPrefix,
				LeaseTTL: model.Duration(ttl), TLS: tc.tls, Username: "vps", Password: commoncfg.Secret(tc.password)}})
			if err != nil {
				t.Fatal(err)
			}
			m, err := NewMetrics(prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			e, err := New(c, m, nil)
			if err != nil {
				if tc.ok {
					t.Fatal(err)
				}
				if strings.Contains(err.Error(), "SECRET") {
					t.Errorf("the password in the error: %v", err)
				}
				return
			}
			defer e.Close()
			cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer ccancel()
			term, err := e.Campaign(cctx)
			if !tc.ok {
				if err == nil {
					t.Fatal("led without the right credentials")
				}
				if strings.Contains(err.Error(), "SECRET") {
					t.Errorf("the password in the error: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, err := term.Write(cctx, Put("x", []byte("1"))); err != nil {
				t.Fatal(err)
			}
			if err := term.Resign(cctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}
