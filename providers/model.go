// Package providers holds the provider-neutral model shared by every API
// client: a server, its normalized state, optional numeric readings, and the
// interface each client implements. It imports nothing else of the project.
package providers

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
)

// State is the normalized lifecycle state of a server, one vocabulary across
// all providers.
type State string

// The normalized states. Unknown raw values map to StateUnknown.
const (
	StateRunning      State = "running"
	StateStarting     State = "starting"
	StateStopping     State = "stopping"
	StateStopped      State = "stopped"
	StateRebooting    State = "rebooting"
	StateProvisioning State = "provisioning"
	StateDegraded     State = "degraded"
	StateSuspended    State = "suspended"
	StateTerminating  State = "terminating"
	StateTerminated   State = "terminated"
	StateUnknown      State = "unknown"
)

// States returns every normalized state in the order the state-set metric
// lists them.
func States() []State {
	return []State{
		StateRunning, StateStarting, StateStopping, StateStopped, StateRebooting,
		StateProvisioning, StateDegraded, StateSuspended, StateTerminating,
		StateTerminated, StateUnknown,
	}
}

// ParseState returns the State named s, or false when s is not one.
func ParseState(s string) (State, bool) {
	for _, st := range States() {
		if string(st) == s {
			return st, true
		}
	}
	return "", false
}

// Value is an optional reading: OK is false when the provider did not give it,
// so that the metric is absent rather than 0.
type Value struct {
	V  float64
	OK bool
}

// Some returns a present Value, or an absent one when v is not finite: a
// number out of float64's range after scaling (a provider's "1e305 Mbps")
// is as good as not given, never +Inf in a metric or a threshold.
func Some(v float64) Value {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return Value{}
	}
	return Value{V: v, OK: true}
}

// Bool returns a present 0/1 Value.
func Bool(b bool) Value {
	if b {
		return Some(1)
	}
	return Some(0)
}

// Unit conventions used by every client (DESIGN.md): MB and GB are binary,
// Mbps is decimal: MbpsInBytes converts it to bytes per second.
const (
	MB          = 1 << 20
	GB          = 1 << 30
	TB          = 1 << 40
	Mbps        = 1e6
	MbpsInBytes = Mbps / 8
)

// Server is one machine as the provider reported it, normalized. It is a
// comparable value: two reads of an unchanged server compare equal with ==.
type Server struct {
	ID        string
	Name      string
	Hostname  string
	IP        string // the address the provider lists first (public where it has one)
	PrivateIP string // a private IPv4 address, where the provider gives one
	IPv6      string // a public IPv6 address, where the provider gives one
	Port      string // the service port (VPN.bingo), where the provider gives one
	Location  string
	Plan      string
	Image     string
	State     State
	RawStatus string // the provider's own status text
	RawCode   string // the provider's numeric status code, where it has one

	ExpiryTime       Value // unix seconds
	CreatedTime      Value // unix seconds
	StatusChangeTime Value // unix seconds

	BandwidthLimitBytesPerSecond Value // bytes/s
	BandwidthUsedBytesPerSecond  Value // bytes/s
	TransferLimitBytes           Value // bytes per billing month
	TransferUsedBytes            Value // bytes this billing month

	CPUUsageRatio   Value // 0..1
	VCPUs           Value
	MemoryBytes     Value
	MemoryUsedBytes Value
	DiskBytes       Value
	DiskUsedBytes   Value

	CanRedeploy    Value // 0/1
	BackupsEnabled Value // 0/1
}

// Action is a repair a provider can carry out on a server.
type Action string

// The provider-neutral actions. Each client maps them to its own endpoint.
const (
	ActionReboot   Action = "reboot"
	ActionRedeploy Action = "redeploy"
	ActionStart    Action = "start"
	ActionStop     Action = "stop"
	// ActionPowerCycle is stop, then start once the server reads stopped.
	// No provider API has it as one call: the remediation engine carries
	// it out with ActionStop, re-reads and ActionStart (VPS.org, E2E).
	ActionPowerCycle Action = "power_cycle"
)

// ActionParams are optional parameters of an action. Only VPN.bingo's redeploy
// reads them.
type ActionParams struct {
	Force       bool
	CountryCode string
}

