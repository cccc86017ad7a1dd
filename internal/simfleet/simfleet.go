// Package simfleet starts the simulated provider APIs (providers/sim) as a
// fleet and gives the vps_exporter configuration that monitors it, as YAML
// validated by config.Parse exactly like a user's file. It is the one code
// behind vps_exporter --demo (in-process) and cmd/vps_sim (its own process).
package simfleet

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"

	"github.com/vps-exporter/vps_exporter/config"
	"github.com/vps-exporter/vps_exporter/providers/sim"
)

// Options configure a Fleet.
type Options struct {
	// Servers is the whole fleet, shared among the three APIs (Split).
	Servers int
	// Refresh is the exporter's refresh interval in the configuration
	// (global.refresh_interval); the rules' for is two of it.
	Refresh time.Duration
	// RateLimit, when positive, throttles each simulated API at this many
	// requests per second (429 with Retry-After), and each account's
	// rate_limit is 80% of it. 0: no throttling, no rate_limit.
	RateLimit float64
	// Seed makes the generated fleet reproducible.
	Seed uint64
	// ListenHost is the host the APIs listen on, each on a free port;
	// "" means 127.0.0.1 (see sim.StartOn).
	ListenHost string
	// Prefix starts the account names (<prefix>-bingo, <prefix>-vpsorg,
	// <prefix>-e2e) and is E2E's project id; "" means "sim".
	Prefix string
	// Live runs remediation for real against the simulated fleet (the
	// configuration gets dry_run: false and WebhookToken as the webhook
	// bearer token, the credential live remediation requires); otherwise
	// it runs in dry run.
	Live bool
	// WebhookToken is the remediation credential in Live (required
	// there; vps_exporter --demo uses the fixed, documented token
	// "demo"); unused otherwise.
	WebhookToken string
	// Replicas, when above 1, gives each of that many exporter replicas
	// its own credentials on every API (labelled ReplicaLabel(i) in the
	// action records), for WriteReplicaConfigs.
	Replicas int
	// ActionsLog, when set, receives one JSON line (sim.ActionLine) per
	// provider action call the simulated APIs answer.
	ActionsLog io.Writer
}

// settle is how long a simulated action's transitional state lasts
// (rebooting, then running).
const settle = 30 * time.Second

// accountShare is each account's rate_limit as a share of the simulated
// APIs' throttle: a margin below it, as an operator would configure.
const accountShare = 0.8

// Fleet is the simulated APIs, running.
type Fleet struct {
	// Sim is the simulated fleet: its machines, requests and actions.
	Sim  *sim.Sim
	opts Options
	// creds are made up for this run.
	creds map[sim.API]sim.Credentials
	srv   *sim.Servers
	// webhookToken is the remediation credential in Live; "" otherwise.
	webhookToken string
	// replicas are each replica's credentials (Options.Replicas).
	replicas []map[sim.API]sim.Credentials
	alog     *sim.ActionLog
}

// Endpoint is one simulated API as the configuration monitors it.
type Endpoint struct {
	API sim.API
	// Account is the account's name in the configuration.
	Account string
	// URL is the API's base URL (no credential: E2E's key goes in the
	// query of each request, not here).
	URL string
	// Servers is the size of the API's fleet.
	Servers int
}

// Split divides a fleet of n servers among the three simulated APIs, the
// first ones taking one more when n is not a multiple of three.
func Split(n int) map[sim.API]int {
	out := map[sim.API]int{}
	for i, api := range sim.APIs() {
		out[api] = n / 3
		if i < n%3 {
			out[api]++
		}
	}
	return out
}

