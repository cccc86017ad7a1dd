package remediation

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/vps-exporter/vps_exporter/providers"
	"github.com/vps-exporter/vps_exporter/remediation/journal"
)

// The intake journal: every alert the webhook answers 200 for is first
// written (and fsynced: bbolt syncs each commit) to the state file's
// "intake" bucket, and removed when it is done with.
//
// Bounds: an entry is keyed by its server (provider, account, id) and its
// alert (fingerprint): one pending entry per server and alert (a newer
// occurrence of the alert replaces an older one), at most maxPerServer per
// server; the webhook journals only alerts for a configured account and
// action, for a server of the account's last list, or, before the
// account's first list, at most maxUnlisted per account. The whole journal
// holds at most the webhook's capacity. A batch that would go past a
// bound is refused whole (429: Alertmanager retries).
//
// Exactly once: the entry is removed, and its occurrence marked seen, in
// the transaction that writes the action's intent (Begin) or its dry-run
// record (RecordDryRun); an action that was not sent after all puts them
// back in the transaction that takes its intent back (Abort). After a
// crash an entry is therefore either still pending (nothing was sent: it
// is handled again) or gone with its intent written (the intent is
// recovered as an action with result unknown; it is never sent twice).
// Any other end of an entry (a suppression, a resolved notification, an
// expired hold) removes it on its own: handling one again after a crash
// in between goes through the whole gate again and acts at most once.
var bucketIntake = []byte("intake")

// maxUnlisted bounds, per account, the journaled alerts for servers no
// list has shown yet (the account was not refreshed when they came).
const maxUnlisted = 256

// maxPerServer bounds the alerts journaled for one server.
const maxPerServer = 8

// errIntakeFull refuses a batch the journal cannot take whole.
var errIntakeFull = errors.New("the intake journal is full")

// intakeEntry is one accepted firing alert waiting to be handled.
type intakeEntry struct {
	Provider    string    `json:"provider"`
	Account     string    `json:"account"`
	ID          string    `json:"id"`
	Action      string    `json:"action"`
	Alertname   string    `json:"alertname"`
	Fingerprint string    `json:"fingerprint"`
	StartsAt    time.Time `json:"starts_at"`
	// Accepted is when the webhook journaled it: its hold runs from it.
	Accepted time.Time `json:"accepted"`
	// Listed: the server was in the account's last list when accepted
	// (else the account had not been listed yet).
	Listed bool `json:"listed"`
}

// key is the entry's key in the journal: its server and alert.
func (en *intakeEntry) key() string { return intakeKey(en.server(), en.Fingerprint) }

// server is the entry's server key.
func (en *intakeEntry) server() string { return serverKey(en.Provider, en.Account, en.ID) }

// intakeKey is the journal key of a server's alert.
func intakeKey(server, fingerprint string) string { return server + "\x01" + fingerprint }

// occ identifies the alert occurrence (as alertKey does).
func (en *intakeEntry) occ() string {
	return en.Fingerprint + "@" + en.StartsAt.UTC().Format(time.RFC3339Nano)
}

// request is the gate's request for the entry.
func (en *intakeEntry) request(o *occurrence) Request {
	return Request{Provider: en.Provider, Account: en.Account, ID: en.ID, Action: providers.Action(en.Action), Source: "alert", Rule: en.Alertname,
		alert: en.Fingerprint, alertStart: en.StartsAt, occ: o, intake: en}
}

// intakeRef names an occurrence that resolved: its pending entry, if
// any, ends.
type intakeRef struct{ key, occ string }

// Outcomes of journaling one alert.
const (
	intakeQueued    = "queued"    // journaled
	intakeDuplicate = "duplicate" // already journaled, or already acted on
	intakePending   = "pending"   // a newer occurrence of the alert is pending
)

// intakeChunked is Intake; on a store that takes a limited number of
// writes in one transaction (etcd), a payload larger than one takes is
// journaled in several: the resolutions first, then the firing alerts in
// order. An error leaves the transactions before it committed: the
// caller answers so that Alertmanager sends the payload again, and what
// was journaled is then a duplicate, not a second entry.
func (s *State) intakeChunked(adds []intakeEntry, resolved []intakeRef, capacity int, dry bool) ([]string, []intakeEntry, error) {
	size := s.maxWrites() / 2 // an entry: its put, and the older occurrence it replaces
	if size <= 0 || len(adds)+len(resolved) <= size {
		return s.Intake(adds, resolved, capacity, dry)
	}
	var outs []string
	var ended []intakeEntry
	for len(resolved) > 0 {
		n := min(size, len(resolved))
		_, e, err := s.Intake(nil, resolved[:n], capacity, dry)
		if err != nil {
			return nil, ended, err
		}
		ended, resolved = append(ended, e...), resolved[n:]
	}
	for len(adds) > 0 {
		n := min(size, len(adds))
		o, _, err := s.Intake(adds[:n], nil, capacity, dry)
		if err != nil {
			return nil, ended, err
		}
		outs, adds = append(outs, o...), adds[n:]
	}
	return outs, ended, nil
}

