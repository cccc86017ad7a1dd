package remediation

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"

	"github.com/vps-exporter/vps_exporter/config"
	"github.com/vps-exporter/vps_exporter/providers"
	"github.com/vps-exporter/vps_exporter/remediation/episode"
	"github.com/vps-exporter/vps_exporter/remediation/journal"
)

// The closed loop (DESIGN.md "Closed loop"). An episode begins with the
// first live action on a server (its lineage root) and ends recovered or
// exhausted. Each action gets a verdict when its verify window ends:
// rules, on the server re-read after the window (the rule's condition
// does not hold and the server is running: recovered); alerts, on
// Alertmanager's resolved notifications for every alert of the episode
// within webhook.verify. not_recovered asks for the next step of the
// ladder (the action and its escalate list, as configured now, at the
// episode's position) through the whole gate but the episode's own
// cooldown; no next step, or max_attempts reached in attempts_window,
// exhausts the server until its condition has been clear for verify or an
// operator resets it. Dry runs have no episodes: nothing was done to
// verify.

// ReasonExhausted suppresses every request for a server no repair fixed.
const ReasonExhausted = "exhausted"

// Ways an exhausted server is handed back.
const (
	releasedClear = "condition_clear"
	releasedReset = "reset"
)

// ruleLadder is a rule's action and its escalation steps.
func ruleLadder(r *config.Rule) []string { return episode.RuleLadder(r.Action, r.Escalate) }

// configuredLadderLocked is an episode's ladder as configured now: its rule's
// action and escalate list, or the alert's action and webhook.escalate's
// steps for it (nil: its rule is gone). Its step counts in it.
func (e *Engine) configuredLadderLocked(ep *Episode) []string {
	switch {
	case ep.Source == "rule":
		if r := e.ruleByNameLocked(ep.Rule); r != nil {
			return ruleLadder(r)
		}
	case len(ep.Steps) > 0:
		return alertLadder(e.cfg.Webhook, ep.Steps[0].Action)
	}
	return nil
}

// alertLadder is an alert-driven action and the steps webhook.escalate
// gives it.
func alertLadder(w config.Webhook, first string) []string {
	return episode.AlertLadder(first, w.Escalate)
}

// ruleVerify is a rule's verify window.
func ruleVerify(r *config.Rule) time.Duration {
	if r.Verify > 0 {
		return time.Duration(r.Verify)
	}
	return config.DefaultVerify
}

// alertVerify is the webhook's verify window.
func alertVerify(w config.Webhook) time.Duration {
	if w.Verify > 0 {
		return time.Duration(w.Verify)
	}
	return 15 * time.Minute
}

// attemptsLimit is max_attempts in attempts_window (defaults for a
// configuration built without validation, as the demo's).
func attemptsLimit(c config.Remediation) (int, time.Duration) {
	n, w := c.MaxAttempts, time.Duration(c.AttemptsWindow)
	if n <= 0 {
		n = 3
	}
	if w <= 0 {
		w = 24 * time.Hour
	}
	return n, w
}

func (e *Engine) ruleByNameLocked(name string) *config.Rule {
	for i := range e.cfg.Rules {
		if e.cfg.Rules[i].Name == name {
			return &e.cfg.Rules[i]
		}
	}
	return nil
}

// trackLocked is root's track, made when absent.
func (e *Engine) trackLocked(root string) *track {
	t := e.tracks[root]
	if t == nil {
		t = &track{Root: root}
		e.tracks[root] = t
	}
	return t
}

// captureLocked records a change of t (and of an episode that ended with
// it) for the state file: the returned write is done without the lock
// (store), or in the audit record's transaction (Finish). Attempts older
// than the window go; a track left with nothing leaves memory.
func (e *Engine) captureLocked(t *track, ended *Episode, counts ...string) *loopWrite {
	now := e.now()
	_, window := attemptsLimit(e.cfg)
	from := now.Add(-window)
	keep := t.Attempts[:0]
	for _, a := range t.Attempts {
		if !a.Before(from) {
			keep = append(keep, a)
		}
	}
	t.Attempts = keep
	e.loopVer++
	t.Version = e.loopVer
	w := &loopWrite{root: t.Root, ver: t.Version, counts: counts}
	for _, ep := range []*Episode{t.Episode, ended} {
		if ep != nil {
			ep.Version = e.loopVer
			w.eps = append(w.eps, ep.clone())
		}
	}
	if t.Episode == nil && len(t.Attempts) == 0 && len(t.InFlightAlerts) == 0 {
		delete(e.tracks, t.Root)
		// A deletion leaves a tombstone with its version, over the
		// stored one and any older change still on its way.
		w.track = tombstoneJSON(t.Root, t.Version, now)
		return w
	}
	c := *t
	if t.Episode != nil {
		c.Episode = t.Episode.clone()
	}
	w.track = mustJSON(&c)
	return w
}

