package vpnbingo_test

import (
	"testing"

	"github.com/vps-exporter/vps_exporter/providers"
	"github.com/vps-exporter/vps_exporter/providers/providertest"
	"github.com/vps-exporter/vps_exporter/providers/vpnbingo"
)

func TestReportedStates(t *testing.T) {
	var mapped []providers.State
	for _, code := range []int{-10, 9, 10, 18, 19, 20, 0, 1, 11, 99, -1} {
		mapped = append(mapped, vpnbingo.StateOf(code))
	}
	var c providers.StateReporter = vpnbingo.New(vpnbingo.Options{Account: "a"})
	providertest.CheckReportedStates(t, c.ReportedStates(), mapped)
}
