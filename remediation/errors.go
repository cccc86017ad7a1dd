package remediation

// IsStateLocked reports whether err says that another process holds the
// remediation state file's lock: the engine retries it in the background
// and takes the file over when that process exits.
func IsStateLocked(err error) bool { return isLockTimeout(err) }
