package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// debianEtcd is Debian's etcd as scripts/etcd unpacks it, or $VPS_ETCD.
// Without it the test is skipped, except under CI (.ci/run installs it),
// where it fails.
func debianEtcd(t *testing.T) string {
	t.Helper()
	skipShort(t)
	bin := os.Getenv("VPS_ETCD")
	if bin == "" {
		bin = filepath.Join(".build", "etcd", "usr", "bin", "etcd")
	}
	if _, err := os.Stat(bin); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("etcd not found at %s: run scripts/etcd (.ci/run does)", bin)
		}
		t.Skipf("etcd not found at %s: run scripts/etcd", bin)
	}
	return bin
}

// startEtcdMember runs one etcd member (the real binary) on loopback
// ports for the test and returns its client URL once it answers.
func startEtcdMember(t *testing.T, bin string) string {
	t.Helper()
	client, peer := "http://"+freePort(t), "http://"+freePort(t)
	startCmd(t, &syncBuffer{}, "etcd", bin, "--name", "m0", "--data-dir", t.TempDir(),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "m0="+peer, "--logger", "zap", "--log-level", "error")
	within(t, 30*time.Second, "etcd answering", func() bool {
		resp, err := http.Get(client + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return client
}

// haBlock is a remediation.ha block on endpoint.
func haBlock(endpoint string) string {
	return fmt.Sprintf("  ha:\n    advertise_url: http://replica-1.example:9877\n    etcd:\n      endpoints: [%s]\n      prefix: /vps_test\n      lease_ttl: 2s\n", endpoint)
}

// One replica under remediation.ha on a real etcd (Debian's 3.4): it is
// elected, acts once on an Alertmanager alert against the simulator, and
// the action's record is in etcd; a resend of the alert is not acted on
// again.
func TestHAOneReplicaActsOnWebhookAlert(t *testing.T) {
	bin := debianEtcd(t)
	ep := startEtcdMember(t, bin)
	s, urls := startSimSettle(t, 10, 200*time.Millisecond)
	dir := t.TempDir()
	cfg := writeLoopConfig(t, dir, urls, fmt.Sprintf("  webhook:\n    enabled: true\n    allowed_actions: [reboot]\n    bearer_token: %s\n", loopToken)+haBlock(ep))
	e := startExporter(t, "--config.file="+cfg)
	e.waitFor("leadership", func() bool { return hasLine(e.metrics(), "vps_remediation_leader 1") })
	started := time.Now().UTC().Add(-time.Minute).Format(time.RFC3339)
	alert := fmt.Sprintf(`{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"Broken","provider":"vpsorg","account":"vps-main","id":"12002","remediation":"reboot"},"startsAt":%q,"endsAt":"0001-01-01T00:00:00Z","fingerprint":"fp-12002"}]}`, started)
	if code, body := e.sendAuth("POST", "/webhook/alertmanager", alert); code != 200 {
		t.Fatalf("webhook: %d %s", code, body)
	}
	within(t, 20*time.Second, "the reboot", func() bool { return len(callsTo(s, "12002")) == 1 })
	if code, body := e.sendAuth("POST", "/webhook/alertmanager", alert); code != 200 {
		t.Fatalf("webhook resend: %d %s", code, body)
	}
	time.Sleep(2 * time.Second) // a second call would have been sent by now
	if got := names(callsTo(s, "12002")); got != "reboot" {
		t.Errorf("calls to 12002: %q, want one reboot", got)
	}

	c, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var audit []string
	within(t, 10*time.Second, "the audit record in etcd", func() bool {
		resp, err := c.Get(ctx, "/vps_test/state/b/audit/", clientv3.WithPrefix())
		if err != nil {
			return false
		}
		audit = audit[:0]
		for _, kv := range resp.Kvs {
			audit = append(audit, string(kv.Value))
		}
		return len(audit) == 1
	})
	if !strings.Contains(audit[0], `"id":"12002"`) || !strings.Contains(audit[0], `"result":"success"`) {
		t.Errorf("etcd's audit record %s, want 12002's reboot, success", audit[0])
	}
	if _, err := os.Stat(filepath.Join(dir, "state.db")); err == nil {
		t.Error("a state file was written under remediation.ha")
	}
	m := e.metrics()
	for _, want := range []string{"vps_remediation_leader 1", "vps_remediation_ha_backend_up 1", "vps_remediation_takeover_unknown_total 0", "vps_remediation_fencing_refusals_total 0"} {
		if !hasLine(m, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	assertNoSecrets(t, "logs", e.logs.String())
}

// remediation.ha is no longer refused: --config.check accepts it (no etcd
// needed); a reload cannot add it (or take it away), and keeps the
// running configuration, with one line that says so.
func TestHAConfigAndReload(t *testing.T) {
	_, urls := startSim(t, 3)
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yml")
	writeConfig(t, good, urls, false)
	base, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	pw := filepath.Join(dir, "etcd.pw")
	if err := os.WriteFile(pw, []byte("etcd-SECRET-pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	haConfig := string(base) + "remediation:\n  enabled: true\n  ha:\n    advertise_url: http://127.0.0.1:9877\n" +
		"    etcd:\n      endpoints: [http://127.0.0.1:2379]\n      username: exporter\n      password_file: " + pw + "\n"
	ha := filepath.Join(dir, "ha.yml")
	if err := os.WriteFile(ha, []byte(haConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	code, logs, _ := runToExit(t, 20*time.Second, "--config.check", "--config.file="+ha)
	if code != 0 || !strings.Contains(logs, "configuration is valid") {
		t.Errorf("--config.check of a file with ha: exit %d, want 0; log:\n%s", code, logs)
	}

	live := filepath.Join(dir, "live.yml")
	if err := os.WriteFile(live, base, 0o600); err != nil {
		t.Fatal(err)
	}
	e := startExporter(t, "--config.file="+live, "--web.enable-lifecycle")
	if err := os.WriteFile(live, []byte(haConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+e.addr+"/-/reload", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusInternalServerError {
		t.Errorf("reload to a file with ha: HTTP %d, want 500", resp.StatusCode)
	}
	const want = "remediation.ha: cannot change on a reload"
	e.waitFor("the refusal in the log", func() bool { return strings.Contains(e.logs.String(), want) })
	if !hasLine(e.metrics(), "vps_exporter_config_last_reload_successful 0") {
		t.Error("after the refused reload: want last_reload_successful 0")
	}
	if strings.Contains(e.logs.String(), "etcd-SECRET") || strings.Contains(logs, "etcd-SECRET") {
		t.Errorf("the etcd password in the log")
	}
	assertNoSecrets(t, "logs", e.logs.String())
}
