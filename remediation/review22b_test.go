package remediation

import (
	"testing"
	"time"
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
