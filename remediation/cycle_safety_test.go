package remediation

import (
	"context"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vps-exporter/vps_exporter/config"
	"github.com/vps-exporter/vps_exporter/providers/sim"
)

// Review of issue 22, findings 1 to 3: a power cycle's start is sent
// only while it is safe and recorded; else nothing is sent and a person
// is told.

// leaveCycle writes, on a closed engine's state file, a live power cycle
// of 12003 left between its stop (answered at stopAt) and its start at
// phase, as a crash leaves it.
func leaveCycle(t *testing.T, h *harness, phase string, stopAt time.Time) *Record {
	t.Helper()
	st, err := OpenState(h.cfg.StateFile)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rec := &Record{Time: stopAt, Provider: "vpsorg", Account: "vps", ID: "12003", Action: "power_cycle", Source: "rule", Rule: "hot-cpu"}
	if err := st.Begin(rec, serverKey("vpsorg", "vps", "12003")); err != nil {
		t.Fatal(err)
	}
	rec.Calls, rec.Phase = []Call{{Action: "stop", Time: stopAt, Result: ResultSuccess}}, phase
	if err := st.Progress(rec); err != nil {
		t.Fatal(err)
	}
	return rec
}

// A power cycle left between its stop and its start is finished after a
// restart only while that is safe. Else no start is sent, the cycle is
// recorded failed with why, and its server is exhausted (verdict unknown):
// the review's repro is the "72 h later, excluded, rules removed" case.
func TestPowerCycleResumeOnlyWhenSafe(t *testing.T) {
	for _, tc := range []struct {
		name    string
		restart func(h *harness)
		why     string // in the record's error
		gauge   bool   // the exhausted gauge shows (the account is configured)
	}{
		{"excluded by id, 72 h later, rules removed", func(h *harness) {
			h.advance(72 * time.Hour)
			h.cfg.Rules = nil
			h.cfg.Exclude = []config.Exclude{{ID: "12003"}}
			h.start()
		}, "remediation.exclude[0] covers this server", true},
		{"excluded by id", func(h *harness) {
			h.cfg.Exclude = []config.Exclude{{Provider: "vpsorg", ID: "12003"}}
			h.start()
		}, "remediation.exclude[0] covers this server", true},
		{"excluded by name", func(h *harness) {
			snap, _ := h.store.Snapshot("vps")
			srv, ok := lookupServer(snap.Servers, "12003")
			name := srv.Name
			if !ok || name == "" {
				t.Fatal("12003 has no name in the list")
			}
			h.cfg.Exclude = []config.Exclude{{Name: regexp.QuoteMeta(name), NameRE: regexp.MustCompile("^(?:" + regexp.QuoteMeta(name) + ")$")}}
			h.start()
		}, "remediation.exclude[0] covers this server", true},
		{"too old", func(h *harness) {
			h.advance(cycleResumeMaxAge + time.Minute)
			h.start()
		}, "a start now would be a blind one", true},
		{"account removed", func(h *harness) {
			h.startWith(nil)
		}, `no vpsorg account named "vps" is configured`, false},
		{"dry run", func(h *harness) {
			h.cfg.DryRun = true
			h.start()
		}, "dry run", true},
		{"paused", func(h *harness) {
			h.start()
			if _, err := h.engine.Pause(0, "looking"); err != nil {
				t.Fatal(err)
			}
			h.engine.Close()
			h.start() // paused at the restart
		}, "paused by an operator", true},
		{"account stale throughout the wait", func(h *harness) {
			h.advance(10 * time.Minute) // older than stale_after (1 min); nothing refreshes it
			h.start()
		}, "no fresh read of the server", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := baseConfig(t)
			r := hotCPU()
			r.Action = "power_cycle"
			cfg.Rules = []config.Rule{r}
			h := newHarness(t, 12, cfg)
			h.cycleWait = 500 * time.Millisecond
			h.refresh("vps")
			h.engine.Close()
			rec := leaveCycle(t, h, phaseStopAnswered, h.now())
			// The server is stopped on purpose meanwhile.
			h.sim.Update(sim.VPSOrg, 12003, func(m *sim.Machine) { m.Status = "stopped" })
			calls := len(h.sim.Actions())
			tc.restart(h)
			h.engine.Wait()
			if got := h.sim.Actions()[calls:]; len(got) != 0 {
				t.Fatalf("calls after the restart %+v, want none", got)
			}
			recs, err := h.engine.Recent(10)
			if err != nil || len(recs) == 0 || recs[0].Seq != rec.Seq {
				t.Fatalf("recorded %+v %v, want the cycle", recs, err)
			}
			got := recs[0]
			if got.Result != ResultFailed || len(got.Calls) != 1 || !strings.Contains(got.Error, tc.why) || !strings.Contains(got.Error, "handed to a person") {
				t.Errorf("recorded %+v, want failed with its stop only, saying %q and handed to a person", got, tc.why)
			}
			eps := h.episodes("12003")
			if len(eps) != 1 || eps[0].Outcome != EpisodeExhausted || ladderOf(eps[0]) != "power_cycle:unknown" {
				t.Fatalf("episodes %+v, want one exhausted, power_cycle:unknown", eps)
			}
			g := testutil.ToFloat64(h.engine.m.exhausted.WithLabelValues("vpsorg", "vps", "12003"))
			if (g == 1) != tc.gauge {
				t.Errorf("exhausted gauge %v, want shown %v", g, tc.gauge)
			}
			// A later live restart sends nothing either: no blind start.
			h.engine.Close()
			h.cfg.DryRun, h.cfg.Exclude = false, nil
			h.start()
			h.engine.Wait()
			if got := h.sim.Actions()[calls:]; len(got) != 0 {
				t.Fatalf("calls after a live restart %+v, want none", got)
			}
		})
	}
}

