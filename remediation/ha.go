package remediation

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/go-kit/log/level"

	"github.com/vps-exporter/vps_exporter/remediation/journal/etcdha"
)

// HA is what the engine needs to run as one replica of remediation.ha
// (docs/ha.md): the elector of this replica, its metrics, its advertise
// URL, and the state file to import once when etcd holds no state yet.
type HA struct {
	Elector *etcdha.Elector
	Metrics *etcdha.Metrics
	// AdvertiseURL is this replica's remediation.ha.advertise_url.
	AdvertiseURL string
	// StateFile, when set, is imported at the first takeover if etcd
	// holds no state yet (a replica that does not have the file starts
	// etcd empty, and says so).
	StateFile string
}

// leaderPoll is how often a replica copies the leader's URL that the
// elector's watch last saw into its role.
const leaderPoll = 250 * time.Millisecond

// RunHA runs the engine under remediation.ha until ctx ends: every
// replica polls, exports and serves; this one campaigns, and only while
// it holds a term does the engine have a state (the term's etcd journal)
// and act. A term ends (deposed, or ctx ending resigns it): the state is
// dropped at once, the replica is a standby again and campaigns again.
// Configure must have been called with remediation.ha set first. RunHA
// returns once its goroutines have ended.
func (e *Engine) RunHA(ctx context.Context, h HA) {
	e.mu.Lock()
	e.role, e.leaderURL = RoleUnavailable, ""
	e.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); h.Elector.Watch(ctx) }()
	go func() { defer wg.Done(); e.followLeader(ctx, h) }()
	// When ctx ends, the term (if any) resigns only once the actions
	// under way were recorded and the suppressions flushed in it (at
	// most shutdownRecordWait).
	runCtx, cancelRun := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() {
		e.recordBeforeResign(shutdownRecordWait)
		cancelRun()
	})
	h.Elector.Run(runCtx, func(t *etcdha.Term) { e.lead(h, t) })
	if stop() {
		cancelRun()
	}
	wg.Wait()
}

// shutdownRecordWait bounds how long a leader that stops waits for its
// actions under way to be recorded before it resigns: within the
// exporter's shutdown budget (main.go).
const shutdownRecordWait = 5 * time.Second

// recordBeforeResign waits (at most wait) for what holds the leader's
// state (actions between their intent and their record) and flushes the
// suppressions into it, while its term still leads.
func (e *Engine) recordBeforeResign(wait time.Duration) {
	e.mu.Lock()
	st := e.state
	e.mu.Unlock()
	if st == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	left := st.waitIdle(ctx)
	cancel()
	if left > 0 {
		level.Warn(e.logger).Log("msg", "resigning the remediation leadership with actions still under way: their intents stay pending in etcd and the next leader records them unknown", "holders", left)
	}
	e.flush()
}

