package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/vps-exporter/vps_exporter/config"
)

// The example of DESIGN.md, with inline secrets instead of files.
const designExample = `
global:
  refresh_interval: 60s
  request_timeout: 10s
  max_concurrency: 8
providers:
  - type: vpnbingo
    name: bingo-prod
    base_url: https://my.vpn.bingo
    token: tok-SECRET-1
    timezone: UTC
    rate_limit: 5
  - type: e2e
    name: e2e-delhi
    api_key: key-SECRET-2
    token: tok-SECRET-3
    project_id: "1234"
    location: Delhi
remediation:
  enabled: false
  dry_run: true
  cooldown: 1h
  max_actions_per_hour: 10
  max_fleet_fraction: 0.2
  state_file: /var/lib/vps_exporter/remediation.db
  rules:
    - name: redeploy-heartbeat-abnormal
      provider: vpnbingo
      state: [degraded]
      status: []
      metric: cpu_usage_ratio
      above: 0.95
      for: 10m
      action: redeploy
      params: {force: false, country_code: ""}
  webhook:
    enabled: false
    allowed_actions: [reboot, redeploy]
`

func TestDesignExample(t *testing.T) {
	c, err := config.Parse([]byte(designExample), ".")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Providers) != 2 || c.Providers[0].URL.String() != "https://my.vpn.bingo" || c.Providers[1].URL.Host != "api.e2enetworks.com" {
		t.Errorf("providers: %+v", c.Providers)
	}
	if string(c.Providers[1].APIKey) != "key-SECRET-2" || c.Providers[0].RateLimit != 5 {
		t.Errorf("provider fields: %+v", c.Providers)
	}
	r := c.Remediation
	if r.Enabled || !r.DryRun || time.Duration(r.Cooldown) != time.Hour || len(r.Rules) != 1 || *r.Rules[0].Above != 0.95 {
		t.Errorf("remediation: %+v", r)
	}
	// Marshalled back, the secrets are hidden.
	out, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "SECRET") {
		t.Errorf("secret in marshalled config:\n%s", out)
	}
}

func TestDefaults(t *testing.T) {
	c, err := config.Parse([]byte("providers: [{type: vpsorg, name: a, token: t}]\n"), ".")
	if err != nil {
		t.Fatal(err)
	}
	if time.Duration(c.Global.RefreshInterval) != time.Minute || time.Duration(c.Global.RequestTimeout) != 10*time.Second || c.Global.MaxConcurrency != 8 {
		t.Errorf("global defaults: %+v", c.Global)
	}
	r := c.Remediation
	if r.Enabled || !r.DryRun || r.MaxActionsPerHour != 10 || r.MaxFleetFraction != 0.2 || strings.Join(r.Webhook.AllowedActions, ",") != "reboot,redeploy" {
		t.Errorf("remediation defaults: %+v", r)
	}
	// A partial remediation block keeps the other defaults: dry-run stays on.
	c, err = config.Parse([]byte("providers: [{type: vpsorg, name: a, token: t}]\nremediation: {enabled: true, state_file: /tmp/x}\n"), ".")
	if err != nil {
		t.Fatal(err)
	}
	if !c.Remediation.DryRun || c.Remediation.MaxActionsPerHour != 10 {
		t.Errorf("partial remediation lost defaults: %+v", c.Remediation)
	}
	if c.Providers[0].URL.String() != "https://admin.vps.org" {
		t.Errorf("default base_url %v", c.Providers[0].URL)
	}
}

