package remediation

import (
	"context"
	"fmt"
	"time"

	"github.com/go-kit/log/level"

	"github.com/vps-exporter/vps_exporter/config"
)

// ReasonHoldExpired suppresses an accepted alert whose hold (for a
// passing reason) outlasted remediation.webhook.hold.
const ReasonHoldExpired = "hold_expired"

// ReasonNotReady holds an accepted alert back while its account has not
// been listed yet (a hold reason only: the gate never sees it).
const ReasonNotReady = "not_ready"

// holdReasons are the passing reasons an accepted alert is held back
// for, kept in the journal and retried until the reason passes (the
// label values of vps_remediation_webhook_held_total, created at zero).
// Every other suppression ends the alert.
var holdReasons = []string{ReasonNotReady, ReasonStaleData, ReasonInFlight, ReasonShutdown, ReasonNotSent, ReasonStateError, ReasonRateLimit, ReasonBlastRadius}

// isHoldReason reports whether a suppression's reason passes by itself.
func isHoldReason(reason string) bool {
	for _, r := range holdReasons {
		if r == reason {
			return true
		}
	}
	return false
}

// Pacing of the journal's handling: every intakeTick the pending entries
// are offered to the workers; an entry the gate held back is tried again
// after holdBackoff, doubling up to holdBackoffMax (one whose reason the
// webhook sees without the gate, at each tick).
const (
	intakeTick     = time.Second
	holdBackoff    = 5 * time.Second
	holdBackoffMax = time.Minute
)

// holdState is the webhook's note of one held entry (by its key).
// Bounded by the journal.
type holdState struct {
	server string
	occ    string
	reason string
	since  time.Time // engine clock
	tries  int       // gate suppressions in a row
	next   time.Time // wall clock: not offered before
}

// dispatch offers the journal's pending entries to the workers at each
// nudge (an alert was journaled) and tick, until ctx ends.
func (w *Webhook) dispatch(ctx context.Context) {
	t := time.NewTicker(intakeTick)
	defer t.Stop()
	for {
		w.offer(ctx)
		select {
		case <-ctx.Done():
			return
		case <-w.nudge:
		case <-t.C:
		}
	}
}

// heldState is the engine's state file, held (unhold it), or nil.
func (e *Engine) heldState() *State {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.state != nil {
		e.state.hold()
	}
	return e.state
}

// offer hands the due entries not being handled to the workers, and
// ends the notes of held entries the journal no longer has (a resolved
// notification removed them).
func (w *Webhook) offer(ctx context.Context) {
	e := w.engine
	st := e.heldState()
	if st == nil {
		return
	}
	ents, err := st.intakeEntries()
	st.unhold()
	if err != nil {
		level.Error(e.logger).Log("msg", "cannot read the webhook's intake journal; retrying", "err", err)
		return
	}
	pending := make(map[string]string, len(ents))
	for i := range ents {
		pending[ents[i].key()] = ents[i].occ()
	}
	w.mu.Lock()
	var gone []*holdState
	for k, h := range w.holds {
		if occ, ok := pending[k]; (!ok || occ != h.occ) && !w.handling[h.server] {
			gone = append(gone, h)
			delete(w.holds, k)
		}
	}
	w.mu.Unlock()
	for _, h := range gone {
		level.Info(e.logger).Log("msg", "alert hold ended", "server", serverLabel(h.server), "outcome", "resolved", "reason", h.reason, "held_for", e.now().Sub(h.since).Round(time.Second))
	}
	now := time.Now()
	for _, en := range ents {
		if !w.take(&en, now) {
			continue
		}
		select {
		case w.work <- en:
		case <-ctx.Done():
			w.untake(en.server())
			return
		}
	}
}

// serverLabel shows a server key as provider/account/id.
func serverLabel(key string) string {
	b := []byte(key)
	for i := range b {
		if b[i] == 0 {
			b[i] = '/'
		}
	}
	return string(b)
}

// take marks an entry's server as being handled: false if it already is
// (a server's alerts are handled one at a time), or the entry is held
// and not due.
func (w *Webhook) take(en *intakeEntry, now time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.handling[en.server()] {
		return false
	}
	if h := w.holds[en.key()]; h != nil && h.occ == en.occ() && now.Before(h.next) {
		return false
	}
	w.handling[en.server()] = true
	return true
}

func (w *Webhook) untake(key string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.handling, key)
}

// worker handles the entries offered, until ctx ends.
func (w *Webhook) worker(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case en := <-w.work:
			w.process(ctx, en)
			w.untake(en.server())
		}
	}
}

