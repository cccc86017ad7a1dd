package etcdha

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vps-exporter/vps_exporter/remediation/journal"
)

// MaxTxnOps is etcd's default limit of operations in one transaction
// (--max-txn-ops): a journal transaction that would write more is
// refused (ErrTxnTooLarge) rather than split, except where the caller
// batches (journal.Limited).
const MaxTxnOps = 128

// ErrTxnTooLarge is the error of an Update that changes more keys than
// one etcd transaction takes.
var ErrTxnTooLarge = errors.New("etcdha: journal: transaction too large for one etcd transaction")

// ErrWriteUncertain ends a term whose journal write failed without a
// fence refusal (etcd or the network failed): the write may or may not
// have been applied, so the term's in-memory copy of the state can no
// longer be trusted; the next term loads it again.
var ErrWriteUncertain = fmt.Errorf("journal write outcome unknown: %w", ErrDeposed)

// The journal's keys, relative to Elector.StatePrefix: a bucket's key k
// is bucketKeyPrefix + bucket + "/" + hex(k), its sequence
// seqKeyPrefix + bucket, and markerKey says the state was initialized
// (created, or imported from a state file) by a term.
const (
	bucketKeyPrefix = "b/"
	seqKeyPrefix    = "s/"
	markerKey       = "initialized"
)

// Journal is the remediation state of one term as a journal.Store: the
// state the warm-up loaded, in memory and ordered per bucket. View reads
// that copy; Update runs on a copy-on-write overlay of it and commits its
// changes (puts, deletes, sequences) as one fenced etcd transaction
// (Term.Write): the overlay is applied only when that succeeds. A term
// that ended refuses every Update (errors.Is(err, ErrDeposed)); a write
// whose outcome is unknown ends the term (ErrWriteUncertain). Updates are
// serialized, as bbolt serializes a file's writers; Views never wait.
type Journal struct {
	t       *Term
	timeout time.Duration
	// writer is the one Update at a time; taken with a bound.
	writer chan struct{}

	mu          sync.Mutex
	cur         map[string]*memBucket // committed; never changed in place
	initialized bool
}

// memBucket is one bucket's keys in order, with its sequence.
type memBucket struct {
	entries []entry
	seq     uint64
}

type entry struct {
	k string
	v []byte
}

// find is the index of the first key >= k.
func (b *memBucket) find(k string) int {
	return sort.Search(len(b.entries), func(i int) bool { return b.entries[i].k >= k })
}

func (b *memBucket) clone() *memBucket {
	return &memBucket{entries: append([]entry(nil), b.entries...), seq: b.seq}
}

// NewJournal is the journal of term t, holding buckets (more are not
// created: Tx.Bucket returns nil for them). Keys under the state prefix
// that are not the journal's are ignored.
func NewJournal(t *Term, buckets ...[]byte) (*Journal, error) {
	j := &Journal{t: t, timeout: t.e.cfg.LeaseTTL, writer: make(chan struct{}, 1), cur: map[string]*memBucket{}}
	for _, b := range buckets {
		j.cur[string(b)] = &memBucket{}
	}
	for _, kv := range t.State() {
		switch {
		case kv.Key == markerKey:
			j.initialized = true
		case strings.HasPrefix(kv.Key, seqKeyPrefix):
			b := j.cur[strings.TrimPrefix(kv.Key, seqKeyPrefix)]
			if b == nil {
				continue
			}
			n, err := strconv.ParseUint(string(kv.Value), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("etcdha: journal: sequence %s: %w", kv.Key, err)
			}
			b.seq = n
		case strings.HasPrefix(kv.Key, bucketKeyPrefix):
			name, hk, ok := strings.Cut(strings.TrimPrefix(kv.Key, bucketKeyPrefix), "/")
			b := j.cur[name]
			if !ok || b == nil {
				continue
			}
			k, err := hex.DecodeString(hk)
			if err != nil {
				return nil, fmt.Errorf("etcdha: journal: key %s: %w", kv.Key, err)
			}
			b.entries = append(b.entries, entry{k: string(k), v: kv.Value})
		}
	}
	for _, b := range j.cur {
		sort.Slice(b.entries, func(x, y int) bool { return b.entries[x].k < b.entries[y].k })
	}
	return j, nil
}

