package remediation

import (
	"encoding/binary"
	"encoding/json"
	"strings"
	"time"

	"github.com/vps-exporter/vps_exporter/collector"
	"github.com/vps-exporter/vps_exporter/remediation/journal"
)

// forgetGone drops the memory keyed by servers no longer in the account,
// so that it is bounded by the fleet: `for:` clocks, last suppression
// reasons and, once their cooldown has run out (a server that comes back
// within it keeps it), cooldowns, runs of refusals and lineage entries;
// closed-loop tracks once they hold no episode and no attempt in
// attempts_window (their episodes end after goneAfter lists: loopRefresh).
func (e *Engine) forgetGone(snap collector.Snapshot, present, roots map[string]bool, now time.Time) {
	prefix := serverKey(snap.Provider, snap.Account, "")
	e.mu.Lock()
	defer e.mu.Unlock()
	for k := range e.since {
		_, srv, _ := strings.Cut(k, "\x00")
		if strings.HasPrefix(srv, prefix) && !present[srv] {
			delete(e.since, k)
		}
	}
	for k := range e.lastReason {
		srv, _, _ := strings.Cut(k, "\x01")
		if strings.HasPrefix(srv, prefix) && !present[srv] {
			delete(e.lastReason, k)
		}
	}
	cd := time.Duration(e.cfg.Cooldown)
	for _, l := range []*ledger{&e.live, &e.dry} {
		for root, last := range l.cooldown {
			if !strings.HasPrefix(root, prefix) || roots[root] || e.inFlight[root] || now.Sub(last) < cd<<min(l.failures[root], 4) {
				continue
			}
			delete(l.cooldown, root)
			delete(l.failures, root)
		}
		for root := range l.failures {
			if _, ok := l.cooldown[root]; !ok && strings.HasPrefix(root, prefix) && !roots[root] {
				delete(l.failures, root)
			}
		}
	}
	// A server missing from a list keeps its attempts (it may be back
	// at the next: a page the provider skipped); its track leaves memory
	// once none of them is in attempts_window any more.
	_, window := attemptsLimit(e.cfg)
	for root, t := range e.tracks {
		if t.Episode == nil && strings.HasPrefix(root, prefix) && !roots[root] && !e.inFlight[root] && t.attemptsSince(now.Add(-window)) == 0 {
			delete(e.tracks, root)
		}
	}
	for k, root := range e.lineage {
		if !strings.HasPrefix(k, prefix) || present[k] {
			continue
		}
		_, live := e.live.cooldown[root]
		_, dry := e.dry.cooldown[root]
		if !live && !dry {
			delete(e.lineage, k)
			e.lineageV++
		}
	}
}

// presence is the keys of an account's servers and their lineage roots.
func (e *Engine) presence(snap collector.Snapshot) (present, roots map[string]bool) {
	present = make(map[string]bool, len(snap.Servers))
	roots = make(map[string]bool, len(snap.Servers))
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, s := range snap.Servers {
		k := serverKey(snap.Provider, snap.Account, s.ID)
		present[k] = true
		roots[e.rootLocked(k)] = true
	}
	return present, roots
}

