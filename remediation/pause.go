package remediation

import (
	"fmt"
	"strconv"
	"time"
)

// pausedLocked says why remediation is paused now, or "".
func (e *Engine) pausedLocked(now time.Time) string {
	p := e.pause
	if p == nil || (!p.Until.IsZero() && !now.Before(p.Until)) {
		return ""
	}
	until := "until resumed"
	if !p.Until.IsZero() {
		until = "until " + p.Until.UTC().Format(time.RFC3339)
	}
	return fmt.Sprintf("paused by an operator since %s %s: %s", p.Since.UTC().Format(time.RFC3339), until, strconv.Quote(p.Reason))
}

// Pause stops every action (rules and alerts) for d (0: until Resume),
// durably: a restart keeps it. The pause is written first and published
// after, both under e.stateMu; the engine's lock is never held while the
// file is written.
func (e *Engine) Pause(d time.Duration, reason string) (Pause, error) {
	e.stateMu.Lock()
	defer e.stateMu.Unlock()
	e.mu.Lock()
	st, now := e.state, e.now()
	e.mu.Unlock()
	if st == nil {
		return Pause{}, fmt.Errorf("remediation has no usable state file: %w", errNoState)
	}
	p := &Pause{Since: now, Reason: reason}
	if d > 0 {
		p.Until = now.Add(d)
	}
	if err := st.SetPause(p); err != nil {
		return Pause{}, fmt.Errorf("store the pause: %w", err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.pause = p
	e.m.paused.Set(1)
	return *p, nil
}

// Resume ends a pause (written first, published after, as Pause).
func (e *Engine) Resume() error {
	e.stateMu.Lock()
	defer e.stateMu.Unlock()
	e.mu.Lock()
	st := e.state
	e.mu.Unlock()
	if st == nil {
		return fmt.Errorf("remediation has no usable state file: %w", errNoState)
	}
	if err := st.SetPause(nil); err != nil {
		return fmt.Errorf("clear the pause: %w", err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.pause = nil
	e.m.paused.Set(0)
	return nil
}
