package remediation

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/common/model"

	"github.com/vps-exporter/vps_exporter/config"
	"github.com/vps-exporter/vps_exporter/providers/sim"
	"github.com/vps-exporter/vps_exporter/remediation/journal"
)

// The second hostile review of issue 22's closed loop: engine-level tests
// of its findings (the episode package's TestJudgeAlertResolutionTiming
// pins the verdict rule itself).

// An alert whose endsAt precedes the step's answer (it resolved while the
// call was under way: a power cycle's server off) is not "resolved inside
// webhook.verify": the step is not recovered on the first list after the
// answer, nor at the window's end; and no alert verdict at all is taken
// before the window ends, even on a resolution that counts.
func TestAlertVerdictWaitsForTheWindowAndItsResolution(t *testing.T) {
	for _, tc := range []struct {
		name string
		// ends is the resolution's endsAt relative to the step's answer.
		ends time.Duration
		// atEnd is the episode after the window's end (no grace yet).
		atEnd, atEndOutcome string
	}{
		{"resolved before the answer", -10 * time.Second, "reboot:verifying", EpisodeOpen},
		{"resolved after the answer", 10 * time.Second, "reboot:recovered", EpisodeRecovered},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, wh, started := alertHarness(t)
			acted := h.episodes("12003")[0].Steps[0].Finished
			h.advance(20 * time.Second)
			sendAlerts(t, h, wh, amItem{status: "resolved", name: "A", id: "12003", started: started, ends: acted.Add(tc.ends)})
			h.engine.tick()
			h.advance(time.Minute)
			h.refresh("vps")
			h.engine.tick()
			wantEpisode(t, h, "12003", "reboot:verifying", EpisodeOpen)
			h.advance(4 * time.Minute) // the window (5m) ends
			h.refresh("vps")
			h.engine.tick()
			wantEpisode(t, h, "12003", tc.atEnd, tc.atEndOutcome)
		})
	}
}

// An exhausted alert-driven server is handed back only when its alerts
// are resolved and the exporter's fresh view has had it running for
// webhook.verify: a server that read stopped for most of that window (its
// alert resolved because it was off) stays exhausted; the clock runs only
// while the view agrees, the same rule as the rules' side.
func TestAlertReleaseNeedsTheViewForTheWholeWindow(t *testing.T) {
	for _, tc := range []struct {
		name string
		// stoppedFor is how long the server reads stopped after its alert
		// resolved; runningFor how long it reads running after.
		stoppedFor, runningFor time.Duration
		released               bool
	}{
		{"stopped most of the window", 4 * time.Minute, 90 * time.Second, false},
		{"running the whole window", 0, 5*time.Minute + 30*time.Second, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := baseConfig(t)
			cfg.Webhook.Verify = model.Duration(5 * time.Minute)
			cfg.Webhook.ResolveGrace = model.Duration(5 * time.Minute)
			cfg.MaxAttempts = 1
			h := newHarness(t, 10, cfg)
			h.refresh("vps")
			wh := h.webhook(t, 1)
			started := h.now().Add(-time.Minute)
			sendAlerts(t, h, wh, amItem{status: "firing", name: "A", id: "12003", started: started})
			waitFor(t, func() bool { return len(h.episodes("12003")) == 1 })
			h.settle()
			h.advance(11 * time.Minute)
			h.refresh("vps")
			h.engine.tick()
			if x := h.engine.Exhausted(); len(x) != 1 {
				t.Fatalf("setup: exhausted %+v (episodes %q)", x, summaries(h.episodes("12003")))
			}
			if tc.stoppedFor > 0 {
				h.sim.Update(sim.VPSOrg, 12003, func(m *sim.Machine) { m.Status = "stopped" })
				h.refresh("vps")
			}
			sendAlerts(t, h, wh, amItem{status: "resolved", name: "A", id: "12003", started: started})
			for d := time.Duration(0); d < tc.stoppedFor; d += time.Minute {
				h.advance(time.Minute)
				h.refresh("vps")
				h.engine.tick()
			}
			h.sim.Update(sim.VPSOrg, 12003, func(m *sim.Machine) { m.Status = "active" })
			for d := time.Duration(0); d < tc.runningFor; d += 30 * time.Second {
				h.advance(30 * time.Second)
				h.refresh("vps")
				h.engine.tick()
			}
			if got := len(h.engine.Exhausted()) == 0; got != tc.released {
				t.Fatalf("released %v, want %v (stopped %s, then running %s of the 5m webhook.verify)", got, tc.released, tc.stoppedFor, tc.runningFor)
			}
		})
	}
}

// failingLoop is a journal whose closed-loop track writes fail while fail
// is set (a full disk): the intake journal still works.
type failingLoop struct {
	journal.Store
	fail *atomic.Bool
}

func (f failingLoop) Update(fn func(journal.Tx) error) error {
	return f.Store.Update(func(tx journal.Tx) error { return fn(failingTx{tx, f.fail}) })
}

