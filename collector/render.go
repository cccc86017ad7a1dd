package collector

import (
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/vps-exporter/vps_exporter/providers"
)

// The per-server metric families, in output order.
const (
	famInfo = iota
	famUp
	famState
	famProviderStatus
	famExpiry
	famCreated
	famStatusChange
	famBandwidthLimit
	famBandwidthUsed
	famTransferLimit
	famTransferUsed
	famCPU
	famVCPUs
	famMemory
	famMemoryUsed
	famDisk
	famDiskUsed
	famCanRedeploy
	famBackups
	famDetailTime
	numFamilies
)

type family struct{ name, help string }

// families returns the per-server families' names and help texts.
func families() [numFamilies]family {
	return [numFamilies]family{
		famInfo:           {"vps_server_info", "Server metadata; always 1."},
		famUp:             {"vps_server_up", "1 when the server's normalized state is running, else 0."},
		famState:          {"vps_server_state", "Normalized server state: one series per state, 1 for the current one."},
		famProviderStatus: {"vps_server_provider_status", "The provider's raw status text (and numeric code where it has one); always 1."},
		famExpiry:         {"vps_server_expiry_timestamp_seconds", "When the server's rental expires, as a Unix timestamp."},
		famCreated:        {"vps_server_created_timestamp_seconds", "When the server was created, as a Unix timestamp."},
		famStatusChange:   {"vps_server_status_change_timestamp_seconds", "When the provider last changed the server's status, as a Unix timestamp."},
		famBandwidthLimit: {"vps_server_bandwidth_limit_bytes_per_second", "Allocated bandwidth in bytes per second (VPN.bingo Mbps x 125000)."},
		famBandwidthUsed:  {"vps_server_bandwidth_used_bytes_per_second", "Bandwidth in use in bytes per second (VPN.bingo Mbps x 125000)."},
		famTransferLimit:  {"vps_server_transfer_limit_bytes", "Monthly data transfer allowance in bytes."},
		famTransferUsed:   {"vps_server_transfer_used_bytes", "Data transferred this month in bytes."},
		famCPU:            {"vps_server_cpu_usage_ratio", "CPU usage as a ratio from 0 to 1."},
		famVCPUs:          {"vps_server_vcpus", "Number of virtual CPUs."},
		famMemory:         {"vps_server_memory_bytes", "Memory size in bytes."},
		famMemoryUsed:     {"vps_server_memory_used_bytes", "Memory in use in bytes."},
		famDisk:           {"vps_server_disk_bytes", "Disk size in bytes."},
		famDiskUsed:       {"vps_server_disk_used_bytes", "Disk space in use in bytes."},
		famCanRedeploy:    {"vps_server_can_redeploy", "1 when the provider allows a redeploy without force."},
		famBackups:        {"vps_server_backups_enabled", "1 when provider backups are enabled."},
		famDetailTime:     {"vps_server_detail_timestamp_seconds", "When the server's per-server detail data (VPS.org resource usage, transfer) was last read successfully, as a Unix timestamp; kept when the values are dropped for age; absent until a read succeeded."},
	}
}

// entry is one server with its series rendered in the text exposition
// format. Until the next assembly its lines are in buf, family f at
// buf[off[f]:off[f+1]]; the assembly copies them into the body and drops
// buf, and from then on family f starts at at[f] in that body. So each
// server's bytes are held once.
type entry struct {
	srv      providers.Server
	detailAt int64 // when the detail was read, Unix seconds; 0: none
	buf      []byte
	off      [numFamilies + 1]uint32
	at       [numFamilies]uint32
}

// size is the length of all the entry's lines.
func (e *entry) size() int { return int(e.off[numFamilies]) }

// lines returns the rendered lines of family f; body is the assembled body
// the entry was last moved into.
func (e *entry) lines(f int, body []byte) []byte {
	if e.buf != nil {
		return e.buf[e.off[f]:e.off[f+1]]
	}
	return body[e.at[f] : e.at[f]+e.off[f+1]-e.off[f]]
}

