package remediation

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/vps-exporter/vps_exporter/config"
	"github.com/vps-exporter/vps_exporter/providers"
	"github.com/vps-exporter/vps_exporter/providers/sim"
)

// A lost redeploy's answer is resolved from a list (issue 22 fault 6):
// the original releasing or gone and exactly one server of its country
// new since the call and claimed by no one is the replacement; several is
// ambiguous at once; none, or a new server while the original reads as
// before, is ambiguous once watchLists lists have passed.
func TestResolveWatch(t *testing.T) {
	srv := func(id, loc string, st providers.State) providers.Server {
		return providers.Server{ID: id, Location: loc, State: st}
	}
	const run, term = providers.StateRunning, providers.StateTerminating
	known := []string{"1", "2"} // the original and a neighbour of its country
	for _, tc := range []struct {
		name    string
		lists   int
		servers []providers.Server
		claimed []string
		want    string
		cands   []string
	}{
		{"original releasing, one new", 1, []providers.Server{srv("1", "jp", term), srv("2", "jp", run), srv("9", "jp", run)}, nil, watchFound, []string{"9"}},
		{"original gone, one new", 1, []providers.Server{srv("2", "jp", run), srv("9", "JP", run)}, nil, watchFound, []string{"9"}},
		{"country compared in any case", 1, []providers.Server{srv("1", "JP", term), srv("9", "jp", run)}, nil, watchFound, []string{"9"}},
		{"new server of another country", 1, []providers.Server{srv("1", "jp", term), srv("9", "de", run)}, nil, watchWaiting, nil},
		{"no new server in time", watchLists, []providers.Server{srv("1", "jp", term), srv("9", "de", run)}, nil, watchAmbiguous, nil},
		{"two new servers", 1, []providers.Server{srv("1", "jp", term), srv("8", "jp", run), srv("9", "jp", run)}, nil, watchAmbiguous, []string{"8", "9"}},
		{"a known server is no candidate", 1, []providers.Server{srv("1", "jp", term), srv("2", "jp", run)}, nil, watchWaiting, nil},
		{"a claimed server is no candidate", 1, []providers.Server{srv("1", "jp", term), srv("9", "jp", run)}, []string{"9"}, watchWaiting, nil},
		{"claimed one left out of two", 1, []providers.Server{srv("1", "jp", term), srv("8", "jp", run), srv("9", "jp", run)}, []string{"8"}, watchFound, []string{"9"}},
		{"original as before, nothing new", 1, []providers.Server{srv("1", "jp", run)}, nil, watchWaiting, nil},
		{"original as before after the lists", watchLists, []providers.Server{srv("1", "jp", run)}, nil, watchNoChange, nil},
		{"new server, original as before", watchLists, []providers.Server{srv("1", "jp", run), srv("9", "jp", run)}, nil, watchAmbiguous, []string{"9"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := &lineageWatch{From: "1", Country: "jp", Known: known, Lists: tc.lists}
			got, cands, why := resolveWatch(w, tc.servers, func(id string) bool { return slices.Contains(tc.claimed, id) })
			if got != tc.want || !slices.Equal(cands, tc.cands) {
				t.Errorf("resolved %s %v (%s), want %s %v", got, cands, why, tc.want, tc.cands)
			}
			if (got == watchAmbiguous || got == watchNoChange) && why == "" {
				t.Error("no reason given")
			}
		})
	}
}

// A lost answer's watch is journaled: a restart between the redeploy
// and the list that shows its replacement still finds it, whether the
// answer was lost (the watch is in the server's track) or the daemon died
// during the call (it is in the pending intent).
func TestLostRedeployWatchSurvivesRestart(t *testing.T) {
	for _, tc := range []struct {
		name  string
		crash bool
	}{{"answer lost", false}, {"crash during the call", true}} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := baseConfig(t)
			cfg.Rules = []config.Rule{redeployDegraded()}
			h := newHarness(t, 10, cfg) // node 1003 is the only degraded one
			var newID string
			if tc.crash {
				// A list the rules do not run on: the daemon dies during
				// the call it would make. Its intent is on disk, with what
				// a lost answer is resolved on; the provider carried the
				// redeploy out.
				servers, err := h.provs["bingo"].List(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				h.store.Update("vpnbingo", "bingo", servers, nil, h.now(), time.Millisecond)
				g := &gate{e: h.engine, req: Request{Provider: "vpnbingo", Account: "bingo", ID: "1003", Action: providers.ActionRedeploy}}
				rec := &Record{Time: h.now(), Provider: "vpnbingo", Account: "bingo", ID: "1003", Action: "redeploy", Source: "rule", Rule: "redeploy-degraded"}
				rec.Watch = h.engine.newLineageWatch(g)
				if rec.Watch == nil || len(rec.Watch.Known) == 0 {
					t.Fatalf("watch %+v", rec.Watch)
				}
				st := h.engine.state
				if err := st.Begin(rec, serverKey("vpnbingo", "bingo", "1003")); err != nil {
					t.Fatal(err)
				}
				res, err := h.provs["bingo"].Do(context.Background(), "1003", providers.ActionRedeploy, providers.ActionParams{})
				if err != nil {
					t.Fatal(err)
				}
				newID = res.NewID
				h.engine.Close()
			} else {
				h.sim.SetFault(sim.VPNBingo, sim.Fault{Kind: sim.FaultReset, Served: true, Only: "/redeploy/"})
				h.refresh("bingo")
				acts := h.actions(sim.VPNBingo)
				if len(acts) != 1 || acts[0].NewID == "" {
					t.Fatalf("simulator saw %+v, want one redeploy carried out", acts)
				}
				newID = acts[0].NewID
				recs, _ := h.engine.Recent(1)
				if len(recs) != 1 || recs[0].Result != ResultUnknown || recs[0].NewID != "" || recs[0].Watch != nil {
					t.Fatalf("audit %+v, want the redeploy unknown, no new id, no watch", recs)
				}
				h.engine.Close()
			}
			h.start() // the restart
			h.advance(time.Second)
			h.refresh("bingo")
			eps := h.episodes("")
			if len(eps) != 1 || eps[0].ID != newID || ladderOf(eps[0]) != "redeploy:verifying" || eps[0].Steps[0].Outcome != ResultUnknown {
				t.Fatalf("episodes %+v, want one on the replacement %s, its redeploy verifying", eps, newID)
			}
			h.engine.mu.Lock()
			root := h.engine.rootLocked(serverKey("vpnbingo", "bingo", newID))
			h.engine.mu.Unlock()
			if root != serverKey("vpnbingo", "bingo", "1003") {
				t.Errorf("the replacement's root is %q, want the original's", root)
			}
			// The replacement, degraded like the original, is not acted
			// on as a fresh server while its step is verified.
			h.sim.Machines(sim.VPNBingo)
			time.Sleep(30 * time.Millisecond)
			h.advance(time.Second)
			h.refresh("bingo")
			if acts := h.actions(sim.VPNBingo); len(acts) != 1 {
				t.Errorf("simulator saw %+v, want the one redeploy", acts)
			}
			// And a restart keeps the lineage.
			h.engine.Close()
			h.start()
			h.engine.mu.Lock()
			root = h.engine.rootLocked(serverKey("vpnbingo", "bingo", newID))
			h.engine.mu.Unlock()
			if root != serverKey("vpnbingo", "bingo", "1003") {
				t.Errorf("after another restart the replacement's root is %q", root)
			}
		})
	}
}

