package e2e_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/vps-exporter/vps_exporter/providers"
	"github.com/vps-exporter/vps_exporter/providers/e2e"
	"github.com/vps-exporter/vps_exporter/providers/providertest"
	"github.com/vps-exporter/vps_exporter/providers/sim"
)

// FuzzResponses sends the client arbitrary bodies for the list (first
// input) and for every other request: details and action answers (second).
// Whatever arrives, the client returns well-formed servers or an error,
// within its deadline, without panicking. Seeds: the API pages' examples,
// the simulator's pages, and testdata/fuzz/FuzzResponses.
func FuzzResponses(f *testing.F) {
	for _, pair := range [][2]string{
		{"testdata/list.json", "testdata/list.json"},
		{"testdata/list.json", "testdata/delete_response.json"},
		{"testdata/delete_response.json", "testdata/list.json"},
		{"testdata/delete_response.json", "testdata/delete_response.json"},
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
	f.Add(providertest.SimBody(f, sim.E2E, "/myaccount/api/v1/nodes/"), providertest.SimBody(f, sim.E2E, "/myaccount/api/v1/nodes/171/"))
	canned := &providertest.Canned{}
	srv := providertest.Wrap(f, canned)
	c := e2e.New(e2e.Options{Account: "fuzz", BaseURL: srv.BaseURL(f), Token: "t", APIKey: "k", ProjectID: "1", HTTP: providertest.FuzzHTTP()})
	f.Fuzz(func(t *testing.T, list, other []byte) {
		canned.Set("/myaccount/api/v1/nodes/", list, other)
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
