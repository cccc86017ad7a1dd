package remediation

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-kit/log/level"

	"github.com/vps-exporter/vps_exporter/collector"
	"github.com/vps-exporter/vps_exporter/config"
	"github.com/vps-exporter/vps_exporter/providers"
)

// MaxWebhookBody caps one webhook request body.
const MaxWebhookBody = 1 << 20

// Alertmanager's webhook payload, version 4.
type amPayload struct {
	Version  string    `json:"version"`
	Status   string    `json:"status"`
	Receiver string    `json:"receiver"`
	Alerts   []amAlert `json:"alerts"`
}

type amAlert struct {
	Status      string            `json:"status"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	StartsAt    time.Time         `json:"startsAt"`
	EndsAt      time.Time         `json:"endsAt"`
	Fingerprint string            `json:"fingerprint"`
}

// occurrence is the webhook's note of one firing alert being handled:
// a resolved notification that comes meanwhile is kept here.
type occurrence struct {
	resolved atomic.Int64 // unix nanoseconds; 0: not resolved
}

// resolvedAt is when the occurrence resolved (zero: it has not, or o is
// nil).
func (o *occurrence) resolvedAt() time.Time {
	if o == nil {
		return time.Time{}
	}
	if n := o.resolved.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// Webhook receives Alertmanager notifications. Firing alerts that carry
// provider, account, id and remediation labels are journaled in the state
// file before the answer (intake.go) and handled from there by workers
// in the background (intake_worker.go): across restarts, and held while
// a passing reason holds them back.
type Webhook struct {
	engine *Engine
	// capacity bounds the journal: a batch it cannot take is refused
	// (429), so that Alertmanager retries it.
	capacity int
	work     chan intakeEntry
	nudge    chan struct{}
	wg       sync.WaitGroup
	// closed (under enq) is set when the workers stop: nothing is
	// taken after it.
	enq    sync.Mutex
	closed bool
	// Under mu, each bounded by the journal: handling holds the entries
	// (by server) a worker has; occs the occurrences being handled, by
	// key (a resolved notification is noted on one); holds the notes of
	// held entries, by server.
	mu       sync.Mutex
	handling map[string]bool
	occs     map[string]*occurrence
	holds    map[string]*holdState
}

// NewWebhook starts workers that handle the alerts journaled in the
// state file; capacity bounds the journal.
func NewWebhook(ctx context.Context, e *Engine, capacity, workers int) *Webhook {
	w := &Webhook{engine: e, capacity: capacity, work: make(chan intakeEntry), nudge: make(chan struct{}, 1),
		handling: map[string]bool{}, occs: map[string]*occurrence{}, holds: map[string]*holdState{}}
	for i := 0; i < workers; i++ {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			w.worker(ctx)
		}()
	}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		w.dispatch(ctx)
		w.stop()
		if n := w.pendingCount(); n > 0 {
			level.Info(e.logger).Log("msg", "accepted alerts stay in the intake journal; they are handled at the next start", "alerts", n)
		}
	}()
	return w
}

// stop makes the webhook refuse new alerts (503).
func (w *Webhook) stop() {
	w.enq.Lock()
	w.closed = true
	w.enq.Unlock()
}

// stopped reports whether the workers stopped.
func (w *Webhook) stopped() bool {
	w.enq.Lock()
	defer w.enq.Unlock()
	return w.closed
}

// Wait returns when the workers have stopped (their context ended).
func (w *Webhook) Wait() { w.wg.Wait() }

// Pending is how many accepted alerts the intake journal holds (0 when
// it cannot be read).
func (w *Webhook) Pending() int { return max(w.pendingCount(), 0) }

// seenKey is an alert occurrence's key in the live or the dry-run
// namespace.
func seenKey(dry bool, key string) string {
	if dry {
		return "dry|" + key
	}
	return key
}

// ServeHTTP implements http.Handler: 200 once the alerts are journaled
// in the state file (fsynced; intake.go) and the resolved notifications
// recorded (an alert asking for remediation without provider, account,
// id or startsAt is skipped and counted as invalid), 400 for a malformed
// payload, 429 when the journal cannot take them all, 503 when they
// cannot be journaled, remediation is off, the exporter is stopping, or
// the webhook is off (Alertmanager retries, here or on a replacement).
// With the webhook off, resolved notifications are
// still taken while an alert-driven episode is active (their verdicts
// and releases wait for them); firing alerts then start nothing
// (not_allowed).
func (w *Webhook) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		rw.Header().Set("Allow", "POST")
		http.Error(rw, "POST an Alertmanager webhook payload", http.StatusMethodNotAllowed)
		return
	}
	e := w.engine
	e.mu.Lock()
	enabled, firing, closing := e.cfg.Enabled && e.state != nil, e.cfg.Webhook.Enabled, e.closing
	if enabled && !firing {
		enabled = e.alertEpisodesLocked()
	}
	e.mu.Unlock()
	if f := e.credential(r, false); f != nil {
		f.refuse(rw)
		return
	}
	if closing || w.stopped() {
		http.Error(rw, "the exporter is stopping; retry later", http.StatusServiceUnavailable)
		return
	}
	if !enabled {
		http.Error(rw, "remediation webhook is disabled", http.StatusServiceUnavailable)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(rw, r.Body, MaxWebhookBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			http.Error(rw, fmt.Sprintf("payload larger than %d bytes", MaxWebhookBody), http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(rw, "cannot read payload: "+err.Error(), http.StatusBadRequest)
		return
	}
	var p amPayload
	if err := json.Unmarshal(body, &p); err != nil {
		http.Error(rw, "malformed payload: "+err.Error(), http.StatusBadRequest)
		return
	}
	if p.Version != "4" {
		http.Error(rw, fmt.Sprintf("unsupported payload version %q (want \"4\")", p.Version), http.StatusBadRequest)
		return
	}
	ents, invalid, resolved, refs := w.admitAlerts(p.Alerts, e.now(), firing)
	outs, err := w.journal(ents, refs)
	// After the journal's write: an entry a worker took before it is
	// noted (see process).
	for _, r := range refs {
		w.resolved(r.occ, r.at)
	}
	// The payload's resolutions, in one transaction, before the answer:
	// Alertmanager does not send them again unless it is not 200.
	storeErr := e.storeErr(resolved...)
	switch {
	case errors.Is(err, errIntakeFull):
		e.m.webhookAlerts.WithLabelValues("rejected").Add(float64(len(ents)))
		level.Warn(e.logger).Log("msg", "webhook intake journal full; asking Alertmanager to retry", "alerts", len(ents), "capacity", w.capacity)
		rw.Header().Set("Retry-After", "10")
		http.Error(rw, "remediation queue full (the intake journal), retry later", http.StatusTooManyRequests)
		return
	case err != nil:
		e.m.webhookAlerts.WithLabelValues("rejected").Add(float64(len(ents)))
		e.m.stateOK.Set(0)
		level.Error(e.logger).Log("msg", "cannot journal webhook alerts; answering 503 so that Alertmanager retries", "alerts", len(ents), "err", err)
		http.Error(rw, "cannot journal the alerts in the remediation state file; retry later", http.StatusServiceUnavailable)
		return
	case storeErr != nil:
		e.m.stateOK.Set(0)
		level.Error(e.logger).Log("msg", "cannot store resolved notifications; answering 503 so that Alertmanager retries", "resolved", len(resolved), "err", storeErr)
		http.Error(rw, "cannot store the resolved notifications in the remediation state file; retry later", http.StatusServiceUnavailable)
		return
	}
	if len(outs) > 0 {
		e.m.stateOK.Set(1)
	}
	queued := 0
	for _, o := range outs {
		e.m.webhookAlerts.WithLabelValues(o).Inc()
		if o == intakeQueued {
			queued++
		}
	}
	if queued > 0 {
		select {
		case w.nudge <- struct{}{}:
		default:
		}
	}
	rw.WriteHeader(http.StatusOK)
	_, _ = fmt.Fprintf(rw, "queued %d alert(s)", queued)
	if n := len(outs) - queued; n > 0 {
		_, _ = fmt.Fprintf(rw, "; %d already journaled or acted on", n)
	}
	if invalid > 0 {
		_, _ = fmt.Fprintf(rw, "; ignored %d without provider, account, id or startsAt", invalid)
	}
	_, _ = fmt.Fprintln(rw)
}

// resolvedRef is a resolved notification's occurrence: its pending
// entry ends, and one being handled is noted.
type resolvedRef struct {
	intakeRef
	at time.Time
}

// journal writes the batch to the intake journal and ends the resolved
// occurrences' entries, in one fsynced transaction. Its error is
// errIntakeFull, or the state file's (the webhook is stopping, or
// remediation is off: errNoState).
func (w *Webhook) journal(ents []intakeEntry, refs []resolvedRef) ([]string, error) {
	if len(ents) == 0 && len(refs) == 0 {
		return nil, nil
	}
	e := w.engine
	st := e.heldState()
	if st == nil {
		return nil, errNoState
	}
	defer st.unhold()
	e.mu.Lock()
	dry := e.cfg.DryRun
	e.mu.Unlock()
	ir := make([]intakeRef, len(refs))
	for i, r := range refs {
		ir[i] = r.intakeRef
	}
	outs, ended, err := st.intakeChunked(ents, ir, w.capacity, dry)
	if errors.Is(err, errIntakeFull) && len(ir) > 0 {
		// The resolutions are taken even when the firing alerts are not.
		_, more, rerr := st.intakeChunked(nil, ir, w.capacity, dry)
		if rerr != nil {
			return nil, rerr
		}
		ended = append(ended, more...)
	}
	// An accepted alert that resolved before it was handled is accounted
	// for as a suppression.
	for i := range ended {
		en := &ended[i]
		e.suppressed(en.request(nil), Decision{Reason: ReasonConditionCleared, Detail: "Alertmanager resolved the alert before it was handled", unlisted: !en.Listed})
		w.ended(en, "resolved")
	}
	return outs, err
}

// admitAlerts sorts a payload's alerts: the firing ones that ask a
// configured account for an action it may take on a server it has (or,
// before the account's first list, may have) become journal entries (none
// when firing is false: the webhook is off); a resolved one becomes a
// reference to its journal entry or the occurrence being handled, and is
// noted on the episode (or the request under way) of its server, whose
// change is returned to store; every other is
// counted in vps_remediation_webhook_alerts_total by outcome and leaves
// nothing else behind (no series, no memory, no history: a caller cannot
// grow the exporter). One line is logged for the alerts that lack labels.
func (w *Webhook) admitAlerts(alerts []amAlert, now time.Time, firing bool) ([]intakeEntry, int, []*loopWrite, []resolvedRef) {
	e := w.engine
	e.mu.Lock()
	configured, allowed := e.accounts, e.cfg.Webhook.AllowedActions
	e.mu.Unlock()
	snaps := map[string]*collector.Snapshot{}
	snapshot := func(account string) *collector.Snapshot {
		if s, ok := snaps[account]; ok {
			return s
		}
		var sp *collector.Snapshot
		if s, ok := e.deps.Snapshot(account); ok && s.Refreshed && !s.LastSuccess.IsZero() {
			sp = &s
		}
		snaps[account] = sp
		return sp
	}
	var ents []intakeEntry
	var resolved []*loopWrite
	var refs []resolvedRef
	invalid, firstInvalid := 0, ""
	for _, a := range alerts {
		if a.Status != "firing" {
			e.m.webhookAlerts.WithLabelValues("resolved").Inc()
			// The verdict of an alert-driven action: kept only for an
			// alert a journal entry, a request under way or a server's
			// episode waits for.
			if prov, acct, id := a.Labels["provider"], a.Labels["account"], a.Labels["id"]; id != "" {
				at := a.EndsAt
				if at.IsZero() || at.After(now) {
					at = now
				}
				refs = append(refs, resolvedRef{intakeRef{intakeKey(serverKey(prov, acct, id), alertFingerprint(a)), alertKey(a)}, at})
				if lw := e.alertResolved(prov, acct, id, alertFingerprint(a), a.StartsAt, at); lw != nil {
					resolved = append(resolved, lw)
				}
			}
			continue
		}
		if !a.EndsAt.IsZero() && a.EndsAt.Before(now) {
			// A firing notification whose endsAt has passed: a late
			// resend, or an alert that resolved since. It starts nothing
			// and, as it says neither, is no verdict either.
			e.m.webhookAlerts.WithLabelValues("resolved").Inc()
			continue
		}
		action := a.Labels["remediation"]
		if action == "" {
			e.m.webhookAlerts.WithLabelValues("no_remediation").Inc()
			continue
		}
		if !firing {
			e.m.webhookAlerts.WithLabelValues("not_allowed").Inc()
			continue
		}
		prov, acct, id := a.Labels["provider"], a.Labels["account"], a.Labels["id"]
		if prov == "" || acct == "" || id == "" || a.StartsAt.IsZero() {
			// One bad alert (a rule that drops labels) must not hold back
			// the others Alertmanager grouped with it: skip it, loudly.
			if invalid == 0 {
				firstInvalid = a.Labels["alertname"]
			}
			invalid++
			e.m.webhookAlerts.WithLabelValues("invalid").Inc()
			continue
		}
		if typ, ok := configured[acct]; !ok || typ != prov {
			e.m.webhookAlerts.WithLabelValues("unknown_account").Inc()
			continue
		}
		if !slices.Contains(allowed, action) || !config.Supports(prov, action) {
			e.m.webhookAlerts.WithLabelValues("not_allowed").Inc()
			continue
		}
		// Before the account's first successful list nothing says which
		// ids are real: journaled unlisted (at most maxUnlisted per
		// account), held until the list says. A server the last list
		// does not have: counted only.
		snap := snapshot(acct)
		if snap != nil && !hasServer(snap.Servers, id) {
			e.m.webhookAlerts.WithLabelValues("unknown_server").Inc()
			continue
		}
		// The alertname goes to the audit record and the episode; the
		// action counts under RuleAlertmanager.
		ents = append(ents, intakeEntry{Provider: prov, Account: acct, ID: id, Action: action, Alertname: alertName(a),
			Fingerprint: alertFingerprint(a), StartsAt: a.StartsAt, Accepted: now, Listed: snap != nil})
	}
	if invalid > 0 {
		level.Warn(e.logger).Log("msg", "webhook alerts ignored: a remediation label needs provider, account, id labels and startsAt",
			"alerts", invalid, "first_alertname", firstInvalid)
	}
	return ents, invalid, resolved, refs
}

// alertEpisodesLocked reports whether a configured account's server has
// an active alert-driven episode (open, or exhausted): its verdict or its
// release waits for Alertmanager's resolved notifications.
func (e *Engine) alertEpisodesLocked() bool {
	for _, t := range e.tracks {
		if ep := t.Episode; ep != nil && ep.Source == "alert" && e.accounts[ep.Account] == ep.Provider {
			return true
		}
	}
	return len(e.pendingMarks) > 0
}

// hasServer reports whether the servers (ordered by id as the store
// orders them, providers.IDLess) hold id.
func hasServer(list []providers.Server, id string) bool {
	_, ok := serverIndex(list, id)
	return ok
}

// serverIndex finds id in servers ordered as the store orders them.
func serverIndex(list []providers.Server, id string) (int, bool) {
	i := sort.Search(len(list), func(i int) bool { return !providers.IDLess(list[i].ID, id) })
	return i, i < len(list) && list[i].ID == id
}

// alertName is the alert's name as kept in the audit record, bounded.
func alertName(a amAlert) string {
	n := a.Labels["alertname"]
	if len(n) > 200 {
		n = n[:200]
	}
	return n
}

// alertKey identifies one occurrence of one alert: its fingerprint (or its
// labels) and when it started firing.
func alertKey(a amAlert) string {
	return alertFingerprint(a) + "@" + a.StartsAt.UTC().Format(time.RFC3339Nano)
}

// alertFingerprint identifies one alert across its occurrences:
// Alertmanager's fingerprint, or a hash of its labels.
func alertFingerprint(a amAlert) string {
	fp := a.Fingerprint
	if fp == "" {
		names := make([]string, 0, len(a.Labels))
		for k := range a.Labels {
			names = append(names, k)
		}
		sort.Strings(names)
		h := sha256.New()
		for _, k := range names {
			fmt.Fprintf(h, "%s=%s\x00", k, a.Labels[k])
		}
		fp = hex.EncodeToString(h.Sum(nil))[:16]
	}
	if len(fp) > 64 {
		fp = fp[:64] // a caller's string, kept in an episode
	}
	return fp
}
