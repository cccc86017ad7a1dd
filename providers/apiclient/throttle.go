package apiclient

import (
	"context"
	"fmt"
	"math"
	"regexp"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// throttle is an account's request budget: the configured token bucket,
// cut down after a 429 and recovered gradually over time, and an
// account-wide pause honouring Retry-After. Foreground requests (lists,
// the re-read before an action, actions) take a token whenever one is
// there; background requests (per-server detail reads) only when the
// bucket holds more than a reserve, so they use what the foreground leaves.
type throttle struct {
	lim *rate.Limiter
	// bg, when set, caps the background rate (detail_budget).
	bg *rate.Limiter
	// recovery is how long a cut rate takes to come back (configured
	// rate: linearly; unlimited: doubling every recovery/6).
	recovery time.Duration

	mu    sync.Mutex
	base  rate.Limit // configured rate; rate.Inf when none
	burst int
	cur   rate.Limit // in force now
	cutTo rate.Limit // the rate the last 429 cut to
	// recoverFrom is when the cut starts to recover: the end of the
	// pause that came with it (recovery during a pause would send the
	// account back at full rate the moment the pause ends); zero when
	// no cut is in force.
	recoverFrom time.Time
	pauseUntil  time.Time
	starts      [32]time.Time // the latest attempts, to estimate the rate in use
	next        int
}

func newThrottle(limit, budget float64, recovery time.Duration) *throttle {
	if recovery <= 0 {
		recovery = 30 * time.Second
	}
	t := &throttle{base: rate.Inf, cur: rate.Inf, burst: 1, recovery: recovery}
	if limit > 0 {
		t.base, t.cur = rate.Limit(limit), rate.Limit(limit)
		t.burst = max(1, int(limit))
	}
	t.lim = rate.NewLimiter(t.cur, t.burst)
	if budget > 0 && limit > 0 {
		t.bg = rate.NewLimiter(rate.Limit(limit*budget), max(1, int(limit*budget)))
	}
	return t
}

// Limit returns the rate in force (rate.Inf when unlimited).
func (t *throttle) Limit() rate.Limit {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.recoverLocked(time.Now())
	return t.cur
}

// Throttled reports whether a 429 pause or a rate cut is in force.
func (t *throttle) Throttled() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	t.recoverLocked(now)
	return now.Before(t.pauseUntil) || !t.recoverFrom.IsZero()
}

// recoverLocked brings a cut rate back towards the configured one as
// time passes without a 429 after the pause.
func (t *throttle) recoverLocked(now time.Time) {
	if t.recoverFrom.IsZero() {
		return
	}
	since := max(now.Sub(t.recoverFrom), 0)
	var l rate.Limit
	if t.base == rate.Inf {
		// Doubling back every recovery/6; lifted at twice the rate
		// that was throttled (four times the cut one).
		l = t.cutTo * rate.Limit(math.Exp2(6*since.Seconds()/t.recovery.Seconds()))
		if since >= t.recovery/3 {
			l = rate.Inf
		}
	} else {
		l = min(t.base, t.cutTo+(t.base-t.cutTo)*rate.Limit(since.Seconds()/t.recovery.Seconds()))
	}
	if l == t.base {
		t.recoverFrom = time.Time{}
	}
	if l != t.cur {
		t.setLocked(now, l)
	}
}

// wait blocks until the account may send one more request: after any
// pause, then a token (background: a token beyond the reserve).
func (t *throttle) wait(ctx context.Context, background bool) error {
	if err := t.waitPause(ctx); err != nil {
		return err
	}
	if !background {
		for {
			if err := t.lim.Wait(ctx); err != nil {
				return err
			}
			if !t.pausedNow() {
				t.record()
				return nil
			}
			// A 429 pause began while this request waited for its
			// token: it holds for this request too; then a token at
			// the rate in force after it (the one taken was reserved
			// at the old rate).
			if err := t.waitPause(ctx); err != nil {
				return err
			}
		}
	}
	if t.bg != nil {
		if err := t.bg.Wait(ctx); err != nil {
			return err
		}
	}
	for {
		if err := t.waitPause(ctx); err != nil {
			return err
		}
		now := time.Now()
		limit := t.lim.Limit()
		if limit == rate.Inf {
			t.record()
			return nil
		}
		// Keep one token (of a bucket of at least two) for the
		// foreground: a list page or a re-read never queues behind
		// the detail backlog.
		reserve := 1.0
		if t.lim.Burst() < 2 {
			reserve = 0
		}
		tokens := t.lim.TokensAt(now)
		if tokens >= 1+reserve {
			r := t.lim.ReserveN(now, 1)
			if r.OK() && r.DelayFrom(now) == 0 {
				t.record()
				return nil
			}
			r.CancelAt(now)
		}
		need := max(1+reserve-tokens, 0.1)
		// In float seconds first: at a tiny rate the wait would
		// overflow a time.Duration into a negative one.
		d := maxTokenWait
		if secs := need / float64(limit); secs < maxTokenWait.Seconds() {
			d = max(time.Duration(secs*float64(time.Second)), time.Millisecond)
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
			return fmt.Errorf("rate limit: no token for this account before the deadline")
		}
		if err := sleep(ctx, d); err != nil {
			return err
		}
	}
}

