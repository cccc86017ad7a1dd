// Command vps_exporter is a Prometheus exporter and health daemon for
// fleets of servers rented from VPN.bingo, VPS.org and E2E Networks.
package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
	_ "time/tzdata" // account timezones work in a minimal container image

	"github.com/KimMachineGun/automemlimit/memlimit"
	"github.com/alecthomas/kingpin/v2"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
	"github.com/prometheus/common/version"
	"github.com/prometheus/exporter-toolkit/web"
	"github.com/prometheus/exporter-toolkit/web/kingpinflag"
	"go.yaml.in/yaml/v3"
	"golang.org/x/sys/unix"

	"github.com/vps-exporter/vps_exporter/collector"
	"github.com/vps-exporter/vps_exporter/config"
	"github.com/vps-exporter/vps_exporter/internal/logging"
	"github.com/vps-exporter/vps_exporter/providers"
	"github.com/vps-exporter/vps_exporter/remediation"
	webui "github.com/vps-exporter/vps_exporter/web"
)

const program = "vps_exporter"

func main() { os.Exit(run(os.Args[1:], os.Stderr)) }

// flags are the command line.
type flags struct {
	configFile string
	// configFileSet: --config.file was given (not the default).
	configFileSet bool
	configCheck   bool
	metricsPath   string
	demo          bool
	demoServers   int
	demoRefresh   time.Duration
	demoRate      float64
	enablePprof   bool
	// enableLifecycle allows POST /-/reload (Prometheus' flag).
	enableLifecycle bool
	logLevel        string
	logFormat       string
	webFlagConfig   *web.FlagConfig

	// autoMemLimit sets the Go memory limit from the cgroup's, at
	// autoMemLimitRatio of it (Prometheus' flags).
	autoMemLimit      bool
	autoMemLimitRatio float64
}

func parseFlags(args []string) (*flags, error) {
	app := kingpin.New(program, "Prometheus exporter and health daemon for rented VPS/VPN fleets (VPN.bingo, VPS.org, E2E Networks).")
	f := &flags{}
	app.Flag("config.file", "Configuration file.").Default("vps_exporter.yml").IsSetByUser(&f.configFileSet).StringVar(&f.configFile)
	app.Flag("config.check", "Validate the configuration file and exit.").BoolVar(&f.configCheck)
	app.Flag("web.telemetry-path", "Path under which to expose metrics (GET and HEAD); not one of the exporter's own: /, /sd, /-/..., /api/..., /webhook/..., /debug/....").Default("/metrics").StringVar(&f.metricsPath)
	app.Flag("web.enable-pprof", "Serve Go profiling endpoints under /debug/pprof/.").BoolVar(&f.enablePprof)
	app.Flag("web.enable-lifecycle", "Enable reloading the configuration over HTTP (POST /-/reload). SIGHUP always reloads.").BoolVar(&f.enableLifecycle)
	app.Flag("demo", "Start simulated VPN.bingo, VPS.org and E2E APIs in-process and monitor them (no configuration, no credentials).").BoolVar(&f.demo)
	app.Flag("demo.servers", "Size of the simulated fleet in --demo, shared among the three providers.").Default("150").IntVar(&f.demoServers)
	app.Flag("demo.refresh-interval", "Refresh interval in --demo.").Default("15s").DurationVar(&f.demoRefresh)
	app.Flag("demo.rate-limit", "In --demo, the simulated providers throttle each API at this many requests per second (429 with Retry-After), and each account's rate_limit is set to 80% of it; 0: no throttling.").Default("0").Float64Var(&f.demoRate)
	app.Flag("auto-gomemlimit", "Set the Go runtime's memory limit (GOMEMLIMIT) from the container's cgroup memory limit, at --auto-gomemlimit.ratio of it. A GOMEMLIMIT in the environment is left as it is.").Default("true").BoolVar(&f.autoMemLimit)
	app.Flag("auto-gomemlimit.ratio", "The share of the cgroup memory limit set as the Go memory limit, in (0, 1]; the rest is headroom for what Go does not count (stacks, the binary, the kernel's page cache of the state file).").Default("0.9").Float64Var(&f.autoMemLimitRatio)
	app.Flag("log.level", "Only log messages with the given severity or above. One of: [debug, info, warn, error]").Default("info").EnumVar(&f.logLevel, "debug", "info", "warn", "error")
	app.Flag("log.format", "Output format of log messages. One of: [logfmt, json]").Default("logfmt").EnumVar(&f.logFormat, "logfmt", "json")
	f.webFlagConfig = kingpinflag.AddFlags(app, ":9877")
	app.Version(version.Print(program))
	app.HelpFlag.Short('h')
	if _, err := app.Parse(args); err != nil {
		return nil, err
	}
	if err := checkTelemetryPath(f.metricsPath); err != nil {
		return nil, err
	}
	if f.demoServers < 1 {
		return nil, fmt.Errorf("--demo.servers must be at least 1")
	}
	if f.demoRate < 0 {
		return nil, fmt.Errorf("--demo.rate-limit must not be negative")
	}
	if !(f.autoMemLimitRatio > 0 && f.autoMemLimitRatio <= 1) {
		return nil, fmt.Errorf("--auto-gomemlimit.ratio must be greater than 0 and at most 1, got %v", f.autoMemLimitRatio)
	}
	return f, nil
}

