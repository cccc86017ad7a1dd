package remediation

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/vps-exporter/vps_exporter/providers/sim"
	"github.com/vps-exporter/vps_exporter/remediation/journal/etcdha/etcdtest"
)

// A standby evaluates no rule: its refreshes of a server a rule matches
// count no suppression (before: not_allowed at every refresh, written to
// etcd's history once it led) and call nothing.
func TestHAStandbyEvaluatesNoRule(t *testing.T) {
	ep := etcdtest.Start(t)
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Another replica leads (its key first in the election).
	lease, err := c.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctx, haPrefix+"/leader/00-other", "http://other:9877", clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, 10, haConfig(t, ep)) // node 1003 is degraded: the rule matches it
	h.runHA(t, ep)
	h.waitRole(t, RoleStandby, 20*time.Second)
	if _, url := h.engine.Leadership(); url != "http://other:9877" {
		t.Errorf("leader URL %q, want the other replica's", url)
	}
	for range 4 {
		h.refresh("bingo")
		h.advance(time.Minute)
	}
	h.settle()
	if n := h.suppressed("bingo", ReasonNotAllowed); n != 0 {
		t.Errorf("a standby counted %v not_allowed suppressions; want none", n)
	}
	if acts := h.actions(sim.VPNBingo); len(acts) != 0 {
		t.Errorf("a standby acted: %+v", acts)
	}
}
