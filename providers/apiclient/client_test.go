package apiclient_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vps-exporter/vps_exporter/providers/apiclient"
)

func server(t *testing.T, h http.HandlerFunc) *url.URL {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	u, _ := url.Parse(s.URL)
	return u
}

func TestRetries(t *testing.T) {
	for _, tc := range []struct {
		name       string
		idempotent bool
		status     int
		retryAfter string
		wantCalls  int32
	}{
		{"get retried on 503", true, 503, "", 4},
		{"post not retried on 503", false, 503, "", 1},
		{"post retried on 429", false, 429, "0", 4},
		{"404 never retried", true, 404, "", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int32
			u := server(t, func(w http.ResponseWriter, r *http.Request) {
				calls.Add(1)
				if tc.retryAfter != "" {
					w.Header().Set("Retry-After", tc.retryAfter)
				}
				w.WriteHeader(tc.status)
			})
			c := apiclient.New(apiclient.Config{Provider: "p", Account: "a", BaseURL: u, BackoffBase: time.Millisecond})
			status, _, err := c.Do(context.Background(), apiclient.Request{Method: "GET", Path: "/x/", Idempotent: tc.idempotent})
			if err == nil || status != tc.status {
				t.Fatalf("status %d err %v", status, err)
			}
			if calls.Load() != tc.wantCalls {
				t.Errorf("%d calls, want %d", calls.Load(), tc.wantCalls)
			}
		})
	}
}

// The wait a 429 asks for is honoured, whether it comes as Retry-After
// or as Django REST framework's throttle message in the body.
func TestRetryAfterHonouredThenSuccess(t *testing.T) {
	for _, tc := range []struct{ name, header, body string }{
		{"Retry-After", "1", ""},
		{"DRF message", "", `{"detail":"Request was throttled. Expected available in 1 second."}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int32
			var gap time.Duration
			var first time.Time
			u := server(t, func(w http.ResponseWriter, r *http.Request) {
				if calls.Add(1) == 1 {
					first = time.Now()
					if tc.header != "" {
						w.Header().Set("Retry-After", tc.header)
					}
					w.WriteHeader(429)
					_, _ = w.Write([]byte(tc.body))
					return
				}
				gap = time.Since(first)
				_, _ = w.Write([]byte(`{}`))
			})
			c := apiclient.New(apiclient.Config{BaseURL: u, BackoffBase: time.Millisecond})
			if _, _, err := c.Do(context.Background(), apiclient.Request{Method: "GET", Path: "/", Idempotent: true}); err != nil {
				t.Fatal(err)
			}
			if gap < 900*time.Millisecond {
				t.Errorf("retried after %v; the API asked for 1 s", gap)
			}
		})
	}
}

func TestRetryAfterBeyondDeadlineGivesUp(t *testing.T) {
	var calls atomic.Int32
	u := server(t, func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Retry-After", "120")
		w.WriteHeader(429)
	})
	c := apiclient.New(apiclient.Config{BaseURL: u})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	_, _, err := c.Do(ctx, apiclient.Request{Method: "GET", Path: "/", Idempotent: true})
	if err == nil || calls.Load() != 1 || time.Since(start) > time.Second {
		t.Fatalf("err %v after %d calls in %v", err, calls.Load(), time.Since(start))
	}
}

func TestBodyCap(t *testing.T) {
	u := server(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(strings.Repeat("x", 5000)))
	})
	c := apiclient.New(apiclient.Config{Provider: "p", Account: "a", BaseURL: u, MaxBodyBytes: 1000})
	_, _, err := c.Do(context.Background(), apiclient.Request{Method: "GET", Path: "/", Idempotent: true})
	if err == nil || !strings.Contains(err.Error(), "response exceeds 1000 bytes") {
		t.Fatalf("err %v", err)
	}
}

func TestAttemptTimeout(t *testing.T) {
	u := server(t, func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	})
	c := apiclient.New(apiclient.Config{Provider: "p", Account: "a", BaseURL: u, Timeout: 50 * time.Millisecond, MaxRetries: -1})
	_, _, err := c.Do(context.Background(), apiclient.Request{Method: "GET", Path: "/", Idempotent: true})
	if err == nil || !strings.Contains(err.Error(), "timeout") {
		t.Fatalf("err %v", err)
	}
}

func TestSecretsRedacted(t *testing.T) {
	u := server(t, func(w http.ResponseWriter, r *http.Request) {
		// An API that echoes the key back in its error message.
		w.WriteHeader(400)
		_, _ = w.Write([]byte(`{"detail":"bad key ` + r.URL.Query().Get("apikey") + `"}`))
	})
	c := apiclient.New(apiclient.Config{Provider: "p", Account: "a", BaseURL: u, Query: url.Values{"apikey": {"key-SECRET-1"}}, Secrets: []string{"key-SECRET-1"}})
	_, _, err := c.Do(context.Background(), apiclient.Request{Method: "GET", Path: "/", Idempotent: true})
	if err == nil || strings.Contains(err.Error(), "key-SECRET-1") || !strings.Contains(err.Error(), "bad key <redacted>") {
		t.Fatalf("err %v", err)
	}
}

func TestAPIMessage(t *testing.T) {
	for body, want := range map[string]string{
		`{"detail":"Can not find the server"}`:                                "Can not find the server",
		`{"success":false,"error":{"code":"E1","message":"nope"}}`:            "E1: nope",
		`{"code":400,"errors":"Node is not running","message":"Bad Request"}`: `"Node is not running"`,
		`{"country_code":["Invalid country code: XX."]}`:                      "country_code: Invalid country code: XX.",
		`<html><body>502</body></html>`:                                       "non-JSON response (HTML page)",
		``:                                                                    "",
	} {
		if got := apiclient.APIMessage([]byte(body)); got != want {
			t.Errorf("APIMessage(%s) = %q, want %q", body, got, want)
		}
	}
}

func TestObserve(t *testing.T) {
	u := server(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(502) })
	var seen []string
	c := apiclient.New(apiclient.Config{BaseURL: u, MaxRetries: 1, BackoffBase: time.Millisecond, Observe: func(ep, code string, d time.Duration) {
		seen = append(seen, ep+" "+code)
	}})
	_, _, _ = c.Do(context.Background(), apiclient.Request{Method: "GET", Path: "/", Endpoint: "list", Idempotent: true})
	if strings.Join(seen, ",") != "list 502,list 502" {
		t.Errorf("observed %v", seen)
	}
}

func TestRateLimit(t *testing.T) {
	// 10 requests per second with a burst of 10: 25 requests cannot all be
	// sent before 1.5 s have passed (10 at once, then one every 100 ms).
	var calls atomic.Int32
	u := server(t, func(w http.ResponseWriter, r *http.Request) { calls.Add(1) })
	c := apiclient.New(apiclient.Config{BaseURL: u, RateLimit: 10})
	start := time.Now()
	for i := 0; i < 25; i++ {
		if _, _, err := c.Do(context.Background(), apiclient.Request{Method: "GET", Path: "/", Idempotent: true}); err != nil {
			t.Fatal(err)
		}
	}
	if took := time.Since(start); took < 1400*time.Millisecond {
		t.Errorf("25 requests at 10/s took %v: the token bucket did not hold them back", took)
	}
	// A caller's deadline ends the wait instead of queueing past it.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	for i := 0; i < 5; i++ {
		if _, _, err := c.Do(ctx, apiclient.Request{Method: "GET", Path: "/", Idempotent: true}); err != nil {
			return
		}
	}
	t.Error("rate-limited requests ran past the caller's deadline")
}