// pruneRetention removes from the state file, and from memory, what is
// older than remediation.retention: audit records, cooldowns (never one
// that could still hold: at least 16 cooldowns old), lineage entries whose
// lineage has no cooldown left, suppression history, closed-loop records
// and handled alert occurrences (Alertmanager resends a firing alert with
// its first startsAt every repeat_interval for as long as it fires: an
// occurrence forgotten sooner would act again). Each pass deletes a
// bounded number of records in small transactions; the rest waits for the
// next.
func (e *Engine) pruneRetention() error {
	e.mu.Lock()
	st, now := e.state, e.now()
	ret, cooldown := time.Duration(e.cfg.Retention), time.Duration(e.cfg.Cooldown)
	if st != nil {
		st.hold() // a reload switching files closes this one after
		defer st.unhold()
	}
	e.mu.Unlock()
	if st == nil {
		return nil
	}
	if ret <= 0 {
		ret = 30 * 24 * time.Hour
	}
	c := pruneCutoffs{
		records:  now.Add(-ret),
		cooldown: now.Add(-max(ret, 16*cooldown)),
		seen:     now.Add(-ret),
		// A deleted track's tombstone outlives any older change of it
		// still on its way to the file.
		tombstones: now.Add(-tombstoneKeep),
	}
	err := st.Prune(c, pruneBatch, pruneBatches)
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, l := range []*ledger{&e.live, &e.dry} {
		for root, last := range l.cooldown {
			if last.Before(c.cooldown) && !e.inFlight[root] {
				delete(l.cooldown, root)
				delete(l.failures, root)
			}
		}
	}
	return err
}

// A pruning pass deletes at most pruneBatches x pruneBatch records, in
// transactions of pruneBatch.
const (
	pruneBatch   = 1000
	pruneBatches = 20
)

// pruneCutoffs are the times before which each kind of record goes.
type pruneCutoffs struct {
	records    time.Time // audit, suppression history, closed-loop records
	cooldown   time.Time
	seen       time.Time
	tombstones time.Time
}

// prunePass is one bucket's pruning: old says whether a record goes;
// an ordered bucket (by sequence, so by time) stops at the first one that
// stays.
type prunePass struct {
	bucket  []byte
	old     func(tx journal.Tx, k, v []byte) bool
	ordered bool
}

// Prune deletes what is older than its cutoff, at most batches
// transactions of batch deletions each.
func (s *State) Prune(c pruneCutoffs, batch, batches int) error {
	timeOf := func(v []byte) (time.Time, bool) {
		if len(v) < 8 { // a handled alert's time may be followed by its server
			return time.Time{}, false
		}
		return time.Unix(0, int64(binary.BigEndian.Uint64(v[:8]))), true
	}
	recordOld := func(_ journal.Tx, _, v []byte) bool {
		var r struct {
			Time time.Time `json:"time"`
		}
		return json.Unmarshal(v, &r) == nil && r.Time.Before(c.records)
	}
	passes := []prunePass{
		{bucketAudit, recordOld, true},
		{bucketEvents, recordOld, true},
		{bucketCooldown, func(_ journal.Tx, _, v []byte) bool { t, ok := timeOf(v); return ok && t.Before(c.cooldown) }, false},
		{bucketSeen, func(_ journal.Tx, _, v []byte) bool { t, ok := timeOf(v); return ok && t.Before(c.seen) }, false},
		// A replacement's lineage matters while its root has a cooldown.
		{bucketLineage, func(tx journal.Tx, _, v []byte) bool {
			cd := tx.Bucket(bucketCooldown)
			return cd.Get(v) == nil && cd.Get(cooldownKey(true, string(v))) == nil
		}, false},
	}
	passes = append(passes, loopPrunes(c)...)
	// A store that takes at most so many writes in one transaction (etcd)
	// gets smaller batches.
	if l, ok := s.db.(journal.Limited); ok && l.MaxWrites() < batch {
		batch = l.MaxWrites()
	}
	left := batches
	for _, p := range passes {
		for left > 0 {
			left--
			n := 0
			err := s.db.Update(func(tx journal.Tx) error {
				b := tx.Bucket(p.bucket)
				var keys [][]byte
				cur := b.Cursor()
				for k, v := cur.First(); k != nil && len(keys) < batch; k, v = cur.Next() {
					if p.old(tx, k, v) {
						keys = append(keys, append([]byte(nil), k...))
					} else if p.ordered {
						break
					}
				}
				for _, k := range keys {
					if err := b.Delete(k); err != nil {
						return err
					}
				}
				n = len(keys)
				return nil
			})
			if err != nil {
				return err
			}
			if n < batch {
				break
			}
		}
	}
	return nil
}
