// Command vps_sim serves the simulated VPN.bingo, VPS.org and E2E Networks
// APIs (the fleet of vps_exporter --demo) as its own process, and writes
// a vps_exporter configuration that monitors them: develop dashboards and
// alert rules against a fake fleet, load-test Prometheus, try remediation
// rules, or measure the exporter without the simulator in its process.
//
//	vps_sim --servers=1000 --config-out=sim.yml
//	vps_exporter --config.file=sim.yml
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/common/version"

	"github.com/vps-exporter/vps_exporter/config"
	"github.com/vps-exporter/vps_exporter/internal/logging"
	"github.com/vps-exporter/vps_exporter/internal/simfleet"
)

const program = "vps_sim"

// maxServers bounds --servers: the simulated fleet lives in memory (about
// 1 KiB a server), and a typo of a few zeros should be an error, not an
// out-of-memory kill.
const maxServers = 1_000_000

// shutdownBudget bounds the stop after SIGTERM or SIGINT: the requests
// under way get this long to finish, then the connections are closed.
const shutdownBudget = 5 * time.Second

func main() { os.Exit(run(os.Args[1:], os.Stderr)) }

// flags are the command line.
type flags struct {
	servers    int
	configOut  string
	refresh    time.Duration
	rate       float64
	seed       uint64
	listenHost string
	logLevel   string
	logFormat  string
	actionsLog string
	replicas   int
}

func parseFlags(args []string) (*flags, error) {
	app := kingpin.New(program, "Simulated VPN.bingo, VPS.org and E2E Networks APIs, with a vps_exporter configuration that monitors them.")
	f := &flags{}
	app.Flag("servers", fmt.Sprintf("Size of the simulated fleet, shared among the three providers (at most %d).", maxServers)).Default("150").IntVar(&f.servers)
	app.Flag("config-out", "Where to write the vps_exporter configuration that monitors the simulated APIs (mode 0600: it holds the made-up credentials). A file there that vps_sim did not write is not replaced.").Required().StringVar(&f.configOut)
	app.Flag("refresh-interval", "The exporter's refresh interval in the configuration.").Default("60s").DurationVar(&f.refresh)
	app.Flag("rate-limit", "Throttle each simulated API at this many requests per second (429 with Retry-After), and set each account's rate_limit to 80% of it; 0: no throttling.").Default("0").Float64Var(&f.rate)
	app.Flag("seed", "Seed of the generated fleet: the same seed and size give the same servers.").Default("1").Uint64Var(&f.seed)
	app.Flag("listen-host", "Host the APIs listen on, each on a free port; the configuration's URLs name it (0.0.0.0 or :: listen everywhere, and the URLs name 127.0.0.1).").Default("127.0.0.1").StringVar(&f.listenHost)
	app.Flag("actions-log", "Append one JSON line per provider action call received to this file (time, api, account, id, action, status, and the client: the label of the credential that called, never the credential).").StringVar(&f.actionsLog)
	app.Flag("replicas", fmt.Sprintf("Give each of this many exporter replicas its own credentials (labelled replica-1...) and write one configuration per replica, --config-out with .replica-N before its extension (at most %d); 1: one configuration at --config-out.", simfleet.MaxReplicas)).Default("1").IntVar(&f.replicas)
	app.Flag("log.level", "Only log messages with the given severity or above. One of: [debug, info, warn, error]").Default("info").EnumVar(&f.logLevel, "debug", "info", "warn", "error")
	app.Flag("log.format", "Output format of log messages. One of: [logfmt, json]").Default("logfmt").EnumVar(&f.logFormat, "logfmt", "json")
	app.Version(version.Print(program))
	app.HelpFlag.Short('h')
	if _, err := app.Parse(args); err != nil {
		return nil, err
	}
	switch {
	case f.servers < 1 || f.servers > maxServers:
		return nil, fmt.Errorf("--servers must be between 1 and %d, got %d", maxServers, f.servers)
	case f.refresh <= 0:
		return nil, fmt.Errorf("--refresh-interval must be positive, got %s", f.refresh)
	case !(f.rate >= 0):
		return nil, fmt.Errorf("--rate-limit must not be negative, got %v", f.rate)
	case f.configOut == "":
		return nil, fmt.Errorf("--config-out must name a file")
	case f.replicas < 1 || f.replicas > simfleet.MaxReplicas:
		return nil, fmt.Errorf("--replicas must be between 1 and %d, got %d", simfleet.MaxReplicas, f.replicas)
	}
	// Before any API starts: a directory that is not there is the
	// user's typo, said in the user's terms.
	dir := filepath.Dir(f.configOut)
	switch fi, err := os.Stat(dir); {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("--config-out %q: directory %q does not exist", f.configOut, dir)
	case err != nil:
		return nil, fmt.Errorf("--config-out %q: %w", f.configOut, err)
	case !fi.IsDir():
		return nil, fmt.Errorf("--config-out %q: %q is not a directory", f.configOut, dir)
	}
	return f, nil
}

