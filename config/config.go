// Package config loads and validates the exporter's YAML configuration:
// strict decoding (unknown fields are errors), defaults set in
// UnmarshalYAML, secrets inline or from files, and errors that teach: every
// mistake of a file in one run, one per line, each with its field path,
// the value of a non-secret field and a suggestion for a misspelt one
// (see Errors).
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"time"

	commoncfg "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"

	"github.com/vps-exporter/vps_exporter/internal/metricnames"
)

// Provider types.
const (
	TypeVPNBingo = "vpnbingo"
	TypeVPSOrg   = "vpsorg"
	TypeE2E      = "e2e"
)

// Config is the whole configuration file.
type Config struct {
	Global      Global      `yaml:"global"`
	Providers   []Provider  `yaml:"providers"`
	Remediation Remediation `yaml:"remediation"`
}

// Global holds settings shared by every account.
type Global struct {
	// RefreshInterval is how often each account is polled.
	RefreshInterval model.Duration `yaml:"refresh_interval"`
	// RequestTimeout bounds one HTTP request to a provider.
	RequestTimeout model.Duration `yaml:"request_timeout"`
	// MaxConcurrency bounds detail requests in flight per account.
	MaxConcurrency int `yaml:"max_concurrency"`
	// StaleAfter is how long a failing account's servers stay on /metrics
	// with their last values after its last successful list; 0 in the
	// file means 5 x RefreshInterval (set by validation).
	StaleAfter model.Duration `yaml:"stale_after,omitempty"`
	// ExcludeMetrics are per-server metric families left out of /metrics;
	// when the file does not set it, metricnames.DefaultExcluded.
	ExcludeMetrics []string `yaml:"exclude_metrics"`
}

// DefaultGlobal returns the global defaults.
func DefaultGlobal() Global {
	return Global{
		RefreshInterval: model.Duration(60 * time.Second),
		RequestTimeout:  model.Duration(10 * time.Second),
		MaxConcurrency:  8,
		ExcludeMetrics:  metricnames.DefaultExcluded(),
	}
}

// UnmarshalYAML sets defaults before decoding.
func (g *Global) UnmarshalYAML(unmarshal func(any) error) error {
	*g = DefaultGlobal()
	type plain Global
	return unmarshal((*plain)(g))
}

// Provider is one account of one provider API.
type Provider struct {
	Type string `yaml:"type"`
	// Name is the account label; unique across the file.
	Name    string `yaml:"name"`
	BaseURL string `yaml:"base_url,omitempty"`
	// Token is sent as Authorization: Bearer. TokenFile is read instead
	// when set (and re-read on every reload).
	Token     commoncfg.Secret `yaml:"token,omitempty"`
	TokenFile string           `yaml:"token_file,omitempty"`
	// APIKey is E2E's apikey query parameter, or read from APIKeyFile.
	APIKey     commoncfg.Secret `yaml:"api_key,omitempty"`
	APIKeyFile string           `yaml:"api_key_file,omitempty"`
	ProjectID  string           `yaml:"project_id,omitempty"`
	Location   string           `yaml:"location,omitempty"`
	// Timezone is the zone of VPN.bingo's zone-less times.
	Timezone string `yaml:"timezone,omitempty"`
	// RateLimit is requests per second to this account (0: unlimited).
	RateLimit float64 `yaml:"rate_limit,omitempty"`
	// DetailBudget caps the per-server detail reads at this share of
	// RateLimit (0: what the lists and re-reads leave).
	DetailBudget float64 `yaml:"detail_budget,omitempty"`
	// TLSConfig and ProxyURL configure the HTTP client.
	TLSConfig commoncfg.TLSConfig `yaml:"tls_config,omitempty"`
	ProxyURL  commoncfg.URL       `yaml:"proxy_url,omitempty"`

	// URL is BaseURL parsed, or the provider's default.
	URL *url.URL `yaml:"-"`
	// Loc is Timezone loaded.
	Loc *time.Location `yaml:"-"`
}