// store writes closed-loop changes to the state file, without the
// engine's lock; a failure is logged and noted on the state gauge.
func (e *Engine) store(ws ...*loopWrite) {
	if err := e.storeErr(ws...); err != nil {
		level.Error(e.logger).Log("msg", "cannot store the closed loop's record; memory and state file differ until the next change", "err", err)
		e.m.stateOK.Set(0)
	}
}

// storeErr is store that returns the write's error instead (the webhook
// answers 503 when its resolutions are not written).
func (e *Engine) storeErr(ws ...*loopWrite) error {
	if len(ws) == 0 {
		return nil
	}
	e.mu.Lock()
	st := e.state
	if st != nil {
		st.hold()
		defer st.unhold()
	}
	e.mu.Unlock()
	if st == nil {
		return nil
	}
	ws = slices.DeleteFunc(ws, func(w *loopWrite) bool { return w == nil })
	if len(ws) == 0 {
		return nil
	}
	if err := st.PutLoop(ws...); err != nil {
		return fmt.Errorf("store the closed loop's record: %w", err)
	}
	return nil
}

func (e *Engine) episodeLogger(ep *Episode) log.Logger {
	return log.With(e.logger, "provider", ep.Provider, "account", ep.Account, "id", ep.ID, "episode", ep.Seq, "source", ep.Source, "rule", ep.Rule)
}

// lookupServer finds id in servers ordered as the store orders them.
func lookupServer(list []providers.Server, id string) (providers.Server, bool) {
	if i, ok := serverIndex(list, id); ok {
		return list[i], true
	}
	return providers.Server{}, false
}

// recoverStep returns what loading does for each interrupted action it
// recovers (in the recovery's transaction): a live one becomes a step of
// its server's episode, outcome unknown, verified from now on; it counts
// as an attempt.
func (e *Engine) recoverStep(lineage map[string]string, loop *loopState) func(journal.Tx, Record) error {
	return func(tx journal.Tx, r Record) error {
		if r.Result == ResultDryRun {
			return nil
		}
		root := lineageRoot(lineage, serverKey(r.Provider, r.Account, r.ID))
		t := loop.tracks[root]
		if t == nil {
			t = &track{Root: root}
			loop.tracks[root] = t
		}
		ep := t.Episode
		for _, s := range stepsOf(ep) {
			if s.Seq == r.Seq {
				return nil
			}
		}
		now := e.now()
		t.Attempts = append(t.Attempts, r.Time)
		if ep == nil || ep.Outcome != EpisodeOpen {
			loop.maxSeq++
			ep = &Episode{Seq: loop.maxSeq, Provider: r.Provider, Account: r.Account, ID: r.ID, Root: root,
				Source: r.Source, Rule: r.Rule, Opened: r.Time, Outcome: EpisodeOpen}
			t.Episode = ep
		}
		ep.Escalate, ep.EscalateSince = "", time.Time{}
		ep.Steps = append(ep.Steps, Step{Seq: r.Seq, Action: r.Action, ID: r.ID, Source: r.Source, Rule: r.Rule,
			Time: r.Time, Finished: now, Outcome: r.Result, Alert: r.Alert})
		ep.marks().mark(r.Alert, r.Rule, r.AlertStartsAt)
		// A resolution noted while the call was under way (written
		// before the webhook answered 200): only of the same occurrence
		// of the alert that asked, and only for the step that opens the
		// episode (the one the pending marks were for).
		for _, m := range t.InFlightAlerts {
			if len(ep.Steps) == 1 && m.Fingerprint == r.Alert && !r.AlertStartsAt.IsZero() && m.StartsAt.Equal(r.AlertStartsAt) && !m.Resolved.IsZero() {
				ep.marks().resolve(m.Fingerprint, m.StartsAt, m.Resolved)
			}
		}
		t.InFlightAlerts = nil
		watchRecovered(t, r)
		loop.maxVer++
		t.Version, ep.Version = loop.maxVer, loop.maxVer
		c := *t
		c.Episode = ep.clone()
		return putLoop(tx, &loopWrite{root: root, ver: t.Version, track: mustJSON(&c), eps: []*Episode{ep.clone()}})
	}
}