// newLogger returns the project's logger and, for exporter-toolkit, an
// slog logger that writes through it (internal/logging).
func newLogger(f *flags, w *os.File) (log.Logger, *slog.Logger) {
	return logging.New(f.logFormat, f.logLevel, w)
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

	// ha is remediation.ha as the exporter started with it (main_ha.go);
	// haStateFile the state_file to import into etcd.
	ha          haMode
	haStateFile string

	reloadMu      sync.Mutex
	reloadOK      prometheus.Gauge
	reloadTime    prometheus.Gauge
	loadConfig    func() (*config.Config, error)
	lastAccountOf map[string]string // account -> provider type, to forget API series
}

func run(args []string, stderr *os.File) int {
	f, err := parseFlags(args)
	if err != nil {
		// Exit 1, as node_exporter's kingpin.Parse: a flag mistake is a
		// failed start.
		fmt.Fprintf(stderr, "%s: %v\n", program, err)
		return 1
	}
	logger, toolkit := newLogger(f, stderr)

	if f.configCheck {
		c, err := loadChecked(f)
		if err == nil {
			err = checkStateDir(c.Remediation)
		}
		if err != nil {
			logConfigErrors(logger, "configuration is invalid", f.configFile, err)
			return 1
		}
		warnPlaceholders(logger, c)
		level.Info(logger).Log("msg", "configuration is valid", "file", f.configFile)
		return 0
	}

	sigctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	level.Info(logger).Log("msg", "starting "+program, "version", version.Info(), "build_context", version.BuildContext())
	setGCPercent(logger, os.Getenv)
	if f.autoMemLimit {
		autoMemLimit(logger, f.autoMemLimitRatio, memlimit.FromCgroup)
	}
	return serve(sigctx, f, logger, toolkit)
}

// shutdownBudget bounds how long the exporter takes to stop after a signal
// or a failed start, whatever is under way; with the web server's 3 s to
// finish its requests, it exits within 15 s.
const shutdownBudget = 11 * time.Second

