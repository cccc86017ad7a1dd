package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"path/filepath"
	"time"

	commoncfg "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"

	"github.com/vps-exporter/vps_exporter/config"
	"github.com/vps-exporter/vps_exporter/providers/sim"
)

// demoSplit divides a fleet of n servers among the three simulated APIs.
func demoSplit(n int) map[sim.API]int {
	out := map[sim.API]int{}
	for i, api := range sim.APIs() {
		out[api] = n / 3
		if i < n%3 {
			out[api]++
		}
	}
	return out
}

// demoOptions are the --demo.* flags.
type demoOptions struct {
	servers  int           // the whole simulated fleet, shared among the providers
	refresh  time.Duration // refresh interval
	rate     float64       // the simulated APIs' throttle (requests/s); 0: none
	stateDir string
}

// startDemo starts the simulated provider APIs on loopback and returns a
// configuration that monitors them, with credentials made up for this run.
// Remediation runs live against the simulator (it is in this process:
// nothing else can be touched), with sample rules, their ladders and the
// webhook on, and a few simulated servers are sick (demoSick), so that
// the closed loop shows within a few minutes: repairs verified recovered,
// an escalation from reboot to power cycle, exhausted servers.
func startDemo(ctx context.Context, o demoOptions) (*config.Config, error) {
	servers, refresh := o.servers, o.refresh
	creds := map[sim.API]sim.Credentials{
		sim.VPNBingo: {Token: randomHex()},
		sim.VPSOrg:   {Token: randomHex()},
		sim.E2E:      {Token: randomHex(), APIKey: randomHex(), ProjectID: "demo"},
	}
	s := sim.New(sim.Options{PerAPI: demoSplit(servers), Seed: 1, Credentials: creds, Settle: 30 * time.Second})
	demoSick(s)
	if o.rate > 0 {
		for _, api := range sim.APIs() {
			s.SetThrottle(api, o.rate, max(1, int(o.rate)))
		}
	}
	srv, err := s.Start(ctx)
	if err != nil {
		return nil, fmt.Errorf("start simulator: %w", err)
	}
	u := func(api sim.API) *url.URL {
		v, _ := url.Parse(srv.URL[api])
		return v
	}
	c := &config.Config{
		Global: config.DefaultGlobal(),
		Providers: []config.Provider{
			{Type: config.TypeVPNBingo, Name: "demo-bingo", URL: u(sim.VPNBingo), Token: commoncfg.Secret(creds[sim.VPNBingo].Token), Loc: time.UTC},
			{Type: config.TypeVPSOrg, Name: "demo-vpsorg", URL: u(sim.VPSOrg), Token: commoncfg.Secret(creds[sim.VPSOrg].Token), Loc: time.UTC},
			{Type: config.TypeE2E, Name: "demo-e2e", URL: u(sim.E2E), Token: commoncfg.Secret(creds[sim.E2E].Token),
				APIKey: commoncfg.Secret(creds[sim.E2E].APIKey), ProjectID: "demo", Location: "Delhi", Loc: time.UTC},
		},
		Remediation: config.DefaultRemediation(),
	}
	c.Global.RefreshInterval = model.Duration(refresh)
	for i := range c.Providers {
		c.Providers[i].RateLimit = 0.8 * o.rate
	}
	r := &c.Remediation
	r.Enabled, r.DryRun = true, false
	r.StateFile = filepath.Join(o.stateDir, "remediation.db")
	r.MaxActionsPerHour = 60
	r.MaxFleetFraction = 0.3
	r.Webhook.Enabled = true
	r.Webhook.Verify = model.Duration(2 * time.Minute)
	r.Webhook.Escalate = map[string][]string{"reboot": {"power_cycle"}}
	verify := model.Duration(max(time.Minute, 4*refresh))
	r.Rules = []config.Rule{
		{Name: "redeploy-heartbeat-abnormal", Provider: config.TypeVPNBingo, State: []string{"degraded"}, For: model.Duration(2 * refresh), Action: "redeploy", Verify: verify},
		{Name: "start-stopped-vps", Provider: config.TypeVPSOrg, State: []string{"stopped"}, For: model.Duration(2 * refresh), Action: "start", Verify: verify},
		{Name: "reboot-hot-cpu", Provider: config.TypeVPSOrg, State: []string{"running"}, Metric: "cpu_usage_ratio", Above: ptr(0.95), For: model.Duration(2 * refresh),
			Action: "reboot", Escalate: []string{"power_cycle"}, Verify: verify},
	}
	return c, nil
}

// demoSick makes a few simulated servers sick (the generated fleet runs
// every 12th VPS.org server's CPU hot, which a reboot cures, and reads
// every 10th VPN.bingo node Heartbeat Abnormal, which a redeploy cures):
// the second hot VPS.org server needs a power cycle, the third nothing
// cures, and the second degraded VPN.bingo node comes back degraded from
// its redeploy. The ids are those of the generated fleet; a fleet too
// small to have them has fewer sick servers.
func demoSick(s *sim.Sim) {
	s.SetSick(sim.VPSOrg, 12013, sim.Sickness{Cure: sim.CurePowerCycle})
	s.SetSick(sim.VPSOrg, 12025, sim.Sickness{Cure: sim.CureNone})
	s.SetSick(sim.VPNBingo, 1013, sim.Sickness{Cure: sim.CureNone})
}

func ptr(v float64) *float64 { return &v }

func randomHex() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
