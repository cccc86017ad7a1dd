package remediation

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/vps-exporter/vps_exporter/collector"
	"github.com/vps-exporter/vps_exporter/config"
	"github.com/vps-exporter/vps_exporter/providers"
	"github.com/vps-exporter/vps_exporter/remediation/journal"
)

// gate is one request on its way through the checks.
type gate struct {
	e         *Engine
	req       Request
	cfg       config.Remediation
	now       time.Time
	stateOK   bool
	staleness time.Duration
	pause     string // why remediation is paused, "" when it is not

	snap    *collector.Snapshot
	srv     providers.Server // the server in the snapshot
	found   bool
	located bool // srv was given: no need to look it up
	prov    providers.Provider

	// Set by the counting checks: the request is its episode's due next
	// step (its own cooldown does not hold it back, unless retry: the
	// step is one the provider refused, again); writes are the closed
	// loop's changes to store once the lock is released.
	escalating, retry bool
	writes            []*loopWrite

	// Set by the reservation.
	dryRun       bool
	root         string // the server's lineage root key
	reserved     *intent
	prevCooldown time.Time
	st           *State // set by the final check

	// turn ends the request's turn on its account (nil when it has
	// none); readAt is when the provider re-read the server.
	turn   func()
	readAt time.Time

	// resumed: the request is a power cycle left between its stop and
	// its start, finished after a restart (cycle_resume.go); abandoned:
	// its start was not sent and will not be (the step is abandoned).
	resumed, abandoned bool
}

// leaveTurn ends the request's turn on its account, if it has one.
func (g *gate) leaveTurn() {
	if g.turn != nil {
		g.turn()
		g.turn = nil
	}
}

// check is one named step of the gate: nil to pass, or a suppression.
// A new safety rule is one function and one line in a list below.
type check struct {
	name string
	fn   func(*gate) *Decision
}

// inventoryChecks run on the exporter's own data, without a lock.
var inventoryChecks = []check{
	{"enabled", (*gate).checkEnabled},
	{"allowed", (*gate).checkAllowed},
	{"excluded", (*gate).checkExcluded},
	{"paused", (*gate).checkPaused},
	{"window", (*gate).checkWindow},
	{"fresh", (*gate).checkFresh},
	{"precondition", (*gate).checkPrecondition},
}

// countingChecks run under the engine's lock, with the reservation that
// follows them: concurrent requests see each other's pending intents.
var countingChecks = []check{
	{"shutdown", (*gate).checkClosing},
	{"in_flight", (*gate).checkInFlight},
	{"lineage_watch", (*gate).checkLineageWatch},
	{"episode", (*gate).checkEpisode},
	{"cooldown", (*gate).checkCooldown},
	{"rate_limit", (*gate).checkBudget},
	{"blast_radius", (*gate).checkBlastRadius},
}

// confirmChecks run on the provider's fresh answer.
var confirmChecks = []check{
	{"condition", (*gate).checkStillCalledFor},
	{"excluded", (*gate).checkExcluded},
	{"precondition", (*gate).checkPrecondition},
}

func (g *gate) run(checks []check) *Decision {
	for _, c := range checks {
		if d := c.fn(g); d != nil {
			d.dry = g.dryRun
			return d
		}
	}
	return nil
}

