package remediation

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/go-kit/log/level"

	"github.com/vps-exporter/vps_exporter/collector"
	"github.com/vps-exporter/vps_exporter/providers"
	"github.com/vps-exporter/vps_exporter/remediation/episode"
)

// A redeploy makes a new server id (VPN.bingo: a new node, the original
// reads Pending Release). When its answer is lost (outcome unknown, no
// new id), the replacement is found from the account's next lists
// (issue 22 fault 6): the original reads terminating (Pending Release) or
// is gone, and the replacement is the one server of that account and
// country first seen after the call (not in the list before it) and
// claimed by no other episode. It inherits the episode and its attempts,
// so max_attempts holds across the lineage. When no server can be told
// apart (none, or several), the episode is exhausted: a person decides,
// and every candidate is held with it; a fresh ladder never starts on a
// replacement. The watch is journaled with the intent (Record.Watch) and
// then with the server's track, so that a crash or a restart does not
// lose it.

// lineageWatch is a redeploy whose answer was lost, looked for in the
// account's lists.
type lineageWatch struct {
	// Step is the redeploy's audit record; From the original's id;
	// Country where the replacement is made; Since the call.
	Step    uint64    `json:"step,omitempty"`
	From    string    `json:"from"`
	Country string    `json:"country"`
	Since   time.Time `json:"since"`
	// Known are the ids of that account and country listed before the
	// call: none of them is the replacement.
	Known []string `json:"known,omitempty"`
	// Lists counts the lists completed after the call without an answer.
	Lists int `json:"lists,omitempty"`
	// Held: the episode was exhausted for want of an answer; candidates
	// seen until holdFor after the call are held with it.
	Held bool `json:"held,omitempty"`
}

// watchLists is how many lists completed after the call a watch waits
// for its answer (the provider shows the replacement at once; a list may
// skip a page).
const watchLists = 3

// watchHoldFor is how long after the call an exhausted watch goes on
// holding the candidates that appear.
const watchHoldFor = time.Hour

// newLineageWatch notes, before a redeploy is sent, what a lost answer
// would be resolved on: the account's servers of the replacement's
// country as last listed. nil for other actions.
func (e *Engine) newLineageWatch(g *gate) *lineageWatch {
	req := g.req
	if req.Action != providers.ActionRedeploy {
		return nil
	}
	snap, ok := e.deps.Snapshot(req.Account)
	if !ok {
		return nil
	}
	orig, found := lookupServer(snap.Servers, req.ID)
	country := req.Params.CountryCode
	if country == "" && found {
		country = orig.Location
	}
	w := &lineageWatch{From: req.ID, Country: country, Since: e.now()}
	for _, s := range snap.Servers {
		if strings.EqualFold(s.Location, country) {
			w.Known = append(w.Known, s.ID)
		}
	}
	return w
}

// watchStepLocked starts watching for the replacement of a redeploy the
// provider may have carried out with its answer lost.
func (e *Engine) watchStepLocked(t *track, rec *Record) {
	w := rec.Watch
	rec.Watch = nil // journaled with the track from now on, not the audit record
	if w == nil || rec.Result != ResultUnknown || rec.NewID != "" || t.Episode == nil {
		return
	}
	w.Step = rec.Seq
	t.Watch = w
	level.Warn(e.episodeLogger(t.Episode)).Log("msg", "the redeploy's answer was lost: its replacement is looked for in the next lists; no verdict until it is found", "country", w.Country)
}

// Outcomes of resolving a watch.
const (
	watchWaiting   = "waiting"   // no answer yet
	watchFound     = "found"     // one replacement
	watchNoChange  = "unchanged" // the original is listed as it was: not redeployed
	watchAmbiguous = "ambiguous" // none or several can be told apart
)

