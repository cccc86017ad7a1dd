package sim

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// DefaultClient is the label of Options.Credentials (or of any caller when
// an API has no credentials) in action records.
const DefaultClient = "default"

// Client is one more credential an API accepts, known by its label: each
// replica of an exporter gets its own, so that the simulator can tell who
// called, through the documented wire format only. Action records carry
// the label, never the credential.
type Client struct {
	// Label names the client in action records (e.g. "replica-1").
	Label string
	// Credentials are what the client presents, checked like
	// Options.Credentials (Token as bearer; on E2E also APIKey and
	// ProjectID).
	Credentials
}

// authenticate checks r against what api accepts and returns the label of
// the credential that matched. status is 0 when r is accepted, else the
// status to answer (401, or 403 for an E2E project id that is not the
// credential's).
func (s *Sim) authenticate(api API, r *http.Request) (label string, status int) {
	s.mu.Lock()
	def := s.opts.Credentials[api]
	clients := s.opts.Clients[api]
	s.mu.Unlock()
	for _, c := range clients {
		if st := c.Credentials.check(api, r); st != http.StatusUnauthorized {
			return c.Label, st
		}
	}
	return DefaultClient, def.check(api, r)
}

// check is 0 when r presents c, 401 when it does not, and 403 when it does
// on E2E but names another project.
func (c Credentials) check(api API, r *http.Request) int {
	if c.Token != "" && r.Header.Get("Authorization") != "Bearer "+c.Token {
		return http.StatusUnauthorized
	}
	if api != E2E {
		return 0
	}
	q := r.URL.Query()
	if c.APIKey != "" && q.Get("apikey") != c.APIKey {
		return http.StatusUnauthorized
	}
	if c.ProjectID != "" && q.Get("project_id") != c.ProjectID {
		return http.StatusForbidden
	}
	return 0
}

// record appends rec to the action records and hands it to
// Options.OnAction. The caller holds s.mu.
func (s *Sim) recordLocked(rec ActionRecord) {
	s.actions = append(s.actions, rec)
	if s.opts.OnAction != nil {
		s.opts.OnAction(rec)
	}
}

// ActionLine is one line of an actions log (ActionLog): one provider
// action call the simulator received and answered.
type ActionLine struct {
	// Time is when the call was received, RFC 3339 with milliseconds, UTC.
	Time time.Time `json:"time"`
	// API is the provider API called (vpnbingo, vpsorg, e2e).
	API API `json:"api"`
	// Account is the account name the API is configured as, if known.
	Account string `json:"account,omitempty"`
	// ID is the server the action was for.
	ID string `json:"id"`
	// Action is the action called (redeploy, reboot, start, stop,
	// power_on, power_off).
	Action string `json:"action"`
	// Status is the HTTP status answered.
	Status int `json:"status"`
	// Client is the label of the credential that made the call
	// (DefaultClient or a Client's Label); never the credential.
	Client string `json:"client"`
	// NewID is the node a redeploy created.
	NewID string `json:"new_id,omitempty"`
}

// ActionLog writes one JSON line (ActionLine) per action record to a
// writer, each in one Write call, so that a reader of the file sees whole
// lines in the order the calls were answered. Its Record method is an
// Options.OnAction.
type ActionLog struct {
	mu       sync.Mutex
	w        io.Writer
	accounts map[API]string
	err      error
}

// NewActionLog returns an ActionLog writing to w, naming each API's
// account as accounts says (none when it is not there).
func NewActionLog(w io.Writer, accounts map[API]string) *ActionLog {
	return &ActionLog{w: w, accounts: accounts}
}

// Record writes rec as one line. After a failed write it writes nothing
// more; Err reports the failure.
func (l *ActionLog) Record(rec ActionRecord) {
	line := ActionLine{
		Time: rec.Time.UTC().Truncate(time.Millisecond), API: rec.API, Account: l.accounts[rec.API],
		ID: rec.ID, Action: rec.Action, Status: rec.Status, Client: rec.Client, NewID: rec.NewID,
	}
	b, err := json.Marshal(line)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return
	}
	if err == nil {
		_, err = l.w.Write(append(b, '\n'))
	}
	if err != nil {
		l.err = fmt.Errorf("actions log: %w", err)
	}
}

// Err is the first write failure, or nil.
func (l *ActionLog) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// MarshalJSON writes Time with milliseconds (time.Time's own encoding
// drops trailing zeros, which makes the column ragged).
func (a ActionLine) MarshalJSON() ([]byte, error) {
	type plain ActionLine
	return json.Marshal(struct {
		Time string `json:"time"`
		plain
	}{a.Time.UTC().Format("2006-01-02T15:04:05.000Z07:00"), plain(a)})
}
