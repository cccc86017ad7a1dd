package simfleet

import (
	"time"

	"github.com/prometheus/common/model"

	"github.com/vps-exporter/vps_exporter/config"
)

// Rules are the remediation rules of the simulated fleet's configuration
// (vps_exporter --demo and vps_sim): each one matches servers the generated
// fleet has (see providers/sim), for two refresh intervals. This is the one
// list; the configuration runs them in dry run.
func Rules(refresh time.Duration) []config.Rule {
	return []config.Rule{
		{Name: "redeploy-heartbeat-abnormal", Provider: config.TypeVPNBingo, State: []string{"degraded"}, For: model.Duration(2 * refresh), Action: "redeploy"},
		{Name: "start-stopped-vps", Provider: config.TypeVPSOrg, State: []string{"stopped"}, For: model.Duration(2 * refresh), Action: "start"},
		{Name: "reboot-hot-cpu", Provider: config.TypeVPSOrg, State: []string{"running"}, Metric: "cpu_usage_ratio", Above: ptr(0.95), For: model.Duration(2 * refresh), Action: "reboot"},
	}
}

func ptr(v float64) *float64 { return &v }
