package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vps-exporter/vps_exporter/internal/htmldom"
	"github.com/vps-exporter/vps_exporter/providers/sim"
	"github.com/vps-exporter/vps_exporter/remediation"
)

// startReplica runs the built binary as one replica of remediation.ha on
// etcd endpoint, advertising its own listen address, against the
// simulator's VPS.org API.
func startReplica(t *testing.T, name, endpoint string, urls map[sim.API]string) *exporter {
	t.Helper()
	e := &exporter{t: t, addr: freePort(t), logs: &syncBuffer{}, seen: &syncBuffer{}}
	cfg := writeLoopConfig(t, t.TempDir(), urls,
		fmt.Sprintf("  webhook:\n    enabled: true\n    allowed_actions: [reboot]\n    bearer_token: %s\n", loopToken)+
			fmt.Sprintf("  ha:\n    advertise_url: http://%s\n    etcd:\n      endpoints: [%s]\n      prefix: /vps_standby_test\n      lease_ttl: 2s\n", e.addr, endpoint))
	e.cmd = startCmd(t, e.logs, name, binPath, "--web.listen-address="+e.addr, "--log.level=debug", "--config.file="+cfg)
	e.waitFor(name+" ready", func() bool { code, _ := e.get("/-/ready"); return code == 200 })
	return e
}