// ActionResult is what the provider answered to an action.
type ActionResult struct {
	// NewID is set when the action replaced the server with a new one
	// (VPN.bingo redeploy).
	NewID string
	// Response is the provider's answer, trimmed, for the audit log.
	Response string
}

// Provider is one configured account of one provider API.
type Provider interface {
	// Type is the provider name: vpnbingo, vpsorg or e2e.
	Type() string
	// Account is the configured account name.
	Account() string
	// List returns every server of the account, all pages.
	List(ctx context.Context) ([]Server, error)
	// Get re-reads one server.
	Get(ctx context.Context, id string) (Server, error)
	// Actions lists the actions Do accepts.
	Actions() []Action
	// Do carries out an action on one server.
	Do(ctx context.Context, id string, a Action, p ActionParams) (ActionResult, error)
}

// StateReporter is a Provider whose servers can be in only some of the
// normalized states. ReportedStates lists them, StateUnknown included (an
// unknown raw value maps to it), in States' order; the state-set metric
// carries only these. A Provider without it may report any state.
type StateReporter interface {
	ReportedStates() []State
}

// Detailer is a Provider whose list lacks fields that only a per-server
// read gives (VPS.org: resource usage, transfer quota, IPv6, backups). The
// collector reads the list with ListSummary every refresh interval and the
// details on their own schedule, within the account's API budget, so that
// a big account never has to read every detail inside one interval.
// Provider.List still returns list and details together.
type Detailer interface {
	Provider
	// ListSummary returns every server from the list pages alone.
	ListSummary(ctx context.Context) ([]Server, error)
	// Detail reads one server at background priority: it takes only the
	// request rate that lists and re-reads leave, and is not retried.
	Detail(ctx context.Context, id string) (Server, error)
	// MergeDetail returns the list data with the fields that only the
	// detail read has taken from detail.
	MergeDetail(list, detail Server) Server
}

// ErrNotFound is wrapped by Get when the provider says the server does not
// exist.
var ErrNotFound = errors.New("server not found")

// ErrUnauthorized is matched (errors.Is) by a client's error when the
// provider refused the account's credentials (HTTP 401 or 403): retrying
// with the same key cannot succeed.
var ErrUnauthorized = errors.New("credentials refused")

// RateReporter is implemented by clients that pace their requests: what
// the client allows itself now, for vps_provider_api_rate_limit_per_second
// and vps_provider_api_throttled.
type RateReporter interface {
	// RateLimit is the request rate (per second) the client allows
	// itself now, after any 429 cut; ok is false while the account has
	// no limit and was never throttled.
	RateLimit() (perSecond float64, ok bool)
	// Throttled is true while a 429 pause or rate cut is in force.
	Throttled() bool
}

// ErrUnsupportedAction is wrapped by Do for an action the provider lacks.
var ErrUnsupportedAction = errors.New("action not supported by this provider")

// UnsupportedAction returns the error for an action a provider does not have.
func UnsupportedAction(p Provider, a Action) error {
	return fmt.Errorf("%s account %q: %q: %w", p.Type(), p.Account(), a, ErrUnsupportedAction)
}

// NormalizeText lower-cases s and folds '-', '_' and runs of spaces into
// single spaces, so that "Powered-Off" and "powered_off" compare equal.
func NormalizeText(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	if strings.ContainsAny(s, "-_") {
		// A loop, not a strings.Replacer: this runs for every server of
		// every list, and a Replacer is built anew on each call.
		b := []byte(s)
		for i, c := range b {
			if c == '-' || c == '_' {
				b[i] = ' '
			}
		}
		s = string(b)
	}
	return strings.Join(strings.Fields(s), " ")
}

// IDLess is the order of server ids in the store's lists and on /metrics:
// ids of digits only first, by value (shorter first, then as text, so
// "9" < "10" and "07" < "10"), then every other id as text. It is a total
// order whatever mix of ids a provider sends, which the store's merge,
// its removal of duplicate ids and binary searches over its lists rely on.
func IDLess(a, b string) bool {
	da, db := isDigits(a), isDigits(b)
	switch {
	case da != db:
		return da
	case da && len(a) != len(b):
		return len(a) < len(b)
	}
	return a < b
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
