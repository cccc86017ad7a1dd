package main

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vps-exporter/vps_exporter/providers/sim"
)

// Binary tests of issue 22's faults 1 and 2: a power cycle is one durable
// action (the kill -9 case is TestClosedLoopCrashBetweenStopAndStart).

// machineStatus is a VPS.org machine's status in the simulator.
func machineStatus(s *sim.Sim, id int) string {
	for _, m := range s.Machines(sim.VPSOrg) {
		if m.ID == id {
			return m.Status
		}
	}
	return ""
}

// SIGTERM between a power cycle's stop and its start: the exporter sends
// the start before it exits, within 15 s, and says so; the restart finds
// nothing to finish and sends nothing more.
func TestPowerCycleFinishedAtShutdown(t *testing.T) {
	t.Parallel()                   // mostly waiting on the simulator: beside the other long binary tests
	const settle = 3 * time.Second // the stop takes 3 s
	s, urls := startSimSettle(t, 24, settle)
	onlyHot(s)
	cfg := writeLoopConfig(t, t.TempDir(), urls, hotCPURule("power_cycle"))
	e := startExporter(t, "--config.file="+cfg)
	within(t, 30*time.Second, "the power cycle's stop", func() bool { return names(callsTo(s, "12001")) == "stop" })
	time.Sleep(300 * time.Millisecond) // its answer in
	sent := time.Now()
	if err := e.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = e.cmd.Wait(); close(exited) }()
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		t.Fatal("the exporter did not exit within 20 s of SIGTERM")
	}
	if took := time.Since(sent); took > 15*time.Second {
		t.Errorf("exit took %v after SIGTERM, want at most 15 s", took)
	}
	calls := callsTo(s, "12001")
	if names(calls) != "stop start" {
		t.Fatalf("provider calls %q at exit, want stop start: the start was not sent before the exit", names(calls))
	}
	if gap := calls[1].Time.Sub(calls[0].Time); gap < settle {
		t.Errorf("start sent %v after the stop: before the server could read stopped (%v)", gap, settle)
	}
	if !calls[1].Time.After(sent) {
		t.Errorf("the start was sent before SIGTERM: the test did not interrupt the cycle")
	}
	logs := e.logs.String()
	if !strings.Contains(logs, "stopping with a power cycle between its stop and its start: finishing it first") {
		t.Error("no log line says the shutdown finishes the power cycle")
	}
	if strings.Contains(logs, "shutdown did not finish in time") {
		t.Error("the shutdown overran its budget")
	}
	within(t, 20*time.Second, "the server running again", func() bool { return machineStatus(s, 12001) == "active" })
	e = startExporter(t, "--config.file="+cfg)
	h := e.history(t, "?id=12001")
	if len(h.Actions) != 1 || h.Actions[0].Action != "power_cycle" || h.Actions[0].Result != "accepted" || len(h.Actions[0].Calls) != 2 {
		t.Errorf("history after the restart %+v, want one power_cycle, accepted, with its stop and its start", h.Actions)
	}
	if !hasLine(e.metrics(), `vps_remediation_actions_total{account="vps-main",action="power_cycle",provider="vpsorg",result="success",rule="hot-cpu"} 1`) {
		t.Error("the power cycle is not counted success")
	}
	time.Sleep(3 * time.Second)
	if got := names(callsTo(s, "12001")); got != "stop start" {
		t.Errorf("provider calls %q after the restart, want stop start", got)
	}
	if strings.Contains(e.logs.String(), "was left between its stop and its start") {
		t.Error("the restart found a power cycle to finish: the shutdown did not record it")
	}
}

