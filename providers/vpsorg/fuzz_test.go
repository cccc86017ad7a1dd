package vpsorg_test

import (
	"testing"

	"github.com/vps-exporter/vps_exporter/providers/providertest"
	"github.com/vps-exporter/vps_exporter/providers/sim"
	"github.com/vps-exporter/vps_exporter/providers/vpsorg"
)

// FuzzResponses sends the client arbitrary bodies for the list (first
// input) and for every other request: details and action answers (second);
// see providertest.Fuzz for what must hold. Seeds: the API pages'
// examples, the simulator's pages, and testdata/fuzz/FuzzResponses.
func FuzzResponses(f *testing.F) {
	providertest.AddFileSeeds(f, "testdata/list.json", "testdata/detail.json", "testdata/reboot_response.json", "testdata/start_response.json")
	f.Add(providertest.SimBody(f, sim.VPSOrg, "/api/v1/servers/"), providertest.SimBody(f, sim.VPSOrg, "/api/v1/servers/12003/"))
	canned := &providertest.Canned{}
	srv := providertest.Wrap(f, canned)
	providertest.Fuzz(f, canned, vpsorg.New(vpsorg.Options{Account: "fuzz", BaseURL: srv.BaseURL(f), Token: "t", MaxConcurrency: 2, HTTP: providertest.FuzzHTTP()}), "/api/v1/servers/", "reboot")
}
