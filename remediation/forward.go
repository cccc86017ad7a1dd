package remediation

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"
)

// Forwarding of the webhook and the controls from a standby to the leader
// (remediation.ha, docs/ha.md).

// ForwardedHeader marks a request a standby forwarded to the leader. A
// replica that receives one and does not lead answers 503 instead of
// forwarding it again: a request is forwarded at most once.
const ForwardedHeader = "X-Vps-Exporter-Forwarded"

// LeaderHeader is set on every answer a standby relays: the advertise URL
// of the leader that answered.
const LeaderHeader = "X-Vps-Exporter-Leader"

// Forwarding bounds.
const (
	// DefaultForwardTimeout bounds a forwarded request, from its start to
	// the end of the leader's answer.
	DefaultForwardTimeout = 15 * time.Second
	// MaxForwardBody bounds the body of a forwarded request (the webhook's
	// own bound: the controls' bodies are much smaller).
	MaxForwardBody = MaxWebhookBody
	// MaxForwardAnswer bounds the leader's answer a standby relays (the
	// history of up to 10000 actions): a longer one is cut and the
	// connection aborted, so the client sees an error, not a short body.
	MaxForwardAnswer = 64 << 20
	// forwardRetryAfter is the Retry-After, in seconds, of a 503 for no
	// leader: a failover takes about lease_ttl.
	forwardRetryAfter = 5
)

// forwardedRequestHeaders are the request headers a standby passes on;
// forwardedAnswerHeaders are the leader's answer's headers it relays.
var (
	forwardedRequestHeaders = []string{"Authorization", "Content-Type", "Accept", "User-Agent"}
	forwardedAnswerHeaders  = []string{"Content-Type", "Retry-After", "Allow", "Www-Authenticate", "Cache-Control", "X-Content-Type-Options"}
)

// Forward outcomes, the label of vps_remediation_forwarded_requests_total.
const (
	forwardRelayed     = "relayed"
	forwardNoLeader    = "no_leader"
	forwardUnreachable = "leader_unreachable"
	forwardLoop        = "forwarded_to_standby"
	forwardTooLarge    = "too_large"
)

// ForwardOptions configures a Forwarder. The zero value is usable.
type ForwardOptions struct {
	// Timeout bounds each forwarded request (DefaultForwardTimeout when 0).
	Timeout time.Duration
	// Registerer, when set, gets vps_remediation_forwarded_requests_total.
	Registerer prometheus.Registerer
	// Logger logs what a standby could not forward.
	Logger log.Logger
	// Transport sends the forwarded requests (a clone of
	// http.DefaultTransport without a proxy when nil).
	Transport http.RoundTripper
}

// Forwarder sends what a standby receives on the webhook and the control
// endpoints to the leader, and relays the leader's answer. Without
// remediation.ha (RoleSingle) and on the leader, the wrapped handler
// answers; with no leader known, or the leader unreachable, the answer is
// 503 with Retry-After so that Alertmanager retries. It holds no lock and
// keeps no state but its client.
type Forwarder struct {
	leadership func() (Role, string)
	client     *http.Client
	timeout    time.Duration
	logger     log.Logger
	requests   *prometheus.CounterVec
}

// NewForwarder returns a Forwarder asking leadership (Engine.Leadership)
// at each request who leads.
func NewForwarder(leadership func() (Role, string), o ForwardOptions) (*Forwarder, error) {
	f := &Forwarder{leadership: leadership, timeout: o.Timeout, logger: o.Logger}
	if f.timeout <= 0 {
		f.timeout = DefaultForwardTimeout
	}
	if f.logger == nil {
		f.logger = log.NewNopLogger()
	}
	rt := o.Transport
	if rt == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.Proxy = nil // replicas talk to each other directly
		rt = t
	}
	f.client = &http.Client{
		Transport: rt,
		// A redirect is the leader's answer, relayed as it is.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	f.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "vps_remediation_forwarded_requests_total",
		Help: "Webhook and control requests this replica received as a standby, by outcome: relayed (the leader answered), no_leader, leader_unreachable, forwarded_to_standby (a forwarded request reached a replica that does not lead), too_large.",
	}, []string{"outcome"})
	for _, o := range []string{forwardRelayed, forwardNoLeader, forwardUnreachable, forwardLoop, forwardTooLarge} {
		f.requests.WithLabelValues(o)
	}
	if o.Registerer != nil {
		if err := o.Registerer.Register(f.requests); err != nil {
			return nil, fmt.Errorf("register the forwarding metrics: %w", err)
		}
	}
	return f, nil
}

