// Package dashboards_test checks the Grafana dashboards' structure; their
// queries are evaluated on a real Prometheus by the stack test (TestStack).
package dashboards_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type target struct {
	Datasource struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	Expr  string `json:"expr"`
	RefID string `json:"refId"`
}

type panel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	Targets []target `json:"targets"`
	GridPos struct {
		H, W, X, Y int
	} `json:"gridPos"`
}

type dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	ID            *int    `json:"id"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

func TestDashboards(t *testing.T) {
	files, err := filepath.Glob("*.json")
	if err != nil || len(files) < 3 {
		t.Fatalf("want the overview, server and remediation dashboards, have %v (%v)", files, err)
	}
	uids := map[string]string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d dashboard
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if d.UID == "" || d.Title == "" || d.ID != nil || d.SchemaVersion < 39 {
			t.Errorf("%s: uid %q title %q id %v schemaVersion %d (want a uid, a title, no id, schema >= 39)", f, d.UID, d.Title, d.ID, d.SchemaVersion)
		}
		if other, dup := uids[d.UID]; dup {
			t.Errorf("%s and %s share uid %q", f, other, d.UID)
		}
		uids[d.UID] = f
		vars := map[string]string{}
		for _, v := range d.Templating.List {
			vars[v.Name] = v.Type
		}
		if vars["datasource"] != "datasource" || vars["provider"] != "query" || vars["account"] != "query" {
			t.Errorf("%s: variables %v, want datasource (datasource), provider and account (query)", f, vars)
		}
		ids := map[int]bool{}
		for _, p := range d.Panels {
			if ids[p.ID] {
				t.Errorf("%s: panel id %d twice", f, p.ID)
			}
			ids[p.ID] = true
			if p.Type == "row" {
				continue
			}
			if p.Datasource.UID != "${datasource}" || len(p.Targets) == 0 {
				t.Errorf("%s: panel %q: datasource %q, %d queries", f, p.Title, p.Datasource.UID, len(p.Targets))
			}
			if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
				t.Errorf("%s: panel %q: gridPos %+v", f, p.Title, p.GridPos)
			}
			for _, tg := range p.Targets {
				if tg.Datasource.UID != "${datasource}" || tg.Expr == "" {
					t.Errorf("%s: panel %q query %s: datasource %q expr %q", f, p.Title, tg.RefID, tg.Datasource.UID, tg.Expr)
				}
				// Per-server and per-account metrics honour the variables.
				if strings.Contains(tg.Expr, "vps_server_") || strings.Contains(tg.Expr, "vps_provider_") {
					if !strings.Contains(tg.Expr, `provider=~"$provider"`) || !strings.Contains(tg.Expr, `account=~"$account"`) {
						t.Errorf("%s: panel %q ignores $provider/$account: %s", f, p.Title, tg.Expr)
					}
				}
			}
		}
	}
}

// The remediation dashboard's "Exhausted servers, by name" lists each
// exhausted server once: with its name when vps_server_info has it, without
// when it does not (before, a server with a name was listed twice: the
// right side of `or` kept the one without). Evaluated by promtool on
// series as the exporter writes them; skipped without promtool.
func TestExhaustedServersListedOnce(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed")
	}
	b, err := os.ReadFile("vps-exporter-remediation.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	expr := ""
	for _, p := range d.Panels {
		if p.Title == "Exhausted servers, by name" && len(p.Targets) == 1 {
			expr = p.Targets[0].Expr
		}
	}
	if expr == "" {
		t.Fatal(`no panel "Exhausted servers, by name" with one query`)
	}
	expr = strings.NewReplacer(`"$provider"`, `".*"`, `"$account"`, `".*"`).Replace(expr)
	dir := t.TempDir()
	rules, err := json.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": []any{
		map[string]any{"record": "dashboard:exhausted_by_name", "expr": expr},
	}}}})
	if err != nil {
		t.Fatal(err)
	}
	// One exhausted server with its vps_server_info (named), one whose
	// info is gone (it left its account), one server not exhausted.
	const test = `rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'vps_remediation_exhausted{job="v",instance="i",provider="vpsorg",account="vps",id="1"}'
        values: '1x5'
      - series: 'vps_server_info{job="v",instance="i",provider="vpsorg",account="vps",id="1",name="web-1"}'
        values: '1x5'
      - series: 'vps_remediation_exhausted{job="v",instance="i",provider="vpsorg",account="vps",id="2"}'
        values: '1x5'
      - series: 'vps_server_info{job="v",instance="i",provider="vpsorg",account="vps",id="3",name="web-3"}'
        values: '1x5'
    promql_expr_test:
      - expr: dashboard:exhausted_by_name
        eval_time: 2m
        exp_samples:
          - labels: 'dashboard:exhausted_by_name{job="v",instance="i",provider="vpsorg",account="vps",id="1",name="web-1"}'
            value: 1
          - labels: 'dashboard:exhausted_by_name{job="v",instance="i",provider="vpsorg",account="vps",id="2"}'
            value: 1
`
	// JSON is YAML.
	if err := os.WriteFile(filepath.Join(dir, "rules.yml"), rules, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "test.yml"), []byte(test), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, promtool, "test", "rules", "test.yml")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool: %v\n%s", err, out)
	}
}
