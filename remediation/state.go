package remediation

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/vps-exporter/vps_exporter/remediation/journal"
)

// Record is one audit entry: an action taken (or, in dry-run, one that
// would have been), with what the provider answered.
type Record struct {
	Seq uint64 `json:"seq"`
	// Time is when the action was sent (its intent written and the call
	// handed to the provider's client), or a dry run recorded; its
	// cooldown runs from it.
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
	// Calls are the provider calls of an action made of several
	// (power_cycle: the stop, then the start), in order.
	Calls []Call `json:"calls,omitempty"`
	// Phase is a power cycle's last journaled phase (powercycle.go):
	// stop_answered, stopped, start_sending, start_answered.
	Phase string `json:"phase,omitempty"`
	// Watch is, in a redeploy's pending intent only, what a lost answer
	// is resolved on (lineage_watch.go); never in the audit record.
	Watch *lineageWatch `json:"lineage_watch,omitempty"`
	// Alert is the fingerprint of the alert that asked for it, and
	// AlertStartsAt the occurrence's startsAt.
	Alert         string    `json:"alert,omitempty"`
	AlertStartsAt time.Time `json:"alert_starts_at,omitempty"`
}

// Call is one provider call of an action made of several.
type Call struct {
	Action   string    `json:"action"`
	Time     time.Time `json:"time"`
	Result   string    `json:"result"`
	Response string    `json:"response,omitempty"`
	Error    string    `json:"error,omitempty"`
}

var (
	bucketAudit    = []byte("audit")
	bucketPending  = []byte("pending")
	bucketCooldown = []byte("cooldown")
	bucketSeen     = []byte("alerts_seen")
	bucketCounts   = []byte("counts")
	bucketLineage  = []byte("lineage")
	bucketEvents   = []byte("suppressions")
	bucketControl  = []byte("control")
)

// maxEvents bounds the suppression history kept in the state file.
const maxEvents = 10000

// State is the durable part of remediation: audit log, intents, cooldowns,
// seen alerts and counters, in one bbolt file.
type State struct {
	db journal.Store
	// Holders are what writes the file in several transactions (an
	// action: its intent, then its record): closeAfter waits for them.
	mu      sync.Mutex
	holders int
	idle    chan struct{} // closed when the last holder lets go
}

// hold marks the file in use until unhold. The engine takes it under its
// lock while the file is its state, so that a switch, which stops handing
// the file out under that lock first, sees every holder.
func (s *State) hold() {
	s.mu.Lock()
	s.holders++
	s.mu.Unlock()
}

// unhold ends a hold.
func (s *State) unhold() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.holders--
	if s.holders == 0 && s.idle != nil {
		close(s.idle)
		s.idle = nil
	}
}

// inUse is the number of holders.
func (s *State) inUse() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.holders
}

// waitIdle waits until nothing holds the file, or ctx ends; left is how
// many holders were still there.
func (s *State) waitIdle(ctx context.Context) (left int) {
	s.mu.Lock()
	var idle chan struct{}
	if s.holders > 0 {
		if s.idle == nil {
			s.idle = make(chan struct{})
		}
		idle = s.idle
	}
	s.mu.Unlock()
	if idle != nil {
		select {
		case <-idle:
		case <-ctx.Done():
		}
	}
	return s.inUse()
}

// OpenState opens (or creates) the state file. A file that is not a valid
// store, or is locked by another process, is an error.
func OpenState(path string) (*State, error) {
	db, err := journal.OpenBolt("remediation state", path, lockWait, allBuckets...)
	if err != nil {
		return nil, err
	}
	return &State{db: db}, nil
}

// allBuckets are the state's buckets.
var allBuckets = [][]byte{bucketAudit, bucketPending, bucketCooldown, bucketSeen, bucketCounts, bucketLineage, bucketEvents, bucketControl, bucketTracks, bucketEpisodes, bucketIntake}

// lockWait is how long opening waits for another process's lock.
var lockWait = 2 * time.Second

// Close closes the file.
func (s *State) Close() error { return s.db.Close() }

// maxWrites is how many keys one transaction may change (0: no limit).
func (s *State) maxWrites() int {
	if l, ok := s.db.(journal.Limited); ok {
		return l.MaxWrites()
	}
	return 0
}

