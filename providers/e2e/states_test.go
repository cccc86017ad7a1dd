package e2e_test

import (
	"testing"

	"github.com/vps-exporter/vps_exporter/providers"
	"github.com/vps-exporter/vps_exporter/providers/e2e"
	"github.com/vps-exporter/vps_exporter/providers/providertest"
)

func TestReportedStates(t *testing.T) {
	var mapped []providers.State
	for _, s := range []string{"Running", "Powered off", "power_off", "Create", "Created", "Creating", "Reinstalling",
		"Terminate", "Terminating", "Locked", "Rebooting", "Starting", "Powering On", "Stopping", "Powering-Off", "", "Failed"} {
		mapped = append(mapped, e2e.StateOf(s))
	}
	var c providers.StateReporter = e2e.New(e2e.Options{Account: "a"})
	providertest.CheckReportedStates(t, c.ReportedStates(), mapped)
}