// The engine's side of a lost answer: one replacement is found; several
// candidates exhaust the episode and hold them all; none (the
// replacement gone at once) exhausts it after watchLists lists; an
// original that reads as before with no new server (the redeploy did not
// take effect) goes on being verified. No case acts again.
func TestLostRedeployOutcomes(t *testing.T) {
	for _, tc := range []struct {
		name      string
		served    bool   // the provider carried the redeploy out
		after     string // what happens before the next lists: "", "second", "removed"
		lists     int
		exhausted bool
		ladder    string
		onNew     bool // the episode ends up on the replacement
	}{
		{"one replacement", true, "", 1, false, "redeploy:verifying", true},
		{"two candidates", true, "second", 1, true, "redeploy:", false},
		{"no candidate", true, "removed", watchLists + 1, true, "redeploy:", false},
		{"not carried out", false, "", watchLists + 1, false, "redeploy:verifying", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := baseConfig(t)
			cfg.Rules = []config.Rule{redeployDegraded()}
			h := newHarness(t, 10, cfg) // node 1003 is the only degraded one
			h.sim.SetSick(sim.VPNBingo, 1003, sim.Sickness{Cure: sim.CureNone})
			h.sim.SetFault(sim.VPNBingo, sim.Fault{Kind: sim.FaultReset, Served: tc.served, Only: "/redeploy/"})
			h.refresh("bingo")
			recs, _ := h.engine.Recent(1)
			if len(recs) != 1 || recs[0].Result != ResultUnknown {
				t.Fatalf("audit %+v, want the redeploy unknown", recs)
			}
			var country, newID, second string
			for _, m := range h.sim.Machines(sim.VPNBingo) {
				if m.ID == 1003 {
					country = m.Location
				}
			}
			if acts := h.actions(sim.VPNBingo); tc.served {
				newID = acts[0].NewID
			}
			switch tc.after {
			case "second":
				for _, m := range h.sim.Machines(sim.VPNBingo) {
					if m.Location != country && second == "" {
						second = fmt.Sprint(m.ID)
						h.sim.Update(sim.VPNBingo, m.ID, func(m *sim.Machine) { m.Location = country })
					}
				}
			case "removed":
				id, _ := strconv.Atoi(newID)
				h.sim.Remove(sim.VPNBingo, id)
			}
			for i := 0; i < tc.lists; i++ {
				h.settle()
				h.advance(time.Second)
				h.refresh("bingo")
			}
			eps := h.episodes("")
			if len(eps) != 1 || ladderOf(eps[0]) != tc.ladder || (eps[0].Outcome == EpisodeExhausted) != tc.exhausted {
				t.Fatalf("episodes %+v, want one, %s, exhausted %v", eps, tc.ladder, tc.exhausted)
			}
			if tc.onNew != (eps[0].ID == newID) {
				t.Errorf("the episode is on %s (replacement %s), want on the replacement: %v", eps[0].ID, newID, tc.onNew)
			}
			root := serverKey("vpnbingo", "bingo", "1003")
			h.engine.mu.Lock()
			for _, id := range []string{newID, second} {
				if id != "" && tc.after != "removed" && h.engine.rootLocked(serverKey("vpnbingo", "bingo", id)) != root {
					t.Errorf("server %s is not held in the lineage", id)
				}
			}
			h.engine.mu.Unlock()
			// The next lists act on nothing: neither the replacement (as
			// degraded as the original) nor a candidate.
			for i := 0; i < 3; i++ {
				h.settle()
				h.advance(time.Second)
				h.refresh("bingo")
			}
			if acts := h.actions(sim.VPNBingo); len(acts) > 1 || (!tc.served && len(acts) != 0) {
				t.Errorf("simulator saw %+v after the lost answer, want nothing more", acts)
			}
		})
	}
}