// Remediation configures automatic repairs. It is off and dry-run unless
// the file says otherwise.
type Remediation struct {
	Enabled           bool           `yaml:"enabled"`
	DryRun            bool           `yaml:"dry_run"`
	Cooldown          model.Duration `yaml:"cooldown"`
	MaxActionsPerHour int            `yaml:"max_actions_per_hour"`
	MaxFleetFraction  float64        `yaml:"max_fleet_fraction"`
	StateFile         string         `yaml:"state_file"`
	// MaxAttempts actions on one server within AttemptsWindow make it
	// exhausted: no more actions until its condition clears or a reset.
	MaxAttempts    int            `yaml:"max_attempts"`
	AttemptsWindow model.Duration `yaml:"attempts_window"`
	// Retention bounds how long audit, cooldown and lineage records are
	// kept.
	Retention model.Duration `yaml:"retention"`
	Rules     []Rule         `yaml:"rules"`
	// Exclude lists servers never touched, by rules or alerts.
	Exclude []Exclude `yaml:"exclude"`
	// Windows, when set, are the only times actions may be taken.
	Windows []Window `yaml:"windows"`
	Webhook Webhook  `yaml:"webhook"`
	// HA, when set, runs remediation on etcd across replicas (see HA);
	// StateFile is then optional. Nil: one process on StateFile.
	HA *HA `yaml:"ha,omitempty"`
	// StaleAfter is global.stale_after, copied here by validation: a
	// verdict waits at most this long for a fresh view of its server.
	StaleAfter model.Duration `yaml:"-"`
}

// Exclude matches servers remediation must never touch: every field that
// is set must match. Name is an RE2 regular expression, anchored at both
// ends, on the server's name.
type Exclude struct {
	Provider string `yaml:"provider,omitempty"`
	Account  string `yaml:"account,omitempty"`
	ID       string `yaml:"id,omitempty"`
	Name     string `yaml:"name,omitempty"`

	// NameRE is Name compiled.
	NameRE *regexp.Regexp `yaml:"-"`
}

// Matches reports whether the exclusion covers a server.
func (x *Exclude) Matches(provider, account, id, name string) bool {
	return (x.Provider == "" || x.Provider == provider) && (x.Account == "" || x.Account == account) &&
		(x.ID == "" || x.ID == id) && (x.NameRE == nil || x.NameRE.MatchString(name))
}

// Window is a time of the week when actions may be taken: on Days (all
// when empty), from Start to End (HH:MM; an End before Start runs past
// midnight into the next day), in Timezone (default UTC).
type Window struct {
	Days     []string `yaml:"days,omitempty"`
	Start    string   `yaml:"start"`
	End      string   `yaml:"end"`
	Timezone string   `yaml:"timezone,omitempty"`

	days       [7]bool
	start, end int // minutes of the day
	loc        *time.Location
}

// Contains reports whether t falls in the window.
func (w *Window) Contains(t time.Time) bool {
	t = t.In(w.loc)
	m := t.Hour()*60 + t.Minute()
	if w.start < w.end {
		return w.days[t.Weekday()] && m >= w.start && m < w.end
	}
	// Past midnight: the evening part on a listed day, the morning part
	// on the day after one.
	return (w.days[t.Weekday()] && m >= w.start) || (w.days[(t.Weekday()+6)%7] && m < w.end)
}

// DefaultRemediation returns the remediation defaults: off, dry-run.
func DefaultRemediation() Remediation {
	return Remediation{
		DryRun:            true,
		Cooldown:          model.Duration(time.Hour),
		MaxActionsPerHour: 10,
		MaxFleetFraction:  0.2,
		MaxAttempts:       3,
		AttemptsWindow:    model.Duration(24 * time.Hour),
		Retention:         model.Duration(30 * 24 * time.Hour),
		Webhook:           DefaultWebhook(),
	}
}

// UnmarshalYAML sets defaults before decoding.
func (r *Remediation) UnmarshalYAML(unmarshal func(any) error) error {
	*r = DefaultRemediation()
	type plain Remediation
	return unmarshal((*plain)(r))
}

