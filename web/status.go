package web

import (
	"bytes"
	"context"
	_ "embed"
	"fmt"
	"html/template"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/common/version"

	"github.com/vps-exporter/vps_exporter/collector"
)

// RemediationSource gives the remediation state the status page shows.
// It reads what the engine already holds (its state file included) and
// never calls a provider.
type RemediationSource interface {
	// RemediationStatus returns the state with at most limit actions and
	// limit suppressions, newest first. With an error the status holds
	// what could be read (the configuration at least).
	RemediationStatus(ctx context.Context, limit int) (RemediationStatus, error)
}

// RemediationStatus is what the status page shows of remediation.
type RemediationStatus struct {
	// Enabled is whether remediation is on and its state file usable.
	Enabled bool
	// DryRun is whether actions are only recorded (no provider call).
	DryRun bool
	// Paused is the operator's pause in force, nil when there is none.
	Paused *Pause
	// ActionsThisHour is how many actions of the current mode (live or
	// dry run) the last hour holds, out of MaxActionsPerHour; with
	// ActionsThisHourAtLeast it is a lower bound (more than were read).
	ActionsThisHour        int
	ActionsThisHourAtLeast bool
	MaxActionsPerHour      int
	// Actions and Suppressions are newest first.
	Actions      []Action
	Suppressions []Suppression
	// Exhausted are the servers that no repair fixed: every request for
	// them is held back until their condition clears or an operator
	// resets them (closed-loop remediation). Empty until the engine
	// reports them.
	Exhausted []ExhaustedServer
	// Episodes are the closed loop's open episodes, oldest first: a
	// server whose action is being verified or whose next step is due.
	Episodes []Episode
	// Role is this replica's part with remediation.ha: "leader",
	// "standby" (the leader at LeaderURL acts), "unavailable" (no leader:
	// nobody acts); empty without ha. A standby is not an error.
	Role      string
	LeaderURL string
}

// Pause is an operator's pause of remediation.
type Pause struct {
	Since time.Time
	// Until is when the pause ends; zero: until resumed.
	Until  time.Time
	Reason string
}

// Action is one entry of the audit log.
type Action struct {
	Time                  time.Time
	Provider, Account, ID string
	Action                string
	// Source is "rule" or "alert"; Rule names the rule or the alert.
	Source, Rule string
	// Name is the server's name (empty: the page reads it from the
	// account's snapshot).
	Name string
	// Result is accepted (the provider accepted the call), failed,
	// dry_run or unknown.
	Result string
	Error  string
	// NewID is the server that replaced this one (a redeploy).
	NewID string
	// Verdict is the closed loop's: verifying, recovered, not_recovered
	// or unknown; empty when the action gets none (a dry run, a refused
	// call).
	Verdict string
}

// Suppression is an action the safety gate held back.
type Suppression struct {
	Time                  time.Time
	Provider, Account, ID string
	Name                  string // as Action's
	Action                string
	Source, Rule          string
	Reason, Detail        string
}

// ExhaustedServer is a server that no repair fixed.
type ExhaustedServer struct {
	Provider, Account, ID string
	Name                  string // as Action's
	// Since is when it became exhausted.
	Since time.Time
	// Attempts is how many actions its episode took; LastAction the
	// last of them.
	Attempts   int
	LastAction string
	Detail     string
}

// Episode is an open episode of the closed loop.
type Episode struct {
	Provider, Account, ID string
	Name                  string // as Action's
	// Source is "rule" or "alert"; Rule names the rule or the alert.
	Source, Rule string
	Opened       time.Time
	// Step is its place in Ladder (the actions as configured now);
	// Current the last action taken and Verdict its verdict so far
	// (verifying, or not_recovered with Next due since NextSince).
	Step      int
	Ladder    []string
	Current   string
	Verdict   string
	Next      string
	NextSince time.Time
	// Attempts are its server's actions within attempts_window, out of
	// MaxAttempts.
	Attempts, MaxAttempts int
}

// BuildInfo is the version line of the page.
type BuildInfo struct {
	Version, Revision, Branch, BuildDate string
}

// CurrentBuild is this binary's version, from prometheus/common/version.
func CurrentBuild() BuildInfo {
	return BuildInfo{Version: version.Version, Revision: version.GetRevision(), Branch: version.Branch, BuildDate: version.BuildDate}
}