// A server that reads running throughout after its power cycle's stop
// was answered (started by someone else; never seen stopped) gets no
// start, and the cycle is unknown, not failed: its step is verified by
// the verdict rule like any step (before: failed, not_recovered at once,
// and a healthy server escalated).
func TestPowerCycleServerRunningAfterStop(t *testing.T) {
	for _, tc := range []struct {
		name    string
		resumed bool // left at stop_answered by a crash, resumed at the restart
	}{
		{"live", false},
		{"resumed at stop_answered", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := baseConfig(t)
			cfg.Webhook.AllowedActions = []string{"power_cycle"}
			r := hotCPU()
			r.Action = "power_cycle"
			cfg.Rules = []config.Rule{r}
			// The stop takes an hour to show: the server reads running
			// until someone else's start, below.
			h := newHarnessSim(t, sim.Options{Servers: 12, Seed: 1, Settle: time.Hour}, cfg)
			h.cycleWait = 2 * time.Second
			h.engine.cycleWait = h.cycleWait
			h.refresh("vps")
			var rec Record
			if tc.resumed {
				h.engine.Close()
				h.sim.Update(sim.VPSOrg, 12003, func(m *sim.Machine) { m.Status = "active" })
				rec = *leaveCycle(t, h, phaseStopAnswered, h.now())
				h.start()
				h.engine.Wait()
			} else {
				var wg sync.WaitGroup
				wg.Add(1)
				var d Decision
				go func() {
					defer wg.Done()
					d = h.engine.Submit(context.Background(), Request{Provider: "vpsorg", Account: "vps", ID: "12003", Action: "power_cycle", Source: "alert", Rule: "A"})
				}()
				deadline := time.Now().Add(10 * time.Second)
				for len(h.simActions(sim.VPSOrg, "12003")) == 0 {
					if time.Now().After(deadline) {
						t.Fatal("no stop within 10 s")
					}
					time.Sleep(10 * time.Millisecond)
				}
				// Someone else starts it before it was ever seen stopped.
				h.sim.Update(sim.VPSOrg, 12003, func(m *sim.Machine) { m.Status = "active" })
				wg.Wait()
				if !d.Acted || d.Result != ResultUnknown {
					t.Errorf("decided %+v, want acted, unknown", d)
				}
			}
			if got := strings.Join(h.simActions(sim.VPSOrg, "12003"), " "); got != "stop" && !(tc.resumed && got == "") {
				t.Fatalf("calls %q, want no start", got)
			}
			recs, _ := h.engine.Recent(1)
			if len(recs) != 1 || recs[0].Result != ResultUnknown || !strings.Contains(recs[0].Error, "reads running") {
				t.Fatalf("recorded %+v, want unknown: it reads running", recs)
			}
			if tc.resumed && recs[0].Seq != rec.Seq {
				t.Fatalf("recorded %+v, want the resumed cycle", recs[0])
			}
			eps := h.episodes("12003")
			if len(eps) != 1 || ladderOf(eps[0]) != "power_cycle:verifying" || eps[0].Outcome == EpisodeExhausted {
				t.Fatalf("episodes %+v, want power_cycle:verifying (the verdict rule judges it)", eps)
			}
		})
	}
}

// The start of a power cycle is never sent without its record: when the
// start_sending phase cannot be journaled, nothing is sent, the failure
// is recorded, and the server is handed to a person (before: the start
// went out anyway).
func TestPowerCycleStartNeedsItsRecord(t *testing.T) {
	cfg := baseConfig(t)
	cfg.Webhook.AllowedActions = []string{"power_cycle"}
	h := newHarnessSim(t, sim.Options{Servers: 12, Seed: 1, Settle: 400 * time.Millisecond}, cfg)
	h.engine.cycleWait = 5 * time.Second
	h.refresh("vps")
	h.engine.mu.Lock()
	st := h.engine.state
	h.engine.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(1)
	var d Decision
	go func() {
		defer wg.Done()
		d = h.engine.Submit(context.Background(), Request{Provider: "vpsorg", Account: "vps", ID: "12003", Action: "power_cycle", Source: "alert", Rule: "A"})
	}()
	deadline := time.Now().Add(10 * time.Second)
	for len(h.simActions(sim.VPSOrg, "12003")) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no stop within 10 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The stop is answered; the server reads stopped 400 ms later. The
	// journal breaks before then (the disk is gone).
	if err := st.db.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	time.Sleep(600 * time.Millisecond) // a start sent late would show
	if got := strings.Join(h.simActions(sim.VPSOrg, "12003"), " "); got != "stop" {
		t.Fatalf("calls %q, want the stop only: a start without its record", got)
	}
	if !d.Acted || d.Result != ResultFailed {
		t.Errorf("decided %+v, want acted, failed", d)
	}
	h.engine.mu.Lock()
	tr := h.engine.tracks[h.engine.rootLocked(serverKey("vpsorg", "vps", "12003"))]
	var ep *Episode
	if tr != nil && tr.Episode != nil {
		ep = tr.Episode.clone()
	}
	h.engine.mu.Unlock()
	if ep == nil || ep.Outcome != EpisodeExhausted || ladderOf(*ep) != "power_cycle:unknown" || !strings.Contains(ep.Reason, "never sent without it") {
		t.Fatalf("episode %+v, want exhausted, power_cycle:unknown, saying the start was not sent without its record", ep)
	}
	if g := testutil.ToFloat64(h.engine.m.exhausted.WithLabelValues("vpsorg", "vps", "12003")); g != 1 {
		t.Errorf("exhausted gauge %v, want 1", g)
	}
}
