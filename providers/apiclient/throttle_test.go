package apiclient_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vps-exporter/vps_exporter/providers/apiclient"
)

func get(c *apiclient.Client, ctx context.Context, path string, background bool) error {
	_, _, err := c.Do(ctx, apiclient.Request{Method: "GET", Path: path, Idempotent: true, Background: background})
	return err
}

// A 429 pauses the whole account, not just the request that got it: no
// request of any kind is sent before Retry-After has passed.
func TestThrottlePausesWholeAccount(t *testing.T) {
	var mu sync.Mutex
	var throttledAt time.Time
	var early int
	u := server(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.URL.Path == "/first/" && throttledAt.IsZero() {
			throttledAt = time.Now()
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		if !throttledAt.IsZero() && time.Since(throttledAt) < 950*time.Millisecond {
			early++
		}
	})
	c := apiclient.New(apiclient.Config{BaseURL: u, BackoffBase: time.Millisecond})
	if err := get(c, context.Background(), "/first/", false); err != nil {
		t.Fatal(err)
	}
	// Retried after the pause; other requests sent now wait for it too.
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); _ = get(c, context.Background(), "/other/", i%2 == 0) }()
	}
	wg.Wait()
	if early != 0 {
		t.Errorf("%d requests were sent during the account's Retry-After pause", early)
	}
}

// After a 429 the account's rate is halved once per pause (the other
// in-flight requests' 429s do not cut it again), cut again by a later
// 429, never below a sixteenth, and recovers gradually over time; a
// background request is not retried.
func TestThrottleSlowsAndRecovers(t *testing.T) {
	var throttle atomic.Bool
	u := server(t, func(w http.ResponseWriter, r *http.Request) {
		if throttle.Load() {
			w.Header().Set("Retry-After", "0.05")
			w.WriteHeader(http.StatusTooManyRequests)
		}
	})
	c := apiclient.New(apiclient.Config{BaseURL: u, RateLimit: 100, ThrottleRecovery: 2 * time.Second})
	throttle.Store(true)
	if err := get(c, context.Background(), "/", true); err == nil {
		t.Fatal("want the 429 back: background requests are not retried")
	}
	if got, _ := c.RateLimit(); got < 49 || got > 52 {
		t.Fatalf("rate after one 429: %v, want about 50", got)
	}
	for i := 0; i < 10; i++ {
		_ = get(c, context.Background(), "/", true)
	}
	if got, _ := c.RateLimit(); got >= 25 {
		t.Fatalf("rate after eleven spaced 429s: %v, want it cut further", got)
	}
	throttle.Store(false)
	time.Sleep(100 * time.Millisecond)
	if got, _ := c.RateLimit(); got >= 100 {
		t.Fatalf("rate 100 ms after the last 429: %v; want a gradual recovery", got)
	}
	time.Sleep(2 * time.Second)
	if got, ok := c.RateLimit(); got != 100 || !ok {
		t.Fatalf("rate after the recovery period: %v, want the configured 100", got)
	}
}

// Without a configured rate, a 429 still slows the account down.
func TestThrottleUnlimitedSlowsDown(t *testing.T) {
	var n atomic.Int32
	u := server(t, func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 20 {
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusTooManyRequests)
		}
	})
	c := apiclient.New(apiclient.Config{BaseURL: u})
	for i := 0; i < 19; i++ {
		_ = get(c, context.Background(), "/", false)
	}
	if got, ok := c.RateLimit(); ok || c.Throttled() {
		t.Fatalf("rate before any 429: %v (ok %v, throttled %v), want unlimited", got, ok, c.Throttled())
	}
	_ = get(c, context.Background(), "/", true)
	if got, ok := c.RateLimit(); !ok || got > 1e6 || !c.Throttled() {
		t.Fatalf("rate after a 429: %v (ok %v, throttled %v), want a finite limit in force", got, ok, c.Throttled())
	}
}

