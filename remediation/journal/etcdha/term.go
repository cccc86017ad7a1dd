package etcdha

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/go-kit/log/level"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Term is one leadership of this replica: from its election until it is
// deposed. Its methods are safe for concurrent use.
type Term struct {
	e        *Elector
	session  *concurrency.Session
	election *concurrency.Election
	ttl      time.Duration

	// Set when elected, then read-only.
	key     string
	rev     int64
	state   []KV
	loadRev int64

	// ctx is done when the term ends.
	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	deadline time.Time // the send deadline
	err      error     // why the term ended; nil while it lasts
	done     chan struct{}
}

// KV is one key of the state, relative to Elector.StatePrefix.
type KV struct {
	Key   string
	Value []byte
	// ModRevision is the etcd revision of its last write.
	ModRevision int64
}

// Campaign waits until this replica leads, then warms up: a fenced no-op
// write (the term record at <prefix>/term), which catches a phantom
// leadership (etcd#11007), and a linearizable load of the state. Only then
// does it set vps_remediation_leader to 1 and return the term. ctx bounds
// the wait (the lease's grant and the warm-up are bounded by the lease TTL
// too); the term itself lives until it is deposed or resigns. A replica
// that cannot renew its lease while it waits gives up the campaign
// (ErrSessionLost, ErrDeadlinePassed). One campaign at a time per Elector.
func (e *Elector) Campaign(ctx context.Context) (*Term, error) {
	e.mu.Lock()
	live := e.term
	e.mu.Unlock()
	switch {
	case e.ctx.Err() != nil:
		return nil, errors.New("etcdha: campaign: the elector is closed")
	case live != nil && live.Err() == nil:
		return nil, errors.New("etcdha: campaign: this replica already leads")
	}
	ttl := int64(e.cfg.LeaseTTL / time.Second)
	sent := time.Now()
	gctx, gcancel := context.WithTimeout(ctx, e.cfg.LeaseTTL)
	grant, err := e.client.Grant(gctx, ttl)
	gcancel()
	e.metrics.up(err)
	if err != nil {
		return nil, fmt.Errorf("etcdha: campaign: grant a lease: %w", err)
	}
	tctx, tcancel := context.WithCancel(e.ctx)
	session, err := concurrency.NewSession(e.client, concurrency.WithLease(grant.ID), concurrency.WithTTL(int(ttl)), concurrency.WithContext(tctx))
	if err != nil {
		tcancel()
		e.revoke(grant.ID)
		return nil, fmt.Errorf("etcdha: campaign: session: %w", err)
	}
	t := &Term{
		e: e, session: session, ttl: time.Duration(grant.TTL) * time.Second,
		ctx: tctx, cancel: tcancel, done: make(chan struct{}),
	}
	t.deadline = sent.Add(t.ttl - e.cfg.SendMargin)
	e.wg.Add(2)
	go t.renew()
	go t.monitor()

	t.election = concurrency.NewElection(session, e.electionPrefix())
	cctx, ccancel := context.WithCancel(ctx)
	stop := context.AfterFunc(tctx, ccancel)
	err = t.election.Campaign(cctx, e.cfg.AdvertiseURL)
	stop()
	ccancel()
	if err != nil {
		t.depose(ErrResigned)
		if terr := t.Err(); !errors.Is(terr, ErrResigned) {
			err = terr // the session ended first
		}
		return nil, fmt.Errorf("etcdha: campaign: %w", err)
	}
	t.key, t.rev = t.election.Key(), t.election.Rev()
	e.wg.Add(1)
	go t.watchKey()
	e.step("elected", t)
	// A warm-up longer than a lease is no use: the term would be gone.
	wctx, wcancel := context.WithTimeout(ctx, e.cfg.LeaseTTL)
	err = t.warmUp(wctx)
	wcancel()
	if err != nil {
		t.depose(ErrResigned)
		return nil, fmt.Errorf("etcdha: takeover warm-up: %w", err)
	}
	// Leader only if not deposed meanwhile; stop, which takes the term's
	// lock then this one, reads e.term to set the gauge back to 0.
	e.mu.Lock()
	if err := t.Err(); err != nil {
		e.mu.Unlock()
		return nil, fmt.Errorf("etcdha: takeover warm-up: %w", err)
	}
	e.term = t
	e.metrics.Leader.Set(1)
	e.mu.Unlock()
	level.Info(e.logger).Log("msg", "this replica is the remediation leader", "leader_key", t.key, "rev", t.rev, "state_keys", len(t.state))
	e.step("leader", t)
	return t, nil
}