// followLeader keeps a standby's role and the leader's URL as the
// elector's watch last saw them: standby with a leader, unavailable with
// none (or etcd out of reach: nobody to forward to, nobody acts here).
func (e *Engine) followLeader(ctx context.Context, h HA) {
	t := time.NewTicker(leaderPoll)
	defer t.Stop()
	var lastRole Role = "-"
	var lastURL string
	for {
		url, ok := h.Elector.LeaderURL()
		e.mu.Lock()
		if e.role != RoleLeader {
			e.role, e.leaderURL = RoleUnavailable, ""
			// Its own URL while it does not lead: a term that just
			// ended, as the watch last saw it; nobody to forward to.
			if ok && url != h.AdvertiseURL {
				e.role, e.leaderURL = RoleStandby, url
			}
		}
		role, leader := e.role, e.leaderURL
		e.mu.Unlock()
		// One line when the role or the leader changes (the leader's
		// own lines are lead's).
		// Unavailable at the very start is the first election under way:
		// not said.
		first := lastRole == "-" && role == RoleUnavailable
		if role != RoleLeader && !first && (role != lastRole || leader != lastURL) {
			if role == RoleStandby {
				level.Info(e.logger).Log("msg", "remediation standby: the leader acts; the webhook and the controls are forwarded to it", "leader_url", leader)
			} else {
				level.Warn(e.logger).Log("msg", "remediation unavailable: no leader known (etcd out of reach, or an election under way); nobody acts, every replica exports")
			}
		}
		lastRole, lastURL = role, leader
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// lead is one term of this replica: take over, act until the term ends,
// drop the state. A takeover that fails ends the term (Run resigns it and
// campaigns again).
func (e *Engine) lead(h HA, t *etcdha.Term) {
	st, err := e.takeOver(h, t)
	if err != nil {
		level.Error(e.logger).Log("msg", "remediation takeover failed; not leading, campaigning again", "err", err)
		return
	}
	<-t.Deposed()
	e.dropTerm(st, t.Err())
}

// takeOver makes term t's journal the engine's state: it initializes the
// state in etcd the first time (importing the state file when there is
// one), then reads it as a start reads its file: intents left pending
// become unknown (counted in vps_remediation_takeover_unknown_total;
// their cooldowns stand, they are not sent again), episodes and their
// timers come from their stored times, a power cycle left between its
// stop and its start is finished. Only then is the replica leader.
func (e *Engine) takeOver(h HA, t *etcdha.Term) (*State, error) {
	j, err := etcdha.NewJournal(t, allBuckets...)
	if err != nil {
		return nil, err
	}
	if !j.Initialized() {
		if err := e.initialize(t.Context(), j, h.StateFile); err != nil {
			return nil, err
		}
	}
	st := &State{db: j}
	e.stateMu.Lock()
	defer e.stateMu.Unlock()
	l, err := e.readState(st)
	if err != nil {
		return nil, fmt.Errorf("load the remediation state from etcd: %w", err)
	}
	var unknown int
	for _, r := range l.recovered {
		if r.Result == ResultUnknown {
			unknown++
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if t.Err() != nil || e.closing {
		return nil, fmt.Errorf("the term ended during the takeover: %w", errors.Join(t.Err(), ctxErrIf(e.closing)))
	}
	e.applyLoadedLocked(l)
	e.resumeCyclesLocked(st, l.cycles)
	e.state, e.stateErr, e.statePath = st, nil, e.cfg.StateFile
	e.role, e.leaderURL = RoleLeader, h.AdvertiseURL
	e.m.stateOK.Set(1)
	e.m.enabled.Set(b2f(e.cfg.Enabled))
	h.Metrics.TakeoverUnknown.Add(float64(unknown))
	level.Info(e.logger).Log("msg", "this replica is the remediation leader", "term", t.Rev(), "pending_intents_unknown", unknown, "power_cycles_resumed", len(l.cycles))
	return st, nil
}

func ctxErrIf(closing bool) error {
	if closing {
		return errors.New("the exporter is stopping")
	}
	return nil
}

// initialize writes the state a first term starts from: the state file
// when it is set and exists, else nothing.
func (e *Engine) initialize(ctx context.Context, j *etcdha.Journal, file string) error {
	if file == "" {
		level.Info(e.logger).Log("msg", "etcd holds no remediation state yet: starting from none")
		return j.Initialize(ctx, nil)
	}
	if _, err := os.Stat(file); errors.Is(err, os.ErrNotExist) {
		level.Warn(e.logger).Log("msg", "etcd holds no remediation state yet and this replica has no state_file to import: starting from none", "state_file", file)
		return j.Initialize(ctx, nil)
	}
	st, err := OpenState(file)
	if err != nil {
		return fmt.Errorf("import the state file into etcd: %w", err)
	}
	defer st.Close()
	if err := j.Initialize(ctx, st.db); err != nil {
		return fmt.Errorf("import the state file into etcd: %w", err)
	}
	level.Info(e.logger).Log("msg", "etcd held no remediation state: the state file was imported", "state_file", file)
	return nil
}

// dropTerm ends a term's hold on the engine at once: no new action starts
// (an action under way is stopped by its next fenced write or the send
// check, which the term's end refuses), and this replica is a standby.
func (e *Engine) dropTerm(st *State, why error) {
	e.stateMu.Lock()
	e.mu.Lock()
	if e.state == st {
		e.state = nil
	}
	e.role, e.leaderURL = RoleUnavailable, ""
	e.m.stateOK.Set(1) // a standby's state is not in error
	closing := e.closing
	e.mu.Unlock()
	e.stateMu.Unlock()
	if !closing {
		level.Warn(e.logger).Log("msg", "no longer the remediation leader: remediation stops on this replica until it is elected again", "reason", why)
	}
}
