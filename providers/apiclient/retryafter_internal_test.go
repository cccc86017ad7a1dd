package apiclient

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// How long a 429 asks to wait, from Retry-After (seconds or an HTTP date)
// or DRF's message: never negative, never more than five minutes, and a
// value too large for a time.Duration is the five minutes, not an
// overflow into a negative wait (which became a 1 s pause).
func TestRetryAfter(t *testing.T) {
	const capped = 5 * time.Minute
	soon := time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)
	for _, tc := range []struct {
		header, body string
		want         time.Duration
		approx       bool // an HTTP date: within a few seconds
	}{
		{header: "", want: 0},
		{header: "0", want: 0},
		{header: "5", want: 5 * time.Second},
		{header: " 5 ", want: 5 * time.Second},
		{header: "1.5", want: 1500 * time.Millisecond},
		{header: "300", want: capped},
		{header: "301", want: capped},
		// Huge: past what a time.Duration holds.
		{header: "1e10", want: capped},
		{header: "9223372037", want: capped},
		{header: "99999999999999999999", want: capped},
		{header: "1e400", want: capped},
		{header: strings.Repeat("9", 400), want: capped},
		// Negative, and what only looks like a number.
		{header: "-5", want: 0},
		{header: "-1e10", want: 0},
		{header: "NaN", want: 0},
		{header: "Inf", want: 0},
		{header: "+Inf", want: 0},
		{header: "-Inf", want: 0},
		{header: "Infinity", want: 0},
		{header: "0x1p40", want: 0},
		{header: "1_000", want: 0},
		{header: "soon", want: 0},
		// HTTP dates: past, near, far.
		{header: "Wed, 21 Oct 2015 07:28:00 GMT", want: 0},
		{header: soon, want: 90 * time.Second, approx: true},
		{header: "Fri, 31 Dec 9999 23:59:59 GMT", want: capped},
		// DRF's message, when Retry-After says nothing usable.
		{body: `{"detail":"Request was throttled. Expected available in 12 seconds."}`, want: 12 * time.Second},
		{body: `{"detail":"Request was throttled. Expected available in 99999999999999999999 seconds."}`, want: capped},
		{body: `{"detail":"Expected available in ` + strings.Repeat("9", 400) + ` seconds."}`, want: capped},
		{header: "1e10", body: `{"detail":"Expected available in 12 seconds."}`, want: capped},
		{header: "NaN", body: `{"detail":"Expected available in 12 seconds."}`, want: 12 * time.Second},
	} {
		got := throttleWait(tc.header, []byte(tc.body))
		ok := got == tc.want
		if tc.approx {
			ok = got > tc.want-5*time.Second && got <= tc.want
		}
		if !ok {
			t.Errorf("Retry-After %.40q, body %.60q: wait %v, want %v", tc.header, tc.body, got, tc.want)
		}
		if tc.body == "" {
			if got := parseRetryAfter(tc.header); got < 0 || got > capped || (!tc.approx && got != tc.want) {
				t.Errorf("parseRetryAfter(%.40q) = %v, want %v", tc.header, got, tc.want)
			}
		}
	}
}
