package web

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vps-exporter/vps_exporter/internal/htmldom"
)

var testBuild = BuildInfo{Version: "0.3.0", Revision: "abc1234", Branch: "main", BuildDate: "20261101-10:00:00"}

// remSource is a RemediationSource that returns a fixed status.
type remSource struct {
	st    RemediationStatus
	err   error
	limit int // the limit asked for
}

func (r *remSource) RemediationStatus(_ context.Context, limit int) (RemediationStatus, error) {
	r.limit = limit
	return r.st, r.err
}

// history is a dry-run remediation, paused, with actions, suppressions
// and an exhausted server, its servers named as namedFleet names them
// (the source names them: the page does not look them up).
func history() RemediationStatus {
	return RemediationStatus{
		Enabled: true, DryRun: true,
		Paused:          &Pause{Since: now.Add(-10 * time.Minute), Until: now.Add(110 * time.Minute), Reason: "provider maintenance window, ticket OPS-1234"},
		ActionsThisHour: 3, MaxActionsPerHour: 10,
		Actions: []Action{
			{Time: now.Add(-5 * time.Minute), Provider: "vpnbingo", Account: "bingo-prod", ID: "1003", Name: "vpn-1003", Action: "redeploy", Source: "rule", Rule: "redeploy-heartbeat-abnormal", Result: "dry_run"},
			{Time: now.Add(-8 * time.Minute), Provider: "vpnbingo", Account: "bingo-prod", ID: "1012", Name: "vpn-1012", Action: "redeploy", Source: "alert", Rule: "VPNNodeHeartbeatAbnormal", Result: "accepted", Verdict: "verifying"},
			{Time: now.Add(-20 * time.Minute), Provider: "vpsorg", Account: "vps-main", ID: "1005", Name: "web-1005", Action: "reboot", Source: "rule", Rule: "reboot-hot-cpu", Result: "accepted", Verdict: "not_recovered"},
			{Time: now.Add(-50 * time.Minute), Provider: "vpnbingo", Account: "bingo-prod", ID: "1007", Name: "vpn-1007", Action: "redeploy", Source: "alert", Rule: "VPNNodeHeartbeatAbnormal", Result: "accepted", NewID: "1031", Verdict: "recovered"},
			{Time: now.Add(-3 * time.Hour), Provider: "vpsorg", Account: "vps-main", ID: "1002", Name: "web-1002", Action: "reboot", Source: "rule", Rule: "reboot-hot-cpu", Result: "failed", Error: "HTTP 402 Payment Required"},
		},
		Suppressions: []Suppression{
			{Time: now.Add(-time.Minute), Provider: "vpsorg", Account: "vps-main", ID: "1004", Name: "web-1004", Action: "start", Source: "rule", Rule: "start-stopped-vps", Reason: "paused", Detail: `paused by an operator: "provider maintenance window, ticket OPS-1234"`},
		},
		Exhausted: []ExhaustedServer{
			{Provider: "vpsorg", Account: "vps-main", ID: "1009", Name: "web-1009", Since: now.Add(-20 * time.Minute), Attempts: 3, LastAction: "power_cycle", Detail: "reboot, power_cycle: not recovered"},
		},
		Episodes: []Episode{
			{Provider: "vpsorg", Account: "vps-main", ID: "1005", Name: "web-1005", Source: "rule", Rule: "reboot-hot-cpu", Opened: now.Add(-20 * time.Minute),
				Step: 1, Ladder: []string{"reboot", "power_cycle"}, Current: "reboot", Verdict: "not_recovered", Next: "power_cycle", NextSince: now.Add(-2 * time.Minute), Attempts: 1, MaxAttempts: 3},
			{Provider: "vpnbingo", Account: "bingo-prod", ID: "1012", Name: "vpn-1012", Source: "alert", Rule: "VPNNodeHeartbeatAbnormal", Opened: now.Add(-8 * time.Minute),
				Step: 1, Ladder: []string{"redeploy"}, Current: "redeploy", Verdict: "verifying", Attempts: 2, MaxAttempts: 3},
		},
	}
}

// namedFleet is fleet with server names: bingo-prod's vpn-<id>, vps-main's
// web-<id>.
func namedFleet() fixedSnaps {
	f := fleet()
	for i := range f {
		for j := range f[i].Servers {
			switch f[i].Account {
			case "bingo-prod":
				f[i].Servers[j].Name = "vpn-" + f[i].Servers[j].ID
			case "vps-main":
				f[i].Servers[j].Name = "web-" + f[i].Servers[j].ID
			}
		}
	}
	return f
}

