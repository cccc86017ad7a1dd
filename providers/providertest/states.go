package providertest

import (
	"slices"
	"testing"

	"github.com/vps-exporter/vps_exporter/providers"
)

// CheckReportedStates fails t unless reported (a client's ReportedStates)
// is exactly the states its raw statuses map to (mapped, from StateOf over
// every documented status and some undocumented ones), in
// providers.States' order: a state the metric carries that no status
// reaches costs a series per server for nothing, and a state a status
// reaches that the metric lacks would leave a server with no current
// state.
func CheckReportedStates(t *testing.T, reported, mapped []providers.State) {
	t.Helper()
	var want []providers.State
	for _, st := range providers.States() {
		if slices.Contains(mapped, st) {
			want = append(want, st)
		}
	}
	if !slices.Equal(reported, want) {
		t.Errorf("ReportedStates() = %v, the statuses map to %v", reported, want)
	}
}
