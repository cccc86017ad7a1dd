package remediation

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Record is one audit entry: an action taken (or, in dry-run, one that
// would have been), with what the provider answered.
type Record struct {
	Seq      uint64    `json:"seq"`
	Time     time.Time `json:"time"`
	Provider string    `json:"provider"`
	Account  string    `json:"account"`
	ID       string    `json:"id"`
	Action   string    `json:"action"`
	// Source is "rule" or "alert"; Rule names the rule or the alert.
	Source string `json:"source"`
	Rule   string `json:"rule"`
	// Result is success, failed, dry_run, or unknown (the daemon stopped
	// between calling the provider and recording the answer).
	Result   string `json:"result"`
	Response string `json:"response,omitempty"`
	Error    string `json:"error,omitempty"`
	NewID    string `json:"new_id,omitempty"`
}

var (
	bucketAudit    = []byte("audit")
	bucketPending  = []byte("pending")
	bucketCooldown = []byte("cooldown")
	bucketSeen     = []byte("alerts_seen")
	bucketCounts   = []byte("counts")
)

// State is the durable part of remediation: audit log, intents, cooldowns,
// seen alerts and counters, in one bbolt file.
type State struct {
	db *bolt.DB
}

// OpenState opens (or creates) the state file. A file that is not a valid
// store, or is locked by another process, is an error.
func OpenState(path string) (*State, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open remediation state %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketAudit, bucketPending, bucketCooldown, bucketSeen, bucketCounts} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("initialize remediation state %s: %w", path, err)
	}
	return &State{db: db}, nil
}

// Close closes the file.
func (s *State) Close() error { return s.db.Close() }

func serverKey(provider, account, id string) string {
	return provider + "\x00" + account + "\x00" + id
}

func u64(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}

// Begin records the intent to act before the provider is called, and
// starts the server's cooldown: if the daemon dies during the call, the
// intent survives and the action is not repeated blindly.
func (s *State) Begin(r *Record) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		a := tx.Bucket(bucketAudit)
		seq, err := a.NextSequence()
		if err != nil {
			return err
		}
		r.Seq = seq
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		if err := tx.Bucket(bucketPending).Put(u64(seq), b); err != nil {
			return err
		}
		return tx.Bucket(bucketCooldown).Put([]byte(serverKey(r.Provider, r.Account, r.ID)), u64(uint64(r.Time.UnixNano())))
	})
}

// Finish writes the audit record, clears the intent and counts the result.
func (s *State) Finish(r *Record, countKey string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		if err := tx.Bucket(bucketAudit).Put(u64(r.Seq), b); err != nil {
			return err
		}
		if err := tx.Bucket(bucketPending).Delete(u64(r.Seq)); err != nil {
			return err
		}
		return incr(tx, countKey)
	})
}

// Recover turns intents left by a crash into audit records with result
// "unknown" and returns them; their cooldowns already stand.
func (s *State) Recover(countKey func(Record) string) ([]Record, error) {
	var out []Record
	err := s.db.Update(func(tx *bolt.Tx) error {
		p := tx.Bucket(bucketPending)
		var keys [][]byte
		err := p.ForEach(func(k, v []byte) error {
			var r Record
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("pending record %x: %w", k, err)
			}
			r.Result = "unknown"
			r.Error = "the daemon stopped before the provider's answer was recorded"
			b, _ := json.Marshal(r)
			if err := tx.Bucket(bucketAudit).Put(u64(r.Seq), b); err != nil {
				return err
			}
			if err := incr(tx, countKey(r)); err != nil {
				return err
			}
			keys = append(keys, append([]byte(nil), k...))
			out = append(out, r)
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range keys {
			if err := p.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	return out, err
}

// LastAction returns when the server was last acted on.
func (s *State) LastAction(provider, account, id string) (time.Time, bool, error) {
	var t time.Time
	var ok bool
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketCooldown).Get([]byte(serverKey(provider, account, id)))
		if len(v) == 8 {
			t, ok = time.Unix(0, int64(binary.BigEndian.Uint64(v))), true
		}
		return nil
	})
	return t, ok, err
}

// Since returns the audit records at or after t, newest first, at most max.
func (s *State) Since(t time.Time, max int) ([]Record, error) {
	var out []Record
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketAudit).Cursor()
		for k, v := c.Last(); k != nil && len(out) < max; k, v = c.Prev() {
			var r Record
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("audit record %x: %w", k, err)
			}
			if r.Time.Before(t) {
				break
			}
			out = append(out, r)
		}
		return nil
	})
	return out, err
}

// SeenAlert records an alert occurrence; it reports false when it was
// already recorded (a resend or duplicate).
func (s *State) SeenAlert(key string, at time.Time) (bool, error) {
	fresh := false
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSeen)
		if b.Get([]byte(key)) != nil {
			return nil
		}
		fresh = true
		return b.Put([]byte(key), u64(uint64(at.UnixNano())))
	})
	return fresh, err
}

// PruneSeen forgets alert occurrences recorded before t.
func (s *State) PruneSeen(t time.Time) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSeen)
		var old [][]byte
		_ = b.ForEach(func(k, v []byte) error {
			if len(v) == 8 && int64(binary.BigEndian.Uint64(v)) < t.UnixNano() {
				old = append(old, append([]byte(nil), k...))
			}
			return nil
		})
		for _, k := range old {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
}

// Count adds one to a durable counter (suppressions), coalescing writes.
func (s *State) Count(key string) error {
	return s.db.Batch(func(tx *bolt.Tx) error { return incr(tx, key) })
}

// Counts returns every durable counter.
func (s *State) Counts() (map[string]uint64, error) {
	out := map[string]uint64{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketCounts).ForEach(func(k, v []byte) error {
			if len(v) == 8 {
				out[string(k)] = binary.BigEndian.Uint64(v)
			}
			return nil
		})
	})
	return out, err
}

func incr(tx *bolt.Tx, key string) error {
	if key == "" {
		return nil
	}
	b := tx.Bucket(bucketCounts)
	var n uint64
	if v := b.Get([]byte(key)); len(v) == 8 {
		n = binary.BigEndian.Uint64(v)
	}
	return b.Put([]byte(key), u64(n+1))
}

// Counter keys: "a|provider|account|action|rule|result" for actions and
// "s|provider|account|action|reason" for suppressions.
func actionKey(provider, account, action, rule, result string) string {
	return strings.Join([]string{"a", provider, account, action, rule, result}, "|")
}

func suppressKey(provider, account, action, reason string) string {
	return strings.Join([]string{"s", provider, account, action, reason}, "|")
}

func splitKey(k string) []string { return strings.Split(k, "|") }