// A power cycle whose stop is accepted and whose start is refused is a
// failed step: not_recovered at once (before: recovered, because the
// server's CPU alert clears while it is off), then the ladder: its next
// step, or, with none left, exhaustion (a person is told). Never
// recovered.
func TestPowerCycleStartRefused(t *testing.T) {
	t.Parallel() // mostly waiting on the simulator: beside the other long binary tests
	for _, tc := range []struct {
		name     string
		escalate []string
		refusals int    // starts refused (0: all)
		ladder   string // the episode's steps as the history shows them
		calls    string // the provider's calls that went through
		outcome  string
		status   string // the server's status at the end
	}{
		{"no step left: exhausted", nil, 0, "power_cycle:not_recovered", "stop", "exhausted", "stopped"},
		{"the next step is taken", []string{"start"}, 1, "power_cycle:not_recovered start:verifying", "stop start", "open", "active"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, urls := startSimSettle(t, 24, time.Second)
			onlyHot(s)
			// The start is refused (400): the server stays stopped.
			s.SetFault(sim.VPSOrg, sim.Fault{Kind: sim.FaultStatus, Status: 400, Only: "/start/", Count: tc.refusals})
			// verify 60 s: a verdict before it ends comes from the
			// failed cycle, not from the window.
			rule := strings.Replace(hotCPURule("power_cycle", tc.escalate...), "verify: 4s", "verify: 60s", 1)
			e := startExporter(t, "--config.file="+writeLoopConfig(t, t.TempDir(), urls, rule))
			var h history
			within(t, 40*time.Second, "the failed cycle's verdict", func() bool {
				h = e.history(t, "?id=12001")
				return len(h.Episodes) > 0 && ladder(h.Episodes[0].Steps) == tc.ladder && h.Episodes[0].Outcome == tc.outcome &&
					names(callsTo(s, "12001")) == tc.calls
			})
			if st := h.Episodes[0].Steps[0]; st.Outcome != "failed" {
				t.Errorf("the power cycle's step: outcome %q, want failed", st.Outcome)
			}
			var cycle bool
			for _, a := range h.Actions {
				if a.Action == "power_cycle" {
					cycle = a.Result == "failed" && len(a.Calls) == 2 && a.Calls[0].Result == "accepted" && a.Calls[1].Action == "start" && a.Calls[1].Result == "failed" &&
						strings.Contains(a.Error, "refused its start")
				}
			}
			if !cycle {
				t.Errorf("history %+v, want the power_cycle failed: stop accepted, start failed", h.Actions)
			}
			m := e.metrics()
			for _, want := range []string{
				`vps_remediation_actions_total{account="vps-main",action="power_cycle",provider="vpsorg",result="failed",rule="hot-cpu"} 1`,
				`vps_remediation_verifications_total{account="vps-main",action="power_cycle",provider="vpsorg",result="not_recovered",source="rule"} 1`,
				`vps_remediation_verifications_total{account="vps-main",action="power_cycle",provider="vpsorg",result="recovered",source="rule"} 0`,
			} {
				if !hasLine(m, want) {
					t.Errorf("/metrics lacks %s", want)
				}
			}
			const gauge = `vps_remediation_exhausted{account="vps-main",id="12001",provider="vpsorg"} 1`
			if hasLine(m, gauge) != (tc.outcome == "exhausted") {
				t.Errorf("exhausted gauge shown: %v, want %v", hasLine(m, gauge), tc.outcome == "exhausted")
			}
			if tc.outcome == "exhausted" && !strings.Contains(e.logs.String(), "remediation exhausted") {
				t.Error("no log line hands the server to a person")
			}
			within(t, 10*time.Second, "the server's status "+tc.status, func() bool { return machineStatus(s, 12001) == tc.status })
		})
	}
}

// SIGTERM between a power cycle's stop and its start, with a server that
// takes longer to stop than the shutdown may wait: the exporter still
// exits within 15 s, the cycle stays pending at its phase, and the next
// start finishes it with exactly one start.
func TestPowerCycleUnfinishedAtShutdownIsFinishedByTheRestart(t *testing.T) {
	t.Parallel()                    // mostly waiting on the simulator: beside the other long binary tests
	const settle = 16 * time.Second // the stop takes longer than the shutdown waits
	s, urls := startSimSettle(t, 24, settle)
	onlyHot(s)
	cfg := writeLoopConfig(t, t.TempDir(), urls, strings.Replace(hotCPURule("power_cycle"), "verify: 4s", "verify: 30s", 1))
	e := startExporter(t, "--config.file="+cfg)
	within(t, 30*time.Second, "the power cycle's stop", func() bool { return names(callsTo(s, "12001")) == "stop" })
	time.Sleep(300 * time.Millisecond) // its answer in
	sent := time.Now()
	if err := e.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = e.cmd.Wait(); close(exited) }()
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		t.Fatal("the exporter did not exit within 20 s of SIGTERM")
	}
	if took := time.Since(sent); took > 15*time.Second {
		t.Errorf("exit took %v after SIGTERM, want at most 15 s", took)
	}
	if got := names(callsTo(s, "12001")); got != "stop" {
		t.Fatalf("provider calls %q at exit, want the stop only (the server never read stopped)", got)
	}
	if !strings.Contains(e.logs.String(), "the next start finishes it") {
		t.Error("no log line says the cycle is left for the next start")
	}
	e = startExporter(t, "--config.file="+cfg)
	within(t, 60*time.Second, "the start after the restart", func() bool { return names(callsTo(s, "12001")) != "stop" })
	calls := callsTo(s, "12001")
	if names(calls) != "stop start" {
		t.Fatalf("provider calls %q after the restart, want stop start", names(calls))
	}
	if gap := calls[1].Time.Sub(calls[0].Time); gap < settle {
		t.Errorf("start sent %v after the stop: before the server could read stopped (%v)", gap, settle)
	}
	within(t, 10*time.Second, "the power cycle recorded", func() bool {
		h := e.history(t, "?id=12001")
		return len(h.Actions) == 1 && h.Actions[0].Result == "accepted" && len(h.Actions[0].Calls) == 2
	})
	time.Sleep(3 * time.Second)
	if got := names(callsTo(s, "12001")); got != "stop start" {
		t.Errorf("provider calls %q, want stop start", got)
	}
}
