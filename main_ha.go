package main

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vps-exporter/vps_exporter/config"
	"github.com/vps-exporter/vps_exporter/remediation"
	"github.com/vps-exporter/vps_exporter/remediation/journal/etcdha"
)

// haMode is remediation.ha as the exporter started with it: a reload
// cannot change it (the election and the state's home are set at start).
type haMode struct {
	ha      *config.HA
	enabled bool
}

func haModeOf(r config.Remediation) haMode {
	if r.HA == nil {
		return haMode{}
	}
	return haMode{ha: r.HA, enabled: r.Enabled}
}

// errHAChanged is a reload's error when it would change remediation.ha
// (or remediation.enabled with it): nothing of the file is applied.
var errHAChanged = errors.New("remediation.ha: cannot change on a reload (nor remediation.enabled with ha); restart the exporter to change it")

// checkHAReload refuses a reload that changes remediation.ha.
func (d *daemon) checkHAReload(c *config.Config) error {
	next := haModeOf(c.Remediation)
	if (next.ha == nil) != (d.ha.ha == nil) || next.enabled != d.ha.enabled || (next.ha != nil && !reflect.DeepEqual(*next.ha, *d.ha.ha)) {
		return errHAChanged
	}
	return nil
}

// startHA runs the remediation engine as one replica of remediation.ha
// (docs/ha.md) until ctx ends: its elector campaigns, the engine acts
// only while this replica leads. The returned stop waits for it to end
// (its term resigned) and closes the elector.
func (d *daemon) startHA(ctx context.Context, reg prometheus.Registerer) (func(), error) {
	h := d.ha.ha
	cfg, err := etcdha.FromConfig(h)
	if err != nil {
		return nil, fmt.Errorf("remediation.ha: %w", err)
	}
	m, err := etcdha.NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	el, err := etcdha.New(cfg, m, d.logger)
	if err != nil {
		return nil, fmt.Errorf("remediation.ha: %w", err)
	}
	level.Info(d.logger).Log("msg", "remediation runs highly available: this replica campaigns on etcd and acts only while it leads",
		"advertise_url", h.AdvertiseURL, "etcd_prefix", h.Etcd.Prefix, "lease_ttl", h.Etcd.LeaseTTL)
	hctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.engine.RunHA(hctx, remediation.HA{Elector: el, Metrics: m, AdvertiseURL: h.AdvertiseURL, StateFile: d.haStateFile})
	}()
	return func() {
		cancel()
		select {
		case <-done:
		case <-time.After(8 * time.Second): // its actions recorded (5 s), its term resigned
			level.Warn(d.logger).Log("msg", "the remediation election did not stop in time")
		}
		if err := el.Close(); err != nil {
			level.Debug(d.logger).Log("msg", "closing the etcd client", "err", err)
		}
	}, nil
}
