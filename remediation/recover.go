package remediation

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/vps-exporter/vps_exporter/remediation/journal"
)

// Recover turns intents left by a crash into audit records and returns
// them (but not a power cycle left between its stop and its start:
// resumeCyclesLocked finishes it): a live one with result "unknown" (the
// provider may have acted; its cooldown already stands), a dry run (left
// by an older version, which recorded dry runs in two steps) as the dry
// run it was. countKey names the counter each counts in.
//
// each, when given, runs in the same transaction for each recovered
// record (the closed loop records it as a step).
func (s *State) Recover(countKey func(Record) string, each ...func(journal.Tx, Record) error) ([]Record, error) {
	// A store with a write limit (etcd) recovers a few intents per
	// transaction, each intent's writes in one.
	limit := 0
	if m := s.maxWrites(); m > 0 {
		limit = max(1, m/recoverWritesPerIntent)
	}
	var out []Record
	for {
		batch, err := s.recoverSome(limit, countKey, each)
		out = append(out, batch...)
		if err != nil || limit == 0 || len(batch) < limit {
			return out, err
		}
	}
}

// recoverWritesPerIntent bounds the writes of one recovered intent: its
// audit record, the intent's deletion, its counter, its episode step.
const recoverWritesPerIntent = 8

// errRecoverBatch ends a batch of recoverSome.
var errRecoverBatch = errors.New("batch full")

// recoverSome is Recover of at most limit intents (0: all) in one
// transaction.
func (s *State) recoverSome(limit int, countKey func(Record) string, each []func(journal.Tx, Record) error) ([]Record, error) {
	var out []Record
	err := s.db.Update(func(tx journal.Tx) error {
		out = out[:0]
		p := tx.Bucket(bucketPending)
		var keys [][]byte
		err := p.ForEach(func(k, v []byte) error {
			if limit > 0 && len(keys) == limit {
				return errRecoverBatch
			}
			var r Record
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("pending record %x: %w", k, err)
			}
			if resumable(r) {
				return nil // finished by resumeCyclesLocked, not recovered
			}
			if r.Result != ResultDryRun {
				r.Result = ResultUnknown
				var sending *Call
				if n := len(r.Calls); n > 0 && r.Calls[n-1].Result == callSending {
					sending = &r.Calls[n-1]
					sending.Result = ResultUnknown
				}
				switch {
				case r.Error != "":
				case sending != nil && len(r.Calls) > 1:
					r.Error = fmt.Sprintf("the daemon stopped during the %s while its %s was being sent, after its %s was answered; the server may be left in between", r.Action, sending.Action, r.Calls[len(r.Calls)-2].Action)
				case sending != nil:
					r.Error = fmt.Sprintf("the daemon stopped during the %s while its %s was being sent", r.Action, sending.Action)
				case len(r.Calls) > 0:
					r.Error = fmt.Sprintf("the daemon stopped during the %s after its %s was answered; the server may be left in between", r.Action, r.Calls[len(r.Calls)-1].Action)
				default:
					r.Error = "the daemon stopped before the provider's answer was recorded"
				}
			}
			a := r
			a.Watch = nil
			b, _ := json.Marshal(&a)
			if err := tx.Bucket(bucketAudit).Put(u64(r.Seq), b); err != nil {
				return err
			}
			if err := incr(tx, countKey(r)); err != nil {
				return err
			}
			for _, f := range each {
				if err := f(tx, r); err != nil {
					return err
				}
			}
			keys = append(keys, append([]byte(nil), k...))
			out = append(out, r)
			return nil
		})
		if err != nil && !errors.Is(err, errRecoverBatch) {
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