// render writes a server's series once; the scrape path only copies them.
func render(provider, account string, s providers.Server, detailAt int64, names *[numFamilies]family) *entry {
	e := &entry{srv: s, detailAt: detailAt}
	b := make([]byte, 0, 2048)
	// The identifying labels every series shares.
	lbl := make([]byte, 0, 96)
	lbl = appendLabel(lbl, "provider", provider, true)
	lbl = appendLabel(lbl, "account", account, false)
	lbl = appendLabel(lbl, "id", s.ID, false)

	sample := func(f int, extra []byte, v float64) {
		b = append(b, names[f].name...)
		b = append(b, '{')
		b = append(b, lbl...)
		b = append(b, extra...)
		b = append(b, '}', ' ')
		b = appendFloat(b, v)
		b = append(b, '\n')
	}
	opt := func(f int, v providers.Value) {
		if v.OK {
			sample(f, nil, v.V)
		}
	}
	for f := 0; f < numFamilies; f++ {
		e.off[f] = uint32(len(b))
		switch f {
		case famInfo:
			var x []byte
			x = appendLabel(x, "name", s.Name, false)
			x = appendLabel(x, "hostname", s.Hostname, false)
			x = appendLabel(x, "ip", s.IP, false)
			x = appendLabel(x, "location", s.Location, false)
			x = appendLabel(x, "plan", s.Plan, false)
			x = appendLabel(x, "image", s.Image, false)
			sample(f, x, 1)
		case famUp:
			v := 0.0
			if s.State == providers.StateRunning {
				v = 1
			}
			sample(f, nil, v)
		case famState:
			for _, st := range providers.States() {
				v := 0.0
				if s.State == st {
					v = 1
				}
				sample(f, appendLabel(nil, "state", string(st), false), v)
			}
		case famProviderStatus:
			x := appendLabel(nil, "status", s.RawStatus, false)
			if s.RawCode != "" {
				x = appendLabel(x, "code", s.RawCode, false)
			}
			sample(f, x, 1)
		case famExpiry:
			opt(f, s.ExpiryTime)
		case famCreated:
			opt(f, s.CreatedTime)
		case famStatusChange:
			opt(f, s.StatusChangeTime)
		case famBandwidthLimit:
			opt(f, s.BandwidthLimitBytesPerSecond)
		case famBandwidthUsed:
			opt(f, s.BandwidthUsedBytesPerSecond)
		case famTransferLimit:
			opt(f, s.TransferLimitBytes)
		case famTransferUsed:
			opt(f, s.TransferUsedBytes)
		case famCPU:
			opt(f, s.CPUUsageRatio)
		case famVCPUs:
			opt(f, s.VCPUs)
		case famMemory:
			opt(f, s.MemoryBytes)
		case famMemoryUsed:
			opt(f, s.MemoryUsedBytes)
		case famDisk:
			opt(f, s.DiskBytes)
		case famDiskUsed:
			opt(f, s.DiskUsedBytes)
		case famCanRedeploy:
			opt(f, s.CanRedeploy)
		case famBackups:
			opt(f, s.BackupsEnabled)
		case famDetailTime:
			if detailAt != 0 {
				sample(f, nil, float64(detailAt))
			}
		}
	}
	e.off[numFamilies] = uint32(len(b))
	// Keep exactly what was written: a server's bytes live until it changes.
	e.buf = append(make([]byte, 0, len(b)), b...)
	return e
}

// appendLabel appends name="value" with the text format's escaping; a
// value that is not valid UTF-8 is repaired rather than breaking the scrape.
func appendLabel(b []byte, name, value string, first bool) []byte {
	if !first {
		b = append(b, ',')
	}
	b = append(b, name...)
	b = append(b, '=', '"')
	if !utf8.ValidString(value) {
		value = strings.ToValidUTF8(value, "\uFFFD")
	}
	for i := 0; i < len(value); i++ {
		switch c := value[i]; c {
		case '\\':
			b = append(b, '\\', '\\')
		case '"':
			b = append(b, '\\', '"')
		case '\n':
			b = append(b, '\\', 'n')
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// appendFloat formats v as the text format does.
func appendFloat(b []byte, v float64) []byte {
	switch {
	case v != v:
		return append(b, "NaN"...)
	case v > 1.7976931348623157e308:
		return append(b, "+Inf"...)
	case v < -1.7976931348623157e308:
		return append(b, "-Inf"...)
	case v == float64(int64(v)) && v < 1e15 && v > -1e15:
		return strconv.AppendInt(b, int64(v), 10)
	}
	return strconv.AppendFloat(b, v, 'g', -1, 64)
}