// Start generates the fleet and serves the three APIs, each on a free port
// of o.ListenHost, until ctx ends or Shutdown is called. The credentials
// are made up for this run.
func Start(ctx context.Context, o Options) (*Fleet, error) {
	switch {
	case o.Servers < 1:
		return nil, fmt.Errorf("simulated fleet: servers must be at least 1, got %d", o.Servers)
	case o.Refresh <= 0:
		return nil, fmt.Errorf("simulated fleet: refresh interval must be positive, got %s", o.Refresh)
	case !(o.RateLimit >= 0):
		return nil, fmt.Errorf("simulated fleet: rate limit must not be negative, got %v", o.RateLimit)
	case o.Live && o.WebhookToken == "":
		return nil, errors.New("simulated fleet: live remediation needs a webhook token")
	case o.Replicas < 0 || o.Replicas > MaxReplicas:
		return nil, fmt.Errorf("simulated fleet: replicas must be between 0 and %d, got %d", MaxReplicas, o.Replicas)
	}
	if o.ListenHost == "" {
		o.ListenHost = "127.0.0.1"
	}
	if o.Prefix == "" {
		o.Prefix = "sim"
	}
	creds := map[sim.API]sim.Credentials{
		sim.VPNBingo: {Token: randomHex()},
		sim.VPSOrg:   {Token: randomHex()},
		sim.E2E:      {Token: randomHex(), APIKey: randomHex(), ProjectID: o.Prefix},
	}
	so := sim.Options{PerAPI: Split(o.Servers), Seed: o.Seed, Credentials: creds, Settle: settle}
	replicas := replicaCredentials(o, &so)
	var alog *sim.ActionLog
	if o.ActionsLog != nil {
		accounts := map[sim.API]string{}
		for _, api := range sim.APIs() {
			accounts[api] = accountName(o.Prefix, api)
		}
		alog = sim.NewActionLog(o.ActionsLog, accounts)
		so.OnAction = alog.Record
	}
	s := sim.New(so)
	makeSick(s)
	if o.RateLimit > 0 {
		for _, api := range sim.APIs() {
			s.SetThrottle(api, o.RateLimit, max(1, int(o.RateLimit)))
		}
	}
	srv, err := s.StartOn(ctx, o.ListenHost)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("start simulated APIs on %s: %w", o.ListenHost, err)
	}
	f := &Fleet{Sim: s, opts: o, creds: creds, srv: srv, replicas: replicas, alog: alog}
	if o.Live {
		f.webhookToken = o.WebhookToken
	}
	return f, nil
}

// Shutdown stops the APIs: the requests under way finish unless ctx ends
// first.
func (f *Fleet) Shutdown(ctx context.Context) error {
	defer f.Sim.Close()
	return f.srv.Shutdown(ctx)
}

// Endpoints lists the APIs in the order of the configuration's accounts.
func (f *Fleet) Endpoints() []Endpoint {
	split := Split(f.opts.Servers)
	out := make([]Endpoint, 0, len(sim.APIs()))
	for _, api := range sim.APIs() {
		out = append(out, Endpoint{API: api, Account: accountName(f.opts.Prefix, api), URL: f.srv.URL[api], Servers: split[api]})
	}
	return out
}

func accountName(prefix string, api sim.API) string {
	switch api {
	case sim.VPNBingo:
		return prefix + "-bingo"
	case sim.VPSOrg:
		return prefix + "-vpsorg"
	}
	return prefix + "-e2e"
}

// ConfigYAML is the vps_exporter configuration that monitors the fleet,
// with its credentials inline: every account, the refresh interval, the
// rate limits, and remediation enabled in dry run with Rules, its state
// in stateFile and the Alertmanager webhook on.
func (f *Fleet) ConfigYAML(stateFile string) ([]byte, error) {
	return render(f.opts, f.srv.URL, f.creds, f.webhookToken, stateFile)
}

// Config is ConfigYAML parsed and validated by config.Parse, as the
// exporter loads a user's file (validation sets the defaults).
func (f *Fleet) Config(stateFile string) (*config.Config, error) {
	b, err := f.ConfigYAML(stateFile)
	if err != nil {
		return nil, err
	}
	c, err := config.Parse(b, filepath.Dir(stateFile))
	if err != nil {
		return nil, fmt.Errorf("simulated fleet configuration: %w", err)
	}
	return c, nil
}

// Marker starts the first line of every file WriteConfig writes; it
// overwrites no other file.
const Marker = "# Written by vps_sim"

// StateFileFor is the remediation state file beside a configuration
// written at path: its name without the extension, then .state.db.
func StateFileFor(path string) string {
	return strings.TrimSuffix(path, filepath.Ext(path)) + ".state.db"
}

// WriteConfig writes the configuration that monitors the fleet to path
// (mode 0600: it holds the credentials), with the remediation state file
// beside it (StateFileFor, absolute so that the exporter can run from any
// directory), and returns it as the exporter will load it. It replaces the
// file in one step (a reader never sees half of it) and refuses to
// replace a file it did not write (see Marker).
func (f *Fleet) WriteConfig(path string) (*config.Config, error) {
	return f.writeConfigWith(path, f.creds)
}

// writeConfigWith is WriteConfig with the credentials creds.
func (f *Fleet) writeConfigWith(path string, creds map[sim.API]sim.Credentials) (*config.Config, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	if err := ours(abs); err != nil {
		return nil, err
	}
	body, err := render(f.opts, f.srv.URL, creds, f.webhookToken, StateFileFor(abs))
	if err != nil {
		return nil, err
	}
	c, err := config.Parse(body, filepath.Dir(abs))
	if err != nil {
		return nil, fmt.Errorf("simulated fleet configuration: %w", err)
	}
	header := fmt.Sprintf("%s: a vps_exporter configuration that monitors its simulated fleet\n"+
		"# (%d servers, seed %d). The credentials are made up for this run: the ports and\n"+
		"# credentials change with every run of vps_sim, which rewrites this file.\n"+
		"#   vps_exporter --config.file=%s\n", Marker, f.opts.Servers, f.opts.Seed, abs)
	if err := writeAtomic(abs, append([]byte(header), body...)); err != nil {
		return nil, err
	}
	return c, nil
}

