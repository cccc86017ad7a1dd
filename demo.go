package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/vps-exporter/vps_exporter/config"
	"github.com/vps-exporter/vps_exporter/internal/simfleet"
)

// DemoToken is the remediation credential of --demo: the webhook and the
// controls (pause, resume, reset) take "Authorization: Bearer demo". It is
// fixed and documented (README, docs/remediation.md, the page's banner, the
// docker-compose Alertmanager) because the demo only ever acts on its own
// simulated servers on loopback.
const DemoToken = "demo"

// demoOptions are the --demo.* flags.
type demoOptions struct {
	servers  int           // the whole simulated fleet, shared among the providers
	refresh  time.Duration // refresh interval
	rate     float64       // the simulated APIs' throttle (requests/s); 0: none
	stateDir string
	// webConfigFile is --web.config.file: basic auth there would take
	// the Authorization header DemoToken needs.
	webConfigFile string
}

// startDemo starts the simulated provider APIs on loopback until ctx ends
// and returns the configuration that monitors them (simfleet: the same
// fleet and rules as vps_sim, parsed and validated like a user's file)
// and the file it wrote it to (in the demo's state directory, mode 0600: it
// holds the made-up provider credentials and the fixed webhook token
// DemoToken). Remediation runs live against the simulated servers — this
// process's own on loopback, nothing else can be reached (demoLoopbackOnly
// refuses any other address) — with simfleet.Rules, their ladders and a
// few sick servers, so that the closed loop shows within minutes: repairs
// verified, an escalation to a power cycle, servers no repair fixes.
func startDemo(ctx context.Context, o demoOptions) (*config.Config, string, error) {
	basic, err := webBasicAuth(o.webConfigFile)
	if err != nil {
		return nil, "", fmt.Errorf("demo: %w", err)
	}
	if basic {
		return nil, "", fmt.Errorf("demo: the webhook and the controls take the token %s in the Authorization header, which --web.config.file's basic_auth_users use too; run the demo without basic auth", DemoToken)
	}
	fleet, err := simfleet.Start(ctx, simfleet.Options{Servers: o.servers, Refresh: o.refresh, RateLimit: o.rate, Seed: 1, Prefix: "demo",
		ListenHost: "127.0.0.1", Live: true, WebhookToken: DemoToken})
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
	if err == nil {
		err = demoLoopbackOnly(c)
	}
	if err != nil {
		fleet.Sim.Close()
		return nil, "", fmt.Errorf("demo configuration: %w", err)
	}
	return c, path, nil
}

// demoLoopbackOnly refuses a demo configuration with an account whose API
// is not a loopback IP address: the demo acts for real, so it must only
// ever reach its own simulated servers. A host name (even localhost) is
// refused too, since a resolver could send it anywhere, and so is a proxy.
func demoLoopbackOnly(c *config.Config) error {
	if len(c.Providers) == 0 {
		return fmt.Errorf("no simulated account")
	}
	for _, p := range c.Providers {
		if p.URL == nil {
			return fmt.Errorf("account %s: no base_url", p.Name)
		}
		ip := net.ParseIP(p.URL.Hostname())
		if ip == nil || !ip.IsLoopback() {
			return fmt.Errorf("account %s: base_url %s is not a loopback address; the demo acts only on its own simulated servers", p.Name, p.URL.Redacted())
		}
		if p.ProxyURL.URL != nil {
			return fmt.Errorf("account %s: proxy_url: the demo reaches its simulated servers directly", p.Name)
		}
	}
	return nil
}

// remediationMode names a configuration's remediation mode as the status
// page's "Mode" does: off, dry run or live.
func remediationMode(r config.Remediation) string {
	switch {
	case !r.Enabled:
		return "off"
	case r.DryRun:
		return "dry run"
	}
	return "live"
}