func stepsOf(ep *Episode) []Step {
	if ep == nil {
		return nil
	}
	return ep.Steps
}

// applyLoopLocked makes the loaded closed loop the engine's, with the
// exhausted gauge of its configured accounts' servers.
func (e *Engine) applyLoopLocked(l *loopState) {
	e.tracks = l.tracks
	e.epSeq = max(e.epSeq, l.maxSeq)
	e.loopVer = max(e.loopVer, l.maxVer)
	e.m.exhausted.Reset()
	for _, t := range e.tracks {
		if ep := t.Episode; ep != nil && ep.exhausted() && e.accounts[ep.Account] == ep.Provider {
			e.m.exhausted.WithLabelValues(ep.Provider, ep.Account, ep.ID).Set(1)
		}
	}
}

// showExhaustedLocked puts the exhausted servers of accounts added back
// (account -> type) on /metrics again.
func (e *Engine) showExhaustedLocked(only map[string]string) {
	for _, t := range e.tracks {
		if ep := t.Episode; ep != nil && ep.exhausted() && only[ep.Account] == ep.Provider {
			e.m.exhausted.WithLabelValues(ep.Provider, ep.Account, ep.ID).Set(1)
		}
	}
}

// forgetTracksLocked drops from memory the tracks under a key prefix (an
// account that left the configuration); the state file keeps them, and
// gives them back if the account comes back (adoptTracksLocked).
func (e *Engine) forgetTracksLocked(prefix string) {
	for root := range e.tracks {
		if strings.HasPrefix(root, prefix) {
			delete(e.tracks, root)
		}
	}
}

// adoptTracksLocked takes back the tracks of accounts added back by a
// reload, as the state file has them; a track in memory that is newer
// (changed while its account was away: an action under way then) stays.
func (e *Engine) adoptTracksLocked(l *loopState) {
	for root, t := range l.tracks {
		if cur := e.tracks[root]; cur == nil || cur.Version < t.Version {
			e.tracks[root] = t
		}
	}
	e.loopVer = max(e.loopVer, l.maxVer)
}

// ExhaustedServer is one server no repair recovered, for the status page.
type ExhaustedServer struct {
	Provider, Account, ID string
	// Name is the server's name in its account's last list ("" when it
	// is not listed).
	Name string
	// Since is when it was exhausted; Reason says why.
	Since  time.Time
	Reason string
	// Source and Rule: what asked for its repairs; Actions: the steps
	// tried, oldest first.
	Source, Rule string
	Actions      []string
}

// Exhausted lists the servers remediation has handed to a person, oldest
// first, named as View names them.
func (e *Engine) Exhausted() []ExhaustedServer {
	out := e.exhaustedServers()
	names := e.namer()
	for i := range out {
		out[i].Name = names(out[i].Provider, out[i].Account, out[i].ID)
	}
	return out
}

func (e *Engine) exhaustedServers() []ExhaustedServer {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []ExhaustedServer
	for _, t := range e.tracks {
		ep := t.Episode
		if ep == nil || !ep.exhausted() || e.accounts[ep.Account] != ep.Provider {
			continue
		}
		x := ExhaustedServer{Provider: ep.Provider, Account: ep.Account, ID: ep.ID, Since: ep.Ended, Reason: ep.Reason, Source: ep.Source, Rule: ep.Rule}
		for _, s := range ep.Steps {
			x.Actions = append(x.Actions, s.Action)
		}
		out = append(out, x)
	}
	sortExhausted(out)
	return out
}

// ActionsThisHour is the hourly budget: live actions (and reserved ones)
// in the last hour, and max_actions_per_hour. In dry-run, the dry-run
// namespace's.
func (e *Engine) ActionsThisHour() (used, limit int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	l := e.ledgerLocked(e.cfg.DryRun)
	l.prune(e.now())
	return len(l.recent), e.cfg.MaxActionsPerHour
}

func sortExhausted(xs []ExhaustedServer) {
	sort.Slice(xs, func(i, j int) bool {
		if !xs[i].Since.Equal(xs[j].Since) {
			return xs[i].Since.Before(xs[j].Since)
		}
		return serverKey(xs[i].Provider, xs[i].Account, xs[i].ID) < serverKey(xs[j].Provider, xs[j].Account, xs[j].ID)
	})
}

// mustJSON encodes what the package itself built (it cannot fail).
func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("remediation: encode %T: %v", v, err))
	}
	return b
}
