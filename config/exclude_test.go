package config_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/vps-exporter/vps_exporter/config"
	"github.com/vps-exporter/vps_exporter/internal/metricnames"
)

// global.exclude_metrics: the defaults when unset, exactly what is listed
// otherwise ([] and an empty value: nothing left out), and a name that is
// no per-server family refused with its field and value.
func TestExcludeMetrics(t *testing.T) {
	const acct = "providers: [{type: vpsorg, name: a, token: t}]\n"
	for _, tc := range []struct {
		name, yaml string
		want       []string
		err        string
	}{
		{"unset", acct, metricnames.DefaultExcluded(), ""},
		{"global without it", "global: {refresh_interval: 30s}\n" + acct, metricnames.DefaultExcluded(), ""},
		{"empty list", "global: {exclude_metrics: []}\n" + acct, []string{}, ""},
		{"null", "global:\n  exclude_metrics:\n" + acct, nil, ""},
		{"some", "global: {exclude_metrics: [vps_server_state, vps_server_info]}\n" + acct, []string{"vps_server_state", "vps_server_info"}, ""},
		{"unknown", "global: {exclude_metrics: [vps_server_up, vps_server_cpu]}\n" + acct, nil,
			"global.exclude_metrics[1]: vps_server_cpu: not a per-server metric family, did you mean `vps_server_cpu_usage_ratio`?"},
		{"not per server", "global: {exclude_metrics: [vps_provider_up]}\n" + acct, nil,
			"global.exclude_metrics[0]: vps_provider_up: not a per-server metric family, only the per-server vps_server_* families of docs/metrics.md can be left out"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := config.Parse([]byte(tc.yaml), ".")
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Global.ExcludeMetrics; !slices.Equal(got, tc.want) || (got == nil) != (tc.want == nil) {
				t.Errorf("exclude_metrics %#v, want %#v", got, tc.want)
			}
		})
	}
}
