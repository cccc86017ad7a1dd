package remediation

import "github.com/prometheus/client_golang/prometheus"

// webhookOutcomes are the outcome label values of the webhook counter,
// created at zero.
var webhookOutcomes = []string{"queued", "duplicate", "pending", "resolved", "no_remediation", "invalid", "unknown_account", "not_allowed", "unknown_server", "rejected"}

type metrics struct {
	enabled, dryRun, stateOK prometheus.Gauge
	paused                   prometheus.Gauge
	actions                  *prometheus.CounterVec
	suppressed               *prometheus.CounterVec
	webhookAlerts            *prometheus.CounterVec
	webhookHeld              *prometheus.CounterVec
	verifications            *prometheus.CounterVec
	recovery                 *prometheus.HistogramVec
	exhausted                *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		enabled: prometheus.NewGauge(prometheus.GaugeOpts{Name: "vps_remediation_enabled", Help: "1 when automatic remediation is enabled and its state file is usable."}),
		dryRun:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "vps_remediation_dry_run", Help: "1 when remediation only logs and counts, calling nothing."}),
		stateOK: prometheus.NewGauge(prometheus.GaugeOpts{Name: "vps_remediation_state_ok", Help: "0 when remediation is configured on but its state file cannot be opened, or its last write failed (no action is taken without a durable record); 1 otherwise."}),
		paused:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "vps_remediation_paused", Help: "1 while an operator has paused remediation (POST /api/v1/remediation/pause); kept across restarts."}),
		actions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vps_remediation_actions_total",
			Help: "Remediation actions by rule (a configured rule's name, or alertmanager for alerts) and result (success, failed, dry_run, unknown); kept across restarts.",
		}, []string{"provider", "account", "action", "rule", "result"}),
		suppressed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vps_remediation_suppressed_total",
			Help: "Remediation actions the safety gate held back, by reason; kept across restarts.",
		}, []string{"provider", "account", "action", "reason"}),
		webhookAlerts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vps_remediation_webhook_alerts_total",
			Help: "Alerts received on the Alertmanager webhook, by outcome (queued: journaled; duplicate: already journaled or acted on; pending: a newer occurrence of the alert is journaled; resolved, no_remediation, invalid, unknown_account, not_allowed, unknown_server, rejected).",
		}, []string{"outcome"}),
		webhookHeld: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vps_remediation_webhook_held_total",
			Help: "Holds of accepted alerts kept in the intake journal and retried while a passing reason holds them back, by reason (not_ready, stale_data, in_flight, shutdown, not_sent, state_error, rate_limit, blast_radius): counted when a hold starts or its reason changes.",
		}, []string{"reason"}),
		verifications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vps_remediation_verifications_total",
			Help: "Verdicts on remediation actions when their verify window ended, by source (rule, alert) and result (recovered, not_recovered, unknown: no fresh view of the server within stale_after); kept across restarts.",
		}, []string{"provider", "account", "action", "source", "result"}),
		recovery: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "vps_remediation_recovery_seconds",
			Help:    "Time from a remediation action's answer to its server's condition first seen clear, for actions whose verdict was recovered.",
			Buckets: []float64{15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200},
		}, []string{"provider", "account", "action"}),
		exhausted: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "vps_remediation_exhausted",
			Help: "1 for each server no repair recovered (its ladder used up, or max_attempts reached): remediation leaves it to a person until its condition clears or POST /api/v1/remediation/reset. No series for other servers.",
		}, []string{"provider", "account", "id"}),
	}
	for _, o := range webhookOutcomes {
		m.webhookAlerts.WithLabelValues(o)
	}
	for _, r := range holdReasons {
		m.webhookHeld.WithLabelValues(r)
	}
	reg.MustRegister(m.enabled, m.dryRun, m.stateOK, m.paused, m.actions, m.suppressed, m.webhookAlerts, m.webhookHeld, m.verifications, m.recovery, m.exhausted)
	return m
}

// restoreScope says which durable totals restore adds to /metrics.
type restoreScope struct {
	// accounts are the accounts to restore (account -> provider type);
	// configured are all the configured ones.
	accounts, configured map[string]string
	// rules are the rule labels with series (the configured rules and
	// RuleAlertmanager); freshRules those of them to restore on the
	// configured accounts restored before.
	rules, freshRules map[string]bool
}

// restore adds the durable totals in scope to their series. Totals of
// other accounts and rule labels make no series: a removed account's or
// rule's stay in the file until it comes back.
func (m *metrics) restore(counts map[string]uint64, sc restoreScope) {
	only := sc.accounts
	for k, n := range counts {
		p := splitKey(k)
		switch {
		case p[0] == "a" && len(p) == 6 && sc.rules[p[4]] && (only[p[2]] == p[1] || (sc.configured[p[2]] == p[1] && sc.freshRules[p[4]])):
			m.actions.WithLabelValues(p[1], p[2], p[3], p[4], p[5]).Add(float64(n))
		case p[0] == "s" && len(p) == 5 && only[p[2]] == p[1]:
			m.suppressed.WithLabelValues(p[1], p[2], p[3], p[4]).Add(float64(n))
		case p[0] == "v" && len(p) == 6 && only[p[2]] == p[1]:
			m.verifications.WithLabelValues(p[1], p[2], p[3], p[4], p[5]).Add(float64(n))
		}
	}
}

// forget deletes every series that carries labels (an account's).
func (m *metrics) forget(labels prometheus.Labels) {
	m.actions.DeletePartialMatch(labels)
	m.suppressed.DeletePartialMatch(labels)
	m.verifications.DeletePartialMatch(labels)
	m.recovery.DeletePartialMatch(labels)
	m.exhausted.DeletePartialMatch(labels)
}