// CheckSend is called right before every provider request, after the
// intent (or the power cycle's phase) was written: nil when the request
// may leave; under remediation.ha, the term's send deadline (a leader
// deposed, or frozen past its lease, sends nothing).
func (s *State) CheckSend() error { return s.db.CheckSend() }

func serverKey(provider, account, id string) string {
	return provider + "\x00" + account + "\x00" + id
}

func u64(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}

func be64(b []byte) uint64 { return binary.BigEndian.Uint64(b) }

// cooldownKey is the cooldown of a server (its lineage root) in one
// namespace: live actions, or dry-run records in their own.
func cooldownKey(dry bool, root string) []byte {
	if dry {
		return []byte("dry\x00" + root)
	}
	return []byte(root)
}

// Begin records the intent to act before the provider is called, and
// starts the cooldown of root (the server's lineage): if the daemon dies
// during the call, the intent survives and the action is not repeated
// blindly. A dry-run record starts the dry-run namespace's cooldown only.
// also runs in the same transaction (an alert's intake entry ends).
func (s *State) Begin(r *Record, root string, also ...func(journal.Tx) error) error {
	return s.db.Update(func(tx journal.Tx) error {
		if err := runAll(tx, also); err != nil {
			return err
		}
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
		return tx.Bucket(bucketCooldown).Put(cooldownKey(r.Result == ResultDryRun, root), u64(uint64(r.Time.UnixNano())))
	})
}

// Abort takes back an intent whose request was never sent (the daemon
// stopped first): no audit record, and the cooldown is what it was.
// also runs in the same transaction (an alert's intake entry is back).
func (s *State) Abort(r *Record, root string, prev time.Time, also ...func(journal.Tx) error) error {
	return s.db.Update(func(tx journal.Tx) error {
		if err := runAll(tx, also); err != nil {
			return err
		}
		if err := tx.Bucket(bucketPending).Delete(u64(r.Seq)); err != nil {
			return err
		}
		k := cooldownKey(false, root)
		if prev.IsZero() {
			return tx.Bucket(bucketCooldown).Delete(k)
		}
		return tx.Bucket(bucketCooldown).Put(k, u64(uint64(prev.UnixNano())))
	})
}

// SetLineage records that newKey (a redeploy's replacement) is the same
// server as root for cooldowns and blast radius.
func (s *State) SetLineage(newKey, root string) error {
	return s.db.Update(func(tx journal.Tx) error {
		return tx.Bucket(bucketLineage).Put([]byte(newKey), []byte(root))
	})
}

// Lineage returns every recorded replacement -> root.
func (s *State) Lineage() (map[string]string, error) {
	out := map[string]string{}
	err := s.db.View(func(tx journal.Tx) error {
		return tx.Bucket(bucketLineage).ForEach(func(k, v []byte) error {
			out[string(k)] = string(v)
			return nil
		})
	})
	return out, err
}

// Cooldowns returns every cooldown start: live ones by root, dry-run ones
// by root in the second map.
func (s *State) Cooldowns() (live, dry map[string]time.Time, err error) {
	live, dry = map[string]time.Time{}, map[string]time.Time{}
	err = s.db.View(func(tx journal.Tx) error {
		return tx.Bucket(bucketCooldown).ForEach(func(k, v []byte) error {
			if len(v) != 8 {
				return nil
			}
			t := time.Unix(0, int64(binary.BigEndian.Uint64(v)))
			if root, ok := strings.CutPrefix(string(k), "dry\x00"); ok {
				dry[root] = t
			} else {
				live[string(k)] = t
			}
			return nil
		})
	})
	return live, dry, err
}

// Event is one suppression in the history: logged when the reason for a
// server changed.
type Event struct {
	Time     time.Time `json:"time"`
	Provider string    `json:"provider"`
	Account  string    `json:"account"`
	ID       string    `json:"id"`
	Action   string    `json:"action"`
	Source   string    `json:"source"`
	Rule     string    `json:"rule"`
	Reason   string    `json:"reason"`
	Detail   string    `json:"detail,omitempty"`
}

// Flush persists suppression counts and events in one transaction, and
// keeps the newest maxEvents events.
func (s *State) Flush(counts map[string]uint64, events []Event) error {
	_, err := s.flush(counts, events)
	return err
}

