package remediation

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Verdicts of an action: did it recover the server within its verify
// window?
const (
	VerdictRecovered    = "recovered"
	VerdictNotRecovered = "not_recovered"
	// VerdictVerifying is what the history shows for a step whose verify
	// window has not ended (no verdict yet); it is never stored.
	VerdictVerifying = "verifying"
)

// Outcomes of an episode.
const (
	// EpisodeOpen: an action is being verified, or its next step is due.
	EpisodeOpen = "open"
	// EpisodeRecovered: an action's verdict was recovered.
	EpisodeRecovered = "recovered"
	// EpisodeExhausted: the ladder is used up, or max_attempts was
	// reached in attempts_window; the server is handed to a person.
	EpisodeExhausted = "exhausted"
	// EpisodeEnded: neither; Reason says why (the server left its
	// account, its rule was removed, an operator reset it).
	EpisodeEnded = "ended"
)

// Step is one action of an episode and its verdict.
type Step struct {
	Seq    uint64 `json:"seq"` // the audit record
	Action string `json:"action"`
	ID     string `json:"id"` // the server acted on
	Source string `json:"source"`
	Rule   string `json:"rule"`
	// Time is when the action was sent (its audit record's time),
	// Finished when the provider's answer came: its verify window starts
	// there.
	Time     time.Time `json:"time"`
	Finished time.Time `json:"finished"`
	Outcome  string    `json:"outcome"` // success, failed, unknown
	Verdict  string    `json:"verdict,omitempty"`
	// VerdictTime is when the verdict was taken; Detail says on what.
	VerdictTime time.Time `json:"verdict_time,omitempty"`
	Detail      string    `json:"detail,omitempty"`
	// ClearAt is when the condition was first seen clear after the
	// action (rules), for the time to recover.
	ClearAt time.Time `json:"clear_at,omitempty"`
	// Alert is the fingerprint of the alert that asked for the action.
	Alert string `json:"alert,omitempty"`
}

// AlertMark is one alert that asked for an episode's server to be
// repaired, and when Alertmanager said it resolved.
type AlertMark struct {
	Fingerprint string    `json:"fingerprint"`
	Name        string    `json:"name"`
	Resolved    time.Time `json:"resolved,omitempty"`
}

// maxAlertMarks bounds the alerts one episode remembers.
const maxAlertMarks = 8

// Episode is the closed loop of one server: it begins with the first
// action on it and ends recovered, exhausted (or ended). Steps are its
// actions, oldest first.
type Episode struct {
	Seq      uint64 `json:"seq"`
	Provider string `json:"provider"`
	Account  string `json:"account"`
	// ID is the server now (a redeploy's replacement); Root is its
	// lineage root's key (not shown).
	ID     string `json:"id"`
	Root   string `json:"-"`
	Source string `json:"source"`
	// Rule is the rule, or the first alert's name.
	Rule    string    `json:"rule"`
	Opened  time.Time `json:"opened"`
	Steps   []Step    `json:"steps"`
	Outcome string    `json:"outcome"`
	Reason  string    `json:"reason,omitempty"`
	Ended   time.Time `json:"ended,omitempty"`
	// Escalate is the next action of the ladder, due: a not_recovered
	// verdict asked for it and it has not passed the gate yet.
	Escalate string `json:"escalate,omitempty"`
	// ClearSince is, for an exhausted server, since when its condition
	// has been clear (zero: it is not).
	ClearSince time.Time `json:"clear_since,omitempty"`
	// Released is when an exhausted server was handed back to the loop,
	// ReleasedBy how: condition_clear or reset.
	Released   time.Time   `json:"released,omitempty"`
	ReleasedBy string      `json:"released_by,omitempty"`
	Alerts     []AlertMark `json:"alerts,omitempty"`
	Version    uint64      `json:"version"`
}

// last is the newest step, nil before the first.
func (ep *Episode) last() *Step {
	if len(ep.Steps) == 0 {
		return nil
	}
	return &ep.Steps[len(ep.Steps)-1]
}

// exhausted reports whether the episode holds its server back.
func (ep *Episode) exhausted() bool { return ep.Outcome == EpisodeExhausted && ep.Released.IsZero() }

// mark notes that an alert is firing for the episode's server.
func (ep *Episode) mark(fingerprint, name string) {
	if fingerprint == "" {
		return
	}
	for i := range ep.Alerts {
		if ep.Alerts[i].Fingerprint == fingerprint {
			ep.Alerts[i].Resolved = time.Time{}
			return
		}
	}
	if len(ep.Alerts) < maxAlertMarks {
		ep.Alerts = append(ep.Alerts, AlertMark{Fingerprint: fingerprint, Name: name})
	}
}

// resolve notes that an alert resolved at t; it reports whether the
// episode knew the alert.
func (ep *Episode) resolve(fingerprint string, t time.Time) bool {
	for i := range ep.Alerts {
		if ep.Alerts[i].Fingerprint == fingerprint {
			if ep.Alerts[i].Resolved.IsZero() {
				ep.Alerts[i].Resolved = t
			}
			return true
		}
	}
	return false
}

// allResolved reports whether every alert of the episode resolved, and
// when the last one did.
func (ep *Episode) allResolved() (bool, time.Time) {
	var at time.Time
	for _, a := range ep.Alerts {
		if a.Resolved.IsZero() {
			return false, time.Time{}
		}
		if a.Resolved.After(at) {
			at = a.Resolved
		}
	}
	return len(ep.Alerts) > 0, at
}

func (ep *Episode) clone() *Episode {
	c := *ep
	c.Steps = append([]Step(nil), ep.Steps...)
	c.Alerts = append([]AlertMark(nil), ep.Alerts...)
	return &c
}

