package web

import (
	"strings"
	"testing"
)

// TestStatusPageRole: with remediation.ha the page says this replica's
// role; a standby links the leader's page and shows no state of its own.
// Neither is an error. Without ha there is no role line.
func TestStatusPageRole(t *testing.T) {
	for _, tc := range []struct {
		name      string
		role      string
		leaderURL string
		want      string // #remediation-role's text; "" for none
		link      string // #remediation-leader's href; "" for none
	}{
		{name: "single", role: ""},
		{name: "leader", role: "leader", leaderURL: "http://10.0.0.5:9877",
			want: "leader this replica acts for every replica (remediation.ha)"},
		{name: "standby", role: "standby", leaderURL: "http://vps-exporter-1.vps-exporter-peers.monitoring.svc:9877",
			want: "standby the leader acts: http://vps-exporter-1.vps-exporter-peers.monitoring.svc:9877; this replica forwards the webhook and the controls to it, and its page has the history",
			link: "http://vps-exporter-1.vps-exporter-peers.monitoring.svc:9877/"},
		{name: "standby, leader not known yet", role: "standby",
			want: "standby the leader acts; this replica forwards the webhook and the controls to it, and its page has the history"},
		{name: "unavailable", role: "unavailable",
			want: "unavailable no leader (etcd unreachable or without quorum): nobody acts until one is elected; every replica keeps exporting"},
		{name: "hostile leader URL", role: "standby", leaderURL: `javascript:alert(1)"><script>x</script>`,
			want: `standby the leader acts: javascript:alert(1)"><script>x</script>; this replica forwards the webhook and the controls to it, and its page has the history`,
			link: "#ZgotmplZ/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := RemediationStatus{Enabled: true, MaxActionsPerHour: 10, Role: tc.role, LeaderURL: tc.leaderURL}
			body, doc := page(t, fleet(), &remSource{st: st}, StatusOptions{})
			n := doc.ByID("remediation-role")
			switch {
			case tc.want == "" && n != nil:
				t.Errorf("#remediation-role %q without remediation.ha", n.Text())
			case tc.want != "" && n == nil:
				t.Fatalf("no #remediation-role")
			case n != nil && n.Text() != tc.want:
				t.Errorf("#remediation-role:\n got %q\nwant %q", n.Text(), tc.want)
			}
			a := doc.ByID("remediation-leader")
			switch {
			case tc.link == "" && a != nil:
				t.Errorf("a leader link %q, want none", a.Attr["href"])
			case tc.link != "" && (a == nil || a.Tag != "a" || a.Attr["href"] != tc.link):
				t.Errorf("leader link %v, want <a href=%q>", a, tc.link)
			}
			// A replica that does not lead has no state of its own: the
			// mode, budget and history are the leader's, not shown here.
			acting := tc.role == "" || tc.role == "leader"
			for _, id := range []string{"remediation-enabled", "remediation-mode", "remediation-paused", "actions", "suppressions", "episodes", "exhausted"} {
				if (doc.ByID(id) != nil) != acting {
					t.Errorf("#%s shown: %v, want %v for role %q", id, doc.ByID(id) != nil, acting, tc.role)
				}
			}
			if doc.ByID("remediation-error") != nil {
				t.Error("the role is shown as an error")
			}
			if strings.Contains(body, "<script>x") {
				t.Error("hostile text unescaped")
			}
		})
	}
}