// Webhook configures the Alertmanager webhook receiver and the control
// endpoints, which take the same credential.
type Webhook struct {
	Enabled        bool     `yaml:"enabled"`
	AllowedActions []string `yaml:"allowed_actions"`
	// BearerToken (or BearerTokenFile, re-read on reload) is required in
	// an Authorization: Bearer header when set.
	BearerToken     commoncfg.Secret `yaml:"bearer_token,omitempty"`
	BearerTokenFile string           `yaml:"bearer_token_file,omitempty"`
	// Verify is how long Alertmanager has to resolve an alert after its
	// action for the action to count as recovered.
	Verify model.Duration `yaml:"verify"`
	// ResolveGrace is how long after Verify a resolved notification
	// whose endsAt is inside the window may still arrive (Alertmanager
	// sends it at the group's next flush, group_interval): no alert
	// verdict is not_recovered, and no escalation happens, before it.
	ResolveGrace model.Duration `yaml:"resolve_grace"`
	// Escalate is the ladder of alert-driven actions: the actions to try,
	// in order, after the keyed one did not recover the server.
	Escalate map[string][]string `yaml:"escalate,omitempty"`
	// Hold is how long an accepted alert held back for a passing reason
	// (the account not listed yet, down or stale, an action under way,
	// shutdown...) is kept and retried, from when it was accepted.
	Hold model.Duration `yaml:"hold"`
}

// DefaultWebhookHold is webhook.hold when the file does not set it.
const DefaultWebhookHold = time.Hour

// DefaultWebhook returns the webhook defaults.
func DefaultWebhook() Webhook {
	return Webhook{AllowedActions: []string{"reboot", "redeploy"}, Verify: model.Duration(15 * time.Minute), Hold: model.Duration(DefaultWebhookHold), ResolveGrace: model.Duration(DefaultResolveGrace)}
}

// UnmarshalYAML sets defaults before decoding.
func (w *Webhook) UnmarshalYAML(unmarshal func(any) error) error {
	*w = DefaultWebhook()
	type plain Webhook
	return unmarshal((*plain)(w))
}

// Rule is one threshold rule of the remediation loop.
type Rule struct {
	Name     string         `yaml:"name"`
	Provider string         `yaml:"provider,omitempty"`
	Account  string         `yaml:"account,omitempty"`
	State    []string       `yaml:"state,omitempty"`
	Status   []string       `yaml:"status,omitempty"`
	Metric   string         `yaml:"metric,omitempty"`
	Above    *float64       `yaml:"above,omitempty"`
	Below    *float64       `yaml:"below,omitempty"`
	For      model.Duration `yaml:"for,omitempty"`
	Action   string         `yaml:"action"`
	// Escalate lists the next actions, in order, each taken when the
	// previous one did not recover the server within Verify.
	Escalate []string `yaml:"escalate,omitempty"`
	// Verify is how long an action has to recover the server; 0 in the
	// file means DefaultVerify (set by validation).
	Verify model.Duration `yaml:"verify,omitempty"`
	Params RuleParams     `yaml:"params,omitempty"`
}

// DefaultVerify is a rule's verify window when the file does not set one.
const DefaultVerify = 10 * time.Minute

// DefaultResolveGrace is remediation.webhook.resolve_grace when the file
// does not set it: Alertmanager's default group_interval.
const DefaultResolveGrace = 5 * time.Minute

// RuleParams are the action's parameters.
type RuleParams struct {
	Force       bool   `yaml:"force"`
	CountryCode string `yaml:"country_code"`
}

// WebhookActsForReal reports whether the webhook can make real provider
// calls.
func (r *Remediation) WebhookActsForReal() bool {
	return r.Live() && r.Webhook.Enabled
}

// Live reports whether remediation makes real provider calls (enabled,
// dry_run false): then it needs a credential (see CheckCredential).
func (r *Remediation) Live() bool {
	return r.Enabled && !r.DryRun
}

// Placeholder starts the secrets of the example configurations
// (REPLACE_WITH_YOUR_TOKEN): a provider answers them 401, and the
// remediation credential refuses them.
const Placeholder = "REPLACE_WITH_"

