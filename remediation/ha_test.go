package remediation

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/vps-exporter/vps_exporter/config"
	"github.com/vps-exporter/vps_exporter/providers/sim"
	"github.com/vps-exporter/vps_exporter/remediation/journal/etcdha"
	"github.com/vps-exporter/vps_exporter/remediation/journal/etcdha/etcdtest"
)

const (
	haPrefix = "/hatest"
	haTTL    = 2 * time.Second
)

// haConfig is baseConfig under remediation.ha on endpoint, without a
// state file.
func haConfig(t *testing.T, endpoint string) config.Remediation {
	cfg := baseConfig(t)
	cfg.StateFile = ""
	cfg.HA = &config.HA{AdvertiseURL: "http://replica-1:9877", Etcd: config.Etcd{Endpoints: []string{endpoint}, Prefix: haPrefix}}
	cfg.Rules = []config.Rule{redeployDegraded()}
	return cfg
}

// newElector is an elector of a replica named name on endpoint, its
// metrics on reg.
func newTestElector(t *testing.T, endpoint, name string, reg prometheus.Registerer) (*etcdha.Elector, *etcdha.Metrics) {
	t.Helper()
	m, err := etcdha.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	el, err := etcdha.New(etcdha.Config{Endpoints: []string{endpoint}, Prefix: haPrefix, LeaseTTL: haTTL, AdvertiseURL: "http://" + name + ":9877"}, m, log.NewNopLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = el.Close() })
	return el, m
}

// runHA runs the harness's engine under remediation.ha until the test
// ends.
func (h *harness) runHA(t *testing.T, endpoint string) *etcdha.Metrics {
	t.Helper()
	el, m := newTestElector(t, endpoint, "replica-1", h.reg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.engine.RunHA(ctx, HA{Elector: el, Metrics: m, AdvertiseURL: "http://replica-1:9877", StateFile: h.cfg.StateFile})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("RunHA did not return within 10 s of its context's end")
		}
	})
	return m
}

