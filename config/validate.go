package config

import (
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/prometheus/common/model"

	"github.com/vps-exporter/vps_exporter/internal/metricnames"
	"github.com/vps-exporter/vps_exporter/providers"
)

// Validation reports every mistake it finds (to errs) and goes on: a field
// that is wrong is left as it is, and checks that depend on it are
// skipped, so that one mistake is reported once.

func (c *Config) validate(baseDir string, errs *errorList) {
	g := &c.Global
	if g.RefreshInterval <= 0 {
		errs.add("global.refresh_interval", "must be positive")
	}
	if g.RequestTimeout <= 0 {
		errs.add("global.request_timeout", "must be positive")
	}
	if g.MaxConcurrency < 1 {
		errs.add("global.max_concurrency", "must be at least 1, got %d", g.MaxConcurrency)
	}
	switch {
	case g.StaleAfter < 0:
		errs.add("global.stale_after", "must not be negative")
	case g.StaleAfter == 0:
		g.StaleAfter = 5 * g.RefreshInterval
	case g.RefreshInterval > 0 && g.StaleAfter < g.RefreshInterval && !errs.failedAt("global.refresh_interval"):
		errs.add("global.stale_after", "%s is shorter than refresh_interval (%s): one failed refresh would take a failing account's servers off /metrics; "+
			"set at least %s, or leave it out for 5 x refresh_interval", g.StaleAfter, g.RefreshInterval, g.RefreshInterval)
	}
	for i, name := range g.ExcludeMetrics {
		if !metricnames.IsServer(name) {
			hint := "only the per-server vps_server_* families of docs/metrics.md can be left out"
			known := metricnames.Server()
			if i := slices.IndexFunc(known, func(k string) bool { return strings.HasPrefix(k, name+"_") }); i >= 0 {
				known = known[i : i+1] // the start of a name: that one
			}
			if s := suggest(name, known); s != "" {
				hint = s
			}
			errs.add(fmt.Sprintf("global.exclude_metrics[%d]", i), "%s: not a per-server metric family, %s", show(name), hint)
		}
	}
	if len(c.Providers) == 0 {
		errs.add("providers", "at least one account is required")
	}
	names := map[string]int{}
	for i := range c.Providers {
		p := &c.Providers[i]
		at := accountPath(i, p.Name)
		p.validate(at, baseDir, errs)
		if p.Name == "" {
			continue
		}
		if !ValidAccountName(p.Name) {
			errs.add(at+".name", "not a valid account name (the value is not shown: it may hold a line of the file that joined it, a mis-indented token say); "+
				"use 1 to 64 letters, digits, \"_\", \"-\", \".\" or \":\", starting with a letter or digit: it is the account label")
			continue
		}
		if j, dup := names[p.Name]; dup {
			errs.add(at+".name", "duplicate account name %q (also providers[%d])", p.Name, j)
		} else {
			names[p.Name] = i
		}
	}
	c.Remediation.validate(c, baseDir, errs)
	// Now that every *_file is read: a name carried from a secret
	// field by an alias would show the secret.
	for i, p := range c.Providers {
		if len(p.Name) >= wholeOnly && errs.secrets.has(p.Name) {
			errs.add(accountPath(i, p.Name)+".name", "is the value of a secret field; a name is shown in metrics and logs")
		}
	}
	for i, r := range c.Remediation.Rules {
		if len(r.Name) >= wholeOnly && errs.secrets.has(r.Name) {
			errs.add(itemPath("remediation.rules", i, r.Name)+".name", "is the value of a secret field; a name is shown in metrics and logs")
		}
	}
}

