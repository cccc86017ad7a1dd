package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vps-exporter/vps_exporter/providers/sim"
)

// quickStart returns the command lines of the README's quick start block
// (comments and blank lines dropped).
func quickStart(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)<!-- quickstart:[^>]*-->\\s*```sh\n(.*?)```").FindSubmatch(b)
	if m == nil {
		t.Fatal("README.md has no quick start block (<!-- quickstart: ... --> then ```sh)")
	}
	var out []string
	for _, l := range strings.Split(string(m[1]), "\n") {
		if i := strings.Index(l, "#"); i >= 0 {
			l = l[:i]
		}
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// TestQuickStart runs the README's quick start as written, in a fresh
// directory, against the simulator: the binary `make build` makes, the
// minimal config copied as the README says, checked with the placeholder
// token and again after the edit the README asks for (the token; and, as a
// test must stay on loopback, the simulator's base_url), then the exporter
// with the default --config.file, showing the account up on the status
// page and in /metrics.
func TestQuickStart(t *testing.T) {
	skipShort(t)
	steps := quickStart(t)
	want := []string{
		"make build",
		"cp deploy/vps_exporter.minimal.yml vps_exporter.yml",
		"./vps_exporter --config.check",
		"./vps_exporter",
	}
	if strings.Join(steps, "\n") != strings.Join(want, "\n") {
		t.Fatalf("the README's quick start changed; this test runs exactly:\n%s\nREADME has:\n%s", strings.Join(want, "\n"), strings.Join(steps, "\n"))
	}
	mk, err := os.ReadFile("Makefile")
	if err != nil || !strings.Contains(string(mk), "BIN       ?= vps_exporter") || !strings.Contains(string(mk), "-o $(BIN) .") {
		t.Fatal("make build no longer writes ./vps_exporter")
	}

	dir := t.TempDir()
	// make build: the binary TestMain built from this tree.
	if err := os.Symlink(binPath, filepath.Join(dir, "vps_exporter")); err != nil {
		t.Fatal(err)
	}
	// cp deploy/vps_exporter.minimal.yml vps_exporter.yml
	minimal, err := os.ReadFile("deploy/vps_exporter.minimal.yml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "vps_exporter.yml")
	if err := os.WriteFile(cfg, minimal, 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (int, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "./vps_exporter", args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out)
		}
		if err != nil {
			t.Fatalf("./vps_exporter %v: %v", args, err)
		}
		return 0, string(out)
	}
	// As copied, placeholder and all, the file passes the check.
	if code, out := run("--config.check"); code != 0 || !strings.Contains(out, "configuration is valid") {
		t.Fatalf("--config.check on the copied minimal config: exit %d\n%s", code, out)
	} else if !strings.Contains(out, "placeholder") || !strings.Contains(out, "providers[0] (my-vps).token") {
		t.Errorf("--config.check does not warn that the token is still the placeholder:\n%s", out)
	}

	// The edit: the token (and, for the test, the simulator's address).
	_, urls := startSim(t, 6)
	const placeholder = "token: REPLACE_WITH_YOUR_TOKEN"
	if !strings.Contains(string(minimal), placeholder) || !strings.Contains(string(minimal), "type: vpsorg") {
		t.Fatalf("the minimal config no longer has %q for a vpsorg account", placeholder)
	}
	edited := strings.Replace(string(minimal), placeholder, "token: "+secretVPS+"\n    base_url: "+urls[sim.VPSOrg], 1)
	if err := os.WriteFile(cfg, []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out := run("--config.check"); code != 0 {
		t.Fatalf("--config.check after the edit: exit %d\n%s", code, out)
	}

	// ./vps_exporter (on a free port rather than :9877, which a test
	// cannot count on).
	e := &exporter{t: t, addr: freePort(t), logs: &syncBuffer{}, seen: &syncBuffer{}}
	e.cmd = startCmdIn(t, e.logs, "exporter", dir, "./vps_exporter", "--web.listen-address="+e.addr)
	e.waitFor("ready", func() bool { code, _ := e.get("/-/ready"); return code == 200 })
	if m := e.metrics(); !hasLine(m, up("vpsorg", "my-vps", 1)) || !hasLine(m, `vps_provider_servers{account="my-vps",provider="vpsorg"} 6`) {
		t.Errorf("/metrics does not show the account up with its servers:\n%s", grepLines(m, "vps_provider_"))
	}
	if code, page := e.get("/"); code != 200 || !strings.Contains(page, "my-vps") {
		t.Errorf("status page: HTTP %d, no row for my-vps", code)
	}
	assertNoSecrets(t, "logs and pages", e.logs.String()+e.seen.String())
}
