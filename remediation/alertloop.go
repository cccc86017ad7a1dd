package remediation

import (
	"fmt"
	"slices"
	"time"

	"github.com/vps-exporter/vps_exporter/collector"
	"github.com/vps-exporter/vps_exporter/config"
	"github.com/vps-exporter/vps_exporter/providers"
	"github.com/vps-exporter/vps_exporter/remediation/episode"
)

// The alerts' side of the closed loop, and the timeouts of both: the
// flusher's tick takes the alert verdicts that are due, on the exporter's
// own view (episode.Judge), and makes unknown the verdicts that waited
// stale_after for a view; Alertmanager's firing and resolved
// notifications are noted on the episodes.

// tick takes the alert verdicts that are due (episode.Judge on the
// resolved notifications and the exporter's own view: not_recovered only
// after webhook.resolve_grace past the window), ends the alert-driven
// episodes whose next step is no longer called for, releases exhausted
// alert-driven servers whose alerts have all been resolved for
// webhook.verify on a fresh view, and makes unknown the verdicts (rules
// too) that waited stale_after for a fresh view. The flusher calls it
// every few seconds. Only the configured accounts' servers are ticked.
func (e *Engine) tick() {
	e.mu.Lock()
	accounts := make([]string, 0, len(e.accounts))
	for a := range e.accounts {
		accounts = append(accounts, a)
	}
	e.mu.Unlock()
	snaps := e.snapshots(accounts)
	var ws []*loopWrite
	e.mu.Lock()
	now, verify := e.now(), alertVerify(e.cfg.Webhook)
	for root, t := range e.tracks {
		ep := t.Episode
		if ep == nil || e.accounts[ep.Account] != ep.Provider {
			continue
		}
		if t.watching() {
			ws = append(ws, e.watchTimeoutLocked(t, now)...)
			continue
		}
		if ep.Source != "alert" {
			ws = append(ws, e.ruleTimeoutLocked(t, now)...)
			continue
		}
		view := viewOf(snaps[ep.Account], ep.ID)
		if ep.exhausted() {
			// The clock runs only while every alert is resolved and the
			// exporter's fresh view agrees; anything else resets it.
			if clearClock(ep, e.alertsClearOn(ep, view), true, now, verify) {
				ws = append(ws, e.releaseLocked(t))
			}
			continue
		}
		if !e.inFlight[root] {
			if w, ended := e.endWithoutStepLocked(t); ended {
				ws = append(ws, w)
				continue
			}
		}
		ws = append(ws, e.alertVerdictLocked(t, view)...)
	}
	e.mu.Unlock()
	e.store(ws...)
}

// ruleTimeoutLocked makes unknown the verdict of a rule's step that had
// no fresh view stale_after past its window (no re-read could be made:
// the account down, the server not read); it never escalates. A step
// whose re-reads did read the server but lacked the rule's metric is
// bounded as ruleVerdict bounds it (one bound, metricBound): not_recovered
// once twice its window has passed, never unknown before.
func (e *Engine) ruleTimeoutLocked(t *track, now time.Time) []*loopWrite {
	ep := t.Episode
	if t.verifying || !ep.verifying() || ep.last().Finished.IsZero() {
		return nil
	}
	last, window := ep.last(), e.episodeVerifyLocked(ep)
	if t.metricMisses > 0 {
		if now.Sub(last.Finished) < metricBound(window) {
			return nil // the metric re-reads are still going
		}
		return e.verdictLocked(t, episode.VerdictNotRecovered, fmt.Sprintf("%d re-read(s) up to %s after the action lacked the rule's metric: no sign of recovery",
			t.metricMisses, now.Sub(last.Finished).Round(time.Second)), time.Time{})
	}
	in := episode.Inputs{Source: episode.FromRule, Now: now, Finished: last.Finished, Window: window, StaleAfter: e.staleAfter}
	if v, why := episode.Judge(in); v == episode.VerdictUnknown {
		return e.verdictLocked(t, v, why, time.Time{})
	}
	return nil
}

