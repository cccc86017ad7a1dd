package simfleet

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vps-exporter/vps_exporter/config"
	"github.com/vps-exporter/vps_exporter/internal/syncbuf"
	"github.com/vps-exporter/vps_exporter/providers/sim"
)

// TestReplicaConfigs: with Replicas 3, each replica's file loads, holds
// its own credentials on every account (each reaching the API), its own
// state file; a VPS.org action made with each file's token is one line of
// the actions log under that replica's label, with no credential in it.
func TestReplicaConfigs(t *testing.T) {
	alog := &syncbuf.Buffer{}
	f := startFleet(t, Options{Servers: 30, Refresh: time.Minute, Seed: 2, Replicas: 3, ActionsLog: alog})
	dir := t.TempDir()
	paths, err := f.WriteReplicaConfigs(filepath.Join(dir, "sim.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) != 3 {
		t.Fatalf("%d files, want 3", len(paths))
	}
	seen := map[string]bool{}
	var secrets []string
	for i, p := range paths {
		if want := filepath.Join(dir, "sim.replica-"+strconv.Itoa(i+1)+".yml"); p != want {
			t.Errorf("file %d: %s, want %s", i+1, p, want)
		}
		c, err := config.Load(p)
		if err != nil {
			t.Fatalf("%s does not load: %v", p, err)
		}
		if want := StateFileFor(p); c.Remediation.StateFile != want {
			t.Errorf("%s: state_file %s, want %s", p, c.Remediation.StateFile, want)
		}
		for _, acc := range c.Providers {
			tok := string(acc.Token)
			if seen[tok] {
				t.Errorf("%s: %s's token is another replica's or account's", p, acc.Name)
			}
			seen[tok] = true
			secrets = append(secrets, tok)
			if acc.APIKey != "" {
				secrets = append(secrets, string(acc.APIKey))
			}
			if code := list(t, acc, true); code != 200 {
				t.Errorf("%s: %s lists with HTTP %d", p, acc.Name, code)
			}
		}
		vps := c.Providers[1]
		if vps.Type != config.TypeVPSOrg {
			t.Fatalf("account 2 is %s", vps.Type)
		}
		u := *vps.URL
		u.Path = "/api/v1/servers/" + strconv.Itoa(12000+i) + "/reboot/"
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), nil)
		req.Header.Set("Authorization", "Bearer "+string(vps.Token))
		resp, err := http.DefaultClient.Do(req)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}

	var lines []sim.ActionLine
	sc := bufio.NewScanner(strings.NewReader(alog.String()))
	for sc.Scan() {
		var l sim.ActionLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		lines = append(lines, l)
	}
	if len(lines) != 3 {
		t.Fatalf("%d lines, want 3:\n%s", len(lines), alog)
	}
	for i, l := range lines {
		if l.Client != ReplicaLabel(i+1) || l.Account != "sim-vpsorg" || l.ID != strconv.Itoa(12000+i) || l.Action != "reboot" || l.API != sim.VPSOrg {
			t.Errorf("line %d: %+v", i, l)
		}
	}
	for _, s := range secrets {
		if strings.Contains(alog.String(), s) {
			t.Errorf("a credential in the actions log")
		}
	}
	if err := f.ActionsLogErr(); err != nil {
		t.Errorf("ActionsLogErr: %v", err)
	}
	if _, err := f.ReplicaConfig(4, filepath.Join(dir, "x.db")); err == nil {
		t.Error("ReplicaConfig(4) of 3: no error")
	}
}

// TestReplicasOptions: one replica or none writes no replica files; the
// number is bounded.
func TestReplicasOptions(t *testing.T) {
	for _, tc := range []struct {
		replicas int
		want     string // Start's error, or WriteReplicaConfigs' for a start that works
	}{
		{0, "no replicas"},
		{1, "no replicas"},
		{MaxReplicas + 1, "replicas must be between 0 and 16"},
		{-1, "replicas must be between 0 and 16"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		f, err := Start(ctx, Options{Servers: 3, Refresh: time.Minute, Replicas: tc.replicas})
		if err == nil {
			_, err = f.WriteReplicaConfigs(filepath.Join(t.TempDir(), "sim.yml"))
			_ = f.Shutdown(ctx)
		}
		cancel()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("replicas %d: err %v, want %q", tc.replicas, err, tc.want)
		}
	}
}
