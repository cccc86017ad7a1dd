// Package etcdha is the building block of highly available remediation:
// a leader election on etcd whose every write is fenced. It is the only
// importer of the etcd client.
//
// Every replica creates an Elector; Campaign (or Run, which campaigns
// again after each term) makes one of them the leader, with a Term. A term
// is fenced on the create revision of its leader key: each write is one
// etcd transaction that applies only while that key exists with that
// revision, so a deposed leader's writes are refused (ErrFenced), however
// late they arrive. Before Campaign returns a term it warms up: a fenced
// no-op write, which catches a phantom leadership (etcd#11007), then a
// linearizable load of the state under the prefix (Term.State). Only then
// does the replica report itself leader (vps_remediation_leader 1).
//
// A term ends (Term.Deposed is closed, Term.Err says why) when its session
// is lost or its leader key deleted, a fence is refused, its send deadline
// passes or it resigns; the
// engine then stops acting at once and campaigns again. The send deadline
// (Term.SendDeadline, Term.CheckSend) is the lease's end as this replica
// last renewed it, less a margin: a leader frozen past its lease sends
// nothing when it wakes. Journal is a term's remediation state as a
// journal.Store: the engine's state while this replica leads. See
// docs/ha.md.
package etcdha

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/vps-exporter/vps_exporter/config"
)

// Config is what an Elector needs; FromConfig builds it from the
// configuration file's remediation.ha.
type Config struct {
	// Endpoints are etcd's client URLs.
	Endpoints []string
	// Prefix is the key prefix: the election is under Prefix+"/leader",
	// the term record at Prefix+"/term", the state under Prefix+"/state/".
	Prefix string
	// LeaseTTL is the session's lease, a whole number of seconds (>= 2s).
	LeaseTTL time.Duration
	// AdvertiseURL is this replica's URL for the others: the leader key's
	// value.
	AdvertiseURL string
	// TLS, when set, secures the connection to etcd (an https endpoint
	// without it uses the system's roots).
	TLS *tls.Config
	// Username and Password authenticate to etcd when both are set. The
	// password is never logged or put in an error.
	Username, Password string
	// SendMargin is taken off the lease's end for the send deadline;
	// 0 means LeaseTTL/4.
	SendMargin time.Duration
	// DialTimeout bounds connecting to etcd; 0 means 5s.
	DialTimeout time.Duration
}

// FromConfig returns the Config of a validated remediation.ha block: its
// TLS files are read here (errors name the file, never its content).
func FromConfig(h *config.HA) (Config, error) {
	c := Config{
		Endpoints:    append([]string(nil), h.Etcd.Endpoints...),
		Prefix:       h.Etcd.Prefix,
		LeaseTTL:     time.Duration(h.Etcd.LeaseTTL),
		AdvertiseURL: strings.TrimSuffix(h.AdvertiseURL, "/"),
		Username:     h.Etcd.Username,
		Password:     string(h.Etcd.Password),
	}
	t := h.Etcd.TLS
	if !t.Enabled() {
		return c, nil
	}
	c.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return Config{}, fmt.Errorf("etcdha: remediation.ha.etcd.tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return Config{}, fmt.Errorf("etcdha: remediation.ha.etcd.tls.ca_file: no PEM certificate in %s", t.CAFile)
		}
		c.TLS.RootCAs = pool
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			// Not err's text: it may quote the key file.
			return Config{}, fmt.Errorf("etcdha: remediation.ha.etcd.tls: cannot load the key pair %s and %s", t.CertFile, t.KeyFile)
		}
		c.TLS.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

func (c Config) check() error {
	switch {
	case len(c.Endpoints) == 0:
		return errors.New("etcdha: no etcd endpoints")
	case !strings.HasPrefix(c.Prefix, "/") || strings.HasSuffix(c.Prefix, "/"):
		return fmt.Errorf("etcdha: prefix %q: want /name, no trailing /", c.Prefix)
	case c.LeaseTTL < 2*time.Second || c.LeaseTTL%time.Second != 0:
		return fmt.Errorf("etcdha: lease TTL %s: want a whole number of seconds, at least 2s", c.LeaseTTL)
	case c.AdvertiseURL == "":
		return errors.New("etcdha: no advertise URL")
	case c.SendMargin < 0 || c.SendMargin >= c.LeaseTTL:
		return fmt.Errorf("etcdha: send margin %s: want [0, lease TTL)", c.SendMargin)
	}
	return nil
}

// Elector campaigns for this replica and watches who leads. It holds one
// etcd client; Close releases it.
type Elector struct {
	cfg     Config
	client  *clientv3.Client
	metrics *Metrics
	logger  log.Logger

	// ctx lives as long as the Elector: terms and their revocations
	// hang from it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	term     *Term  // the live term, if any
	seen     string // the leader term last seen (key@rev), "" none
	seenOnce bool   // Watch has seen etcd once
	url      string // the leader's URL last seen, "" none or unknown

	// trace, set by tests only, is told each step of a campaign.
	trace func(step string, t *Term)
}

