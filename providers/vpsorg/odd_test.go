package vpsorg_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/vps-exporter/vps_exporter/providers"
	"github.com/vps-exporter/vps_exporter/providers/providertest"
	"github.com/vps-exporter/vps_exporter/providers/vpsorg"
)

// Odd but valid answers give the right server; broken ones a clear error.
func TestOddResponses(t *testing.T) {
	const one = `{"count":1,"next":null,"previous":null,"results":[{"id":7,"name":"w","status":"active"}]}`
	gb, mb := float64(providers.GB), float64(providers.MB)
	for _, tc := range []struct {
		name, list, detail string
		check              func(providers.Server) bool
		err                string
	}{
		{"numbers as strings", one, `{"id":"7","status":"active","plan":{"vcpus":"2","memory":"4096","storage":"80 GB","bandwidth":"2048"},"resource_usage":{"cpu_percent":"23.5","memory_used":"2048 MB"}}`,
			func(s providers.Server) bool {
				return s.VCPUs.V == 2 && s.MemoryBytes.V == 4096*mb && s.DiskBytes.V == 80*gb && s.CPUUsageRatio.V == 0.235 && s.MemoryUsedBytes.V == 2048*mb
			}, ""},
		{"floats", one, `{"id":7,"status":"active","plan":{"vcpus":2.0,"memory":4096.0},"resource_usage":{"cpu_percent":99.95}}`,
			func(s providers.Server) bool { return s.VCPUs.V == 2 && s.CPUUsageRatio.V == 0.9995 }, ""},
		{"nulls are absent, never 0", one, `{"id":7,"name":null,"status":"active","plan":null,"os":null,"resource_usage":{"cpu_percent":null,"memory_used":null},"backups_enabled":null}`,
			func(s providers.Server) bool {
				return !s.VCPUs.OK && !s.CPUUsageRatio.OK && !s.MemoryUsedBytes.OK && !s.BackupsEnabled.OK && s.Name == ""
			}, ""},
		{"missing fields", one, `{"id":7}`,
			func(s providers.Server) bool {
				return s.ID == "7" && s.State == providers.StateUnknown && !s.DiskBytes.OK
			}, ""},
		{"unknown status kept raw", one, `{"id":7,"status":"Hibernating"}`,
			func(s providers.Server) bool {
				return s.State == providers.StateUnknown && s.RawStatus == "Hibernating"
			}, ""},
		{"time without zone is UTC", one, `{"id":7,"status":"active","created_at":"2025-01-10 14:30:00"}`,
			func(s providers.Server) bool {
				return s.CreatedTime.V == float64(time.Date(2025, 1, 10, 14, 30, 0, 0, time.UTC).Unix())
			}, ""},
		{"empty page", `{"count":0,"next":null,"previous":null,"results":[]}`, `{}`, nil, ""},
		{"HTML error page", one, `<html><body><h1>502 Bad Gateway</h1></body></html>`, nil, "/api/v1/servers/7/"},
		{"junk list", `{"count":1,"results":[{"id":7}`, `{}`, nil, "/api/v1/servers/"},
		{"number that is not", one, `{"id":7,"plan":{"vcpus":"two"}}`, nil, "not a number"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			canned := &providertest.Canned{}
			canned.Set("/api/v1/servers/", []byte(tc.list), []byte(tc.detail))
			srv := providertest.Wrap(t, canned)
			c := vpsorg.New(vpsorg.Options{Account: "a", BaseURL: srv.BaseURL(t), Token: "tok-odd-1234", HTTP: providertest.FuzzHTTP()})
			got, err := c.List(context.Background())
			switch {
			case tc.err != "":
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want it to contain %q", err, tc.err)
				}
			case err != nil:
				t.Fatal(err)
			case tc.check == nil:
				if len(got) != 0 {
					t.Fatalf("%d servers", len(got))
				}
			case len(got) != 1 || !tc.check(got[0]):
				t.Fatalf("got %+v", got)
			}
		})
	}
}
