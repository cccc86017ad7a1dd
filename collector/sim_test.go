package collector

import (
	"context"
	"net/url"
	"testing"

	"github.com/vps-exporter/vps_exporter/providers/sim"
)

// serveSim serves s on loopback until tb ends and returns each API's URL.
func serveSim(tb testing.TB, s *sim.Sim) func(sim.API) *url.URL {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := s.Start(ctx)
	if err != nil {
		cancel()
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cancel(); s.Close(); srv.Close() })
	return func(api sim.API) *url.URL {
		u, _ := url.Parse(srv.URL[api])
		return u
	}
}