// Background requests use only what the foreground leaves: with the
// bucket kept busy by background readers, a foreground request still
// goes out within about one token's time.
func TestBackgroundLeavesRoomForForeground(t *testing.T) {
	u := server(t, func(w http.ResponseWriter, r *http.Request) {})
	c := apiclient.New(apiclient.Config{BaseURL: u, RateLimit: 10})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var bg atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if get(c, ctx, "/bg/", true) == nil {
					bg.Add(1)
				}
			}
		}()
	}
	time.Sleep(1200 * time.Millisecond) // the initial burst is spent
	worst := time.Duration(0)
	for i := 0; i < 5; i++ {
		start := time.Now()
		if err := get(c, ctx, "/fg/", false); err != nil {
			t.Fatal(err)
		}
		worst = max(worst, time.Since(start))
		time.Sleep(150 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	// Without the reserve it would queue behind eight background
	// waiters: about 800 ms.
	if worst > 500*time.Millisecond {
		t.Errorf("a foreground request waited %v behind background reads (bucket 10/s)", worst)
	}
	if bg.Load() < 10 {
		t.Errorf("background reads got %d requests in 3 s at 10/s: they should use what is left", bg.Load())
	}
}

// A pause longer than the caller's deadline fails at once instead of
// sleeping until the deadline (found by FuzzResponses: a 429 body with
// DRF's "Expected available in 86400 seconds").
func TestPauseBeyondDeadlineFailsFast(t *testing.T) {
	var n atomic.Int32
	u := server(t, func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = w.Write([]byte(`{"detail":"Request was throttled. Expected available in 86400 seconds."}`))
		}
	})
	c := apiclient.New(apiclient.Config{BaseURL: u, RateLimit: 5})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = get(c, ctx, "/", false)
	for _, bg := range []bool{false, true} {
		start := time.Now()
		if err := get(c, ctx, "/", bg); err == nil || time.Since(start) > 100*time.Millisecond {
			t.Errorf("background %v: %v after %v; want an error at once", bg, err, time.Since(start))
		}
	}
	if ctx.Err() != nil {
		t.Error("a request waited out the caller's deadline")
	}
}

// The rate cut by a 429 starts to recover only when the Retry-After pause
// ends: measured from the cut, a pause as long as the recovery period
// would end at full rate, and the provider would throttle again at once.
func TestThrottleRecoversAfterThePause(t *testing.T) {
	var n atomic.Int32
	u := server(t, func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			w.Header().Set("Retry-After", "2")
			w.WriteHeader(http.StatusTooManyRequests)
		}
	})
	c := apiclient.New(apiclient.Config{BaseURL: u, RateLimit: 100, ThrottleRecovery: time.Second, MaxRetries: -1})
	cut := time.Now()
	if err := get(c, context.Background(), "/", false); err == nil {
		t.Fatal("want the 429")
	}
	if got, ok := c.RateLimit(); !ok || got < 49 || got > 51 || !c.Throttled() {
		t.Fatalf("right after the 429: rate %v ok %v throttled %v, want 50 and throttled", got, ok, c.Throttled())
	}
	// 1.5 s after the cut: past the recovery period, still in the 2 s pause.
	time.Sleep(time.Until(cut.Add(1500 * time.Millisecond)))
	if got, _ := c.RateLimit(); got > 51 || !c.Throttled() {
		t.Errorf("during the pause, 1.5 s after the cut: rate %v throttled %v; want still 50 and throttled (recovery starts when the pause ends)", got, c.Throttled())
	}
	// Half way through the recovery after the pause: between the two.
	time.Sleep(time.Until(cut.Add(2500 * time.Millisecond)))
	if got, _ := c.RateLimit(); got <= 51 || got >= 100 || !c.Throttled() {
		t.Errorf("0.5 s after the pause: rate %v throttled %v; want a partial recovery", got, c.Throttled())
	}
	time.Sleep(time.Until(cut.Add(3300 * time.Millisecond)))
	if got, ok := c.RateLimit(); !ok || got != 100 || c.Throttled() {
		t.Errorf("after pause and recovery: rate %v ok %v throttled %v; want the configured 100, not throttled", got, ok, c.Throttled())
	}
}

