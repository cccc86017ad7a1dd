// Command vps_exporter is a Prometheus exporter and health daemon for
// fleets of servers rented from VPN.bingo, VPS.org and E2E Networks.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"
	_ "time/tzdata" // account timezones work in a minimal container image

	"github.com/alecthomas/kingpin/v2"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
	"github.com/prometheus/common/version"
	"github.com/prometheus/exporter-toolkit/web"
	"github.com/prometheus/exporter-toolkit/web/kingpinflag"
	slgk "github.com/tjhop/slog-gokit"
	"go.yaml.in/yaml/v3"

	"github.com/vps-exporter/vps_exporter/collector"
	"github.com/vps-exporter/vps_exporter/config"
	"github.com/vps-exporter/vps_exporter/providers"
	"github.com/vps-exporter/vps_exporter/remediation"
)

const program = "vps_exporter"

func main() { os.Exit(run(os.Args[1:], os.Stderr)) }

// flags are the command line.
type flags struct {
	configFile    string
	configCheck   bool
	metricsPath   string
	demo          bool
	demoServers   int
	demoRefresh   time.Duration
	demoRate      float64
	enablePprof   bool
	logLevel      string
	logFormat     string
	webFlagConfig *web.FlagConfig
}

func parseFlags(args []string) (*flags, error) {
	app := kingpin.New(program, "Prometheus exporter and health daemon for rented VPS/VPN fleets (VPN.bingo, VPS.org, E2E Networks).")
	f := &flags{}
	app.Flag("config.file", "Configuration file.").Default("vps_exporter.yml").StringVar(&f.configFile)
	app.Flag("config.check", "Validate the configuration file and exit.").BoolVar(&f.configCheck)
	app.Flag("web.telemetry-path", "Path under which to expose metrics.").Default("/metrics").StringVar(&f.metricsPath)
	app.Flag("web.enable-pprof", "Serve Go profiling endpoints under /debug/pprof/.").BoolVar(&f.enablePprof)
	app.Flag("demo", "Start simulated VPN.bingo, VPS.org and E2E APIs in-process and monitor them (no configuration, no credentials).").BoolVar(&f.demo)
	app.Flag("demo.servers", "Size of the simulated fleet in --demo, shared among the three providers.").Default("150").IntVar(&f.demoServers)
	app.Flag("demo.refresh-interval", "Refresh interval in --demo.").Default("15s").DurationVar(&f.demoRefresh)
	app.Flag("demo.rate-limit", "In --demo, the simulated providers throttle each API at this many requests per second (429 with Retry-After), and each account's rate_limit is set to 80% of it; 0: no throttling.").Default("0").Float64Var(&f.demoRate)
	app.Flag("log.level", "Only log messages with the given severity or above. One of: [debug, info, warn, error]").Default("info").EnumVar(&f.logLevel, "debug", "info", "warn", "error")
	app.Flag("log.format", "Output format of log messages. One of: [logfmt, json]").Default("logfmt").EnumVar(&f.logFormat, "logfmt", "json")
	f.webFlagConfig = kingpinflag.AddFlags(app, ":9877")
	app.Version(version.Print(program))
	app.HelpFlag.Short('h')
	if _, err := app.Parse(args); err != nil {
		return nil, err
	}
	if f.demoServers < 1 {
		return nil, fmt.Errorf("--demo.servers must be at least 1")
	}
	if f.demoRate < 0 {
		return nil, fmt.Errorf("--demo.rate-limit must not be negative")
	}
	return f, nil
}

// newLogger returns the project's logger and, for the toolkit's slog bridge
// (which adds its own time and caller), the same logger without them.
func newLogger(f *flags, w *os.File) (log.Logger, log.Logger) {
	var l log.Logger
	if f.logFormat == "json" {
		l = log.NewJSONLogger(log.NewSyncWriter(w))
	} else {
		l = log.NewLogfmtLogger(log.NewSyncWriter(w))
	}
	l = level.NewFilter(l, level.Allow(level.ParseDefault(f.logLevel, level.InfoValue())))
	return log.With(l, "ts", log.DefaultTimestampUTC, "caller", log.DefaultCaller), l
}