func page(t testing.TB, snaps Snapshots, rem RemediationSource, o StatusOptions) (string, *htmldom.Node) {
	t.Helper()
	o.Now = func() time.Time { return now }
	o.Build = testBuild
	rec := get(t, NewStatusPage(snaps, rem, o), "GET", "/")
	if rec.Code != 200 {
		t.Fatalf("HTTP %d: %s", rec.Code, rec.Body)
	}
	doc, err := htmldom.Parse(rec.Body.String())
	if err != nil {
		t.Fatalf("the page does not parse: %v\n%s", err, rec.Body)
	}
	return rec.Body.String(), doc
}

// The whole page, byte for byte, for a fleet with every kind of account
// and a remediation with every kind of entry.
func TestStatusPageGolden(t *testing.T) {
	body, _ := page(t, namedFleet(), &remSource{st: history()}, StatusOptions{Demo: true, DemoToken: "demo"})
	golden := filepath.Join("testdata", "status.golden.html")
	if *update {
		if err := os.WriteFile(golden, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if body != string(want) {
		t.Errorf("the page differs from %s (run go test -update to accept):\n%s", golden, firstDiff(body, string(want)))
	}
}

func TestStatusPageAccounts(t *testing.T) {
	_, doc := page(t, fleet(), nil, StatusOptions{})
	rows := doc.ByClass("account")
	type want struct{ provider, account, state, servers, lastSuccess, err string }
	wants := []want{
		{"vpnbingo", "bingo-prod", "up", "25", "2026-11-01 11:58:32 UTC (1m28s ago)", ""},
		// Down: its last error, its servers from its last success, stale.
		{"vpsorg", "vps-main", "down", "12 (stale)", "2026-11-01 10:00:01 UTC (1h59m ago)", `list servers: HTTP 401 Unauthorized: {"detail":"Invalid token."}`},
		{"e2e", "zz-e2e-new", "pending", "0", "never", ""},
	}
	if len(rows) != len(wants) {
		t.Fatalf("%d account rows, want %d", len(rows), len(wants))
	}
	for i, w := range wants {
		cells := rows[i].ByTag("td")
		if len(cells) != 6 {
			t.Fatalf("row %d: %d cells", i, len(cells))
		}
		got := want{cells[0].Text(), cells[1].Text(), cells[2].Text(), cells[3].Text(), cells[4].Text(), cells[5].Text()}
		if got != w {
			t.Errorf("row %d:\n got %q\nwant %q", i, got, w)
		}
		if rows[i].Attr["data-state"] != w.state {
			t.Errorf("row %d: data-state %q", i, rows[i].Attr["data-state"])
		}
	}
	if doc.ByID("withdrawn-vps-main") != nil {
		t.Error("an account down less than stale_after is marked withdrawn")
	}
	if s := doc.ByID("accounts-summary").Text(); s != "3 accounts: 1 up, 1 down, 1 not refreshed yet · 37 servers" {
		t.Errorf("summary %q", s)
	}
	if doc.ByID("demo-banner") != nil {
		t.Error("demo banner without --demo")
	}
	if s := doc.ByID("remediation").Text(); !strings.Contains(s, "not available") {
		t.Errorf("no remediation source: %q", s)
	}
}

// An account down longer than stale_after says its servers left /metrics.
func TestStatusPageWithdrawn(t *testing.T) {
	snaps := fleet()
	for i := range snaps {
		if snaps[i].Account == "vps-main" {
			snaps[i].Withdrawn = true
		}
	}
	_, doc := page(t, snaps, nil, StatusOptions{})
	n := doc.ByID("withdrawn-vps-main")
	if n == nil || n.Text() != "(stale, left /metrics)" {
		t.Fatalf("withdrawn account not marked: %v", n)
	}
}

func TestStatusPageRemediation(t *testing.T) {
	hostile := `<script>alert("pwned")</script><img src=x onerror=alert(1)> & "quotes"`
	for _, tc := range []struct {
		name  string
		st    RemediationStatus
		err   error
		texts map[string]string // element id -> its text
		none  []string          // ids that must be present: the empty sections
		rows  map[string]int    // class -> rows
	}{
		{
			name: "dry run, paused until a time, with history",
			st:   history(),
			texts: map[string]string{
				"remediation-enabled": "enabled",
				"remediation-mode":    "dry run actions are recorded; no provider is called",
				"remediation-paused":  "paused since 2026-11-01 11:50:00 UTC (10m0s ago), until 2026-11-01 13:50:00 UTC; reason: provider maintenance window, ticket OPS-1234",
				"pause-reason":        "provider maintenance window, ticket OPS-1234",
				"remediation-budget":  "3 of 10 (max_actions_per_hour, dry run)",
			},
			rows: map[string]int{"action": 5, "suppression": 1, "exhausted": 1, "episode": 2},
		},
		{
			name: "live, not paused, empty history",
			st:   RemediationStatus{Enabled: true, MaxActionsPerHour: 10},
			texts: map[string]string{
				"remediation-mode":   "live actions call the providers",
				"remediation-paused": "no",
				"remediation-budget": "0 of 10 (max_actions_per_hour)",
			},
			none: []string{"actions-none", "suppressions-none", "exhausted-none", "episodes-none"},
			rows: map[string]int{"action": 0, "suppression": 0, "exhausted": 0, "episode": 0},
		},
		{
			name: "paused until resumed, no reason",
			st:   RemediationStatus{Enabled: true, DryRun: true, Paused: &Pause{Since: now.Add(-time.Hour)}, ActionsThisHour: 12, ActionsThisHourAtLeast: true, MaxActionsPerHour: 10},
			texts: map[string]string{
				"remediation-paused": "paused since 2026-11-01 11:00:00 UTC (1h0m ago), until resumed; reason: none given",
				"remediation-budget": "at least 12 of 10 (max_actions_per_hour, dry run)",
			},
		},
		{
			name: "hostile pause reason",
			st:   RemediationStatus{Enabled: true, DryRun: true, Paused: &Pause{Since: now, Reason: hostile}},
			texts: map[string]string{
				"pause-reason": hostile,
			},
		},
		{
			name: "off: neither dry run nor budget",
			st:   RemediationStatus{DryRun: true, MaxActionsPerHour: 10},
			texts: map[string]string{
				"remediation-enabled": "disabled",
				"remediation-mode":    "off nothing is recorded and no provider is called",
			},
		},
		{
			name: "state file unusable",
			st:   RemediationStatus{DryRun: true, MaxActionsPerHour: 10},
			err:  errors.New("open remediation state /var/lib/vps_exporter/state.db: timeout"),
			texts: map[string]string{
				"remediation-error":   "Remediation state: open remediation state /var/lib/vps_exporter/state.db: timeout",
				"remediation-enabled": "disabled",
			},
			none: []string{"actions-none"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := &remSource{st: tc.st, err: tc.err}
			body, doc := page(t, fleet(), src, StatusOptions{})
			if src.limit != StatusLimit {
				t.Errorf("asked for %d entries, want %d", src.limit, StatusLimit)
			}
			for id, want := range tc.texts {
				n := doc.ByID(id)
				if n == nil {
					t.Errorf("no #%s", id)
					continue
				}
				if got := n.Text(); got != want {
					t.Errorf("#%s:\n got %q\nwant %q", id, got, want)
				}
			}
			for _, id := range tc.none {
				if doc.ByID(id) == nil {
					t.Errorf("no #%s", id)
				}
			}
			for class, n := range tc.rows {
				if got := len(doc.ByClass(class)); got != n {
					t.Errorf("%d rows of class %s, want %d", got, class, n)
				}
			}
			// Whatever the text, it stays text: no element or attribute
			// comes from it.
			if s := doc.ByTag("script"); len(s) > 0 {
				t.Errorf("a <script> element on the page")
			}
			if imgs := doc.ByTag("img"); len(imgs) > 0 {
				t.Errorf("an <img> element on the page: %v", imgs[0].Attr)
			}
			if strings.Contains(body, "<script") || strings.Contains(body, "<img") {
				t.Errorf("hostile text unescaped in the page")
			}
		})
	}
}

// Hostile names anywhere: in an account's name and error, in a rule, a
// server id, a suppression's detail.
func TestStatusPageEscapes(t *testing.T) {
	const x = `"><script>alert(1)</script><a href="javascript:alert(2)">x</a>`
	snaps := fixedSnaps{{Provider: "vpsorg", Account: "acct" + x, Refreshed: true, Err: "boom" + x, LastAttempt: now}}
	st := RemediationStatus{
		Actions:      []Action{{Time: now, Provider: "vpsorg", Account: "acct" + x, ID: "1" + x, Action: "reboot", Source: "alert", Rule: "r" + x, Result: "failed" + x, Error: "e" + x, NewID: "n" + x}},
		Suppressions: []Suppression{{Time: now, Provider: "vpsorg", Account: "a", ID: "2", Action: "reboot", Source: "rule", Rule: "r", Reason: "cooldown" + x, Detail: "d" + x}},
		Exhausted:    []ExhaustedServer{{Provider: "vpsorg", Account: "a", ID: "3" + x, Since: now, LastAction: "reboot" + x, Detail: "d" + x}},
	}
	body, doc := page(t, snaps, &remSource{st: st}, StatusOptions{})
	if strings.Contains(body, "<script") || len(doc.ByTag("script")) > 0 {
		t.Error("a script element from the data")
	}
	for _, a := range doc.ByTag("a") {
		if strings.Contains(a.Attr["href"], "javascript") {
			t.Errorf("a link from the data: %v", a.Attr)
		}
	}
	row := doc.ByClass("account")[0]
	if got := row.Attr["data-account"]; got != "acct"+x {
		t.Errorf("data-account %q", got)
	}
	if got := row.ByTag("td")[5].Text(); got != "boom"+x {
		t.Errorf("error cell %q", got)
	}
	if got := doc.ByClass("action")[0].Text(); !strings.Contains(got, "e"+x) || !strings.Contains(got, "replaced by n"+x) {
		t.Errorf("action row %q", got)
	}
}

func TestStatusPageDemoAndLinks(t *testing.T) {
	const demoLive = "Demo mode: a simulated fleet on loopback; no real provider is called. Remediation: live, acting on the simulated servers only." +
		" The webhook and the controls (pause, resume, reset) take the fixed token demo: Authorization: Bearer demo."
	for _, tc := range []struct {
		name   string
		o      StatusOptions
		rem    RemediationSource
		banner string // "": none
		links  []string
	}{
		{"defaults", StatusOptions{}, &remSource{}, "", []string{"metrics", "sd", "api/v1/accounts", "api/v1/remediation", "-/healthy", "-/ready"}},
		{"demo, pprof, another metrics path", StatusOptions{Demo: true, DemoToken: "demo", Pprof: true, MetricsPath: "/prom/metrics"},
			&remSource{st: RemediationStatus{Enabled: true}}, demoLive,
			[]string{"prom/metrics", "sd", "api/v1/accounts", "api/v1/remediation", "-/healthy", "-/ready", "debug/pprof/", "debug/pprof/heap"}},
		{"demo in dry run", StatusOptions{Demo: true, DemoToken: "demo"}, &remSource{st: RemediationStatus{Enabled: true, DryRun: true}},
			"Demo mode: a simulated fleet on loopback; no real provider is called. Remediation: dry run." +
				" The webhook and the controls (pause, resume, reset) take the fixed token demo: Authorization: Bearer demo.",
			[]string{"metrics", "sd", "api/v1/accounts", "api/v1/remediation", "-/healthy", "-/ready"}},
		{"demo without remediation or token", StatusOptions{Demo: true}, nil,
			"Demo mode: a simulated fleet on loopback; no real provider is called.",
			[]string{"metrics", "sd", "api/v1/accounts", "api/v1/remediation", "-/healthy", "-/ready"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, doc := page(t, fixedSnaps{}, tc.rem, tc.o)
			b := doc.ByID("demo-banner")
			if (b != nil) != (tc.banner != "") {
				t.Fatalf("demo banner shown: %v, want %v", b != nil, tc.banner != "")
			}
			if b != nil && b.Text() != tc.banner {
				t.Errorf("banner %q\nwant   %q", b.Text(), tc.banner)
			}
			if tok := doc.ByID("demo-token"); (tok != nil) != (tc.o.DemoToken != "") || tok != nil && tok.Text() != tc.o.DemoToken {
				t.Errorf("#demo-token %v, want %q", tok, tc.o.DemoToken)
			}
			var got []string
			for _, a := range doc.ByID("links").ByTag("a") {
				got = append(got, a.Attr["href"])
			}
			if strings.Join(got, " ") != strings.Join(tc.links, " ") {
				t.Errorf("links %v, want %v", got, tc.links)
			}
			if v := doc.ByID("version").Text(); !strings.HasPrefix(v, "version 0.3.0 · revision abc1234 · branch main · built 20261101-10:00:00") {
				t.Errorf("version line %q", v)
			}
			if s := doc.ByID("accounts").Text(); !strings.Contains(s, "No account configured.") {
				t.Errorf("no accounts: %q", s)
			}
		})
	}
}

// The page lists the newest StatusLimit entries even when the source
// gives more.
func TestStatusPageLimit(t *testing.T) {
	st := RemediationStatus{}
	for i := range 50 {
		st.Actions = append(st.Actions, Action{Time: now.Add(-time.Duration(i) * time.Minute), ID: strconv.Itoa(i), Result: "dry_run"})
		st.Suppressions = append(st.Suppressions, Suppression{Time: now.Add(-time.Duration(i) * time.Minute), ID: strconv.Itoa(i), Reason: "cooldown"})
	}
	_, doc := page(t, fixedSnaps{}, &remSource{st: st}, StatusOptions{})
	for _, class := range []string{"action", "suppression"} {
		rows := doc.ByClass(class)
		if len(rows) != StatusLimit {
			t.Fatalf("%d %s rows, want %d", len(rows), class, StatusLimit)
		}
		if id := rows[0].ByTag("td")[3].Text(); id != "0" {
			t.Errorf("%s: first row is server %s, want the newest (0)", class, id)
		}
	}
}

func TestStatusPageHTTP(t *testing.T) {
	h := NewStatusPage(fleet(), &remSource{st: history()}, StatusOptions{})
	for _, tc := range []struct {
		method, path string
		code         int
	}{
		{"GET", "/", 200},
		{"HEAD", "/", 200},
		{"POST", "/", 405},
		{"GET", "/nothing-here", 404},
		{"GET", "/index.html", 404},
	} {
		rec := get(t, h, tc.method, tc.path)
		if rec.Code != tc.code {
			t.Errorf("%s %s: HTTP %d, want %d", tc.method, tc.path, rec.Code, tc.code)
		}
		if tc.code != 200 {
			continue
		}
		hdr := rec.Header()
		if ct := hdr.Get("Content-Type"); ct != "text/html; charset=utf-8" {
			t.Errorf("Content-Type %q", ct)
		}
		if csp := hdr.Get("Content-Security-Policy"); !strings.HasPrefix(csp, "default-src 'none';") || strings.Contains(csp, "script") {
			t.Errorf("Content-Security-Policy %q", csp)
		}
		if tc.method == "HEAD" && rec.Body.Len() != 0 {
			t.Errorf("HEAD with a body")
		}
		if n, _ := strconv.Atoi(hdr.Get("Content-Length")); tc.method == "GET" && n != rec.Body.Len() {
			t.Errorf("Content-Length %d, body %d", n, rec.Body.Len())
		}
	}
	// Nothing external: no script, no stylesheet or image to load.
	body := get(t, h, "GET", "/").Body.String()
	for _, bad := range []string{"<script", "<link", "<img", "http://", "https://", "@import", "url("} {
		if strings.Contains(body, bad) {
			t.Errorf("the page has %q", bad)
		}
	}
}

func TestAgo(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{-time.Hour, "just now"},
		{0, "just now"},
		{1500 * time.Millisecond, "1s ago"},
		{59 * time.Second, "59s ago"},
		{90 * time.Second, "1m30s ago"},
		{2*time.Hour + 5*time.Minute + 9*time.Second, "2h5m ago"},
		{50 * time.Hour, "2d2h ago"},
	} {
		if got := ago(tc.d); got != tc.want {
			t.Errorf("ago(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
	if got := truncate(strings.Repeat("é", 301), 300); got != strings.Repeat("é", 300)+"…" {
		t.Errorf("truncate: %q", got)
	}
}

// BenchmarkStatusPage renders the page for a fleet of 10,000 servers in
// three accounts with a full remediation history (the page lists accounts,
// not servers: its cost does not grow with the fleet).
func BenchmarkStatusPage(b *testing.B) {
	for _, n := range []int{10000, 100000} {
		st := storeOf(syntheticFleet(n))
		h := history()
		for i := range StatusLimit {
			h.Actions = append(h.Actions, h.Actions[i%3])
			h.Suppressions = append(h.Suppressions, h.Suppressions[0])
		}
		p := NewStatusPage(st, &remSource{st: h}, StatusOptions{Demo: true, Pprof: true})
		req := httptest.NewRequest("GET", "/", nil)
		b.Run(fmt.Sprintf("servers=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			var size int
			for b.Loop() {
				rec := httptest.NewRecorder()
				p.ServeHTTP(rec, req)
				size = rec.Body.Len()
			}
			b.SetBytes(int64(size))
		})
	}
}
