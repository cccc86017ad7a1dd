package remediation

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/vps-exporter/vps_exporter/remediation/journal/etcdha"
	"github.com/vps-exporter/vps_exporter/remediation/journal/etcdha/etcdtest"
)

// The writes that would be larger than one etcd transaction takes (128
// operations) where the engine batches: each is written whole, in
// several.

// A flush of more suppressions than one etcd transaction takes is
// written whole, in several transactions, in order.
func TestHAFlushLargerThanOneTransaction(t *testing.T) {
	ep := etcdtest.Start(t)
	h := newHarness(t, 10, haConfig(t, ep))
	h.runHA(t, ep)
	h.waitRole(t, RoleLeader, 20*time.Second)
	const nCounts, nEvents = 300, 150
	h.engine.mu.Lock()
	for i := range nCounts {
		h.engine.unflushed[suppressKey("vpnbingo", "bingo", "redeploy", fmt.Sprintf("r%03d", i))] += 2
	}
	for i := range nEvents {
		h.engine.events = append(h.engine.events, Event{Time: h.now(), Provider: "vpnbingo", Account: "bingo", ID: fmt.Sprint(i), Action: "redeploy", Reason: ReasonCooldown})
	}
	h.engine.mu.Unlock()
	h.engine.flush()
	h.engine.mu.Lock()
	left, leftEvents, seq := len(h.engine.unflushed), len(h.engine.events), h.engine.eventSeq
	h.engine.mu.Unlock()
	if left != 0 || leftEvents != 0 || seq != nEvents {
		t.Errorf("after the flush: %d counts and %d events left, sequence %d; want 0, 0, %d", left, leftEvents, seq, nEvents)
	}
	evs, err := h.engine.state.Events(func(Event) bool { return true }, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != nEvents || evs[0].ID != fmt.Sprint(nEvents-1) || evs[nEvents-1].ID != "0" {
		t.Errorf("%d events in etcd, want %d newest first", len(evs), nEvents)
	}
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.Get(ctx, haPrefix+"/state/b/counts/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if resp.Count != nCounts {
		t.Errorf("%d counters in etcd, want %d", resp.Count, nCounts)
	}
}

func TestSplitFlush(t *testing.T) {
	for _, tc := range []struct {
		name            string
		counts, events  int
		limit, wantTxns int
	}{
		{"no limit", 500, 500, 0, 1},
		{"fits", 10, 20, 128, 1},
		{"counts only", 300, 0, 128, 3},
		{"events only", 0, 200, 128, 4},
		{"both", 100, 100, 128, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			counts := map[string]uint64{}
			for i := range tc.counts {
				counts[fmt.Sprint("k", i)] = uint64(i + 1)
			}
			var events []Event
			for i := range tc.events {
				events = append(events, Event{ID: fmt.Sprint(i)})
			}
			parts := splitFlush(counts, events, tc.limit)
			if len(parts) != tc.wantTxns {
				t.Errorf("%d transactions, want %d", len(parts), tc.wantTxns)
			}
			got, next := map[string]uint64{}, 0
			for _, p := range parts {
				if cost := len(p.counts) + 2*len(p.events) + 1; tc.limit > 0 && cost > tc.limit {
					t.Errorf("a transaction of %d writes, limit %d", cost, tc.limit)
				}
				for k, n := range p.counts {
					got[k] += n
				}
				for _, ev := range p.events {
					if ev.ID != fmt.Sprint(next) {
						t.Fatalf("event %s where %d was due", ev.ID, next)
					}
					next++
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(counts) || next != tc.events {
				t.Errorf("split lost or repeated something: %d counts, %d events", len(got), next)
			}
		})
	}
}

// A webhook payload of more alerts than one etcd transaction takes is
// journaled whole (in several), and its resend is all duplicates.
func TestHAWebhookPayloadLargerThanOneTransaction(t *testing.T) {
	ep := etcdtest.Start(t)
	h := newHarness(t, 10, haConfig(t, ep))
	h.runHA(t, ep)
	h.waitRole(t, RoleLeader, 20*time.Second)
	wctx, wcancel := context.WithCancel(context.Background())
	wh := NewWebhook(wctx, h.engine, 1024, 1)
	t.Cleanup(func() { wcancel(); wh.Wait() })
	const n = 200 // no list yet: each may be the account's, held until it is
	var alerts []string
	starts := time.Now().UTC().Add(-time.Minute).Format(time.RFC3339)
	for i := range n {
		alerts = append(alerts, fmt.Sprintf(`{"status":"firing","labels":{"alertname":"X","provider":"vpnbingo","account":"bingo","id":"%d","remediation":"redeploy"},"startsAt":%q,"endsAt":"0001-01-01T00:00:00Z","fingerprint":"fp-%d"}`, 50000+i, starts, i))
	}
	body := `{"version":"4","status":"firing","alerts":[` + strings.Join(alerts, ",") + `]}`
	code, resp := post(t, wh, body)
	if code != 200 || !strings.Contains(resp, fmt.Sprintf("queued %d alert(s)", n)) {
		t.Fatalf("webhook: %d %s, want all %d queued", code, resp, n)
	}
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := c.Get(ctx, haPrefix+"/state/b/intake/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if got.Count != n {
		t.Errorf("%d intake entries in etcd, want %d", got.Count, n)
	}
	code, resp = post(t, wh, body)
	if code != 200 || !strings.Contains(resp, "queued 0 alert(s)") {
		t.Errorf("the resend: %d %s, want none queued again", code, resp)
	}
}

// Closed-loop changes of more keys than one etcd transaction takes (a
// payload's resolutions noted on as many episodes) are all written.
func TestHAPutLoopLargerThanOneTransaction(t *testing.T) {
	ep := etcdtest.Start(t)
	el, _ := newTestElector(t, ep, "a", prometheus.NewRegistry())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	term, err := el.Campaign(ctx)
	if err != nil {
		t.Fatal(err)
	}
	j, err := etcdha.NewJournal(term, allBuckets...)
	if err != nil {
		t.Fatal(err)
	}
	if err := j.Initialize(ctx, nil); err != nil {
		t.Fatal(err)
	}
	st := &State{db: j}
	const n = 100 // 2 writes each: 200
	var ws []*loopWrite
	for i := range n {
		root := serverKey("vpnbingo", "bingo", fmt.Sprint(i))
		ws = append(ws, &loopWrite{root: root, ver: 1, track: mustJSON(&track{Root: root, Version: 1}), eps: []*Episode{{Seq: uint64(i + 1), Version: 1}}})
	}
	if err := st.PutLoop(ws...); err != nil {
		t.Fatalf("PutLoop of %d changes: %v", n, err)
	}
	l, err := st.loadLoop()
	if err != nil {
		t.Fatal(err)
	}
	if len(l.tracks) != n {
		t.Errorf("%d tracks read back, want %d", len(l.tracks), n)
	}
}