// daemon is the running exporter.
type daemon struct {
	flags   *flags
	logger  log.Logger
	store   *collector.Store
	manager *collector.Manager
	api     *collector.APIMetrics
	ctx     context.Context

	engine  *remediation.Engine
	webhook *remediation.Webhook

	reloadMu      sync.Mutex
	reloadOK      prometheus.Gauge
	reloadTime    prometheus.Gauge
	loadConfig    func() (*config.Config, error)
	lastAccountOf map[string]string // account -> provider type, to forget API series
}

func run(args []string, stderr *os.File) int {
	f, err := parseFlags(args)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", program, err)
		return 2
	}
	logger, bare := newLogger(f, stderr)

	if f.configCheck {
		if _, err := loadChecked(f); err != nil {
			level.Error(logger).Log("msg", "configuration is invalid", "file", f.configFile, "err", err)
			return 1
		}
		level.Info(logger).Log("msg", "configuration is valid", "file", f.configFile)
		return 0
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	level.Info(logger).Log("msg", "starting "+program, "version", version.Info(), "build_context", version.BuildContext())
	d := &daemon{flags: f, logger: logger, store: collector.NewStore(), ctx: ctx, lastAccountOf: map[string]string{}}
	reg := prometheus.NewRegistry()
	d.register(reg)

	d.engine = remediation.NewEngine(remediation.Deps{
		Snapshot: d.store.Snapshot,
		Provider: func(account string) (providers.Provider, bool) { return d.manager.Provider(account) },
	}, reg, logger, nil)
	defer d.engine.Close()
	d.webhook = remediation.NewWebhook(ctx, d.engine, 1024, 2)
	// Runs before the engine closes: the webhook's workers end with ctx
	// (their calls are cancelled) and record what is still queued.
	defer d.webhook.Wait()

	if f.demo {
		stateDir, err := os.MkdirTemp("", "vps_exporter_demo")
		if err != nil {
			level.Error(logger).Log("msg", "cannot create demo state directory", "err", err)
			return 1
		}
		defer os.RemoveAll(stateDir)
		demoCfg, err := startDemo(ctx, demoOptions{servers: f.demoServers, refresh: f.demoRefresh, rate: f.demoRate, stateDir: stateDir})
		if err != nil {
			level.Error(logger).Log("msg", "cannot start demo", "err", err)
			return 1
		}
		level.Info(logger).Log("msg", "demo mode: monitoring simulated providers on loopback", "servers", f.demoServers)
		d.loadConfig = func() (*config.Config, error) { return demoCfg, nil }
	} else {
		d.loadConfig = func() (*config.Config, error) { return loadChecked(f) }
	}

	d.manager = collector.NewManager(d.store, logger, d.engine.OnRefresh)
	defer d.manager.Stop()
	if err := d.reload(); err != nil {
		level.Error(logger).Log("msg", "cannot load configuration", "file", f.configFile, "err", err)
		return 1
	}

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				if err := d.reload(); err != nil {
					level.Error(logger).Log("msg", "reload failed; keeping the previous configuration", "err", err)
				}
			}
		}
	}()

	srv := &http.Server{
		Handler:           d.routes(reg),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      2 * time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
	slogger := slog.New(slgk.NewGoKitHandler(bare, nil))
	errc := make(chan error, 1)
	go func() { errc <- web.ListenAndServe(srv, f.webFlagConfig, slogger) }()
	select {
	case err := <-errc:
		level.Error(logger).Log("msg", "web server failed", "err", err)
		return 1
	case <-ctx.Done():
	}
	level.Info(logger).Log("msg", "shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	return 0
}

// loadChecked loads the configuration and checks it against the web
// config: a webhook that can act for real needs a credential.
func loadChecked(f *flags) (*config.Config, error) {
	c, err := config.Load(f.configFile)
	if err != nil {
		return nil, err
	}
	basic, err := webBasicAuth(*f.webFlagConfig.WebConfigFile)
	if err != nil {
		return nil, err
	}
	if err := checkWebhookCredential(c.Remediation, basic); err != nil {
		return nil, err
	}
	return c, nil
}

// checkWebhookCredential refuses a webhook that can make real provider
// calls without a credential, and a bearer token that basic auth would
// shadow (both use the Authorization header).
func checkWebhookCredential(r config.Remediation, basicAuth bool) error {
	switch {
	case r.Webhook.BearerToken != "" && basicAuth:
		return errors.New("remediation.webhook.bearer_token: --web.config.file already asks for basic auth, which uses the same Authorization header; use one of the two")
	case r.WebhookActsForReal() && r.Webhook.BearerToken == "" && !basicAuth:
		return errors.New("remediation.webhook: with the webhook enabled and dry_run false, set bearer_token or bearer_token_file (or basic_auth_users in --web.config.file): the endpoint reboots and redeploys servers")
	}
	return nil
}

// webBasicAuth reports whether the exporter-toolkit web config asks for
// basic auth.
func webBasicAuth(path string) (bool, error) {
	if path == "" {
		return false, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return false, fmt.Errorf("read web config: %w", err)
	}
	var wc struct {
		Users map[string]string `yaml:"basic_auth_users"`
	}
	if err := yaml.Unmarshal(b, &wc); err != nil {
		// Not the YAML error itself: it quotes values (password hashes).
		return false, fmt.Errorf("parse web config %s: not a valid exporter-toolkit web config", path)
	}
	return len(wc.Users) > 0, nil
}

func (d *daemon) register(reg *prometheus.Registry) {
	d.reloadOK = prometheus.NewGauge(prometheus.GaugeOpts{Name: "vps_exporter_config_last_reload_successful", Help: "Whether the last configuration reload attempt was successful."})
	d.reloadTime = prometheus.NewGauge(prometheus.GaugeOpts{Name: "vps_exporter_config_last_reload_success_timestamp_seconds", Help: "Timestamp of the last successful configuration reload."})
	d.api = collector.NewAPIMetrics(reg)
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		versioncollector.NewCollector(program),
		collector.NewAccountCollector(d.store),
		// d.manager is set before the web server starts; a scrape reads
		// it then.
		collector.NewRateCollector(func() []providers.Provider { return d.manager.Providers() }),
		d.reloadOK, d.reloadTime,
	)
}