// accountName is what an account name must look like: it is the account
// label on every series, in logs and on the status page, and a line of
// the file that joins it (a mis-indented `token: ...` continues the name's
// plain scalar) must not be taken as part of it.
var accountName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$`)

// ValidAccountName reports whether name can be an account's name.
func ValidAccountName(name string) bool { return accountName.MatchString(name) }

// accountPath names account i in an error: by its name too when the name
// is valid, by its index only otherwise (the name may hold a secret).
func accountPath(i int, name string) string {
	if !ValidAccountName(name) {
		name = ""
	}
	return itemPath("providers", i, name)
}

// checkName refuses a name that cannot be a label value and part of the
// remediation state's durable keys, which are joined with "|" and control
// characters: a "|" in a rule name would split its counters' key, and
// their totals would be dropped on restart.
func checkName(at, name, what string, errs *errorList) {
	if strings.ContainsRune(name, '|') || strings.ContainsFunc(name, unicode.IsControl) || !utf8.ValidString(name) {
		errs.add(at, `must not contain "|" or control characters: it is the %s label and part of remediation's durable keys`, what)
	}
}

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

func (p *Provider) validate(at, baseDir string, errs *errorList) {
	typeOK := false
	switch p.Type {
	case TypeVPNBingo, TypeVPSOrg, TypeE2E:
		typeOK = true
	case "":
		errs.add(at+".type", "required (vpnbingo, vpsorg or e2e)")
	default:
		errs.add(at+".type", "unknown provider type %q (want vpnbingo, vpsorg or e2e)", p.Type)
	}
	if p.Name == "" {
		errs.add(at+".name", "required")
	}
	raw := p.BaseURL
	if raw == "" {
		raw = defaultBaseURL(p.Type)
	}
	if raw != "" {
		u, err := url.Parse(strings.TrimSuffix(raw, "/"))
		switch {
		case err != nil || strings.ContainsAny(raw, "@?#") || u.User != nil || u.RawQuery != "" || u.Fragment != "":
			// Not repeated: E2E's key travels in the query, and a URL
			// may carry a password, with a scheme or without one
			// (admin:sk-abc@admin.vps.org parses as scheme admin).
			errs.add(at+".base_url", "want an http(s) URL without query, fragment or user info (the value is not shown: it may carry a credential)")
		case (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
			errs.add(at+".base_url", "want an http(s) URL without query, got %q", p.BaseURL)
		default:
			p.URL = u
		}
	}
	errs.secret(string(p.Token))
	errs.secret(string(p.APIKey))
	errs.secret(string(p.TLSConfig.Key))
	if p.ProxyURL.URL != nil {
		if pw, ok := p.ProxyURL.User.Password(); ok {
			errs.secret(pw)
		}
	}
	readSecret(&p.Token, p.TokenFile, at, "token", baseDir, errs)
	if p.Token == "" && p.TokenFile == "" {
		errs.add(at+".token", "required (token or token_file)")
	}
	if p.Type == TypeE2E {
		readSecret(&p.APIKey, p.APIKeyFile, at, "api_key", baseDir, errs)
		if p.APIKey == "" && p.APIKeyFile == "" {
			errs.add(at+".api_key", "required for e2e (api_key or api_key_file)")
		}
		if p.ProjectID == "" {
			errs.add(at+".project_id", "required for e2e")
		}
	} else if typeOK {
		for _, f := range []struct {
			name string
			set  bool
		}{{"api_key", p.APIKey != "" || p.APIKeyFile != ""}, {"project_id", p.ProjectID != ""}, {"location", p.Location != ""}} {
			if f.set {
				errs.add(at+"."+f.name, "only e2e accounts take it")
			}
		}
	}
	p.Loc = time.UTC
	switch {
	case p.Timezone == "":
	case typeOK && p.Type != TypeVPNBingo:
		errs.add(at+".timezone", "only vpnbingo accounts take it")
	default:
		loc, err := time.LoadLocation(p.Timezone)
		if err != nil {
			errs.add(at+".timezone", "%s", err)
		} else {
			p.Loc = loc
		}
	}
	if p.RateLimit < 0 {
		errs.add(at+".rate_limit", "must not be negative, got %v", p.RateLimit)
	}
	if p.DetailBudget != 0 {
		switch {
		case p.DetailBudget < 0 || p.DetailBudget > 1:
			errs.add(at+".detail_budget", "must be in (0, 1], got %v", p.DetailBudget)
		case p.RateLimit == 0 && !errs.failedAt(at+".rate_limit"):
			errs.add(at+".detail_budget", "is a share of rate_limit; set rate_limit too")
		}
	}
	if err := p.TLSConfig.Validate(); err != nil {
		errs.add(at+".tls_config", "%s", err)
	}
}

// actionNames lists the actions for messages.
const actionNames = "reboot, redeploy, start, stop or power_cycle"

// ReservedRuleName is the rule label of the actions alerts ask for; no
// configured rule may take it.
const ReservedRuleName = "alertmanager"

func (r *Remediation) validate(c *Config, baseDir string, errs *errorList) {
	r.StaleAfter = c.Global.StaleAfter
	if r.Cooldown < 0 {
		errs.add("remediation.cooldown", "must not be negative")
	}
	if r.MaxActionsPerHour < 0 {
		errs.add("remediation.max_actions_per_hour", "must not be negative, got %d", r.MaxActionsPerHour)
	}
	if r.MaxFleetFraction <= 0 || r.MaxFleetFraction > 1 {
		errs.add("remediation.max_fleet_fraction", "must be in (0, 1], got %v", r.MaxFleetFraction)
	}
	if r.Enabled && r.StateFile == "" && r.HA == nil {
		errs.add("remediation.state_file", "required when remediation is enabled (cooldowns and the audit log must survive restarts)")
	}
	if r.HA != nil {
		r.HA.validate(baseDir, errs)
	}
	if r.MaxAttempts < 1 {
		errs.add("remediation.max_attempts", "must be at least 1, got %d", r.MaxAttempts)
	}
	if r.AttemptsWindow <= 0 {
		errs.add("remediation.attempts_window", "must be positive")
	}
	switch {
	case r.Retention <= 0:
		errs.add("remediation.retention", "must be positive")
	case r.Retention < r.AttemptsWindow && !errs.failedAt("remediation.attempts_window"):
		errs.add("remediation.retention", "%s is shorter than attempts_window (%s): attempts would be pruned before they stop counting", r.Retention, r.AttemptsWindow)
	case r.Retention < r.Cooldown && !errs.failedAt("remediation.cooldown"):
		errs.add("remediation.retention", "%s is shorter than cooldown (%s): a cooldown would be pruned before it ends", r.Retention, r.Cooldown)
	}
	r.Webhook.validate(baseDir, errs)
	for i := range r.Exclude {
		r.Exclude[i].validate(fmt.Sprintf("remediation.exclude[%d]", i), errs)
	}
	for i := range r.Windows {
		r.Windows[i].validate(fmt.Sprintf("remediation.windows[%d]", i), errs)
	}
	accounts := map[string]string{}
	for _, p := range c.Providers {
		accounts[p.Name] = p.Type
	}
	names := map[string]int{}
	for i := range r.Rules {
		rule := &r.Rules[i]
		at := itemPath("remediation.rules", i, rule.Name)
		if rule.Name == "" {
			errs.add(at+".name", "required")
		} else if j, dup := names[rule.Name]; dup {
			errs.add(at+".name", "duplicate rule name %q (also remediation.rules[%d])", rule.Name, j)
		} else if rule.Name == ReservedRuleName {
			errs.add(at+".name", "%q is reserved: the actions Alertmanager's alerts ask for are counted under rule=%q", rule.Name, ReservedRuleName)
		} else {
			names[rule.Name] = i
		}
		if rule.Name != "" {
			checkName(at+".name", rule.Name, "rule", errs)
		}
		rule.validate(at, accounts, errs)
		if rule.Verify == 0 {
			rule.Verify = model.Duration(DefaultVerify)
		}
	}
}

func (w *Webhook) validate(baseDir string, errs *errorList) {
	const at = "remediation.webhook"
	for i, a := range w.AllowedActions {
		checkAction(fmt.Sprintf("%s.allowed_actions[%d]", at, i), a, errs)
	}
	if w.Verify <= 0 {
		errs.add(at+".verify", "must be positive")
	}
	if w.Hold <= 0 {
		errs.add(at+".hold", "must be positive")
	}
	if w.ResolveGrace <= 0 {
		errs.add(at+".resolve_grace", "must be positive (Alertmanager's group_interval, e.g. 5m)")
	}
	keys := make([]string, 0, len(w.Escalate))
	for k := range w.Escalate {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, from := range keys {
		p := field(at+".escalate", from)
		if !checkAction(p, from, errs) {
			continue
		}
		if !slices.Contains(w.AllowedActions, from) {
			errs.add(p, "%s is not in allowed_actions, so no alert can start this ladder; add it there or remove the ladder", from)
			continue
		}
		for i, to := range w.Escalate[from] {
			pi := fmt.Sprintf("%s[%d]", p, i)
			if checkAction(pi, to, errs) && !sameProvider(from, to) {
				errs.add(pi, "no provider can both %s and %s: the ladder is per server", from, to)
			}
		}
	}
	errs.secret(string(w.BearerToken))
	readSecret(&w.BearerToken, w.BearerTokenFile, at, "bearer_token", baseDir, errs)
}

// checkAction reports (and records) whether a is an action name.
func checkAction(at, a string, errs *errorList) bool {
	switch {
	case a == "":
		errs.add(at, "empty action name (want %s)", actionNames)
	case !validAction(a):
		errs.add(at, "unknown action %q (want %s)", a, actionNames)
	default:
		return true
	}
	return false
}

// actionsOf lists the actions of a provider type.
func actionsOf(typ string) []string {
	var out []string
	for _, a := range []providers.Action{providers.ActionReboot, providers.ActionRedeploy, providers.ActionStart, providers.ActionStop, providers.ActionPowerCycle} {
		if Supports(typ, string(a)) {
			out = append(out, string(a))
		}
	}
	return out
}

// sameProvider reports whether one provider type has both actions.
func sameProvider(a, b string) bool {
	for _, typ := range []string{TypeVPNBingo, TypeVPSOrg, TypeE2E} {
		if Supports(typ, a) && Supports(typ, b) {
			return true
		}
	}
	return false
}

func (x *Exclude) validate(at string, errs *errorList) {
	switch x.Provider {
	case "", TypeVPNBingo, TypeVPSOrg, TypeE2E:
	default:
		errs.add(at+".provider", "unknown provider type %q (want vpnbingo, vpsorg or e2e)", x.Provider)
	}
	if x.Provider == "" && x.Account == "" && x.ID == "" && x.Name == "" {
		errs.add(at, "names nothing (set provider, account, id or name)")
	}
	if x.Name != "" {
		re, err := regexp.Compile("^(?:" + x.Name + ")$")
		if err != nil {
			errs.add(at+".name", "%s", err)
		} else {
			x.NameRE = re
		}
	}
}

var weekdays = map[string]time.Weekday{"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday, "thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday}

func (w *Window) validate(at string, errs *errorList) {
	if len(w.Days) == 0 {
		w.days = [7]bool{true, true, true, true, true, true, true}
	}
	for i, d := range w.Days {
		wd, ok := weekdays[strings.ToLower(d)]
		if !ok {
			errs.add(fmt.Sprintf("%s.days[%d]", at, i), "unknown day %q (want mon, tue, wed, thu, fri, sat, sun)", d)
			continue
		}
		w.days[wd] = true
	}
	var err error
	startOK, endOK := true, true
	if w.start, err = clockMinutes(w.Start); err != nil {
		errs.add(at+".start", "%s", err)
		startOK = false
	}
	if w.end, err = clockMinutes(w.End); err != nil {
		errs.add(at+".end", "%s", err)
		endOK = false
	}
	if startOK && endOK && w.start == w.end {
		errs.add(at+".end", "equals start; a window needs a length")
	}
	w.loc = time.UTC
	if w.Timezone != "" {
		if loc, err := time.LoadLocation(w.Timezone); err != nil {
			errs.add(at+".timezone", "%s", err)
		} else {
			w.loc = loc
		}
	}
}

func clockMinutes(s string) (int, error) {
	t, err := time.Parse("15:04", s)
	if err != nil {
		return 0, fmt.Errorf("want HH:MM, got %q", s)
	}
	return t.Hour()*60 + t.Minute(), nil
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

func (rule *Rule) validate(at string, accounts map[string]string, errs *errorList) {
	providerOK := true
	switch rule.Provider {
	case "", TypeVPNBingo, TypeVPSOrg, TypeE2E:
	default:
		errs.add(at+".provider", "unknown provider type %q (want vpnbingo, vpsorg or e2e)", rule.Provider)
		providerOK = false
	}
	if rule.Account != "" {
		typ, ok := accounts[rule.Account]
		switch {
		case !ok:
			errs.add(at+".account", "no account named %q", rule.Account)
		case providerOK && rule.Provider != "" && rule.Provider != typ:
			errs.add(at+".account", "%q is a %s account, not %s", rule.Account, typ, rule.Provider)
			providerOK = false
		case rule.Provider == "":
			rule.Provider = typ
		}
	}
	for i, s := range rule.State {
		if _, ok := providers.ParseState(s); !ok {
			errs.add(fmt.Sprintf("%s.state[%d]", at, i), "unknown state %q (want one of %s)", s, stateNames())
		}
	}
	if rule.Metric != "" {
		if !providers.IsReading(rule.Metric) {
			errs.add(at+".metric", "unknown metric %q (want one of %s)", rule.Metric, strings.Join(providers.ReadingNames(), ", "))
		} else if rule.Above == nil && rule.Below == nil && !errs.failedAt(at+".above", at+".below") {
			errs.add(at+".metric", "needs above or below")
		}
	} else if (rule.Above != nil || rule.Below != nil) && !errs.failedAt(at+".metric") {
		errs.add(at+".above", "above/below need a metric")
	}
	if len(rule.State) == 0 && len(rule.Status) == 0 && rule.Metric == "" && !errs.failedAt(at+".state", at+".status", at+".metric") {
		errs.add(at, "needs a condition (state, status or metric); a rule without one would act on every server")
	}
	if rule.For < 0 {
		errs.add(at+".for", "must not be negative")
	}
	if rule.Verify < 0 {
		errs.add(at+".verify", "must not be negative")
	}
	if rule.Action == "" {
		errs.add(at+".action", "required (%s)", actionNames)
	} else if providerOK {
		rule.checkStep(at+".action", rule.Action, errs)
	} else {
		checkAction(at+".action", rule.Action, errs)
	}
	for i, a := range rule.Escalate {
		p := fmt.Sprintf("%s.escalate[%d]", at, i)
		if providerOK {
			rule.checkStep(p, a, errs)
		} else {
			checkAction(p, a, errs)
		}
	}
	redeploy := string(providers.ActionRedeploy)
	if (rule.Params.Force || rule.Params.CountryCode != "") && rule.Action != redeploy && !slices.Contains(rule.Escalate, redeploy) {
		errs.add(at+".params", "force and country_code apply to redeploy only")
	}
}

func stateNames() string {
	var names []string
	for _, st := range providers.States() {
		names = append(names, string(st))
	}
	return strings.Join(names, ", ")
}

// checkStep checks one action of a rule's ladder against the rule's
// provider.
func (rule *Rule) checkStep(at, a string, errs *errorList) {
	if !checkAction(at, a, errs) {
		return
	}
	switch {
	case rule.Provider != "" && !Supports(rule.Provider, a):
		errs.add(at, "%s cannot %s; its actions: %s", rule.Provider, a, strings.Join(actionsOf(rule.Provider), ", "))
	case rule.Provider == "" && a == string(providers.ActionRedeploy):
		errs.add(at, "redeploy is a vpnbingo action; set provider: vpnbingo")
	}
}
