package remediation

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/vps-exporter/vps_exporter/remediation/journal"
)

// Verdicts of an action: did it recover the server within its verify
// window?
const (
	VerdictRecovered    = "recovered"
	VerdictNotRecovered = "not_recovered"
	// VerdictUnknown: no fresh view of the server within stale_after
	// after the window; counted, never escalates.
	VerdictUnknown = "unknown"
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
	// Refused: the provider refused the action (outcome failed, none of
	// its calls accepted): nothing was done to verify, so the step gets
	// no verdict, is not counted, and does not use up its place in the
	// ladder: the same step is due again after its cooldown (doubled by
	// each refusal).
	Refused bool   `json:"refused,omitempty"`
	Verdict string `json:"verdict,omitempty"`
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
// repaired: the occurrence it is at (its startsAt: Alertmanager sends the
// same one until it resolves, a new one when it fires again), and when
// Alertmanager said that occurrence resolved.
type AlertMark struct {
	Fingerprint string    `json:"fingerprint"`
	Name        string    `json:"name"`
	StartsAt    time.Time `json:"starts_at,omitempty"`
	Resolved    time.Time `json:"resolved,omitempty"`
}

// alertMarks are an episode's alerts (or, before its first step is
// recorded, a reserved request's: pending marks).
type alertMarks []AlertMark

// mark notes that an occurrence of an alert fires for the server; it
// reports whether the marks changed. The same occurrence keeps its
// resolution (a resend, or the ladder's next step asked for by it); a
// newer one replaces it, unresolved; an older one is stale and ignored. A
// zero startsAt (an escalation, a record recovered after a crash: the
// occurrence is not known) notes a new alert and changes nothing else.
func (m *alertMarks) mark(fingerprint, name string, startsAt time.Time) bool {
	if fingerprint == "" {
		return false
	}
	for i := range *m {
		a := &(*m)[i]
		if a.Fingerprint != fingerprint {
			continue
		}
		switch {
		case startsAt.IsZero() || startsAt.Equal(a.StartsAt):
			return false
		case a.StartsAt.IsZero() || startsAt.After(a.StartsAt):
			a.StartsAt, a.Resolved = startsAt, time.Time{}
			return true
		}
		return false // an older occurrence: stale
	}
	if len(*m) >= maxAlertMarks {
		return false
	}
	*m = append(*m, AlertMark{Fingerprint: fingerprint, Name: name, StartsAt: startsAt})
	return true
}

// resolve notes that an occurrence of an alert resolved at t; it reports
// whether the marks changed. A resolution of an older occurrence than the
// one marked is stale (an out-of-order notification) and ignored; one of a
// newer occurrence says the alert is resolved now.
func (m *alertMarks) resolve(fingerprint string, startsAt, t time.Time) bool {
	for i := range *m {
		a := &(*m)[i]
		if a.Fingerprint != fingerprint {
			continue
		}
		switch {
		case !startsAt.IsZero() && !a.StartsAt.IsZero() && startsAt.Before(a.StartsAt):
			return false
		case !startsAt.IsZero() && startsAt.After(a.StartsAt):
			a.StartsAt, a.Resolved = startsAt, t
			return true
		case a.Resolved.IsZero():
			a.Resolved = t
			return true
		}
		return false
	}
	return false
}

// allResolved reports whether every alert resolved, and when the last one
// did.
func (m alertMarks) allResolved() (bool, time.Time) {
	var at time.Time
	for _, a := range m {
		if a.Resolved.IsZero() {
			return false, time.Time{}
		}
		if a.Resolved.After(at) {
			at = a.Resolved
		}
	}
	return len(m) > 0, at
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
	// verdict (or a refusal, for the same step again) asked for it and it
	// has not passed the gate yet; EscalateSince is since when.
	Escalate      string    `json:"escalate,omitempty"`
	EscalateSince time.Time `json:"escalate_since,omitempty"`
	// AwaitingView is since when the last step's verify window is over
	// with no fresh view of the server: its verdict waits for one, at
	// most stale_after (then it is unknown).
	AwaitingView time.Time `json:"awaiting_view,omitempty"`
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

// position is the episode's place in its ladder: its steps but the
// refused ones.
func (ep *Episode) position() int {
	n := 0
	for _, s := range ep.Steps {
		if !s.Refused {
			n++
		}
	}
	return n
}

// verifying reports whether the episode's last step waits for its
// verdict.
func (ep *Episode) verifying() bool {
	last := ep.last()
	return last != nil && last.Verdict == "" && !last.Refused
}

// isDueStep reports whether req is the episode's due next step: an
// escalation of this episode, for the step due (the one question every
// check of "is this step still wanted?" asks first).
func (ep *Episode) isDueStep(req Request) bool {
	return ep != nil && req.escalation && req.epSeq == ep.Seq && ep.Escalate != "" && ep.Escalate == string(req.Action) && !ep.exhausted()
}

// exhausted reports whether the episode holds its server back.
func (ep *Episode) exhausted() bool { return ep.Outcome == EpisodeExhausted && ep.Released.IsZero() }

// marks are the episode's alerts, to note and resolve them.
func (ep *Episode) marks() *alertMarks { return (*alertMarks)(&ep.Alerts) }

// allResolved reports whether every alert of the episode resolved, and
// when the last one did.
func (ep *Episode) allResolved() (bool, time.Time) { return alertMarks(ep.Alerts).allResolved() }

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
	// Watch: the episode's last redeploy lost its answer; its
	// replacement is looked for (lineage_watch.go).
	Watch *lineageWatch `json:"lineage_watch,omitempty"`
	// InFlightAlerts are the alerts noted for the server's first step
	// while its call is under way (the engine's pendingMarks), written
	// when one of them resolves so that the step recovered after a crash
	// knows it (recoverStep); its recorded step takes them.
	InFlightAlerts alertMarks `json:"in_flight_alerts,omitempty"`
	// Deleted marks a tombstone in the state file: the track was deleted
	// (a reset, nothing left to remember) at this version, so that an
	// older change stored after it cannot write it back. Pruned after
	// tombstoneKeep.
	Deleted time.Time `json:"deleted,omitempty"`
	// verifying is set while a verdict's re-read is under way;
	// metricMisses counts the verdict re-reads of the last step that
	// lacked the rule's metric; missing counts the account's successive
	// lists without the server.
	verifying    bool
	metricMisses int
	missing      int
}

// tombstoneKeep is how long a deleted track's tombstone stays in the
// state file: far longer than a change takes from its capture to its
// write.
const tombstoneKeep = time.Hour

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
// the track (or its tombstone), the episodes it touched (the active one,
// one that ended) and the durable counters it moved.
type loopWrite struct {
	root   string
	track  []byte
	ver    uint64
	eps    []*Episode
	counts []string
}

// tombstoneJSON is a deleted track as the state file keeps it for a
// while: its version, over any older change.
func tombstoneJSON(root string, ver uint64, at time.Time) []byte {
	return mustJSON(&track{Root: root, Version: ver, Deleted: at})
}

var (
	bucketTracks   = []byte("tracks")
	bucketEpisodes = []byte("episodes")
)

// putLoop writes w in tx. A track or an episode older than the stored one
// (a slower writer of an earlier change) is not written: a deleted
// track's tombstone holds its version.
func putLoop(tx journal.Tx, w *loopWrite) error {
	if w == nil {
		return nil
	}
	tb := tx.Bucket(bucketTracks)
	if cur := tb.Get([]byte(w.root)); w.track != nil && (cur == nil || storedVersion(cur) < w.ver) {
		if err := tb.Put([]byte(w.root), w.track); err != nil {
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

// PutLoop writes changes of the closed loop in one transaction; on a
// store that takes a limited number of writes in one (etcd), in several
// of a few changes each, each change whole in one.
func (s *State) PutLoop(ws ...*loopWrite) error {
	size := len(ws)
	if m := s.maxWrites(); m > 0 {
		size = max(1, m/loopWritesPerChange)
	}
	for len(ws) > 0 {
		n := min(size, len(ws))
		err := s.db.Update(func(tx journal.Tx) error {
			for _, w := range ws[:n] {
				if err := putLoop(tx, w); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		ws = ws[n:]
	}
	return nil
}

// loopWritesPerChange bounds the writes of one closed-loop change: its
// track, its episodes (the one that ended and the one that began), its
// counters.
const loopWritesPerChange = 8

// loopState is the closed loop as the state file holds it.
type loopState struct {
	tracks map[string]*track
	maxSeq uint64
	maxVer uint64 // the newest version written: versions go on from it
}

// loadLoop reads every track and the newest episode number.
func (s *State) loadLoop() (*loopState, error) {
	l := &loopState{tracks: map[string]*track{}}
	err := s.db.View(func(tx journal.Tx) error {
		if err := readTracks(tx, nil, l); err != nil {
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

// loadTracks reads the tracks of the servers under the key prefixes
// (accounts added back by a reload).
func (s *State) loadTracks(prefixes []string) (*loopState, error) {
	l := &loopState{tracks: map[string]*track{}}
	err := s.db.View(func(tx journal.Tx) error { return readTracks(tx, prefixes, l) })
	return l, err
}

// readTracks reads into l the tracks under the prefixes (nil: all); a
// tombstone is no track, but its version counts.
func readTracks(tx journal.Tx, prefixes []string, l *loopState) error {
	read := func(k, v []byte) error {
		t := &track{}
		if err := json.Unmarshal(v, t); err != nil {
			return fmt.Errorf("remediation track %q: %w", k, err)
		}
		l.maxVer = max(l.maxVer, t.Version)
		if !t.Deleted.IsZero() {
			return nil
		}
		t.Root = string(k)
		if t.Episode != nil {
			t.Episode.Root = t.Root
		}
		l.tracks[t.Root] = t
		return nil
	}
	b := tx.Bucket(bucketTracks)
	if prefixes == nil {
		return b.ForEach(read)
	}
	for _, p := range prefixes {
		c := b.Cursor()
		for k, v := c.Seek([]byte(p)); k != nil && strings.HasPrefix(string(k), p); k, v = c.Next() {
			if err := read(k, v); err != nil {
				return err
			}
		}
	}
	return nil
}

// Episodes returns the episodes keep accepts, newest first, at most max.
func (s *State) Episodes(keep func(*Episode) bool, max int) ([]Episode, error) {
	return s.episodes(context.Background(), keep, max)
}

// episodes is Episodes, stopping when ctx ends.
func (s *State) episodes(ctx context.Context, keep func(*Episode) bool, max int) ([]Episode, error) {
	var out []Episode
	err := s.db.View(func(tx journal.Tx) error {
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
		{bucket: bucketEpisodes, old: func(_ journal.Tx, _, v []byte) bool {
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
		{bucket: bucketTracks, old: func(_ journal.Tx, _, v []byte) bool {
			var t track
			if json.Unmarshal(v, &t) != nil {
				return false
			}
			if !t.Deleted.IsZero() {
				return t.Deleted.Before(c.tombstones)
			}
			return t.Episode == nil && t.attemptsSince(c.records) == 0
		}},
	}
}

// ResetServer clears one server's live cooldown and the alert
// occurrences handled for it (so that a still-firing alert's resend
// starts its ladder again), and writes its reset track (w: its
// tombstone, the episode that ended) in one transaction.
func (s *State) ResetServer(root string, w *loopWrite) error {
	return s.db.Update(func(tx journal.Tx) error {
		if err := tx.Bucket(bucketCooldown).Delete([]byte(root)); err != nil {
			return err
		}
		seen := tx.Bucket(bucketSeen)
		var keys [][]byte
		if err := seen.ForEach(func(k, v []byte) error {
			if len(v) > 8 && string(v[8:]) == root {
				keys = append(keys, append([]byte(nil), k...))
			}
			return nil
		}); err != nil {
			return err
		}
		for _, k := range keys {
			if err := seen.Delete(k); err != nil {
				return err
			}
		}
		return putLoop(tx, w)
	})
}
