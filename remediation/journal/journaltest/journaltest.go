// Package journaltest is the conformance test of a journal.Store: every
// implementation (bbolt, etcd) runs the same cases.
package journaltest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	"github.com/vps-exporter/vps_exporter/remediation/journal"
)

// Buckets are the buckets the stores under test must hold.
var Buckets = [][]byte{[]byte("alpha"), []byte("beta")}

// Opener opens an empty store with Buckets for a test. reopen closes it
// and opens it again from what it committed (a restart, a takeover).
type Opener func(t *testing.T) (s journal.Store, reopen func(t *testing.T) journal.Store)

func u64(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}

var errBoom = errors.New("boom")

// put writes kvs (key, value, ...) in bucket in one Update.
func put(t *testing.T, s journal.Store, bucket string, kvs ...string) {
	t.Helper()
	err := s.Update(func(tx journal.Tx) error {
		b := tx.Bucket([]byte(bucket))
		for i := 0; i+1 < len(kvs); i += 2 {
			if err := b.Put([]byte(kvs[i]), []byte(kvs[i+1])); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("update: %v", err)
	}
}

// dump is bucket's keys and values in order, "k=v" joined by ",".
func dump(t *testing.T, s journal.Store, bucket string) string {
	t.Helper()
	var buf bytes.Buffer
	err := s.View(func(tx journal.Tx) error {
		return tx.Bucket([]byte(bucket)).ForEach(func(k, v []byte) error {
			if buf.Len() > 0 {
				buf.WriteByte(',')
			}
			fmt.Fprintf(&buf, "%s=%s", k, v)
			return nil
		})
	})
	if err != nil {
		t.Fatalf("view: %v", err)
	}
	return buf.String()
}

// walk is what a cursor meets: forward from First, backward from Last,
// and forward from Seek(seek).
func walk(t *testing.T, s journal.Store, bucket, seek string) (fwd, back, sought string) {
	t.Helper()
	err := s.View(func(tx journal.Tx) error {
		c := tx.Bucket([]byte(bucket)).Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			fwd += string(k) + " "
		}
		for k, _ := c.Last(); k != nil; k, _ = c.Prev() {
			back += string(k) + " "
		}
		for k, _ := c.Seek([]byte(seek)); k != nil; k, _ = c.Next() {
			sought += string(k) + " "
		}
		return nil
	})
	if err != nil {
		t.Fatalf("view: %v", err)
	}
	return fwd, back, sought
}

// Run runs the conformance cases on stores that open opens.
func Run(t *testing.T, open Opener) {
	cases := []struct {
		name string
		run  func(t *testing.T, s journal.Store, reopen func(*testing.T) journal.Store)
	}{
		{"committed writes are read back, after a reopen too", func(t *testing.T, s journal.Store, reopen func(*testing.T) journal.Store) {
			put(t, s, "alpha", "b", "2", "a", "1", "c", "3")
			put(t, s, "beta", "a", "other")
			put(t, s, "alpha", "b", "two")
			if got, want := dump(t, s, "alpha"), "a=1,b=two,c=3"; got != want {
				t.Errorf("alpha = %q, want %q", got, want)
			}
			s = reopen(t)
			if got, want := dump(t, s, "alpha"), "a=1,b=two,c=3"; got != want {
				t.Errorf("after reopen: alpha = %q, want %q", got, want)
			}
			if got, want := dump(t, s, "beta"), "a=other"; got != want {
				t.Errorf("after reopen: beta = %q, want %q", got, want)
			}
		}},
		{"a failed update applies nothing", func(t *testing.T, s journal.Store, reopen func(*testing.T) journal.Store) {
			put(t, s, "alpha", "a", "1")
			err := s.Update(func(tx journal.Tx) error {
				b := tx.Bucket([]byte("alpha"))
				if err := b.Put([]byte("b"), []byte("2")); err != nil {
					return err
				}
				if err := b.Delete([]byte("a")); err != nil {
					return err
				}
				if _, err := b.NextSequence(); err != nil {
					return err
				}
				if got := string(b.Get([]byte("b"))); got != "2" {
					t.Errorf("inside the update: b = %q, want its own write", got)
				}
				return errBoom
			})
			if !errors.Is(err, errBoom) {
				t.Fatalf("update: %v, want the function's error", err)
			}
			if got := dump(t, s, "alpha"); got != "a=1" {
				t.Errorf("alpha = %q after a failed update, want a=1", got)
			}
			_ = s.View(func(tx journal.Tx) error {
				if n := tx.Bucket([]byte("alpha")).Sequence(); n != 0 {
					t.Errorf("sequence %d after a failed update, want 0", n)
				}
				return nil
			})
			if got := dump(t, reopen(t), "alpha"); got != "a=1" {
				t.Errorf("after reopen: alpha = %q, want a=1", got)
			}
		}},
		{"cursors walk in byte order", func(t *testing.T, s journal.Store, _ func(*testing.T) journal.Store) {
			put(t, s, "alpha", "b\x00y", "", "a", "", "b", "", "ba", "", "c", "")
			fwd, back, sought := walk(t, s, "alpha", "b\x00")
			if want := "a b b\x00y ba c "; fwd != want {
				t.Errorf("forward %q, want %q", fwd, want)
			}
			if want := "c ba b\x00y b a "; back != want {
				t.Errorf("backward %q, want %q", back, want)
			}
			if want := "b\x00y ba c "; sought != want {
				t.Errorf("from Seek %q, want %q", sought, want)
			}
			_, _, past := walk(t, s, "alpha", "d")
			if past != "" {
				t.Errorf("Seek past the end found %q", past)
			}
			_, _, empty := walk(t, s, "beta", "")
			if empty != "" {
				t.Errorf("an empty bucket walked %q", empty)
			}
		}},
		{"big-endian sequence keys keep their order", func(t *testing.T, s journal.Store, _ func(*testing.T) journal.Store) {
			err := s.Update(func(tx journal.Tx) error {
				b := tx.Bucket([]byte("alpha"))
				for _, n := range []uint64{300, 1, 256, 2, 1 << 40} {
					if err := b.Put(u64(n), []byte(fmt.Sprint(n))); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			_ = s.View(func(tx journal.Tx) error {
				c := tx.Bucket([]byte("alpha")).Cursor()
				for k, v := c.Last(); k != nil; k, v = c.Prev() {
					got = append(got, string(v))
				}
				return nil
			})
			if want := "[1099511627776 300 256 2 1]"; fmt.Sprint(got) != want {
				t.Errorf("newest first: %v, want %s", got, want)
			}
		}},
		{"cursor delete and deletes after a walk", func(t *testing.T, s journal.Store, reopen func(*testing.T) journal.Store) {
			put(t, s, "alpha", "a", "1", "b", "2", "c", "3", "d", "4", "e", "5")
			err := s.Update(func(tx journal.Tx) error {
				b := tx.Bucket([]byte("alpha"))
				c := b.Cursor()
				// Trim from the front, as the suppression history does.
				for n := b.KeyN() - 3; n > 0; n-- {
					if k, _ := c.First(); k == nil {
						break
					}
					if err := c.Delete(); err != nil {
						return err
					}
				}
				// A cursor delete then a delete by key (ResetServer, Prune).
				if k, _ := c.Seek([]byte("d")); string(k) != "d" {
					t.Errorf("Seek(d) found %q", k)
				}
				if err := c.Delete(); err != nil {
					return err
				}
				if v := b.Get([]byte("d")); v != nil {
					t.Errorf("d = %q after its delete, inside the update", v)
				}
				return b.Delete([]byte("missing"))
			})
			if err != nil {
				t.Fatal(err)
			}
			if got := dump(t, s, "alpha"); got != "c=3,e=5" {
				t.Errorf("alpha = %q, want c=3,e=5", got)
			}
			_ = s.View(func(tx journal.Tx) error {
				if n := tx.Bucket([]byte("alpha")).KeyN(); n != 2 {
					t.Errorf("KeyN %d, want 2", n)
				}
				return nil
			})
			if got := dump(t, reopen(t), "alpha"); got != "c=3,e=5" {
				t.Errorf("after reopen: alpha = %q, want c=3,e=5", got)
			}
		}},
		{"sequences count and persist", func(t *testing.T, s journal.Store, reopen func(*testing.T) journal.Store) {
			var got []uint64
			for range 3 {
				err := s.Update(func(tx journal.Tx) error {
					n, err := tx.Bucket([]byte("alpha")).NextSequence()
					got = append(got, n)
					return err
				})
				if err != nil {
					t.Fatal(err)
				}
			}
			if fmt.Sprint(got) != "[1 2 3]" {
				t.Errorf("NextSequence gave %v, want [1 2 3]", got)
			}
			if err := s.Update(func(tx journal.Tx) error { return tx.Bucket([]byte("beta")).SetSequence(41) }); err != nil {
				t.Fatal(err)
			}
			s = reopen(t)
			err := s.Update(func(tx journal.Tx) error {
				if n := tx.Bucket([]byte("alpha")).Sequence(); n != 3 {
					t.Errorf("alpha's sequence %d after reopen, want 3", n)
				}
				n, err := tx.Bucket([]byte("beta")).NextSequence()
				if n != 42 {
					t.Errorf("beta's next sequence %d, want 42", n)
				}
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
		}},
		{"read-only views and unknown buckets", func(t *testing.T, s journal.Store, _ func(*testing.T) journal.Store) {
			put(t, s, "alpha", "a", "1")
			err := s.View(func(tx journal.Tx) error {
				if tx.Bucket([]byte("nope")) != nil {
					t.Error("a bucket that does not exist is not nil")
				}
				b := tx.Bucket([]byte("alpha"))
				if b.Put([]byte("x"), []byte("y")) == nil {
					t.Error("Put in a view succeeded")
				}
				if _, err := b.NextSequence(); err == nil {
					t.Error("NextSequence in a view succeeded")
				}
				if b.Get([]byte("missing")) != nil {
					t.Error("Get of a missing key is not nil")
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if got := dump(t, s, "alpha"); got != "a=1" {
				t.Errorf("alpha = %q, want a=1", got)
			}
			if err := s.CheckSend(); err != nil {
				t.Errorf("CheckSend of a live store: %v", err)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, reopen := open(t)
			tc.run(t, s, reopen)
		})
	}
}