type failingTx struct {
	journal.Tx
	fail *atomic.Bool
}

func (t failingTx) Bucket(name []byte) journal.Bucket {
	b := t.Tx.Bucket(name)
	if t.fail.Load() && bytes.Equal(name, bucketTracks) {
		return failingBucket{b}
	}
	return b
}

type failingBucket struct{ journal.Bucket }

func (failingBucket) Put(_, _ []byte) error { return errors.New("no space left on device (test)") }

// A resolved notification received while the server's first call is under
// way is written before the webhook answers 200 (a failed write is 503:
// Alertmanager retries): after a crash during the call, the recovered step
// knows it, and the recovered server is not escalated (before, it was kept
// only in memory, and the power cycle went to a server whose alert had
// resolved).
func TestResolvedDuringTheCallSurvivesACrash(t *testing.T) {
	for _, tc := range []struct {
		name string
		// failFirst: the first write fails (503), the resend is taken.
		failFirst bool
		journaled bool
		calls     []string
	}{
		{"journaled", false, true, []string{"reboot"}},
		{"first write failed, resend journaled", true, true, []string{"reboot"}},
		{"without the notification", false, false, []string{"reboot", "stop", "start"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := baseConfig(t)
			cfg.Webhook.Verify = model.Duration(5 * time.Minute)
			cfg.Webhook.Escalate = map[string][]string{"reboot": {"power_cycle"}}
			h := newHarness(t, 10, cfg)
			h.refresh("vps")
			// The failing store goes in before the webhook's workers start
			// (they read the state's store without the engine's lock).
			var fail atomic.Bool
			h.engine.mu.Lock()
			h.engine.state.db = failingLoop{h.engine.state.db, &fail}
			h.engine.mu.Unlock()
			wh := h.webhook(t, 1)
			started := h.now().Add(-time.Minute)
			w := h.watch("vps", 3*time.Second)
			sendAlerts(t, h, wh, amItem{status: "firing", name: "A", id: "12003", started: started})
			waitFor(t, func() bool { w.mu.Lock(); defer w.mu.Unlock(); return w.calls >= 2 }) // the reboot is under way
			resolved := amBody(h.now(), amItem{status: "resolved", name: "A", id: "12003", started: started, ends: h.now().Add(-time.Second)})
			if tc.failFirst {
				fail.Store(true)
				if code, out := post(t, wh, resolved); code != 503 {
					t.Fatalf("resolved notification not written: %d %s, want 503", code, out)
				}
				fail.Store(false)
			}
			if tc.journaled {
				if code, out := post(t, wh, resolved); code != 200 {
					t.Fatalf("resolved notification: %d %s", code, out)
				}
			}
			// The crash: the state file as it is now, the call still
			// under way (it takes 3s).
			w.mu.Lock()
			calls := w.calls
			w.mu.Unlock()
			if calls != 2 {
				t.Fatalf("the call ended before the crash's copy (%d calls): load too high for this test", calls)
			}
			data, err := os.ReadFile(cfg.StateFile)
			if err != nil {
				t.Fatal(err)
			}
			h.engine.Wait()
			h.engine.Close()
			crashed := filepath.Join(t.TempDir(), "crashed.db")
			if err := os.WriteFile(crashed, data, 0o600); err != nil {
				t.Fatal(err)
			}
			h.cfg.StateFile = crashed
			h.provs["vps"] = w.Provider
			h.advance(30 * time.Second)
			h.start() // the reboot is recovered as a step, result unknown
			h.advance(6 * time.Minute)
			h.refresh("vps")
			h.engine.tick() // not_recovered (no resolution after the answer)
			h.engine.tick() // the next step: not called for if the alert resolved
			h.refresh("vps")
			h.settle()
			h.refresh("vps")
			if got := h.simActions(sim.VPSOrg, "12003"); !slices.Equal(got, tc.calls) {
				t.Fatalf("calls %v, want %v (episodes %q)", got, tc.calls, summaries(h.episodes("12003")))
			}
			if tc.journaled {
				wantEpisode(t, h, "12003", "reboot:not_recovered", EpisodeRecovered)
			}
		})
	}
}

