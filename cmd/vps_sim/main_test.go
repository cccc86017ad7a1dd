package main

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vps-exporter/vps_exporter/config"
	"github.com/vps-exporter/vps_exporter/internal/syncbuf"
)

func TestParseFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string // error substring; "" for none
	}{
		{"defaults", []string{"--config-out=x.yml"}, ""},
		{"everything", []string{"--config-out=x.yml", "--servers=100000", "--refresh-interval=30s", "--rate-limit=2.5", "--seed=7", "--listen-host=0.0.0.0", "--log.format=json", "--actions-log=a.jsonl", "--replicas=3"}, ""},
		{"no replicas", []string{"--config-out=x.yml", "--replicas=0"}, "--replicas must be between 1 and 16, got 0"},
		{"too many replicas", []string{"--config-out=x.yml", "--replicas=17"}, "--replicas must be between 1 and 16, got 17"},
		{"no config-out", nil, "required flag(s) '--config-out'"},
		{"empty config-out", []string{"--config-out="}, "--config-out must name a file"},
		{"no servers", []string{"--config-out=x.yml", "--servers=0"}, "--servers must be between 1 and 1000000, got 0"},
		{"too many servers", []string{"--config-out=x.yml", "--servers=10000000"}, "--servers must be between 1 and 1000000"},
		{"zero refresh", []string{"--config-out=x.yml", "--refresh-interval=0s"}, "--refresh-interval must be positive"},
		{"negative rate", []string{"--config-out=x.yml", "--rate-limit=-1"}, "--rate-limit must not be negative"},
		{"NaN rate", []string{"--config-out=x.yml", "--rate-limit=NaN"}, "--rate-limit must not be negative"},
		{"bad seed", []string{"--config-out=x.yml", "--seed=-1"}, `parsing "-1"`},
		{"unknown flag", []string{"--config-out=x.yml", "--server=3"}, "unknown long flag '--server'"},
		{"no such directory", []string{"--config-out=nodir/sim.yml"}, `--config-out "nodir/sim.yml": directory "nodir" does not exist`},
		{"a file as directory", []string{"--config-out=main.go/sim.yml"}, `--config-out "main.go/sim.yml": "main.go" is not a directory`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := parseFlags(tc.args)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("err = %v, want %q", err, tc.want)
			case tc.name == "defaults" && (f.servers != 150 || f.refresh != time.Minute || f.rate != 0 || f.seed != 1 || f.listenHost != "127.0.0.1" || f.replicas != 1 || f.actionsLog != ""):
				t.Errorf("defaults: %+v", f)
			}
		})
	}
}

// TestRunFlagError: a flag mistake exits 2 with the reason, as vps_exporter.
func TestRunFlagError(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	code := run([]string{"--config-out=x.yml", "--servers=-3"}, w)
	w.Close()
	var b [512]byte
	n, _ := r.Read(b[:])
	if code != 2 || !strings.Contains(string(b[:n]), "vps_sim: --servers must be between 1 and") {
		t.Errorf("exit %d, output %q", code, b[:n])
	}
}

