// Package web serves the pages and APIs people read: the status page (/),
// Prometheus HTTP service discovery (/sd) and the account status
// (/api/v1/accounts). It takes what it shows through the small interfaces
// below (the collector's snapshots, the remediation state), never the
// daemon itself, and calls no provider: every page is rendered from data
// already in memory or in the remediation state file.
package web

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"

	"github.com/vps-exporter/vps_exporter/collector"
	"github.com/vps-exporter/vps_exporter/internal/httpq"
)

// Snapshots gives every account's snapshot, ordered by account name; the
// server slices are shared and must not be modified (collector.Store).
type Snapshots interface {
	Snapshots() []collector.Snapshot
}

// Inventory is Snapshots with a generation that changes whenever the
// snapshots' servers or the set of accounts change, so that a rendering
// can be cached until then (collector.Store).
type Inventory interface {
	Snapshots
	Generation() uint64
}

// accountStatus is one account in /api/v1/accounts.
type accountStatus struct {
	Provider    string     `json:"provider"`
	Account     string     `json:"account"`
	Up          bool       `json:"up"`
	Servers     int        `json:"servers"`
	LastAttempt *time.Time `json:"last_attempt,omitempty"`
	LastSuccess *time.Time `json:"last_success,omitempty"`
	DurationSec float64    `json:"refresh_duration_seconds"`
	Error       string     `json:"error,omitempty"`
}

// AccountsHandler serves /api/v1/accounts: the refresh status of every
// account as JSON, from the snapshots.
type AccountsHandler struct {
	snaps  Snapshots
	logger log.Logger
}

// NewAccountsHandler returns the /api/v1/accounts handler.
func NewAccountsHandler(snaps Snapshots, logger log.Logger) *AccountsHandler {
	if logger == nil {
		logger = log.NewNopLogger()
	}
	return &AccountsHandler{snaps: snaps, logger: logger}
}

// ServeHTTP implements http.Handler.
func (h *AccountsHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// As /sd: a parameter it does not take is a mistake, not a filter.
	if err := httpq.Unknown(r.URL.Query()); err != nil {
		http.Error(w, "bad query: "+err.Error(), http.StatusBadRequest)
		return
	}
	var out []accountStatus
	for _, s := range h.snaps.Snapshots() {
		st := accountStatus{Provider: s.Provider, Account: s.Account, Up: s.Up, Servers: len(s.Servers), DurationSec: s.Duration.Seconds(), Error: s.Err}
		if !s.LastAttempt.IsZero() {
			t := s.LastAttempt.UTC()
			st.LastAttempt = &t
		}
		if !s.LastSuccess.IsZero() {
			t := s.LastSuccess.UTC()
			st.LastSuccess = &t
		}
		out = append(out, st)
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		level.Debug(h.logger).Log("msg", "write accounts", "err", err)
	}
}
