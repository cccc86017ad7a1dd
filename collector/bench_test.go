package collector

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/vps-exporter/vps_exporter/providers"
)

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

func storeOf(fleet map[[2]string][]providers.Server) *Store {
	st := NewStore()
	for k, servers := range fleet {
		st.Update(k[0], k[1], servers, nil, time.Unix(1.7e9, 0), time.Second)
	}
	return st
}

// constCollector is the per-scrape approach: every series is built anew
// as a const metric on every Collect.
type constCollector struct {
	fleet map[[2]string][]providers.Server
	descs [numFamilies]*prometheus.Desc
	state *prometheus.Desc
	info  *prometheus.Desc
	pstat *prometheus.Desc
}

func newConstCollector(fleet map[[2]string][]providers.Server) *constCollector {
	c := &constCollector{fleet: fleet}
	l := []string{"provider", "account", "id"}
	names := families()
	for f := range c.descs {
		c.descs[f] = prometheus.NewDesc(names[f].name, names[f].help, l, nil)
	}
	c.info = prometheus.NewDesc(names[famInfo].name, names[famInfo].help, append(l, "name", "hostname", "ip", "location", "plan", "image"), nil)
	c.state = prometheus.NewDesc(names[famState].name, names[famState].help, append(l, "state"), nil)
	c.pstat = prometheus.NewDesc(names[famProviderStatus].name, names[famProviderStatus].help, append(l, "status", "code"), nil)
	return c
}

func (c *constCollector) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(c, ch) }

func (c *constCollector) Collect(ch chan<- prometheus.Metric) {
	g := prometheus.GaugeValue
	for k, servers := range c.fleet {
		for _, s := range servers {
			p, a, id := k[0], k[1], s.ID
			ch <- prometheus.MustNewConstMetric(c.info, g, 1, p, a, id, s.Name, s.Hostname, s.IP, s.Location, s.Plan, s.Image)
			up := 0.0
			if s.State == providers.StateRunning {
				up = 1
			}
			ch <- prometheus.MustNewConstMetric(c.descs[famUp], g, up, p, a, id)
			for _, st := range providers.States() {
				v := 0.0
				if st == s.State {
					v = 1
				}
				ch <- prometheus.MustNewConstMetric(c.state, g, v, p, a, id, string(st))
			}
			ch <- prometheus.MustNewConstMetric(c.pstat, g, 1, p, a, id, s.RawStatus, s.RawCode)
			for f, v := range map[int]providers.Value{
				famExpiry: s.ExpiryTime, famCreated: s.CreatedTime, famStatusChange: s.StatusChangeTime,
				famBandwidthLimit: s.BandwidthLimitBytesPerSecond, famBandwidthUsed: s.BandwidthUsedBytesPerSecond,
				famTransferLimit: s.TransferLimitBytes, famTransferUsed: s.TransferUsedBytes, famCPU: s.CPUUsageRatio,
				famVCPUs: s.VCPUs, famMemory: s.MemoryBytes, famMemoryUsed: s.MemoryUsedBytes, famDisk: s.DiskBytes,
				famDiskUsed: s.DiskUsedBytes, famCanRedeploy: s.CanRedeploy, famBackups: s.BackupsEnabled,
			} {
				if v.OK {
					ch <- prometheus.MustNewConstMetric(c.descs[f], g, v.V, p, a, id)
				}
			}
		}
	}
}

// sinkSize is the buffer a sink copies into: about a socket's send
// buffer (Linux autotunes TCP's up to 4 MiB; a write is copied into it in
// pieces of at most what is free).
const sinkSize = 256 << 10

// sink is a ResponseWriter that copies every byte as a write to a socket
// does: into a buffer it reuses, in pieces of at most its size. Writing a
// response costs at least that copy, without the benchmark measuring a
// growing recorder. (It used to append the whole response to one buffer:
// then a response written in one piece of 1 MiB or more was copied with
// the non-temporal stores Go's memmove uses from that size on, about 1.5x
// faster than the same bytes written in smaller pieces, an advantage no
// write to a socket has; docs/benchmarks.md.)
type sink struct {
	h   http.Header
	buf []byte
	off int   // next byte of buf to write
	n   int64 // bytes written since reset
}

func (d *sink) Header() http.Header { return d.h }
func (d *sink) WriteHeader(int)     {}
func (d *sink) Write(p []byte) (int, error) {
	if d.buf == nil {
		d.buf = make([]byte, sinkSize)
	}
	n := len(p)
	for len(p) > 0 {
		c := copy(d.buf[d.off:], p)
		p = p[c:]
		if d.off += c; d.off == len(d.buf) {
			d.off = 0
		}
	}
	d.n += int64(n)
	return n, nil
}

