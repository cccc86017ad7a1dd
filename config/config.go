// Package config loads and validates the exporter's YAML configuration:
// strict decoding (unknown fields are errors), defaults set in
// UnmarshalYAML, secrets inline or from files, and errors that name the
// offending field.
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

	"github.com/vps-exporter/vps_exporter/providers"
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
}

// DefaultGlobal returns the global defaults.
func DefaultGlobal() Global {
	return Global{
		RefreshInterval: model.Duration(60 * time.Second),
		RequestTimeout:  model.Duration(10 * time.Second),
		MaxConcurrency:  8,
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

var weekdays = map[string]time.Weekday{"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday, "thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday}

func (w *Window) validate(at string) error {
	if len(w.Days) == 0 {
		w.days = [7]bool{true, true, true, true, true, true, true}
	}
	for _, d := range w.Days {
		wd, ok := weekdays[strings.ToLower(d)]
		if !ok {
			return fmt.Errorf("%s.days: unknown day %q (want mon, tue, wed, thu, fri, sat, sun)", at, d)
		}
		w.days[wd] = true
	}
	var err error
	if w.start, err = clockMinutes(w.Start); err != nil {
		return fmt.Errorf("%s.start: %w", at, err)
	}
	if w.end, err = clockMinutes(w.End); err != nil {
		return fmt.Errorf("%s.end: %w", at, err)
	}
	if w.start == w.end {
		return fmt.Errorf("%s.end: equals start; a window needs a length", at)
	}
	w.loc = time.UTC
	if w.Timezone != "" {
		if w.loc, err = time.LoadLocation(w.Timezone); err != nil {
			return fmt.Errorf("%s.timezone: %w", at, err)
		}
	}
	return nil
}

func clockMinutes(s string) (int, error) {
	t, err := time.Parse("15:04", s)
	if err != nil {
		return 0, fmt.Errorf("want HH:MM, got %q", s)
	}
	return t.Hour()*60 + t.Minute(), nil
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
	// Escalate is the ladder of alert-driven actions: the actions to try,
	// in order, after the keyed one did not recover the server.
	Escalate map[string][]string `yaml:"escalate,omitempty"`
}

// DefaultWebhook returns the webhook defaults.
func DefaultWebhook() Webhook {
	return Webhook{AllowedActions: []string{"reboot", "redeploy"}, Verify: model.Duration(15 * time.Minute)}
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

// RuleParams are the action's parameters.
type RuleParams struct {
	Force       bool   `yaml:"force"`
	CountryCode string `yaml:"country_code"`
}

// WebhookActsForReal reports whether the webhook can make real provider
// calls: then it needs a credential (bearer_token, or basic auth in the
// web config).
func (r *Remediation) WebhookActsForReal() bool {
	return r.Enabled && r.Webhook.Enabled && !r.DryRun
}

// Load reads, decodes and validates the file at path. Relative *_file
// paths are read relative to the file's directory.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(data, filepath.Dir(path))
}

// Parse decodes and validates a configuration; baseDir resolves relative
// secret file paths.
func Parse(data []byte, baseDir string) (*Config, error) {
	c := &Config{Global: DefaultGlobal(), Remediation: DefaultRemediation()}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		// Name the field. YAML type errors quote the offending value; it
		// may be a secret pasted into the wrong field, so it is not
		// repeated.
		if located := locate(data, reflect.TypeOf(Config{}), err); located != nil {
			return nil, fmt.Errorf("parse config: %w", located)
		}
		return nil, fmt.Errorf("parse config: %s", quotedValue.ReplaceAllString(err.Error(), "`<value>`"))
	}
	if err := c.validate(baseDir); err != nil {
		return nil, err
	}
	return c, nil
}

// quotedValue matches the backtick-quoted values in yaml.v3's errors.
var quotedValue = regexp.MustCompile("`[^`]*`")

func defaultBaseURL(typ string) string {
	switch typ {
	case TypeVPNBingo:
		return "https://my.vpn.bingo"
	case TypeVPSOrg:
		return "https://admin.vps.org"
	case TypeE2E:
		return "https://api.e2enetworks.com"
	}
	return ""
}

func (c *Config) validate(baseDir string) error {
	g := c.Global
	if g.RefreshInterval <= 0 {
		return errors.New("global.refresh_interval: must be positive")
	}
	if g.RequestTimeout <= 0 {
		return errors.New("global.request_timeout: must be positive")
	}
	if g.MaxConcurrency < 1 {
		return fmt.Errorf("global.max_concurrency: must be at least 1, got %d", g.MaxConcurrency)
	}
	if c.Global.StaleAfter < 0 {
		return errors.New("global.stale_after: must not be negative")
	}
	if c.Global.StaleAfter == 0 {
		c.Global.StaleAfter = 5 * g.RefreshInterval
	}
	if len(c.Providers) == 0 {
		return errors.New("providers: at least one account is required")
	}
	names := map[string]bool{}
	for i := range c.Providers {
		p := &c.Providers[i]
		at := fmt.Sprintf("providers[%d]", i)
		if err := p.validate(at, baseDir); err != nil {
			return err
		}
		if names[p.Name] {
			return fmt.Errorf("%s.name: duplicate account name %q", at, p.Name)
		}
		names[p.Name] = true
	}
	return c.Remediation.validate(c, baseDir)
}

func (p *Provider) validate(at, baseDir string) error {
	switch p.Type {
	case TypeVPNBingo, TypeVPSOrg, TypeE2E:
	case "":
		return fmt.Errorf("%s.type: required (vpnbingo, vpsorg or e2e)", at)
	default:
		return fmt.Errorf("%s.type: unknown provider type %q (want vpnbingo, vpsorg or e2e)", at, p.Type)
	}
	if p.Name == "" {
		return fmt.Errorf("%s.name: required", at)
	}
	at = fmt.Sprintf("%s (%s)", at, p.Name)
	raw := p.BaseURL
	if raw == "" {
		raw = defaultBaseURL(p.Type)
	}
	u, err := url.Parse(strings.TrimSuffix(raw, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" {
		return fmt.Errorf("%s.base_url: want an http(s) URL without query, got %q", at, p.BaseURL)
	}
	p.URL = u
	if err := readSecret(&p.Token, p.TokenFile, at+".token", baseDir); err != nil {
		return err
	}
	if p.Token == "" {
		return fmt.Errorf("%s.token: required (token or token_file)", at)
	}
	if p.Type == TypeE2E {
		if err := readSecret(&p.APIKey, p.APIKeyFile, at+".api_key", baseDir); err != nil {
			return err
		}
		if p.APIKey == "" {
			return fmt.Errorf("%s.api_key: required for e2e (api_key or api_key_file)", at)
		}
		if p.ProjectID == "" {
			return fmt.Errorf("%s.project_id: required for e2e", at)
		}
	} else {
		for field, set := range map[string]bool{"api_key": p.APIKey != "" || p.APIKeyFile != "", "project_id": p.ProjectID != "", "location": p.Location != ""} {
			if set {
				return fmt.Errorf("%s.%s: only e2e accounts take it", at, field)
			}
		}
	}
	if p.Timezone != "" && p.Type != TypeVPNBingo {
		return fmt.Errorf("%s.timezone: only vpnbingo accounts take it", at)
	}
	p.Loc = time.UTC
	if p.Timezone != "" {
		loc, err := time.LoadLocation(p.Timezone)
		if err != nil {
			return fmt.Errorf("%s.timezone: %w", at, err)
		}
		p.Loc = loc
	}
	if p.RateLimit < 0 {
		return fmt.Errorf("%s.rate_limit: must not be negative", at)
	}
	if p.DetailBudget != 0 {
		switch {
		case p.DetailBudget < 0 || p.DetailBudget > 1:
			return fmt.Errorf("%s.detail_budget: must be in (0, 1], got %v", at, p.DetailBudget)
		case p.RateLimit == 0:
			return fmt.Errorf("%s.detail_budget: is a share of rate_limit; set rate_limit too", at)
		}
	}
	if err := p.TLSConfig.Validate(); err != nil {
		return fmt.Errorf("%s.tls_config: %w", at, err)
	}
	return nil
}

// maxSecretFile bounds a *_file secret.
const maxSecretFile = 64 << 10

// readSecret fills *s from file when file is set; both set is an error.
func readSecret(s *commoncfg.Secret, file, at, baseDir string) error {
	if file == "" {
		return nil
	}
	if *s != "" {
		return fmt.Errorf("%s: set either %s or %s_file, not both", at, at[strings.LastIndex(at, ".")+1:], at[strings.LastIndex(at, ".")+1:])
	}
	if !filepath.IsAbs(file) {
		file = filepath.Join(baseDir, file)
	}
	f, err := os.Open(file)
	if err != nil {
		return fmt.Errorf("%s_file: %w", at, err)
	}
	defer f.Close()
	// A secret is a line of text: a file that is bigger (a device, a
	// wrong path) is refused rather than read without end.
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	if err != nil {
		return fmt.Errorf("%s_file: %w", at, err)
	}
	if len(b) > maxSecretFile {
		return fmt.Errorf("%s_file: %s is larger than %d bytes; it should hold only the secret", at, file, maxSecretFile)
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return fmt.Errorf("%s_file: %s is empty", at, file)
	}
	*s = commoncfg.Secret(v)
	return nil
}

func (r *Remediation) validate(c *Config, baseDir string) error {
	if r.Cooldown < 0 {
		return errors.New("remediation.cooldown: must not be negative")
	}
	if r.MaxActionsPerHour < 0 {
		return errors.New("remediation.max_actions_per_hour: must not be negative")
	}
	if r.MaxFleetFraction <= 0 || r.MaxFleetFraction > 1 {
		return fmt.Errorf("remediation.max_fleet_fraction: must be in (0, 1], got %v", r.MaxFleetFraction)
	}
	if r.Enabled && r.StateFile == "" {
		return errors.New("remediation.state_file: required when remediation is enabled (cooldowns and the audit log must survive restarts)")
	}
	for _, a := range r.Webhook.AllowedActions {
		if !validAction(a) {
			return fmt.Errorf("remediation.webhook.allowed_actions: unknown action %q (want reboot, redeploy, start or stop)", a)
		}
	}
	if err := readSecret(&r.Webhook.BearerToken, r.Webhook.BearerTokenFile, "remediation.webhook.bearer_token", baseDir); err != nil {
		return err
	}
	for i := range r.Exclude {
		x := &r.Exclude[i]
		at := fmt.Sprintf("remediation.exclude[%d]", i)
		switch x.Provider {
		case "", TypeVPNBingo, TypeVPSOrg, TypeE2E:
		default:
			return fmt.Errorf("%s.provider: unknown provider type %q", at, x.Provider)
		}
		if x.Provider == "" && x.Account == "" && x.ID == "" && x.Name == "" {
			return fmt.Errorf("%s: names nothing (set provider, account, id or name)", at)
		}
		if x.Name != "" {
			re, err := regexp.Compile("^(?:" + x.Name + ")$")
			if err != nil {
				return fmt.Errorf("%s.name: %w", at, err)
			}
			x.NameRE = re
		}
	}
	for i := range r.Windows {
		if err := r.Windows[i].validate(fmt.Sprintf("remediation.windows[%d]", i)); err != nil {
			return err
		}
	}
	accounts := map[string]string{}
	for _, p := range c.Providers {
		accounts[p.Name] = p.Type
	}
	names := map[string]bool{}
	for i, rule := range r.Rules {
		at := fmt.Sprintf("remediation.rules[%d]", i)
		if rule.Name == "" {
			return fmt.Errorf("%s.name: required", at)
		}
		if names[rule.Name] {
			return fmt.Errorf("%s.name: duplicate rule name %q", at, rule.Name)
		}
		names[rule.Name] = true
		at = fmt.Sprintf("%s (%s)", at, rule.Name)
		if err := r.Rules[i].validate(at, accounts); err != nil {
			return err
		}
		if r.Rules[i].Verify == 0 {
			r.Rules[i].Verify = model.Duration(DefaultVerify)
		}
	}
	return nil
}

func validAction(a string) bool {
	switch providers.Action(a) {
	case providers.ActionReboot, providers.ActionRedeploy, providers.ActionStart, providers.ActionStop, providers.ActionPowerCycle:
		return true
	}
	return false
}

// Supports reports whether a provider type has an action.
func Supports(typ, action string) bool {
	switch typ {
	case TypeVPNBingo:
		return action == string(providers.ActionRedeploy)
	case TypeVPSOrg, TypeE2E:
		return action != string(providers.ActionRedeploy)
	}
	return false
}

func (rule *Rule) validate(at string, accounts map[string]string) error {
	switch rule.Provider {
	case "", TypeVPNBingo, TypeVPSOrg, TypeE2E:
	default:
		return fmt.Errorf("%s.provider: unknown provider type %q", at, rule.Provider)
	}
	if rule.Account != "" {
		typ, ok := accounts[rule.Account]
		if !ok {
			return fmt.Errorf("%s.account: no account named %q", at, rule.Account)
		}
		if rule.Provider != "" && rule.Provider != typ {
			return fmt.Errorf("%s.account: %q is a %s account, not %s", at, rule.Account, typ, rule.Provider)
		}
		if rule.Provider == "" {
			rule.Provider = typ
		}
	}
	for _, s := range rule.State {
		if _, ok := providers.ParseState(s); !ok {
			return fmt.Errorf("%s.state: unknown state %q", at, s)
		}
	}
	if rule.Metric != "" {
		if !providers.IsReading(rule.Metric) {
			return fmt.Errorf("%s.metric: unknown metric %q (want one of %s)", at, rule.Metric, strings.Join(providers.ReadingNames(), ", "))
		}
		if rule.Above == nil && rule.Below == nil {
			return fmt.Errorf("%s.metric: needs above or below", at)
		}
	} else if rule.Above != nil || rule.Below != nil {
		return fmt.Errorf("%s.above: above/below need a metric", at)
	}
	if len(rule.State) == 0 && len(rule.Status) == 0 && rule.Metric == "" {
		return fmt.Errorf("%s: needs a condition (state, status or metric); a rule without one would act on every server", at)
	}
	if rule.For < 0 {
		return fmt.Errorf("%s.for: must not be negative", at)
	}
	if rule.Action == "" {
		return fmt.Errorf("%s.action: required", at)
	}
	if !validAction(rule.Action) {
		return fmt.Errorf("%s.action: unknown action %q (want reboot, redeploy, start or stop)", at, rule.Action)
	}
	if rule.Provider != "" && !Supports(rule.Provider, rule.Action) {
		return fmt.Errorf("%s.action: %s cannot %s", at, rule.Provider, rule.Action)
	}
	if rule.Provider == "" && rule.Action == string(providers.ActionRedeploy) {
		return fmt.Errorf("%s.provider: redeploy is a vpnbingo action; set provider: vpnbingo", at)
	}
	if (rule.Params.Force || rule.Params.CountryCode != "") && rule.Action != string(providers.ActionRedeploy) {
		return fmt.Errorf("%s.params: force and country_code apply to redeploy only", at)
	}
	return nil
}
