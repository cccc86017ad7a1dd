package collector

import (
	"sort"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vps-exporter/vps_exporter/providers"
)

// RateCollector exports each account's own request pacing: the rate its
// client allows itself now and whether a 429 pause or rate cut is in
// force. It asks the clients (providers.RateReporter) at every scrape;
// they answer from memory, so a scrape never calls a provider API.
type RateCollector struct {
	providers       func() []providers.Provider
	limit, throttle *prometheus.Desc
}

// NewRateCollector returns the collector of
// vps_provider_api_rate_limit_per_second and vps_provider_api_throttled for
// the accounts providers returns at each scrape (Manager.Providers). A
// client that is not a providers.RateReporter exports neither.
func NewRateCollector(providers func() []providers.Provider) prometheus.Collector {
	l := []string{"provider", "account"}
	return &RateCollector{
		providers: providers,
		limit: prometheus.NewDesc("vps_provider_api_rate_limit_per_second",
			"Requests per second the exporter allows itself to the account now: rate_limit, or less after a 429. Absent while no limit is in force (no rate_limit and not throttled).", l, nil),
		throttle: prometheus.NewDesc("vps_provider_api_throttled",
			"1 while a 429 pause or rate cut of the account is in force, else 0.", l, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *RateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.limit
	ch <- c.throttle
}

// Collect implements prometheus.Collector.
func (c *RateCollector) Collect(ch chan<- prometheus.Metric) {
	for _, p := range c.providers() {
		rr, ok := p.(providers.RateReporter)
		if !ok {
			continue
		}
		throttled := 0.0
		if rr.Throttled() {
			throttled = 1
		}
		ch <- prometheus.MustNewConstMetric(c.throttle, prometheus.GaugeValue, throttled, p.Type(), p.Account())
		if r, ok := rr.RateLimit(); ok {
			ch <- prometheus.MustNewConstMetric(c.limit, prometheus.GaugeValue, r, p.Type(), p.Account())
		}
	}
}

// Providers returns the clients of the running accounts, by account name.
// It takes no lock (it reads the clients Apply published), so a scrape
// never waits for a reload.
func (m *Manager) Providers() []providers.Provider {
	if m == nil {
		return nil
	}
	cs := m.clients.Load()
	if cs == nil {
		return nil
	}
	out := make([]providers.Provider, 0, len(*cs))
	for _, p := range *cs {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Account() < out[j].Account() })
	return out
}
