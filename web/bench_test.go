package web

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/vps-exporter/vps_exporter/collector"
	"github.com/vps-exporter/vps_exporter/providers"
)

// The fleet and the response sink are those of collector's benchmarks,
// so that /sd and the status page are measured on the same data as
// /metrics.

// syntheticFleet makes n servers spread over three accounts, with the
// fields each provider really fills.
func syntheticFleet(n int) map[[2]string][]providers.Server {
	out := map[[2]string][]providers.Server{}
	for i := 0; i < n; i++ {
		s := providers.Server{
			ID: strconv.Itoa(10000 + i), Name: fmt.Sprintf("server-%06d", i), Hostname: fmt.Sprintf("s%d.example.com", i),
			IP: fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255), Location: "eu-central", Plan: "Standard VPS", Image: "Debian 12",
			State: providers.StateRunning, RawStatus: "active",
			CreatedTime: providers.Some(1.7e9 + float64(i)), VCPUs: providers.Some(2),
			MemoryBytes: providers.Some(4 << 30), MemoryUsedBytes: providers.Some(float64(i%4) * (1 << 30)),
			DiskBytes: providers.Some(80 << 30), DiskUsedBytes: providers.Some(float64(i%80) * (1 << 30)),
			CPUUsageRatio: providers.Some(float64(i%100) / 100), BackupsEnabled: providers.Bool(i%2 == 0),
		}
		key := [2]string{"vpsorg", "vps-main"}
		switch i % 3 {
		case 1:
			key = [2]string{"vpnbingo", "bingo-prod"}
			s.Plan, s.Image, s.RawStatus, s.RawCode = "", "", "Ready", "19"
			s.ExpiryTime, s.StatusChangeTime = providers.Some(1.8e9), providers.Some(1.75e9)
			s.BandwidthLimitBytesPerSecond, s.BandwidthUsedBytesPerSecond = providers.Some(125e6), providers.Some(float64(i%100)*1e6)
			s.CanRedeploy = providers.Bool(true)
			s.MemoryUsedBytes, s.DiskUsedBytes, s.CPUUsageRatio = providers.Value{}, providers.Value{}, providers.Value{}
		case 2:
			key = [2]string{"e2e", "e2e-delhi"}
			s.RawStatus = "Running"
			s.MemoryUsedBytes, s.DiskUsedBytes, s.CPUUsageRatio = providers.Value{}, providers.Value{}, providers.Value{}
		}
		out[key] = append(out[key], s)
	}
	return out
}

func storeOf(fleet map[[2]string][]providers.Server) *collector.Store {
	st := collector.NewStore()
	for k, servers := range fleet {
		st.Update(k[0], k[1], servers, nil, time.Unix(1.7e9, 0), time.Second)
	}
	return st
}

// sink is a ResponseWriter that copies every byte into a buffer it
// reuses: writing a response costs at least that copy, as it would into a
// socket buffer, without the benchmark measuring a growing recorder.
type sink struct {
	h   http.Header
	buf []byte
}

func (d *sink) Header() http.Header         { return d.h }
func (d *sink) WriteHeader(int)             {}
func (d *sink) Write(p []byte) (int, error) { d.buf = append(d.buf, p...); return len(p), nil }

func serve(b *testing.B, h http.Handler, req *http.Request) {
	w := &sink{h: http.Header{}}
	h.ServeHTTP(w, req) // size the buffer once
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		w.buf = w.buf[:0]
		h.ServeHTTP(w, req)
	}
	b.SetBytes(int64(len(w.buf)))
}

// BenchmarkSD is /sd next to /metrics (collector's BenchmarkScrape) at
// the same fleet: a request served from the body cached for its query
// (impl=cached, every request but the first after a change), and the
// rendering itself, once per change of the store and query (impl=render).
func BenchmarkSD(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		st := storeOf(syntheticFleet(n))
		h := NewSDHandler(st)
		b.Run(fmt.Sprintf("servers=%d/impl=cached", n), func(b *testing.B) {
			serve(b, h, httptest.NewRequest("GET", "/sd", nil))
		})
		snaps := st.Snapshots()
		q := sdQuery{port: "9100", address: AddrPublicIPv4}
		b.Run(fmt.Sprintf("servers=%d/impl=render", n), func(b *testing.B) {
			b.ReportAllocs()
			var out []byte
			for i := 0; i < b.N; i++ {
				out = renderSD(snaps, q)
			}
			b.SetBytes(int64(len(out)))
		})
	}
}