// A request already waiting for a token when a 429 pause begins waits
// out the pause too: the pause is for the whole account.
func TestThrottlePauseHoldsTokenWaiters(t *testing.T) {
	var mu sync.Mutex
	var throttledAt, waiterAt time.Time
	arrived := make(chan struct{})
	u := server(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/first/":
			close(arrived)
			// Answer once the waiter is queued for its token.
			time.Sleep(300 * time.Millisecond)
			mu.Lock()
			throttledAt = time.Now()
			mu.Unlock()
			w.Header().Set("Retry-After", "2")
			w.WriteHeader(http.StatusTooManyRequests)
		case "/waiter/":
			mu.Lock()
			waiterAt = time.Now()
			mu.Unlock()
		}
	})
	// One token a second, a bucket of one: /first/ takes it, the waiter
	// gets the next one about 1 s later, inside the 2 s pause.
	c := apiclient.New(apiclient.Config{BaseURL: u, RateLimit: 1, MaxRetries: -1, ThrottleRecovery: time.Second})
	done := make(chan error, 1)
	go func() { done <- get(c, context.Background(), "/first/", false) }()
	<-arrived
	if err := get(c, context.Background(), "/waiter/", false); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err == nil {
		t.Fatal("want the 429 of /first/")
	}
	mu.Lock()
	defer mu.Unlock()
	if gap := waiterAt.Sub(throttledAt); gap < 1900*time.Millisecond {
		t.Errorf("the waiting request went out %v after the 429; the pause was 2 s", gap)
	}
}

// A Retry-After too large for a time.Duration pauses the account for the
// five-minute cap: the call gives up at once (the pause outlasts its
// deadline) and nothing more is sent, where an overflow made it a 1 s
// pause and the request went out again.
func TestHugeRetryAfterPausesAtTheCap(t *testing.T) {
	for _, ra := range []string{"1e10", "99999999999999999999", "1e400"} {
		var calls atomic.Int32
		u := server(t, func(w http.ResponseWriter, r *http.Request) {
			if calls.Add(1) == 1 {
				w.Header().Set("Retry-After", ra)
				w.WriteHeader(http.StatusTooManyRequests)
				return
			}
			_, _ = w.Write([]byte(`{}`))
		})
		c := apiclient.New(apiclient.Config{Provider: "p", Account: "a", BaseURL: u, BackoffBase: time.Millisecond})
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		start := time.Now()
		err := get(c, ctx, "/x", false)
		cancel()
		if err == nil || calls.Load() != 1 {
			t.Errorf("Retry-After %s: err %v after %d requests in %v; want the 429 and no other request", ra, err, calls.Load(), time.Since(start))
		}
		if !c.Throttled() {
			t.Errorf("Retry-After %s: not throttled", ra)
		}
		ctx, cancel = context.WithTimeout(context.Background(), 2*time.Second)
		if err := get(c, ctx, "/x", false); err == nil || calls.Load() != 1 {
			t.Errorf("Retry-After %s: a later request went out during the pause (err %v, %d requests)", ra, err, calls.Load())
		}
		cancel()
	}
}

// A rate so low that the wait for the next token overflows a
// time.Duration: a background read says at once that no token comes
// before its deadline, instead of polling every millisecond until the
// deadline passes.
func TestTinyRateWaitDoesNotOverflow(t *testing.T) {
	u := server(t, func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte(`{}`)) })
	c := apiclient.New(apiclient.Config{Provider: "p", Account: "a", BaseURL: u, RateLimit: 1e-12})
	if err := get(c, context.Background(), "/x", true); err != nil {
		t.Fatalf("the bucket's one token: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	start := time.Now()
	err := get(c, ctx, "/x", true)
	if err == nil || !strings.Contains(err.Error(), "no token for this account before the deadline") {
		t.Fatalf("err %v; want the wait refused", err)
	}
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Errorf("refused after %v, want at once (not at the deadline)", d)
	}
}