// process takes one journaled alert through the gate. Its end (an
// action, a suppression, its hold expired) removes it from the journal;
// a passing reason keeps it there, held, until the reason passes or the
// hold ends.
func (w *Webhook) process(ctx context.Context, en intakeEntry) {
	e := w.engine
	// Noted first, then checked: a resolution the webhook journals after
	// the check is noted on it (it notes after its write).
	o := w.noteOcc(en.occ())
	defer w.dropOcc(en.occ())
	if !w.stillPending(&en) {
		return // handled, or resolved, since the journal was read for the offer
	}
	req := en.request(o)
	if limit := e.webhookHold(); e.now().Sub(en.Accepted) >= limit {
		w.mu.Lock()
		reason := ""
		if h := w.holds[en.key()]; h != nil && h.occ == en.occ() {
			reason = h.reason
		}
		w.mu.Unlock()
		e.suppressed(req, Decision{Reason: ReasonHoldExpired, Detail: fmt.Sprintf("accepted %s ago and held back since (last reason: %s): remediation.webhook.hold is %s",
			e.now().Sub(en.Accepted).Round(time.Second), orNone(reason), limit)})
		w.end(&en, "expired")
		return
	}
	if !o.resolvedAt().IsZero() {
		e.suppressed(req, Decision{Reason: ReasonConditionCleared, Detail: "Alertmanager resolved the alert before it was handled"})
		w.end(&en, "resolved")
		return
	}
	// The alert fires: an episode of its server waits for it too.
	e.alertFiring(req)
	reason, detail := w.waiting(req)
	switch {
	case reason == ReasonNotAllowed:
		e.suppressed(req, Decision{Reason: reason, Detail: detail, unlisted: true})
		w.end(&en, "suppressed")
		return
	case reason != "":
		w.hold(&en, reason, detail, false)
		return
	}
	if !en.Listed && !w.listed(en.Account, en.ID) {
		// Accepted before the account's first list, for an id that list
		// does not have: counted only, as the webhook counts it.
		e.m.webhookAlerts.WithLabelValues("unknown_server").Inc()
		w.end(&en, "unknown_server")
		return
	}
	d := e.Submit(ctx, req)
	switch {
	case d.Acted:
		w.ended(&en, "taken") // its entry ended with the action's record
	case isHoldReason(d.Reason) && !d.unlisted:
		w.hold(&en, d.Reason, d.Detail, true)
	default:
		w.end(&en, "suppressed")
	}
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// webhookHold is remediation.webhook.hold.
func (e *Engine) webhookHold() time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	if h := time.Duration(e.cfg.Webhook.Hold); h > 0 {
		return h
	}
	return config.DefaultWebhookHold
}

// waiting is the passing reason, seen without the gate, that holds a
// request back ("" when there is none): the exporter stopping, the
// account not listed yet, down or stale, an action under way on the
// server; or not_allowed, which does not pass: the account is no longer
// configured.
func (w *Webhook) waiting(req Request) (reason, detail string) {
	e := w.engine
	e.mu.Lock()
	closing, staleness, configured := e.closing, e.staleness, e.accounts[req.Account] == req.Provider
	inFlight := e.inFlight[e.rootLocked(serverKey(req.Provider, req.Account, req.ID))]
	e.mu.Unlock()
	if closing {
		return ReasonShutdown, "the exporter is stopping; the alert stays journaled for the next start"
	}
	if !configured {
		// A reload removed the account: nothing will pass.
		return ReasonNotAllowed, fmt.Sprintf("no %s account named %q", req.Provider, req.Account)
	}
	snap, ok := e.deps.Snapshot(req.Account)
	if !ok || !snap.Refreshed || snap.LastSuccess.IsZero() {
		return ReasonNotReady, "the account has not been listed yet"
	}
	if d := staleHealth(healthOf(snap), e.now(), staleness); d != nil {
		return d.Reason, d.Detail
	}
	if inFlight {
		return ReasonInFlight, "an action on this server is under way"
	}
	return "", ""
}

// listed reports whether the account's last list has the server.
func (w *Webhook) listed(account, id string) bool {
	snap, ok := w.engine.deps.Snapshot(account)
	return ok && hasServer(snap.Servers, id)
}

