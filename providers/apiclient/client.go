// Package apiclient is the HTTP transport shared by the provider clients:
// token-bucket rate limit, per-attempt timeout, retries with back-off that
// honour Retry-After, a cap on response size, request observation for
// metrics, and errors that name the account and endpoint but never a secret.
package apiclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// DefaultMaxBodyBytes caps one response body unless Config says otherwise.
const DefaultMaxBodyBytes = 32 << 20

// ObserveFunc is called once per HTTP attempt with a low-cardinality endpoint
// name, the status code (or "error" when no response came) and the duration.
type ObserveFunc func(endpoint, code string, d time.Duration)

// Config configures a Client.
type Config struct {
	Provider string // vpnbingo, vpsorg, e2e: used in errors
	Account  string // account name: used in errors
	BaseURL  *url.URL
	// HTTPClient sends the requests; nil means a client with no timeout of
	// its own (Timeout below bounds each attempt).
	HTTPClient *http.Client
	// Timeout bounds one attempt; 0 means 10s.
	Timeout time.Duration
	// RateLimit is requests per second to this account; 0 means unlimited.
	// A 429 slows it down (and pauses the account for Retry-After) either
	// way; it recovers gradually.
	RateLimit float64
	// ThrottleRecovery is how long a rate cut by a 429 takes to recover
	// (0 means 30s).
	ThrottleRecovery time.Duration
	// DetailBudget, when in (0, 1], caps background requests at this
	// share of RateLimit; otherwise they use what the foreground leaves.
	DetailBudget float64
	// MaxBodyBytes caps a response body; 0 means DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// MaxRetries is how often a failed attempt is tried again; negative
	// means none, 0 means 3.
	MaxRetries int
	// BackoffBase is the first retry's delay; 0 means 250ms.
	BackoffBase time.Duration
	// Header is sent with every request (Authorization).
	Header http.Header
	// Query is added to every request URL (E2E's apikey, project_id).
	Query url.Values
	// Secrets are strings that must never appear in an error.
	Secrets []string
	// Observe, when set, is told of every attempt.
	Observe ObserveFunc
}

// Client sends requests to one account's API.
type Client struct {
	cfg      Config
	throttle *throttle
	http     *http.Client
	redact   *strings.Replacer
}

// New returns a Client for cfg.
func New(cfg Config) *Client {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	switch {
	case cfg.MaxRetries == 0:
		cfg.MaxRetries = 3
	case cfg.MaxRetries < 0:
		cfg.MaxRetries = 0
	}
	if cfg.BackoffBase <= 0 {
		cfg.BackoffBase = 250 * time.Millisecond
	}
	c := &Client{cfg: cfg, http: cfg.HTTPClient}
	if c.http == nil {
		// Keep enough idle connections for concurrent detail requests:
		// the default of 2 per host would re-dial most of them.
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 64
		c.http = &http.Client{Transport: t}
	}
	c.throttle = newThrottle(cfg.RateLimit, cfg.DetailBudget, cfg.ThrottleRecovery)
	var pairs []string
	for _, s := range cfg.Secrets {
		if s == "" {
			continue
		}
		pairs = append(pairs, s, "<redacted>", url.QueryEscape(s), "<redacted>")
	}
	c.redact = strings.NewReplacer(pairs...)
	return c
}

// Request describes one API call.
type Request struct {
	Method string
	// Path is appended to the base URL's path; or
	Path string
	// URL, when set, is used instead of Path: a paging link given by the
	// API. It must be on the base URL's scheme and host.
	URL string
	// Query is added to the URL.
	Query url.Values
	// Body is sent as JSON when not nil.
	Body any
	// Endpoint is the low-cardinality name used in metrics.
	Endpoint string
	// Idempotent requests are retried on 5xx and transport errors; others
	// only on 429, which means the request was not carried out.
	Idempotent bool
	// Background requests (per-server detail reads) take only the rate
	// the foreground leaves and are not retried: the caller reads the
	// server again on its next turn.
	Background bool
}

func (c *Client) pathOf(req Request) string {
	if req.URL != "" {
		if u, err := url.Parse(req.URL); err == nil {
			return u.Path
		}
		return "<paging link>"
	}
	return c.cfg.BaseURL.Path + req.Path
}

func (c *Client) buildURL(req Request) (*url.URL, error) {
	var u *url.URL
	if req.URL != "" {
		parsed, err := url.Parse(req.URL)
		if err != nil {
			return nil, fmt.Errorf("paging link does not parse")
		}
		if !parsed.IsAbs() {
			parsed = c.cfg.BaseURL.ResolveReference(parsed)
		}
		if parsed.Scheme != c.cfg.BaseURL.Scheme || parsed.Host != c.cfg.BaseURL.Host {
			return nil, fmt.Errorf("paging link points to another host (%s://%s), refusing to send credentials there", parsed.Scheme, parsed.Host)
		}
		u = parsed
	} else {
		u = new(url.URL)
		*u = *c.cfg.BaseURL
		u.Path = strings.TrimSuffix(u.Path, "/") + req.Path
		u.RawPath = ""
	}
	q := u.Query()
	for k, vs := range c.cfg.Query {
		q[k] = vs
	}
	for k, vs := range req.Query {
		q[k] = vs
	}
	u.RawQuery = q.Encode()
	return u, nil
}