// track is the closed loop's memory of one server (its lineage root):
// its live actions in the attempts window since its last reset, and its
// active episode (open, or exhausted and not released).
type track struct {
	Root     string      `json:"root"`
	Attempts []time.Time `json:"attempts,omitempty"`
	Episode  *Episode    `json:"episode,omitempty"`
	Version  uint64      `json:"version"`
	// verifying is set while a verdict's re-read is under way.
	verifying bool
}

// attemptsSince counts the actions at or after t.
func (t *track) attemptsSince(from time.Time) int {
	n := 0
	for _, a := range t.Attempts {
		if !a.Before(from) {
			n++
		}
	}
	return n
}

// loopWrite is what one change of a track writes, in one transaction:
// the track, the episodes it touched (the active one, one that ended) and
// the durable counters it moved.
type loopWrite struct {
	root   string
	track  []byte // nil: delete the track
	ver    uint64
	eps    []*Episode
	counts []string
}

var (
	bucketTracks   = []byte("tracks")
	bucketEpisodes = []byte("episodes")
)

// putLoop writes w in tx. A track or an episode older than the stored one
// (a slower writer of an earlier change) is not written.
func putLoop(tx *bolt.Tx, w *loopWrite) error {
	if w == nil {
		return nil
	}
	tb := tx.Bucket(bucketTracks)
	if cur := tb.Get([]byte(w.root)); cur == nil || storedVersion(cur) < w.ver {
		var err error
		if w.track == nil {
			err = tb.Delete([]byte(w.root))
		} else {
			err = tb.Put([]byte(w.root), w.track)
		}
		if err != nil {
			return err
		}
	}
	eb := tx.Bucket(bucketEpisodes)
	for _, ep := range w.eps {
		if cur := eb.Get(u64(ep.Seq)); cur != nil && storedVersion(cur) >= ep.Version {
			continue
		}
		b, err := json.Marshal(ep)
		if err != nil {
			return err
		}
		if err := eb.Put(u64(ep.Seq), b); err != nil {
			return err
		}
	}
	for _, k := range w.counts {
		if err := incr(tx, k); err != nil {
			return err
		}
	}
	return nil
}

func storedVersion(b []byte) uint64 {
	var v struct {
		Version uint64 `json:"version"`
	}
	_ = json.Unmarshal(b, &v)
	return v.Version
}

// PutLoop writes one change of the closed loop.
func (s *State) PutLoop(w *loopWrite) error {
	return s.db.Update(func(tx *bolt.Tx) error { return putLoop(tx, w) })
}

// loopState is the closed loop as the state file holds it.
type loopState struct {
	tracks map[string]*track
	maxSeq uint64
	maxVer uint64 // the newest version written: versions go on from it
}

// loadLoop reads every track and the newest episode number.
func (s *State) loadLoop() (*loopState, error) {
	l := &loopState{tracks: map[string]*track{}}
	err := s.db.View(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketTracks).ForEach(func(k, v []byte) error {
			t := &track{}
			if err := json.Unmarshal(v, t); err != nil {
				return fmt.Errorf("remediation track %q: %w", k, err)
			}
			t.Root = string(k)
			l.maxVer = max(l.maxVer, t.Version)
			if t.Episode != nil {
				t.Episode.Root = t.Root
			}
			l.tracks[t.Root] = t
			return nil
		}); err != nil {
			return err
		}
		if k, _ := tx.Bucket(bucketEpisodes).Cursor().Last(); len(k) == 8 {
			l.maxSeq = be64(k)
		}
		return tx.Bucket(bucketEpisodes).ForEach(func(_, v []byte) error {
			l.maxVer = max(l.maxVer, storedVersion(v))
			return nil
		})
	})
	return l, err
}

// Episodes returns the episodes keep accepts, newest first, at most max.
func (s *State) Episodes(keep func(*Episode) bool, max int) ([]Episode, error) {
	return s.episodes(context.Background(), keep, max)
}

// episodes is Episodes, stopping when ctx ends.
func (s *State) episodes(ctx context.Context, keep func(*Episode) bool, max int) ([]Episode, error) {
	var out []Episode
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketEpisodes).Cursor()
		for k, v := c.Last(); k != nil && len(out) < max; k, v = c.Prev() {
			if err := ctx.Err(); err != nil {
				return err
			}
			var ep Episode
			if json.Unmarshal(v, &ep) == nil && keep(&ep) {
				out = append(out, ep)
			}
		}
		return nil
	})
	return out, err
}

// loopPrunes are the closed loop's retention passes: episodes that ended
// before the cutoff, and tracks with neither an active episode nor an
// action since it.
func loopPrunes(c pruneCutoffs) []prunePass {
	return []prunePass{
		{bucket: bucketEpisodes, old: func(_ *bolt.Tx, _, v []byte) bool {
			var ep Episode
			if json.Unmarshal(v, &ep) != nil || ep.Outcome == EpisodeOpen || ep.exhausted() {
				return false
			}
			end := ep.Ended
			if !ep.Released.IsZero() {
				end = ep.Released
			}
			return !end.IsZero() && end.Before(c.records)
		}},
		{bucket: bucketTracks, old: func(_ *bolt.Tx, _, v []byte) bool {
			var t track
			return json.Unmarshal(v, &t) == nil && t.Episode == nil && t.attemptsSince(c.records) == 0
		}},
	}
}

// ResetServer clears one server's live cooldown and writes its reset
// track (w: no track, the episode that ended) in one transaction.
func (s *State) ResetServer(root string, w *loopWrite) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketCooldown).Delete([]byte(root)); err != nil {
			return err
		}
		return putLoop(tx, w)
	})
}
