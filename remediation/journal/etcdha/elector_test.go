package etcdha

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

const ttl = 2 * time.Second

// Two replicas campaign: exactly one leads, the other waits (for several
// lease TTLs) and both see the leader's URL; when the leader resigns the
// other takes over at once, with a later fencing token.
func TestOneLeader(t *testing.T) {
	ep := startEtcd(t)
	a, b := newElector(t, ep, "a", ttl), newElector(t, ep, "b", ttl)
	ca, cb := campaign(a, time.Minute), campaign(b, time.Minute)
	var first campaignResult
	var winner, loser *Elector
	var rest <-chan campaignResult
	select {
	case first = <-ca:
		winner, loser, rest = a, b, cb
	case first = <-cb:
		winner, loser, rest = b, a, ca
	case <-time.After(15 * time.Second):
		t.Fatal("no leader within 15 s")
	}
	if first.err != nil {
		t.Fatal(first.err)
	}
	select {
	case r := <-rest:
		t.Fatalf("a second leader while the first leads: %+v", r)
	case <-time.After(3 * ttl):
	}
	if gauge(winner.metrics.Leader) != 1 || gauge(loser.metrics.Leader) != 0 {
		t.Errorf("vps_remediation_leader: winner %v, loser %v", gauge(winner.metrics.Leader), gauge(loser.metrics.Leader))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, e := range []*Elector{a, b} {
		l, err := e.Leader(ctx)
		if err != nil || l.URL != winner.cfg.AdvertiseURL || l.Rev != first.term.Rev() || l.Key != first.term.Key() {
			t.Errorf("%s sees leader %+v, %v; want %s rev %d", e.cfg.AdvertiseURL, l, err, winner.cfg.AdvertiseURL, first.term.Rev())
		}
	}
	if err := first.term.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(first.term.Err(), ErrResigned) || gauge(winner.metrics.Leader) != 0 {
		t.Errorf("after Resign: err %v, gauge %v", first.term.Err(), gauge(winner.metrics.Leader))
	}
	second := lead(t, rest, 5*time.Second)
	if second.term.Rev() <= first.term.Rev() || gauge(loser.metrics.Leader) != 1 {
		t.Errorf("takeover: rev %d after %d, gauge %v", second.term.Rev(), first.term.Rev(), gauge(loser.metrics.Leader))
	}
}

// When the leader's session ends without a resignation (the process
// killed: its lease is not revoked, it expires), the other replica takes
// over within lease_ttl + a few seconds, and not before the lease could
// have expired. A leader frozen behind its network is deposed by its own
// send deadline before the other replica leads.
func TestFailover(t *testing.T) {
	for _, tc := range []struct {
		name   string
		frozen bool
	}{{"killed", false}, {"frozen", true}} {
		t.Run(tc.name, func(t *testing.T) {
			ep := startEtcd(t)
			px := startProxy(t, ep)
			a, b := newElector(t, px.addr, "a", ttl), newElector(t, ep, "b", ttl)
			ra := lead(t, campaign(a, time.Minute), 15*time.Second)
			cb := campaign(b, time.Minute)
			time.Sleep(ttl) // b waits behind a, a renews
			select {
			case r := <-cb:
				t.Fatalf("b led while a was alive: %+v", r)
			default:
			}
			stopped := time.Now()
			var lastDeadline time.Time
			if tc.frozen {
				px.pause()
				time.Sleep(100 * time.Millisecond) // a renewal's answer on its way
				if lastDeadline = ra.term.SendDeadline(); lastDeadline.IsZero() {
					t.Fatalf("deposed at once: %v", ra.term.Err())
				}
			} else {
				px.kill() // no Resign: the lease is left to expire
			}
			rb := lead(t, cb, ttl+5*time.Second)
			took := rb.at.Sub(stopped)
			if took < ttl-time.Second {
				t.Errorf("b led %v after a stopped: before a's lease (%v) could expire", took, ttl)
			}
			t.Logf("failover took %v (lease_ttl %v)", took.Round(time.Millisecond), ttl)
			if tc.frozen {
				// a deposed itself at its deadline, before b led.
				select {
				case <-ra.term.Deposed():
				case <-time.After(time.Second):
					t.Fatal("the frozen leader is not deposed")
				}
				if !errors.Is(ra.term.Err(), ErrDeposed) || gauge(a.metrics.Leader) != 0 {
					t.Errorf("frozen leader: err %v, leader gauge %v", ra.term.Err(), gauge(a.metrics.Leader))
				}
				if !ra.term.SendDeadline().IsZero() || ra.term.CheckSend() == nil {
					t.Error("a deposed leader may still send")
				}
				if !lastDeadline.Before(rb.at) {
					t.Errorf("a's send deadline %v is not before b's leadership at %v", lastDeadline, rb.at)
				}
			}
		})
	}
}

// writeKinds are the writes a deposed leader tries.
var writeKinds = []struct {
	name string
	ops  []clientv3.Op
}{
	{"put", []clientv3.Op{clientv3.OpPut(testPrefix+"/state/x", "from-a")}},
	{"put new", []clientv3.Op{clientv3.OpPut(testPrefix+"/state/new", "from-a")}},
	{"delete", []clientv3.Op{clientv3.OpDelete(testPrefix + "/state/x")}},
	{"delete prefix", []clientv3.Op{clientv3.OpDelete(testPrefix+"/state/", clientv3.WithPrefix())}},
	{"several", []clientv3.Op{clientv3.OpPut(testPrefix+"/state/y", "from-a"), clientv3.OpDelete(testPrefix + "/state/x")}},
	{"term record", []clientv3.Op{clientv3.OpPut(testPrefix+"/term", "from-a")}},
}

// A deposed leader (its lease lost while frozen, or revoked by an
// operator) whose writes still reach etcd is refused at every one of
// them by etcd itself (the fence, not the replica's own idea of whether
// it leads), each refusal counted, and nothing it sent changes the state
// the new leader wrote.
func TestDeposedRefusedAtEveryWrite(t *testing.T) {
	for _, tc := range []struct {
		name    string
		depose  func(t *testing.T, a *Term, px *proxy, op *clientv3.Client)
		because error
	}{
		{"frozen past its lease", func(t *testing.T, a *Term, px *proxy, _ *clientv3.Client) { px.pause() }, ErrDeadlinePassed},
		{"lease revoked", func(t *testing.T, a *Term, _ *proxy, op *clientv3.Client) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if _, err := op.Revoke(ctx, a.session.Lease()); err != nil {
				t.Fatal(err)
			}
		}, ErrSessionLost},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ep := startEtcd(t)
			px := startProxy(t, ep)
			op := rawClient(t, ep)
			a, b := newElector(t, px.addr, "a", ttl), newElector(t, ep, "b", ttl)
			ra := lead(t, campaign(a, time.Minute), 15*time.Second)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if _, err := ra.term.Write(ctx, Put("x", []byte("a-1")), Put("y", []byte("a-1"))); err != nil {
				t.Fatalf("the leader's write: %v", err)
			}
			cb := campaign(b, time.Minute)
			tc.depose(t, ra.term, px, op)
			rb := lead(t, cb, ttl+5*time.Second)
			if _, err := rb.term.Write(ctx, Put("x", []byte("b-1"))); err != nil {
				t.Fatalf("the new leader's write: %v", err)
			}
			px.resume()
			waitFor(t, 5*time.Second, "a deposed", func() bool { return ra.term.Err() != nil })
			if !errors.Is(ra.term.Err(), tc.because) || !errors.Is(ra.term.Err(), ErrDeposed) {
				t.Errorf("a deposed because %v, want %v", ra.term.Err(), tc.because)
			}
			// Through the API: nothing is sent.
			if _, err := ra.term.Write(ctx, Put("x", []byte("from-a"))); !errors.Is(err, ErrDeposed) {
				t.Errorf("Write on a deposed term: %v, want ErrDeposed", err)
			}
			before, _ := op.Get(ctx, testPrefix+"/", clientv3.WithPrefix())
			// Straight to etcd: each is refused by the fence.
			for i, w := range writeKinds {
				_, err := ra.term.txn(ctx, w.ops)
				if !errors.Is(err, ErrFenced) {
					t.Errorf("%s: %v, want ErrFenced", w.name, err)
				}
				if got := gauge(a.metrics.FencingRefusals); got != float64(i+1) {
					t.Errorf("%s: fencing refusals %v, want %d", w.name, got, i+1)
				}
			}
			after, _ := op.Get(ctx, testPrefix+"/", clientv3.WithPrefix())
			if before.Header.Revision != after.Header.Revision || fmt.Sprint(after.Kvs) != fmt.Sprint(before.Kvs) {
				t.Errorf("the deposed leader changed etcd: revision %d -> %d", before.Header.Revision, after.Header.Revision)
			}
			x, _ := op.Get(ctx, testPrefix+"/state/x")
			if len(x.Kvs) != 1 || string(x.Kvs[0].Value) != "b-1" {
				t.Errorf("state x %v, want the new leader's b-1", x.Kvs)
			}
			if gauge(b.metrics.FencingRefusals) != 0 || rb.term.Err() != nil {
				t.Errorf("the new leader: refusals %v, err %v", gauge(b.metrics.FencingRefusals), rb.term.Err())
			}
		})
	}
}