// StatusOptions configures the status page.
type StatusOptions struct {
	// Demo shows the banner of the simulated fleet.
	Demo bool
	// DemoToken is the demo's fixed remediation credential, stated on
	// its banner ("": not stated).
	DemoToken string
	// Pprof links the profiling endpoints.
	Pprof bool
	// MetricsPath is where /metrics is served ("" : /metrics).
	MetricsPath string
	// Build is the version shown; zero: CurrentBuild().
	Build BuildInfo
	// Now is the clock (nil: time.Now).
	Now    func() time.Time
	Logger log.Logger
}

// StatusLimit is how many actions and suppressions the page lists.
const StatusLimit = 20

// remediationTimeout bounds the read of the remediation state: the
// engine's History (its memory, then reads of its state file; it writes
// nothing) checks the context between records and stops when it ends.
const remediationTimeout = 5 * time.Second

// StatusPage serves the status page at /: accounts, remediation, recent
// actions and suppressions, exhausted servers and the links to the rest,
// rendered on the server (it needs no JavaScript and loads nothing else).
type StatusPage struct {
	snaps Snapshots
	rem   RemediationSource
	opts  StatusOptions
	links []link
	tmpl  *template.Template
}

type link struct {
	Href, Path, Text string
}

//go:embed status.html
var statusHTML string

// NewStatusPage returns the status page of snaps and rem (rem may be nil:
// the page says remediation is not available).
func NewStatusPage(snaps Snapshots, rem RemediationSource, o StatusOptions) *StatusPage {
	if o.MetricsPath == "" {
		o.MetricsPath = "/metrics"
	}
	if o.Build == (BuildInfo{}) {
		o.Build = CurrentBuild()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = log.NewNopLogger()
	}
	p := &StatusPage{snaps: snaps, rem: rem, opts: o}
	p.links = []link{
		{Path: o.MetricsPath, Text: "Metrics"},
		{Path: "/sd", Text: "Service discovery: every server as a Prometheus HTTP SD target (JSON)"},
		{Path: "/api/v1/accounts", Text: "Accounts: refresh status of every account (JSON)"},
		{Path: "/api/v1/remediation", Text: "Remediation: the audit log and suppressions, newest first (JSON)"},
		{Path: "/-/healthy", Text: "Health"},
		{Path: "/-/ready", Text: "Readiness: every account refreshed once"},
	}
	if o.Pprof {
		p.links = append(p.links,
			link{Path: "/debug/pprof/", Text: "Profiling"},
			link{Path: "/debug/pprof/heap", Text: "Heap profile"})
	}
	for i := range p.links {
		// Relative: the page works behind a proxy that adds a prefix.
		p.links[i].Href = strings.TrimPrefix(p.links[i].Path, "/")
	}
	p.tmpl = template.Must(template.New("status").Funcs(template.FuncMap{
		"ts":    func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") },
		"iso":   func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
		"ago":   func(now, t time.Time) string { return ago(now.Sub(t)) },
		"short": func(s string) string { return truncate(s, 300) },
		// words: a value as the page reads it (not_recovered: not recovered).
		"words":  func(s string) string { return strings.ReplaceAll(s, "_", " ") },
		"ladder": func(l []string) string { return strings.Join(l, " → ") },
		"dict": func(kv ...any) map[string]any {
			m := make(map[string]any, len(kv)/2)
			for i := 0; i+1 < len(kv); i += 2 {
				m[kv[i].(string)] = kv[i+1]
			}
			return m
		},
	}).Parse(statusHTML))
	return p
}

// accountRow is one account on the page.
type accountRow struct {
	Provider, Account string
	// State is up, down or pending (not refreshed yet).
	State   string
	Servers int
	Stale   bool // down: its servers are those of its last success
	// Withdrawn: down longer than stale_after, its servers' series left
	// /metrics (/sd keeps them).
	Withdrawn   bool
	LastSuccess time.Time
	LastAttempt time.Time
	Err         string
}

// statusView is what the template renders.
type statusView struct {
	Demo                 bool
	DemoToken            string
	Build                BuildInfo
	Now                  time.Time
	Accounts             []accountRow
	Up, Down, Pending    int
	Servers              int
	RemediationAvailable bool
	Remediation          RemediationStatus
	RemediationErr       string
	Links                []link
	snaps                []collector.Snapshot
}

