package vpnbingo_test

import (
	"testing"

	"github.com/vps-exporter/vps_exporter/providers/providertest"
	"github.com/vps-exporter/vps_exporter/providers/sim"
	"github.com/vps-exporter/vps_exporter/providers/vpnbingo"
)

// FuzzResponses sends the client arbitrary bodies for the list (first
// input) and for every other request: details and action answers (second);
// see providertest.Fuzz for what must hold. Seeds: the API pages'
// examples, the simulator's pages, and testdata/fuzz/FuzzResponses.
func FuzzResponses(f *testing.F) {
	providertest.AddFileSeeds(f, "testdata/list.json", "testdata/detail.json", "testdata/redeploy_response.json", "testdata/error_status.json")
	f.Add(providertest.SimBody(f, sim.VPNBingo, "/api/v2/nodes/"), providertest.SimBody(f, sim.VPNBingo, "/api/v2/nodes/1003/"))
	canned := &providertest.Canned{}
	srv := providertest.Wrap(f, canned)
	providertest.Fuzz(f, canned, vpnbingo.New(vpnbingo.Options{Account: "fuzz", BaseURL: srv.BaseURL(f), Token: "t", HTTP: providertest.FuzzHTTP()}), "/api/v2/nodes/", "redeploy")
}
