package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// composeExporterAddr is the exporter's address in
// deploy/compose/alertmanager.yml: the one thing the test rewrites.
const composeExporterAddr = "vps_exporter:9877"

// The docker-compose stack works as shipped (issue 24): Debian's
// Alertmanager runs deploy/compose/alertmanager.yml as it is, only the
// exporter's address rewritten to the demo exporter on loopback; an alert
// posted to Alertmanager's API reaches the webhook with the demo's token
// and is recorded in the exporter's history, with no 401.
func TestComposeAlertmanagerReachesDemoWebhook(t *testing.T) {
	amBin := lookTool(t, "prometheus-alertmanager")
	e := startExporter(t, "--demo")

	shipped, err := os.ReadFile(filepath.Join("deploy", "compose", "alertmanager.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(shipped), composeExporterAddr); n != 1 {
		t.Fatalf("deploy/compose/alertmanager.yml names %s %d times, want once", composeExporterAddr, n)
	}
	dir := t.TempDir()
	amCfg := filepath.Join(dir, "alertmanager.yml")
	writeFile(t, amCfg, strings.Replace(string(shipped), composeExporterAddr, e.addr, 1))
	amAddr, amLogs := freePort(t), &syncBuffer{}
	startCmd(t, amLogs, "alertmanager", amBin, "--config.file="+amCfg, "--storage.path="+filepath.Join(dir, "am"),
		"--web.listen-address="+amAddr, "--cluster.listen-address=", "--log.level=debug")
	am := "http://" + amAddr
	within(t, time.Minute, "Alertmanager ready", func() bool { code, _ := httpDo(t, "GET", am+"/-/ready", ""); return code == 200 })

	// A running VPS.org server of the demo's fleet.
	_, sd := e.get("/sd?provider=vpsorg&state=running")
	var groups []struct {
		Labels map[string]string `json:"labels"`
	}
	if err := json.Unmarshal([]byte(sd), &groups); err != nil || len(groups) == 0 {
		t.Fatalf("no running VPS.org server in the demo: %v %.300s", err, sd)
	}
	id := groups[0].Labels["__meta_vps_server_id"]

	alert := fmt.Sprintf(`[{"labels":{"alertname":"VPSComposeStackTest","severity":"critical","provider":"vpsorg","account":"demo-vpsorg","id":%q,"remediation":"reboot"},"startsAt":%q}]`,
		id, time.Now().UTC().Format(time.RFC3339))
	if code, body := httpDo(t, "POST", am+"/api/v2/alerts", alert); code != 200 {
		t.Fatalf("POST the alert to Alertmanager: %d %s", code, body)
	}

	// The route waits group_wait (10 s) before its first notification.
	var got string
	within(t, 90*time.Second, "the alert's repair in the exporter's history", func() bool {
		if logs := amLogs.String(); strings.Contains(logs, "unexpected status code") {
			t.Fatalf("the webhook refused Alertmanager's notification:\n%s", logs)
		}
		got = alertEntry(t, e, id)
		return got != ""
	})
	t.Logf("server %s: %s", id, got)

	// Alertmanager delivered it: a webhook notification sent, none failed.
	_, amMetrics := httpDo(t, "GET", am+"/metrics", "")
	if sent := metricValue(amMetrics, "alertmanager_notifications_total", `integration="webhook"`); sent < 1 {
		t.Errorf("Alertmanager sent %v webhook notifications", sent)
	}
	if failed := metricValue(amMetrics, "alertmanager_notifications_failed_total", `integration="webhook"`); failed != 0 {
		t.Errorf("Alertmanager failed %v webhook notifications", failed)
	}
	if logs := amLogs.String(); strings.Contains(logs, "unexpected status code") || strings.Contains(logs, "Notify for alerts failed") {
		t.Errorf("Alertmanager's notification failed (a 401 is the missing credential):\n%s", logs)
	}
	if q := metricValue(e.metrics(), "vps_remediation_webhook_alerts_total", `outcome="queued"`); q < 1 {
		t.Errorf("the exporter queued %v webhook alerts", q)
	}
}

// alertEntry is the exporter's record of an alert-driven request for the
// VPS.org server id (an action, or a suppression with its reason), "" if
// there is none yet.
func alertEntry(t *testing.T, e *exporter, id string) string {
	t.Helper()
	_, body := e.get("/api/v1/remediation?account=demo-vpsorg&id=" + id)
	var h struct {
		Actions []struct {
			ID, Action, Source, Result string
		} `json:"actions"`
		Suppressions []struct {
			ID, Action, Source, Reason string
		} `json:"suppressions"`
	}
	if err := json.Unmarshal([]byte(body), &h); err != nil {
		t.Fatalf("history: %v %.300s", err, body)
	}
	for _, a := range h.Actions {
		if a.ID == id && a.Source == "alert" && a.Action == "reboot" {
			return "action " + a.Result
		}
	}
	for _, s := range h.Suppressions {
		if s.ID == id && s.Source == "alert" && s.Action == "reboot" {
			return "suppressed " + s.Reason
		}
	}
	return ""
}

// httpDo sends body (JSON when not empty) to url and returns the status
// and the answer; 0 when there was none.
func httpDo(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	return resp.StatusCode, string(b)
}
