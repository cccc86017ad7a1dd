package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vps-exporter/vps_exporter/internal/testcert"
)

// selfSigned writes a certificate for 127.0.0.1 and its key into dir.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	cert, key, pool := testcert.PEM(t)
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	writeFile(t, certFile, string(cert))
	writeFile(t, keyFile, string(key))
	return certFile, keyFile, pool
}

// TestTLSAndBasicAuth: with a web config holding TLS and basic auth,
// /metrics and the webhook answer only over TLS and only with credentials;
// the webhook's body limit holds behind them.
func TestTLSAndBasicAuth(t *testing.T) {
	_, urls := startSim(t, 5)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "vps_exporter.yml")
	writeConfig(t, cfgPath, urls, false)
	appendRemediation(t, cfgPath, "  webhook: {enabled: true}\n")
	certFile, keyFile, pool := selfSigned(t, dir)
	webCfg := writeWebConfig(t, dir, "prom", "tls-pw-31", fmt.Sprintf("tls_server_config:\n  cert_file: %s\n  key_file: %s\n", certFile, keyFile))

	addr := freePort(t)
	logs := &syncBuffer{}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	startRaw(t, logs, "--web.listen-address="+addr, "--config.file="+cfgPath, "--web.config.file="+webCfg)
	do := func(method, url, body string, auth bool) (int, string, error) {
		req, _ := http.NewRequest(method, url, strings.NewReader(body))
		if auth {
			req.SetBasicAuth("prom", "tls-pw-31")
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	base := "https://" + addr
	deadline := time.Now().Add(20 * time.Second)
	for {
		if code, _, _ := do("GET", base+"/-/ready", "", true); code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready over TLS; log:\n%s", logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	alert := fmt.Sprintf(`{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"A","provider":"vpnbingo","account":"bingo-prod","id":"1003","remediation":"redeploy"},"startsAt":%q,"fingerprint":"x"}]}`, time.Now().UTC().Format(time.RFC3339))
	for _, tc := range []struct {
		method, path, body string
		auth               bool
		code               int
	}{
		{"GET", "/metrics", "", false, 401},
		{"GET", "/metrics", "", true, 200},
		{"POST", "/webhook/alertmanager", alert, false, 401},
		{"POST", "/webhook/alertmanager", alert, true, 200},
		{"POST", "/webhook/alertmanager", `{"version":"4","alerts":[]}` + strings.Repeat(" ", 2<<20), true, 413},
		{"POST", "/-/reload", "", false, 401},
	} {
		code, body, err := do(tc.method, base+tc.path, tc.body, tc.auth)
		if err != nil || code != tc.code {
			t.Errorf("%s %s auth=%v: %d %v %.100s, want %d", tc.method, tc.path, tc.auth, code, err, body, tc.code)
		}
	}
	// Plain HTTP to the TLS port gets no metrics.
	if resp, err := http.Get("http://" + addr + "/metrics"); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(b), "vps_server_info") {
			t.Error("metrics served over plain HTTP on the TLS port")
		}
	}
	assertNoSecrets(t, "logs", logs.String())
}