// New creates an Elector. It does not wait for etcd: a cluster that cannot
// be reached makes Campaign wait (or fail with its context) and sets
// vps_remediation_ha_backend_up to 0.
func New(cfg Config, m *Metrics, logger log.Logger) (*Elector, error) {
	if cfg.SendMargin == 0 {
		cfg.SendMargin = cfg.LeaseTTL / 4
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if err := cfg.check(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = log.NewNopLogger()
	}
	client, err := clientv3.New(clientv3.Config{
		Endpoints:            cfg.Endpoints,
		DialTimeout:          cfg.DialTimeout,
		DialKeepAliveTime:    cfg.LeaseTTL / 2,
		DialKeepAliveTimeout: cfg.LeaseTTL / 2,
		TLS:                  cfg.TLS,
		Username:             cfg.Username,
		Password:             cfg.Password,
		Logger:               zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcdha: etcd client: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Elector{cfg: cfg, client: client, metrics: m, logger: logger, ctx: ctx, cancel: cancel}, nil
}

// Close ends the live term (revoking its lease, so that another replica
// takes over at once) and closes the client.
func (e *Elector) Close() error {
	e.mu.Lock()
	t := e.term
	e.mu.Unlock()
	if t != nil {
		ctx, cancel := context.WithTimeout(context.Background(), e.cfg.LeaseTTL)
		_ = t.Resign(ctx)
		cancel()
	}
	e.cancel()
	e.wg.Wait()
	return e.client.Close()
}

func (e *Elector) electionPrefix() string { return e.cfg.Prefix + "/leader" }
func (e *Elector) termKey() string        { return e.cfg.Prefix + "/term" }

// StatePrefix is the prefix of the keys that Term.Write writes and
// Term.State returns (their keys are relative to it).
func (e *Elector) StatePrefix() string { return e.cfg.Prefix + "/state/" }

// Leader is one leader term as etcd holds it.
type Leader struct {
	// URL is the leader's advertise_url.
	URL string
	// Key and Rev are its leader key and that key's create revision (the
	// fencing token).
	Key string
	Rev int64
}

// Leader asks etcd (linearizably) who leads now; ErrNoLeader when nobody
// does.
func (e *Elector) Leader(ctx context.Context) (Leader, error) {
	resp, err := e.client.Get(ctx, e.electionPrefix()+"/", clientv3.WithFirstCreate()...)
	e.metrics.up(err)
	if err != nil {
		return Leader{}, fmt.Errorf("etcdha: leader: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return Leader{}, ErrNoLeader
	}
	kv := resp.Kvs[0]
	return Leader{URL: string(kv.Value), Key: string(kv.Key), Rev: kv.CreateRevision}, nil
}

// LeaderURL returns the leader's URL as Watch last saw it; ok is false
// when nobody leads or etcd could not be asked (then a standby answers
// 503).
func (e *Elector) LeaderURL() (url string, ok bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.url, e.url != ""
}

// Watch follows who leads until ctx ends: a linearizable read of the
// election, again at each change of it and at least every LeaseTTL/2.
// It keeps LeaderURL current and counts leader changes.
func (e *Elector) Watch(ctx context.Context) {
	poll := e.cfg.LeaseTTL / 2
	for ctx.Err() == nil {
		rctx, cancel := context.WithTimeout(ctx, poll)
		l, err := e.Leader(rctx)
		cancel()
		e.observe(l, err)
		wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		var changes clientv3.WatchChan
		if err == nil || errors.Is(err, ErrNoLeader) {
			changes = e.client.Watch(wctx, e.electionPrefix()+"/", clientv3.WithPrefix())
		}
		timer := time.NewTimer(poll)
		select {
		case <-ctx.Done():
		case <-changes:
		case <-timer.C:
		}
		timer.Stop()
		wcancel()
	}
}

// observe records one answer of Leader.
func (e *Elector) observe(l Leader, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case errors.Is(err, ErrNoLeader):
		e.url = ""
	case err != nil:
		e.url = "" // unknown: nobody to forward to
		return
	default:
		e.url = l.URL
		id := fmt.Sprintf("%s@%d", l.Key, l.Rev)
		if id != e.seen {
			if e.seenOnce {
				e.metrics.LeaderChanges.Inc()
			}
			e.seen = id
		}
	}
	e.seenOnce = true
}

// Run campaigns until ctx ends: each time this replica wins, lead runs
// with the term and must return once term.Context() is done (ctx ending
// resigns the term). When lead returns, a term still leading resigns; Run then campaigns again after a
// pause (at most LeaseTTL/2, less when a campaign failed fast).
func (e *Elector) Run(ctx context.Context, lead func(t *Term)) {
	for ctx.Err() == nil {
		t, err := e.Campaign(ctx)
		if err != nil {
			if ctx.Err() == nil {
				level.Warn(e.logger).Log("msg", "remediation leader campaign failed; campaigning again", "err", err)
			}
		} else {
			var once sync.Once
			resign := func() {
				once.Do(func() {
					rctx, cancel := context.WithTimeout(context.Background(), e.cfg.LeaseTTL)
					_ = t.Resign(rctx)
					cancel()
				})
			}
			// ctx ending ends the term, which ends lead.
			stop := context.AfterFunc(ctx, resign)
			lead(t)
			stop()
			resign() // or wait for the one ctx started

		}
		pause := time.NewTimer(e.cfg.LeaseTTL / 4)
		select {
		case <-ctx.Done():
		case <-pause.C:
		}
		pause.Stop()
	}
}

// step tells the test's trace, if any, that a campaign reached step.
func (e *Elector) step(name string, t *Term) {
	if e.trace != nil {
		e.trace(name, t)
	}
}
