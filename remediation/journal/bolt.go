package journal

import (
	"errors"
	"fmt"
	"io/fs"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Bolt is a Store in one bbolt file.
type Bolt struct {
	db *bolt.DB
}

// OpenBolt opens (or creates) the bbolt file at path, waiting at most
// lockWait for another process's lock (then an error for which
// IsLocked is true), and creates the buckets that do not exist yet. A
// file that is not a bbolt database is an error. Errors say "open <what>
// <path>: ..." or "initialize <what> <path>: ...", the path once.
func OpenBolt(what, path string, lockWait time.Duration, buckets ...[]byte) (*Bolt, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: lockWait})
	if err != nil {
		// The path once: bolt's *fs.PathError names it too.
		var pe *fs.PathError
		switch {
		case errors.As(err, &pe) && pe.Path == path && pe.Op == "open":
			err = pe.Err
		case errors.As(err, &pe) && pe.Path == path:
			err = fmt.Errorf("%s: %w", pe.Op, pe.Err)
		}
		return nil, fmt.Errorf("open %s %s: %w", what, path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range buckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("initialize %s %s: %w", what, path, err)
	}
	return &Bolt{db: db}, nil
}

// IsLocked reports whether err says that another process holds the file.
func IsLocked(err error) bool { return errors.Is(err, bolt.ErrTimeout) }

// Update runs fn in a read-write transaction.
func (s *Bolt) Update(fn func(Tx) error) error {
	return s.db.Update(func(tx *bolt.Tx) error { return fn(boltTx{tx}) })
}

// View runs fn in a read-only transaction.
func (s *Bolt) View(fn func(Tx) error) error {
	return s.db.View(func(tx *bolt.Tx) error { return fn(boltTx{tx}) })
}

// CheckSend is always nil: a file's owner is the only one that acts.
func (s *Bolt) CheckSend() error { return nil }

// Close closes the file.
func (s *Bolt) Close() error { return s.db.Close() }

type boltTx struct{ tx *bolt.Tx }

func (t boltTx) Bucket(name []byte) Bucket {
	b := t.tx.Bucket(name)
	if b == nil {
		return nil
	}
	return boltBucket{b}
}

type boltBucket struct{ b *bolt.Bucket }

func (b boltBucket) Get(key []byte) []byte                    { return b.b.Get(key) }
func (b boltBucket) Put(key, value []byte) error              { return b.b.Put(key, value) }
func (b boltBucket) Delete(key []byte) error                  { return b.b.Delete(key) }
func (b boltBucket) ForEach(fn func(k, v []byte) error) error { return b.b.ForEach(fn) }
func (b boltBucket) Cursor() Cursor                           { return b.b.Cursor() }
func (b boltBucket) KeyN() int                                { return b.b.Stats().KeyN }
func (b boltBucket) Sequence() uint64                         { return b.b.Sequence() }
func (b boltBucket) NextSequence() (uint64, error)            { return b.b.NextSequence() }
func (b boltBucket) SetSequence(v uint64) error               { return b.b.SetSequence(v) }