// resolveWatch decides a watch on one list of its account: claimed says
// whether another episode holds a server. It returns the outcome, the
// candidates (the replacement when found) and why.
func resolveWatch(w *lineageWatch, servers []providers.Server, claimed func(id string) bool) (string, []string, string) {
	orig, listed := lookupServer(servers, w.From)
	gone := !listed || orig.State == providers.StateTerminating || orig.State == providers.StateTerminated
	var cands []string
	for _, s := range servers {
		if s.ID != w.From && strings.EqualFold(s.Location, w.Country) && !slices.Contains(w.Known, s.ID) && !claimed(s.ID) {
			cands = append(cands, s.ID)
		}
	}
	last := w.Lists >= watchLists
	switch {
	case len(cands) > 1:
		return watchAmbiguous, cands, fmt.Sprintf("%d servers of country %q appeared after the redeploy: %s", len(cands), w.Country, strings.Join(cands, ", "))
	case gone && len(cands) == 1:
		return watchFound, cands, ""
	case !last:
		return watchWaiting, cands, ""
	case !gone && len(cands) == 0:
		return watchNoChange, nil, fmt.Sprintf("the original still reads %s after %d lists and no server appeared: not redeployed", orig.State, w.Lists)
	case gone:
		return watchAmbiguous, nil, fmt.Sprintf("the original is gone or releasing but no server of country %q appeared in %d lists", w.Country, w.Lists)
	}
	return watchAmbiguous, cands, fmt.Sprintf("server %s appeared but the original still reads %s", strings.Join(cands, ", "), orig.State)
}

// claimedLocked reports whether a server of the account is another
// episode's: in another lineage, another track's root, or another
// episode's server.
func (e *Engine) claimedLocked(t *track, provider, account, id string) bool {
	k := serverKey(provider, account, id)
	if r := e.rootLocked(k); r != k {
		return r != t.Root
	}
	if o := e.tracks[k]; o != nil && o != t {
		return true
	}
	for _, o := range e.tracks {
		if o != t && o.Episode != nil && o.Episode.Provider == provider && o.Episode.Account == account && o.Episode.ID == id {
			return true
		}
	}
	return false
}

// watchLocked runs a track's watch on a list of its account. It returns
// the change to store, the lineage links to write (replacement ->
// root), and whether the watch goes on (the list's other closed-loop
// work waits for it).
func (e *Engine) watchLocked(t *track, snap *collector.Snapshot) (w *loopWrite, links []string, watching bool) {
	wt, ep := t.Watch, t.Episode
	if ep == nil {
		t.Watch = nil
		return nil, nil, false
	}
	if !snap.LastSuccess.After(wt.Since) {
		return nil, nil, true // a list from before the call
	}
	claimed := func(id string) bool { return e.claimedLocked(t, snap.Provider, snap.Account, id) }
	res, cands, why := resolveWatch(wt, snap.Servers, claimed)
	logger := e.episodeLogger(ep)
	if wt.Held {
		// Exhausted for want of an answer: candidates appearing are held
		// with it, for watchHoldFor; then the watch is dropped and the
		// exhausted episode goes the usual way (a reset, or server_gone
		// when its lineage left the lists), its held servers staying in
		// its lineage.
		if e.now().Sub(wt.Since) > watchHoldFor {
			t.Watch = nil
			level.Info(logger).Log("msg", "the lost redeploy's watch ends: no more candidates are held; the server stays exhausted", "held_for", watchHoldFor)
			return e.captureLocked(t, nil), nil, false
		}
		if res == watchNoChange {
			cands = nil
		}
		for _, id := range cands {
			if e.rootLocked(serverKey(snap.Provider, snap.Account, id)) != t.Root {
				links = append(links, id)
			}
		}
		return nil, e.linkLocked(t, snap, links), true
	}
	wt.Lists++
	switch res {
	case watchWaiting:
		return e.captureLocked(t, nil), nil, true
	case watchFound:
		t.Watch = nil
		ep.ID = cands[0]
		t.missing = 0
		level.Info(logger).Log("msg", "the lost redeploy's replacement is found: it inherits the episode and its attempts", "from", wt.From, "new_id", cands[0])
		return e.captureLocked(t, nil), e.linkLocked(t, snap, cands), false
	case watchNoChange:
		t.Watch = nil
		level.Info(logger).Log("msg", "the lost redeploy did not take effect: the episode goes on with the original", "detail", why)
		return e.captureLocked(t, nil), nil, false
	}
	// Nothing can be told apart: a person decides; the candidates are
	// held with the exhausted episode.
	wt.Held = true
	var lw *loopWrite
	if !ep.exhausted() {
		lw = e.exhaustLocked(t, episode.LineageLost, "the redeploy's answer was lost and its replacement cannot be told apart: "+why)
	}
	if lw == nil {
		lw = e.captureLocked(t, nil)
	}
	return lw, e.linkLocked(t, snap, cands), true
}

