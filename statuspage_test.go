package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vps-exporter/vps_exporter/internal/htmldom"
	"github.com/vps-exporter/vps_exporter/providers/sim"
)

// TestStatusPage drives the built exporter's status page in a real
// headless browser (Debian's chromium): remediation on in dry run with a
// rule that acts, paused by an operator with a reason, one account down.
// It reads the DOM the browser built and takes a screenshot (checked to
// be a PNG; the README's picture comes from make screenshot, the demo).
func TestStatusPage(t *testing.T) {
	chromium := lookTool(t, "chromium")
	s, urls := startSim(t, 10)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "vps_exporter.yml")
	writeConfig(t, cfgPath, urls, true)
	// The down account stays "(stale)" for the whole test, however long
	// the browser takes on a loaded machine (the default stale_after is
	// 5 s here: past it the row reads "(stale, left /metrics)").
	longStale(t, cfgPath)
	appendRemediation(t, cfgPath, `  dry_run: true
  max_actions_per_hour: 7
  rules:
    - {name: redeploy-degraded, provider: vpnbingo, state: [degraded], action: redeploy}
`)
	e := startExporter(t, "--config.file="+cfgPath)

	// The rule acts (in dry run) on the degraded VPN node.
	e.waitFor("a dry-run action", func() bool {
		_, body := e.get("/api/v1/remediation")
		return strings.Contains(body, `"result": "dry_run"`)
	})
	// An operator pauses remediation, with markup in the reason.
	const reason = `provider maintenance, ticket OPS-1234 <b>until the vendor calls</b> & "then" resume`
	if code, body := e.send("POST", "/api/v1/remediation/pause", `{"duration":"2h","reason":`+jsonString(reason)+`}`, true); code != 200 {
		t.Fatalf("pause: HTTP %d %s", code, body)
	}
	// E2E refuses the key: its account goes down with an error (its
	// requests carry the key in the URL: the error must not).
	s.SetFault(sim.E2E, sim.Fault{Kind: sim.FaultStatus, Status: 401})
	e.waitFor("e2e-delhi down", func() bool { return hasLine(e.metrics(), up("e2e", "e2e-delhi", 0)) })

	url := "http://" + e.addr + "/"
	dom := runChromium(t, chromium, "--dump-dom", url)
	shot := filepath.Join(t.TempDir(), "page.png")
	runChromium(t, chromium, "--screenshot="+shot, "--window-size=1280,1600", url)
	_, _ = e.seen.Write(dom) // for the secrets check below

	doc, err := htmldom.Parse(string(dom))
	if err != nil {
		t.Fatalf("the browser's DOM does not parse: %v\n%s", err, dom)
	}
	if doc.ByID("accounts") == nil {
		t.Fatalf("not the status page:\n%s", dom)
	}

	// One row per account, in name order, with its state and servers.
	type row struct{ provider, account, state, servers string }
	var rows []row
	for _, r := range doc.ByClass("account") {
		td := r.ByTag("td")
		if len(td) != 6 {
			t.Fatalf("account row with %d cells: %s", len(td), r.Text())
		}
		rows = append(rows, row{td[0].Text(), td[1].Text(), td[2].Text(), td[3].Text()})
		if td[1].Text() == "e2e-delhi" {
			if errText := td[5].Text(); !strings.Contains(errText, "401") {
				t.Errorf("e2e-delhi's error cell: %q", errText)
			}
		} else if td[4].Text() == "never" || td[5].Text() != "" {
			t.Errorf("%s: last success %q, error %q", td[1].Text(), td[4].Text(), td[5].Text())
		}
	}
	want := []row{
		{"vpnbingo", "bingo-prod", "up", "10"},
		{"e2e", "e2e-delhi", "down", "10 (stale)"},
		{"vpsorg", "vps-main", "up", "10"},
	}
	if len(rows) != len(want) {
		t.Fatalf("account rows %q, want %q", rows, want)
	}
	for i := range want {
		if rows[i] != want[i] {
			t.Errorf("account row %d: %q, want %q", i, rows[i], want[i])
		}
	}

	// Remediation: enabled, dry run, paused with the operator's reason
	// (as text: the markup in it makes no element).
	for id, want := range map[string]string{
		"remediation-enabled": "enabled",
		"remediation-mode":    "dry run",
		"remediation-paused":  "until 20", // a time, not "until resumed"
		"pause-reason":        reason,
		"remediation-budget":  " of 7 (max_actions_per_hour, dry run)",
	} {
		n := doc.ByID(id)
		if n == nil {
			t.Errorf("no #%s in the DOM", id)
			continue
		}
		if !strings.Contains(n.Text(), want) {
			t.Errorf("#%s: %q, want it to contain %q", id, n.Text(), want)
		}
	}
	if p := doc.ByID("pause-reason"); p != nil && len(p.ByTag("b")) > 0 {
		t.Error("the pause reason's markup became an element")
	}
	if doc.ByID("demo-banner") != nil {
		t.Error("demo banner without --demo")
	}

	// A recent action: the rule's dry-run redeploy of the degraded node.
	found := false
	for _, a := range doc.ByClass("action") {
		txt := a.Text()
		if a.Attr["data-result"] == "dry_run" && strings.Contains(txt, "bingo-prod") && strings.Contains(txt, "redeploy") && strings.Contains(txt, "redeploy-degraded") {
			found = true
		}
	}
	if !found {
		t.Errorf("no dry-run redeploy among the recent actions:\n%s", doc.ByID("actions").Text())
	}
	// The hour's count is of dry-run actions: here, every one listed.
	dry := 0
	for _, a := range doc.ByClass("action") {
		if a.Attr["data-result"] == "dry_run" {
			dry++
		}
	}
	if b := doc.ByID("remediation-budget"); b != nil && !strings.HasPrefix(b.Text(), fmt.Sprintf("%d of 7 ", dry)) {
		t.Errorf("actions this hour %q, but %d dry-run actions listed", b.Text(), dry)
	}
	if doc.ByID("exhausted-none") == nil {
		t.Error("the exhausted servers section does not say none")
	}
	if len(doc.ByTag("script")) > 0 {
		t.Error("a script element on the page")
	}

	png, err := os.ReadFile(shot)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	if !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) || len(png) < 10000 {
		t.Errorf("the screenshot is not a PNG of a page (%d bytes)", len(png))
	}
	t.Logf("screenshot: %s", shot)
	assertNoSecrets(t, "the status page", string(dom))
	assertNoSecrets(t, "logs", e.logs.String())
}

// runChromium runs headless chromium on its own profile, at most a
// minute, and returns its standard output.
func runChromium(t *testing.T, chromium string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	all := append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--no-first-run", "--user-data-dir=" + t.TempDir()}, args...)
	cmd := exec.CommandContext(ctx, chromium, all...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.Bytes()
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// longStale sets global.stale_after to 10m in a config writeConfig wrote.
func longStale(t testing.TB, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := strings.Replace(string(b), "  refresh_interval: 1s\n", "  refresh_interval: 1s\n  stale_after: 10m\n", 1)
	if out == string(b) {
		t.Fatal("longStale: no refresh_interval line")
	}
	if err := os.WriteFile(path, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
}
