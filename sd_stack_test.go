package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/vps-exporter/vps_exporter/providers/sim"
)

// TestServiceDiscoveryWithPrometheus: Debian's Prometheus discovers the
// simulated fleet through the built exporter's /sd (behind basic auth):
// node_exporter targets for every running server, named after the server,
// and blackbox probes of every VPN.bingo node's service endpoint. Every
// target's address is rewritten to loopback, so Prometheus never scrapes
// the fleet's (simulated, public) addresses. During a provider outage the
// account's targets stay.
func TestServiceDiscoveryWithPrometheus(t *testing.T) {
	promBin := lookTool(t, "prometheus")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s, urls := startSim(t, 20)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "vps_exporter.yml")
	writeConfig(t, cfgPath, urls, true)
	const user, pass = "prometheus", "sd-pw-4c1d"
	webCfg := writeWebConfig(t, dir, user, pass, "")
	e := startExporterAuth(t, user, pass, "--config.file="+cfgPath, "--web.config.file="+webCfg)

	// What the exporter serves, to compare Prometheus' view with.
	code, body := e.get("/sd?state=running")
	if code != 200 {
		t.Fatalf("/sd: HTTP %d %s", code, body)
	}
	var groups []struct {
		Targets []string          `json:"targets"`
		Labels  map[string]string `json:"labels"`
	}
	if err := json.Unmarshal([]byte(body), &groups); err != nil {
		t.Fatal(err)
	}
	var wantNodes []string
	for _, g := range groups {
		wantNodes = append(wantNodes, g.Labels["__meta_vps_server_name"])
	}
	var wantProbes []string
	for _, m := range s.Machines(sim.VPNBingo) {
		wantProbes = append(wantProbes, m.Host+":443")
	}
	sort.Strings(wantNodes)
	sort.Strings(wantProbes)
	if len(wantNodes) < 10 {
		t.Fatalf("only %d running servers with a public address", len(wantNodes))
	}
	if code, _ := e.send("GET", "/sd", "", false); code != http.StatusUnauthorized {
		t.Errorf("/sd without credentials answered %d; it is behind the web config like /metrics", code)
	}

	sink := freePort(t) // nothing listens: the targets are only discovered
	promAddr := freePort(t)
	promCfg := filepath.Join(dir, "prometheus.yml")
	writeFile(t, promCfg, fmt.Sprintf(`global:
  scrape_interval: 1m
scrape_configs:
  - job_name: node
    http_sd_configs:
      - url: http://%[1]s/sd?port=9100
        refresh_interval: 1s
        basic_auth: {username: %[2]s, password: %[3]s}
    relabel_configs:
      - source_labels: [__meta_vps_server_state]
        regex: running
        action: keep
      - source_labels: [__meta_vps_server_name]
        target_label: instance
      - source_labels: [__meta_vps_provider]
        target_label: provider
      - source_labels: [__meta_vps_account]
        target_label: account
      - source_labels: [__meta_vps_location]
        target_label: location
      - target_label: __address__
        replacement: %[4]s
  - job_name: vpn_probe
    metrics_path: /probe
    params: {module: [tcp_connect]}
    http_sd_configs:
      - url: http://%[1]s/sd?address=service&provider=vpnbingo
        refresh_interval: 1s
        basic_auth: {username: %[2]s, password: %[3]s}
    relabel_configs:
      - source_labels: [__address__]
        target_label: __param_target
      - source_labels: [__param_target]
        target_label: instance
      - target_label: __address__
        replacement: %[4]s
`, e.addr, user, pass, sink))
	startCmd(t, &syncBuffer{}, "prometheus", promBin, "--config.file="+promCfg, "--storage.tsdb.path="+filepath.Join(dir, "prom"),
		"--web.listen-address="+promAddr, "--log.level=debug")

	type target struct {
		Labels           map[string]string `json:"labels"`
		DiscoveredLabels map[string]string `json:"discoveredLabels"`
		ScrapePool       string            `json:"scrapePool"`
		ScrapeURL        string            `json:"scrapeUrl"`
	}
	targets := func() map[string][]target {
		resp, err := http.Get("http://" + promAddr + "/api/v1/targets?state=active")
		if err != nil {
			return nil
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var r struct {
			Data struct {
				ActiveTargets []target `json:"activeTargets"`
			} `json:"data"`
		}
		if json.Unmarshal(b, &r) != nil {
			return nil
		}
		out := map[string][]target{}
		for _, tg := range r.Data.ActiveTargets {
			out[tg.ScrapePool] = append(out[tg.ScrapePool], tg)
		}
		return out
	}
	instances := func(ts []target) []string {
		var out []string
		for _, tg := range ts {
			out = append(out, tg.Labels["instance"])
		}
		sort.Strings(out)
		return out
	}
	var got map[string][]target
	for {
		got = targets()
		if slices.Equal(instances(got["node"]), wantNodes) && slices.Equal(instances(got["vpn_probe"]), wantProbes) {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("Prometheus discovered nodes %v and probes %v;\nwant nodes %v\nand probes %v",
				instances(got["node"]), instances(got["vpn_probe"]), wantNodes, wantProbes)
		}
		time.Sleep(250 * time.Millisecond)
	}
	for _, tg := range got["node"] {
		if tg.Labels["provider"] == "" || tg.Labels["account"] == "" || tg.Labels["location"] == "" {
			t.Errorf("node target labels %v: want provider, account and location copied", tg.Labels)
		}
		if want := "http://" + sink + "/metrics"; tg.ScrapeURL != want {
			t.Errorf("a target would be scraped at %s, not at the loopback sink %s", tg.ScrapeURL, want)
		}
		if tg.DiscoveredLabels["__meta_vps_server_state"] != "running" {
			t.Errorf("a target that is not running was kept: %v", tg.DiscoveredLabels)
		}
	}

	// A provider outage: the VPS.org account fails every refresh, and its
	// targets stay discovered (Prometheus must not drop and re-add them).
	before := len(got["node"])
	s.SetFault(sim.VPSOrg, sim.Fault{Kind: sim.FaultStatus, Status: 503})
	e.waitFor("the VPS.org account down", func() bool { return hasLine(e.metrics(), up("vpsorg", "vps-main", 0)) })
	time.Sleep(3 * time.Second) // several SD refreshes
	if n := len(targets()["node"]); n != before {
		t.Errorf("during the outage Prometheus has %d node targets, had %d", n, before)
	}
	assertNoSecrets(t, "/sd", body)
}