// serve runs the daemon until ctx ends or the web server fails. Every way
// out, a failed start included, goes through one bounded shutdown: the
// process never stays alive without serving.
func serve(parent context.Context, f *flags, logger log.Logger, toolkit *slog.Logger) (code int) {
	ctx, cancel := context.WithCancel(parent)
	d := &daemon{flags: f, logger: logger, store: collector.NewStore(), ctx: ctx, lastAccountOf: map[string]string{}}
	// cleanups run newest first; the first one removes the demo's state
	// directory after the engine has closed its file.
	var stateDir string
	cleanups := []func(){func() {
		if stateDir != "" {
			_ = os.RemoveAll(stateDir)
		}
	}}
	defer func() {
		// Stop taking new work first (ctx), then wait for what runs,
		// newest first, within the budget.
		cancel()
		done := make(chan struct{})
		go func() {
			for i := len(cleanups) - 1; i >= 0; i-- {
				cleanups[i]()
			}
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(shutdownBudget):
			level.Error(logger).Log("msg", "shutdown did not finish in time; exiting anyway", "budget", shutdownBudget)
			if code == 0 {
				code = 1
			}
		}
	}()

	reg := prometheus.NewRegistry()
	d.register(reg)
	d.engine = remediation.NewEngine(remediation.Deps{
		Snapshot: d.store.Snapshot,
		Provider: func(account string) (providers.Provider, bool) { return d.manager.Provider(account) },
	}, reg, logger, nil)
	cleanups = append(cleanups, d.engine.Close)
	// At SIGTERM (or a failed start) no new provider action starts;
	// those under way end.
	context.AfterFunc(ctx, d.engine.Shutdown)
	d.webhook = remediation.NewWebhook(ctx, d.engine, 1024, 2)
	// The webhook's workers end with ctx (their calls are cancelled) and
	// record what is still queued, before the engine closes.
	cleanups = append(cleanups, d.webhook.Wait)

	if f.demo {
		var err error
		if stateDir, err = os.MkdirTemp("", "vps_exporter_demo"); err != nil {
			level.Error(logger).Log("msg", "cannot create demo state directory", "err", err)
			return 1
		}
		demoCfg, demoFile, err := startDemo(ctx, demoOptions{servers: f.demoServers, refresh: f.demoRefresh, rate: f.demoRate, stateDir: stateDir,
			webConfigFile: *f.webFlagConfig.WebConfigFile})
		if err != nil {
			level.Error(logger).Log("msg", "cannot start demo", "err", err)
			return 1
		}
		level.Info(logger).Log("msg", "demo mode: monitoring simulated providers on loopback; remediation acts only on the simulated servers",
			"servers", f.demoServers, "remediation", remediationMode(demoCfg.Remediation), "config_file", demoFile)
		d.loadConfig = func() (*config.Config, error) { return demoCfg, nil }
	} else {
		d.loadConfig = func() (*config.Config, error) { return loadChecked(f) }
	}

	d.manager = collector.NewManager(d.store, logger, d.engine.OnRefresh)
	cleanups = append(cleanups, d.manager.Stop)
	if err := d.load(true); err != nil {
		logConfigErrors(logger, "cannot start: configuration not loaded", f.configFile, err)
		return 1
	}

	if d.ha.ha != nil && d.ha.enabled {
		stopHA, err := d.startHA(ctx, reg)
		if err != nil {
			level.Error(logger).Log("msg", "cannot start highly available remediation", "err", err)
			return 1
		}
		cleanups = append(cleanups, stopHA)
	}

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	cleanups = append(cleanups, func() { signal.Stop(hup) })
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				if err := d.reload(); err != nil {
					logConfigErrors(logger, reloadFailed(err), f.configFile, err)
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
	errc := make(chan error, 1)
	go func() { errc <- web.ListenAndServe(srv, f.webFlagConfig, toolkit) }()
	select {
	case err := <-errc:
		level.Error(logger).Log("msg", listenError(err, *f.webFlagConfig.WebListenAddresses), "address", strings.Join(*f.webFlagConfig.WebListenAddresses, ","), "err", err)
		return 1
	case <-ctx.Done():
	}
	level.Info(logger).Log("msg", "shutting down")
	sctx, scancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer scancel()
	_ = srv.Shutdown(sctx)
	return 0
}

// loadChecked loads the configuration and checks it against the web
// config: live remediation needs a credential (config's CheckCredential).
// A file with mistakes gives them all, one per line.
func loadChecked(f *flags) (*config.Config, error) {
	// The web config first: the credential rule needs it, and its
	// mistakes come in the same run as the file's.
	basic, werr := webBasicAuth(*f.webFlagConfig.WebConfigFile)
	c, err := config.LoadWith(f.configFile, config.Options{Credential: werr == nil, WebBasicAuth: basic})
	if errors.Is(err, fs.ErrNotExist) && !f.configFileSet {
		err = fmt.Errorf("%w; start from deploy/vps_exporter.minimal.yml (copy it to vps_exporter.yml and put your token in), or try --demo", err)
	}
	if err != nil || werr != nil {
		return nil, errors.Join(err, werr)
	}
	return c, nil
}

// logConfigErrors logs a configuration that cannot be used: one line that
// says so with the number of mistakes, then one line per mistake (its field
// path and what is wrong), so that each reads alone in logfmt and json.
func logConfigErrors(logger log.Logger, msg, file string, err error) {
	lines := strings.Split(err.Error(), "\n")
	level.Error(logger).Log("msg", msg, "file", file, "errors", len(lines))
	for _, l := range lines {
		level.Error(logger).Log("msg", "configuration error", "file", file, "err", l)
	}
}

// webBasicAuth reports whether the exporter-toolkit web config asks for
// basic auth.
func webBasicAuth(path string) (bool, error) {
	if path == "" {
		return false, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return false, fmt.Errorf("--web.config.file: %w", err)
	}
	var wc struct {
		Users map[string]string `yaml:"basic_auth_users"`
	}
	if err := yaml.Unmarshal(b, &wc); err != nil {
		// Not the YAML error itself: it quotes values (password hashes).
		return false, fmt.Errorf("--web.config.file: %s is not a valid exporter-toolkit web config", path)
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
func (d *daemon) reload() error { return d.load(false) }

// load loads and applies the configuration. At start (first), a
// remediation state file that is unusable fails it; on a reload it turns
// remediation off and the exporter goes on.
func (d *daemon) load(first bool) error {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	c, err := d.loadConfig()
	if err == nil {
		err = d.apply(c, first)
	}
	if err != nil {
		d.reloadOK.Set(0)
		return err
	}
	d.reloadOK.Set(1)
	d.reloadTime.SetToCurrentTime()
	level.Info(d.logger).Log("msg", "configuration loaded", "accounts", len(c.Providers))
	if !d.flags.demo {
		warnPlaceholders(d.logger, c)
	}
	return nil
}

// f_demo reports whether the daemon runs the demo (its config holds no
// placeholders to warn of).
func f_demo(d *daemon) bool { return d.flags.demo }

// reloadFailed is the log message of a failed reload: a configuration
// that does not load leaves the running one in place; a state file that
// cannot be opened does not (its error says what was applied).
func reloadFailed(err error) string {
	if errors.Is(err, errPartlyApplied) {
		return "reload failed"
	}
	return "reload failed; keeping the previous configuration"
}

// errPartlyApplied marks a reload whose accounts were applied but whose
// remediation state file could not be opened.
var errPartlyApplied = errors.New("the accounts were reloaded; remediation is off until the file can be opened")

// warnPlaceholders warns of secrets still holding the example configs'
// placeholder: the file is valid, but the provider will refuse them.
func warnPlaceholders(logger log.Logger, c *config.Config) {
	for i, p := range c.Providers {
		for field, v := range map[string]string{"token": string(p.Token), "api_key": string(p.APIKey)} {
			if strings.HasPrefix(v, config.Placeholder) {
				level.Warn(logger).Log("msg", "a secret is still the example's placeholder: the provider will refuse it until you put the real one in",
					"field", fmt.Sprintf("providers[%d] (%s).%s", i, p.Name, field))
			}
		}
	}
}

// checkStateDir is --config.check's look at the remediation state file,
// without opening it (a running exporter holds its lock): remediation on
// needs its directory to exist and take files, and an existing file to be
// a regular file.
func checkStateDir(r config.Remediation) error {
	if !r.Enabled {
		return nil
	}
	dir := filepath.Dir(r.StateFile)
	st, err := os.Stat(dir)
	switch {
	case err != nil:
		return fmt.Errorf("remediation.state_file: its directory: %w", err)
	case !st.IsDir():
		return fmt.Errorf("remediation.state_file: %s is not a directory", dir)
	case unix.Access(dir, unix.W_OK|unix.X_OK) != nil:
		return fmt.Errorf("remediation.state_file: cannot create files in %s", dir)
	}
	if st, err := os.Stat(r.StateFile); err == nil && !st.Mode().IsRegular() {
		return fmt.Errorf("remediation.state_file: %s exists and is not a regular file", r.StateFile)
	}
	return nil
}

func (d *daemon) apply(c *config.Config, first bool) error {
	if first {
		d.ha, d.haStateFile = haModeOf(c.Remediation), c.Remediation.StateFile
	} else if err := d.checkHAReload(c); err != nil {
		return err
	}
	accounts, err := buildAccounts(c, d.api)
	if err != nil {
		return err
	}
	d.store.SetExclude(c.Global.ExcludeMetrics) // global.exclude_metrics, reloadable
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
	// The web config's basic auth guards the remediation controls too
	// (a reset needs some credential). Read at each control request, as
	// exporter-toolkit reads it at each request: a file that no longer
	// asks for basic auth (or cannot be read) guards nothing.
	webConfig := *d.flags.webFlagConfig.WebConfigFile
	d.engine.SetWebBasicAuth(func() bool { basic, err := webBasicAuth(webConfig); return err == nil && basic })
	// A remediation state file that cannot be opened turns remediation
	// off (and says so). At start it is a failed start, unless another
	// process holds its lock: then this one takes over when it exits.
	if err := d.engine.Configure(c.Remediation, time.Duration(c.Global.RefreshInterval), c.Providers); err != nil && !remediation.IsStateLocked(err) {
		if first {
			return fmt.Errorf("remediation.state_file: %w", err)
		}
		return fmt.Errorf("remediation.state_file: %w (%w)", err, errPartlyApplied)
	}
	return nil
}

func (d *daemon) routes(reg *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.Handle(d.flags.metricsPath, metricsOnly(collector.NewHandler(d.store, reg, d.logger)))
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
		if !d.flags.enableLifecycle {
			// As Prometheus: reloading over HTTP is opt-in; SIGHUP always works.
			http.Error(w, "Lifecycle API is not enabled: start with --web.enable-lifecycle, or send SIGHUP.", http.StatusForbidden)
			return
		}
		if err := d.reload(); err != nil {
			logConfigErrors(d.logger, reloadFailed(err), d.flags.configFile, err)
			http.Error(w, fmt.Sprintf("failed to reload config: %s", err), http.StatusInternalServerError)
			return
		}
		_, _ = w.Write([]byte("Reloaded\n"))
	})
	mux.Handle("/sd", webui.NewSDHandler(d.store))
	mux.Handle("/api/v1/accounts", webui.NewAccountsHandler(d.store, d.logger))
	// On a standby (remediation.ha) the leader answers these, through
	// this replica; without ha they answer here as before.
	fwd := d.forwarder(reg)
	control := fwd.Wrap(remediation.NewControlHandler(d.engine))
	mux.Handle("/api/v1/remediation", control)
	mux.Handle("/api/v1/remediation/", control)
	mux.Handle("/webhook/alertmanager", fwd.Wrap(d.webhook))
	if d.flags.enablePprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	mux.Handle("/", d.statusPage()) // --web.telemetry-path cannot be / (checkTelemetryPath)
	return mux
}
