package vpnbingo_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/vps-exporter/vps_exporter/providers"
	"github.com/vps-exporter/vps_exporter/providers/providertest"
	"github.com/vps-exporter/vps_exporter/providers/sim"
	"github.com/vps-exporter/vps_exporter/providers/vpnbingo"
)

// FuzzResponses sends the client arbitrary bodies for the list (first
// input) and for every other request: details and action answers (second).
// Whatever arrives, the client returns well-formed servers or an error,
// within its deadline, without panicking. Seeds: the API pages' examples,
// the simulator's pages, and testdata/fuzz/FuzzResponses.
func FuzzResponses(f *testing.F) {
	for _, pair := range [][2]string{
		{"testdata/list.json", "testdata/list.json"},
		{"testdata/list.json", "testdata/detail.json"},
		{"testdata/list.json", "testdata/redeploy_response.json"},
		{"testdata/list.json", "testdata/error_status.json"},
		{"testdata/detail.json", "testdata/list.json"},
		{"testdata/detail.json", "testdata/detail.json"},
		{"testdata/detail.json", "testdata/redeploy_response.json"},
		{"testdata/detail.json", "testdata/error_status.json"},
		{"testdata/redeploy_response.json", "testdata/list.json"},
		{"testdata/redeploy_response.json", "testdata/detail.json"},
		{"testdata/redeploy_response.json", "testdata/redeploy_response.json"},
		{"testdata/redeploy_response.json", "testdata/error_status.json"},
		{"testdata/error_status.json", "testdata/list.json"},
		{"testdata/error_status.json", "testdata/detail.json"},
		{"testdata/error_status.json", "testdata/redeploy_response.json"},
		{"testdata/error_status.json", "testdata/error_status.json"},
	} {
		a, err := os.ReadFile(pair[0])
		if err != nil {
			f.Fatal(err)
		}
		b, err := os.ReadFile(pair[1])
		if err != nil {
			f.Fatal(err)
		}
		f.Add(a, b)
	}
	f.Add(providertest.SimBody(f, sim.VPNBingo, "/api/v2/nodes/"), providertest.SimBody(f, sim.VPNBingo, "/api/v2/nodes/1003/"))
	canned := &providertest.Canned{}
	srv := providertest.Wrap(f, canned)
	c := vpnbingo.New(vpnbingo.Options{Account: "fuzz", BaseURL: srv.BaseURL(f), Token: "t", HTTP: providertest.FuzzHTTP()})
	f.Fuzz(func(t *testing.T, list, other []byte) {
		canned.Set("/api/v2/nodes/", list, other)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if servers, err := c.List(ctx); err == nil {
			providertest.CheckServers(t, servers, len(list)+len(other))
		}
		if s, err := c.Get(ctx, "1"); err == nil {
			providertest.CheckServers(t, []providers.Server{s}, len(other))
		}
		_, _ = c.Do(ctx, "1", providers.Action("redeploy"), providers.ActionParams{})
		if ctx.Err() != nil {
			t.Fatal("the client outlived its deadline on a loopback answer")
		}
	})
}
