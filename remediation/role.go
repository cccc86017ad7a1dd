package remediation

// Role is this replica's part in highly available remediation
// (remediation.ha): the leader acts, a standby exports and forwards the
// webhook and the controls to the leader, and without etcd's quorum
// nobody acts.
type Role string

// The roles. RoleSingle is the role without remediation.ha: one process,
// its own state file.
const (
	RoleSingle      Role = ""
	RoleLeader      Role = "leader"
	RoleStandby     Role = "standby"
	RoleUnavailable Role = "unavailable"
)

// Leadership reports this replica's role and the leader's advertise URL
// (empty when there is none, it is not known, or remediation.ha is off).
func (e *Engine) Leadership() (Role, string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.role, e.leaderURL
}
