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

// job is one firing alert waiting for the gate.
type job struct {
	req Request // req.occ: the webhook's note of this occurrence
	key string  // fingerprint + startsAt: one occurrence of one alert
}

// occurrence is the webhook's note of one queued or handled firing
// alert's resolution: a resolved notification that comes meanwhile is
// kept here (before its request has a place in the gate, nothing else
// could hold it).
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

// Webhook receives Alertmanager notifications and feeds firing alerts that
// carry provider, account, id and remediation labels to the engine, in the
// background, through a bounded queue.
type Webhook struct {
	engine *Engine
	queue  chan job
	wg     sync.WaitGroup
	// enq makes a batch's room check and its enqueueing one step, so a
	// batch is queued whole or refused whole; closed (under enq) is set
	// when the workers stop: nothing is queued after it.
	enq    sync.Mutex
	closed bool
	// handling holds the occurrences (job keys) being processed, under
	// mu: a copy of one (an HA Alertmanager pair sends two) is a
	// duplicate while the first is under way. Bounded by the workers.
	mu       sync.Mutex
	handling map[string]bool
	// occs holds the occurrences of the jobs queued or being handled,
	// under mu, by key: a resolved notification of one is noted on it.
	// Bounded by the queue and the workers.
	occs map[string][]*occurrence
	// beforeMark, set by tests before the first alert, runs after an
	// alert's action and before its occurrence is marked handled.
	beforeMark func()
}

// NewWebhook starts workers that drain a queue of the given size.
func NewWebhook(ctx context.Context, e *Engine, queueSize, workers int) *Webhook {
	w := &Webhook{engine: e, queue: make(chan job, queueSize), handling: map[string]bool{}, occs: map[string][]*occurrence{}}
	for i := 0; i < workers; i++ {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			for {
				select {
				case <-ctx.Done():
					w.stop()
					w.drain()
					return
				case j := <-w.queue:
					w.process(ctx, j)
				}
			}
		}()
	}
	return w
}

// stop makes the webhook refuse new alerts (503): the queue is not
// filled again once drained.
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

// drain records every alert still queued at shutdown as suppressed: it was
// accepted, so it is accounted for, not dropped silently. Each is logged
// at debug, the count in one line.
func (w *Webhook) drain() {
	e, n := w.engine, 0
	defer func() {
		if n > 0 {
			level.Info(e.logger).Log("msg", "alerts still queued at shutdown suppressed", "alerts", n, "reason", ReasonShutdown)
		}
	}()
	for {
		select {
		case j := <-w.queue:
			w.forget(j)
			d := Decision{Reason: ReasonShutdown, Detail: "the exporter stopped before this alert was handled"}
			e.count(j.req, d)
			level.Debug(e.logger).Log("msg", "action suppressed", "provider", j.req.Provider, "account", j.req.Account, "id", j.req.ID, "action", j.req.Action, "source", j.req.Source, "rule", j.req.Rule, "reason", d.Reason, "detail", d.Detail)
			n++
		default:
			return
		}
	}
}

// Wait returns when the workers have stopped (their context ended).
func (w *Webhook) Wait() { w.wg.Wait() }

// Pending is how many alerts wait in the queue.
func (w *Webhook) Pending() int { return len(w.queue) }

// process takes one alert through the gate. Only an action actually sent
// (or, in dry-run, recorded, in its own namespace) uses up the alert
// occurrence: after a transient suppression (stale data, budget, cooldown
// of another request...) Alertmanager's resend is evaluated again. A copy
// of an occurrence being processed is a duplicate: checking whether it
// was handled and marking it are one step.
func (w *Webhook) process(ctx context.Context, j job) {
	e := w.engine
	defer w.forget(j)
	if !j.req.occ.resolvedAt().IsZero() {
		// Alertmanager resolved it while it was queued: nothing to do.
		e.suppressed(j.req, Decision{Reason: ReasonConditionCleared, Detail: "Alertmanager resolved the alert before it was handled"})
		return
	}
	if !w.reserve(j.key) {
		e.suppressed(j.req, Decision{Reason: ReasonDuplicate, Detail: "the same alert occurrence is being handled (a copy from another Alertmanager)"})
		return
	}
	defer w.unreserve(j.key)
	e.mu.Lock()
	st, dry := e.state, e.cfg.DryRun
	if st != nil {
		st.hold() // from the check to the mark, on one file
		defer st.unhold()
	}
	e.mu.Unlock()
	if st == nil {
		e.suppressed(j.req, Decision{Reason: ReasonNotAllowed, Detail: "remediation is disabled"})
		return
	}
	seen, err := st.Seen(seenKey(dry, j.key))
	if err != nil {
		e.suppressed(j.req, Decision{Reason: ReasonStateError, Detail: err.Error()})
		return
	}
	if seen {
		e.suppressed(j.req, Decision{Reason: ReasonDuplicate, Detail: "this alert occurrence was already acted on"})
		return
	}
	e.alertFiring(j.req)
	d := e.Submit(ctx, j.req)
	if !d.Acted {
		return
	}
	if w.beforeMark != nil {
		w.beforeMark()
	}
	if err := st.MarkSeen(seenKey(d.Result == ResultDryRun, j.key), e.now(), e.rootOf(j.req.Provider, j.req.Account, j.req.ID)); err != nil {
		level.Error(e.logger).Log("msg", "cannot mark the alert occurrence handled; its cooldown still holds a resend back", "err", err)
	}
}

// noteJobs notes the occurrences of jobs about to be queued (the caller
// holds w.enq).
func (w *Webhook) noteJobs(jobs []job) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, j := range jobs {
		w.occs[j.key] = append(w.occs[j.key], j.req.occ)
	}
}

