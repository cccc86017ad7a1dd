package vpsorg_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/vps-exporter/vps_exporter/providers"
	"github.com/vps-exporter/vps_exporter/providers/providertest"
	"github.com/vps-exporter/vps_exporter/providers/sim"
	"github.com/vps-exporter/vps_exporter/providers/vpsorg"
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
		{"testdata/list.json", "testdata/reboot_response.json"},
		{"testdata/list.json", "testdata/start_response.json"},
		{"testdata/detail.json", "testdata/list.json"},
		{"testdata/detail.json", "testdata/detail.json"},
		{"testdata/detail.json", "testdata/reboot_response.json"},
		{"testdata/detail.json", "testdata/start_response.json"},
		{"testdata/reboot_response.json", "testdata/list.json"},
		{"testdata/reboot_response.json", "testdata/detail.json"},
		{"testdata/reboot_response.json", "testdata/reboot_response.json"},
		{"testdata/reboot_response.json", "testdata/start_response.json"},
		{"testdata/start_response.json", "testdata/list.json"},
		{"testdata/start_response.json", "testdata/detail.json"},
		{"testdata/start_response.json", "testdata/reboot_response.json"},
		{"testdata/start_response.json", "testdata/start_response.json"},
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
	f.Add(providertest.SimBody(f, sim.VPSOrg, "/api/v1/servers/"), providertest.SimBody(f, sim.VPSOrg, "/api/v1/servers/12003/"))
	canned := &providertest.Canned{}
	srv := providertest.Wrap(f, canned)
	c := vpsorg.New(vpsorg.Options{Account: "fuzz", BaseURL: srv.BaseURL(f), Token: "t", MaxConcurrency: 2, HTTP: providertest.FuzzHTTP()})
	f.Fuzz(func(t *testing.T, list, other []byte) {
		canned.Set("/api/v1/servers/", list, other)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if servers, err := c.List(ctx); err == nil {
			providertest.CheckServers(t, servers, len(list)+len(other))
		}
		if s, err := c.Get(ctx, "1"); err == nil {
			providertest.CheckServers(t, []providers.Server{s}, len(other))
		}
		_, _ = c.Do(ctx, "1", providers.Action("reboot"), providers.ActionParams{})
		if ctx.Err() != nil {
			t.Fatal("the client outlived its deadline on a loopback answer")
		}
	})
}