// flush is Flush; it returns the suppression history's sequence after
// the write (each event takes one number).
func (s *State) flush(counts map[string]uint64, events []Event) (seq uint64, err error) {
	err = s.db.Update(func(tx journal.Tx) error {
		for k, n := range counts {
			if err := add(tx, k, n); err != nil {
				return err
			}
		}
		b := tx.Bucket(bucketEvents)
		for _, ev := range events {
			seq, err := b.NextSequence()
			if err != nil {
				return err
			}
			v, err := json.Marshal(ev)
			if err != nil {
				return err
			}
			if err := b.Put(u64(seq), v); err != nil {
				return err
			}
		}
		c := b.Cursor()
		for n := b.KeyN() - maxEvents; n > 0; n-- {
			k, _ := c.First()
			if k == nil {
				break
			}
			if err := c.Delete(); err != nil {
				return err
			}
		}
		seq = b.Sequence()
		return nil
	})
	return seq, err
}

// Events returns the suppression history, newest first, that keep accepts,
// at most max.
func (s *State) Events(keep func(Event) bool, max int) ([]Event, error) {
	out, _, err := s.events(context.Background(), keep, max)
	return out, err
}

// events is Events, stopping when ctx ends; seq is the history's
// sequence in the same read (how many events were ever written).
func (s *State) events(ctx context.Context, keep func(Event) bool, max int) (out []Event, seq uint64, err error) {
	err = s.db.View(func(tx journal.Tx) error {
		b := tx.Bucket(bucketEvents)
		seq = b.Sequence()
		c := b.Cursor()
		for k, v := c.Last(); k != nil && len(out) < max; k, v = c.Prev() {
			if err := ctx.Err(); err != nil {
				return err
			}
			var ev Event
			if json.Unmarshal(v, &ev) == nil && keep(ev) {
				out = append(out, ev)
			}
		}
		return nil
	})
	return out, seq, err
}

// eventSeq is the suppression history's sequence.
func (s *State) eventSeq() (seq uint64, err error) {
	err = s.db.View(func(tx journal.Tx) error {
		seq = tx.Bucket(bucketEvents).Sequence()
		return nil
	})
	return seq, err
}

// Pause is the operator's durable pause.
type Pause struct {
	Since  time.Time `json:"since"`
	Until  time.Time `json:"until,omitempty"` // zero: until resumed
	Reason string    `json:"reason"`
}

// SetPause stores the pause, or clears it when p is nil.
func (s *State) SetPause(p *Pause) error {
	return s.db.Update(func(tx journal.Tx) error {
		b := tx.Bucket(bucketControl)
		if p == nil {
			return b.Delete([]byte("pause"))
		}
		v, err := json.Marshal(p)
		if err != nil {
			return err
		}
		return b.Put([]byte("pause"), v)
	})
}

// GetPause returns the stored pause, nil when there is none.
func (s *State) GetPause() (*Pause, error) {
	var p *Pause
	err := s.db.View(func(tx journal.Tx) error {
		v := tx.Bucket(bucketControl).Get([]byte("pause"))
		if v == nil {
			return nil
		}
		p = &Pause{}
		return json.Unmarshal(v, p)
	})
	return p, err
}

// Progress rewrites a pending intent with what happened so far (the
// first call of a power cycle), so that a crash recovers it with its
// calls.
func (s *State) Progress(r *Record) error {
	return s.db.Update(func(tx journal.Tx) error {
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		return tx.Bucket(bucketPending).Put(u64(r.Seq), b)
	})
}

