package vpsorg_test

import (
	"testing"

	"github.com/vps-exporter/vps_exporter/providers"
	"github.com/vps-exporter/vps_exporter/providers/providertest"
	"github.com/vps-exporter/vps_exporter/providers/vpsorg"
)

func TestReportedStates(t *testing.T) {
	var mapped []providers.State
	for _, s := range []string{"active", "stopped", "suspended", "provisioning", "starting", "stopping", "rebooting", "ACTIVE", "", "deleted", "error"} {
		mapped = append(mapped, vpsorg.StateOf(s))
	}
	var c providers.StateReporter = vpsorg.New(vpsorg.Options{Account: "a"})
	providertest.CheckReportedStates(t, c.ReportedStates(), mapped)
}
