package main

import (
	"context"
	"fmt"
	"os"
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
// file) and the file it wrote it to (in the demo's state directory, mode
// 0600: it holds the made-up credentials, among them the remediation
// bearer token that pause, resume and reset need). Remediation runs live
// against the simulated servers — this process's own, nothing else can be
// reached — with simfleet.Rules, their ladders and a few sick servers, so
// that the closed loop shows within minutes: repairs verified, an
// escalation to a power cycle, servers no repair fixes.
func startDemo(ctx context.Context, o demoOptions) (*config.Config, string, error) {
	fleet, err := simfleet.Start(ctx, simfleet.Options{Servers: o.servers, Refresh: o.refresh, RateLimit: o.rate, Seed: 1, Prefix: "demo", Live: true})
	if err != nil {
		return nil, "", err
	}
	path := filepath.Join(o.stateDir, "demo.yml")
	b, err := fleet.ConfigYAML(filepath.Join(o.stateDir, "remediation.db"))
	if err == nil {
		err = os.WriteFile(path, b, 0o600)
	}
	var c *config.Config
	if err == nil {
		c, err = config.Parse(b, o.stateDir)
	}
	if err != nil {
		fleet.Sim.Close()
		return nil, "", fmt.Errorf("demo configuration: %w", err)
	}
	return c, path, nil
}
