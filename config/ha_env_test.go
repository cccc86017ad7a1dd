package config_test

import (
	"strings"
	"testing"

	"github.com/vps-exporter/vps_exporter/config"
)

// TestHAAdvertiseURLEnv: a ${NAME} in advertise_url is the environment's
// NAME (one configuration for every replica: the pod's name from the
// downward API); an unset one is an error naming it.
func TestHAAdvertiseURLEnv(t *testing.T) {
	t.Setenv("HA_TEST_POD_NAME", "vps-exporter-1")
	t.Setenv("HA_TEST_POD_NAMESPACE", "monitoring")
	for _, tc := range []struct {
		name, url, want, err string
	}{
		{name: "pod name and namespace", url: "http://${HA_TEST_POD_NAME}.vps-exporter-peers.${HA_TEST_POD_NAMESPACE}.svc:9877",
			want: "http://vps-exporter-1.vps-exporter-peers.monitoring.svc:9877"},
		{name: "no variable", url: "http://10.0.0.5:9877", want: "http://10.0.0.5:9877"},
		{name: "unset variable", url: "http://${HA_TEST_NOT_SET_X}:9877",
			err: "remediation.ha.advertise_url: names ${HA_TEST_NOT_SET_X}, which is not set in the environment (in Kubernetes, set it from the downward API, e.g. fieldRef metadata.name)"},
		{name: "expands to no host", url: "http://${HA_TEST_EMPTY}:9877",
			err: `remediation.ha.advertise_url: want an absolute http(s) URL with a host, e.g. http://10.0.0.5:9877, got "http://:9877"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("HA_TEST_EMPTY", "")
			c, err := config.Parse([]byte(haAccount+"remediation: {ha: {advertise_url: '"+tc.url+"', etcd: {endpoints: ['http://etcd-0:2379']}}}"), ".")
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %s", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			h := c.Remediation.HA
			if h.AdvertiseURL != tc.want || h.Advertise == nil || h.Advertise.String() != tc.want {
				t.Errorf("advertise_url %q (%v), want %q", h.AdvertiseURL, h.Advertise, tc.want)
			}
		})
	}
}
