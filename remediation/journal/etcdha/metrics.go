package etcdha

import (
	"context"
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the HA series of one replica. TakeoverUnknown is for the
// engine to add to: the intents a takeover found pending and marked
// unknown (their cooldowns stand, they are not re-sent).
type Metrics struct {
	// Leader is 1 while this replica leads (after its warm-up), else 0.
	Leader prometheus.Gauge
	// LeaderChanges counts the leader terms this replica saw begin, not
	// the one in place when it started watching (Elector.Watch).
	LeaderChanges prometheus.Counter
	// FencingRefusals counts this replica's writes that etcd refused
	// because its leader key was gone.
	FencingRefusals prometheus.Counter
	// TakeoverUnknown counts intents found pending at a takeover and
	// marked unknown; the engine adds to it.
	TakeoverUnknown prometheus.Counter
	// BackendUp is 1 while the last request to etcd succeeded, else 0.
	BackendUp prometheus.Gauge
}

// NewMetrics creates the HA series and registers them on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		Leader: prometheus.NewGauge(prometheus.GaugeOpts{Name: "vps_remediation_leader",
			Help: "1 while this replica is the remediation leader (elected on etcd and warmed up), else 0."}),
		LeaderChanges: prometheus.NewCounter(prometheus.CounterOpts{Name: "vps_remediation_leader_changes_total",
			Help: "Remediation leader terms this replica saw begin (not the one in place when it started watching)."}),
		FencingRefusals: prometheus.NewCounter(prometheus.CounterOpts{Name: "vps_remediation_fencing_refusals_total",
			Help: "Writes of this replica that etcd refused because it was no longer the leader (never retried)."}),
		TakeoverUnknown: prometheus.NewCounter(prometheus.CounterOpts{Name: "vps_remediation_takeover_unknown_total",
			Help: "Intents a takeover found pending and marked unknown: their cooldowns stand and they are not re-sent."}),
		BackendUp: prometheus.NewGauge(prometheus.GaugeOpts{Name: "vps_remediation_ha_backend_up",
			Help: "1 while this replica's last request to etcd succeeded, else 0."}),
	}
	for _, c := range []prometheus.Collector{m.Leader, m.LeaderChanges, m.FencingRefusals, m.TakeoverUnknown, m.BackendUp} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("etcdha: register metrics: %w", err)
		}
	}
	return m, nil
}

// up records the outcome of a request to etcd; one this replica gave up
// (its context canceled) says nothing of etcd.
func (m *Metrics) up(err error) {
	switch {
	case err == nil:
		m.BackendUp.Set(1)
	case errors.Is(err, context.Canceled):
	default:
		m.BackendUp.Set(0)
	}
}
