package web

import (
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vps-exporter/vps_exporter/collector"
	"github.com/vps-exporter/vps_exporter/providers"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// now is the pages' clock in these tests.
var now = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

func firstDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := 0; i < len(al) && i < len(bl); i++ {
		if al[i] != bl[i] {
			return fmt.Sprintf("line %d:\n got: %s\nwant: %s", i+1, al[i], bl[i])
		}
	}
	return fmt.Sprintf("lengths differ: got %d lines, want %d", len(al), len(bl))
}

func servers(n int) []providers.Server {
	out := make([]providers.Server, n)
	for i := range out {
		out[i] = providers.Server{ID: strconv.Itoa(1000 + i), IP: fmt.Sprintf("10.0.%d.%d", i>>8&255, i&255), State: providers.StateRunning}
	}
	return out
}

// fixedSnaps are snapshots given by hand.
type fixedSnaps []collector.Snapshot

func (f fixedSnaps) Snapshots() []collector.Snapshot { return f }

// fleet is an account that is up, one that is down with an error (its
// servers stale) and one not refreshed yet (a snapshot the store does not
// hold before a refresh, so given by hand).
func fleet() fixedSnaps {
	st := collector.NewStore()
	st.Update("vpnbingo", "bingo-prod", servers(25), nil, now.Add(-90*time.Second), 2*time.Second)
	st.Update("vpsorg", "vps-main", servers(12), nil, now.Add(-2*time.Hour), time.Second)
	st.Update("vpsorg", "vps-main", nil, errors.New(`list servers: HTTP 401 Unauthorized: {"detail":"Invalid token."}`), now.Add(-30*time.Second), time.Second)
	return append(fixedSnaps(st.Snapshots()), collector.Snapshot{Provider: "e2e", Account: "zz-e2e-new"})
}

func get(t testing.TB, h http.Handler, method, path string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	return rec
}

func TestAccounts(t *testing.T) {
	rec := get(t, NewAccountsHandler(fleet(), nil), "GET", "/api/v1/accounts")
	want := `[
  {
    "provider": "vpnbingo",
    "account": "bingo-prod",
    "up": true,
    "servers": 25,
    "last_attempt": "2026-11-01T11:58:30Z",
    "last_success": "2026-11-01T11:58:32Z",
    "refresh_duration_seconds": 2
  },
  {
    "provider": "vpsorg",
    "account": "vps-main",
    "up": false,
    "servers": 12,
    "last_attempt": "2026-11-01T11:59:30Z",
    "last_success": "2026-11-01T10:00:01Z",
    "refresh_duration_seconds": 1,
    "error": "list servers: HTTP 401 Unauthorized: {\"detail\":\"Invalid token.\"}"
  },
  {
    "provider": "e2e",
    "account": "zz-e2e-new",
    "up": false,
    "servers": 0,
    "refresh_duration_seconds": 0
  }
]
`
	if rec.Header().Get("Content-Type") != "application/json" || rec.Body.String() != want {
		t.Errorf("/api/v1/accounts:\n%s", rec.Body)
	}
}