func (d *sink) reset() { d.n = 0 }

func serve(b *testing.B, h http.Handler, req *http.Request) {
	w := &sink{h: http.Header{}}
	h.ServeHTTP(w, req)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		w.reset()
		h.ServeHTTP(w, req)
	}
	b.SetBytes(w.n)
}

// realRegistry is what the daemon registers beside the stored series.
func realRegistry(st *Store) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), NewAccountCollector(st))
	NewAPIMetrics(reg).Observer("vpsorg", "vps-main")("servers_list", "200", time.Millisecond)
	return reg
}

// BenchmarkScrape compares, at each fleet size, the stored-bytes handler
// with the floor (writing the very same response bytes from memory) and
// with the per-scrape const-metrics approach, plain and gzip.
func BenchmarkScrape(b *testing.B) {
	for _, n := range []int{100, 1000, 10000, 100000} {
		fleet := syntheticFleet(n)
		st := storeOf(fleet)
		h := NewHandler(st, realRegistry(st), log.NewNopLogger())
		for _, enc := range []string{"plain", "gzip"} {
			req := httptest.NewRequest("GET", "/metrics", nil)
			if enc == "gzip" {
				req.Header.Set("Accept-Encoding", "gzip")
			}
			// The floor: the handler's own response, captured once and
			// written from memory.
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			body := rec.Body.Bytes()
			b.Run(fmt.Sprintf("servers=%d/enc=%s/impl=floor", n, enc), func(b *testing.B) {
				serve(b, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(body) }), req)
			})
			b.Run(fmt.Sprintf("servers=%d/enc=%s/impl=stored", n, enc), func(b *testing.B) {
				serve(b, h, req)
			})
			if n > 10000 {
				continue // minutes per run; the trend is clear by 10,000
			}
			reg := realRegistry(st)
			reg.MustRegister(newConstCollector(fleet))
			ph := promhttp.HandlerFor(reg, promhttp.HandlerOpts{DisableCompression: enc == "plain"})
			b.Run(fmt.Sprintf("servers=%d/enc=%s/impl=constmetrics", n, enc), func(b *testing.B) {
				serve(b, ph, req)
			})
		}
	}
}

// BenchmarkScrapeHTTP is BenchmarkScrape over a real connection: each
// handler behind an HTTP server on loopback, read by a client that
// discards the body, the floor being the same response bytes written from
// memory in one piece.
func BenchmarkScrapeHTTP(b *testing.B) {
	for _, n := range []int{10000, 100000} {
		st := storeOf(syntheticFleet(n))
		h := NewHandler(st, realRegistry(st), log.NewNopLogger())
		client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
		for _, enc := range []string{"plain", "gzip"} {
			req := httptest.NewRequest("GET", "/metrics", nil)
			if enc == "gzip" {
				req.Header.Set("Accept-Encoding", "gzip")
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			body, hdr := rec.Body.Bytes(), rec.Header()
			floor := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				for k, v := range hdr {
					w.Header()[k] = v
				}
				_, _ = w.Write(body)
			})
			for _, impl := range []struct {
				name string
				h    http.Handler
			}{{"floor", floor}, {"stored", h}} {
				b.Run(fmt.Sprintf("servers=%d/enc=%s/impl=%s", n, enc, impl.name), func(b *testing.B) {
					srv := httptest.NewServer(impl.h)
					defer srv.Close()
					get := func() int64 {
						r, _ := http.NewRequest("GET", srv.URL, nil)
						if enc == "gzip" {
							r.Header.Set("Accept-Encoding", "gzip")
						}
						resp, err := client.Do(r)
						if err != nil {
							b.Fatal(err)
						}
						defer resp.Body.Close()
						n, err := io.Copy(io.Discard, resp.Body)
						if err != nil {
							b.Fatal(err)
						}
						return n
					}
					size := get()
					b.ReportAllocs()
					b.ResetTimer()
					for i := 0; i < b.N; i++ {
						get()
					}
					b.SetBytes(size)
				})
			}
		}
		client.CloseIdleConnections()
	}
}