// Do sends req, retrying as its kind allows, and returns the status and body
// of the final response. A non-2xx final response is an *Error carrying the
// status and the API's own message.
func (c *Client) Do(ctx context.Context, req Request) (int, []byte, error) {
	u, err := c.buildURL(req)
	if err != nil {
		return 0, nil, c.NotSentf(req, "%v", err)
	}
	var payload []byte
	if req.Body != nil {
		payload, err = json.Marshal(req.Body)
		if err != nil {
			return 0, nil, c.NotSentf(req, "encode request body: %v", err)
		}
	}
	var lastErr error
	for attempt := 0; ; attempt++ {
		status, body, retryAfter, err := c.attempt(ctx, req, u, payload)
		if err == nil {
			return status, body, nil
		}
		lastErr = err
		if req.Background || attempt >= c.cfg.MaxRetries || !c.retryable(req, status, err) || ctx.Err() != nil {
			return status, body, lastErr
		}
		wait := c.backoff(attempt)
		if retryAfter > 0 {
			wait = retryAfter
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			// Waiting would overrun the caller's deadline: give up now.
			return status, body, lastErr
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return status, body, lastErr
		case <-t.C:
		}
	}
}

func (c *Client) retryable(req Request, status int, err error) bool {
	var ae *Error
	if errors.As(err, &ae) && ae.local {
		// The client itself said no: the account's budget or a pause
		// before the deadline, a link, an encoding; trying again
		// cannot help.
		return false
	}
	if status == http.StatusUnauthorized || status == http.StatusForbidden {
		// The same key is refused again.
		return false
	}
	if status == http.StatusTooManyRequests {
		return true
	}
	if !req.Idempotent {
		return false
	}
	if status >= 500 {
		return true
	}
	// No usable answer: a transport error, a timeout of this attempt, a
	// body cut short (not one too large: it would be again).
	return DeliveryOf(err) != Refused && !errors.Is(err, errBodyTooLarge)
}

func (c *Client) backoff(attempt int) time.Duration {
	d := c.cfg.BackoffBase << attempt
	if d > 10*time.Second {
		d = 10 * time.Second
	}
	// Full jitter in [d/2, d).
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

var errBodyTooLarge = errors.New("response body too large")

func (c *Client) attempt(ctx context.Context, req Request, u *url.URL, payload []byte) (status int, body []byte, retryAfter time.Duration, err error) {
	fail := func(d Delivery, status int, msg string, cause error) *Error {
		return &Error{
			Provider: c.cfg.Provider, Account: c.cfg.Account,
			Method: req.Method, Path: u.Path, Status: status,
			Msg: c.Redact(msg), Err: cause, Delivery: d,
		}
	}
	if err := c.throttle.wait(ctx, req.Background); err != nil {
		e := fail(NotSent, 0, "rate limit wait: "+err.Error(), ctx.Err())
		e.local = true
		return 0, nil, 0, e
	}
	actx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	// connected is set once a connection to the provider (or the proxy)
	// exists: from then on the request may have left.
	var connected atomic.Bool
	actx = httptrace.WithClientTrace(actx, &httptrace.ClientTrace{
		GotConn: func(httptrace.GotConnInfo) { connected.Store(true) },
	})
	var rdr io.Reader
	if payload != nil {
		rdr = bytes.NewReader(payload)
	}
	hreq, err := http.NewRequestWithContext(actx, req.Method, u.String(), rdr)
	if err != nil {
		e := fail(NotSent, 0, "build request: "+c.causeText(err), nil)
		e.local = true
		return 0, nil, 0, e
	}
	for k, vs := range c.cfg.Header {
		hreq.Header[k] = vs
	}
	// The providers' documented requests carry this on every call.
	hreq.Header.Set("Accept", "application/json")
	hreq.Header.Set("Content-Type", "application/json")
	start := time.Now()
	resp, err := c.http.Do(hreq)
	if err != nil {
		c.observe(req.Endpoint, "error", time.Since(start))
		cause := error(&redactedError{msg: c.causeText(err), cause: errors.Unwrap(err)})
		d := Unanswered
		if !connected.Load() && dialFailed(err) {
			d = NotSent
		}
		return 0, nil, 0, fail(d, 0, cause.Error(), cause)
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(io.LimitReader(resp.Body, c.cfg.MaxBodyBytes+1))
	c.observe(req.Endpoint, strconv.Itoa(resp.StatusCode), time.Since(start))
	// From here on something answered. A 4xx (or another non-2xx below
	// 500) is the provider's no, whatever became of the body. A 5xx is
	// no answer: the provider, or a gateway in front of it, failed, and
	// the request may have been carried out (a proxy's 502 after the
	// reboot happened). A 2xx without a whole body is no usable answer.
	answered := Unanswered
	if (resp.StatusCode < 200 || resp.StatusCode > 299) && resp.StatusCode < 500 {
		answered = Refused
	}
	if err != nil {
		cause := &redactedError{msg: c.causeText(err), cause: err}
		return resp.StatusCode, nil, 0, fail(answered, resp.StatusCode, "read response: "+cause.Error(), cause)
	}
	if int64(len(body)) > c.cfg.MaxBodyBytes {
		return resp.StatusCode, nil, 0, fail(answered, resp.StatusCode, fmt.Sprintf("response exceeds %d bytes", c.cfg.MaxBodyBytes), errBodyTooLarge)
	}
	if resp.StatusCode == http.StatusTooManyRequests {
		wait := throttleWait(resp.Header.Get("Retry-After"), body)
		c.throttle.throttled(wait)
		return resp.StatusCode, body, wait, fail(Refused, resp.StatusCode, APIMessage(body), nil)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, body, parseRetryAfter(resp.Header.Get("Retry-After")),
			fail(answered, resp.StatusCode, APIMessage(body), nil)
	}
	return resp.StatusCode, body, 0, nil
}

// dialFailed reports whether err is a failure to open the connection (a
// refused or unreachable dial, a name that does not resolve, a proxy that
// does not answer): the request cannot have left.
func dialFailed(err error) bool {
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return true
	}
	var op *net.OpError
	return errors.As(err, &op) && (op.Op == "dial" || op.Op == "proxyconnect")
}

// causeText is the text of a transport error without the URL that
// *url.Error prints (E2E puts its API key there), then redacted.
func (c *Client) causeText(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "timeout: " + c.Redact(err.Error())
	}
	return c.Redact(err.Error())
}