// newLogger returns the project's logger (internal/logging).
func newLogger(f *flags, w io.Writer) log.Logger {
	l, _ := logging.New(f.logFormat, f.logLevel, w)
	return l
}

func run(args []string, stderr io.Writer) int {
	f, err := parseFlags(args)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", program, err)
		return 2
	}
	logger := newLogger(f, stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return serve(ctx, f, logger)
}

// serve starts the simulated APIs, writes the configuration and serves
// until ctx ends (a signal), then stops within shutdownBudget.
func serve(ctx context.Context, f *flags, logger log.Logger) int {
	level.Info(logger).Log("msg", "starting "+program, "version", version.Info(), "build_context", version.BuildContext())
	// The APIs' own context ends after the bounded shutdown below, not
	// with the signal: the requests under way get to finish.
	life, cancel := context.WithCancel(context.Background())
	defer cancel()
	opts := simfleet.Options{
		Servers: f.servers, Refresh: f.refresh, RateLimit: f.rate, Seed: f.seed, ListenHost: f.listenHost, Replicas: f.replicas,
	}
	if f.actionsLog != "" {
		// Each line is one write: a reader (or a kill) never splits one.
		alog, err := os.OpenFile(f.actionsLog, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			level.Error(logger).Log("msg", "cannot open the actions log", "err", err)
			return 1
		}
		defer alog.Close()
		opts.ActionsLog = alog
	}
	fleet, err := simfleet.Start(life, opts)
	if err != nil {
		level.Error(logger).Log("msg", "cannot start the simulated APIs", "err", err)
		return 1
	}
	stopFleet := func() bool {
		sctx, scancel := context.WithTimeout(context.Background(), shutdownBudget)
		defer scancel()
		if err := fleet.Shutdown(sctx); err != nil {
			level.Warn(logger).Log("msg", "requests still under way at the end of the shutdown budget; closed them", "budget", shutdownBudget, "err", err)
			return false
		}
		return true
	}
	for _, ep := range fleet.Endpoints() {
		// The URL only: the credentials are in the configuration file.
		level.Info(logger).Log("msg", "simulated API listening", "api", ep.API, "account", ep.Account, "url", ep.URL, "servers", ep.Servers)
	}
	if !writeConfigs(fleet, f, logger) {
		stopFleet()
		return 1
	}
	level.Info(logger).Log("msg", "serving until SIGTERM or SIGINT", "servers", f.servers, "seed", f.seed)
	<-ctx.Done()
	level.Info(logger).Log("msg", "shutting down")
	if !stopFleet() {
		return 1
	}
	if err := fleet.ActionsLogErr(); err != nil {
		level.Error(logger).Log("msg", "the actions log is incomplete", "file", f.actionsLog, "err", err)
		return 1
	}
	return 0
}

// writeConfigs writes the exporter's configuration, or one per replica
// (--replicas), and logs where; false when it cannot.
func writeConfigs(fleet *simfleet.Fleet, f *flags, logger log.Logger) bool {
	paths := []string{f.configOut}
	if f.replicas > 1 {
		var err error
		if paths, err = fleet.WriteReplicaConfigs(f.configOut); err != nil {
			level.Error(logger).Log("msg", "cannot write the replicas' configurations", "err", err)
			return false
		}
	} else if _, err := fleet.WriteConfig(f.configOut); err != nil {
		level.Error(logger).Log("msg", "cannot write the exporter configuration", "err", err)
		return false
	}
	for i, p := range paths {
		c, err := config.Load(p)
		if err != nil {
			level.Error(logger).Log("msg", "the configuration written does not load", "file", p, "err", err)
			return false
		}
		kv := []any{"msg", "wrote the exporter configuration", "file", p, "accounts", len(c.Providers),
			"refresh_interval", c.Global.RefreshInterval, "api_rate_limit", f.rate, "remediation", "dry_run", "state_file", c.Remediation.StateFile,
			"run", "vps_exporter --config.file=" + p}
		if f.replicas > 1 {
			kv = append(kv, "client", simfleet.ReplicaLabel(i+1))
		}
		level.Info(logger).Log(kv...)
	}
	return true
}