// TestServe runs the simulator in-process: it writes a configuration whose
// accounts reach their APIs, logs the URLs in json (never a credential),
// and stops within its budget when its context ends.
func TestServe(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "sim.yml")
	f, err := parseFlags([]string{"--servers=9", "--config-out=" + out, "--log.format=json", "--refresh-interval=10s"})
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncbuf.Buffer{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	go func() { done <- serve(ctx, f, newLogger(f, logs)) }()

	var c *config.Config
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err = config.Load(out); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no configuration at %s: %v\n%s", out, err, logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, p := range c.Providers {
		req, _ := http.NewRequest(http.MethodGet, p.URL.String()+"/api/v1/servers/", nil)
		req.Header.Set("Authorization", "Bearer "+string(p.Token))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", p.Name, err)
		}
		resp.Body.Close()
		if p.Type == config.TypeVPSOrg && resp.StatusCode != http.StatusOK {
			t.Errorf("%s: HTTP %d with the written token", p.Name, resp.StatusCode)
		}
	}
	// Wait for the last line before serving.
	for !strings.Contains(logs.String(), "serving until SIGTERM or SIGINT") {
		if time.Now().After(deadline) {
			t.Fatalf("no serving line:\n%s", logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	text := logs.String()
	for _, p := range c.Providers {
		if !strings.Contains(text, `"url":"`+p.URL.String()+`"`) {
			t.Errorf("log does not give %s's URL %s", p.Name, p.URL)
		}
		for _, secret := range []string{string(p.Token), string(p.APIKey)} {
			if secret != "" && strings.Contains(text, secret) {
				t.Errorf("log holds a credential of %s", p.Name)
			}
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil || m["ts"] == nil || m["level"] == nil || m["caller"] == nil {
			t.Errorf("not a json log line with ts, level and caller: %s", line)
		}
	}

	start := time.Now()
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit %d after the signal", code)
		}
		if took := time.Since(start); took > shutdownBudget {
			t.Errorf("stopping took %s", took)
		}
	case <-time.After(shutdownBudget + 10*time.Second):
		t.Fatal("serve did not return after its context ended")
	}
	if _, err := http.Get(c.Providers[0].URL.String() + "/"); err == nil {
		t.Error("the APIs still answer after serve returned")
	}
}

// TestServeRefusesUsersFile: a configuration that vps_sim did not write is
// left alone, and the simulator exits 1 saying why.
func TestServeRefusesUsersFile(t *testing.T) {
	out := filepath.Join(t.TempDir(), "vps_exporter.yml")
	mine := []byte("providers: []\n")
	if err := os.WriteFile(out, mine, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := parseFlags([]string{"--servers=3", "--config-out=" + out})
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncbuf.Buffer{}
	if code := serve(context.Background(), f, newLogger(f, logs)); code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	if !strings.Contains(logs.String(), "was not written by vps_sim") {
		t.Errorf("log does not say why:\n%s", logs)
	}
	if b, _ := os.ReadFile(out); string(b) != string(mine) {
		t.Error("the user's file was changed")
	}
}

// TestServeReplicas: --replicas=3 writes one configuration per replica
// (sim.replica-N.yml), each with its own credentials, and --actions-log
// records each action call with the label of the replica whose
// credential made it; no credential in the log or the actions log; an
// actions log that cannot be opened is an error at start.
func TestServeReplicas(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "sim.yml")
	alog := filepath.Join(dir, "actions.jsonl")
	f, err := parseFlags([]string{"--servers=30", "--config-out=" + out, "--replicas=3", "--actions-log=" + alog})
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncbuf.Buffer{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	go func() { done <- serve(ctx, f, newLogger(f, logs)) }()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(logs.String(), "serving until SIGTERM or SIGINT") {
		if time.Now().After(deadline) {
			t.Fatalf("no serving line:\n%s", logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := os.Stat(out); err == nil {
		t.Errorf("%s written with --replicas=3", out)
	}
	var secrets []string
	for i := 1; i <= 3; i++ {
		p := filepath.Join(dir, "sim.replica-"+strconv.Itoa(i)+".yml")
		c, err := config.Load(p)
		if err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
		if !strings.Contains(logs.String(), "sim.replica-"+strconv.Itoa(i)+".yml") {
			t.Errorf("the log does not name %s", p)
		}
		for _, acc := range c.Providers {
			secrets = append(secrets, string(acc.Token), string(acc.APIKey))
		}
		vps := c.Providers[1]
		req, _ := http.NewRequest(http.MethodPost, vps.URL.String()+"/api/v1/servers/"+strconv.Itoa(12000+i)+"/reboot/", nil)
		req.Header.Set("Authorization", "Bearer "+string(vps.Token))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit %d", code)
		}
	case <-time.After(shutdownBudget + 10*time.Second):
		t.Fatal("serve did not return")
	}
	b, err := os.ReadFile(alog)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines in the actions log, want 3:\n%s", len(lines), b)
	}
	for i, line := range lines {
		var l struct{ Client, Account, ID, Action string }
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatal(err)
		}
		if l.Client != "replica-"+strconv.Itoa(i+1) || l.Account != "sim-vpsorg" || l.ID != strconv.Itoa(12001+i) || l.Action != "reboot" {
			t.Errorf("line %d: %s", i, line)
		}
	}
	for _, s := range secrets {
		if s != "" && (strings.Contains(string(b), s) || strings.Contains(logs.String(), s)) {
			t.Error("a credential in the actions log or the log")
		}
	}

	bad, err := parseFlags([]string{"--servers=3", "--config-out=" + out, "--actions-log=" + filepath.Join(dir, "nodir", "a.jsonl")})
	if err != nil {
		t.Fatal(err)
	}
	logs = &syncbuf.Buffer{}
	if code := serve(context.Background(), bad, newLogger(bad, logs)); code != 1 || !strings.Contains(logs.String(), "cannot open the actions log") {
		t.Errorf("unopenable actions log: exit %d, log:\n%s", code, logs)
	}
}
