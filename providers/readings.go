package providers

import "sort"

// readings maps the names threshold rules may use to a server's values:
// the per-server metrics without their vps_server_ prefix, and usage
// ratios derived from a used/limit pair.
func readings() map[string]func(Server) Value {
	ratio := func(used, limit func(Server) Value) func(Server) Value {
		return func(s Server) Value {
			u, l := used(s), limit(s)
			if !u.OK || !l.OK || l.V <= 0 {
				return Value{}
			}
			return Some(u.V / l.V)
		}
	}
	return map[string]func(Server) Value{
		"cpu_usage_ratio":                 func(s Server) Value { return s.CPUUsageRatio },
		"memory_used_bytes":               func(s Server) Value { return s.MemoryUsedBytes },
		"disk_used_bytes":                 func(s Server) Value { return s.DiskUsedBytes },
		"bandwidth_used_bytes_per_second": func(s Server) Value { return s.BandwidthUsedBytesPerSecond },
		"transfer_used_bytes":             func(s Server) Value { return s.TransferUsedBytes },
		"expiry_timestamp_seconds":        func(s Server) Value { return s.ExpiryTime },
		"status_change_timestamp_seconds": func(s Server) Value { return s.StatusChangeTime },
		"memory_usage_ratio":              ratio(func(s Server) Value { return s.MemoryUsedBytes }, func(s Server) Value { return s.MemoryBytes }),
		"disk_usage_ratio":                ratio(func(s Server) Value { return s.DiskUsedBytes }, func(s Server) Value { return s.DiskBytes }),
		"bandwidth_usage_ratio":           ratio(func(s Server) Value { return s.BandwidthUsedBytesPerSecond }, func(s Server) Value { return s.BandwidthLimitBytesPerSecond }),
		"transfer_usage_ratio":            ratio(func(s Server) Value { return s.TransferUsedBytes }, func(s Server) Value { return s.TransferLimitBytes }),
	}
}

// ReadingNames lists the names Reading accepts, sorted.
func ReadingNames() []string {
	var out []string
	for k := range readings() {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// IsReading reports whether name is a reading.
func IsReading(name string) bool {
	_, ok := readings()[name]
	return ok
}

// Reading returns the named reading of s; absent when the provider did not
// give it or the name is unknown.
func (s Server) Reading(name string) Value {
	if f, ok := readings()[name]; ok {
		return f(s)
	}
	return Value{}
}
