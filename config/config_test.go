package config_test

import (
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/vps-exporter/vps_exporter/config"
	"github.com/vps-exporter/vps_exporter/providers"
)

var update = flag.Bool("update", false, "rewrite testdata/errors/*.golden")

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
      escalate: []
      verify: 10m
      params: {force: false, country_code: ""}
    - name: reboot-then-power-cycle
      provider: vpsorg
      state: [degraded]
      action: reboot
      escalate: [power_cycle]
      verify: 15m
  max_attempts: 3
  attempts_window: 24h
  retention: 30d
  exclude:
    - provider: vpsorg
      name: "db-.*"
  windows:
    - days: [mon, tue, wed, thu, fri]
      start: "02:00"
      end: "05:00"
      timezone: Europe/Berlin
  webhook:
    enabled: false
    allowed_actions: [reboot, redeploy]
    bearer_token: hook-SECRET-4
    verify: 15m
    escalate: {reboot: [power_cycle]}
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
	if r.Enabled || !r.DryRun || time.Duration(r.Cooldown) != time.Hour || len(r.Rules) != 2 || *r.Rules[0].Above != 0.95 {
		t.Errorf("remediation: %+v", r)
	}
	if r.MaxAttempts != 3 || time.Duration(r.AttemptsWindow) != 24*time.Hour || time.Duration(r.Retention) != 30*24*time.Hour ||
		strings.Join(r.Rules[1].Escalate, ",") != "power_cycle" || time.Duration(r.Rules[1].Verify) != 15*time.Minute ||
		time.Duration(r.Webhook.Verify) != 15*time.Minute || strings.Join(r.Webhook.Escalate["reboot"], ",") != "power_cycle" {
		t.Errorf("closed loop: %+v", r)
	}
	if !r.Exclude[0].Matches("vpsorg", "any", "1", "db-main") || r.Exclude[0].Matches("vpsorg", "any", "1", "web-db-main") {
		t.Error("exclude name is not an anchored regex")
	}
	if err := r.CheckCredential(false); err != nil {
		t.Error(err)
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
	if time.Duration(c.Global.StaleAfter) != 5*time.Minute || r.MaxAttempts != 3 || time.Duration(r.AttemptsWindow) != 24*time.Hour ||
		time.Duration(r.Retention) != 30*24*time.Hour || time.Duration(r.Webhook.Verify) != 15*time.Minute || r.Webhook.Escalate != nil ||
		time.Duration(r.Webhook.Hold) != time.Hour {
		t.Errorf("defaults of the new keys: global %+v, remediation %+v", c.Global, r)
	}
	if time.Duration(r.Webhook.ResolveGrace) != 5*time.Minute || r.StaleAfter != c.Global.StaleAfter {
		t.Errorf("webhook.resolve_grace %v (want 5m), remediation's stale_after %v (want global's %v)", r.Webhook.ResolveGrace, r.StaleAfter, c.Global.StaleAfter)
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

// TestInvalid: each file has one mistake (or one and its consequence) and
// gets exactly these lines.
func TestInvalid(t *testing.T) {
	const ok = "providers: [{type: vpsorg, name: a, token: t}]\n"
	const live = "remediation: {enabled: true, state_file: /tmp/x, "
	for _, tc := range []struct{ name, yaml, want string }{
		// Decoding: unknown fields (name only, a suggestion when close).
		{"unknown top field", "foo: 1\n" + ok, "foo: unknown field"},
		{"unknown top field, close", "provider: [{type: vpsorg, name: a, token: t}]\n",
			"provider: unknown field, did you mean `providers`?"},
		{"unknown provider field", "providers: [{type: vpsorg, name: a, token: t, tokn: x}]", "providers[0] (a).tokn: unknown field, did you mean `token`?"},
		// The typo is the mistake: the field it meant is not "required" too.
		{"typo of a required field", "providers: [{type: vpsorg, name: a, tokn: t}]", "providers[0] (a).tokn: unknown field, did you mean `token`?"},
		{"unknown field, second account", "providers:\n- {type: vpsorg, name: a, token: t}\n- type: vpsorg\n  name: b\n  token: t\n  tokn: x\n",
			"providers[1] (b).tokn: unknown field, did you mean `token`?"},
		{"unknown global field", "global: {refresh: 5s}\n" + ok, "global.refresh: unknown field, did you mean `refresh_interval`?"},
		{"unknown field, other spelling", "providers: [{type: vpnbingo, name: a, token: t, timeZone: UTC}]", "providers[0] (a).timeZone: unknown field, did you mean `timezone`?"},
		{"unknown field, nothing close", "providers: [{type: vpnbingo, name: a, token: t, colour: red}]", "providers[0] (a).colour: unknown field"},
		{"unknown rule field", ok + "remediation:\n  rules:\n  - name: r\n    stat: [stopped]\n    action: start\n",
			"remediation.rules[0] (r).stat: unknown field, did you mean `state`?"},
		{"unknown webhook field", ok + "remediation: {webhook: {bearer_tokn: x}}", "remediation.webhook.bearer_tokn: unknown field, did you mean `bearer_token`?"},
		{"unknown tls field", "providers: [{type: vpsorg, name: a, token: t, tls_config: {server: x}}]", "providers[0] (a).tls_config.server: unknown field, did you mean `server_name`?"},
		{"key set twice", "providers: [{type: vpsorg, name: a, token: t, rate_limit: 1, rate_limit: 2}]", "providers[0] (a).rate_limit: set twice (line 1)"},
		// Decoding: values that do not fit their field, shown.
		{"bare number as duration", "global: {refresh_interval: 60}\n" + ok, "global.refresh_interval: 60: not a duration, e.g. 60s"},
		{"bad duration", "global: {refresh_interval: soon}\n" + ok, "global.refresh_interval: soon: not a duration, e.g. 60s, 10m or 24h (units ms, s, m, h, d, w, y)"},
		{"bad rule duration", ok + "remediation: {rules: [{name: r, state: [stopped], for: 5 minutes, action: start}]}",
			"remediation.rules[0] (r).for: 5 minutes: not a duration, e.g. 60s, 10m or 24h (units ms, s, m, h, d, w, y)"},
		{"bad cooldown", ok + "remediation: {cooldown: 1 hour}", "remediation.cooldown: 1 hour: not a duration, e.g. 60s, 10m or 24h (units ms, s, m, h, d, w, y)"},
		{"number as text", "global: {max_concurrency: many}\n" + ok, "global.max_concurrency: many: not a whole number"},
		{"float as text", "providers: [{type: vpsorg, name: a, token: t, rate_limit: fast}]", "providers[0] (a).rate_limit: fast: not a number"},
		{"bool as text", ok + "remediation: {enabled: maybe}", "remediation.enabled: maybe: not a boolean (true or false)"},
		{"odd value quoted", "global: {max_concurrency: \"a\\nb\"}\n" + ok, `global.max_concurrency: "a\nb": not a whole number`},
		{"long value cut", "global: {max_concurrency: " + strings.Repeat("x", 70) + "}\n" + ok,
			`global.max_concurrency: "` + strings.Repeat("x", 64) + `"...: not a whole number`},
		{"tls version", "providers: [{type: vpsorg, name: a, token: t, tls_config: {min_version: TLS9}}]",
			"providers[0] (a).tls_config.min_version: TLS9: unknown TLS version (want TLS10, TLS11, TLS12 or TLS13)"},
		{"bad proxy url", "providers: [{type: vpsorg, name: a, token: t, proxy_url: '::'}]", "providers[0] (a).proxy_url: not a valid URL"},
		{"tls combination", "providers: [{type: vpsorg, name: a, token: t, tls_config: {ca: x, ca_file: y}}]",
			"providers[0] (a).tls_config: at most one of ca, ca_file & ca_ref must be configured"},
		// Decoding: shapes.
		{"list expected", "providers: {type: vpsorg}", `providers: want a list (each item on a line starting with "- ", or [a, b]), got a mapping`},
		{"list of values expected", ok + "remediation: {rules: [{name: r, state: stopped, action: start}]}", "remediation.rules[0] (r).state: stopped: want a list, e.g. [stopped]"},
		{"mapping expected", "global: 5\n" + ok, "global: want a mapping (field: value), got a single value"},
		{"item not a mapping", "providers: [vpsorg, {type: vpsorg, name: b, token: t}]", "providers[0]: want a mapping (field: value), got a single value"},
		{"value expected", "providers: [{type: [vpsorg], name: a, token: t}]", "providers[0] (a).type: want a single value, got a list"},
		{"not a mapping at all", "- a\n", "config: want a mapping (field: value), got a list"},
		{"alias loop", "providers: &a [*a]\n", "providers[0]: want a mapping (field: value), got a list"},
		{"bad merge", "providers: [{<<: 5, type: vpsorg, name: a, token: t}]", "providers[0] (a).<<: a merge needs a mapping or a list of mappings, got a single value"},
		{"syntax", "providers: [\n", "parse config: yaml: line 1: did not find expected node content"},
		{"syntax, expected tokens", "providers: [{a: b, c}\n", "parse config: yaml: line 1: did not find expected ',' or ']'"},
		{"syntax, unknown anchor", "providers: [{type: vpsorg, name: a, token: *tok-SECRET}]", "parse config: yaml: unknown anchor '<value>' referenced"},
		// Validation.
		{"detail budget range", "providers: [{type: vpsorg, name: a, token: t, rate_limit: 5, detail_budget: 1.5}]", "providers[0] (a).detail_budget: must be in (0, 1], got 1.5"},
		{"detail budget without rate", "providers: [{type: vpsorg, name: a, token: t, detail_budget: 0.5}]", "providers[0] (a).detail_budget: is a share of rate_limit; set rate_limit too"},
		{"no providers", "global: {}\n", "providers: at least one account is required"},
		{"empty file", "", "providers: at least one account is required"},
		{"zero interval", "global: {refresh_interval: 0s}\n" + ok, "global.refresh_interval: must be positive"},
		{"concurrency", "global: {max_concurrency: 0}\n" + ok, "global.max_concurrency: must be at least 1, got 0"},
		{"no type", "providers: [{name: a, token: t}]", "providers[0] (a).type: required (vpnbingo, vpsorg or e2e)"},
		{"bad type", "providers: [{type: aws, name: a, token: t}]", `providers[0] (a).type: unknown provider type "aws" (want vpnbingo, vpsorg or e2e)`},
		{"no name", "providers: [{type: vpsorg, token: t}]", "providers[0].name: required"},
		{"duplicate", "providers: [{type: vpsorg, name: a, token: t}, {type: vpnbingo, name: a, token: t}]", `providers[1] (a).name: duplicate account name "a" (also providers[0])`},
		{"no token", "providers: [{type: vpnbingo, name: a}]", "providers[0] (a).token: required (token or token_file)"},
		{"both token forms", "providers: [{type: vpnbingo, name: a, token: t, token_file: /x}]", "providers[0] (a).token: set either token or token_file, not both"},
		{"missing token file", "providers: [{type: vpnbingo, name: a, token_file: /nonexistent/tok}]", "providers[0] (a).token_file: cannot read the file it names: no such file or directory (the value is not shown: if it is the secret itself, write it as token instead)"},
		{"endless token file", "providers: [{type: vpnbingo, name: a, token_file: /dev/zero}]", "providers[0] (a).token_file: /dev/zero is larger than 65536 bytes; it should hold only the secret"},
		{"e2e no key", "providers: [{type: e2e, name: a, token: t, project_id: '1'}]", "providers[0] (a).api_key: required for e2e (api_key or api_key_file)"},
		{"e2e no project", "providers: [{type: e2e, name: a, token: t, api_key: k}]", "providers[0] (a).project_id: required for e2e"},
		{"key on vpsorg", "providers: [{type: vpsorg, name: a, token: t, api_key: k}]", "providers[0] (a).api_key: only e2e accounts take it"},
		{"bad url", "providers: [{type: vpsorg, name: a, token: t, base_url: 'ftp://x'}]", `providers[0] (a).base_url: want an http(s) URL without query, got "ftp://x"`},
		{"url with a key", "providers: [{type: e2e, name: a, token: t, api_key: k, project_id: '1', base_url: 'https://x/?apikey=k-SECRET'}]",
			"providers[0] (a).base_url: want an http(s) URL without query, fragment or user info (the value is not shown: it may carry a credential)"},
		{"bad timezone", "providers: [{type: vpnbingo, name: a, token: t, timezone: Mars/Base}]", "providers[0] (a).timezone: unknown time zone Mars/Base"},
		{"timezone on vpsorg", "providers: [{type: vpsorg, name: a, token: t, timezone: UTC}]", "providers[0] (a).timezone: only vpnbingo accounts take it"},
		{"negative rate", "providers: [{type: vpsorg, name: a, token: t, rate_limit: -1}]", "providers[0] (a).rate_limit: must not be negative, got -1"},
		{"fraction", ok + "remediation: {max_fleet_fraction: 1.5}", "remediation.max_fleet_fraction: must be in (0, 1], got 1.5"},
		{"enabled without state", ok + "remediation: {enabled: true}", "remediation.state_file: required when remediation is enabled (cooldowns and the audit log must survive restarts)"},
		{"webhook action", ok + "remediation: {webhook: {allowed_actions: [delete]}}", `remediation.webhook.allowed_actions[0]: unknown action "delete" (want reboot, redeploy, start, stop or power_cycle)`},
		{"rule no name", ok + "remediation: {rules: [{state: [stopped], action: start}]}", "remediation.rules[0].name: required"},
		{"rule no condition", ok + "remediation: {rules: [{name: r, action: reboot}]}", "remediation.rules[0] (r): needs a condition (state, status or metric); a rule without one would act on every server"},
		{"rule bad state", ok + "remediation: {rules: [{name: r, state: [broken], action: reboot}]}", `remediation.rules[0] (r).state[0]: unknown state "broken" (want one of running, starting, stopping, stopped, rebooting, provisioning, degraded, suspended, terminating, terminated, unknown)`},
		{"rule bad metric", ok + "remediation: {rules: [{name: r, metric: load, above: 1, action: reboot}]}",
			`remediation.rules[0] (r).metric: unknown metric "load" (want one of ` + strings.Join(providers.ReadingNames(), ", ") + ")"},
		{"rule metric no bound", ok + "remediation: {rules: [{name: r, metric: cpu_usage_ratio, action: reboot}]}", "remediation.rules[0] (r).metric: needs above or below"},
		{"rule no action", ok + "remediation: {rules: [{name: r, state: [stopped]}]}", "remediation.rules[0] (r).action: required (reboot, redeploy, start, stop or power_cycle)"},
		{"rule bad action", ok + "remediation: {rules: [{name: r, state: [stopped], action: delete}]}", `remediation.rules[0] (r).action: unknown action "delete" (want reboot, redeploy, start, stop or power_cycle)`},
		{"rule provider lacks action", ok + "remediation: {rules: [{name: r, provider: vpsorg, state: [stopped], action: redeploy}]}", "remediation.rules[0] (r).action: vpsorg cannot redeploy; its actions: reboot, start, stop, power_cycle"},
		{"rule redeploy without provider", ok + "remediation: {rules: [{name: r, state: [degraded], action: redeploy}]}", "remediation.rules[0] (r).action: redeploy is a vpnbingo action; set provider: vpnbingo"},
		{"rule account unknown", ok + "remediation: {rules: [{name: r, account: zz, state: [stopped], action: start}]}", `remediation.rules[0] (r).account: no account named "zz"`},
		{"rule account lacks action", ok + "remediation: {rules: [{name: r, account: a, state: [degraded], action: redeploy}]}", "remediation.rules[0] (r).action: vpsorg cannot redeploy; its actions: reboot, start, stop, power_cycle"},
		{"duplicate rule", ok + "remediation: {rules: [{name: r, state: [stopped], action: start}, {name: r, state: [stopped], action: start}]}",
			`remediation.rules[1] (r).name: duplicate rule name "r" (also remediation.rules[0])`},
		{"reserved rule name", ok + "remediation:\n  rules:\n  - {name: alertmanager, state: [stopped], action: start}\n",
			`remediation.rules[0] (alertmanager).name: "alertmanager" is reserved: the actions Alertmanager's alerts ask for are counted under rule="alertmanager"`},
		{"rule params", ok + "remediation: {rules: [{name: r, state: [stopped], action: start, params: {force: true}}]}", "remediation.rules[0] (r).params: force and country_code apply to redeploy only"},
		{"exclude nothing", ok + "remediation: {exclude: [{}]}", "remediation.exclude[0]: names nothing (set provider, account, id or name)"},
		{"exclude regex", ok + "remediation: {exclude: [{name: 'db-('}]}", "remediation.exclude[0].name: error parsing regexp: missing closing ): `^(?:db-()$`"},
		{"window day", ok + "remediation: {windows: [{days: [mon, funday], start: '02:00', end: '05:00'}]}", `remediation.windows[0].days[1]: unknown day "funday" (want mon, tue, wed, thu, fri, sat, sun)`},
		{"window times", ok + "remediation: {windows: [{start: '2am', end: '02:00'}]}", `remediation.windows[0].start: want HH:MM, got "2am"`},
		// The keys of closed-loop remediation and truth under faults.
		{"stale_after below refresh", "global: {refresh_interval: 1m, stale_after: 30s}\n" + ok,
			"global.stale_after: 30s is shorter than refresh_interval (1m): one failed refresh would take a failing account's servers off /metrics; set at least 1m, or leave it out for 5 x refresh_interval"},
		{"max_attempts", ok + "remediation: {max_attempts: 0}", "remediation.max_attempts: must be at least 1, got 0"},
		{"attempts_window", ok + "remediation: {attempts_window: 0s}", "remediation.attempts_window: must be positive"},
		{"retention zero", ok + "remediation: {retention: 0s}", "remediation.retention: must be positive"},
		{"retention below window", ok + "remediation: {retention: 12h}", "remediation.retention: 12h is shorter than attempts_window (1d): attempts would be pruned before they stop counting"},
		{"retention below cooldown", ok + "remediation: {retention: 2h, attempts_window: 1h, cooldown: 3h}", "remediation.retention: 2h is shorter than cooldown (3h): a cooldown would be pruned before it ends"},
		{"escalate empty", ok + "remediation: {rules: [{name: r, provider: vpsorg, state: [stopped], action: start, escalate: ['']}]}",
			"remediation.rules[0] (r).escalate[0]: empty action name (want reboot, redeploy, start, stop or power_cycle)"},
		{"escalate unknown", ok + "remediation: {rules: [{name: r, provider: vpsorg, state: [stopped], action: start, escalate: [kick]}]}",
			`remediation.rules[0] (r).escalate[0]: unknown action "kick" (want reboot, redeploy, start, stop or power_cycle)`},
		{"escalate unsupported", ok + "remediation: {rules: [{name: r, provider: vpsorg, state: [degraded], action: reboot, escalate: [power_cycle, redeploy]}]}",
			"remediation.rules[0] (r).escalate[1]: vpsorg cannot redeploy; its actions: reboot, start, stop, power_cycle"},
		{"power_cycle on vpnbingo", ok + "remediation: {rules: [{name: r, provider: vpnbingo, state: [degraded], action: redeploy, escalate: [power_cycle]}]}",
			"remediation.rules[0] (r).escalate[0]: vpnbingo cannot power_cycle; its actions: redeploy"},
		{"escalate by account", ok + "remediation: {rules: [{name: r, account: a, state: [degraded], action: reboot, escalate: [redeploy]}]}",
			"remediation.rules[0] (r).escalate[0]: vpsorg cannot redeploy; its actions: reboot, start, stop, power_cycle"},
		{"escalate redeploy without provider", ok + "remediation: {rules: [{name: r, state: [degraded], action: reboot, escalate: [redeploy]}]}",
			"remediation.rules[0] (r).escalate[0]: redeploy is a vpnbingo action; set provider: vpnbingo"},
		{"webhook verify", ok + "remediation: {webhook: {verify: 0s}}", "remediation.webhook.verify: must be positive"},
		{"webhook hold", ok + "remediation: {webhook: {hold: 0s}}", "remediation.webhook.hold: must be positive"},
		{"webhook resolve_grace", ok + "remediation: {webhook: {resolve_grace: 0s}}", "remediation.webhook.resolve_grace: must be positive (Alertmanager's group_interval, e.g. 5m)"},
		{"webhook escalate unknown key", ok + "remediation: {webhook: {escalate: {kick: [reboot]}}}", `remediation.webhook.escalate.kick: unknown action "kick" (want reboot, redeploy, start, stop or power_cycle)`},
		{"webhook escalate key not allowed", ok + "remediation: {webhook: {escalate: {stop: [start]}}}",
			"remediation.webhook.escalate.stop: stop is not in allowed_actions, so no alert can start this ladder; add it there or remove the ladder"},
		{"webhook escalate step unknown", ok + "remediation: {webhook: {escalate: {reboot: [power_cycle, '']}}}",
			"remediation.webhook.escalate.reboot[1]: empty action name (want reboot, redeploy, start, stop or power_cycle)"},
		{"webhook escalate across providers", ok + "remediation: {webhook: {escalate: {reboot: [redeploy]}}}",
			"remediation.webhook.escalate.reboot[0]: no provider can both reboot and redeploy: the ladder is per server"},
		{"webhook escalate not a list", ok + "remediation: {webhook: {escalate: {reboot: power_cycle}}}",
			"remediation.webhook.escalate.reboot: power_cycle: want a list, e.g. [power_cycle]"},
		// Names that become labels and parts of remediation's durable
		// keys (joined with "|" and control characters); an account
		// name that is no label is not repeated.
		{"account name with |", "providers: [{type: vpsorg, name: 'a|b', token: t}]",
			`providers[0].name: not a valid account name (the value is not shown: it may hold a line of the file that joined it, a mis-indented token say); use 1 to 64 letters, digits, "_", "-", "." or ":", starting with a letter or digit: it is the account label`},
		{"account name with a control character", `providers: [{type: vpsorg, name: "a\x01b", token: t}]`,
			`providers[0].name: not a valid account name (the value is not shown: it may hold a line of the file that joined it, a mis-indented token say); use 1 to 64 letters, digits, "_", "-", "." or ":", starting with a letter or digit: it is the account label`},
		{"rule name with |", ok + "remediation: {rules: [{name: 'reboot|stopped', state: [stopped], action: start}]}",
			`remediation.rules[0] (reboot|stopped).name: must not contain "|" or control characters: it is the rule label and part of remediation's durable keys`},
		{"rule name with a tab", ok + "remediation: {rules: [{name: \"reboot\\tstopped\", state: [stopped], action: start}]}",
			`remediation.rules[0] ("reboot\tstopped").name: must not contain "|" or control characters: it is the rule label and part of remediation's durable keys`},
		{"rule name a secret", "providers: [{type: vpsorg, name: a, token: &t sk-SECRET-abc}]\nremediation: {rules: [{name: *t, state: [stopped], action: start}]}",
			"remediation.rules[0] (<redacted>).name: is the value of a secret field; a name is shown in metrics and logs"},
		{"account name a secret", "providers: [{type: vpsorg, name: a, token: t, tls_config: {key: &k key-SECRET-abc, cert: c}}, {type: vpsorg, name: *k, token: t}]",
			"providers[1] (<redacted>).name: is the value of a secret field; a name is shown in metrics and logs"},
		{"live remediation is checked by CheckCredential, not Parse", ok + live + "dry_run: false, max_attempts: -1}", "remediation.max_attempts: must be at least 1, got -1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Parse([]byte(tc.yaml), ".")
			if err == nil {
				t.Fatalf("accepted; want error:\n%s", tc.want)
			}
			if err.Error() != tc.want {
				t.Fatalf("error:\n%v\nwant:\n%s", err, tc.want)
			}
			var errs config.Errors
			if !errors.As(err, &errs) || len(errs) != strings.Count(tc.want, "\n")+1 {
				t.Errorf("want config.Errors with one entry per line, got %T %d", err, len(errs))
			}
		})
	}
}

// A file with a mistake of every kind gets them all in one run, in the
// order of the file: decoding's (unknown fields, values that do not fit,
// shapes) and validation's together. golden: testdata/errors/*.golden
// (go test -run TestErrorsGolden -update).
func TestErrorsGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/errors/*.yml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata/errors/*.yml: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			_, err := config.Load(f)
			if err == nil {
				t.Fatal("accepted")
			}
			got := err.Error() + "\n"
			golden := strings.TrimSuffix(f, ".yml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("errors:\n%s\nwant (%s):\n%s", got, golden, want)
			}
			// The files' secrets are fake-canary-N (and SECRET elsewhere).
			if strings.Contains(got, "SECRET") || strings.Contains(got, "canary") {
				t.Errorf("a secret in the errors:\n%s", got)
			}
		})
	}
}

// docs/configuration.md shows the three-mistake file and its output as
// they are.
func TestErrorsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"testdata/errors/three-mistakes.yml", "testdata/errors/three-mistakes.golden"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(doc), string(b)) {
			t.Errorf("docs/configuration.md does not show %s as it is:\n%s", f, b)
		}
	}
}

// Validation fills in the defaults that depend on other fields.
func TestDerivedDefaults(t *testing.T) {
	c, err := config.Parse([]byte("global: {refresh_interval: 30s}\nproviders: [{type: vpsorg, name: a, token: t}]\n"+
		"remediation: {rules: [{name: r, state: [stopped], action: start}, {name: s, state: [stopped], action: start, verify: 3m}]}\n"), ".")
	if err != nil {
		t.Fatal(err)
	}
	if time.Duration(c.Global.StaleAfter) != 150*time.Second {
		t.Errorf("stale_after %v, want 5 x refresh_interval", c.Global.StaleAfter)
	}
	if time.Duration(c.Remediation.Rules[0].Verify) != config.DefaultVerify || time.Duration(c.Remediation.Rules[1].Verify) != 3*time.Minute {
		t.Errorf("rule verify %v %v", c.Remediation.Rules[0].Verify, c.Remediation.Rules[1].Verify)
	}
}

// A merge key (<<: *anchor) shares settings between accounts.
func TestMergeKeys(t *testing.T) {
	c, err := config.Parse([]byte(`providers:
  - &base {type: vpsorg, name: a, token: t, rate_limit: 5}
  - <<: *base
    name: b
`), ".")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Providers) != 2 || c.Providers[1].Name != "b" || c.Providers[1].RateLimit != 5 || c.Providers[1].Type != "vpsorg" {
		t.Errorf("providers %+v", c.Providers)
	}
	_, err = config.Parse([]byte(`providers:
  - &base {type: vpsorg, name: a, token: t, rate_limt: 5}
  - <<: *base
    name: b
`), ".")
	if err == nil || err.Error() != "providers[0] (a).rate_limt: unknown field, did you mean `rate_limit`?" {
		t.Errorf("error %v", err)
	}
}

// The remediation credential rule.
func TestCheckCredential(t *testing.T) {
	const need = "remediation.webhook.bearer_token: required for live remediation (enabled: true, dry_run: false): set bearer_token or bearer_token_file, " +
		"or basic_auth_users in --web.config.file; the credential guards the webhook and pause, resume and reset, which act on servers"
	const placeholder = "remediation.webhook.bearer_token: still the example's placeholder, which anyone can read; generate a token (openssl rand -hex 32)"
	const both = "remediation.webhook.bearer_token: --web.config.file already asks for basic auth, which uses the same Authorization header; use one of the two"
	for _, tc := range []struct {
		name, remediation string
		basicAuth         bool
		want              string
	}{
		{"off", "{}", false, ""},
		{"dry run", "{enabled: true, state_file: s.db}", false, ""},
		{"disabled, not dry", "{dry_run: false}", false, ""},
		{"live rules, webhook off", "{enabled: true, state_file: s.db, dry_run: false}", false, need},
		{"live webhook", "{enabled: true, state_file: s.db, dry_run: false, webhook: {enabled: true}}", false, need},
		{"live with token", "{enabled: true, state_file: s.db, dry_run: false, webhook: {bearer_token: hook-SECRET}}", false, ""},
		{"live with basic auth", "{enabled: true, state_file: s.db, dry_run: false}", true, ""},
		{"token and basic auth", "{webhook: {bearer_token: hook-SECRET}}", true, both},
		{"placeholder, live", "{enabled: true, state_file: s.db, dry_run: false, webhook: {bearer_token: REPLACE_WITH_A_LONG_RANDOM_STRING}}", false, placeholder},
		{"placeholder, webhook on", "{webhook: {enabled: true, bearer_token: REPLACE_WITH_A_LONG_RANDOM_STRING}}", false, placeholder},
		{"placeholder, unused", "{webhook: {bearer_token: REPLACE_WITH_A_LONG_RANDOM_STRING}}", false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := config.Parse([]byte("providers: [{type: vpsorg, name: a, token: t}]\nremediation: "+tc.remediation+"\n"), ".")
			if err != nil {
				t.Fatal(err)
			}
			err = c.Remediation.CheckCredential(tc.basicAuth)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.want != "" && (err == nil || err.Error() != tc.want):
				t.Errorf("error %v, want %s", err, tc.want)
			}
		})
	}
}

func TestInvalidErrorsCarryNoSecret(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "tok"), []byte("file-SECRET-content\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, y := range []string{
		"providers: [{type: vpsorg, name: a, token: tok-SECRET-x, api_key: key-SECRET-y}]",
		"providers: [{type: vpsorg, name: a, token: !!int tok-SECRET-x, rate_limit: fast}]",
		"providers: [{type: vpsorg, name: a, token: [tok-SECRET-x], tokn: key-SECRET-y}]",
		"providers: [{type: vpsorg, name: a, token: {tok-SECRET-x: 1}}]",
		"providers: [{type: vpsorg, name: a, tokn: tok-SECRET-x}]",
		"providers: [{type: vpsorg, name: a, token: t, tls_config: {key: key-SECRET-y}}]",
		"providers: [{type: vpsorg, name: a, token: t, proxy_url: 'http://u:pw-SECRET@:x'}]",
		"providers: [{type: vpsorg, name: a, token: t, base_url: 'https://u:pw-SECRET@x'}]",
		"providers: [{type: vpsorg, name: a, token: t}]\nremediation: {webhook: {bearer_token: hook-SECRET, bearer_token_file: x}}",
		"providers: [{type: vpsorg, name: a, token: *tok-SECRET}]",
		// An alias carries a secret's value into a non-secret field.
		"providers: [{type: vpsorg, name: a, token: &t sk-SECRET-abc}]\nremediation: {webhook: {allowed_actions: *t}}",
		"providers: [{type: vpsorg, name: a, token: &t sk-SECRET-abc}]\nremediation: {webhook: {allowed_actions: [*t]}}",
		"providers: [{type: vpsorg, name: a, token: &t sk-SECRET-abc}]\nremediation: {rules: [{name: r, state: [stopped], action: *t}]}",
		"providers: [{type: e2e, name: a, token: t, api_key: &k sk-SECRET-abc, project_id: '1'}, {type: vpnbingo, name: b, token: t, timezone: *k}]",
		"providers: [{type: vpsorg, name: a, token: t}]\nremediation: {webhook: {bearer_token: &b sk-SECRET-abc, allowed_actions: [*b]}}",
		// A merge key and a flow mapping carry tls_config's key into a map.
		"providers: [{type: vpsorg, name: a, token: t, tls_config: &k {key: sk-SECRET-k}}]\nremediation: {webhook: {escalate: {<<: *k}}}",
		"providers: [{type: vpsorg, name: a, token: t, tls_config: &k {key: sk-SECRET-k}}]\nremediation: {webhook: {escalate: *k}}",
		// A misspelt secret field's value, carried elsewhere.
		"providers: [{type: vpsorg, name: a, tokn: &t sk-SECRET-abc}]\nremediation: {rules: [{name: r, state: [stopped], action: *t}]}",
		// A secret pasted into base_url: no scheme, so no user info.
		"providers: [{type: vpsorg, name: a, token: t, base_url: 'admin:sk-SECRET-u@admin.vps.org'}]",
		"providers: [{type: vpsorg, name: a, token: t, base_url: 'admin.vps.org?token=sk-SECRET-u'}]",
		"providers: [{type: vpsorg, name: a, token: t, base_url: 'ftp://u:sk-SECRET-u@admin.vps.org'}]",
		// The content of a *_file, repeated in a non-secret field.
		"providers: [{type: vpsorg, name: a, token_file: tok}]\nremediation: {rules: [{name: r, state: [stopped], action: file-SECRET-content}]}",
		// A long secret, cut by the 64-byte limit of a repeated value.
		"providers: [{type: vpsorg, name: a, token: &t sk-SECRET-" + strings.Repeat("x", 70) + "}]\nremediation: {webhook: {allowed_actions: *t}}",
	} {
		_, err := config.Parse([]byte(y), dir)
		if err == nil || strings.Contains(err.Error(), "SECRET") {
			t.Errorf("%s:\n%v", y, err)
		}
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
			// One mistake per line, none empty, the same every time.
			for _, line := range strings.Split(err.Error(), "\n") {
				if strings.TrimSpace(line) == "" {
					t.Fatalf("an empty error line in:\n%v", err)
				}
			}
			if _, again := config.Parse(data, dir); again == nil || again.Error() != err.Error() {
				t.Fatalf("errors differ between runs:\n%v\n--\n%v", err, again)
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

// secretPlaces are files with a mistake that is not about the secret,
// with a secret in one place: @ is the secret as a YAML scalar (wrap,
// when set, puts it inside a longer value first: a URL), a `secret` file
// holds it as a *_file's content. creds marks the files that parse but
// break the credential rule (with basic auth).
var secretPlaces = []struct {
	yaml  string
	creds bool
	wrap  string // a format with one %s
}{
	{yaml: "providers: [{type: vpsorg, name: a, token: @, rate_limit: fast}]"},
	{yaml: "global: {refresh_interval: 60}\nproviders: [{type: e2e, name: a, token: t, api_key: @}]"},
	{yaml: "providers: [{type: vpsorg, name: a, token: @, api_key: @, tokn: x}]"},
	{yaml: "providers: [{type: vpsorg, name: a, token: @, token_file: secret, rate_limit: -1}]"},
	{yaml: "providers: [{type: vpsorg, name: a, token: !!int @, rate_limit: fast}]"},
	{yaml: "providers: [{type: vpsorg, name: a, token: !!binary @, rate_limit: fast}]"},
	{yaml: "providers: [{type: vpsorg, name: a, token: [@], rate_limit: fast}]"},
	{yaml: "providers: [{type: vpsorg, name: a, token: {@: 1}, rate_limit: fast}]"},
	{yaml: "providers: [{type: vpsorg, name: a, tokn: @}]"},
	{yaml: "providers: [{type: vpsorg, name: a, token: t, tls_config: {key: @}}]"},
	{yaml: "providers: [{type: vpsorg, name: a, token: t, tls_config: {cert: x, key: @, key_file: y}}]"},
	{yaml: "providers: [{type: vpsorg, name: a, token: t}]\nremediation: {cooldown: 1 hour, webhook: {bearer_token: @, bearer_token_file: secret}}"},
	{yaml: "providers: [{type: vpnbingo, name: a, token_file: secret, timezone: Mars/Base}]"},
	{yaml: "providers: [{type: e2e, name: a, token: t, api_key_file: secret, project_id: [1]}]"},
	{yaml: "providers: [{type: e2e, name: a, token_file: secret, api_key_file: secret}]"},
	{yaml: "providers: [{type: vpsorg, name: a, token: t}]\nremediation: {webhook: {bearer_token: @}}", creds: true},
	{yaml: "providers: [{type: vpsorg, name: a, token: t}]\nremediation: {enabled: true, dry_run: false, state_file: s, webhook: {bearer_token_file: secret}}", creds: true},
	// Aliases carry a secret's value into fields whose values are
	// repeated: a list, a list item, an action, a time zone.
	{yaml: "providers: [{type: vpsorg, name: a, token: &t @}]\nremediation: {webhook: {allowed_actions: *t}}"},
	{yaml: "providers: [{type: vpsorg, name: a, token: &t @}]\nremediation: {webhook: {allowed_actions: [*t]}}"},
	{yaml: "providers: [{type: vpsorg, name: a, token: &t @}]\nremediation: {rules: [{name: r, state: [stopped], action: *t}]}"},
	{yaml: "providers: [{type: e2e, name: a, token: t, api_key: &k @, project_id: '1'}, {type: vpnbingo, name: b, token: t, timezone: *k}]"},
	{yaml: "providers: [{type: vpsorg, name: a, token: t}]\nremediation: {webhook: {bearer_token: &b @, allowed_actions: [*b]}}"},
	{yaml: "providers: [{type: vpsorg, name: a, tokn: &t @}]\nremediation: {rules: [{name: r, state: [stopped], action: *t}]}"},
	// A merge key and a flow mapping carry tls_config's key into a map
	// whose values are repeated.
	{yaml: "providers: [{type: vpsorg, name: a, token: t, tls_config: &k {key: @}}]\nremediation: {webhook: {escalate: {<<: *k}}}"},
	{yaml: "providers: [{type: vpsorg, name: a, token: t, tls_config: &k {key: @}}]\nremediation: {webhook: {escalate: *k}}"},
	{yaml: "x: &k {token: @}\nproviders: [{type: vpsorg, name: a, token: t}]\nremediation: {webhook: {escalate: {<<: *k}}}"},
	// A *_file's content, typed into a field whose value is repeated.
	{yaml: "providers: [{type: vpsorg, name: a, token_file: secret}]\nremediation: {rules: [{name: r, state: [stopped], action: @}]}"},
	// A secret pasted into base_url: without a scheme there is no user
	// info; with one, in the user info or the query.
	{yaml: "providers: [{type: vpsorg, name: a, token: t, base_url: @}]", wrap: "admin:%s@admin.vps.org"},
	{yaml: "providers: [{type: vpsorg, name: a, token: t, base_url: @}]", wrap: "ftp://admin:%s@admin.vps.org"},
	{yaml: "providers: [{type: vpsorg, name: a, token: t, base_url: @}]", wrap: "admin.vps.org/?token=%s"},
	{yaml: "providers: [{type: vpsorg, name: a, token: t, proxy_url: @}]\nglobal: {refresh_interval: 60}", wrap: "http://u:%s@proxy:3128"},
}

// FuzzSecretNeverInErrors: whatever a secret field holds (token, api_key,
// bearer_token, tls_config.key inline; a *_file's content; a password in a
// URL), no error line of a broken file carries it, in any YAML style, even
// where an alias, a merge key or a flow mapping carries it into a field
// whose value is repeated: not whole, not Go-quoted, not URL-escaped, not
// cut short. The seeds are the corpus; make fuzz explores further.
func FuzzSecretNeverInErrors(f *testing.F) {
	for i := range secretPlaces {
		f.Add("tok-SECRET-fuzz", uint8(i), uint8(i%3))
		f.Add("sk-SECRET-"+strings.Repeat("x", 80), uint8(i), uint8(2))
	}
	f.Add("60", uint8(0), uint8(2))
	f.Add("line one\nline two", uint8(2), uint8(0))
	f.Add("`quoted` \"value\" 'here'", uint8(4), uint8(0))
	f.Add("*anchor-like", uint8(1), uint8(1))
	f.Add("aGVsbG8gd29ybGQ=", uint8(5), uint8(2))
	f.Add("Mars/Base-SECRET", uint8(12), uint8(0))
	f.Add("pass word/with?odd&chars", uint8(27), uint8(1))
	f.Add("é-SECRET-\tunicode", uint8(17), uint8(0))
	dir := f.TempDir()
	secretFile := filepath.Join(dir, "secret")
	f.Fuzz(func(t *testing.T, secret string, place, style uint8) {
		secret = strings.TrimSpace(secret)
		if len(secret) < 8 || !utf8.ValidString(secret) || strings.ContainsRune(secret, 0) {
			return // too short to tell apart from the rest of an error
		}
		tpl := secretPlaces[int(place)%len(secretPlaces)]
		wrap := func(s string) string {
			if tpl.wrap == "" {
				return s
			}
			return fmt.Sprintf(tpl.wrap, s)
		}
		scalar, ok := yamlScalar(wrap(secret), style%3)
		if !ok {
			return
		}
		parse := func(value, scalar string) error {
			t.Helper()
			if err := os.WriteFile(secretFile, []byte(value+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := config.Parse([]byte(strings.ReplaceAll(tpl.yaml, "@", scalar)), dir)
			if err != nil {
				return err
			}
			if !tpl.creds {
				t.Fatalf("accepted a broken file:\n%s", strings.ReplaceAll(tpl.yaml, "@", scalar))
			}
			return c.Remediation.CheckCredential(true)
		}
		const placeholder = "PLACEHOLDER-VALUE"
		phScalar, _ := yamlScalar(wrap(placeholder), 1)
		base := parse(placeholder, phScalar)
		if base == nil {
			t.Fatalf("place %d accepted", place)
		}
		if strings.Contains(base.Error(), secret) {
			return // the value is in the message whatever the secret is
		}
		err := parse(secret, scalar)
		if err == nil {
			t.Fatalf("accepted with the secret in it:\n%s", strings.ReplaceAll(tpl.yaml, "@", scalar))
		}
		quoted := strconv.Quote(secret)
		quoted = quoted[1 : len(quoted)-1]
		forms := []string{secret, quoted, url.QueryEscape(secret), url.PathEscape(secret)}
		for _, line := range strings.Split(err.Error(), "\n") {
			for _, form := range forms {
				if strings.Contains(line, form) {
					t.Fatalf("an error line carries the secret %q:\n%s", secret, line)
				}
			}
			// A repeated value is cut at 64 bytes: no cut may end in
			// a long start of the secret.
			if len(quoted) > 16 && strings.Contains(line, quoted[:16]) && strings.Contains(line, `"...`) {
				t.Fatalf("an error line carries the start of the secret %q:\n%s", secret, line)
			}
		}
	})
}

// yamlScalar writes s as a YAML scalar in a flow context: double-quoted,
// single-quoted or plain (style 0, 1, 2), or false when that style cannot
// hold it.
func yamlScalar(s string, style uint8) (string, bool) {
	n := &yaml.Node{Kind: yaml.ScalarNode, Value: s}
	switch style {
	case 0:
		n.Style = yaml.DoubleQuotedStyle
	case 1:
		n.Style = yaml.SingleQuotedStyle
	default:
		// Plain, when it reads back as itself inside a flow list.
		var back []string
		if err := yaml.Unmarshal([]byte("["+s+"]"), &back); err != nil || len(back) != 1 || back[0] != s {
			return "", false
		}
		return s, true
	}
	b, err := yaml.Marshal(n)
	if err != nil {
		return "", false
	}
	out := strings.TrimSuffix(string(b), "\n")
	var back []string
	if err := yaml.Unmarshal([]byte("["+out+"]"), &back); err != nil || len(back) != 1 || back[0] != s {
		return "", false
	}
	return out, true
}
