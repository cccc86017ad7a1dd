package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/vps-exporter/vps_exporter/config"
)

const haAccount = "providers: [{type: vpsorg, name: a, token: t}]\n"

// An ha block gets its defaults, makes state_file optional and parses its
// URLs; without one nothing changes.
func TestHADefaults(t *testing.T) {
	for _, tc := range []struct {
		name, remediation string
		wantHA            bool
		prefix            string
		ttl               time.Duration
	}{
		{"no ha", "{enabled: true, state_file: /tmp/x}", false, "", 0},
		{"ha, defaults, no state_file", "{enabled: true, ha: {advertise_url: 'http://10.0.0.5:9877', etcd: {endpoints: ['http://etcd-0:2379']}}}",
			true, config.DefaultEtcdPrefix, config.DefaultLeaseTTL},
		{"ha without etcd block fields set", "{ha: {advertise_url: 'https://r1.example:9877/', etcd: {endpoints: ['https://e:2379', 'http://f:2379'], prefix: /x/y, lease_ttl: 3s}}}",
			true, "/x/y", 3 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := config.Parse([]byte(haAccount+"remediation: "+tc.remediation+"\n"), ".")
			if err != nil {
				t.Fatal(err)
			}
			h := c.Remediation.HA
			if (h != nil) != tc.wantHA {
				t.Fatalf("ha %+v, want set %v", h, tc.wantHA)
			}
			if h == nil {
				return
			}
			if h.Etcd.Prefix != tc.prefix || time.Duration(h.Etcd.LeaseTTL) != tc.ttl {
				t.Errorf("prefix %q lease_ttl %v, want %q %v", h.Etcd.Prefix, h.Etcd.LeaseTTL, tc.prefix, tc.ttl)
			}
			if h.Advertise == nil || h.Advertise.String() != h.AdvertiseURL {
				t.Errorf("advertise %v, want %s parsed", h.Advertise, h.AdvertiseURL)
			}
		})
	}
}