// warmUp proves the leadership with a fenced no-op write, then loads the
// state linearizably.
func (t *Term) warmUp(ctx context.Context) error {
	rec, err := json.Marshal(struct {
		Leader string    `json:"leader"`
		Rev    int64     `json:"rev"`
		Since  time.Time `json:"since"`
	}{t.e.cfg.AdvertiseURL, t.rev, time.Now().UTC()})
	if err != nil {
		return fmt.Errorf("term record: %w", err)
	}
	if _, err := t.txn(ctx, []clientv3.Op{clientv3.OpPut(t.e.termKey(), string(rec))}); err != nil {
		return fmt.Errorf("fenced no-op write: %w", err)
	}
	t.e.step("fenced_noop", t)
	kvs, rev, err := t.e.load(ctx)
	if err != nil {
		return err
	}
	t.state, t.loadRev = kvs, rev
	t.e.step("loaded", t)
	return t.Err()
}

// pageSize is how many keys one request of the load reads.
const pageSize = 1000

// load reads every key under the state prefix at one revision: the
// first page linearizably, the others at that page's revision.
func (e *Elector) load(ctx context.Context) ([]KV, int64, error) {
	pfx := e.StatePrefix()
	end := clientv3.GetPrefixRangeEnd(pfx)
	var out []KV
	var rev int64
	from := pfx
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(pageSize), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := e.client.Get(ctx, from, opts...)
		e.metrics.up(err)
		if err != nil {
			return nil, 0, fmt.Errorf("load the state: %w", err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			out = append(out, KV{Key: strings.TrimPrefix(string(kv.Key), pfx), Value: kv.Value, ModRevision: kv.ModRevision})
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return out, rev, nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// Rev is the term's fencing token: its leader key's create revision.
func (t *Term) Rev() int64 { return t.rev }

// Key is the term's leader key.
func (t *Term) Key() string { return t.key }

// State is the state as the warm-up loaded it, by key.
func (t *Term) State() []KV { return t.state }

// LoadRevision is the etcd revision the warm-up loaded the state at.
func (t *Term) LoadRevision() int64 { return t.loadRev }

// Context is done when the term ends: the engine's work as leader hangs
// from it, so that a deposed leader stops at once.
func (t *Term) Context() context.Context { return t.ctx }

// Deposed is closed when the term ends.
func (t *Term) Deposed() <-chan struct{} { return t.done }

// Err is nil while the term leads, then why it ended (wrapping
// ErrDeposed).
func (t *Term) Err() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.err
}

// SendDeadline is the time until which this leader may still send a
// provider call: the lease's end as this replica last renewed it (measured
// from before the renewal was sent), less the send margin. The zero time
// once the term has ended.
func (t *Term) SendDeadline() time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.err != nil {
		return time.Time{}
	}
	return t.deadline
}

// CheckSend is what the engine calls right before a provider request
// leaves (after its fenced "sending" record): nil while the term leads and
// its send deadline is ahead; else the reason, and a deadline that has
// passed ends the term (ErrDeadlinePassed).
func (t *Term) CheckSend() error {
	t.mu.Lock()
	err, deadline := t.err, t.deadline
	t.mu.Unlock()
	if err != nil {
		return err
	}
	if !time.Now().Before(deadline) {
		t.depose(ErrDeadlinePassed)
		return t.Err()
	}
	return nil
}

// Op is one change of a fenced write, its key relative to
// Elector.StatePrefix.
type Op struct {
	key    string
	value  []byte
	del    bool
	prefix bool
}

// Put sets key to value.
func Put(key string, value []byte) Op { return Op{key: key, value: value} }

// Delete removes key.
func Delete(key string) Op { return Op{key: key, del: true} }

// DeletePrefix removes every key that starts with prefix (not empty).
func DeletePrefix(prefix string) Op { return Op{key: prefix, del: true, prefix: true} }

// Write applies ops in one transaction fenced on the term's leader key,
// and returns its revision. A refused fence ends the term and returns
// ErrFenced (counted; never retry it); a term that has ended writes
// nothing and returns its reason. Any other error is etcd's or the
// network's: the write may or may not have been applied, so the caller
// treats it as not recorded and does not act on it. etcd takes at most
// 128 operations in one transaction by default, and refuses one whose
// operations overlap (a put under a prefix that it also deletes).
func (t *Term) Write(ctx context.Context, ops ...Op) (int64, error) {
	if err := t.Err(); err != nil {
		return 0, err
	}
	pfx := t.e.StatePrefix()
	eops := make([]clientv3.Op, 0, len(ops))
	for _, op := range ops {
		if op.key == "" {
			return 0, errors.New("etcdha: write: empty key")
		}
		k := pfx + op.key
		switch {
		case op.prefix:
			eops = append(eops, clientv3.OpDelete(k, clientv3.WithPrefix()))
		case op.del:
			eops = append(eops, clientv3.OpDelete(k))
		default:
			eops = append(eops, clientv3.OpPut(k, string(op.value)))
		}
	}
	// A write still waiting when the term ends is given up.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(t.ctx, cancel)
	defer stop()
	return t.txn(ctx, eops)
}

// txn commits ops if the term's leader key still has its create
// revision. It does not look at the term's own idea of whether it leads:
// etcd decides.
func (t *Term) txn(ctx context.Context, ops []clientv3.Op) (int64, error) {
	resp, err := t.e.client.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(t.key), "=", t.rev)).Then(ops...).Commit()
	t.e.metrics.up(err)
	if err != nil {
		return 0, fmt.Errorf("etcdha: fenced write: %w", err)
	}
	if !resp.Succeeded {
		t.e.metrics.FencingRefusals.Inc()
		t.depose(ErrFenced)
		return 0, ErrFenced
	}
	return resp.Header.Revision, nil
}