// A rule's step whose re-read read the server but lacked the rule's
// metric has one bound, the same in the refresh's verdict and in the
// tick's timeout: it waits up to twice its verify window, then
// not_recovered (before: the tick made it unknown at stale_after past
// the window while the documented metric re-reads were still going).
func TestRuleMetricWaitHasOneBound(t *testing.T) {
	cfg := baseConfig(t)
	cfg.Rules = []config.Rule{hotCPU("power_cycle")}
	h := newHarness(t, 24, cfg)
	coolAllBut(h, 12001)
	h.refresh("vps") // the reboot
	h.settle()
	orig := h.provs["vps"]
	h.provs["vps"] = noCPU{orig}
	h.advance(6 * time.Minute) // verify is 5m
	h.refresh("vps")           // one re-read without the metric
	wantEpisode(t, h, "12001", "reboot:verifying", EpisodeOpen)
	h.provs["vps"] = orig
	// No refresh, no re-read: still waiting 9m after the answer.
	h.advance(3 * time.Minute)
	h.engine.tick()
	wantEpisode(t, h, "12001", "reboot:verifying", EpisodeOpen)
	// 11m: past twice verify, and past stale_after (5m) after the
	// window: the metric's bound decides, not the timeout's unknown.
	h.advance(2 * time.Minute)
	h.engine.tick()
	ep := wantEpisode(t, h, "12001", "reboot:not_recovered", EpisodeOpen)
	if d := ep.Steps[0].Detail; !strings.Contains(d, "lacked the rule's metric") {
		t.Errorf("detail %q", d)
	}
}

// lostRedeploy is a harness whose degraded node 1003 got a redeploy the
// provider carried out (served) or not, with its answer lost: the
// episode watches for the replacement.
func lostRedeploy(t *testing.T, served bool) *harness {
	cfg := baseConfig(t)
	cfg.Rules = []config.Rule{redeployDegraded()}
	h := newHarness(t, 10, cfg)
	h.sim.SetSick(sim.VPNBingo, 1003, sim.Sickness{Cure: sim.CureNone})
	h.sim.SetFault(sim.VPNBingo, sim.Fault{Kind: sim.FaultReset, Served: served, Only: "/redeploy/"})
	h.refresh("bingo")
	if recs, _ := h.engine.Recent(1); len(recs) != 1 || recs[0].Result != ResultUnknown {
		t.Fatalf("audit %+v, want the redeploy unknown", recs)
	}
	return h
}

// A lost redeploy's watch ends: one held with its exhausted episode
// (several candidates) is dropped after watchHoldFor, and the episode
// goes the usual way (its lineage gone from the lists: server_gone, the
// server released); one not yet resolved while the account is down ends,
// like any verdict without a fresh view, stale_after after the window:
// unknown, the episode ended (before: both waited forever).
func TestLostRedeployWatchEnds(t *testing.T) {
	t.Run("held watch after the hold", func(t *testing.T) {
		h := lostRedeploy(t, true)
		newID := h.actions(sim.VPNBingo)[0].NewID
		var country string
		for _, m := range h.sim.Machines(sim.VPNBingo) {
			if m.ID == 1003 {
				country = m.Location
			}
		}
		var second int
		for _, m := range h.sim.Machines(sim.VPNBingo) {
			if m.Location != country && second == 0 {
				second = m.ID
				h.sim.Update(sim.VPNBingo, m.ID, func(m *sim.Machine) { m.Location = country })
			}
		}
		h.settle()
		h.advance(time.Second)
		h.refresh("bingo")
		if x := h.engine.Exhausted(); len(x) != 1 {
			t.Fatalf("setup: exhausted %+v (episodes %q)", x, summaries(h.episodes("")))
		}
		// The lineage leaves the account.
		n, _ := strconv.Atoi(newID)
		for _, id := range []int{1003, n, second} {
			h.sim.Remove(sim.VPNBingo, id)
		}
		for i := 0; i < goneAfter+1; i++ {
			h.advance(time.Minute)
			h.refresh("bingo")
		}
		if x := h.engine.Exhausted(); len(x) != 1 {
			t.Fatalf("released inside the hold: %+v", x)
		}
		h.advance(watchHoldFor)
		for i := 0; i < goneAfter+1; i++ {
			h.advance(time.Minute)
			h.refresh("bingo")
		}
		h.engine.mu.Lock()
		watch := h.engine.tracks[serverKey("vpnbingo", "bingo", "1003")]
		held := watch != nil && watch.Watch != nil
		h.engine.mu.Unlock()
		if held {
			t.Error("the watch is still held past watchHoldFor")
		}
		if x := h.engine.Exhausted(); len(x) != 0 {
			t.Fatalf("still exhausted with its lineage gone and the hold over: %+v (episodes %q)", x, summaries(h.episodes("")))
		}
	})
	t.Run("account down before the answer is found", func(t *testing.T) {
		h := lostRedeploy(t, true)
		h.advance(time.Second)
		h.failRefresh("bingo")
		wantEpisode(t, h, "1003", "redeploy:verifying", EpisodeOpen)
		// The window (10m) and stale_after (5m) pass without a list.
		h.advance(14 * time.Minute)
		h.failRefresh("bingo")
		h.engine.tick()
		wantEpisode(t, h, "1003", "redeploy:verifying", EpisodeOpen)
		h.advance(2 * time.Minute)
		h.failRefresh("bingo")
		h.engine.tick()
		ep := wantEpisode(t, h, "1003", "redeploy:unknown", EpisodeEnded)
		if !strings.Contains(ep.Steps[0].Detail, "answer was lost") {
			t.Errorf("detail %q", ep.Steps[0].Detail)
		}
	})
}