// Each file has one mistake in its ha block and gets exactly these lines.
func TestHAInvalid(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{"pw": "etcd-SECRET-pw\n", "empty": "\n", "ca.pem": "x", "cert.pem": "x", "key.pem": "x"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	const ep = "etcd: {endpoints: ['http://e:2379']}"
	const adv = "advertise_url: 'http://r:9877'"
	for _, tc := range []struct{ name, ha, want string }{
		{"advertise_url missing", "{" + ep + "}",
			"remediation.ha.advertise_url: required: how the other replicas reach this one, e.g. http://10.0.0.5:9877"},
		{"advertise_url on every address", "{advertise_url: 'http://0.0.0.0:9877', " + ep + "}",
			"remediation.ha.advertise_url: 0.0.0.0 is no address another replica can reach (it listens on every address): name this replica's own address or DNS name, e.g. http://10.0.0.5:9877"},
		{"advertise_url on every IPv6 address", "{advertise_url: 'http://[::]:9877', " + ep + "}",
			"remediation.ha.advertise_url: :: is no address another replica can reach (it listens on every address): name this replica's own address or DNS name, e.g. http://10.0.0.5:9877"},
		{"advertise_url relative", "{advertise_url: 'r:9877', " + ep + "}",
			`remediation.ha.advertise_url: want an absolute http(s) URL with a host, e.g. http://10.0.0.5:9877, got "r:9877"`},
		{"advertise_url no scheme", "{advertise_url: '10.0.0.5:9877', " + ep + "}",
			`remediation.ha.advertise_url: want an absolute http(s) URL without query, fragment or user info (the value is not shown: it may carry a credential)`},
		{"advertise_url with user info, not shown", "{advertise_url: 'http://u:pass-SECRET@r:9877', " + ep + "}",
			"remediation.ha.advertise_url: want an absolute http(s) URL without query, fragment or user info (the value is not shown: it may carry a credential)"},
		{"advertise_url with a path", "{advertise_url: 'http://r:9877/vps', " + ep + "}",
			`remediation.ha.advertise_url: want a URL without a path, got "http://r:9877/vps"`},
		{"advertise_url ftp", "{advertise_url: 'ftp://r', " + ep + "}",
			`remediation.ha.advertise_url: want an absolute http(s) URL with a host, e.g. http://10.0.0.5:9877, got "ftp://r"`},
		{"etcd missing", "{" + adv + "}",
			"remediation.ha.etcd.endpoints: at least one etcd client URL is required, e.g. [http://etcd-0:2379]"},
		{"endpoints empty", "{" + adv + ", etcd: {endpoints: []}}",
			"remediation.ha.etcd.endpoints: at least one etcd client URL is required, e.g. [http://etcd-0:2379]"},
		{"endpoint without scheme", "{" + adv + ", etcd: {endpoints: ['http://e:2379', 'etcd-1']}}",
			`remediation.ha.etcd.endpoints[1]: want an absolute http(s) URL with a host, e.g. http://10.0.0.5:9877, got "etcd-1"`},
		{"endpoint twice", "{" + adv + ", etcd: {endpoints: ['http://e:2379', 'http://e:2379']}}",
			"remediation.ha.etcd.endpoints[1]: duplicate of endpoints[0]"},
		{"prefix empty", "{" + adv + ", etcd: {endpoints: ['http://e:2379'], prefix: ''}}",
			"remediation.ha.etcd.prefix: must not be empty (default /vps_exporter)"},
		{"prefix relative", "{" + adv + ", etcd: {endpoints: ['http://e:2379'], prefix: vps}}",
			`remediation.ha.etcd.prefix: want a key path like /vps_exporter (starting with /, no trailing /), got "vps"`},
		{"prefix trailing slash", "{" + adv + ", etcd: {endpoints: ['http://e:2379'], prefix: /vps/}}",
			`remediation.ha.etcd.prefix: want a key path like /vps_exporter (starting with /, no trailing /), got "/vps/"`},
		{"prefix with a space", "{" + adv + ", etcd: {endpoints: ['http://e:2379'], prefix: '/a b'}}",
			`remediation.ha.etcd.prefix: must not contain spaces or control characters, got "/a b"`},
		{"lease_ttl short", "{" + adv + ", etcd: {endpoints: ['http://e:2379'], lease_ttl: 1s}}",
			"remediation.ha.etcd.lease_ttl: must be between 2s and 5m, got 1s"},
		{"lease_ttl long", "{" + adv + ", etcd: {endpoints: ['http://e:2379'], lease_ttl: 1h}}",
			"remediation.ha.etcd.lease_ttl: must be between 2s and 5m, got 1h"},
		{"lease_ttl fraction", "{" + adv + ", etcd: {endpoints: ['http://e:2379'], lease_ttl: 2500ms}}",
			"remediation.ha.etcd.lease_ttl: must be a whole number of seconds (an etcd lease's TTL), got 2s500ms"},
		{"lease_ttl not a duration", "{" + adv + ", etcd: {endpoints: ['http://e:2379'], lease_ttl: 10}}",
			"remediation.ha.etcd.lease_ttl: 10: not a duration, e.g. 10s"},
		{"unknown field", "{" + adv + ", etcd: {endpoints: ['http://e:2379'], endpoint: x}}",
			"remediation.ha.etcd.endpoint: unknown field, did you mean `endpoints`?"},
		{"inline password refused, not shown", "{" + adv + ", etcd: {endpoints: ['http://e:2379'], username: u, password: etcd-SECRET-inline}}",
			"remediation.ha.etcd.password: unknown field, did you mean `password_file`?"},
		{"cert without key", "{" + adv + ", etcd: {endpoints: ['https://e:2379'], tls: {cert_file: cert.pem}}}",
			"remediation.ha.etcd.tls.key_file: cert_file and key_file go together"},
		{"key without cert", "{" + adv + ", etcd: {endpoints: ['https://e:2379'], tls: {key_file: key.pem}}}",
			"remediation.ha.etcd.tls.cert_file: cert_file and key_file go together"},
		{"ca file missing", "{" + adv + ", etcd: {endpoints: ['https://e:2379'], tls: {ca_file: nope.pem}}}",
			"remediation.ha.etcd.tls.ca_file: cannot read the file it names: no such file or directory " +
				"(the value is not shown: if it is a key, a certificate or a password itself, put it in a file and name that file here)"},
		{"password_file without username", "{" + adv + ", etcd: {endpoints: ['http://e:2379'], password_file: pw}}",
			"remediation.ha.etcd.username: required with password_file"},
		{"username without password_file", "{" + adv + ", etcd: {endpoints: ['http://e:2379'], username: u}}",
			"remediation.ha.etcd.password_file: required with username"},
		{"password_file empty", "{" + adv + ", etcd: {endpoints: ['http://e:2379'], username: u, password_file: empty}}",
			"remediation.ha.etcd.password_file: " + filepath.Join(dir, "empty") + " is empty"},
		{"password_file missing", "{" + adv + ", etcd: {endpoints: ['http://e:2379'], username: u, password_file: none}}",
			"remediation.ha.etcd.password_file: cannot read the file it names: no such file or directory (the value is not shown: if it is the secret itself, put it in a file and name that file here)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Parse([]byte(haAccount+"remediation: {enabled: true, ha: "+tc.ha+"}\n"), dir)
			if err == nil {
				t.Fatalf("accepted; want error:\n%s", tc.want)
			}
			if err.Error() != tc.want {
				t.Fatalf("error:\n%v\nwant:\n%s", err, tc.want)
			}
			if strings.Contains(err.Error(), "SECRET") {
				t.Errorf("a secret in the error: %v", err)
			}
		})
	}
}