// hold keeps an entry in the journal, to be tried again: after the next
// tick, or (gate: the gate said so, and counted it) after a backoff. A
// hold is counted by reason, and logged, when it starts or its reason
// changes (not at each retry).
func (w *Webhook) hold(en *intakeEntry, reason, detail string, gate bool) {
	e := w.engine
	now := time.Now()
	w.mu.Lock()
	h := w.holds[en.key()]
	start := h == nil || h.occ != en.occ()
	if start {
		h = &holdState{server: en.server(), occ: en.occ(), since: e.now()}
		w.holds[en.key()] = h
	}
	changed := h.reason != reason
	h.reason = reason
	h.next = now.Add(intakeTick)
	if gate {
		wait := holdBackoff << min(h.tries, 4)
		h.tries++
		h.next = now.Add(min(wait, holdBackoffMax))
	} else {
		h.tries = 0
	}
	// Not past the hold's end: its expiry is seen in time.
	if left := e.webhookHold() - e.now().Sub(en.Accepted); now.Add(left).Before(h.next) {
		h.next = now.Add(max(left, 0))
	}
	w.mu.Unlock()
	if changed {
		// A hold is no suppression (Engine.suppressed leaves it to this
		// count): the alert's end is counted once, as an action or a
		// suppression.
		e.m.webhookHeld.WithLabelValues(reason).Inc()
	}
	if !start && !changed {
		return // logged when it started
	}
	logger := level.Info(e.logger)
	if start {
		logger = level.Warn(e.logger)
	}
	logger.Log("msg", "alert held: kept and retried while it fires, until the reason passes or remediation.webhook.hold ends",
		"provider", en.Provider, "account", en.Account, "id", en.ID, "action", en.Action, "alertname", en.Alertname,
		"reason", reason, "detail", detail, "hold", e.webhookHold())
}

// end removes an entry from the journal and ends its hold.
func (w *Webhook) end(en *intakeEntry, outcome string) {
	e := w.engine
	if st := e.heldState(); st != nil {
		err := st.endIntake(en)
		st.unhold()
		if err != nil {
			level.Error(e.logger).Log("msg", "cannot remove a handled alert from the intake journal; it is handled again (through the whole gate)", "id", en.ID, "err", err)
			// Not at once: after the backoff, as a hold the gate gave.
			w.mu.Lock()
			h := w.holds[en.key()]
			if h == nil || h.occ != en.occ() {
				h = &holdState{server: en.server(), occ: en.occ(), reason: ReasonStateError, since: e.now()}
				w.holds[en.key()] = h
			}
			h.next = time.Now().Add(holdBackoff)
			w.mu.Unlock()
			return
		}
	}
	w.ended(en, outcome)
}

// ended ends an entry's hold, logging it if there was one.
func (w *Webhook) ended(en *intakeEntry, outcome string) {
	w.mu.Lock()
	h := w.holds[en.key()]
	if h != nil && h.occ == en.occ() {
		delete(w.holds, en.key())
	} else {
		h = nil
	}
	w.mu.Unlock()
	if h == nil {
		return
	}
	e := w.engine
	lvl := level.Info
	if outcome == "expired" {
		lvl = level.Warn
	}
	lvl(e.logger).Log("msg", "alert hold ended", "provider", en.Provider, "account", en.Account, "id", en.ID, "action", en.Action, "alertname", en.Alertname,
		"outcome", outcome, "reason", h.reason, "held_for", e.now().Sub(h.since).Round(time.Second))
}

// noteOcc notes an occurrence being handled: a resolved notification
// meanwhile is kept on it.
func (w *Webhook) noteOcc(key string) *occurrence {
	w.mu.Lock()
	defer w.mu.Unlock()
	o := &occurrence{}
	w.occs[key] = o
	return o
}

func (w *Webhook) dropOcc(key string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.occs, key)
}

// resolved notes a resolved notification on its occurrence being handled.
func (w *Webhook) resolved(key string, at time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if o := w.occs[key]; o != nil {
		o.resolved.CompareAndSwap(0, at.UnixNano())
	}
}

// stillPending reports whether the journal still has the entry (the
// same occurrence): an offer reads the journal before it hands entries
// out, and an entry may have ended meanwhile.
func (w *Webhook) stillPending(en *intakeEntry) bool {
	st := w.engine.heldState()
	if st == nil {
		return false
	}
	defer st.unhold()
	ok, err := st.hasIntake(en)
	return ok && err == nil
}

// pendingCount is how many accepted alerts the journal holds (-1: the
// state file is not there or unreadable).
func (w *Webhook) pendingCount() int {
	st := w.engine.heldState()
	if st == nil {
		return -1
	}
	defer st.unhold()
	ents, err := st.intakeEntries()
	if err != nil {
		return -1
	}
	return len(ents)
}