// Initialized reports whether a term initialized the state in etcd
// (Initialize); until then it is empty and Updates are refused.
func (j *Journal) Initialized() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.initialized
}

// Initialize writes, once, the state this journal starts from: from's
// buckets and sequences (a state file imported at the first takeover), or
// nothing (from nil). It clears what a term that stopped halfway left,
// writes in fenced transactions of at most MaxTxnOps, and the marker
// last: a takeover that finds no marker initializes again.
func (j *Journal) Initialize(ctx context.Context, from journal.Store) error {
	j.writer <- struct{}{}
	defer func() { <-j.writer }()
	names := j.names()
	next := map[string]*memBucket{}
	for _, n := range names {
		next[n] = &memBucket{}
	}
	if from != nil {
		err := from.View(func(tx journal.Tx) error {
			for _, n := range names {
				src := tx.Bucket([]byte(n))
				if src == nil {
					continue
				}
				b := next[n]
				b.seq = src.Sequence()
				if err := src.ForEach(func(k, v []byte) error {
					b.entries = append(b.entries, entry{k: string(k), v: append([]byte(nil), v...)})
					return nil
				}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("etcdha: journal: read the state to import: %w", err)
		}
	}
	ops := []Op{DeletePrefix(bucketKeyPrefix), DeletePrefix(seqKeyPrefix)}
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		if _, err := j.t.Write(ctx, ops...); err != nil {
			return fmt.Errorf("etcdha: journal: initialize: %w", err)
		}
		ops = ops[:0]
		return nil
	}
	if err := flush(); err != nil {
		return err
	}
	for _, n := range names {
		b := next[n]
		if b.seq != 0 {
			ops = append(ops, Put(seqKeyPrefix+n, []byte(strconv.FormatUint(b.seq, 10))))
		}
		for _, e := range b.entries {
			if len(ops) == MaxTxnOps {
				if err := flush(); err != nil {
					return err
				}
			}
			ops = append(ops, Put(entryKey(n, e.k), e.v))
		}
	}
	if len(ops) == MaxTxnOps {
		if err := flush(); err != nil {
			return err
		}
	}
	ops = append(ops, Put(markerKey, []byte(time.Now().UTC().Format(time.RFC3339))))
	if err := flush(); err != nil {
		return err
	}
	j.mu.Lock()
	j.cur, j.initialized = next, true
	j.mu.Unlock()
	return nil
}

func (j *Journal) names() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := make([]string, 0, len(j.cur))
	for n := range j.cur {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func entryKey(bucket, k string) string {
	return bucketKeyPrefix + bucket + "/" + hex.EncodeToString([]byte(k))
}

// snapshot is the committed state now.
func (j *Journal) snapshot() map[string]*memBucket {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.cur
}

// View runs fn on the state as committed now.
func (j *Journal) View(fn func(journal.Tx) error) error {
	return fn(&memTx{base: j.snapshot()})
}

// Update runs fn on an overlay of the state and commits what it changed
// in one fenced transaction; on any error nothing is applied.
func (j *Journal) Update(fn func(journal.Tx) error) error {
	if err := j.t.Err(); err != nil {
		return err
	}
	wait := time.NewTimer(j.timeout)
	defer wait.Stop()
	select {
	case j.writer <- struct{}{}:
	case <-j.t.Deposed():
		return j.t.Err()
	case <-wait.C:
		return fmt.Errorf("etcdha: journal: another write held the journal for %s", j.timeout)
	}
	defer func() { <-j.writer }()
	if !j.Initialized() {
		return errors.New("etcdha: journal: the state in etcd is not initialized")
	}
	tx := &memTx{base: j.snapshot(), writable: true, over: map[string]*memBucket{}, touched: map[string]map[string]bool{}, seqs: map[string]bool{}}
	if err := fn(tx); err != nil {
		return err
	}
	ops := tx.ops()
	if len(ops) == 0 {
		return nil
	}
	if len(ops) > MaxTxnOps {
		return fmt.Errorf("%w: %d writes, etcd takes at most %d", ErrTxnTooLarge, len(ops), MaxTxnOps)
	}
	ctx, cancel := context.WithTimeout(context.Background(), j.timeout)
	defer cancel()
	if _, err := j.t.Write(ctx, ops...); err != nil {
		if !errors.Is(err, ErrDeposed) {
			// Applied or not: this term's copy can no longer be trusted.
			j.t.depose(ErrWriteUncertain)
			return fmt.Errorf("%w: %w", ErrWriteUncertain, err)
		}
		return err
	}
	j.mu.Lock()
	next := make(map[string]*memBucket, len(j.cur))
	for n, b := range j.cur {
		next[n] = b
	}
	for n, b := range tx.over {
		next[n] = b
	}
	j.cur = next
	j.mu.Unlock()
	return nil
}

// CheckSend is the term's send deadline (Term.CheckSend).
func (j *Journal) CheckSend() error { return j.t.CheckSend() }

// MaxWrites is how many keys one Update may change (journal.Limited).
func (j *Journal) MaxWrites() int { return MaxTxnOps }

// Close does nothing: the term is the elector's (its end is Resign).
func (j *Journal) Close() error { return nil }

// memTx is a transaction on the journal's memory: reads see base under
// the buckets it changed (over, copied on their first change).
type memTx struct {
	base     map[string]*memBucket
	writable bool
	over     map[string]*memBucket
	touched  map[string]map[string]bool // bucket -> keys changed
	seqs     map[string]bool            // buckets whose sequence changed
}

func (tx *memTx) bucket(name string) *memBucket {
	if b, ok := tx.over[name]; ok {
		return b
	}
	return tx.base[name]
}

// writable returns the overlay's copy of bucket name.
func (tx *memTx) mutable(name string) (*memBucket, error) {
	if !tx.writable {
		return nil, errors.New("etcdha: journal: write in a read-only transaction")
	}
	if b, ok := tx.over[name]; ok {
		return b, nil
	}
	b := tx.base[name].clone()
	tx.over[name] = b
	return b, nil
}

func (tx *memTx) touch(name, k string) {
	m := tx.touched[name]
	if m == nil {
		m = map[string]bool{}
		tx.touched[name] = m
	}
	m[k] = true
}

// ops are the transaction's changes as etcd operations.
func (tx *memTx) ops() []Op {
	var ops []Op
	names := make([]string, 0, len(tx.over))
	for n := range tx.over {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		b, base := tx.over[n], tx.base[n]
		if tx.seqs[n] && b.seq != base.seq {
			ops = append(ops, Put(seqKeyPrefix+n, []byte(strconv.FormatUint(b.seq, 10))))
		}
		keys := make([]string, 0, len(tx.touched[n]))
		for k := range tx.touched[n] {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			v, now := b.get(k)
			_, was := base.get(k)
			switch {
			case now:
				ops = append(ops, Put(entryKey(n, k), v))
			case was:
				ops = append(ops, Delete(entryKey(n, k)))
			}
		}
	}
	return ops
}

func (b *memBucket) get(k string) ([]byte, bool) {
	i := b.find(k)
	if i < len(b.entries) && b.entries[i].k == k {
		return b.entries[i].v, true
	}
	return nil, false
}

func (tx *memTx) Bucket(name []byte) journal.Bucket {
	if tx.base[string(name)] == nil {
		return nil
	}
	return &memBucketTx{tx: tx, name: string(name)}
}

// memBucketTx is a bucket as a transaction sees it.
type memBucketTx struct {
	tx   *memTx
	name string
}

func (b *memBucketTx) cur() *memBucket { return b.tx.bucket(b.name) }

func (b *memBucketTx) Get(key []byte) []byte {
	v, _ := b.cur().get(string(key))
	return v
}

func (b *memBucketTx) Put(key, value []byte) error {
	if len(key) == 0 {
		return errors.New("etcdha: journal: put: empty key")
	}
	m, err := b.tx.mutable(b.name)
	if err != nil {
		return err
	}
	k := string(key)
	v := append([]byte{}, value...)
	i := m.find(k)
	if i < len(m.entries) && m.entries[i].k == k {
		m.entries[i].v = v
	} else {
		m.entries = append(m.entries, entry{})
		copy(m.entries[i+1:], m.entries[i:])
		m.entries[i] = entry{k: k, v: v}
	}
	b.tx.touch(b.name, k)
	return nil
}

func (b *memBucketTx) Delete(key []byte) error {
	k := string(key)
	if _, ok := b.cur().get(k); !ok {
		if !b.tx.writable {
			return errors.New("etcdha: journal: write in a read-only transaction")
		}
		return nil
	}
	m, err := b.tx.mutable(b.name)
	if err != nil {
		return err
	}
	i := m.find(k)
	m.entries = append(m.entries[:i], m.entries[i+1:]...)
	b.tx.touch(b.name, k)
	return nil
}

// ForEach walks the keys in order; it finds each next key by its
// predecessor, so it is not confused by a change of the bucket.
func (b *memBucketTx) ForEach(fn func(k, v []byte) error) error {
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if err := fn(k, v); err != nil {
			return err
		}
	}
	return nil
}

func (b *memBucketTx) Cursor() journal.Cursor { return &memCursor{b: b} }

func (b *memBucketTx) KeyN() int { return len(b.cur().entries) }

func (b *memBucketTx) Sequence() uint64 { return b.cur().seq }

func (b *memBucketTx) NextSequence() (uint64, error) {
	m, err := b.tx.mutable(b.name)
	if err != nil {
		return 0, err
	}
	m.seq++
	b.tx.seqs[b.name] = true
	return m.seq, nil
}

func (b *memBucketTx) SetSequence(v uint64) error {
	m, err := b.tx.mutable(b.name)
	if err != nil {
		return err
	}
	m.seq = v
	b.tx.seqs[b.name] = true
	return nil
}

// memCursor is at a key (not an index): each move searches from it, so a
// change of the bucket under it (its own Delete) does not shift it.
type memCursor struct {
	b   *memBucketTx
	k   string
	set bool // at a key
}

func (c *memCursor) at(i int) ([]byte, []byte) {
	es := c.b.cur().entries
	if i < 0 || i >= len(es) {
		c.set = false
		return nil, nil
	}
	c.k, c.set = es[i].k, true
	return []byte(es[i].k), es[i].v
}

func (c *memCursor) First() ([]byte, []byte) { return c.at(0) }

func (c *memCursor) Last() ([]byte, []byte) { return c.at(len(c.b.cur().entries) - 1) }

func (c *memCursor) Next() ([]byte, []byte) {
	if !c.set {
		return nil, nil
	}
	m := c.b.cur()
	i := m.find(c.k)
	if i < len(m.entries) && m.entries[i].k == c.k {
		i++
	}
	return c.at(i)
}

func (c *memCursor) Prev() ([]byte, []byte) {
	if !c.set {
		return nil, nil
	}
	return c.at(c.b.cur().find(c.k) - 1)
}

func (c *memCursor) Seek(seek []byte) ([]byte, []byte) {
	return c.at(c.b.cur().find(string(seek)))
}

func (c *memCursor) Delete() error {
	if !c.set {
		return errors.New("etcdha: journal: cursor delete: not at a key")
	}
	return c.b.Delete([]byte(c.k))
}