func (c *Client) observe(endpoint, code string, d time.Duration) {
	if c.cfg.Observe != nil {
		c.cfg.Observe(endpoint, code, d)
	}
}

// maxRetryAfter caps how long a 429 or a 5xx may ask an account to wait.
const maxRetryAfter = 5 * time.Minute

// parseRetryAfter reads a Retry-After header in seconds or as an HTTP date.
// It caps the wait at maxRetryAfter; what is neither (a negative number,
// NaN, Inf, junk) is 0.
func parseRetryAfter(v string) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if d, ok := seconds(v); ok {
		return d
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(0, min(time.Until(t), maxRetryAfter))
	}
	return 0
}

// decimalSeconds is a number of seconds as an API writes one: digits, a
// fraction, an exponent; no sign, no NaN or Inf, no hex, no underscores.
var decimalSeconds = regexp.MustCompile(`^[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?$`)

// seconds reads a wait in seconds, capped at maxRetryAfter before it
// becomes a time.Duration: 1e10 seconds (or more digits than a float
// holds) is the cap, not an overflow into a negative wait.
func seconds(v string) (time.Duration, bool) {
	if !decimalSeconds.MatchString(v) {
		return 0, false
	}
	secs, err := strconv.ParseFloat(v, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return 0, false
	}
	// Out of range is +Inf here (no sign): the cap.
	if math.IsNaN(secs) || secs >= maxRetryAfter.Seconds() {
		return maxRetryAfter, true
	}
	return time.Duration(secs * float64(time.Second)), true
}

// APIMessage extracts a short human message from an error body in any of
// the providers' shapes: {"detail"}, {"error":{"message"}}, {"message"},
// {"errors"}, or field errors {"field":["..."]}. A body that is not JSON
// (an HTML error page) is summarized, never echoed whole.
func APIMessage(body []byte) string {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return ""
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil {
		if bytes.HasPrefix(body, []byte("<")) {
			return "non-JSON response (HTML page)"
		}
		return "non-JSON response: " + truncate(printable(body), 120)
	}
	var s string
	if raw, ok := m["detail"]; ok && json.Unmarshal(raw, &s) == nil && s != "" {
		return truncate(s, 300)
	}
	if raw, ok := m["error"]; ok {
		var e struct {
			Code    any    `json:"code"`
			Message string `json:"message"`
		}
		if json.Unmarshal(raw, &e) == nil && e.Message != "" {
			if e.Code != nil {
				return truncate(fmt.Sprintf("%v: %s", e.Code, e.Message), 300)
			}
			return truncate(e.Message, 300)
		}
		if json.Unmarshal(raw, &s) == nil && s != "" {
			return truncate(s, 300)
		}
	}
	if raw, ok := m["errors"]; ok && len(raw) > 2 && string(raw) != "null" {
		return truncate(printable(raw), 300)
	}
	if raw, ok := m["message"]; ok && json.Unmarshal(raw, &s) == nil && s != "" {
		return truncate(s, 300)
	}
	// Field errors: {"country_code": ["Invalid country code: XX ..."]}.
	for k, raw := range m {
		var list []string
		if json.Unmarshal(raw, &list) == nil && len(list) > 0 {
			return truncate(k+": "+list[0], 300)
		}
	}
	return truncate(printable(body), 120)
}

func printable(b []byte) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, string(b))
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
