// Package journal is the remediation state's storage: a small set of
// interfaces (Store, Tx, Bucket, Cursor) that are exactly what the
// remediation package uses of a transactional, ordered key-value store,
// with two implementations: a bbolt file (OpenBolt, a single replica) and
// the etcd journal of a fenced leader (package etcdha, remediation.ha).
//
// This package is the only importer of go.etcd.io/bbolt.
package journal

// Store is a transactional store of named buckets of ordered keys.
type Store interface {
	// Update runs fn in a read-write transaction: it commits when fn
	// returns nil; when fn (or the commit) fails nothing is applied and
	// the error is returned.
	Update(fn func(Tx) error) error
	// View runs fn in a read-only transaction.
	View(fn func(Tx) error) error
	// CheckSend is called right before every provider request: nil when
	// this store's owner may still send one (always, for a file),
	// otherwise why not.
	CheckSend() error
	// Close releases the store.
	Close() error
}

// Tx is one transaction.
type Tx interface {
	// Bucket returns the named bucket, or nil when it does not exist.
	Bucket(name []byte) Bucket
}

// Bucket is a set of keys in byte order, with a sequence counter. The
// slices that Get, ForEach and a Cursor return are valid only during the
// transaction and must not be modified.
type Bucket interface {
	// Get returns the value of key, nil when there is none.
	Get(key []byte) []byte
	// Put sets key to value (read-write transactions only).
	Put(key, value []byte) error
	// Delete removes key; a missing key is no error.
	Delete(key []byte) error
	// ForEach calls fn on every key in order until it returns an error.
	// fn must not change the bucket.
	ForEach(fn func(k, v []byte) error) error
	// Cursor returns a cursor over the bucket.
	Cursor() Cursor
	// KeyN is the number of keys.
	KeyN() int
	// Sequence is the bucket's sequence counter.
	Sequence() uint64
	// NextSequence increments the counter and returns it.
	NextSequence() (uint64, error)
	// SetSequence sets the counter.
	SetSequence(v uint64) error
}

// Cursor walks a bucket in key order. Each move returns the key and value
// it lands on, a nil key past either end.
type Cursor interface {
	// First moves to the first key.
	First() (k, v []byte)
	// Last moves to the last key.
	Last() (k, v []byte)
	// Next moves to the next key.
	Next() (k, v []byte)
	// Prev moves to the previous key.
	Prev() (k, v []byte)
	// Seek moves to key, or the first key after it.
	Seek(seek []byte) (k, v []byte)
	// Delete removes the key under the cursor.
	Delete() error
}

// Limited is a Store whose Update may change at most MaxWrites keys; a
// caller that batches its writes (pruning) keeps its batches under it.
type Limited interface {
	MaxWrites() int
}