// Finish writes the audit record, clears the intent, counts the result
// and, in the same transaction, the closed loop's change (the action as
// a step of its server's episode).
func (s *State) Finish(r *Record, countKey string, loop ...*loopWrite) error {
	return s.db.Update(func(tx journal.Tx) error {
		for _, w := range loop {
			if err := putLoop(tx, w); err != nil {
				return err
			}
		}
		a := *r
		a.Watch = nil
		b, err := json.Marshal(&a)
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

// RecordDryRun writes a dry run's audit record, its dry-run cooldown and
// its count in one transaction: nothing pending is left for a crash.
// also runs in the same transaction (an alert's intake entry ends).
func (s *State) RecordDryRun(r *Record, root, countKey string, also ...func(journal.Tx) error) error {
	return s.db.Update(func(tx journal.Tx) error {
		if err := runAll(tx, also); err != nil {
			return err
		}
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
		if err := a.Put(u64(seq), b); err != nil {
			return err
		}
		if err := tx.Bucket(bucketCooldown).Put(cooldownKey(true, root), u64(uint64(r.Time.UnixNano()))); err != nil {
			return err
		}
		return incr(tx, countKey)
	})
}

// Since returns the audit records at or after t, newest first, at most max.
func (s *State) Since(t time.Time, max int) ([]Record, error) {
	return s.Matching(context.Background(), t, nil, max)
}

// Matching is Since keeping only the records keep accepts (nil: all); it
// reads no further than it needs, and stops when ctx ends.
func (s *State) Matching(ctx context.Context, t time.Time, keep func(Record) bool, max int) ([]Record, error) {
	var out []Record
	err := s.db.View(func(tx journal.Tx) error {
		c := tx.Bucket(bucketAudit).Cursor()
		for k, v := c.Last(); k != nil && len(out) < max; k, v = c.Prev() {
			if err := ctx.Err(); err != nil {
				return err
			}
			var r Record
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("audit record %x: %w", k, err)
			}
			if r.Time.Before(t) {
				break
			}
			if keep == nil || keep(r) {
				out = append(out, r)
			}
		}
		return nil
	})
	return out, err
}

// Seen reports whether an alert occurrence was already acted on (or, in
// dry-run, recorded: key carries the namespace).
func (s *State) Seen(key string) (bool, error) {
	seen := false
	err := s.db.View(func(tx journal.Tx) error {
		seen = tx.Bucket(bucketSeen).Get([]byte(key)) != nil
		return nil
	})
	return seen, err
}

// MarkSeen records that an alert occurrence was acted on, on the server
// whose lineage root is root (a reset forgets the server's occurrences).
func (s *State) MarkSeen(key string, at time.Time, root string) error {
	return s.db.Update(func(tx journal.Tx) error {
		return tx.Bucket(bucketSeen).Put([]byte(key), append(u64(uint64(at.UnixNano())), root...))
	})
}

// Counts returns every durable counter.
func (s *State) Counts() (map[string]uint64, error) {
	out := map[string]uint64{}
	err := s.db.View(func(tx journal.Tx) error {
		return tx.Bucket(bucketCounts).ForEach(func(k, v []byte) error {
			if len(v) == 8 {
				out[string(k)] = binary.BigEndian.Uint64(v)
			}
			return nil
		})
	})
	return out, err
}

func incr(tx journal.Tx, key string) error { return add(tx, key, 1) }

func add(tx journal.Tx, key string, d uint64) error {
	if key == "" {
		return nil
	}
	b := tx.Bucket(bucketCounts)
	var n uint64
	if v := b.Get([]byte(key)); len(v) == 8 {
		n = binary.BigEndian.Uint64(v)
	}
	return b.Put([]byte(key), u64(n+d))
}

// Counter keys: "a|provider|account|action|rule|result" for actions,
// "s|provider|account|action|reason" for suppressions (and verifyKey's
// for verdicts). A part's "%" and "|" (a rule or account name may have
// them) are written %25 and %7C.
func actionKey(provider, account, action, rule, result string) string {
	return joinKey("a", provider, account, action, rule, result)
}

func suppressKey(provider, account, action, reason string) string {
	return joinKey("s", provider, account, action, reason)
}

// verifyKey is the durable counter of a verdict:
// "v|provider|account|action|source|result".
func verifyKey(provider, account, action, source, result string) string {
	return joinKey("v", provider, account, action, source, result)
}

var (
	keyEscaper   = strings.NewReplacer("%", "%25", "|", "%7C")
	keyUnescaper = strings.NewReplacer("%25", "%", "%7C", "|")
)

func joinKey(parts ...string) string {
	for i, p := range parts {
		parts[i] = keyEscaper.Replace(p)
	}
	return strings.Join(parts, "|")
}

func splitKey(k string) []string {
	parts := strings.Split(k, "|")
	for i, p := range parts {
		parts[i] = keyUnescaper.Replace(p)
	}
	return parts
}
