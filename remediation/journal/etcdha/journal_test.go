package etcdha

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vps-exporter/vps_exporter/remediation/journal"
	"github.com/vps-exporter/vps_exporter/remediation/journal/journaltest"
)

// journalOn campaigns a new elector on endpoint and returns its term's
// journal, initialized (empty, or from the store from).
func journalOn(t *testing.T, endpoint, name string, from journal.Store) (*Journal, *Term) {
	t.Helper()
	r := lead(t, campaign(newElector(t, endpoint, name, ttl), time.Minute), 30*time.Second)
	j, err := NewJournal(r.term, journaltest.Buckets...)
	if err != nil {
		t.Fatal(err)
	}
	if !j.Initialized() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := j.Initialize(ctx, from); err != nil {
			t.Fatal(err)
		}
	}
	return j, r.term
}

func resign(t *testing.T, term *Term) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := term.Resign(ctx); err != nil {
		t.Fatal(err)
	}
}

// The etcd journal passes the same conformance cases as the bbolt file;
// reopening is a takeover: the term resigns, another replica's term loads
// the state.
func TestJournalConformance(t *testing.T) {
	ep := startEtcd(t)
	n := 0
	journaltest.Run(t, func(t *testing.T) (journal.Store, func(*testing.T) journal.Store) {
		// Each case on its own prefix's state: clear what the last left.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := rawClient(t, ep).Delete(ctx, testPrefix+"/", clientv3.WithPrefix()); err != nil {
			t.Fatal(err)
		}
		n++
		j, term := journalOn(t, ep, fmt.Sprintf("r%d", n), nil)
		return j, func(t *testing.T) journal.Store {
			resign(t, term)
			n++
			var next *Journal
			next, term = journalOn(t, ep, fmt.Sprintf("r%d", n), nil)
			return next
		}
	})
}

// A deposed leader's Update is refused (ErrDeposed) and applied nowhere:
// not in its memory, not in etcd; the new leader's state is the truth.
func TestJournalDeposedUpdateRefused(t *testing.T) {
	ep := startEtcd(t)
	op := rawClient(t, ep)
	a, ta := journalOn(t, ep, "a", nil)
	if err := a.Update(func(tx journal.Tx) error { return tx.Bucket([]byte("alpha")).Put([]byte("k"), []byte("a-1")) }); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Its lease revoked by an operator: its key goes, b takes over.
	if _, err := op.Revoke(ctx, ta.session.Lease()); err != nil {
		t.Fatal(err)
	}
	b, _ := journalOn(t, ep, "b", nil)
	before, err := op.Get(ctx, testPrefix+"/state/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	err = a.Update(func(tx journal.Tx) error {
		if _, err := tx.Bucket([]byte("alpha")).NextSequence(); err != nil {
			return err
		}
		return tx.Bucket([]byte("alpha")).Put([]byte("k"), []byte("a-2"))
	})
	if !errors.Is(err, ErrDeposed) {
		t.Fatalf("the deposed leader's update: %v, want ErrDeposed", err)
	}
	if a.CheckSend() == nil {
		t.Error("the deposed leader may still send")
	}
	after, err := op.Get(ctx, testPrefix+"/state/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if after.Header.Revision != before.Header.Revision {
		t.Errorf("etcd changed: revision %d -> %d", before.Header.Revision, after.Header.Revision)
	}
	for name, s := range map[string]journal.Store{"deposed a": a, "new leader b": b} {
		_ = s.View(func(tx journal.Tx) error {
			bk := tx.Bucket([]byte("alpha"))
			if v := string(bk.Get([]byte("k"))); v != "a-1" || bk.Sequence() != 0 {
				t.Errorf("%s: k = %q, sequence %d; want a-1 and 0", name, v, bk.Sequence())
			}
			return nil
		})
	}
}

// An Update that would write more than one etcd transaction takes is
// refused, nothing applied; the state file's import at the first takeover
// is written in several fenced transactions and read back whole.
func TestJournalLimitsAndImport(t *testing.T) {
	ep := startEtcd(t)
	file, err := journal.OpenBolt("test state", filepath.Join(t.TempDir(), "s.db"), time.Second, journaltest.Buckets...)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	const n = 3*MaxTxnOps + 7
	err = file.Update(func(tx journal.Tx) error {
		b := tx.Bucket([]byte("alpha"))
		for i := range n {
			if err := b.Put([]byte(fmt.Sprintf("k%05d", i)), []byte(fmt.Sprint(i))); err != nil {
				return err
			}
		}
		return tx.Bucket([]byte("beta")).SetSequence(77)
	})
	if err != nil {
		t.Fatal(err)
	}
	j, term := journalOn(t, ep, "a", file)
	err = j.Update(func(tx journal.Tx) error {
		b := tx.Bucket([]byte("beta"))
		for i := range MaxTxnOps + 1 {
			if err := b.Put([]byte(fmt.Sprint(i)), nil); err != nil {
				return err
			}
		}
		return nil
	})
	if !errors.Is(err, ErrTxnTooLarge) {
		t.Errorf("an update of %d writes: %v, want ErrTxnTooLarge", MaxTxnOps+1, err)
	}
	if term.Err() != nil {
		t.Errorf("a refused update ended the term: %v", term.Err())
	}
	resign(t, term)
	k, _ := journalOn(t, ep, "b", nil)
	_ = k.View(func(tx journal.Tx) error {
		if got := tx.Bucket([]byte("alpha")).KeyN(); got != n {
			t.Errorf("imported %d keys, want %d", got, n)
		}
		if v := string(tx.Bucket([]byte("alpha")).Get([]byte("k00300"))); v != "300" {
			t.Errorf("k00300 = %q, want 300", v)
		}
		if got := tx.Bucket([]byte("beta")).KeyN(); got != 0 {
			t.Errorf("beta holds %d keys after the refused update, want 0", got)
		}
		if s := tx.Bucket([]byte("beta")).Sequence(); s != 77 {
			t.Errorf("beta's sequence %d, want 77", s)
		}
		return nil
	})
}

// An Update whose outcome etcd does not give (the leader cut off from it)
// is not applied in memory and ends the term: the next term reloads the
// truth from etcd.
func TestJournalUncertainWriteEndsTheTerm(t *testing.T) {
	ep := startEtcd(t)
	px := startProxy(t, ep)
	r := lead(t, campaign(newElector(t, px.addr, "a", ttl), time.Minute), 30*time.Second)
	j, err := NewJournal(r.term, journaltest.Buckets...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := j.Initialize(ctx, nil); err != nil {
		t.Fatal(err)
	}
	px.pause() // nothing reaches etcd, nothing comes back
	start := time.Now()
	err = j.Update(func(tx journal.Tx) error { return tx.Bucket([]byte("alpha")).Put([]byte("k"), []byte("v")) })
	px.resume()
	if !errors.Is(err, ErrDeposed) {
		t.Fatalf("update cut off from etcd: %v, want ErrDeposed", err)
	}
	if took := time.Since(start); took > ttl+5*time.Second {
		t.Errorf("the update took %v, want within the lease TTL and a margin", took)
	}
	if r.term.Err() == nil {
		t.Error("the term still leads after an uncertain write")
	}
	_ = j.View(func(tx journal.Tx) error {
		if v := tx.Bucket([]byte("alpha")).Get([]byte("k")); v != nil {
			t.Errorf("k = %q in memory after a failed update", v)
		}
		return nil
	})
	if err := j.Update(func(tx journal.Tx) error { return nil }); !errors.Is(err, ErrDeposed) {
		t.Errorf("an update after the term ended: %v, want ErrDeposed", err)
	}
}