// Resign ends the term and revokes its lease, which deletes its leader
// key: another replica can lead at once.
func (t *Term) Resign(ctx context.Context) error {
	if !t.stop(ErrResigned) {
		return nil // ended before: its lease is being revoked
	}
	_, err := t.e.client.Revoke(ctx, t.session.Lease())
	if err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return fmt.Errorf("etcdha: resign: %w", err)
	}
	return nil
}

// depose ends the term for reason and revokes its lease in the
// background (an expired lease makes that a no-op).
func (t *Term) depose(reason error) {
	if t.stop(reason) {
		t.e.revoke(t.session.Lease())
	}
}

// stop ends the term for reason: once (it reports whether this call did).
func (t *Term) stop(reason error) bool {
	t.mu.Lock()
	if t.err != nil {
		t.mu.Unlock()
		return false
	}
	t.err = reason
	close(t.done)
	t.mu.Unlock()
	t.cancel()
	e := t.e
	e.mu.Lock()
	if e.term == t {
		e.term = nil
		e.metrics.Leader.Set(0)
		level.Warn(e.logger).Log("msg", "this replica is no longer the remediation leader; remediation stops", "reason", reason, "leader_key", t.key, "rev", t.rev)
	}
	e.mu.Unlock()
	return true
}

// revoke revokes a lease in the background, bounded by the lease TTL.
func (e *Elector) revoke(id clientv3.LeaseID) {
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), e.cfg.LeaseTTL)
		defer cancel()
		_, _ = e.client.Revoke(ctx, id)
	}()
}

// renew renews the lease every third of its TTL and moves the send
// deadline to the renewal's send time + TTL - margin; etcd saying the
// lease is gone ends the term.
func (t *Term) renew() {
	defer t.e.wg.Done()
	every := t.ttl / 3
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-t.ctx.Done():
			return
		case <-tick.C:
		}
		sent := time.Now()
		ctx, cancel := context.WithTimeout(t.ctx, every)
		resp, err := t.e.client.KeepAliveOnce(ctx, t.session.Lease())
		cancel()
		if t.ctx.Err() != nil {
			return
		}
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			t.depose(ErrSessionLost)
			return
		}
		t.e.metrics.up(err)
		if err != nil || resp.TTL <= 0 {
			continue
		}
		t.mu.Lock()
		if d := sent.Add(time.Duration(resp.TTL)*time.Second - t.e.cfg.SendMargin); d.After(t.deadline) {
			t.deadline = d
		}
		t.mu.Unlock()
	}
}

// monitor ends the term when its session ends or its send deadline
// passes.
func (t *Term) monitor() {
	defer t.e.wg.Done()
	timer := time.NewTimer(time.Until(t.SendDeadline()))
	defer timer.Stop()
	for {
		select {
		case <-t.ctx.Done():
			return
		case <-t.session.Done():
			t.depose(ErrSessionLost)
			return
		case <-timer.C:
			t.mu.Lock()
			left := time.Until(t.deadline)
			t.mu.Unlock()
			if left <= 0 {
				t.depose(ErrDeadlinePassed)
				return
			}
			timer.Reset(left)
		}
	}
}

// watchKey ends the term as soon as its leader key is deleted (its lease
// expired or revoked, or an operator deleted it): the replica stops
// reporting itself leader without waiting for its next write's refusal.
// A watch that breaks (etcd lost its leader, the connection, a compaction)
// is opened again after a read of the key, so no deletion is missed.
func (t *Term) watchKey() {
	defer t.e.wg.Done()
	from := t.rev
	for t.ctx.Err() == nil {
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(t.ctx))
		for resp := range t.e.client.Watch(wctx, t.key, clientv3.WithRev(from), clientv3.WithFilterPut()) {
			for _, ev := range resp.Events {
				if ev.Type == clientv3.EventTypeDelete {
					cancel()
					t.depose(ErrSessionLost)
					return
				}
			}
			if resp.Header.Revision >= from {
				from = resp.Header.Revision + 1
			}
		}
		cancel()
		pause := time.NewTimer(100 * time.Millisecond)
		select {
		case <-t.ctx.Done():
		case <-pause.C:
		}
		pause.Stop()
		// Whatever happened while no watch was open.
		rctx, rcancel := context.WithTimeout(t.ctx, t.ttl/3)
		resp, err := t.e.client.Get(rctx, t.key)
		rcancel()
		if err != nil {
			continue
		}
		if len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision != t.rev {
			t.depose(ErrSessionLost)
			return
		}
		from = resp.Header.Revision + 1
	}
}
