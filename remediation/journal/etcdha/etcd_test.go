package etcdha

import (
	"context"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// startEtcd runs a single etcd member on loopback ports in a temporary
// directory for the test, and returns its client URL.
func startEtcd(t *testing.T) string {
	t.Helper()
	return startEtcdWith(t, "http", nil)
}

// startEtcdWith is startEtcd with client URLs of scheme, the member's
// configuration changed by change (when not nil).
func startEtcdWith(t *testing.T, scheme string, change func(*embed.Config)) string {
	t.Helper()
	var lastErr error
	for range 3 { // a free port can be taken between pick and listen
		cfg := embed.NewConfig()
		cfg.Name = "test"
		cfg.Dir = t.TempDir()
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
		cu := url.URL{Scheme: scheme, Host: freeAddr(t)}
		pu := url.URL{Scheme: "http", Host: freeAddr(t)}
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
		cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
		if change != nil {
			change(cfg)
		}
		e, err := embed.StartEtcd(cfg)
		if err != nil {
			lastErr = err
			continue
		}
		t.Cleanup(e.Close)
		select {
		case <-e.Server.ReadyNotify():
			return cu.String()
		case <-time.After(30 * time.Second):
			t.Fatal("embedded etcd not ready within 30 s")
		}
	}
	t.Fatalf("start embedded etcd: %v", lastErr)
	return ""
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// rawClient is an etcd client of the test's own: an operator, or the
// test looking at what etcd holds.
func rawClient(t *testing.T, endpoint string) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

const testPrefix = "/test"

// newElector returns an Elector named name (its advertise URL is
// http://name:9877) on endpoint, with its own registry.
func newElector(t *testing.T, endpoint, name string, ttl time.Duration) *Elector {
	t.Helper()
	return newElectorOn(t, []string{endpoint}, name, ttl)
}

// newElectorOn is newElector on several endpoints.
func newElectorOn(t *testing.T, endpoints []string, name string, ttl time.Duration) *Elector {
	t.Helper()
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(Config{Endpoints: endpoints, Prefix: testPrefix, LeaseTTL: ttl, AdvertiseURL: "http://" + name + ":9877"}, m, log.NewNopLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e
}

func gauge(g prometheus.Collector) float64 { return testutil.ToFloat64(g) }

// campaign runs e.Campaign in the background, bounded by limit.
func campaign(e *Elector, limit time.Duration) <-chan campaignResult {
	out := make(chan campaignResult, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), limit)
		defer cancel()
		start := time.Now()
		term, err := e.Campaign(ctx)
		out <- campaignResult{term, err, time.Now(), time.Since(start)}
	}()
	return out
}

type campaignResult struct {
	term *Term
	err  error
	at   time.Time
	took time.Duration
}

// lead waits at most limit for a campaign to win.
func lead(t *testing.T, c <-chan campaignResult, limit time.Duration) campaignResult {
	t.Helper()
	select {
	case r := <-c:
		if r.err != nil {
			t.Fatalf("campaign: %v", r.err)
		}
		return r
	case <-time.After(limit):
		t.Fatalf("no leader within %v", limit)
	}
	return campaignResult{}
}

// waitFor polls cond every 20 ms, failing the test after limit.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// proxy forwards TCP to a target on loopback; paused, it forwards nothing
// (in either direction) until resumed: a leader whose packets stop, as
// when the process is SIGSTOPped or partitioned.
type proxy struct {
	addr string
	ln   net.Listener

	mu    sync.Mutex
	open  chan struct{} // closed while forwarding
	done  chan struct{}
	conns []net.Conn
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{addr: "http://" + ln.Addr().String(), ln: ln, open: make(chan struct{}), done: make(chan struct{})}
	close(p.open)
	var wg sync.WaitGroup
	t.Cleanup(func() {
		p.kill()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
			if err != nil {
				in.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, in, out)
			p.mu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); p.pipe(out, in) }()
			go func() { defer wg.Done(); p.pipe(in, out) }()
		}
	}()
	return p
}

// pipe copies src to dst, holding each chunk while paused.
func (p *proxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			open := p.open
			p.mu.Unlock()
			select {
			case <-open:
			case <-p.done:
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil { // io.EOF or closed
			return
		}
	}
}

func (p *proxy) pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.open:
		p.open = make(chan struct{})
	default:
	}
}

func (p *proxy) resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.open:
	default:
		close(p.open)
	}
}

// kill closes the proxy and every connection through it: the host behind
// it is gone (a process killed with -9: nothing more from it, its lease
// not revoked).
func (p *proxy) kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.done:
		return
	default:
	}
	close(p.done)
	p.ln.Close()
	for _, c := range p.conns {
		c.Close()
	}
}

// drop closes the connections open now (the proxy still accepts new
// ones): the client's streams break and it reconnects.
func (p *proxy) drop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}
