package collector

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vps-exporter/vps_exporter/providers/apiclient"
)

// AccountCollector exports the per-account metrics from the store's
// snapshots; it reads memory only.
type AccountCollector struct {
	store                              *Store
	up, servers, duration, lastSuccess *prometheus.Desc
	backlog                            *prometheus.Desc
}

// NewAccountCollector returns the per-account collector.
func NewAccountCollector(store *Store) *AccountCollector {
	l := []string{"provider", "account"}
	return &AccountCollector{
		store:       store,
		up:          prometheus.NewDesc("vps_provider_up", "1 when the account's last refresh succeeded, else 0.", l, nil),
		servers:     prometheus.NewDesc("vps_provider_servers", "Servers the account had at its last successful refresh.", l, nil),
		duration:    prometheus.NewDesc("vps_provider_refresh_duration_seconds", "How long the account's last refresh took.", l, nil),
		lastSuccess: prometheus.NewDesc("vps_provider_last_refresh_success_timestamp_seconds", "When the account was last refreshed successfully, as a Unix timestamp.", l, nil),
		backlog:     prometheus.NewDesc("vps_provider_detail_backlog", "Servers of the account whose per-server detail data is missing or older than the refresh interval (accounts with detail reads only).", l, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *AccountCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.up
	ch <- c.servers
	ch <- c.duration
	ch <- c.lastSuccess
	ch <- c.backlog
}

// Collect implements prometheus.Collector.
func (c *AccountCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.store.Snapshots() {
		up := 0.0
		if s.Up {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, up, s.Provider, s.Account)
		if !s.LastSuccess.IsZero() {
			ch <- prometheus.MustNewConstMetric(c.servers, prometheus.GaugeValue, float64(len(s.Servers)), s.Provider, s.Account)
			ch <- prometheus.MustNewConstMetric(c.lastSuccess, prometheus.GaugeValue, float64(s.LastSuccess.UnixNano())/1e9, s.Provider, s.Account)
		}
		if s.Details && s.Refreshed {
			ch <- prometheus.MustNewConstMetric(c.backlog, prometheus.GaugeValue, float64(s.DetailBacklog), s.Provider, s.Account)
		}
		if s.Refreshed {
			ch <- prometheus.MustNewConstMetric(c.duration, prometheus.GaugeValue, s.Duration.Seconds(), s.Provider, s.Account)
		}
	}
}

// APIMetrics count and time every HTTP request to a provider.
type APIMetrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

// NewAPIMetrics registers the API request metrics with reg.
func NewAPIMetrics(reg prometheus.Registerer) *APIMetrics {
	m := &APIMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vps_provider_api_requests_total",
			Help: "HTTP requests to provider APIs by endpoint and status code (\"error\" when no response came).",
		}, []string{"provider", "account", "endpoint", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "vps_provider_api_request_duration_seconds",
			Help:    "Latency of HTTP requests to provider APIs.",
			Buckets: []float64{.025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"provider", "account", "endpoint"}),
	}
	reg.MustRegister(m.requests, m.latency)
	return m
}

// Observer returns the apiclient hook for one account.
func (m *APIMetrics) Observer(provider, account string) apiclient.ObserveFunc {
	return func(endpoint, code string, d time.Duration) {
		m.requests.WithLabelValues(provider, account, endpoint, code).Inc()
		m.latency.WithLabelValues(provider, account, endpoint).Observe(d.Seconds())
	}
}

// Forget drops an account's series (it left the configuration).
func (m *APIMetrics) Forget(provider, account string) {
	m.requests.DeletePartialMatch(prometheus.Labels{"provider": provider, "account": account})
	m.latency.DeletePartialMatch(prometheus.Labels{"provider": provider, "account": account})
}