// BenchmarkStoreMemory reports the heap the store keeps per server.
func BenchmarkStoreMemory(b *testing.B) {
	for _, n := range []int{1000, 10000, 100000} {
		b.Run(fmt.Sprintf("servers=%d", n), func(b *testing.B) {
			var perServer float64
			for i := 0; i < b.N; i++ {
				fleet := syntheticFleet(n)
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				st := storeOf(fleet)
				st.current() // the assembled body and its compressed form
				runtime.GC()
				runtime.ReadMemStats(&after)
				perServer = float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
				runtime.KeepAlive(st)
			}
			b.ReportMetric(perServer, "B/server")
		})
	}
}

// changedFleet is fleet with the creation time of some servers moved:
// every server (all), every tenth one (tenth: spread over the whole
// list) or one server of each account (one).
func changedFleet(fleet map[[2]string][]providers.Server, which string) map[[2]string][]providers.Server {
	out := map[[2]string][]providers.Server{}
	for k, servers := range fleet {
		c := append([]providers.Server(nil), servers...)
		for i := range c {
			if which == "tenth" && i%10 != 0 || which == "one" && i != len(c)/2 {
				continue
			}
			c[i].CreatedTime = providers.Some(c[i].CreatedTime.V + 1)
		}
		out[k] = c
	}
	return out
}

// BenchmarkApplyScrape is one refresh cycle: every account's list stored
// with some of its servers changed (changedFleet), then the first gzip
// scrape after it, which serves the new series.
func BenchmarkApplyScrape(b *testing.B) {
	for _, n := range []int{10000, 100000} {
		for _, which := range []string{"all", "tenth", "one"} {
			b.Run(fmt.Sprintf("servers=%d/changed=%s", n, which), func(b *testing.B) {
				base := syntheticFleet(n)
				st := storeOf(base)
				h := NewHandler(st, prometheus.NewRegistry(), log.NewNopLogger())
				req := httptest.NewRequest("GET", "/metrics", nil)
				req.Header.Set("Accept-Encoding", "gzip")
				w := &sink{h: http.Header{}}
				h.ServeHTTP(w, req)
				// Two versions to alternate between, made before timing.
				fleets := [2]map[[2]string][]providers.Server{changedFleet(base, which), base}
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					for k, servers := range fleets[i%2] {
						st.Update(k[0], k[1], servers, nil, time.Unix(1.7e9, 0), time.Second)
					}
					w.reset()
					h.ServeHTTP(w, req)
				}
			})
		}
	}
}

// BenchmarkHeap100k reports the heap in use with 100,000 servers stored
// and scraped once (plain and gzip), after a garbage collection: what the
// exporter keeps between scrapes, the input lists already dropped.
func BenchmarkHeap100k(b *testing.B) {
	const n = 100000
	var inuse float64
	for i := 0; i < b.N; i++ {
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		st := storeOf(syntheticFleet(n))
		h := NewHandler(st, realRegistry(st), log.NewNopLogger())
		w := &sink{h: http.Header{}}
		req := httptest.NewRequest("GET", "/metrics", nil)
		h.ServeHTTP(w, req)
		req.Header.Set("Accept-Encoding", "gzip")
		h.ServeHTTP(w, req)
		w = nil
		runtime.GC()
		runtime.GC() // and what sync.Pools kept through the first
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		inuse = float64(after.HeapInuse-before.HeapInuse) / (1 << 20)
		runtime.KeepAlive(h)
	}
	b.ReportMetric(inuse, "heap-inuse-MiB")
}

// BenchmarkUpdateUnchanged is a refresh that changes nothing: no server
// is rendered again and the body is not rebuilt.
func BenchmarkUpdateUnchanged(b *testing.B) {
	fleet := syntheticFleet(10000)
	st := storeOf(fleet)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for k, servers := range fleet {
			st.Update(k[0], k[1], servers, nil, time.Unix(1.7e9, 0), time.Second)
		}
	}
}

func TestGzipBodyDecodes(t *testing.T) {
	// A guard for the benchmark's gzip path: the stored handler's gzip
	// output at a realistic size is one valid member equal to plain.
	st := storeOf(syntheticFleet(3000))
	h := NewHandler(st, prometheus.NewRegistry(), log.NewNopLogger())
	plain, _ := scrape(t, h, false)
	req := httptest.NewRequest("GET", "/metrics", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	zr, err := gzip.NewReader(bytes.NewReader(rec.Body.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != plain {
		t.Fatal("gzip body differs")
	}
	if rec.Body.Len()*5 > len(plain) {
		t.Errorf("gzip saves little: %d of %d bytes", rec.Body.Len(), len(plain))
	}
}