// forget drops a job's occurrence once it is handled.
func (w *Webhook) forget(j job) {
	w.mu.Lock()
	defer w.mu.Unlock()
	os := slices.DeleteFunc(w.occs[j.key], func(o *occurrence) bool { return o == j.req.occ })
	if len(os) == 0 {
		delete(w.occs, j.key)
	} else {
		w.occs[j.key] = os
	}
}

// resolved notes a resolved notification on the queued or handled jobs
// of its occurrence.
func (w *Webhook) resolved(key string, at time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, o := range w.occs[key] {
		o.resolved.CompareAndSwap(0, at.UnixNano())
	}
}

// reserve marks an occurrence as being processed; false if it already is.
func (w *Webhook) reserve(key string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.handling[key] {
		return false
	}
	w.handling[key] = true
	return true
}

func (w *Webhook) unreserve(key string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.handling, key)
}

// seenKey is an alert occurrence's key in the live or the dry-run
// namespace.
func seenKey(dry bool, key string) string {
	if dry {
		return "dry|" + key
	}
	return key
}

// ServeHTTP implements http.Handler: 200 once the alerts are queued and
// the resolved notifications recorded (in one transaction; an alert
// asking for remediation without provider, account, id or startsAt is
// skipped and counted as invalid), 400 for a malformed payload, 429 when
// the queue cannot take them all, 503 when remediation is off, the
// exporter is stopping, or the webhook is off (Alertmanager retries, here
// or on a replacement). With the webhook off, resolved notifications are
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
	jobs, invalid, resolved := w.admitAlerts(p.Alerts, e.now(), firing)
	// All or nothing: a batch the queue cannot hold is refused, so that
	// Alertmanager retries it, rather than half taken. Workers only take
	// from the queue meanwhile, so room checked under enq stays room.
	w.enq.Lock()
	if w.closed {
		// The workers stopped while the batch was read: nobody would
		// handle it.
		w.enq.Unlock()
		e.store(resolved...)
		e.m.webhookAlerts.WithLabelValues("rejected").Add(float64(len(jobs)))
		http.Error(rw, "the exporter is stopping; retry later", http.StatusServiceUnavailable)
		return
	}
	if len(jobs) > cap(w.queue)-len(w.queue) {
		queued := len(w.queue)
		w.enq.Unlock()
		e.store(resolved...)
		e.m.webhookAlerts.WithLabelValues("rejected").Add(float64(len(jobs)))
		level.Warn(e.logger).Log("msg", "webhook queue full; asking Alertmanager to retry", "alerts", len(jobs), "queued", queued)
		rw.Header().Set("Retry-After", "10")
		http.Error(rw, "remediation queue full, retry later", http.StatusTooManyRequests)
		return
	}
	w.noteJobs(jobs)
	for _, j := range jobs {
		w.queue <- j
	}
	w.enq.Unlock()
	e.m.webhookAlerts.WithLabelValues("queued").Add(float64(len(jobs)))
	// The payload's resolutions, in one transaction, before the answer:
	// Alertmanager does not send them again.
	e.store(resolved...)
	rw.WriteHeader(http.StatusOK)
	_, _ = fmt.Fprintf(rw, "queued %d alert(s)", len(jobs))
	if invalid > 0 {
		_, _ = fmt.Fprintf(rw, "; ignored %d without provider, account, id or startsAt", invalid)
	}
	_, _ = fmt.Fprintln(rw)
}

// admitAlerts sorts a payload's alerts: the firing ones that ask a
// configured account for an action it may take on a server it has become
// jobs (none when firing is false: the webhook is off); a resolved one is
// noted on its queued jobs and on the episode (or the request under way)
// of its server, whose change is returned to store; every other is
// counted in vps_remediation_webhook_alerts_total by outcome and leaves
// nothing else behind (no series, no memory, no history: a caller cannot
// grow the exporter). One line is logged for the alerts that lack labels.
func (w *Webhook) admitAlerts(alerts []amAlert, now time.Time, firing bool) ([]job, int, []*loopWrite) {
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
	var jobs []job
	var resolved []*loopWrite
	invalid, firstInvalid := 0, ""
	for _, a := range alerts {
		if a.Status != "firing" {
			e.m.webhookAlerts.WithLabelValues("resolved").Inc()
			// The verdict of an alert-driven action: kept only for an
			// alert a queued job, a request under way or a server's
			// episode waits for.
			if prov, acct, id := a.Labels["provider"], a.Labels["account"], a.Labels["id"]; id != "" {
				at := a.EndsAt
				if at.IsZero() || at.After(now) {
					at = now
				}
				w.resolved(alertKey(a), at)
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
		// ids are real: counted only (Alertmanager resends it). A server
		// the last list does not have: counted only.
		snap := snapshot(acct)
		if snap == nil {
			e.m.webhookAlerts.WithLabelValues("not_ready").Inc()
			continue
		}
		if !hasServer(snap.Servers, id) {
			e.m.webhookAlerts.WithLabelValues("unknown_server").Inc()
			continue
		}
		jobs = append(jobs, job{
			// The alertname goes to the audit record and the episode;
			// the action counts under RuleAlertmanager.
			req: Request{Provider: prov, Account: acct, ID: id, Action: providers.Action(action), Source: "alert", Rule: alertName(a),
				alert: alertFingerprint(a), alertStart: a.StartsAt, occ: &occurrence{}},
			key: alertKey(a),
		})
	}
	if invalid > 0 {
		level.Warn(e.logger).Log("msg", "webhook alerts ignored: a remediation label needs provider, account, id labels and startsAt",
			"alerts", invalid, "first_alertname", firstInvalid)
	}
	return jobs, invalid, resolved
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

// rootOf is the lineage root key of a server.
func (e *Engine) rootOf(provider, account, id string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.rootLocked(serverKey(provider, account, id))
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