// ours refuses a file that exists and was not written by WriteConfig.
func ours(path string) error {
	fh, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	defer fh.Close()
	if st, err := fh.Stat(); err == nil && !st.Mode().IsRegular() {
		return fmt.Errorf("config file %s exists and is not a regular file", path)
	}
	head := make([]byte, len(Marker))
	if _, err := io.ReadFull(fh, head); err != nil || string(head) != Marker {
		return fmt.Errorf("config file %s exists and was not written by vps_sim; not replacing it (remove it or choose another file)", path)
	}
	return nil
}

// writeAtomic writes data to a new file beside path and renames it there.
func writeAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write config file: %w", err)
	}
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("write config file %s: %w", path, err)
	}
	return nil
}

// The file's shape: only what the simulated fleet sets, so that the
// exporter's defaults fill the rest as they do for a user's file.
type (
	file struct {
		Global      fileGlobal      `yaml:"global"`
		Providers   []fileProvider  `yaml:"providers"`
		Remediation fileRemediation `yaml:"remediation"`
	}
	fileGlobal struct {
		RefreshInterval model.Duration `yaml:"refresh_interval"`
	}
	fileProvider struct {
		Type      string  `yaml:"type"`
		Name      string  `yaml:"name"`
		BaseURL   string  `yaml:"base_url"`
		Token     string  `yaml:"token"`
		APIKey    string  `yaml:"api_key,omitempty"`
		ProjectID string  `yaml:"project_id,omitempty"`
		Location  string  `yaml:"location,omitempty"`
		RateLimit float64 `yaml:"rate_limit,omitempty"`
	}
	fileRemediation struct {
		Enabled           bool          `yaml:"enabled"`
		DryRun            bool          `yaml:"dry_run"`
		MaxActionsPerHour int           `yaml:"max_actions_per_hour"`
		MaxFleetFraction  float64       `yaml:"max_fleet_fraction"`
		StateFile         string        `yaml:"state_file"`
		Rules             []config.Rule `yaml:"rules"`
		Webhook           fileWebhook   `yaml:"webhook"`
	}
	fileWebhook struct {
		Enabled     bool                `yaml:"enabled"`
		BearerToken string              `yaml:"bearer_token,omitempty"`
		Verify      model.Duration      `yaml:"verify"`
		Escalate    map[string][]string `yaml:"escalate"`
	}
)

// render is the configuration as YAML; it depends on nothing but its
// arguments.
func render(o Options, urls map[sim.API]string, creds map[sim.API]sim.Credentials, webhookToken, stateFile string) ([]byte, error) {
	doc := file{
		Global: fileGlobal{RefreshInterval: model.Duration(o.Refresh)},
		Remediation: fileRemediation{
			Enabled: true, DryRun: !o.Live, StateFile: stateFile,
			MaxActionsPerHour: maxActionsPerHour, MaxFleetFraction: maxFleetFraction,
			Rules: Rules(o.Refresh),
			Webhook: fileWebhook{Enabled: true, BearerToken: webhookToken,
				Verify: model.Duration(webhookVerify), Escalate: map[string][]string{"reboot": {"power_cycle"}}},
		},
	}
	for _, api := range sim.APIs() {
		p := fileProvider{Name: accountName(o.Prefix, api), BaseURL: urls[api], Token: creds[api].Token, RateLimit: accountRate(o.RateLimit)}
		switch api {
		case sim.VPNBingo:
			p.Type = config.TypeVPNBingo
		case sim.VPSOrg:
			p.Type = config.TypeVPSOrg
		case sim.E2E:
			p.Type, p.APIKey, p.ProjectID, p.Location = config.TypeE2E, creds[api].APIKey, creds[api].ProjectID, "Delhi"
		}
		doc.Providers = append(doc.Providers, p)
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, fmt.Errorf("render simulated fleet configuration: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("render simulated fleet configuration: %w", err)
	}
	return buf.Bytes(), nil
}

// accountRate is each account's rate_limit for the APIs' throttle: 80% of
// it, rounded to a millionth so that the file shows 2.4, not
// 2.4000000000000004.
func accountRate(throttle float64) float64 {
	return math.Round(accountShare*throttle*1e6) / 1e6
}

func randomHex() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