func TestSecretFiles(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "key"), []byte("key-SECRET-9\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tok"), []byte("tok-SECRET-9"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := "providers:\n- {type: e2e, name: x, api_key_file: key, token_file: " + filepath.Join(dir, "tok") + ", project_id: '1'}\n"
	if err := os.WriteFile(filepath.Join(dir, "c.yml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(filepath.Join(dir, "c.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if string(c.Providers[0].APIKey) != "key-SECRET-9" || string(c.Providers[0].Token) != "tok-SECRET-9" {
		t.Errorf("secrets not read (relative to the config's directory): %q %q", c.Providers[0].APIKey, c.Providers[0].Token)
	}
}

func TestInvalid(t *testing.T) {
	const ok = "providers: [{type: vpsorg, name: a, token: t}]\n"
	for _, tc := range []struct{ name, yaml, want string }{
		{"unknown top field", "foo: 1\n" + ok, "parse config: foo: unknown field"},
		{"unknown provider field", "providers: [{type: vpsorg, name: a, token: t, tokn: x}]", "parse config: providers[0].tokn: unknown field"},
		{"unknown field, second account", "providers:\n- {type: vpsorg, name: a, token: t}\n- type: vpsorg\n  name: b\n  token: t\n  tokn: x\n", "parse config: providers[1].tokn: unknown field"},
		{"unknown global field", "global: {refresh: 5s}\n" + ok, "parse config: global.refresh: unknown field"},
		{"unknown rule field", ok + "remediation:\n  rules:\n  - name: r\n    stat: [stopped]\n", "parse config: remediation.rules[0].stat: unknown field"},
		{"bad duration", "global: {refresh_interval: soon}\n" + ok, `parse config: global.refresh_interval: not a valid duration string: <value>`},
		{"bad rule duration", ok + "remediation: {rules: [{name: r, for: 5 minutes}]}", `parse config: remediation.rules[0].for: unknown unit <value> in duration <value>`},
		{"bad cooldown", ok + "remediation: {cooldown: 1 hour}", `parse config: remediation.cooldown: unknown unit <value> in duration <value>`},
		{"number as text", "global: {max_concurrency: many}\n" + ok, "parse config: global.max_concurrency: cannot unmarshal !!str `<value>` into int"},
		{"bool as text", ok + "remediation: {enabled: maybe}", "parse config: remediation.enabled: cannot unmarshal !!str `<value>` into bool"},
		{"list expected", "providers: {type: vpsorg}", "parse config: providers: cannot unmarshal !!map into []config.Provider"},
		{"alias loop", "providers: &a [*a]\n", "parse config: "},
		{"bad proxy url", "providers: [{type: vpsorg, name: a, token: t, proxy_url: '::'}]", "parse config: providers[0].proxy_url: "},
		{"detail budget range", "providers: [{type: vpsorg, name: a, token: t, rate_limit: 5, detail_budget: 1.5}]", "providers[0] (a).detail_budget: must be in (0, 1], got 1.5"},
		{"detail budget without rate", "providers: [{type: vpsorg, name: a, token: t, detail_budget: 0.5}]", "providers[0] (a).detail_budget: is a share of rate_limit; set rate_limit too"},
		{"no providers", "global: {}\n", "providers: at least one account is required"},
		{"empty file", "", "providers: at least one account is required"},
		{"zero interval", "global: {refresh_interval: 0s}\n" + ok, "global.refresh_interval: must be positive"},
		{"concurrency", "global: {max_concurrency: 0}\n" + ok, "global.max_concurrency: must be at least 1, got 0"},
		{"no type", "providers: [{name: a, token: t}]", "providers[0].type: required (vpnbingo, vpsorg or e2e)"},
		{"bad type", "providers: [{type: aws, name: a, token: t}]", `providers[0].type: unknown provider type "aws" (want vpnbingo, vpsorg or e2e)`},
		{"no name", "providers: [{type: vpsorg, token: t}]", "providers[0].name: required"},
		{"duplicate", "providers: [{type: vpsorg, name: a, token: t}, {type: vpnbingo, name: a, token: t}]", `providers[1].name: duplicate account name "a"`},
		{"no token", "providers: [{type: vpnbingo, name: a}]", "providers[0] (a).token: required (token or token_file)"},
		{"both token forms", "providers: [{type: vpnbingo, name: a, token: t, token_file: /x}]", "providers[0] (a).token: set either token or token_file, not both"},
		{"missing token file", "providers: [{type: vpnbingo, name: a, token_file: /nonexistent/tok}]", "providers[0] (a).token_file: open /nonexistent/tok: no such file or directory"},
		{"endless token file", "providers: [{type: vpnbingo, name: a, token_file: /dev/zero}]", "providers[0] (a).token_file: /dev/zero is larger than 65536 bytes; it should hold only the secret"},
		{"e2e no key", "providers: [{type: e2e, name: a, token: t, project_id: '1'}]", "providers[0] (a).api_key: required for e2e (api_key or api_key_file)"},
		{"e2e no project", "providers: [{type: e2e, name: a, token: t, api_key: k}]", "providers[0] (a).project_id: required for e2e"},
		{"key on vpsorg", "providers: [{type: vpsorg, name: a, token: t, api_key: k}]", "providers[0] (a).api_key: only e2e accounts take it"},
		{"bad url", "providers: [{type: vpsorg, name: a, token: t, base_url: 'ftp://x'}]", `providers[0] (a).base_url: want an http(s) URL without query, got "ftp://x"`},
		{"bad timezone", "providers: [{type: vpnbingo, name: a, token: t, timezone: Mars/Base}]", "providers[0] (a).timezone: unknown time zone Mars/Base"},
		{"timezone on e2e", "providers: [{type: vpsorg, name: a, token: t, timezone: UTC}]", "providers[0] (a).timezone: only vpnbingo accounts take it"},
		{"negative rate", "providers: [{type: vpsorg, name: a, token: t, rate_limit: -1}]", "providers[0] (a).rate_limit: must not be negative"},
		{"fraction", ok + "remediation: {max_fleet_fraction: 1.5}", "remediation.max_fleet_fraction: must be in (0, 1], got 1.5"},
		{"enabled without state", ok + "remediation: {enabled: true}", "remediation.state_file: required when remediation is enabled (cooldowns and the audit log must survive restarts)"},
		{"webhook action", ok + "remediation: {webhook: {allowed_actions: [delete]}}", `remediation.webhook.allowed_actions: unknown action "delete" (want reboot, redeploy, start or stop)`},
		{"rule no name", ok + "remediation: {rules: [{state: [stopped], action: start}]}", "remediation.rules[0].name: required"},
		{"rule no condition", ok + "remediation: {rules: [{name: r, action: reboot}]}", "remediation.rules[0] (r): needs a condition (state, status or metric); a rule without one would act on every server"},
		{"rule bad state", ok + "remediation: {rules: [{name: r, state: [broken], action: reboot}]}", `remediation.rules[0] (r).state: unknown state "broken"`},
		{"rule bad metric", ok + "remediation: {rules: [{name: r, metric: load, above: 1, action: reboot}]}", `remediation.rules[0] (r).metric: unknown metric "load"`},
		{"rule metric no bound", ok + "remediation: {rules: [{name: r, metric: cpu_usage_ratio, action: reboot}]}", "remediation.rules[0] (r).metric: needs above or below"},
		{"rule bad action", ok + "remediation: {rules: [{name: r, state: [stopped], action: delete}]}", `remediation.rules[0] (r).action: unknown action "delete" (want reboot, redeploy, start or stop)`},
		{"rule provider lacks action", ok + "remediation: {rules: [{name: r, provider: vpsorg, state: [stopped], action: redeploy}]}", "remediation.rules[0] (r).action: vpsorg cannot redeploy"},
		{"rule account unknown", ok + "remediation: {rules: [{name: r, account: zz, state: [stopped], action: start}]}", `remediation.rules[0] (r).account: no account named "zz"`},
		{"rule account lacks action", ok + "remediation: {rules: [{name: r, account: a, state: [degraded], action: redeploy}]}", "remediation.rules[0] (r).action: vpsorg cannot redeploy"},
		{"duplicate rule", ok + "remediation: {rules: [{name: r, state: [stopped], action: start}, {name: r, state: [stopped], action: start}]}", `remediation.rules[1].name: duplicate rule name "r"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Parse([]byte(tc.yaml), ".")
			if err == nil {
				t.Fatalf("accepted; want error %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error:\n  %v\nwant it to contain:\n  %s", err, tc.want)
			}
		})
	}
}

func TestInvalidErrorsCarryNoSecret(t *testing.T) {
	for _, y := range []string{
		"providers: [{type: vpsorg, name: a, token: tok-SECRET-x, api_key: key-SECRET-y}]",
		// A token pasted into a number field: yaml quotes the value.
		"providers: [{type: vpsorg, name: a, token: t, rate_limit: tok-SECRET-z}]",
		"providers: [{type: vpsorg, name: a, token: t, max_concurrency: key-SECRET-w}]",
	} {
		_, err := config.Parse([]byte(y), ".")
		if err == nil || strings.Contains(err.Error(), "SECRET") {
			t.Errorf("error %v", err)
		}
	}
	_, err := config.Parse([]byte("providers: [{type: vpsorg, name: a, token: t, rate_limit: tok-SECRET-z}]"), ".")
	if err == nil || !strings.Contains(err.Error(), "cannot unmarshal !!str `<value>` into float64") {
		t.Errorf("the error should still say what is wrong: %v", err)
	}
}

// FuzzParse: any file is refused with an error or accepted as a config with
// accounts whose marshalled form hides the secrets; never a panic. Seeds:
// DESIGN.md's example, a few shapes of the cases above, and
// testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	f.Add([]byte(designExample))
	f.Add([]byte("providers: [{type: vpsorg, name: a, token: t}]\n"))
	f.Add([]byte("providers: [{type: e2e, name: a, token: t, api_key: k, project_id: '1'}]\nremediation: {enabled: true, state_file: s, rules: [{name: r, metric: cpu_usage_ratio, above: 0.9, action: reboot}]}\n"))
	f.Add([]byte("global: {refresh_interval: 0s}\n"))
	f.Add([]byte("providers: [{type: vpnbingo, name: a, token_file: tok}]\n"))
	dir := f.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "tok"), []byte("tok-SECRET-f\n"), 0o600); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := config.Parse(data, dir)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		if len(c.Providers) == 0 {
			t.Fatal("accepted a config without accounts")
		}
		out, err := yaml.Marshal(c)
		if err != nil {
			t.Fatalf("accepted config does not marshal: %v", err)
		}
		if strings.Contains(string(out), "tok-SECRET-f") {
			t.Fatal("a secret read from a file shows in the marshalled config")
		}
	})
}
