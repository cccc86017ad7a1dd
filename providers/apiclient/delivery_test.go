package apiclient_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vps-exporter/vps_exporter/providers"
	"github.com/vps-exporter/vps_exporter/providers/apiclient"
)

// decodeOK is a documented answer of a made-up API: {"ok": true}, or a
// refusal inside the 2xx: {"ok": false, "code": N}.
func decodeOK(body []byte) (bool, error) {
	var v struct {
		OK   *bool `json:"ok"`
		Code int   `json:"code"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return false, fmt.Errorf("invalid answer: %w", err)
	}
	if v.OK == nil {
		return false, errors.New("answer has no ok")
	}
	if !*v.OK {
		return false, &apiclient.Refusal{Code: v.Code, Msg: "not ok"}
	}
	return true, nil
}

func respond(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}
}

// Every way a call can end is classified: what provably never left is
// NotSent, an answer the client cannot use is Unanswered (the provider
// may have carried it out), the provider's no is Refused.
func TestDelivery(t *testing.T) {
	reset := func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			_ = conn.Close()
		}
	}
	refusedURL := func(t *testing.T) *url.URL {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		u, _ := url.Parse("http://" + l.Addr().String())
		_ = l.Close()
		return u
	}
	for _, tc := range []struct {
		name   string
		h      http.HandlerFunc
		dial   bool          // dial a closed port instead
		pause  bool          // a 429 with a long Retry-After first
		rate   float64       // rate_limit, to spend the bucket first
		ctxFor time.Duration // the call's deadline; 0: none
		want   apiclient.Delivery
		status int
		auth   bool
	}{
		{name: "documented 200", h: respond(200, `{"ok":true}`), want: apiclient.Accepted, status: 200},
		{name: "HTML 200 from a proxy", h: respond(200, "<html><body>Welcome</body></html>"), want: apiclient.Unanswered, status: 200},
		{name: "empty 200", h: respond(200, ""), want: apiclient.Unanswered, status: 200},
		{name: "junk 200", h: respond(200, `{"ok": tr`), want: apiclient.Unanswered, status: 200},
		{name: "200 not the documented shape", h: respond(200, `{}`), want: apiclient.Unanswered, status: 200},
		{name: "refusal inside a 200", h: respond(200, `{"ok":false,"code":400}`), want: apiclient.Refused, status: 200},
		{name: "auth refusal inside a 200", h: respond(200, `{"ok":false,"code":401}`), want: apiclient.Refused, status: 200, auth: true},
		{name: "400", h: respond(400, `{"detail":"Bad request - Server is not running"}`), want: apiclient.Refused, status: 400},
		{name: "401", h: respond(401, `{"detail":"Invalid or missing API token"}`), want: apiclient.Refused, status: 401, auth: true},
		{name: "403", h: respond(403, `{"detail":"forbidden"}`), want: apiclient.Refused, status: 403, auth: true},
		{name: "404", h: respond(404, `{"detail":"Not found."}`), want: apiclient.Refused, status: 404},
		{name: "402", h: respond(402, `{"detail":"Payment required"}`), want: apiclient.Refused, status: 402},
		{name: "409", h: respond(409, `{"detail":"Conflict"}`), want: apiclient.Refused, status: 409},
		// A 5xx is no answer: the provider, or a proxy in front of it,
		// failed, perhaps after carrying the request out.
		{name: "500", h: respond(500, `{"detail":"Server Error"}`), want: apiclient.Unanswered, status: 500},
		{name: "502 HTML", h: respond(502, "<html>502 Bad Gateway</html>"), want: apiclient.Unanswered, status: 502},
		{name: "503", h: respond(503, ""), want: apiclient.Unanswered, status: 503},
		{name: "504", h: respond(504, "<html>504 Gateway Time-out</html>"), want: apiclient.Unanswered, status: 504},
		{name: "599", h: respond(599, ""), want: apiclient.Unanswered, status: 599},
		{name: "connection reset", h: reset, want: apiclient.Unanswered},
		{name: "no answer before the timeout", h: func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.ReadAll(r.Body) // then the server sees the client hang up
			<-r.Context().Done()
		}, want: apiclient.Unanswered},
		{name: "body cut short", h: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "100")
			w.WriteHeader(200)
			_, _ = w.Write([]byte(`{"ok":`))
		}, want: apiclient.Unanswered, status: 200},
		{name: "refused dial", dial: true, want: apiclient.NotSent},
		{name: "deadline during a 429 pause", h: respond(200, `{"ok":true}`), pause: true, ctxFor: time.Second, want: apiclient.NotSent},
		{name: "deadline during the wait for a token", h: respond(200, `{"ok":true}`), rate: 0.2, ctxFor: 500 * time.Millisecond, want: apiclient.NotSent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int32
			var u *url.URL
			if tc.dial {
				u = refusedURL(t)
			} else {
				u = server(t, func(w http.ResponseWriter, r *http.Request) {
					if calls.Add(1) == 1 && (tc.pause || tc.rate > 0) {
						w.Header().Set("Retry-After", "60")
						if tc.pause {
							w.WriteHeader(http.StatusTooManyRequests)
						}
						return
					}
					tc.h(w, r)
				})
			}
			c := apiclient.New(apiclient.Config{Provider: "p", Account: "a", BaseURL: u, RateLimit: tc.rate,
				Timeout: 300 * time.Millisecond, BackoffBase: time.Millisecond})
			req := apiclient.Request{Method: http.MethodPost, Path: "/act/", Body: map[string]string{"type": "reboot"}}
			if tc.pause || tc.rate > 0 {
				// The 429 (not waited out: it would overrun this
				// deadline), or the bucket's one token.
				sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				_, _, _ = c.Do(sctx, req)
				cancel()
				calls.Store(1)
			}
			ctx := context.Background()
			if tc.ctxFor > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.ctxFor)
				defer cancel()
			}
			_, err := apiclient.GetRequest(ctx, c, req, decodeOK)
			if got := apiclient.DeliveryOf(err); got != tc.want {
				t.Errorf("delivery %v, want %v (err %v)", got, tc.want, err)
			}
			var ae *apiclient.Error
			if tc.want != apiclient.Accepted && (!errors.As(err, &ae) || ae.Status != tc.status) {
				t.Errorf("error %#v, want an *apiclient.Error with status %d", err, tc.status)
			}
			if got := errors.Is(err, providers.ErrUnauthorized); got != tc.auth {
				t.Errorf("errors.Is(%v, ErrUnauthorized) = %v, want %v", err, got, tc.auth)
			}
			if tc.want == apiclient.NotSent && !tc.dial && calls.Load() != 1 {
				t.Errorf("%d requests reached the server; want none after the first", calls.Load()-1)
			}
		})
	}
}

// A 5xx is never the provider's no, for an action or a read: an action
// is sent once and is Unanswered (it may have been carried out behind the
// gateway that answered); a read is retried, then Unanswered too.
func TestServerErrorIsNoAnswer(t *testing.T) {
	for _, status := range []int{500, 501, 502, 503, 504, 599} {
		for _, idempotent := range []bool{false, true} {
			var calls atomic.Int32
			u := server(t, func(w http.ResponseWriter, r *http.Request) {
				calls.Add(1)
				w.WriteHeader(status)
			})
			c := apiclient.New(apiclient.Config{Provider: "p", Account: "a", BaseURL: u, BackoffBase: time.Millisecond, MaxRetries: 2})
			_, _, err := c.Do(context.Background(), apiclient.Request{Method: http.MethodPost, Path: "/act/", Idempotent: idempotent})
			if got := apiclient.DeliveryOf(err); got != apiclient.Unanswered {
				t.Errorf("%d (idempotent %v): delivery %v, want unanswered (err %v)", status, idempotent, got, err)
			}
			want := int32(1)
			if idempotent {
				want = 3
			}
			if n := calls.Load(); n != want {
				t.Errorf("%d (idempotent %v): sent %d times, want %d", status, idempotent, n, want)
			}
		}
	}
}

// What a decode function returns for a 2xx answer decides its delivery:
// only a refusal with a 4xx code (or none) is the API's no; a code the
// API put in the body that is a 5xx, or none at all, is no usable answer.
func TestDecodeErrorDelivery(t *testing.T) {
	c := apiclient.New(apiclient.Config{Provider: "p", Account: "a", BaseURL: &url.URL{Scheme: "http", Host: "127.0.0.1:1"}})
	req := apiclient.Request{Method: http.MethodPost, Path: "/act/"}
	for _, tc := range []struct {
		err  error
		want apiclient.Delivery
		code int
		auth bool
		text string
	}{
		{&apiclient.Refusal{Code: 400, Msg: "Node is not running"}, apiclient.Refused, 400, false, "HTTP 200: code 400: Node is not running"},
		{&apiclient.Refusal{Msg: "no"}, apiclient.Refused, 0, false, "HTTP 200: no"},
		{&apiclient.Refusal{Code: 503, Msg: "later"}, apiclient.Unanswered, 503, false, "HTTP 200: code 503: later"},
		{apiclient.CodeError(401, "401: Unauthorized"), apiclient.Refused, 401, true, "HTTP 200: code 401: Unauthorized"},
		{apiclient.CodeError(404, "Not found"), apiclient.Refused, 404, false, "HTTP 200: code 404: Not found"},
		{apiclient.CodeError(500, "Internal"), apiclient.Unanswered, 500, false, "HTTP 200: code 500: Internal"},
		{apiclient.CodeError(0, "E1: nope"), apiclient.Unanswered, 0, false, "HTTP 200: E1: nope"},
		{fmt.Errorf("page 2: %w", apiclient.CodeError(403, "Forbidden")), apiclient.Refused, 403, true, "HTTP 200: page 2: code 403: Forbidden"},
		{errors.New("invalid answer"), apiclient.Unanswered, 0, false, "HTTP 200: invalid answer"},
	} {
		err := c.DecodeError(req, 200, tc.err)
		var ae *apiclient.Error
		if !errors.As(err, &ae) || ae.Delivery != tc.want || ae.Code != tc.code {
			t.Errorf("%v: %#v, want delivery %v code %d", tc.err, err, tc.want, tc.code)
			continue
		}
		if got := errors.Is(err, providers.ErrUnauthorized); got != tc.auth {
			t.Errorf("%v: ErrUnauthorized %v, want %v", tc.err, got, tc.auth)
		}
		if want := `p account "a": POST /act/: ` + tc.text; err.Error() != want {
			t.Errorf("text %q, want %q", err.Error(), want)
		}
	}
}

// DeliveryOf sees through wrapping and knows an unsupported action was
// never sent; an error it cannot place is Unanswered, the cautious guess.
func TestDeliveryOfOtherErrors(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want apiclient.Delivery
	}{
		{nil, apiclient.Accepted},
		{fmt.Errorf("%w: %w", providers.ErrNotFound, &apiclient.Error{Status: 404, Delivery: apiclient.Refused}), apiclient.Refused},
		{fmt.Errorf("x: %w", &apiclient.Error{Delivery: apiclient.NotSent}), apiclient.NotSent},
		{&apiclient.Error{}, apiclient.Unanswered},
		{fmt.Errorf("vpsorg: %q: %w", "redeploy", providers.ErrUnsupportedAction), apiclient.NotSent},
		{context.DeadlineExceeded, apiclient.Unanswered},
		{errors.New("something"), apiclient.Unanswered},
	} {
		if got := apiclient.DeliveryOf(tc.err); got != tc.want {
			t.Errorf("DeliveryOf(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// 401 and 403 are never retried, even on an idempotent read: the same key
// is refused again.
func TestUnauthorizedNotRetried(t *testing.T) {
	for _, status := range []int{401, 403} {
		var calls atomic.Int32
		u := server(t, func(w http.ResponseWriter, r *http.Request) {
			calls.Add(1)
			w.WriteHeader(status)
			_, _ = w.Write([]byte(`{"detail":"Invalid or missing API token"}`))
		})
		c := apiclient.New(apiclient.Config{Provider: "p", Account: "a", BaseURL: u, BackoffBase: time.Millisecond})
		_, err := apiclient.Get(context.Background(), c, "/servers/", "list", decodeOK)
		if !errors.Is(err, providers.ErrUnauthorized) || calls.Load() != 1 {
			t.Errorf("%d: err %v after %d calls; want ErrUnauthorized after one", status, err, calls.Load())
		}
	}
}

// A refused dial is retried for a read (nothing went out, the provider
// may be back in a moment), and the list then succeeds.
func TestRefusedDialRetriedForReads(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	u, _ := url.Parse("http://" + addr)
	c := apiclient.New(apiclient.Config{BaseURL: u, BackoffBase: 200 * time.Millisecond})
	go func() {
		time.Sleep(50 * time.Millisecond)
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return
		}
		srv := &http.Server{Handler: respond(200, `{"ok":true}`)}
		t.Cleanup(func() { _ = srv.Close() })
		_ = srv.Serve(l)
	}()
	if _, err := apiclient.Get(context.Background(), c, "/", "list", decodeOK); err != nil {
		t.Fatalf("read after the provider came back: %v", err)
	}
}
