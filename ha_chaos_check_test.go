package main

import (
	"strings"
	"testing"
	"time"

	"github.com/vps-exporter/vps_exporter/providers/sim"
)

// TestHAChaosChecks: the chaos test's reading of the actions log finds
// each fault it looks for, and nothing in a clean run.
func TestHAChaosChecks(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 14, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	c := chaosTimes{
		killed: "replica-1", tKill: at(10),
		frozen: "replica-2", tStop: at(20), tCont: at(30), reelected: at(60),
		tFreeze: at(40), tThaw: at(50), ttl: 3 * time.Second,
	}
	call := func(s float64, client, id string) sim.ActionLine {
		return sim.ActionLine{Time: at(s), API: sim.VPSOrg, ID: id, Action: "reboot", Status: 200, Client: client}
	}
	clean := []sim.ActionLine{
		call(1, "replica-1", "1"), call(10.5, "replica-1", "2"), // on its way at the kill
		call(12, "replica-2", "3"), call(20.2, "replica-2", "4"),
		call(25, "replica-3", "5"), call(41, "replica-3", "6"), // before the lease ran out
		call(55, "replica-3", "7"), call(61, "replica-2", "8"), // re-elected
	}
	for _, tc := range []struct {
		name  string
		lines []sim.ActionLine
		want  string // a problem's substring; "" for none
		late  int
	}{
		{"clean", clean, "", 0},
		{"one call of the frozen replica on its way", append(clean[:len(clean):len(clean)], call(30.1, "replica-2", "9")), "", 1},
		{"a server twice, by two replicas", append(clean[:len(clean):len(clean)], call(56, "replica-3", "4")), "server vpsorg/4 acted on 2 times", 0},
		{"a server twice, refused the second time", append(clean[:len(clean):len(clean)], sim.ActionLine{Time: at(57), API: sim.VPSOrg, ID: "7", Action: "reboot", Status: 400, Client: "replica-3"}), "server vpsorg/7 acted on 2 times", 0},
		{"the killed replica after its kill", append(clean[:len(clean):len(clean)], call(12, "replica-1", "10")), "the killed replica replica-1 sent a call", 0},
		{"the frozen replica twice after it froze", append(clean[:len(clean):len(clean)], call(30.1, "replica-2", "9"), call(33, "replica-2", "11")), "sent 2 calls after it was deposed", 2},
		{"a call without quorum", append(clean[:len(clean):len(clean)], call(45, "replica-3", "12")), "while etcd had no quorum", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			problems, late := actionsLogProblems(tc.lines, c)
			got := strings.Join(problems, "\n")
			switch {
			case tc.want == "" && got != "":
				t.Errorf("problems in a clean log:\n%s", got)
			case tc.want != "" && !strings.Contains(got, tc.want):
				t.Errorf("problems %q, want %q", got, tc.want)
			}
			if len(late) != tc.late {
				t.Errorf("%d late calls, want %d", len(late), tc.late)
			}
		})
	}
}

// TestRunningServers reads the running servers of one account from
// /metrics, whatever the label order.
func TestRunningServers(t *testing.T) {
	m := `vps_server_up{provider="vpsorg",account="a",id="12"} 1
vps_server_up{provider="vpsorg",account="a",id="11"} 0
vps_server_up{account="a",id="3",provider="vpsorg"} 1
vps_server_up{provider="vpsorg",account="ab",id="4"} 1
vps_server_upx{provider="vpsorg",account="a",id="5"} 1
`
	if got := strings.Join(runningServers(m, "a"), ","); got != "12,3" {
		t.Errorf("runningServers = %s, want 12,3", got)
	}
}

// TestMonitorLedAround: a call counts as a leader's only when the monitor
// saw that replica leading within the window around it.
func TestMonitorLedAround(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 14, 0, 0, 0, time.UTC)
	m := &monitor{seen: []observation{
		{t0, 0, 1}, {t0, 1, 0},
		{t0.Add(10 * time.Second), 0, -1}, {t0.Add(10 * time.Second), 1, 1},
	}}
	for _, tc := range []struct {
		replica int
		at      time.Duration
		want    bool
	}{
		{0, 0, true},
		{0, 4 * time.Second, true},
		{0, 6 * time.Second, false}, // seen leading 6 s before, then not answering
		{1, 0, false},
		{1, 7 * time.Second, true},
		{1, 16 * time.Second, false},
		{2, 0, false},
	} {
		if got := m.ledAround(tc.replica, t0.Add(tc.at), 5*time.Second); got != tc.want {
			t.Errorf("replica %d at +%s: %v, want %v", tc.replica, tc.at, got, tc.want)
		}
	}
	if got := m.firstLeaderAfter(0, t0.Add(-time.Second)); !got.Equal(t0) {
		t.Errorf("firstLeaderAfter = %v, want %v", got, t0)
	}
	if got := m.firstLeaderAfter(0, t0); !got.IsZero() {
		t.Errorf("firstLeaderAfter after its last term = %v, want none", got)
	}
}