// waitRole waits at most limit for the engine's role.
func (h *harness) waitRole(t *testing.T, want Role, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		role, _ := h.engine.Leadership()
		if role == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("role %q after %v, want %q", role, limit, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// etcdRecords are the records etcd holds in bucket (audit, pending).
func etcdRecords(t *testing.T, endpoint, bucket string) []Record {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.Get(ctx, haPrefix+"/state/b/"+bucket+"/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	var out []Record
	for _, kv := range resp.Kvs {
		var r Record
		if err := json.Unmarshal(kv.Value, &r); err != nil {
			t.Fatalf("%s: %v", kv.Key, err)
		}
		out = append(out, r)
	}
	return out
}

// Under remediation.ha the engine acts only as the elected leader, once
// per degraded server, and its record is in etcd (not in a file).
func TestHALeaderActsOnceOnEtcd(t *testing.T) {
	ep := etcdtest.Start(t)
	h := newHarness(t, 10, haConfig(t, ep)) // node 1003 is the only degraded one
	// Not elected (no elector runs): no state, no action.
	h.refresh("bingo")
	if n := len(h.actions(sim.VPNBingo)); n != 0 || h.engine.Enabled() {
		t.Fatalf("before any election: %d actions, enabled %v; want none, false", n, h.engine.Enabled())
	}
	h.runHA(t, ep)
	h.waitRole(t, RoleLeader, 20*time.Second)
	if _, url := h.engine.Leadership(); url != "http://replica-1:9877" {
		t.Errorf("leader URL %q, want its own advertise URL", url)
	}
	for range 4 {
		h.refresh("bingo")
		h.advance(time.Minute)
	}
	acts := h.actions(sim.VPNBingo)
	if len(acts) != 1 || acts[0].ID != "1003" {
		t.Fatalf("simulator saw %+v, want one redeploy of 1003", acts)
	}
	audit := etcdRecords(t, ep, "audit")
	if len(audit) != 1 || audit[0].ID != "1003" || audit[0].Result != ResultSuccess || audit[0].NewID != acts[0].NewID {
		t.Errorf("etcd's audit %+v, want the redeploy of 1003, success", audit)
	}
	if p := etcdRecords(t, ep, "pending"); len(p) != 0 {
		t.Errorf("etcd's pending intents %+v, want none", p)
	}
}

// A takeover finds the intents the old leader left pending: they are
// recorded unknown and counted, their cooldowns stand, and none is sent
// again; more of them than one etcd transaction takes are recovered in
// several.
func TestHATakeoverPendingIntentUnknown(t *testing.T) {
	for _, tc := range []struct {
		name    string
		intents int
	}{
		{"one intent", 1},
		{"more than one transaction takes", 70},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ep := etcdtest.Start(t)
			// The old leader writes its intents (the first: redeploy
			// 1003), then dies.
			old, _ := newTestElector(t, ep, "old", prometheus.NewRegistry())
			cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			term, err := old.Campaign(cctx)
			if err != nil {
				t.Fatal(err)
			}
			j, err := etcdha.NewJournal(term, allBuckets...)
			if err != nil {
				t.Fatal(err)
			}
			if err := j.Initialize(cctx, nil); err != nil {
				t.Fatal(err)
			}
			st := &State{db: j}
			var first *Record
			for i := range tc.intents {
				id := "1003"
				if i > 0 {
					id = fmt.Sprint(9000 + i)
				}
				rec := &Record{Time: time.Now(), Provider: "vpnbingo", Account: "bingo", ID: id, Action: "redeploy", Source: "rule", Rule: "redeploy-degraded"}
				if err := st.Begin(rec, serverKey("vpnbingo", "bingo", id)); err != nil {
					t.Fatal(err)
				}
				if i == 0 {
					first = rec
				}
			}
			if err := term.Resign(cctx); err != nil {
				t.Fatal(err)
			}

			h := newHarness(t, 10, haConfig(t, ep))
			m := h.runHA(t, ep)
			h.waitRole(t, RoleLeader, 20*time.Second)
			if v := testutil.ToFloat64(m.TakeoverUnknown); v != float64(tc.intents) {
				t.Errorf("takeover_unknown_total %v, want %d", v, tc.intents)
			}
			for range 3 {
				h.refresh("bingo")
				h.advance(time.Minute)
			}
			if acts := h.actions(sim.VPNBingo); len(acts) != 0 {
				t.Errorf("the new leader sent %+v; the pending intent must not be sent again", acts)
			}
			if n := h.suppressed("bingo", ReasonCooldown); n < 1 {
				t.Errorf("cooldown suppressions %v, want the intent's cooldown to stand", n)
			}
			audit := etcdRecords(t, ep, "audit")
			if len(audit) != tc.intents || audit[0].Result != ResultUnknown || audit[0].Seq != first.Seq {
				t.Errorf("etcd's audit %d records (first %+v), want %d, all unknown", len(audit), audit[0], tc.intents)
			}
			for _, r := range audit {
				if r.Result != ResultUnknown {
					t.Errorf("record %d: %s, want unknown", r.Seq, r.Result)
				}
			}
			if p := etcdRecords(t, ep, "pending"); len(p) != 0 {
				t.Errorf("etcd's pending intents %+v, want none", p)
			}
		})
	}
}

// A leader whose lease is revoked (an operator, a partition) drops its
// state at once: it is no longer leader, remediation is off on it, and a
// degraded server is not acted on; it campaigns again and leads again.
func TestHADeposedLeaderStopsActing(t *testing.T) {
	ep := etcdtest.Start(t)
	h := newHarness(t, 10, haConfig(t, ep))
	m := h.runHA(t, ep)
	h.waitRole(t, RoleLeader, 20*time.Second)
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Its leader key's lease, revoked: the term ends.
	resp, err := c.Get(ctx, haPrefix+"/leader/", clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("leader keys %v, %v", resp, err)
	}
	// Hold the election with a key of our own first, so that the
	// replica cannot lead again at once.
	lease, err := c.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctx, haPrefix+"/leader/zz-operator", "http://operator:1", clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Revoke(ctx, clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for h.engine.Enabled() {
		if time.Now().After(deadline) {
			t.Fatal("still enabled 10 s after its lease was revoked")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if role, _ := h.engine.Leadership(); role == RoleLeader {
		t.Errorf("role %q after deposition", role)
	}
	if testutil.ToFloat64(m.Leader) != 0 {
		t.Error("vps_remediation_leader still 1")
	}
	h.refresh("bingo")
	if acts := h.actions(sim.VPNBingo); len(acts) != 0 {
		t.Errorf("the deposed replica acted: %+v", acts)
	}
	// A standby follows the leader's URL (the watch may first say the
	// old one).
	deadline = time.Now().Add(10 * time.Second)
	for {
		role, url := h.engine.Leadership()
		if role == RoleStandby && url == "http://operator:1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("role %q, leader URL %q; want standby of the operator's key", role, url)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The operator lets go: the replica leads again, and acts.
	if _, err := c.Revoke(ctx, lease.ID); err != nil {
		t.Fatal(err)
	}
	h.waitRole(t, RoleLeader, 20*time.Second)
	h.refresh("bingo")
	if acts := h.actions(sim.VPNBingo); len(acts) != 1 || !strings.HasPrefix(acts[0].ID, "1003") {
		t.Errorf("leading again: %+v, want one redeploy of 1003", acts)
	}
}

// The first takeover imports the state file when etcd holds no state:
// the action a single replica recorded there is in etcd, its cooldown
// stands (no second redeploy of its lineage).
func TestHAImportsStateFile(t *testing.T) {
	ep := etcdtest.Start(t)
	single := baseConfig(t)
	single.Rules = []config.Rule{redeployDegraded()}
	h := newHarness(t, 10, single)
	h.refresh("bingo")
	if n := len(h.actions(sim.VPNBingo)); n != 1 {
		t.Fatalf("the single replica made %d actions, want 1", n)
	}
	h.engine.Close() // the file's lock is released

	cfg := haConfig(t, ep)
	cfg.StateFile = single.StateFile
	h.cfg = cfg
	h.start()
	h.runHA(t, ep)
	h.waitRole(t, RoleLeader, 20*time.Second)
	audit := etcdRecords(t, ep, "audit")
	if len(audit) != 1 || audit[0].ID != "1003" || audit[0].Result != ResultSuccess {
		t.Fatalf("etcd's audit after the import %+v, want the file's redeploy of 1003", audit)
	}
	// Its replacement degraded at once: the lineage and the cooldown
	// came with the import.
	var newID int
	fmt.Sscan(audit[0].NewID, &newID)
	h.settle()
	h.sim.Update(sim.VPNBingo, newID, func(m *sim.Machine) { m.Code, m.Display, m.CanRedepl = 18, "Heartbeat Abnormal", true })
	h.advance(5 * time.Second)
	h.refresh("bingo")
	if n := len(h.actions(sim.VPNBingo)); n != 1 {
		t.Errorf("%d actions after the import, want still 1: the imported cooldown stands", n)
	}
	if n := h.suppressed("bingo", ReasonCooldown) + h.suppressed("bingo", ReasonInFlight); n < 1 {
		t.Errorf("no suppression of the replacement; want the imported cooldown or episode to hold it")
	}
}

// A leader that stops (SIGTERM: RunHA's context ends) writes its
// unflushed suppressions into etcd before its term resigns.
func TestHAStopFlushesBeforeResign(t *testing.T) {
	ep := etcdtest.Start(t)
	h := newHarness(t, 10, haConfig(t, ep))
	el, m := newTestElector(t, ep, "replica-1", h.reg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.engine.RunHA(ctx, HA{Elector: el, Metrics: m, AdvertiseURL: "http://replica-1:9877"})
	}()
	defer func() { cancel(); <-done }()
	h.waitRole(t, RoleLeader, 20*time.Second)
	key := suppressKey("vpnbingo", "bingo", "redeploy", ReasonCooldown)
	h.engine.mu.Lock()
	h.engine.unflushed[key] += 7
	h.engine.mu.Unlock()
	cancel()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("RunHA did not return within 15 s of its context's end")
	}
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer rcancel()
	resp, err := c.Get(rctx, haPrefix+"/state/b/counts/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 || be64(resp.Kvs[0].Value) != 7 {
		t.Errorf("etcd's counters %v, want the 7 suppressions flushed before the resignation", resp.Kvs)
	}
	if l, _ := c.Get(rctx, haPrefix+"/leader/", clientv3.WithPrefix()); len(l.Kvs) != 0 {
		t.Errorf("a leader key is left after the stop: %v", l.Kvs)
	}
}
