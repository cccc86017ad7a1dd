package sim

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The health model: a sick machine comes back sick from every repair but
// its cure, and heals from that one (after its delay).
func TestSickness(t *testing.T) {
	for _, tc := range []struct {
		name    string
		sick    Sickness
		actions []string // VPS.org actions on 12001, each settled before the next
		healed  bool
	}{
		{"reboot cures", Sickness{Cure: CureReboot}, []string{"reboot"}, true},
		{"a reboot does not power-cycle", Sickness{Cure: CurePowerCycle}, []string{"reboot"}, false},
		{"stop then start power-cycles", Sickness{Cure: CurePowerCycle}, []string{"stop", "start"}, true},
		{"nothing cures", Sickness{Cure: CureNone}, []string{"reboot", "stop", "start"}, false},
		{"the cure takes its time", Sickness{Cure: CureReboot, HealAfter: time.Hour}, []string{"reboot"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := New(Options{Servers: 5, Seed: 1, Settle: time.Millisecond})
			srv := httptest.NewServer(s.Handler(VPSOrg))
			defer srv.Close()
			if !s.SetSick(VPSOrg, 12001, tc.sick) || s.SetSick(E2E, 169, tc.sick) {
				t.Fatal("SetSick: VPS.org yes, E2E no")
			}
			for _, a := range tc.actions {
				resp, err := http.Post(srv.URL+"/api/v1/servers/12001/"+a+"/", "application/json", strings.NewReader(""))
				if err != nil || resp.StatusCode != 200 {
					t.Fatalf("%s: %v %v", a, resp.Status, err)
				}
				resp.Body.Close()
				time.Sleep(5 * time.Millisecond)
				s.Machines(VPSOrg) // settle
			}
			m := s.Machines(VPSOrg)[1]
			if s.Sick(VPSOrg, 12001) == tc.healed || (m.CPUPercent < 95) != tc.healed {
				t.Errorf("sick %v, CPU %v%%; want healed %v", s.Sick(VPSOrg, 12001), m.CPUPercent, tc.healed)
			}
		})
	}
}

// A sick VPN.bingo node's redeploy makes a sick replacement unless the
// cure is a redeploy.
func TestSickRedeploy(t *testing.T) {
	for _, cure := range []string{CureRedeploy, CureNone} {
		s := New(Options{Servers: 5, Seed: 1, Settle: time.Millisecond})
		srv := httptest.NewServer(s.Handler(VPNBingo))
		s.SetSick(VPNBingo, 1003, Sickness{Cure: cure})
		resp, err := http.Post(srv.URL+"/api/v2/nodes/1003/redeploy/", "application/json", strings.NewReader(`{}`))
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("redeploy: %v", err)
		}
		resp.Body.Close()
		time.Sleep(5 * time.Millisecond)
		newID := s.Actions()[0].NewID
		id, _ := strconv.Atoi(newID)
		var code int
		for _, m := range s.Machines(VPNBingo) {
			if m.ID == id {
				code = m.Code
			}
		}
		if want := map[string]int{CureRedeploy: 19, CureNone: 18}[cure]; code != want {
			t.Errorf("cure %q: the replacement reads %d, want %d", cure, code, want)
		}
		srv.Close()
	}
}