// linkLocked puts servers of the account in t's lineage, in memory; the
// returned keys (replacement, root pairs) are for storeLinks.
func (e *Engine) linkLocked(t *track, snap *collector.Snapshot, ids []string) []string {
	var out []string
	for _, id := range ids {
		k := serverKey(snap.Provider, snap.Account, id)
		e.lineage[k] = t.Root
		out = append(out, k, t.Root)
	}
	if len(out) > 0 {
		e.lineageV++
	}
	return out
}

// storeLinks writes lineage links (pairs of replacement key, root) to the
// state file, without the engine's lock, before the tracks that rely on
// them.
func (e *Engine) storeLinks(links []string) {
	if len(links) == 0 {
		return
	}
	e.mu.Lock()
	st := e.state
	if st != nil {
		st.hold()
		defer st.unhold()
	}
	e.mu.Unlock()
	if st == nil {
		return
	}
	for i := 0; i+1 < len(links); i += 2 {
		if err := st.SetLineage(links[i], links[i+1]); err != nil {
			level.Error(e.logger).Log("msg", "cannot record a lost redeploy's replacement", "err", err)
			e.m.stateOK.Set(0)
		}
	}
}

// watchTimeoutLocked ends a watch that no list came to resolve (the
// account down): like any verdict without a fresh view, stale_after past
// the step's window (alerts: and the grace) the step's verdict is
// unknown (the machine's window_ended or view_timeout: the episode ends,
// a person looks).
func (e *Engine) watchTimeoutLocked(t *track, now time.Time) []*loopWrite {
	ep := t.Episode
	last := ep.last()
	if last == nil || last.Finished.IsZero() || !ep.verifying() {
		return nil
	}
	in := episode.Inputs{Source: episode.FromRule, Now: now, Finished: last.Finished, Window: e.episodeVerifyLocked(ep), StaleAfter: e.staleAfter}
	if ep.Source == "alert" {
		in.Source, in.Grace = episode.FromAlert, resolveGrace(e.cfg.Webhook)
	}
	v, why := episode.Judge(in)
	if v != episode.VerdictUnknown {
		return nil
	}
	from := t.Watch.From
	t.Watch = nil
	return e.verdictLocked(t, v, fmt.Sprintf("the redeploy's answer was lost and no list of the account came to find the replacement of %s: %s", from, why), time.Time{})
}

// watching reports whether the track waits for a lost redeploy's answer
// (no verdict is taken meanwhile).
func (t *track) watching() bool { return t.Watch != nil && !t.Watch.Held }

// checkLineageWatch holds back a request for a server that may be the
// replacement of a lost redeploy still looked for (of its account, not
// listed before the call, of its country when the list says): it may be
// another episode's server, whose attempts it would escape.
func (g *gate) checkLineageWatch() *Decision {
	for _, t := range g.e.tracks {
		wt, ep := t.Watch, t.Episode
		if !t.watching() || ep == nil || ep.Provider != g.req.Provider || ep.Account != g.req.Account ||
			g.req.ID == wt.From || slices.Contains(wt.Known, g.req.ID) || t.Root == g.root {
			continue
		}
		if g.found && !strings.EqualFold(g.srv.Location, wt.Country) {
			continue
		}
		return supp(ReasonInFlight, "this server may be the replacement of %s, whose redeploy's answer was lost; it is being looked for", wt.From)
	}
	return nil
}

// watchRecovered carries the watch of a redeploy interrupted by a crash
// (its intent recovered unknown, no new id) to its server's track.
func watchRecovered(t *track, r Record) {
	if r.Watch == nil || r.NewID != "" || r.Action != string(providers.ActionRedeploy) {
		return
	}
	w := *r.Watch
	w.Step = r.Seq
	t.Watch = &w
}
