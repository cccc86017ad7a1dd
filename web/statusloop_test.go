package web

import (
	"strings"
	"testing"
	"time"
)

// The page shows the closed loop: each action's verdict, "accepted" for
// what the provider accepted (never "success"), server names beside ids
// (as the source names them), and each open episode's step, ladder, attempts
// and next step.
func TestStatusPageShowsTheLoop(t *testing.T) {
	body, doc := page(t, namedFleet(), &remSource{st: history()}, StatusOptions{})
	if strings.Contains(body, ">success<") {
		t.Error(`the page labels an accepted call "success"`)
	}
	actions := map[string]string{} // id -> row text
	for _, a := range doc.ByClass("action") {
		td := a.ByTag("td")
		if len(td) != 9 {
			t.Fatalf("action row with %d cells: %s", len(td), a.Text())
		}
		actions[td[3].Text()] = strings.Join([]string{td[6].Text(), td[7].Text()}, " | ")
	}
	for _, tc := range []struct{ server, want string }{
		{"1012 vpn-1012", "accepted | verifying"},
		{"1005 web-1005", "accepted | not recovered"},
		{"1007 vpn-1007", "accepted | recovered"},
		{"1002 web-1002", "failed | none"},
		{"1003 vpn-1003", "dry run | none"},
	} {
		if got, ok := actions[tc.server]; !ok || got != tc.want {
			t.Errorf("action of %q: %q (found %v), want %q; rows %q", tc.server, got, ok, tc.want, actions)
		}
	}
	eps := doc.ByClass("episode")
	if len(eps) != 2 {
		t.Fatalf("%d episode rows, want 2", len(eps))
	}
	for i, want := range [][]string{
		{"vpsorg", "vps-main", "1005 web-1005", "rule reboot-hot-cpu", "1 of 2: reboot not recovered", "reboot → power_cycle", "1 of 3", "power_cycle, due since 2026-11-01 11:58:00 UTC (2m0s ago)"},
		{"vpnbingo", "bingo-prod", "1012 vpn-1012", "alert VPNNodeHeartbeatAbnormal", "1 of 1: redeploy verifying", "redeploy", "2 of 3", "none yet"},
	} {
		td := eps[i].ByTag("td")
		if len(td) != 9 {
			t.Fatalf("episode row with %d cells: %s", len(td), eps[i].Text())
		}
		got := []string{td[0].Text(), td[1].Text(), td[2].Text(), td[4].Text(), td[5].Text(), td[6].Text(), td[7].Text(), td[8].Text()}
		for j := range want {
			if got[j] != want[j] {
				t.Errorf("episode %d, cell %d: %q, want %q", i, j, got[j], want[j])
			}
		}
	}
	for _, x := range doc.ByClass("exhausted") {
		if td := x.ByTag("td"); len(td) < 3 || td[2].Text() != "1009 web-1009" {
			t.Errorf("exhausted row without the server's name: %s", x.Text())
		}
	}
}

// An open episode whose rule left the configuration has no ladder: the
// page says so instead of "1 of 0".
func TestStatusPageEpisodeWithoutLadder(t *testing.T) {
	st := RemediationStatus{Enabled: true, MaxActionsPerHour: 10, Episodes: []Episode{
		{Provider: "vpsorg", Account: "vps-main", ID: "1005", Source: "rule", Rule: "gone", Opened: now.Add(-time.Minute), Step: 1, Current: "reboot", Verdict: "verifying", Attempts: 1, MaxAttempts: 3},
	}}
	_, doc := page(t, namedFleet(), &remSource{st: st}, StatusOptions{})
	eps := doc.ByClass("episode")
	if len(eps) != 1 {
		t.Fatalf("%d episode rows", len(eps))
	}
	td := eps[0].ByTag("td")
	if got := td[5].Text() + " | " + td[6].Text(); got != "reboot verifying | no longer configured" {
		t.Errorf("step and ladder cells %q", got)
	}
}
