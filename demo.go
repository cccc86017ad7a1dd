package main

import (
	"context"
	"path/filepath"
	"time"

	"github.com/vps-exporter/vps_exporter/config"
	"github.com/vps-exporter/vps_exporter/internal/simfleet"
)

// demoOptions are the --demo.* flags.
type demoOptions struct {
	servers  int           // the whole simulated fleet, shared among the providers
	refresh  time.Duration // refresh interval
	rate     float64       // the simulated APIs' throttle (requests/s); 0: none
	stateDir string
}

// startDemo starts the simulated provider APIs on loopback until ctx ends
// and returns the configuration that monitors them (simfleet: the same
// fleet and configuration as vps_sim, parsed and validated like a user's
// file), with credentials made up for this run. Remediation runs in
// dry-run with simfleet.Rules and the webhook on, so that its metrics and
// audit log have something to show.
func startDemo(ctx context.Context, o demoOptions) (*config.Config, error) {
	fleet, err := simfleet.Start(ctx, simfleet.Options{Servers: o.servers, Refresh: o.refresh, RateLimit: o.rate, Seed: 1, Prefix: "demo"})
	if err != nil {
		return nil, err
	}
	c, err := fleet.Config(filepath.Join(o.stateDir, "remediation.db"))
	if err != nil {
		fleet.Sim.Close()
		return nil, err
	}
	return c, nil
}