// ServeHTTP implements http.Handler.
func (p *StatusPage) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/" {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	var buf bytes.Buffer
	buf.Grow(32 << 10)
	if err := p.render(r.Context(), &buf); err != nil {
		level.Error(p.opts.Logger).Log("msg", "cannot render the status page", "err", err)
		http.Error(w, "cannot render the status page", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(buf.Len()))
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	// Nothing but this page's own inline style: no script runs, whatever
	// a name or a reason holds.
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(buf.Bytes())
}

// render writes the page into buf.
func (p *StatusPage) render(ctx context.Context, buf *bytes.Buffer) error {
	v := statusView{Demo: p.opts.Demo, DemoToken: p.opts.DemoToken, Build: p.opts.Build, Now: p.opts.Now(), Links: p.links, snaps: p.snaps.Snapshots()}
	for _, s := range v.snaps {
		row := accountRow{Provider: s.Provider, Account: s.Account, Servers: len(s.Servers),
			LastSuccess: s.LastSuccess, LastAttempt: s.LastAttempt, Err: s.Err}
		switch {
		case !s.Refreshed:
			row.State = "pending"
			v.Pending++
		case s.Up:
			row.State = "up"
			v.Up++
		default:
			row.State = "down"
			row.Stale = len(s.Servers) > 0
			row.Withdrawn = s.Withdrawn
			v.Down++
		}
		v.Servers += row.Servers
		v.Accounts = append(v.Accounts, row)
	}
	if p.rem != nil {
		v.RemediationAvailable = true
		rctx, cancel := context.WithTimeout(ctx, remediationTimeout)
		st, err := p.rem.RemediationStatus(rctx, StatusLimit)
		cancel()
		if err != nil {
			v.RemediationErr = err.Error()
		}
		// Newest StatusLimit, whatever the source gave.
		st.Actions = st.Actions[:min(len(st.Actions), StatusLimit)]
		st.Suppressions = st.Suppressions[:min(len(st.Suppressions), StatusLimit)]
		st.Episodes = st.Episodes[:min(len(st.Episodes), StatusLimit)]
		nameServers(&st, v.snaps)
		v.Remediation = st
	}
	return p.tmpl.Execute(buf, v)
}

// nameServers gives every server the page lists without a name the name
// its account's snapshot has for it: one pass over the snapshots, for
// the few servers listed.
func nameServers(st *RemediationStatus, snaps []collector.Snapshot) {
	rows := map[[3]string][]*string{} // server -> the names of its rows
	note := func(provider, account, id string, name *string) {
		if *name == "" {
			k := [3]string{provider, account, id}
			rows[k] = append(rows[k], name)
		}
	}
	for i := range st.Actions {
		a := &st.Actions[i]
		note(a.Provider, a.Account, a.ID, &a.Name)
	}
	for i := range st.Suppressions {
		s := &st.Suppressions[i]
		note(s.Provider, s.Account, s.ID, &s.Name)
	}
	for i := range st.Exhausted {
		x := &st.Exhausted[i]
		note(x.Provider, x.Account, x.ID, &x.Name)
	}
	for i := range st.Episodes {
		ep := &st.Episodes[i]
		note(ep.Provider, ep.Account, ep.ID, &ep.Name)
	}
	if len(rows) == 0 {
		return
	}
	for _, s := range snaps {
		for j := range s.Servers {
			for _, name := range rows[[3]string{s.Provider, s.Account, s.Servers[j].ID}] {
				*name = s.Servers[j].Name
			}
		}
	}
}

// ago is a duration as the page shows an age: "12s ago", "3m ago",
// "2h5m ago", "3d4h ago"; a time ahead of the clock is "just now".
func ago(d time.Duration) string {
	if d < time.Second {
		return "just now"
	}
	s := int64(d / time.Second)
	switch {
	case s < 60:
		return fmt.Sprintf("%ds ago", s)
	case s < 3600:
		return fmt.Sprintf("%dm%ds ago", s/60, s%60)
	case s < 86400:
		return fmt.Sprintf("%dh%dm ago", s/3600, s%3600/60)
	}
	return fmt.Sprintf("%dd%dh ago", s/86400, s%86400/3600)
}

// truncate shortens s to at most n runes, marking the cut.
func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n]) + "…"
}