// CheckCredential applies the remediation credential rule, which needs to
// know whether --web.config.file asks for basic auth: live remediation
// (enabled, dry_run false) is refused without a credential — the webhook's
// bearer_token(_file) or basic auth — whether or not the webhook is on, as
// the same credential guards pause, resume and reset; and a bearer token
// is refused beside basic auth, as both use the Authorization header, and
// so is the examples' placeholder when it would guard anything.
func (r *Remediation) CheckCredential(basicAuth bool) error {
	const at = "remediation.webhook.bearer_token"
	switch {
	case r.Webhook.BearerToken != "" && basicAuth:
		return Errors{{Path: at, Msg: "--web.config.file already asks for basic auth, which uses the same Authorization header; use one of the two"}}
	case (r.Live() || r.Webhook.Enabled) && strings.HasPrefix(string(r.Webhook.BearerToken), Placeholder):
		return Errors{{Path: at, Msg: "still the example's placeholder, which anyone can read; generate a token (openssl rand -hex 32)"}}
	case r.Live() && r.Webhook.BearerToken == "" && !basicAuth:
		return Errors{{Path: at, Msg: "required for live remediation (enabled: true, dry_run: false): set bearer_token or bearer_token_file, " +
			"or basic_auth_users in --web.config.file; the credential guards the webhook and pause, resume and reset, which act on servers"}}
	}
	return nil
}

// Options are the checks of a load that need to know what is outside the
// file.
type Options struct {
	// Credential applies the remediation credential rule
	// (CheckCredential) in the same run as the file's other checks, its
	// mistakes among theirs; WebBasicAuth is whether --web.config.file
	// asks for basic auth.
	Credential   bool
	WebBasicAuth bool
}

// checkCredential adds the credential rule's mistake to errs, unless a
// field it reads did not decode or could not be read (the rule's mistake
// would be a consequence of that one).
func (c *Config) checkCredential(basicAuth bool, errs *errorList) {
	const r, hook = "remediation.", "remediation.webhook."
	for _, p := range []string{r + "enabled", r + "dry_run", hook + "enabled", hook + "bearer_token", hook + "bearer_token_file"} {
		for _, f := range errs.failed {
			if under(f, p) || under(p, f) {
				return
			}
		}
	}
	var es Errors
	if errors.As(c.Remediation.CheckCredential(basicAuth), &es) {
		for _, e := range es {
			errs.addLine(e.Path, 0, e.Msg)
		}
	}
}

// Load reads, decodes and validates the file at path. Relative *_file
// paths are read relative to the file's directory. A file with mistakes
// gives Errors.
func Load(path string) (*Config, error) { return LoadWith(path, Options{}) }

// LoadWith is Load with the checks of o.
func LoadWith(path string, o Options) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return ParseWith(data, filepath.Dir(path), o)
}

// Parse decodes and validates a configuration; baseDir resolves relative
// secret file paths. A configuration with mistakes gives Errors: all of
// them, decoding's and validation's, in the order of the file.
func Parse(data []byte, baseDir string) (*Config, error) { return ParseWith(data, baseDir, Options{}) }

// ParseWith is Parse with the checks of o.
func ParseWith(data []byte, baseDir string, o Options) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		// A syntax error: nothing after it can be read. yaml says where.
		msg, _, _ := strings.Cut(strings.TrimSpace(err.Error()), "\n")
		return nil, Errors{{Msg: "parse config: yaml: " + clean(msg)}}
	}
	errs := &errorList{secrets: secrets{}}
	// The secrets first, wherever they are: the walk and validation
	// may repeat a value an alias carried from a secret field.
	gather(&root, false, errs.secrets)
	w := newWalker(errs)
	var doc *yaml.Node
	if len(root.Content) > 0 {
		doc = root.Content[0]
		w.walk(doc, reflect.TypeOf(Config{}), "", false, 0)
	}
	c := &Config{Global: DefaultGlobal(), Remediation: DefaultRemediation()}
	if len(errs.errs) == 0 {
		// The file as written, strictly: the source of truth for a
		// configuration that is accepted.
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
			return nil, errs.final(Errors{w.located(err)})
		}
	} else if err := doc.Decode(c); err != nil {
		// What is left after the walk removed what it reported does
		// not decode either: report what was found.
		return nil, errs.err(w.paths)
	}
	c.validate(baseDir, errs)
	if o.Credential {
		c.checkCredential(o.WebBasicAuth, errs)
	}
	if err := errs.err(w.paths); err != nil {
		return nil, err
	}
	return c, nil
}