// The send deadline is the lease's end as last renewed, less the margin:
// it moves with each renewal, stops when the renewals stop (a frozen
// leader), and once passed CheckSend refuses and the term ends.
func TestSendDeadline(t *testing.T) {
	const ttl = 3 * time.Second
	margin := ttl / 4
	ep := startEtcd(t)
	px := startProxy(t, ep)
	a := newElector(t, px.addr, "a", ttl)
	start := time.Now()
	ra := lead(t, campaign(a, time.Minute), 15*time.Second)
	d0 := ra.term.SendDeadline()
	if d0.Before(start.Add(ttl-margin)) || d0.After(ra.at.Add(ttl-margin)) {
		t.Errorf("first deadline %v after the campaign started, want in [ttl-margin, ttl-margin+%v]", d0.Sub(start), ra.took)
	}
	if err := ra.term.CheckSend(); err != nil {
		t.Fatalf("CheckSend while leading: %v", err)
	}
	// Renewals every ttl/3 move it.
	waitFor(t, 2*ttl, "the deadline moving", func() bool { return ra.term.SendDeadline().Sub(d0) >= ttl/3-200*time.Millisecond })
	if err := ra.term.CheckSend(); err != nil {
		t.Fatalf("CheckSend while renewing: %v", err)
	}
	px.pause()
	frozen := time.Now()
	last := ra.term.SendDeadline()
	if last.After(frozen.Add(ttl - margin)) {
		t.Errorf("deadline %v after the freeze, beyond ttl-margin", last.Sub(frozen))
	}
	// No renewal gets through: the deadline stays, then passes.
	for {
		err := ra.term.CheckSend()
		now := time.Now()
		if err != nil {
			// The deadline, or the client's own view of the lease
			// (its keepalives unanswered for a TTL), whichever first.
			if !errors.Is(err, ErrDeadlinePassed) && !errors.Is(err, ErrSessionLost) {
				t.Fatalf("CheckSend: %v, want ErrDeadlinePassed or ErrSessionLost", err)
			}
			t.Logf("deposed %v after the freeze, deadline at %v: %v", now.Sub(frozen).Round(time.Millisecond), last.Sub(frozen).Round(time.Millisecond), err)
			break
		}
		if now.After(last) {
			t.Fatalf("CheckSend allowed a send %v after the deadline", now.Sub(last))
		}
		if d := ra.term.SendDeadline(); !d.Equal(last) {
			t.Fatalf("the deadline moved while frozen: %v -> %v", last, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case <-ra.term.Deposed():
	case <-time.After(time.Second):
		t.Fatal("not deposed when the deadline passed")
	}
	if gauge(a.metrics.Leader) != 0 || !ra.term.SendDeadline().IsZero() {
		t.Errorf("after the deadline: leader %v, deadline %v", gauge(a.metrics.Leader), ra.term.SendDeadline())
	}
	if ra.term.Context().Err() == nil {
		t.Error("the term's context is not done")
	}
}

// The takeover warm-up, in order: elected, a fenced no-op write (the term
// record), a linearizable load of the whole state (past one page), and
// only then the replica reports itself leader.
func TestWarmUpOrder(t *testing.T) {
	ep := startEtcd(t)
	op := rawClient(t, ep)
	a, b := newElector(t, ep, "a", ttl), newElector(t, ep, "b", ttl)
	ra := lead(t, campaign(a, time.Minute), 15*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const n = pageSize + 250
	for i := 0; i < n; i += 100 {
		var ops []Op
		for j := i; j < i+100 && j < n; j++ {
			ops = append(ops, Put(fmt.Sprintf("k%05d", j), []byte(fmt.Sprintf("v%d", j))))
		}
		if _, err := ra.term.Write(ctx, ops...); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	var steps []string
	b.trace = func(step string, term *Term) {
		mu.Lock()
		defer mu.Unlock()
		leader := gauge(b.metrics.Leader)
		steps = append(steps, fmt.Sprintf("%s leader=%v", step, leader))
		switch step {
		case "fenced_noop":
			rec, err := op.Get(ctx, testPrefix+"/term")
			if err != nil || len(rec.Kvs) != 1 || !strings.Contains(string(rec.Kvs[0].Value), `"leader":"http://b:9877"`) ||
				!strings.Contains(string(rec.Kvs[0].Value), fmt.Sprintf(`"rev":%d`, term.Rev())) {
				t.Errorf("term record at the no-op step: %v %v", rec, err)
			}
		case "loaded":
			if len(term.state) != n {
				t.Errorf("loaded %d keys, want %d", len(term.state), n)
			}
		}
	}
	cb := campaign(b, time.Minute)
	if err := ra.term.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	rb := lead(t, cb, 10*time.Second)
	mu.Lock()
	got := strings.Join(steps, ", ")
	mu.Unlock()
	if want := "elected leader=0, fenced_noop leader=0, loaded leader=0, leader leader=1"; got != want {
		t.Errorf("steps:\n%s\nwant:\n%s", got, want)
	}
	state := rb.term.State()
	if len(state) != n || state[0].Key != "k00000" || string(state[0].Value) != "v0" || state[n-1].Key != fmt.Sprintf("k%05d", n-1) {
		t.Fatalf("state: %d keys, first %+v", len(state), state[0])
	}
	for i, kv := range state {
		if kv.Key != fmt.Sprintf("k%05d", i) || string(kv.Value) != fmt.Sprintf("v%d", i) {
			t.Fatalf("state[%d] = %s=%s", i, kv.Key, kv.Value)
		}
	}
	rec, err := op.Get(ctx, testPrefix+"/term")
	if err != nil || len(rec.Kvs) != 1 {
		t.Fatal(rec, err)
	}
	if rec.Kvs[0].ModRevision > rb.term.LoadRevision() {
		t.Errorf("term record written at %d, after the load at %d", rec.Kvs[0].ModRevision, rb.term.LoadRevision())
	}
}

// A phantom leadership (etcd#11007: Campaign returns although the leader
// key is gone, e.g. its lease expired while it waited) is caught by the
// warm-up's fenced no-op write: no term, nothing loaded, not leader.
func TestPhantomLeadership(t *testing.T) {
	ep := startEtcd(t)
	op := rawClient(t, ep)
	a := newElector(t, ep, "a", ttl)
	var steps []string
	a.trace = func(step string, term *Term) {
		steps = append(steps, step)
		if step == "elected" {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if _, err := op.Delete(ctx, term.Key()); err != nil {
				t.Error(err)
			}
		}
	}
	r := <-campaign(a, 15*time.Second)
	if !errors.Is(r.err, ErrFenced) || r.term != nil {
		t.Fatalf("campaign: %v, %v; want ErrFenced and no term", r.term, r.err)
	}
	if strings.Join(steps, ",") != "elected" || gauge(a.metrics.Leader) != 0 || gauge(a.metrics.FencingRefusals) != 1 {
		t.Errorf("steps %v, leader %v, refusals %v", steps, gauge(a.metrics.Leader), gauge(a.metrics.FencingRefusals))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if rec, _ := op.Get(ctx, testPrefix+"/term"); len(rec.Kvs) != 0 {
		t.Errorf("the phantom wrote the term record: %s", rec.Kvs[0].Value)
	}
}

// Run campaigns again after a term ends: a leader whose key is deleted
// under it stops, campaigns and leads a new term; an
// observer's Watch follows the leader and counts the change.
func TestRunCampaignsAgain(t *testing.T) {
	ep := startEtcd(t)
	op := rawClient(t, ep)
	a, obs := newElector(t, ep, "a", ttl), newElector(t, ep, "obs", ttl)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	go obs.Watch(ctx)
	terms := make(chan *Term, 4)
	runDone := make(chan struct{})
	go func() {
		defer close(runDone)
		a.Run(ctx, func(t *Term) {
			terms <- t
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-t.Context().Done():
					return
				case <-tick.C:
					_, _ = t.Write(t.Context(), Put("beat", []byte("1")))
				}
			}
		})
	}()
	next := func() *Term {
		select {
		case term := <-terms:
			return term
		case <-time.After(15 * time.Second):
			t.Fatal("no term within 15 s")
		}
		return nil
	}
	first := next()
	waitFor(t, 10*time.Second, "the observer seeing a", func() bool { u, ok := obs.LeaderURL(); return ok && u == "http://a:9877" })
	if _, err := op.Delete(ctx, first.Key()); err != nil {
		t.Fatal(err)
	}
	second := next()
	// The key's deletion seen by the term's watch, or its next write
	// refused: whichever first.
	if (!errors.Is(first.Err(), ErrSessionLost) && !errors.Is(first.Err(), ErrFenced)) || second.Rev() <= first.Rev() {
		t.Errorf("first term ended with %v; second rev %d after %d", first.Err(), second.Rev(), first.Rev())
	}
	if gauge(a.metrics.Leader) != 1 {
		t.Errorf("leader %v", gauge(a.metrics.Leader))
	}
	waitFor(t, 10*time.Second, "the observer counting the new term", func() bool { return gauge(obs.metrics.LeaderChanges) >= 1 })
	if u, ok := obs.LeaderURL(); !ok || u != "http://a:9877" {
		t.Errorf("observer: leader %q %v", u, ok)
	}
	cancel()
	select {
	case <-runDone:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	// Run resigned the live term on its way out: nobody leads.
	lctx, lcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer lcancel()
	if _, err := obs.Leader(lctx); !errors.Is(err, ErrNoLeader) {
		t.Errorf("after Run: %v, want ErrNoLeader", err)
	}
}

// A leader whose key is deleted (by an operator, or its lease revoked)
// stops reporting itself leader at once, before any write of its own is
// refused; a watch broken while etcd compacted past the term's revision
// (so that it cannot resume) does not hide it.
func TestKeyDeletedDeposes(t *testing.T) {
	for _, tc := range []struct {
		name    string
		compact bool
	}{{"deleted", false}, {"deleted after a compaction", true}} {
		t.Run(tc.name, func(t *testing.T) {
			ep := startEtcd(t)
			px := startProxy(t, ep)
			op := rawClient(t, ep)
			a := newElector(t, px.addr, "a", ttl)
			r := lead(t, campaign(a, time.Minute), 15*time.Second)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if tc.compact {
				var rev int64
				for i := range 20 {
					resp, err := op.Put(ctx, testPrefix+"/other", fmt.Sprint(i))
					if err != nil {
						t.Fatal(err)
					}
					rev = resp.Header.Revision
				}
				px.pause()
				if _, err := op.Compact(ctx, rev); err != nil {
					t.Fatal(err)
				}
				px.drop()
				px.resume()
				time.Sleep(500 * time.Millisecond) // a reconnects; its watch cannot resume
			}
			if gauge(a.metrics.Leader) != 1 || r.term.Err() != nil {
				t.Fatalf("before: leader %v, err %v", gauge(a.metrics.Leader), r.term.Err())
			}
			start := time.Now()
			if _, err := op.Delete(ctx, r.term.Key()); err != nil {
				t.Fatal(err)
			}
			select {
			case <-r.term.Deposed():
			case <-time.After(3 * time.Second):
				t.Fatal("not deposed within 3 s of its key's deletion")
			}
			t.Logf("deposed %v after the deletion", time.Since(start).Round(time.Millisecond))
			if !errors.Is(r.term.Err(), ErrSessionLost) || gauge(a.metrics.Leader) != 0 || gauge(a.metrics.FencingRefusals) != 0 {
				t.Errorf("err %v, leader %v, refusals %v", r.term.Err(), gauge(a.metrics.Leader), gauge(a.metrics.FencingRefusals))
			}
		})
	}
}
