package apiclient

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"golang.org/x/time/rate"

	"github.com/vps-exporter/vps_exporter/providers"
)

// Delivery is what is known of a request's fate at the provider: whether
// it went out, and what the provider answered. The remediation engine maps
// it to an action's outcome (DeliveryOf).
type Delivery int

// The deliveries. The zero value is the cautious one: a request that may
// have reached the provider and got no usable answer.
const (
	// Unanswered: the request went out, or may have (the connection was
	// open when it failed), and no usable answer came back: no response,
	// a timeout, a reset connection, a body cut short, a 5xx (the
	// provider or a gateway in front of it failed: a proxy's 502 may
	// come after the action was carried out), or a 2xx whose body does
	// not decode or is not the documented shape (an HTML page from a
	// proxy, an empty body, junk, a status the API does not document).
	// The provider may have carried it out: remediation outcome
	// "unknown".
	Unanswered Delivery = iota
	// NotSent: the request provably never left: the dial was refused or
	// failed before a connection existed, a client-side wait for a token
	// or a 429 pause was cut by the deadline, a paging link was refused,
	// the body could not be encoded. Trying again later is safe.
	NotSent
	// Refused: the provider answered no: a 4xx (any non-2xx status
	// below 500), or a refusal inside a 2xx: a 4xx code in E2E's
	// envelope or in VPN.bingo's success:false (see CodeError).
	// Remediation outcome "failed".
	Refused
	// Accepted: a 2xx the client decoded as the documented success.
	// Remediation outcome "success".
	Accepted
)

// String names the delivery for logs and tests.
func (d Delivery) String() string {
	switch d {
	case NotSent:
		return "not_sent"
	case Refused:
		return "refused"
	case Accepted:
		return "accepted"
	}
	return "unanswered"
}

// Sent reports whether the request went out (or may have).
func (d Delivery) Sent() bool { return d != NotSent }

// DeliveryOf classifies the error a provider client returned for one call:
// nil is Accepted; an *Error (wrapped or not) carries its own Delivery; an
// unsupported action (providers.ErrUnsupportedAction) was never sent; any
// other error is Unanswered, the cautious assumption.
func DeliveryOf(err error) Delivery {
	if err == nil {
		return Accepted
	}
	var ae *Error
	if errors.As(err, &ae) {
		return ae.Delivery
	}
	if errors.Is(err, providers.ErrUnsupportedAction) {
		return NotSent
	}
	return Unanswered
}

// Error is a failed API call. Its text names provider, account, method and
// path, never the query string or a secret.
type Error struct {
	Provider, Account string
	Method, Path      string
	// Status is the HTTP status, 0 when no response arrived.
	Status int
	// Code is the status the API put inside a 2xx body (E2E's envelope
	// code), 0 when none.
	Code int
	// Msg is what the API said, or what went wrong.
	Msg string
	// Err is the underlying cause, already redacted.
	Err error
	// Delivery is whether the request went out and what came back.
	Delivery Delivery
	// local is set when the client itself refused to send (a wait cut
	// by the deadline, a paging link, an encoding): not worth a retry.
	local bool
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s account %q: %s %s: ", e.Provider, e.Account, e.Method, e.Path)
	if e.Status != 0 {
		fmt.Fprintf(&b, "HTTP %d", e.Status)
		if e.Msg != "" {
			b.WriteString(": ")
		}
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Is matches providers.ErrUnauthorized when the provider refused the
// account's credentials: HTTP 401 or 403, or 401/403 as the code of a
// refusal inside a 2xx (E2E's envelope).
func (e *Error) Is(target error) bool {
	if target != providers.ErrUnauthorized || e.Delivery != Refused {
		return false
	}
	return authStatus(e.Status) || authStatus(e.Code)
}

func authStatus(s int) bool { return s == http.StatusUnauthorized || s == http.StatusForbidden }

func (e *Error) Unwrap() error { return e.Err }

// redactedError carries a cause whose text has been scrubbed of secrets, and
// still unwraps to the original for errors.Is (context.DeadlineExceeded).
type redactedError struct {
	msg   string
	cause error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.cause }

// RateLimit implements providers.RateReporter: the request rate (per
// second) the account allows itself now, the configured rate_limit or
// less after a 429. ok is false while no finite limit is in force: an
// account without rate_limit that was never throttled, or whose cut has
// fully recovered (it is unlimited again). It reads memory only.
func (c *Client) RateLimit() (perSecond float64, ok bool) {
	l := c.throttle.Limit()
	if l == rate.Inf {
		return 0, false
	}
	return float64(l), true
}

// Throttled implements providers.RateReporter: true while a 429 pause or
// a rate cut below the configured rate (unlimited: any limit) is in force.
func (c *Client) Throttled() bool { return c.throttle.Throttled() }

// Redact removes every configured secret from s.
func (c *Client) Redact(s string) string { return c.redact.Replace(s) }

// Refusal is what a decode function returns for a refusal inside a 2xx
// answer: the API's no, so that the request was not carried out. Use
// CodeError for a code the API put in a 2xx body. DecodeError makes a
// Refusal a Refused *Error (but one with a 5xx code Unanswered).
type Refusal struct {
	// Code is the API's own status code, 0 when it gave none.
	Code int
	Msg  string
}

func (r *Refusal) Error() string { return codeText(r.Code, r.Msg) }

func codeText(code int, msg string) string {
	if code == 0 {
		return msg
	}
	c := strconv.Itoa(code)
	if strings.HasPrefix(msg, c+":") || msg == c {
		return "code " + msg
	}
	return "code " + c + ": " + msg
}

// CodeError is the error for a 2xx answer whose body carries a non-2xx
// code of the API's own (E2E's envelope code, VPN.bingo's error.code of
// success:false), 0 when it gave none. Only a 4xx code says the API
// refused the request: a *Refusal. Any other (a 5xx: the provider failed,
// perhaps after carrying the request out; no code at all) says nothing
// of what became of it: an ordinary error, Unanswered.
func CodeError(code int, msg string) error {
	if code >= 400 && code < 500 {
		return &Refusal{Code: code, Msg: msg}
	}
	return &codeError{code: code, msg: msg}
}

type codeError struct {
	code int
	msg  string
}

func (e *codeError) Error() string { return codeText(e.code, e.msg) }

// DecodeError returns the *Error for a request whose 2xx answer (status)
// the client cannot use: err from the decode function. A *Refusal in err
// makes it Refused (the API said no), unless its code is a 5xx; anything
// else Unanswered (the request went out, the answer is unusable: the
// provider may have carried it out).
func (c *Client) DecodeError(req Request, status int, err error) error {
	e := &Error{
		Provider: c.cfg.Provider, Account: c.cfg.Account,
		Method: req.Method, Path: c.pathOf(req), Status: status,
		Msg: c.Redact(err.Error()), Delivery: Unanswered,
	}
	var r *Refusal
	var ce *codeError
	switch {
	case errors.As(err, &r):
		e.Code = r.Code
		if r.Code < 500 {
			e.Delivery = Refused
		}
	case errors.As(err, &ce):
		e.Code = ce.code
	}
	return e
}

// NotSentf returns the *Error for a request the client refuses to send
// (a paging bound, a paging link that loops back).
func (c *Client) NotSentf(req Request, format string, args ...any) error {
	return &Error{
		Provider: c.cfg.Provider, Account: c.cfg.Account,
		Method: req.Method, Path: c.pathOf(req),
		Msg: c.Redact(fmt.Sprintf(format, args...)), Delivery: NotSent, local: true,
	}
}
