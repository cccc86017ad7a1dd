package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/vps-exporter/vps_exporter/providers/sim"
)

// lookTool finds a binary from Debian's packages; under CI it must exist.
func lookTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s not installed; .ci/run installs it from Debian's packages", name)
		}
		t.Skipf("%s not installed", name)
	}
	return p
}

// promAPI is a small client of Prometheus' HTTP API.
type promAPI struct{ base string }

type promResult struct {
	Status    string `json:"status"`
	Error     string `json:"error"`
	ErrorType string `json:"errorType"`
	Data      struct {
		ResultType string            `json:"resultType"`
		Result     []json.RawMessage `json:"result"`
	} `json:"data"`
}

func (p promAPI) query(q string) (promResult, error) {
	var r promResult
	resp, err := http.Get(p.base + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return r, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("HTTP %d: %w: %.200s", resp.StatusCode, err, b)
	}
	return r, nil
}

// rulesFile is an alerting rules file, each rule as its YAML map.
type rulesFile struct {
	Groups []struct {
		Name  string           `yaml:"name"`
		Rules []map[string]any `yaml:"rules"`
	} `yaml:"groups"`
}

// shippedRules reads alerts/vps_exporter.rules.yml.
func shippedRules(t *testing.T) *rulesFile {
	t.Helper()
	b, err := os.ReadFile("alerts/vps_exporter.rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	var doc rulesFile
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	return &doc
}

// shortRules copies the shipped alerting rules with every `for:` cut to 2s,
// so that the test does not wait for production durations; the expressions,
// labels and annotations are the shipped ones.
func shortRules(t *testing.T, dst string) []string {
	t.Helper()
	doc := shippedRules(t)
	var exprs []string
	for _, g := range doc.Groups {
		for _, r := range g.Rules {
			if _, ok := r["for"]; ok {
				r["for"] = "2s"
			}
			exprs = append(exprs, r["expr"].(string))
		}
	}
	out, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, out, 0o600); err != nil {
		t.Fatal(err)
	}
	return exprs
}

// haOnlyMetrics are exported only by replicas with remediation.ha (the
// etcd election's metrics), which the dashboards and alerts name.
var haOnlyMetrics = map[string]bool{
	"vps_remediation_leader":                 true,
	"vps_remediation_leader_changes_total":   true,
	"vps_remediation_fencing_refusals_total": true,
	"vps_remediation_takeover_unknown_total": true,
	"vps_remediation_ha_backend_up":          true,
}

// panelQuery is one dashboard query.
type panelQuery struct {
	dashboard, panel, expr string
}

