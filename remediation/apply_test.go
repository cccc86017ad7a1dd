package remediation

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vps-exporter/vps_exporter/remediation/episode"
)

// episodeIn builds an episode of vpsorg/vps/12003 whose fields say state s.
func episodeIn(s episode.State, now time.Time) *Episode {
	if s == episode.None {
		return nil
	}
	ep := &Episode{Seq: 900, Provider: "vpsorg", Account: "vps", ID: "12003", Root: serverKey("vpsorg", "vps", "12003"), Source: "rule", Rule: "hot-cpu",
		Opened: now, Outcome: EpisodeOpen, Steps: []Step{{Seq: 1, Action: "reboot", ID: "12003", Source: "rule", Rule: "hot-cpu", Time: now, Finished: now, Outcome: ResultSuccess}}}
	switch s {
	case episode.AwaitingView:
		ep.AwaitingView = now
	case episode.EscalationDue:
		ep.Steps[0].Verdict, ep.Escalate, ep.EscalateSince = VerdictNotRecovered, "power_cycle", now
	case episode.Exhausted:
		ep.Steps[0].Verdict, ep.Outcome, ep.Ended, ep.Reason = VerdictNotRecovered, EpisodeExhausted, now, "test"
	}
	return ep
}

// eventFor is an event that the row's guard takes.
func eventFor(r episode.Row) episode.Event {
	ev := episode.Event{Kind: r.On, Action: "reboot", Detail: "test"}
	switch r.Guard {
	case episode.IsRecovered:
		ev.Verdict = episode.VerdictRecovered
	case episode.NextDue:
		ev.Verdict, ev.Next = episode.VerdictNotRecovered, "power_cycle"
	case episode.NoNext:
		ev.Verdict = episode.VerdictNotRecovered
	case episode.NoView:
		ev.Verdict = episode.VerdictPending
	case episode.IsUnknown:
		ev.Verdict = episode.VerdictUnknown
	case episode.HasNext:
		ev.Next = "power_cycle"
	}
	return ev
}

// The engine applies every row of the machine's table so that the
// episode's fields then say the row's next state, the exhausted gauge
// follows, and a change is journaled: the effects are applied in one
// place, and applied right.
func TestApplyFollowsTheTable(t *testing.T) {
	h := newHarness(t, 10, baseConfig(t))
	e := h.engine
	for _, r := range episode.Table() {
		t.Run(string(r.From)+"/"+string(r.On)+"/"+string(r.Guard), func(t *testing.T) {
			e.mu.Lock()
			defer e.mu.Unlock()
			now := e.now()
			root := serverKey("vpsorg", "vps", "12003")
			e.m.exhausted.Reset()
			ep := episodeIn(r.From, now)
			if got := stateOf(ep); got != r.From {
				t.Fatalf("fixture reads %s, want %s", got, r.From)
			}
			if r.From == episode.Exhausted {
				e.m.exhausted.WithLabelValues("vpsorg", "vps", "12003").Set(1)
			}
			tr := &track{Root: root, Episode: ep}
			e.tracks[root] = tr
			defer delete(e.tracks, root)
			req := Request{Provider: "vpsorg", Account: "vps", ID: "12003", Source: "rule", Rule: "hot-cpu"}
			w := e.applyLocked(tr, change{ev: eventFor(r), open: &req, by: "test",
				step: Step{Seq: 2, Action: "reboot", ID: "12003", Source: "rule", Rule: "hot-cpu", Time: now, Finished: now, Outcome: ResultSuccess}})
			after := tr.Episode
			if after == nil && w != nil && len(w.eps) > 0 {
				after = w.eps[len(w.eps)-1]
			}
			if got := stateOf(after); got != r.To {
				t.Fatalf("after the row the episode reads %s, want %s (%+v)", got, r.To, after)
			}
			if (r.To != r.From || len(r.Effects) > 0) && w == nil {
				t.Fatal("a change was not journaled")
			}
			if r.To.Active() != (tr.Episode != nil) {
				t.Fatalf("the track holds %v for state %s", tr.Episode != nil, r.To)
			}
			series := 0
			if r.To == episode.Exhausted {
				series = 1
			}
			if n := testutil.CollectAndCount(e.m.exhausted); n != series {
				t.Fatalf("%d exhausted series in state %s", n, r.To)
			}
		})
	}
}
