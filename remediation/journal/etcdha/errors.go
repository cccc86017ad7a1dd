package etcdha

import (
	"errors"
	"fmt"
)

// ErrDeposed is what every error of a term that no longer leads wraps:
// errors.Is(err, ErrDeposed) tells the engine to stop acting at once. Its
// reasons are ErrSessionLost, ErrFenced, ErrDeadlinePassed and ErrResigned.
var ErrDeposed = errors.New("not the remediation leader")

// The reasons a term ends. Each wraps ErrDeposed.
var (
	// ErrSessionLost: the term's lease expired or could not be renewed
	// (etcd said it is gone, or the session's keepalives ended), or its
	// leader key was deleted.
	ErrSessionLost = fmt.Errorf("session lost: %w", ErrDeposed)
	// ErrFenced: etcd refused a fenced write because the leader key this
	// term was elected with is gone (another replica may lead). Counted in
	// vps_remediation_fencing_refusals_total; never retried.
	ErrFenced = fmt.Errorf("fence refused: %w", ErrDeposed)
	// ErrDeadlinePassed: the lease-derived send deadline passed before a
	// renewal moved it (a frozen or partitioned leader): this replica can
	// no longer be sure no other replica leads.
	ErrDeadlinePassed = fmt.Errorf("send deadline passed: %w", ErrDeposed)
	// ErrResigned: the term was ended by Resign (or the elector closed).
	ErrResigned = fmt.Errorf("resigned: %w", ErrDeposed)
)

// ErrNoLeader is Leader's answer when no replica leads.
var ErrNoLeader = errors.New("no remediation leader")
