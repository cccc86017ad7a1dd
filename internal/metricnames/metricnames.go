// Package metricnames names the per-server metric families of /metrics and
// the ones left out by default. The collector renders them; the
// configuration checks global.exclude_metrics against them. It imports
// nothing.
package metricnames

// Server returns the per-server family names, in the order /metrics lists
// them.
func Server() []string {
	return []string{
		"vps_server_info",
		"vps_server_up",
		"vps_server_state",
		"vps_server_provider_status",
		"vps_server_expiry_timestamp_seconds",
		"vps_server_created_timestamp_seconds",
		"vps_server_status_change_timestamp_seconds",
		"vps_server_bandwidth_limit_bytes_per_second",
		"vps_server_bandwidth_used_bytes_per_second",
		"vps_server_transfer_limit_bytes",
		"vps_server_transfer_used_bytes",
		"vps_server_cpu_usage_ratio",
		"vps_server_vcpus",
		"vps_server_memory_bytes",
		"vps_server_memory_used_bytes",
		"vps_server_disk_bytes",
		"vps_server_disk_used_bytes",
		"vps_server_can_redeploy",
		"vps_server_backups_enabled",
		"vps_server_detail_timestamp_seconds",
	}
}

// DefaultExcluded returns the families global.exclude_metrics leaves out
// when the file does not set it: facts about a server's plan and history
// that no shipped dashboard or alert rule reads, a series per server each.
// `exclude_metrics: []` brings them back.
func DefaultExcluded() []string {
	return []string{
		"vps_server_created_timestamp_seconds",
		"vps_server_status_change_timestamp_seconds",
		"vps_server_vcpus",
		"vps_server_can_redeploy",
		"vps_server_backups_enabled",
	}
}

// IsServer reports whether name is a per-server family.
func IsServer(name string) bool {
	for _, n := range Server() {
		if n == name {
			return true
		}
	}
	return false
}