// Intake journals a batch of firing alerts and ends the pending entries
// of the resolved occurrences, in one transaction: all of it or, on an
// error (errIntakeFull when the journal cannot take the batch whole),
// none. capacity bounds the journal; dry tells which namespace of acted
// occurrences is asked. It returns each alert's outcome, and the entries
// the resolutions ended.
func (s *State) Intake(adds []intakeEntry, resolved []intakeRef, capacity int, dry bool) ([]string, []intakeEntry, error) {
	out := make([]string, len(adds))
	var ended []intakeEntry
	err := s.db.Update(func(tx journal.Tx) error {
		ended = nil
		b := tx.Bucket(bucketIntake)
		for _, r := range resolved {
			if cur, ok := getIntake(b, r.key); ok && cur.occ() == r.occ {
				if err := b.Delete([]byte(r.key)); err != nil {
					return err
				}
				ended = append(ended, cur)
			}
		}
		n := b.KeyN()
		unlisted := map[string]int{}
		if slices.ContainsFunc(adds, func(en intakeEntry) bool { return !en.Listed }) {
			if err := b.ForEach(func(_, v []byte) error {
				var en intakeEntry
				if json.Unmarshal(v, &en) == nil && !en.Listed {
					unlisted[en.Account]++
				}
				return nil
			}); err != nil {
				return err
			}
		}
		seen := tx.Bucket(bucketSeen)
		for i := range adds {
			en := &adds[i]
			if seen.Get([]byte(seenKey(dry, en.occ()))) != nil {
				out[i] = intakeDuplicate
				continue
			}
			cur, ok := getIntake(b, en.key())
			switch {
			case ok && cur.occ() == en.occ():
				out[i] = intakeDuplicate
				continue
			case ok && !cur.StartsAt.Before(en.StartsAt):
				// An older occurrence than the one pending: stale.
				out[i] = intakePending
				continue
			case ok:
				// A newer occurrence of the alert replaces the older.
				n--
				if !cur.Listed {
					unlisted[cur.Account]--
				}
			case perServer(b, en.server()) >= maxPerServer:
				return errIntakeFull
			}
			if n >= capacity || !en.Listed && unlisted[en.Account] >= maxUnlisted {
				return errIntakeFull
			}
			if err := putIntake(b, en); err != nil {
				return err
			}
			n++
			if !en.Listed {
				unlisted[en.Account]++
			}
			out[i] = intakeQueued
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("journal alerts: %w", err)
	}
	return out, ended, nil
}

// intakeEntries returns the pending entries.
func (s *State) intakeEntries() ([]intakeEntry, error) {
	var out []intakeEntry
	err := s.db.View(func(tx journal.Tx) error {
		return tx.Bucket(bucketIntake).ForEach(func(k, v []byte) error {
			var en intakeEntry
			if err := json.Unmarshal(v, &en); err != nil {
				return fmt.Errorf("intake entry %q: %w", k, err)
			}
			out = append(out, en)
			return nil
		})
	})
	return out, err
}

// hasIntake reports whether the journal has the entry (the same
// occurrence).
func (s *State) hasIntake(en *intakeEntry) (bool, error) {
	ok := false
	err := s.db.View(func(tx journal.Tx) error {
		cur, found := getIntake(tx.Bucket(bucketIntake), en.key())
		ok = found && cur.occ() == en.occ()
		return nil
	})
	return ok, err
}

// endIntake removes an entry, if it is still the same occurrence.
func (s *State) endIntake(en *intakeEntry) error {
	return s.db.Update(endIntakeTx(en))
}

// endIntakeTx removes an entry, if it is still the same occurrence, in a
// transaction.
func endIntakeTx(en *intakeEntry) func(journal.Tx) error {
	return func(tx journal.Tx) error {
		b := tx.Bucket(bucketIntake)
		if cur, ok := getIntake(b, en.key()); ok && cur.occ() == en.occ() {
			return b.Delete([]byte(en.key()))
		}
		return nil
	}
}

// intakeTaken is what the transaction that records an alert's action
// also does: the entry ends and its occurrence is marked seen (in the
// action's namespace, on the server's lineage root). Nothing for a
// request that did not come from the journal.
func (r Request) intakeTaken(dry bool, root string, at time.Time) []func(journal.Tx) error {
	en := r.intake
	if en == nil {
		return nil
	}
	return []func(journal.Tx) error{endIntakeTx(en), func(tx journal.Tx) error {
		return tx.Bucket(bucketSeen).Put([]byte(seenKey(dry, en.occ())), append(u64(uint64(at.UnixNano())), root...))
	}}
}

// intakeBack undoes intakeTaken for an action that was not sent: the
// entry is pending again (unless a newer occurrence of its alert is) and its
// occurrence not seen.
func (r Request) intakeBack() []func(journal.Tx) error {
	en := r.intake
	if en == nil {
		return nil
	}
	return []func(journal.Tx) error{func(tx journal.Tx) error {
		if err := tx.Bucket(bucketSeen).Delete([]byte(seenKey(false, en.occ()))); err != nil {
			return err
		}
		b := tx.Bucket(bucketIntake)
		if _, ok := getIntake(b, en.key()); ok {
			return nil
		}
		return putIntake(b, en)
	}}
}

// perServer counts the entries of a server.
func perServer(b journal.Bucket, server string) int {
	prefix := []byte(server + "\x01")
	n := 0
	c := b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		n++
	}
	return n
}

func getIntake(b journal.Bucket, key string) (intakeEntry, bool) {
	var en intakeEntry
	v := b.Get([]byte(key))
	if v == nil || json.Unmarshal(v, &en) != nil {
		return en, v != nil
	}
	return en, true
}

func putIntake(b journal.Bucket, en *intakeEntry) error {
	v, err := json.Marshal(en)
	if err != nil {
		return err
	}
	return b.Put([]byte(en.key()), v)
}

// runAll runs fs in tx, stopping at the first error.
func runAll(tx journal.Tx, fs []func(journal.Tx) error) error {
	for _, f := range fs {
		if err := f(tx); err != nil {
			return err
		}
	}
	return nil
}