// The etcd password is read from its file (relative to the
// configuration's directory) and never shown; the TLS paths are resolved
// the same way.
func TestHAFiles(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{"pw": "etcd-SECRET-pw\n", "ca.pem": "x", "cert.pem": "x", "key.pem": "x"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := haAccount + "remediation:\n  ha:\n    advertise_url: http://r:9877\n    etcd:\n      endpoints: [https://e:2379]\n" +
		"      username: exporter\n      password_file: pw\n      tls: {ca_file: ca.pem, cert_file: " + filepath.Join(dir, "cert.pem") + ", key_file: key.pem}\n"
	if err := os.WriteFile(filepath.Join(dir, "c.yml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(filepath.Join(dir, "c.yml"))
	if err != nil {
		t.Fatal(err)
	}
	e := c.Remediation.HA.Etcd
	if string(e.Password) != "etcd-SECRET-pw" || e.Username != "exporter" {
		t.Errorf("password not read from its file: %q %q", e.Username, e.Password)
	}
	// The configuration as accepted marshals without the password (as
	// the fuzz test asks of every accepted file).
	out, err := yaml.Marshal(c)
	if err != nil || strings.Contains(string(out), "SECRET") || !strings.Contains(string(out), "password_file: pw") {
		t.Errorf("marshalled (%v):\n%s", err, out)
	}
	if e.TLS.CAFile != filepath.Join(dir, "ca.pem") || e.TLS.CertFile != filepath.Join(dir, "cert.pem") || e.TLS.KeyFile != filepath.Join(dir, "key.pem") || !e.TLS.Enabled() {
		t.Errorf("tls paths not resolved against the config's directory: %+v", e.TLS)
	}
	// A later mistake in the same file names the password file, never its
	// content.
	bad := strings.Replace(cfg, "endpoints: [https://e:2379]", "endpoints: [https://e:2379]\n      lease_ttl: 1s", 1) + "  max_attempts: 0\n"
	if err := os.WriteFile(filepath.Join(dir, "c.yml"), []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = config.Load(filepath.Join(dir, "c.yml"))
	if err == nil || strings.Contains(err.Error(), "SECRET") || !strings.Contains(err.Error(), "remediation.ha.etcd.lease_ttl") {
		t.Errorf("error %v: want the lease_ttl mistake, without the password", err)
	}
}
