package remediation

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vps-exporter/vps_exporter/config"
	"github.com/vps-exporter/vps_exporter/providers/sim"
)

// testEntry is a journal entry for server id with alert fp, started at
// minute m.
func testEntry(account, id, fp string, m int, listed bool) intakeEntry {
	return intakeEntry{Provider: "vpsorg", Account: account, ID: id, Action: "reboot", Alertname: "A", Fingerprint: fp,
		StartsAt: time.Date(2026, 1, 1, 0, m, 0, 0, time.UTC), Accepted: time.Date(2026, 1, 1, 1, 0, 0, 0, time.UTC), Listed: listed}
}

func openTestState(t *testing.T) *State {
	t.Helper()
	st, err := OpenState(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// journalKeys lists the journal as "id/fp@minute".
func journalKeys(t *testing.T, st *State) []string {
	t.Helper()
	ents, err := st.intakeEntries()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, en := range ents {
		out = append(out, fmt.Sprintf("%s/%s@%d", en.ID, en.Fingerprint, en.StartsAt.Minute()))
	}
	slices.Sort(out)
	return out
}

// The journal's outcomes and bounds: one entry per server and alert, a
// newer occurrence replacing an older, copies and acted-on occurrences
// duplicates, a batch past a bound refused whole, resolutions ending
// their own occurrence only.
func TestIntakeJournal(t *testing.T) {
	many := func(n int, listed bool, id func(i int) string) []intakeEntry {
		var out []intakeEntry
		for i := 0; i < n; i++ {
			out = append(out, testEntry("vps", id(i), fmt.Sprintf("f%d", i), 1, listed))
		}
		return out
	}
	for _, tc := range []struct {
		name     string
		before   []intakeEntry // journaled first
		seen     []intakeEntry // acted on before
		adds     []intakeEntry
		resolved []intakeRef
		capacity int
		want     []string // outcomes
		wantErr  error
		journal  []string
	}{
		{name: "new", adds: []intakeEntry{testEntry("vps", "1", "a", 1, true)}, want: []string{intakeQueued}, journal: []string{"1/a@1"}},
		{name: "copy in one batch", adds: []intakeEntry{testEntry("vps", "1", "a", 1, true), testEntry("vps", "1", "a", 1, true)},
			want: []string{intakeQueued, intakeDuplicate}, journal: []string{"1/a@1"}},
		{name: "copy of a pending one", before: []intakeEntry{testEntry("vps", "1", "a", 1, true)}, adds: []intakeEntry{testEntry("vps", "1", "a", 1, true)},
			want: []string{intakeDuplicate}, journal: []string{"1/a@1"}},
		{name: "copy of an acted-on one", seen: []intakeEntry{testEntry("vps", "1", "a", 1, true)}, adds: []intakeEntry{testEntry("vps", "1", "a", 1, true)},
			want: []string{intakeDuplicate}},
		{name: "newer occurrence replaces", before: []intakeEntry{testEntry("vps", "1", "a", 1, true)}, adds: []intakeEntry{testEntry("vps", "1", "a", 5, true)},
			want: []string{intakeQueued}, journal: []string{"1/a@5"}},
		{name: "older occurrence is stale", before: []intakeEntry{testEntry("vps", "1", "a", 5, true)}, adds: []intakeEntry{testEntry("vps", "1", "a", 1, true)},
			want: []string{intakePending}, journal: []string{"1/a@5"}},
		{name: "two alerts of a server", adds: []intakeEntry{testEntry("vps", "1", "a", 1, true), testEntry("vps", "1", "b", 1, true)},
			want: []string{intakeQueued, intakeQueued}, journal: []string{"1/a@1", "1/b@1"}},
		{name: "per-server bound", adds: many(maxPerServer+1, true, func(int) string { return "1" }), wantErr: errIntakeFull},
		{name: "capacity", before: []intakeEntry{testEntry("vps", "9", "z", 1, true)}, adds: many(3, true, func(i int) string { return fmt.Sprint(i) }), capacity: 3,
			wantErr: errIntakeFull, journal: []string{"9/z@1"}},
		{name: "unlisted bound", adds: many(maxUnlisted+1, false, func(i int) string { return fmt.Sprint(i) }), wantErr: errIntakeFull},
		{name: "unlisted bound is per account", before: many(maxUnlisted, false, func(i int) string { return fmt.Sprint(i) }),
			adds: []intakeEntry{testEntry("other", "1", "a", 1, false)}, want: []string{intakeQueued}},
		{name: "resolution ends its occurrence only", before: []intakeEntry{testEntry("vps", "1", "a", 5, true), testEntry("vps", "2", "a", 1, true)},
			resolved: []intakeRef{{intakeKey(serverKey("vpsorg", "vps", "1"), "a"), "a@" + time.Date(2026, 1, 1, 0, 1, 0, 0, time.UTC).Format(time.RFC3339Nano)},
				{intakeKey(serverKey("vpsorg", "vps", "2"), "a"), "a@" + time.Date(2026, 1, 1, 0, 1, 0, 0, time.UTC).Format(time.RFC3339Nano)}},
			journal: []string{"1/a@5"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := openTestState(t)
			capacity := tc.capacity
			if capacity == 0 {
				capacity = 1024
			}
			if _, _, err := st.Intake(tc.before, nil, 1024, false); err != nil {
				t.Fatal(err)
			}
			for _, en := range tc.seen {
				if err := st.MarkSeen(seenKey(false, en.occ()), time.Now(), "root"); err != nil {
					t.Fatal(err)
				}
			}
			got, _, err := st.Intake(tc.adds, tc.resolved, capacity, false)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err %v, want %v", err, tc.wantErr)
			}
			if err == nil && !slices.Equal(got, tc.want) {
				t.Errorf("outcomes %q, want %q", got, tc.want)
			}
			if tc.journal != nil || tc.wantErr != nil {
				want := tc.journal
				if tc.wantErr != nil && want == nil {
					want = journalKeys(t, st)[:0]
					for _, en := range tc.before {
						want = append(want, fmt.Sprintf("%s/%s@%d", en.ID, en.Fingerprint, en.StartsAt.Minute()))
					}
					slices.Sort(want)
				}
				if j := journalKeys(t, st); !slices.Equal(j, want) {
					t.Errorf("journal %q, want %q", j, want)
				}
			}
		})
	}
}

// The entry ends, and its occurrence is marked acted on, in the
// transaction of the action's intent; taking the intent back (not sent)
// puts both back.
func TestIntakeEndsWithTheIntent(t *testing.T) {
	st := openTestState(t)
	en := testEntry("vps", "1", "a", 1, true)
	if _, _, err := st.Intake([]intakeEntry{en}, nil, 1024, false); err != nil {
		t.Fatal(err)
	}
	req := en.request(nil)
	now := time.Now()
	rec := &Record{Time: now, Provider: "vpsorg", Account: "vps", ID: "1", Action: "reboot", Source: "alert"}
	if err := st.Begin(rec, "root", req.intakeTaken(false, "root", now)...); err != nil {
		t.Fatal(err)
	}
	if j := journalKeys(t, st); len(j) != 0 {
		t.Errorf("journal after the intent: %q, want empty", j)
	}
	if seen, _ := st.Seen(en.occ()); !seen {
		t.Error("the occurrence is not marked acted on with the intent")
	}
	if err := st.Abort(rec, "root", time.Time{}, req.intakeBack()...); err != nil {
		t.Fatal(err)
	}
	if j := journalKeys(t, st); !slices.Equal(j, []string{"1/a@1"}) {
		t.Errorf("journal after the intent was taken back: %q, want the entry", j)
	}
	if seen, _ := st.Seen(en.occ()); seen {
		t.Error("an occurrence whose action was not sent stays marked acted on")
	}
	// A failed intent transaction leaves the entry.
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if err := st.Begin(rec, "root", req.intakeTaken(false, "root", now)...); err == nil {
		t.Error("Begin on a closed file succeeded")
	}
}

// A hold ends three ways: the alert is taken when its reason passes, a
// resolved notification ends it (counted condition_cleared), or
// webhook.hold runs out (counted hold_expired); only the first acts.
func TestHoldEnds(t *testing.T) {
	for _, tc := range []struct {
		name       string
		end        func(h *harness, wh *Webhook, started time.Time)
		wantReason string // the suppression the end counts ("": an action)
	}{
		{"taken when the data is fresh", func(h *harness, _ *Webhook, _ time.Time) { h.refresh("vps") }, ""},
		{"resolved", func(h *harness, wh *Webhook, started time.Time) {
			sendAlerts(t, h, wh, amItem{status: "resolved", name: "A", id: "12003", started: started})
			h.refresh("vps")
		}, ReasonConditionCleared},
		{"expired", func(h *harness, _ *Webhook, _ time.Time) {
			h.advance(2 * time.Hour) // past webhook.hold (1h)
			h.refresh("vps")
		}, ReasonHoldExpired},
		{"its account removed", func(h *harness, _ *Webhook, _ time.Time) {
			var keep []config.Provider
			for _, p := range h.accounts() {
				if p.Name != "vps" {
					keep = append(keep, p)
				}
			}
			if err := h.engine.Configure(h.cfg, time.Minute, keep); err != nil {
				t.Fatal(err)
			}
		}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, 10, baseConfig(t))
			wh := h.webhook(t, 1)
			h.refresh("vps")
			h.advance(10 * time.Minute) // the account's data is old now
			started := h.now().Add(-time.Minute)
			sendAlerts(t, h, wh, amItem{status: "firing", name: "A", id: "12003", started: started})
			waitFor(t, func() bool { return testutil.ToFloat64(h.engine.m.webhookHeld.WithLabelValues(ReasonStaleData)) == 1 })
			tc.end(h, wh, started)
			waitFor(t, func() bool { return wh.Pending() == 0 })
			time.Sleep(2 * intakeTick) // room for a wrong action
			calls := h.simActions(sim.VPSOrg, "12003")
			if tc.name == "its account removed" {
				if len(calls) != 0 {
					t.Errorf("calls %v for a removed account", calls)
				}
				return
			}
			if tc.wantReason == "" {
				if len(calls) != 1 {
					t.Errorf("calls %v, want one reboot", calls)
				}
				return
			}
			if len(calls) != 0 {
				t.Errorf("calls %v after the hold ended without an action", calls)
			}
			if n := h.suppressed("vps", tc.wantReason); n != 1 {
				t.Errorf("suppressed_total{reason=%q} = %v, want 1", tc.wantReason, n)
			}
			wh.mu.Lock()
			left := len(wh.holds)
			wh.mu.Unlock()
			if left != 0 {
				t.Errorf("%d hold notes left", left)
			}
		})
	}
}
