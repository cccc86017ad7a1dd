package simfleet

import (
	"time"

	"github.com/prometheus/common/model"

	"github.com/vps-exporter/vps_exporter/config"
	"github.com/vps-exporter/vps_exporter/providers/sim"
)

// The remediation limits of the simulated fleet's configuration: loose
// enough that the closed loop shows within minutes on the default fleet.
const (
	maxActionsPerHour = 60
	maxFleetFraction  = 0.3
	webhookVerify     = 2 * time.Minute
)

// Rules are the remediation rules of the simulated fleet's configuration
// (vps_exporter --demo and vps_sim): each one matches servers the generated
// fleet has (see providers/sim), for two refresh intervals, and has its
// repair checked after max(1m, 4 refreshes). This is the one list.
func Rules(refresh time.Duration) []config.Rule {
	verify := model.Duration(max(time.Minute, 4*refresh))
	return []config.Rule{
		{Name: "redeploy-heartbeat-abnormal", Provider: config.TypeVPNBingo, State: []string{"degraded"}, For: model.Duration(2 * refresh), Action: "redeploy", Verify: verify},
		{Name: "start-stopped-vps", Provider: config.TypeVPSOrg, State: []string{"stopped"}, For: model.Duration(2 * refresh), Action: "start", Verify: verify},
		{Name: "reboot-hot-cpu", Provider: config.TypeVPSOrg, State: []string{"running"}, Metric: "cpu_usage_ratio", Above: ptr(0.95), For: model.Duration(2 * refresh),
			Action: "reboot", Escalate: []string{"power_cycle"}, Verify: verify},
	}
}

// makeSick makes a few simulated servers sick, so that the closed loop has
// something to show (the generated fleet runs every 12th VPS.org server's
// CPU hot, which a reboot cures, and reads every 10th VPN.bingo node
// Heartbeat Abnormal, which a redeploy cures): the second hot VPS.org
// server needs a power cycle, the third nothing cures, and the second
// degraded VPN.bingo node comes back degraded from its redeploy. The ids
// are those of the generated fleet; a fleet too small to have them has
// fewer sick servers.
func makeSick(s *sim.Sim) {
	s.SetSick(sim.VPSOrg, 12013, sim.Sickness{Cure: sim.CurePowerCycle})
	s.SetSick(sim.VPSOrg, 12025, sim.Sickness{Cure: sim.CureNone})
	s.SetSick(sim.VPNBingo, 1013, sim.Sickness{Cure: sim.CureNone})
}

func ptr(v float64) *float64 { return &v }