// reload loads the configuration and applies it; on error the running
// configuration stays.
func (d *daemon) reload() error {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	c, err := d.loadConfig()
	if err == nil {
		err = d.apply(c)
	}
	if err != nil {
		d.reloadOK.Set(0)
		return err
	}
	d.reloadOK.Set(1)
	d.reloadTime.SetToCurrentTime()
	level.Info(d.logger).Log("msg", "configuration loaded", "accounts", len(c.Providers))
	return nil
}

func (d *daemon) apply(c *config.Config) error {
	accounts, err := buildAccounts(c, d.api)
	if err != nil {
		return err
	}
	d.manager.Apply(d.ctx, accounts)
	now := map[string]string{}
	for _, p := range c.Providers {
		now[p.Name] = p.Type
	}
	for name, typ := range d.lastAccountOf {
		if now[name] != typ {
			d.api.Forget(typ, name)
		}
	}
	d.lastAccountOf = now
	// A remediation state file that cannot be opened turns remediation
	// off (and says so); it does not fail the reload or the exporter.
	_ = d.engine.Configure(c.Remediation, time.Duration(c.Global.RefreshInterval), c.Providers)
	return nil
}

func (d *daemon) routes(reg *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.Handle(d.flags.metricsPath, collector.NewHandler(d.store, reg, d.logger))
	mux.HandleFunc("/-/healthy", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("Healthy\n"))
	})
	mux.HandleFunc("/-/ready", func(w http.ResponseWriter, _ *http.Request) {
		if !d.manager.Ready() {
			http.Error(w, "Not ready: waiting for the first refresh of every account", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("Ready\n"))
	})
	mux.HandleFunc("/-/reload", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost && r.Method != http.MethodPut {
			w.Header().Set("Allow", "POST, PUT")
			http.Error(w, "This endpoint requires a POST or PUT request.", http.StatusMethodNotAllowed)
			return
		}
		if err := d.reload(); err != nil {
			level.Error(d.logger).Log("msg", "reload failed; keeping the previous configuration", "err", err)
			http.Error(w, fmt.Sprintf("failed to reload config: %s", err), http.StatusInternalServerError)
			return
		}
		_, _ = w.Write([]byte("Reloaded\n"))
	})
	mux.Handle("/sd", collector.NewSDHandler(d.store))
	mux.HandleFunc("/api/v1/accounts", d.serveAccounts)
	control := remediation.NewControlHandler(d.engine)
	mux.Handle("/api/v1/remediation", control)
	mux.Handle("/api/v1/remediation/", control)
	mux.Handle("/webhook/alertmanager", d.webhook)
	if d.flags.enablePprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	if d.flags.metricsPath != "/" {
		landing, err := web.NewLandingPage(web.LandingConfig{
			Name:        "VPS Exporter",
			Description: "Prometheus exporter and health daemon for VPN.bingo, VPS.org and E2E Networks fleets",
			Version:     version.Info(),
			Profiling:   strconv.FormatBool(d.flags.enablePprof),
			Links: []web.LandingLinks{
				{Address: d.flags.metricsPath, Text: "Metrics"},
				{Address: "/sd", Text: "Service discovery", Description: "Every server as a Prometheus HTTP SD target (JSON); see the README for its query parameters"},
				{Address: "/api/v1/accounts", Text: "Accounts", Description: "Refresh status of every account (JSON)"},
				{Address: "/api/v1/remediation", Text: "Remediation", Description: "Remediation actions (the audit log) and suppressions, newest first (JSON; filters provider, account, id, since, limit)"},
				{Address: "/-/healthy", Text: "Health"},
				{Address: "/-/ready", Text: "Readiness"},
			},
		})
		if err != nil {
			level.Error(d.logger).Log("msg", "cannot build landing page", "err", err)
		} else {
			mux.Handle("/", landing)
		}
	}
	return mux
}

// accountStatus is one account in /api/v1/accounts.
type accountStatus struct {
	Provider    string     `json:"provider"`
	Account     string     `json:"account"`
	Up          bool       `json:"up"`
	Servers     int        `json:"servers"`
	LastAttempt *time.Time `json:"last_attempt,omitempty"`
	LastSuccess *time.Time `json:"last_success,omitempty"`
	DurationSec float64    `json:"refresh_duration_seconds"`
	Error       string     `json:"error,omitempty"`
}

func (d *daemon) serveAccounts(w http.ResponseWriter, _ *http.Request) {
	var out []accountStatus
	for _, s := range d.store.Snapshots() {
		st := accountStatus{Provider: s.Provider, Account: s.Account, Up: s.Up, Servers: len(s.Servers), DurationSec: s.Duration.Seconds(), Error: s.Err}
		if !s.LastAttempt.IsZero() {
			t := s.LastAttempt.UTC()
			st.LastAttempt = &t
		}
		if !s.LastSuccess.IsZero() {
			t := s.LastSuccess.UTC()
			st.LastSuccess = &t
		}
		out = append(out, st)
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		level.Debug(d.logger).Log("msg", "write accounts", "err", err)
	}
}