// alertVerdictLocked takes the verdict of an alert-driven episode's last
// step on its alerts and view, if one is due: none before the window
// ends; recovered from then when every alert resolved with endsAt inside
// [the step's answer, the window's end] and a view read after it agrees;
// no not_recovered before the grace after the window.
func (e *Engine) alertVerdictLocked(t *track, view episode.View) []*loopWrite {
	ep := t.Episode
	last := ep.last()
	if !ep.verifying() || last.Finished.IsZero() {
		return nil
	}
	all, at := ep.allResolved()
	in := episode.Inputs{Source: episode.FromAlert, Now: e.now(), Finished: last.Finished, Window: alertVerify(e.cfg.Webhook),
		Grace: resolveGrace(e.cfg.Webhook), StaleAfter: e.staleAfter, View: view, Resolved: all, EndsAt: at}
	v, why := episode.Judge(in)
	if v == episode.VerdictPending && in.Now.Before(last.Finished.Add(in.Window+in.Grace)) {
		return nil
	}
	return e.verdictLocked(t, v, why, at)
}

// clearClock runs an exhausted server's clear clock (ClearSince) on one
// look at its condition, the same for rules and alerts: a condition that
// does not say (!known) leaves it; one that is not clear resets it; a
// clear one starts it. It reports whether the condition has been clear
// for verify (the server is to be released). A release is reported only
// on a look after the clock started (verify 0 only starts it).
func clearClock(ep *Episode, clear, known bool, now time.Time, verify time.Duration) bool {
	switch {
	case !known:
	case !clear:
		ep.ClearSince = time.Time{}
	case ep.ClearSince.IsZero():
		ep.ClearSince = now
	case verify > 0 && now.Sub(ep.ClearSince) >= verify:
		return true
	}
	return false
}

// alertsClearOn reports whether an alert-driven episode's condition is
// clear: every alert resolved, and the exporter's fresh view has the
// server running.
func (e *Engine) alertsClearOn(ep *Episode, v episode.View) bool {
	all, _ := ep.allResolved()
	return all && v.Listed && v.State == string(providers.StateRunning) && !v.AccountRefreshed.IsZero() &&
		e.now().Sub(v.AccountRefreshed) <= e.staleAfter
}

// alertsClearLocked is alertsClearOn on the account's snapshot now (the
// collector's store is memory: no call).
func (e *Engine) alertsClearLocked(ep *Episode) bool {
	snap, ok := e.deps.Snapshot(ep.Account)
	if !ok {
		return false
	}
	return e.alertsClearOn(ep, viewOf(&snap, ep.ID))
}

// snapshots are the accounts' snapshots, read without the engine's lock.
func (e *Engine) snapshots(accounts []string) map[string]*collector.Snapshot {
	out := make(map[string]*collector.Snapshot, len(accounts))
	for _, a := range accounts {
		if s, ok := e.deps.Snapshot(a); ok {
			out[a] = &s
		}
	}
	return out
}

// viewOf is the exporter's own view of server id in its account's
// snapshot (nil: none): as of the last successful list; the account's
// refresh counts only while it is up.
func viewOf(snap *collector.Snapshot, id string) episode.View {
	if snap == nil || !snap.Refreshed || snap.LastSuccess.IsZero() {
		return episode.View{}
	}
	v := episode.View{At: snap.LastSuccess}
	if snap.Up {
		v.AccountRefreshed = snap.LastSuccess
	}
	if s, found := lookupServer(snap.Servers, id); found {
		v.Listed, v.State = true, string(s.State)
	}
	return v
}

// accountRefreshedLocked is the account's last successful list while it
// is up (zero: down, or never listed).
func (e *Engine) accountRefreshedLocked(provider, account string) time.Time {
	h, ok := e.health[account]
	if !ok || h.provider != provider || !h.up {
		return time.Time{}
	}
	return h.lastSuccess
}

// resolveGrace is webhook.resolve_grace: how long after an alert's verify
// window a resolved notification may still arrive (Alertmanager sends it
// at the group's next flush).
func resolveGrace(w config.Webhook) time.Duration {
	if w.ResolveGrace > 0 {
		return time.Duration(w.ResolveGrace)
	}
	return config.DefaultResolveGrace
}