// maxTokenWait bounds one sleep of a background request waiting for a
// token (it looks again after it).
const maxTokenWait = time.Minute

// waitPause waits out an account-wide pause and applies any recovery. A
// pause that outlasts the caller's deadline fails at once: the caller
// gets its error now, not when the deadline has passed.
func (t *throttle) waitPause(ctx context.Context) error {
	for {
		t.mu.Lock()
		now := time.Now()
		t.recoverLocked(now)
		until := t.pauseUntil
		t.mu.Unlock()
		pause := until.Sub(now)
		if pause <= 0 {
			return nil
		}
		if dl, ok := ctx.Deadline(); ok && dl.Before(until) {
			return fmt.Errorf("the provider asked this account to wait until %s (429 Retry-After), after the deadline", until.UTC().Format(time.RFC3339))
		}
		if err := sleep(ctx, pause); err != nil {
			return err
		}
	}
}

// pausedNow reports whether an account-wide pause is in force.
func (t *throttle) pausedNow() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return time.Now().Before(t.pauseUntil)
}

func (t *throttle) record() {
	t.mu.Lock()
	t.starts[t.next%len(t.starts)] = time.Now()
	t.next++
	t.mu.Unlock()
}

// observedLocked estimates the request rate of the latest attempts.
func (t *throttle) observedLocked() rate.Limit {
	n := min(t.next, len(t.starts))
	if n < 2 {
		return 10 // nothing to go by: a modest rate to start from
	}
	newest := t.starts[(t.next-1)%len(t.starts)]
	oldest := t.starts[(t.next-n)%len(t.starts)]
	span := newest.Sub(oldest).Seconds()
	if span <= 0 {
		return rate.Limit(n)
	}
	return rate.Limit(float64(n-1) / span)
}

// throttled is told of a 429: the whole account pauses for retryAfter (a
// second when the API did not say) and the rate is halved, once per
// pause: the other requests that were in flight get their 429 too. The
// cut recovers from the end of the pause (a later 429 that extends the
// pause moves it).
func (t *throttle) throttled(retryAfter time.Duration) {
	if retryAfter <= 0 {
		retryAfter = time.Second
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	t.recoverLocked(now)
	paused := now.Before(t.pauseUntil)
	if until := now.Add(retryAfter); until.After(t.pauseUntil) {
		t.pauseUntil = until
	}
	if paused {
		if !t.recoverFrom.IsZero() {
			t.recoverFrom = t.pauseUntil
		}
		return
	}
	cur := t.cur
	if cur == rate.Inf {
		cur = t.observedLocked()
	}
	floor := rate.Limit(0.5)
	if t.base != rate.Inf {
		floor = t.base * minRateShare
	}
	t.cutTo, t.recoverFrom = max(cur/2, floor), t.pauseUntil
	t.setLocked(now, t.cutTo)
}

// minRateShare is how far 429s may push a configured rate down.
const minRateShare = 1.0 / 16

func (t *throttle) setLocked(now time.Time, l rate.Limit) {
	t.cur = l
	if l == rate.Inf {
		t.lim.SetLimitAt(now, rate.Inf)
		return
	}
	b := max(1, min(int(l), t.burst))
	if t.base == rate.Inf {
		b = max(1, int(l))
	}
	t.lim.SetBurstAt(now, b)
	t.lim.SetLimitAt(now, l)
}

// drfThrottle matches Django REST framework's throttle message, which some
// APIs send instead of (or besides) a Retry-After header.
var drfThrottle = regexp.MustCompile(`(?i)expected available in ([0-9]+(?:\.[0-9]+)?) seconds?`)

// throttleWait reads how long a 429 asks to wait: Retry-After, else the
// DRF message in the body.
func throttleWait(header string, body []byte) time.Duration {
	if d := parseRetryAfter(header); d > 0 {
		return d
	}
	if m := drfThrottle.FindSubmatch(body); m != nil {
		if d, ok := seconds(string(m[1])); ok {
			return d
		}
	}
	return 0
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
