package e2e_test

import (
	"testing"

	"github.com/vps-exporter/vps_exporter/providers/e2e"
	"github.com/vps-exporter/vps_exporter/providers/providertest"
	"github.com/vps-exporter/vps_exporter/providers/sim"
)

// FuzzResponses sends the client arbitrary bodies for the list (first
// input) and for every other request: details and action answers (second);
// see providertest.Fuzz for what must hold. Seeds: the API pages'
// examples, the simulator's pages, and testdata/fuzz/FuzzResponses.
func FuzzResponses(f *testing.F) {
	providertest.AddFileSeeds(f, "testdata/list.json", "testdata/delete_response.json")
	f.Add(providertest.SimBody(f, sim.E2E, "/myaccount/api/v1/nodes/"), providertest.SimBody(f, sim.E2E, "/myaccount/api/v1/nodes/171/"))
	canned := &providertest.Canned{}
	srv := providertest.Wrap(f, canned)
	providertest.Fuzz(f, canned, e2e.New(e2e.Options{Account: "fuzz", BaseURL: srv.BaseURL(f), Token: "t", APIKey: "k", ProjectID: "1", HTTP: providertest.FuzzHTTP()}), "/myaccount/api/v1/nodes/", "reboot")
}