// post sends body to path on e with the Authorization header auth (none
// when empty) and returns the answer.
func post(t *testing.T, e *exporter, path, body, auth string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest("POST", "http://"+e.addr+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// Two replicas on a real etcd (Debian's 3.4): the first leads; an alert
// posted to the standby is forwarded to it, answered by it, and acted on
// once, a resend through the standby not again; the standby's page says
// "standby" and links the leader; its history is the leader's; a wrong
// credential is refused by the leader through the standby. When the
// leader is killed, the standby leads and answers itself.
func TestHAStandbyForwardsToLeader(t *testing.T) {
	bin := debianEtcd(t)
	ep := startEtcdMember(t, bin)
	s, urls := startSimSettle(t, 10, 200*time.Millisecond)
	a := startReplica(t, "replica-a", ep, urls)
	within(t, 20*time.Second, "replica a leading", func() bool { return hasLine(a.metrics(), "vps_remediation_leader 1") })
	b := startReplica(t, "replica-b", ep, urls)
	leaderURL := "http://" + a.addr
	within(t, 20*time.Second, "replica b a standby of a", func() bool {
		code, body := b.get("/")
		return code == 200 && strings.Contains(body, `id="remediation-leader"`) && strings.Contains(body, leaderURL)
	})
	if !hasLine(b.metrics(), "vps_remediation_leader 0") {
		t.Fatal("replica b does not report vps_remediation_leader 0")
	}

	// The standby's page: the role, a link to the leader, no error.
	_, page := b.get("/")
	doc, err := htmldom.Parse(page)
	if err != nil {
		t.Fatal(err)
	}
	role, link := doc.ByID("remediation-role"), doc.ByID("remediation-leader")
	if role == nil || !strings.HasPrefix(role.Text(), "standby the leader acts: "+leaderURL) || link == nil || link.Attr["href"] != leaderURL+"/" {
		t.Errorf("standby page: role %v, leader link %v; want standby and a link to %s", role, link, leaderURL)
	}
	if doc.ByID("remediation-error") != nil {
		t.Errorf("the standby's page shows an error: %s", doc.ByID("remediation-error").Text())
	}
	if _, apage := a.get("/"); !strings.Contains(apage, "this replica acts for every replica") {
		t.Error("the leader's page does not say it leads")
	}

	started := time.Now().UTC().Add(-time.Minute).Format(time.RFC3339)
	alert := fmt.Sprintf(`{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"Broken","provider":"vpsorg","account":"vps-main","id":"12002","remediation":"reboot"},"startsAt":%q,"endsAt":"0001-01-01T00:00:00Z","fingerprint":"fp-12002"}]}`, started)

	// A wrong credential: the leader refuses it, through the standby.
	resp, body := post(t, b, "/webhook/alertmanager", alert, "Bearer wrong-token")
	if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") == "" || resp.Header.Get(remediation.LeaderHeader) != leaderURL {
		t.Errorf("wrong credential through the standby: %d %v %q, want the leader's 401", resp.StatusCode, resp.Header, body)
	}

	resp, body = post(t, b, "/webhook/alertmanager", alert, "Bearer "+loopToken)
	if resp.StatusCode != 200 || resp.Header.Get(remediation.LeaderHeader) != leaderURL {
		t.Fatalf("webhook through the standby: %d %q (answered by %q), want 200 from %s", resp.StatusCode, body, resp.Header.Get(remediation.LeaderHeader), leaderURL)
	}
	within(t, 20*time.Second, "the reboot", func() bool { return len(callsTo(s, "12002")) == 1 })
	if resp, body := post(t, b, "/webhook/alertmanager", alert, "Bearer "+loopToken); resp.StatusCode != 200 {
		t.Fatalf("resend through the standby: %d %q", resp.StatusCode, body)
	}
	time.Sleep(2 * time.Second) // a second call would have been sent by now
	if got := names(callsTo(s, "12002")); got != "reboot" {
		t.Errorf("calls to 12002: %q, want one reboot", got)
	}

	// The history, read through the standby, is the leader's.
	code, hist := b.sendAuth("GET", "/api/v1/remediation?id=12002", "")
	var h struct {
		Role      string `json:"role"`
		LeaderURL string `json:"leader_url"`
		Actions   []struct{ ID, Action, Result string }
	}
	if err := json.Unmarshal([]byte(hist), &h); code != 200 || err != nil {
		t.Fatalf("history through the standby: %d %v %.300s", code, err, hist)
	}
	if h.Role != "leader" || h.LeaderURL != leaderURL || len(h.Actions) != 1 || h.Actions[0].Action != "reboot" {
		t.Errorf("history through the standby: %+v, want the leader's, with 12002's reboot", h)
	}

	mb, ma := b.metrics(), a.metrics()
	for _, want := range []string{`vps_remediation_forwarded_requests_total{outcome="relayed"} 4`, `vps_remediation_forwarded_requests_total{outcome="no_leader"} 0`} {
		if !hasLine(mb, want) {
			t.Errorf("standby /metrics lacks %s", want)
		}
	}
	if !hasLine(ma, `vps_remediation_forwarded_requests_total{outcome="relayed"} 0`) {
		t.Error("the leader counts forwarded requests")
	}

	// The leader dies: the standby takes over within its lease and a
	// few seconds, and answers the webhook itself.
	killed := time.Now()
	if err := a.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	within(t, 15*time.Second, "replica b leading", func() bool { return hasLine(b.metrics(), "vps_remediation_leader 1") })
	t.Logf("failover after %s (lease_ttl 2s)", time.Since(killed).Round(100*time.Millisecond))
	alert2 := strings.ReplaceAll(alert, "12002", "12003")
	resp, body = post(t, b, "/webhook/alertmanager", alert2, "Bearer "+loopToken)
	if resp.StatusCode != 200 || resp.Header.Get(remediation.LeaderHeader) != "" {
		t.Fatalf("webhook on the new leader: %d %q (relayed from %q), want its own 200", resp.StatusCode, body, resp.Header.Get(remediation.LeaderHeader))
	}
	within(t, 20*time.Second, "the new leader's reboot", func() bool { return len(callsTo(s, "12003")) == 1 })
	if got := names(callsTo(s, "12002")); got != "reboot" {
		t.Errorf("calls to 12002 after the failover: %q, want still one reboot", got)
	}
	if _, bpage := b.get("/"); !strings.Contains(bpage, "this replica acts for every replica") {
		t.Error("the new leader's page does not say it leads")
	}
	assertNoSecrets(t, "standby logs", b.logs.String())
	assertNoSecrets(t, "leader logs", a.logs.String())
	if strings.Contains(b.logs.String(), "wrong-token") {
		t.Error("the standby logged a credential")
	}
}

// A replica whose etcd cannot be reached knows no leader: nobody acts, it
// keeps exporting, its page says "unavailable" (not an error), and it
// answers the webhook with 503 and Retry-After so that Alertmanager
// retries.
func TestHAReplicaWithoutEtcd(t *testing.T) {
	skipShort(t)
	_, urls := startSimSettle(t, 10, 200*time.Millisecond)
	nowhere := "http://" + freePort(t) // nothing listens there
	e := startReplica(t, "replica-alone", nowhere, urls)
	within(t, 20*time.Second, "the role unavailable", func() bool {
		_, page := e.get("/")
		return strings.Contains(page, "nobody acts until one is elected")
	})
	_, page := e.get("/")
	if strings.Contains(page, `id="remediation-error"`) {
		t.Error("the page shows the role as an error")
	}
	m := e.metrics()
	if !hasLine(m, "vps_remediation_leader 0") || !strings.Contains(m, "\nvps_server_up{") {
		t.Errorf("without etcd the replica should export its fleet and report no leadership")
	}
	alert := `{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"Broken","provider":"vpsorg","account":"vps-main","id":"12002","remediation":"reboot"},"startsAt":"2026-01-01T00:00:00Z","endsAt":"0001-01-01T00:00:00Z","fingerprint":"fp-1"}]}`
	resp, body := post(t, e, "/webhook/alertmanager", alert, "Bearer "+loopToken)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("webhook without a leader: %d (Retry-After %q) %q, want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	if !hasLine(e.metrics(), `vps_remediation_forwarded_requests_total{outcome="no_leader"} 1`) {
		t.Error("the 503 is not counted as no_leader")
	}
	assertNoSecrets(t, "logs", e.logs.String())
}