// alertResolved records Alertmanager's resolved notification of an
// occurrence of an alert (startsAt) for a server: on its active episode
// if the episode knows the alert, or on the pending marks of a request of
// the server under way (its episode takes them). When every alert of an
// episode resolved, its last step's verdict is taken if due (see
// alertVerdictLocked), an exhausted server's condition is clear from
// now, and a next step due is no longer called for. Any other
// notification is only counted. It returns the change to store (the
// caller batches a payload's in one transaction).
func (e *Engine) alertResolved(provider, account, id, fingerprint string, startsAt, at time.Time) *loopWrite {
	var snap *collector.Snapshot
	if s, ok := e.deps.Snapshot(account); ok {
		snap = &s
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now()
	if at.IsZero() || at.After(now) {
		at = now
	}
	if e.accounts[account] != provider {
		return nil
	}
	root := e.rootLocked(serverKey(provider, account, id))
	t := e.tracks[root]
	if t == nil || t.Episode == nil {
		pm, ok := e.pendingMarks[root]
		if !ok || !slices.ContainsFunc(pm, func(a AlertMark) bool { return a.Fingerprint == fingerprint }) {
			return nil
		}
		pm.resolve(fingerprint, startsAt, at)
		e.pendingMarks[root] = pm
		// Durable before the webhook answers 200 (written again on a
		// resend: the write Alertmanager retries after a 503 may be the
		// first that succeeds): a crash during the call must not lose it
		// (recoverStep).
		t = e.trackLocked(root)
		t.InFlightAlerts = slices.Clone(pm)
		return e.captureLocked(t, nil)
	}
	ep := t.Episode
	if !ep.marks().resolve(fingerprint, startsAt, at) {
		return nil
	}
	all, _ := ep.allResolved()
	switch {
	case all && ep.exhausted():
		// The clear clock starts only on a fresh view that agrees.
		clearClock(ep, e.alertsClearOn(ep, viewOf(snap, ep.ID)), true, now, 0)
	case all && ep.Source == "alert" && ep.verifying() && !ep.last().Finished.IsZero():
		if w := mergeWrites(e.alertVerdictLocked(t, viewOf(snap, ep.ID))); w != nil {
			return w
		}
	case all && !e.inFlight[root]:
		if w, ended := e.endWithoutStepLocked(t); ended {
			return w
		}
	}
	return e.captureLocked(t, nil)
}

// mergeWrites is one track's successive changes as one write: the newest
// track, every episode at its newest version, every counter.
func mergeWrites(ws []*loopWrite) *loopWrite {
	var out *loopWrite
	for _, w := range ws {
		if w == nil {
			continue
		}
		if out == nil {
			c := *w
			out = &c
			continue
		}
		counts := append(append([]string(nil), out.counts...), w.counts...)
		eps := append([]*Episode(nil), out.eps...)
		for _, ep := range w.eps {
			if i := slices.IndexFunc(eps, func(x *Episode) bool { return x.Seq == ep.Seq }); i >= 0 {
				eps[i] = ep
			} else {
				eps = append(eps, ep)
			}
		}
		c := *w
		c.counts, c.eps = counts, eps
		out = &c
	}
	return out
}

// alertFiring notes that an occurrence of an alert fires for a server
// (before its request goes through the gate): an alert its active episode
// waits for (an exhausted server's condition is not clear), or one the
// episode a request under way opens will.
func (e *Engine) alertFiring(req Request) {
	if req.alert == "" {
		return
	}
	var w *loopWrite
	e.mu.Lock()
	root := e.rootLocked(serverKey(req.Provider, req.Account, req.ID))
	t := e.tracks[root]
	switch {
	case t != nil && t.Episode != nil:
		if t.Episode.marks().mark(req.alert, req.Rule, req.alertStart) {
			t.Episode.ClearSince = time.Time{}
			w = e.captureLocked(t, nil)
		}
	default:
		if pm, ok := e.pendingMarks[root]; ok {
			pm.mark(req.alert, req.Rule, req.alertStart)
			e.pendingMarks[root] = pm
		}
	}
	e.mu.Unlock()
	e.store(w)
}