func supp(reason, format string, args ...any) *Decision {
	return &Decision{Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

func (g *gate) checkEnabled() *Decision {
	if !g.cfg.Enabled || !g.stateOK {
		return supp(ReasonNotAllowed, "%v", errNoState)
	}
	return nil
}

func (g *gate) checkAllowed() *Decision {
	req := g.req
	// An escalation's action comes from the operator's ladder
	// (webhook.escalate), not from the alert.
	if req.Source == "alert" && !req.escalation && !slices.Contains(g.cfg.Webhook.AllowedActions, string(req.Action)) {
		return supp(ReasonNotAllowed, "action %q is not in remediation.webhook.allowed_actions", req.Action)
	}
	if req.Source == "alert" && !g.cfg.Webhook.Enabled {
		return supp(ReasonNotAllowed, "remediation.webhook.enabled is false")
	}
	prov, ok := g.e.deps.Provider(req.Account)
	if !ok || prov.Type() != req.Provider {
		return supp(ReasonNotAllowed, "no %s account named %q", req.Provider, req.Account)
	}
	if !hasAction(prov, req.Action) {
		d := supp(ReasonNotAllowed, "%s cannot %s", req.Provider, req.Action)
		d.permanent = true
		return d
	}
	g.prov = prov
	if g.snap != nil && !g.located {
		g.srv, g.found = lookupServer(g.snap.Servers, req.ID)
	}
	return nil
}

// hasAction reports whether a provider can carry out an action:
// power_cycle is its stop and its start.
func hasAction(p providers.Provider, a providers.Action) bool {
	if a == providers.ActionPowerCycle {
		return slices.Contains(p.Actions(), providers.ActionStop) && slices.Contains(p.Actions(), providers.ActionStart)
	}
	return slices.Contains(p.Actions(), a)
}

func (g *gate) checkExcluded() *Decision {
	for i := range g.cfg.Exclude {
		x := &g.cfg.Exclude[i]
		if x.NameRE != nil && !g.found {
			continue // the name is not known (yet): the re-read checks it
		}
		if x.Matches(g.req.Provider, g.req.Account, g.req.ID, g.srv.Name) {
			return supp(ReasonExcluded, "remediation.exclude[%d] covers this server", i)
		}
	}
	return nil
}

func (g *gate) checkPaused() *Decision {
	if g.pause != "" {
		return supp(ReasonPaused, "%s", g.pause)
	}
	return nil
}

func (g *gate) checkWindow() *Decision {
	if !insideWindow(g.cfg.Windows, g.now) {
		return supp(ReasonOutsideWindow, "outside every remediation.windows entry")
	}
	return nil
}

// insideWindow reports whether now is inside one of the windows (always,
// when there are none).
func insideWindow(ws []config.Window, now time.Time) bool {
	if len(ws) == 0 {
		return true
	}
	for i := range ws {
		if ws[i].Contains(now) {
			return true
		}
	}
	return false
}

func (g *gate) checkFresh() *Decision {
	d := g.fresh()
	if d != nil {
		// An id the last list lacks is counted, never remembered.
		d.unlisted = g.snap == nil || !g.snap.Refreshed || !g.found
	}
	return d
}

func (g *gate) fresh() *Decision {
	if g.snap == nil {
		return supp(ReasonStaleData, "account not refreshed yet")
	}
	if d := staleHealth(healthOf(*g.snap), g.now, g.staleness); d != nil {
		return d
	}
	if !g.found {
		return supp(ReasonStaleData, "server %s is not in the account's last refresh", g.req.ID)
	}
	return nil
}

func (g *gate) checkPrecondition() *Decision {
	if why := precondition(g.req, g.srv); why != "" {
		return supp(ReasonPrecondition, "%s", why)
	}
	return nil
}

// precondition is what each API documents about when an action is valid:
// VPS.org and E2E reboot and stop a running server and start a stopped
// one; VPN.bingo redeploys a node in status 9, 10, 18 or 19 whose
// can_redeploy is true, unless force. It returns why not, or "".
func precondition(req Request, s providers.Server) string {
	switch req.Provider {
	case config.TypeVPSOrg, config.TypeE2E:
		switch req.Action {
		case providers.ActionReboot, providers.ActionStop, providers.ActionPowerCycle:
			if s.State != providers.StateRunning {
				return fmt.Sprintf("%s %s needs a running server; it is %s (%s)", req.Provider, req.Action, s.State, s.RawStatus)
			}
		case providers.ActionStart:
			if s.State != providers.StateStopped {
				return fmt.Sprintf("%s start needs a stopped server; it is %s (%s)", req.Provider, s.State, s.RawStatus)
			}
		}
	case config.TypeVPNBingo:
		if req.Action == providers.ActionRedeploy {
			switch s.RawCode {
			case "9", "10", "18", "19":
			default:
				return fmt.Sprintf("vpnbingo redeploys nodes in status 9, 10, 18 or 19; this one is %s (%s)", s.RawCode, s.RawStatus)
			}
			if !req.Params.Force && !(s.CanRedeploy.OK && s.CanRedeploy.V == 1) {
				return "the provider says this node cannot be redeployed (can_redeploy not true) and force is off"
			}
		}
	}
	return ""
}

func (g *gate) checkClosing() *Decision {
	if g.e.closing {
		return supp(ReasonShutdown, "the exporter is stopping")
	}
	return nil
}

func (g *gate) checkInFlight() *Decision {
	g.dryRun = g.cfg.DryRun
	g.root = g.e.rootLocked(serverKey(g.req.Provider, g.req.Account, g.req.ID))
	if g.e.inFlight[g.root] {
		return supp(ReasonInFlight, "an action on this server is under way")
	}
	return nil
}

// checkEpisode holds back every request for an exhausted server, and
// every request for a server whose last action is being verified or whose
// next step is due but that step; it exhausts a server that reached
// max_attempts in attempts_window. Dry runs have no episodes of their
// own: they read the live ones, and change nothing (a dry run shows
// `exhausted` where a live request would be).
func (g *gate) checkEpisode() *Decision {
	e := g.e
	t := e.tracks[g.root]
	if t == nil {
		return nil
	}
	if ep := t.Episode; ep != nil {
		last := ep.last()
		switch {
		case ep.exhausted():
			return supp(ReasonExhausted, "no repair recovered this server (%s; since %s); it waits for its condition to be clear for its verify window, or POST /api/v1/remediation/reset",
				ep.Reason, ep.Ended.UTC().Format(time.RFC3339))
		case ep.Escalate != "":
			if !ep.isDueStep(g.req) {
				return supp(ReasonCooldown, "the next step of this server's episode, %s, is due", ep.Escalate)
			}
			// A dry run's step waits for its dry-run cooldown.
			g.escalating = !g.dryRun
			g.retry = last != nil && last.Refused
		case ep.verifying():
			return supp(ReasonCooldown, "its last action (%s at %s) is being verified", last.Action, last.Finished.UTC().Format(time.RFC3339))
		}
	}
	max, window := attemptsLimit(g.cfg)
	if n := t.attemptsSince(g.now.Add(-window)); n >= max {
		why := fmt.Sprintf("max_attempts %d reached: %d actions in %s", max, n, window)
		if !g.dryRun {
			g.writes = append(g.writes, e.exhaustRequestLocked(t, g.req, why))
		}
		return supp(ReasonExhausted, "%s", why)
	}
	return nil
}

func (g *gate) checkCooldown() *Decision {
	if g.escalating && !g.retry {
		return nil // the episode's own cooldown does not hold back its next step
	}
	l := g.e.ledgerLocked(g.dryRun)
	last, had := l.cooldown[g.root]
	if !had {
		return nil
	}
	lastWhat := "action"
	if g.dryRun {
		lastWhat = "dry-run action" // recorded, not sent
	}
	if last.After(g.now.Add(time.Minute)) {
		// The clock went back past the last action: hold off until it
		// passes that time again rather than trust either clock.
		return supp(ReasonCooldown, "the last %s is in the future: the clock went back", lastWhat)
	}
	cd := time.Duration(g.cfg.Cooldown)
	refused := l.failures[g.root]
	cd <<= min(refused, 4)
	if g.now.Sub(last) < cd {
		if refused > 0 {
			return supp(ReasonCooldown, "last %s %s ago; the provider refused the last %d, so the cooldown is %s", lastWhat, g.now.Sub(last).Round(time.Second), refused, cd)
		}
		return supp(ReasonCooldown, "last %s %s ago; cooldown %s", lastWhat, g.now.Sub(last).Round(time.Second), cd)
	}
	return nil
}

func (g *gate) checkBudget() *Decision {
	l := g.e.ledgerLocked(g.dryRun)
	l.prune(g.now)
	if len(l.recent) >= g.cfg.MaxActionsPerHour {
		return supp(ReasonRateLimit, "%d actions in the last hour (pending ones included); max_actions_per_hour %d", len(l.recent), g.cfg.MaxActionsPerHour)
	}
	return nil
}

func (g *gate) checkBlastRadius() *Decision {
	l := g.e.ledgerLocked(g.dryRun)
	acct := g.req.Provider + "\x00" + g.req.Account
	touched := map[string]bool{}
	for _, in := range l.recent {
		if in.account == acct {
			touched[in.root] = true
		}
	}
	fleet := g.e.fleetLocked(g.req.Provider, g.req.Account, g.snap)
	allowed := max(1, int(math.Floor(g.cfg.MaxFleetFraction*float64(fleet))))
	if !touched[g.root] && len(touched)+1 > allowed {
		return supp(ReasonBlastRadius, "%d of %d servers of the account acted on in the last hour (pending ones included); max_fleet_fraction %v allows %d",
			len(touched), fleet, g.cfg.MaxFleetFraction, allowed)
	}
	return nil
}

// fleetLocked is the account's fleet for the blast radius: servers that
// are not on their way out, each lineage once. It is counted once per
// list refresh (details between lists do not change states) and lineage.
func (e *Engine) fleetLocked(provider, account string, snap *collector.Snapshot) int {
	c, ok := e.fleets[account]
	if ok && c.at.Equal(snap.LastSuccess) && c.servers == len(snap.Servers) && c.lineage == e.lineageV {
		return c.size
	}
	roots := map[string]bool{}
	for _, s := range snap.Servers {
		if s.State != providers.StateTerminating && s.State != providers.StateTerminated {
			roots[e.rootLocked(serverKey(provider, account, s.ID))] = true
		}
	}
	e.fleets[account] = fleetSize{at: snap.LastSuccess, servers: len(snap.Servers), lineage: e.lineageV, size: len(roots)}
	return len(roots)
}

// reserveLocked takes the request's place in flight and in the hourly
// window; released unless it becomes an action.
func (g *gate) reserveLocked() {
	l := g.e.ledgerLocked(g.dryRun)
	g.e.inFlight[g.root] = true
	if t := g.e.tracks[g.root]; !g.dryRun && (t == nil || t.Episode == nil) {
		// The alerts noted for the server until its episode opens.
		var pm alertMarks
		pm.mark(g.req.alert, g.req.Rule, g.req.alertStart)
		if at := g.req.occ.resolvedAt(); !at.IsZero() {
			pm.resolve(g.req.alert, g.req.alertStart, at)
		}
		g.e.pendingMarks[g.root] = pm
	}
	g.prevCooldown = l.cooldown[g.root]
	g.reserved = &intent{at: g.now, account: g.req.Provider + "\x00" + g.req.Account, root: g.root}
	l.recent = append(l.recent, g.reserved)
}

func (g *gate) releaseLocked() {
	l := g.e.ledgerLocked(g.dryRun)
	delete(g.e.inFlight, g.root)
	delete(g.e.pendingMarks, g.root)
	if t := g.e.tracks[g.root]; t != nil {
		t.InFlightAlerts = nil
	}
	l.recent = slices.DeleteFunc(l.recent, func(in *intent) bool { return in == g.reserved })
}

// confirm re-reads the server from the provider (outside every lock and
// the detail budget) and runs the checks again on its answer.
func (g *gate) confirm(ctx context.Context) *Decision {
	fresh, err := reRead(ctx, g.prov, g.req.ID)
	switch {
	case errors.Is(err, providers.ErrNotFound):
		return supp(ReasonConditionCleared, "the provider no longer has this server")
	case ctx.Err() != nil:
		return supp(ReasonShutdown, "stopped during the re-read")
	case err != nil:
		return supp(ReasonStaleData, "could not re-read the server: %v", err)
	}
	g.srv, g.found, g.readAt = fresh, true, g.e.now()
	return g.run(confirmChecks)
}

// checkStillCalledFor: a rule's own condition must still hold on the
// provider's answer.
func (g *gate) checkStillCalledFor() *Decision {
	r := g.req.rule
	if r != nil && g.req.escalation {
		// The next step is called for while the server is not
		// recovered: the condition holds, or it is not running. An
		// answer without the rule's metric is no sign of recovery.
		if clear, known := clearOn(r, g.srv, true); known && clear {
			return supp(ReasonConditionCleared, "the server recovered before its next step (running, rule condition clear)")
		}
		return nil
	}
	if r != nil && !conditionHolds(r, g.srv) {
		return supp(ReasonConditionCleared, "the rule's condition no longer holds (state %s, status %q)", g.srv.State, g.srv.RawStatus)
	}
	return nil
}

// ledgerLocked is the namespace a decision counts in.
func (e *Engine) ledgerLocked(dry bool) *ledger {
	if dry {
		return &e.dry
	}
	return &e.live
}

// prune drops intents older than an hour (never pending ones: they are
// removed by their release or kept by their settling).
func (l *ledger) prune(now time.Time) {
	l.recent = slices.DeleteFunc(l.recent, func(in *intent) bool { return now.Sub(in.at) > time.Hour })
}

// rootLocked follows a redeploy's replacements back to the first node.
func (e *Engine) rootLocked(key string) string { return lineageRoot(e.lineage, key) }

// lineageRoot follows a redeploy's replacements (lineage: replacement key
// -> the key it replaced) back to the first node.
func lineageRoot(lineage map[string]string, key string) string {
	for i := 0; i < 64; i++ {
		r, ok := lineage[key]
		if !ok || r == key {
			break
		}
		key = r
	}
	return key
}

func isLockTimeout(err error) bool { return journal.IsLocked(err) }