// dashboardQueries reads every target expression of every panel (and every
// templating query) of dashboards/*.json.
func dashboardQueries(t *testing.T) []panelQuery {
	t.Helper()
	files, err := filepath.Glob("dashboards/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no dashboards: %v", err)
	}
	type panel struct {
		Title   string `json:"title"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
		Panels []json.RawMessage `json:"panels"`
	}
	var qs []panelQuery
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			Panels     []panel `json:"panels"`
			Templating struct {
				List []struct {
					Name  string          `json:"name"`
					Type  string          `json:"type"`
					Query json.RawMessage `json:"query"`
				} `json:"list"`
			} `json:"templating"`
		}
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		name := filepath.Base(f)
		for _, p := range d.Panels {
			for _, tg := range p.Targets {
				qs = append(qs, panelQuery{name, p.Title, tg.Expr})
			}
		}
		for _, v := range d.Templating.List {
			if v.Type != "query" {
				continue
			}
			var q struct {
				Query string `json:"query"`
			}
			if err := json.Unmarshal(v.Query, &q); err != nil {
				t.Fatalf("%s: variable %s: %v", name, v.Name, err)
			}
			// label_values(selector, label) is Grafana's, not PromQL: check its selector.
			m := regexp.MustCompile(`^label_values\((.*),\s*\w+\)$`).FindStringSubmatch(q.Query)
			if m == nil {
				t.Fatalf("%s: variable %s: unexpected query %q", name, v.Name, q.Query)
			}
			qs = append(qs, panelQuery{name, "variable " + v.Name, m[1]})
		}
	}
	return qs
}

// grafanaVars stands in for Grafana's variables when a query is sent to
// Prometheus directly.
var grafanaVars = strings.NewReplacer(
	"$__rate_interval", "10s", "$__interval", "5s", "$__range", "5m",
	`"$provider"`, `".*"`, `"$account"`, `".*"`, `id="$id"`, `id=~".+"`,
)

var (
	metricName    = regexp.MustCompile(`\b(vps_[a-z0-9_]+)\b`)
	stringLiteral = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
)

// exportedNames lists the metric names in an exposition, histogram series
// included.
func exportedNames(metrics string) map[string]bool {
	names := map[string]bool{}
	for _, line := range strings.Split(metrics, "\n") {
		if f := strings.Fields(line); len(f) >= 4 && f[0] == "#" && f[1] == "TYPE" {
			names[f[2]] = true
			if f[3] == "histogram" {
				for _, s := range []string{"_bucket", "_sum", "_count"} {
					names[f[2]+s] = true
				}
			}
		}
	}
	return names
}

// TestStack runs the whole kit on loopback: the exporter on the simulator,
// Debian's Prometheus loading alerts/ and Debian's Alertmanager routing to
// the exporter's webhook, all behind basic auth. A VPN node is broken; the
// alert fires; Alertmanager calls the webhook; the simulator sees exactly one
// redeploy; the new node appears in /metrics. Every dashboard query and every
// alert expression is then evaluated on that Prometheus.
func TestStack(t *testing.T) {
	promBin := lookTool(t, "prometheus")
	amBin := lookTool(t, "prometheus-alertmanager")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	s, urls := startSim(t, 20)
	// A healthy VPN fleet to start with: only the node the test breaks may
	// be redeployed.
	for _, m := range s.Machines(sim.VPNBingo) {
		if m.Code == 18 {
			s.SetBingoStatus(m.ID, 19)
		}
	}
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "vps_exporter.yml")
	writeConfig(t, cfgPath, urls, true)
	appendRemediation(t, cfgPath, "  dry_run: false\n  webhook: {enabled: true, allowed_actions: [redeploy]}\n")
	const user, pass = "prometheus", "stack-pw-0b7e"
	webCfg := writeWebConfig(t, dir, user, pass, "")
	e := startExporterAuth(t, user, pass, "--config.file="+cfgPath, "--web.config.file="+webCfg)
	e.seen = nil // bodies are checked for secrets below, at the end

	amAddr, promAddr := freePort(t), freePort(t)
	amCfg := filepath.Join(dir, "alertmanager.yml")
	writeFile(t, amCfg, fmt.Sprintf(`route:
  receiver: "null"
  group_by: [alertname, provider, account, id]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
  routes:
    - receiver: vps-remediation
      matchers: ['remediation=~"reboot|redeploy|start"']
      continue: true
receivers:
  - name: "null"
  - name: vps-remediation
    webhook_configs:
      - url: http://%s/webhook/alertmanager
        send_resolved: false
        http_config:
          basic_auth: {username: %s, password: %s}
`, e.addr, user, pass))
	startCmd(t, &syncBuffer{}, "alertmanager", amBin, "--config.file="+amCfg, "--storage.path="+filepath.Join(dir, "am"),
		"--web.listen-address="+amAddr, "--cluster.listen-address=", "--log.level=debug")

	rules := filepath.Join(dir, "rules.yml")
	alertExprs := shortRules(t, rules)
	promCfg := filepath.Join(dir, "prometheus.yml")
	writeFile(t, promCfg, fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [%s]
alerting:
  alertmanagers:
    - static_configs: [{targets: [%q]}]
scrape_configs:
  - job_name: vps_exporter
    basic_auth: {username: %s, password: %s}
    static_configs: [{targets: [%q]}]
`, rules, amAddr, user, pass, e.addr))
	startCmd(t, &syncBuffer{}, "prometheus", promBin, "--config.file="+promCfg, "--storage.tsdb.path="+filepath.Join(dir, "prom"),
		"--web.listen-address="+promAddr, "--log.level=debug")
	prom := promAPI{base: "http://" + promAddr}

	waitUntil := func(what string, d time.Duration, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(d)
		for !cond() {
			if time.Now().After(deadline) || ctx.Err() != nil {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	has := func(q string) bool {
		r, err := prom.query(q)
		return err == nil && r.Status == "success" && len(r.Data.Result) > 0
	}
	waitUntil("Prometheus scraping the exporter", time.Minute, func() bool { return has(`up{job="vps_exporter"} == 1`) })
	waitUntil("Prometheus seeing Alertmanager", time.Minute, func() bool {
		resp, err := http.Get(prom.base + "/api/v1/alertmanagers")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(b), amAddr)
	})

	// Break a running VPN node.
	var victim int
	for _, m := range s.Machines(sim.VPNBingo) {
		if m.Code == 19 && m.CanRedepl {
			victim = m.ID
			break
		}
	}
	if victim == 0 {
		t.Fatal("no healthy redeployable node in the simulated fleet")
	}
	s.SetBingoStatus(victim, 18)
	vid := strconv.Itoa(victim)
	waitUntil("VPNNodeHeartbeatAbnormal firing", time.Minute, func() bool {
		return has(`ALERTS{alertname="VPNNodeHeartbeatAbnormal",alertstate="firing",id="` + vid + `"}`)
	})
	waitUntil("the redeploy", time.Minute, func() bool { return len(s.Actions()) > 0 })
	acts := s.Actions()
	if acts[0].ID != vid || acts[0].Action != "redeploy" || acts[0].Status != 200 {
		t.Fatalf("simulator recorded %+v, want a redeploy of %s", acts[0], vid)
	}
	newID := acts[0].NewID
	waitUntil("the new node in /metrics", 30*time.Second, func() bool {
		return strings.Contains(e.metrics(), `vps_server_info{provider="vpnbingo",account="bingo-prod",id="`+newID+`"`)
	})
	waitUntil("the new node in Prometheus", 30*time.Second, func() bool {
		return has(`vps_server_info{id="` + newID + `"}`)
	})
	// Alertmanager and Prometheus keep resending while the alert fires and
	// until it resolves: still one redeploy, and it is counted.
	time.Sleep(5 * time.Second)
	if n := len(s.Actions()); n != 1 {
		t.Errorf("simulator recorded %d actions, want exactly 1: %+v", n, s.Actions())
	}
	if !has(`vps_remediation_actions_total{provider="vpnbingo",account="bingo-prod",action="redeploy",rule="alertmanager",result="success"} == 1`) {
		t.Error("Prometheus does not see the redeploy counted")
	}
	if !has(`vps_remediation_webhook_alerts_total{outcome="queued"} >= 1`) {
		t.Error("no webhook alert counted as queued")
	}

	// Every dashboard query and alert expression evaluates, and names only
	// metrics the exporter exports.
	exported := exportedNames(e.metrics())
	var empty []string
	check := func(where, expr string) {
		q := grafanaVars.Replace(expr)
		if strings.Contains(q, "$") {
			t.Errorf("%s: unreplaced variable in %q", where, q)
			return
		}
		for _, m := range metricName.FindAllString(stringLiteral.ReplaceAllString(q, `""`), -1) {
			// vps_remediation_exhausted has a series only for an
			// exhausted server: none in this test. The HA metrics are
			// exported with remediation.ha only: not here.
			if !exported[m] && m != "vps_remediation_exhausted" && !haOnlyMetrics[m] {
				t.Errorf("%s: %q names %s, which the exporter does not export", where, expr, m)
			}
		}
		r, err := prom.query(q)
		switch {
		case err != nil:
			t.Errorf("%s: %v", where, err)
		case r.Status != "success":
			t.Errorf("%s: %q: %s: %s", where, q, r.ErrorType, r.Error)
		case len(r.Data.Result) == 0:
			empty = append(empty, where)
		}
	}
	qs := dashboardQueries(t)
	for _, q := range qs {
		check(q.dashboard+": "+q.panel, q.expr)
	}
	for i, x := range alertExprs {
		check(fmt.Sprintf("alert expression %d", i), x)
	}
	sort.Strings(empty)
	t.Logf("%d dashboard queries and %d alert expressions evaluated; empty now: %q", len(qs), len(alertExprs), empty)
	// Panels about the fleet show data from this fleet.
	for _, w := range empty {
		if strings.HasPrefix(w, "vps-exporter-overview.json") || strings.HasPrefix(w, "vps-exporter-server.json") {
			t.Errorf("%s shows nothing on a simulated fleet with every kind of trouble", w)
		}
	}
	assertNoSecrets(t, "exporter logs", e.logs.String())
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