// Wrap returns next behind the forwarder: next answers on the leader and
// without remediation.ha, the leader answers through this replica on a
// standby.
func (f *Forwarder) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		role, leader := f.leadership()
		if role == RoleSingle || role == RoleLeader {
			next.ServeHTTP(w, r)
			return
		}
		if r.Header.Get(ForwardedHeader) != "" {
			// Forwarded by a replica that believed this one leads: the
			// leadership moved in between. Do not forward again.
			f.unavailable(w, forwardLoop, "this replica does not lead remediation (any more): the request was forwarded to it by another replica; retry later")
			return
		}
		if role != RoleStandby || leader == "" {
			f.unavailable(w, forwardNoLeader, "no remediation leader: nobody acts until one is elected (remediation.ha, docs/ha.md); retry later")
			return
		}
		f.forward(w, r, leader)
	})
}

// unavailable answers 503 with Retry-After and counts it.
func (f *Forwarder) unavailable(w http.ResponseWriter, outcome, msg string) {
	f.requests.WithLabelValues(outcome).Inc()
	w.Header().Set("Retry-After", strconv.Itoa(forwardRetryAfter))
	http.Error(w, msg, http.StatusServiceUnavailable)
}

// forward sends r to leader and relays the answer.
func (f *Forwarder) forward(w http.ResponseWriter, r *http.Request, leader string) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxForwardBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			f.requests.WithLabelValues(forwardTooLarge).Inc()
			http.Error(w, fmt.Sprintf("payload larger than %d bytes", MaxForwardBody), http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "cannot read the request body", http.StatusBadRequest)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), f.timeout)
	defer cancel()
	target := strings.TrimSuffix(leader, "/") + r.URL.EscapedPath()
	if r.URL.RawQuery != "" {
		target += "?" + r.URL.RawQuery
	}
	req, err := http.NewRequestWithContext(ctx, r.Method, target, bytes.NewReader(body))
	if err != nil {
		level.Warn(f.logger).Log("msg", "Cannot forward a remediation request: the leader's advertise URL is not usable", "path", r.URL.Path, "err", err)
		f.unavailable(w, forwardUnreachable, "the remediation leader's advertise URL is not usable; retry later")
		return
	}
	for _, h := range forwardedRequestHeaders {
		for _, v := range r.Header.Values(h) {
			req.Header.Add(h, v)
		}
	}
	req.Header.Set(ForwardedHeader, "1")
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		prior := r.Header.Get("X-Forwarded-For")
		if prior != "" {
			host = prior + ", " + host
		}
		req.Header.Set("X-Forwarded-For", host)
	}
	resp, err := f.client.Do(req)
	if err != nil {
		// The error names the URL and the cause; never the headers.
		level.Warn(f.logger).Log("msg", "Cannot forward a remediation request to the leader; answering 503 so that the sender retries",
			"path", r.URL.Path, "leader", leader, "err", err)
		f.unavailable(w, forwardUnreachable, "the remediation leader cannot be reached; retry later")
		return
	}
	defer resp.Body.Close()
	f.requests.WithLabelValues(forwardRelayed).Inc()
	for _, h := range forwardedAnswerHeaders {
		for _, v := range resp.Header.Values(h) {
			w.Header().Add(h, v)
		}
	}
	w.Header().Set(LeaderHeader, leader)
	if resp.ContentLength >= 0 && resp.ContentLength <= MaxForwardAnswer {
		w.Header().Set("Content-Length", strconv.FormatInt(resp.ContentLength, 10))
	}
	w.WriteHeader(resp.StatusCode)
	n, err := io.Copy(w, io.LimitReader(resp.Body, MaxForwardAnswer+1))
	if err == nil && n > MaxForwardAnswer {
		err = fmt.Errorf("answer larger than %d bytes", MaxForwardAnswer)
	}
	if err != nil {
		level.Warn(f.logger).Log("msg", "Cannot relay the remediation leader's answer", "path", r.URL.Path, "leader", leader, "err", err)
		panic(http.ErrAbortHandler) // the client sees a broken answer, not a short one
	}
}
