// Package vpsorg is the client of VPS.org's servers API (v1).
package vpsorg

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/vps-exporter/vps_exporter/providers"
	"github.com/vps-exporter/vps_exporter/providers/apiclient"
)

// Type is the provider name used in config and labels.
const Type = "vpsorg"

// DefaultBaseURL is VPS.org's API host.
const DefaultBaseURL = "https://admin.vps.org"

const serversPath = "/api/v1/servers/"

// Options configure a Client.
type Options struct {
	Account string
	BaseURL *url.URL
	Token   string
	// MaxConcurrency bounds the detail requests in flight; 0 means 8.
	MaxConcurrency int
	HTTP           apiclient.Config
}

// Client talks to one VPS.org account.
type Client struct {
	account     string
	concurrency int
	api         *apiclient.Client
}

// New returns a Client.
func New(o Options) *Client {
	cfg := o.HTTP
	cfg.Provider, cfg.Account, cfg.BaseURL = Type, o.Account, o.BaseURL
	cfg.Header = http.Header{"Authorization": {"Bearer " + o.Token}}
	cfg.Secrets = append(cfg.Secrets, o.Token)
	if o.MaxConcurrency <= 0 {
		o.MaxConcurrency = 8
	}
	return &Client{account: o.Account, concurrency: o.MaxConcurrency, api: apiclient.New(cfg)}
}

var (
	_ providers.Detailer     = (*Client)(nil)
	_ providers.RateReporter = (*Client)(nil)
)

// Type implements providers.Provider.
func (c *Client) Type() string { return Type }

// Account implements providers.Provider.
func (c *Client) Account() string { return c.account }

// RateLimit implements providers.RateReporter.
func (c *Client) RateLimit() (perSecond float64, ok bool) { return c.api.RateLimit() }

// Throttled implements providers.RateReporter.
func (c *Client) Throttled() bool { return c.api.Throttled() }

// Server is one server as the API sends it. The list omits ipv6_address,
// plan.bandwidth and resource_usage; the detail call has them.
type Server struct {
	ID        apiclient.Str `json:"id"`
	Name      apiclient.Str `json:"name"`
	Hostname  apiclient.Str `json:"hostname"`
	Status    apiclient.Str `json:"status"`
	IPAddress apiclient.Str `json:"ip_address"`
	IPv6      apiclient.Str `json:"ipv6_address"`
	Location  apiclient.Str `json:"location"`
	Plan      *struct {
		ID        apiclient.Str `json:"id"`
		Name      apiclient.Str `json:"name"`
		VCPUs     apiclient.Num `json:"vcpus"`
		Memory    apiclient.Num `json:"memory"`    // MB
		Storage   apiclient.Num `json:"storage"`   // GB
		Bandwidth apiclient.Num `json:"bandwidth"` // GB per month
	} `json:"plan"`
	OS *struct {
		ID   apiclient.Str `json:"id"`
		Name apiclient.Str `json:"name"`
	} `json:"os"`
	BackupsEnabled apiclient.Bool `json:"backups_enabled"`
	ResourceUsage  *struct {
		CPUPercent    apiclient.Num `json:"cpu_percent"`
		MemoryUsed    apiclient.Num `json:"memory_used"`    // MB
		DiskUsed      apiclient.Num `json:"disk_used"`      // GB
		BandwidthUsed apiclient.Num `json:"bandwidth_used"` // GB
	} `json:"resource_usage"`
	CreatedAt apiclient.Str `json:"created_at"`
	UpdatedAt apiclient.Str `json:"updated_at"`
}

type listPage struct {
	Count   int      `json:"count"`
	Next    *string  `json:"next"`
	Results []Server `json:"results"`
}

// DecodeList decodes one page of GET /api/v1/servers/.
func DecodeList(body []byte) (apiclient.DRFPage[Server], error) {
	var p listPage
	if err := json.Unmarshal(body, &p); err != nil {
		return apiclient.DRFPage[Server]{}, fmt.Errorf("invalid server list: %w", err)
	}
	if p.Results == nil {
		return apiclient.DRFPage[Server]{}, errors.New("server list has no results")
	}
	out := apiclient.DRFPage[Server]{Count: p.Count, Results: p.Results}
	if p.Next != nil {
		out.Next = *p.Next
	}
	return out, nil
}

// DecodeServer decodes GET /api/v1/servers/{id}/.
func DecodeServer(body []byte) (Server, error) {
	var s Server
	if err := json.Unmarshal(body, &s); err != nil {
		return Server{}, fmt.Errorf("invalid server: %w", err)
	}
	if s.ID == "" {
		return Server{}, errors.New("server has no id")
	}
	return s, nil
}

// actionAnswer is the documented answer to reboot, start and stop:
// {"status": "success", "message": "Server is rebooting", "server": {...}}.
type actionAnswer struct {
	Status  *string       `json:"status"`
	Message apiclient.Str `json:"message"`
}

// DecodeAction checks the answer to POST /api/v1/servers/{id}/{action}/:
// "status": "success" is the documented acceptance. The API page
// documents its refusals as HTTP 400 and 404 only (apiclient makes them
// Refused); so anything else in a 2xx (another status, such as "queued"
// or "error", an HTML page, nothing, junk, JSON without a status) is an
// error that is no refusal: the request was answered, but not in a way
// that says what became of it (the server may be rebooting).
func DecodeAction(body []byte) error {
	var a actionAnswer
	if err := json.Unmarshal(body, &a); err != nil {
		return fmt.Errorf("invalid action answer: %w", err)
	}
	if a.Status == nil {
		return errors.New("action answer has no status")
	}
	if !strings.EqualFold(strings.TrimSpace(*a.Status), "success") {
		msg := fmt.Sprintf("action answer has status %.40q, not the documented \"success\"", *a.Status)
		if m := strings.TrimSpace(string(a.Message)); m != "" {
			msg += ": " + m
		}
		return errors.New(msg)
	}
	return nil
}

// List implements providers.Provider: all pages of the list, then each
// server's detail (resource usage, transfer quota) with bounded concurrency.
// A server deleted between list and detail (404) keeps its list data.
func (c *Client) List(ctx context.Context) ([]providers.Server, error) {
	type item struct {
		i int
		s Server
	}
	var (
		mu  sync.Mutex
		out []providers.Server // in list order
	)
	items := make(chan item, 256)
	g, gctx := errgroup.WithContext(ctx)
	// The pages are read ahead by one goroutine while max_concurrency
	// workers fetch details, so no detail slot waits on a page boundary.
	g.Go(func() error {
		defer close(items)
		return apiclient.WalkDRF(gctx, c.api, serversPath, "servers_list", func(s Server) string { return string(s.ID) }, DecodeList, func(page []Server) error {
			for _, s := range page {
				if s.ID == "" {
					continue
				}
				mu.Lock()
				i := len(out)
				out = append(out, providers.Server{})
				mu.Unlock()
				select {
				case items <- item{i, s}:
				case <-gctx.Done():
					return gctx.Err()
				}
			}
			return nil
		})
	})
	for w := 0; w < c.concurrency; w++ {
		g.Go(func() error {
			for it := range items {
				d, err := c.detail(gctx, string(it.s.ID))
				switch {
				case errors.Is(err, providers.ErrNotFound):
					d = it.s
				case err != nil:
					return err
				}
				conv := convert(d)
				mu.Lock()
				out[it.i] = conv
				mu.Unlock()
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return out, nil
}

func (c *Client) detail(ctx context.Context, id string) (Server, error) {
	return c.getServer(ctx, id, false)
}

func (c *Client) getServer(ctx context.Context, id string, background bool) (Server, error) {
	return apiclient.GetRequest(ctx, c.api, apiclient.Request{
		Method: http.MethodGet, Path: serversPath + url.PathEscape(id) + "/",
		Endpoint: "servers_detail", Idempotent: true, Background: background,
	}, DecodeServer)
}

// ListSummary implements providers.Detailer: the list pages only, up to
// max_concurrency pages at a time when the API pages by number.
func (c *Client) ListSummary(ctx context.Context) ([]providers.Server, error) {
	list, err := apiclient.ListDRFParallel(ctx, c.api, serversPath, "servers_list", func(s Server) string { return string(s.ID) }, DecodeList, c.concurrency)
	if err != nil {
		return nil, err
	}
	out := make([]providers.Server, 0, len(list))
	for _, s := range list {
		if s.ID != "" {
			out = append(out, convert(s))
		}
	}
	return out, nil
}

// Detail implements providers.Detailer: GET /api/v1/servers/{id}/ at
// background priority.
func (c *Client) Detail(ctx context.Context, id string) (providers.Server, error) {
	s, err := c.getServer(ctx, id, true)
	if err != nil {
		return providers.Server{}, err
	}
	return convert(s), nil
}

// MergeDetail implements providers.Detailer. State, name, address, plan
// and image come from the list, which is read every interval; the fields
// the list lacks (the API documents them on the detail only) from detail.
// A plan field the list omitted is taken from the detail too.
func (c *Client) MergeDetail(list, detail providers.Server) providers.Server {
	out := list
	out.TransferLimitBytes = detail.TransferLimitBytes
	out.CPUUsageRatio = detail.CPUUsageRatio
	out.MemoryUsedBytes = detail.MemoryUsedBytes
	out.DiskUsedBytes = detail.DiskUsedBytes
	out.TransferUsedBytes = detail.TransferUsedBytes
	out.BackupsEnabled = detail.BackupsEnabled
	out.IPv6 = detail.IPv6
	for _, f := range []struct{ dst, src *providers.Value }{
		{&out.VCPUs, &detail.VCPUs}, {&out.MemoryBytes, &detail.MemoryBytes}, {&out.DiskBytes, &detail.DiskBytes},
	} {
		if !f.dst.OK {
			*f.dst = *f.src
		}
	}
	return out
}

// Get implements providers.Provider.
func (c *Client) Get(ctx context.Context, id string) (providers.Server, error) {
	s, err := c.detail(ctx, id)
	if err != nil {
		return providers.Server{}, err
	}
	return convert(s), nil
}

// Actions implements providers.Provider.
func (c *Client) Actions() []providers.Action {
	return []providers.Action{providers.ActionReboot, providers.ActionStart, providers.ActionStop}
}

// ReportedStates implements providers.StateReporter: the states StateOf
// maps this API's statuses to.
func (c *Client) ReportedStates() []providers.State {
	return []providers.State{
		providers.StateRunning, providers.StateStarting, providers.StateStopping, providers.StateStopped, providers.StateRebooting, providers.StateProvisioning, providers.StateSuspended, providers.StateUnknown,
	}
}

// Do implements providers.Provider: POST /api/v1/servers/{id}/{reboot,start,stop}/.
func (c *Client) Do(ctx context.Context, id string, a providers.Action, _ providers.ActionParams) (providers.ActionResult, error) {
	switch a {
	case providers.ActionReboot, providers.ActionStart, providers.ActionStop:
	default:
		return providers.ActionResult{}, providers.UnsupportedAction(c, a)
	}
	req := apiclient.Request{
		Method:   http.MethodPost,
		Path:     serversPath + url.PathEscape(id) + "/" + string(a) + "/",
		Endpoint: "servers_" + string(a),
	}
	status, body, err := c.api.Do(ctx, req)
	resp := strings.TrimSpace(c.api.Redact(string(body)))
	if len(resp) > 500 {
		resp = resp[:500] + "..."
	}
	if err != nil {
		return providers.ActionResult{Response: resp}, err
	}
	if err := DecodeAction(body); err != nil {
		return providers.ActionResult{Response: resp}, c.api.DecodeError(req, status, err)
	}
	return providers.ActionResult{Response: resp}, nil
}

// StateOf maps a VPS.org status string to the normalized state.
func StateOf(status string) providers.State {
	switch providers.NormalizeText(status) {
	case "active":
		return providers.StateRunning
	case "stopped":
		return providers.StateStopped
	case "suspended":
		return providers.StateSuspended
	case "provisioning":
		return providers.StateProvisioning
	case "starting":
		return providers.StateStarting
	case "stopping":
		return providers.StateStopping
	case "rebooting":
		return providers.StateRebooting
	}
	return providers.StateUnknown
}

func convert(s Server) providers.Server {
	out := providers.Server{
		ID:        string(s.ID),
		Name:      string(s.Name),
		Hostname:  string(s.Hostname),
		IP:        string(s.IPAddress),
		IPv6:      string(s.IPv6),
		Location:  string(s.Location),
		RawStatus: string(s.Status),
		State:     StateOf(string(s.Status)),
	}
	if s.Plan != nil {
		out.Plan = string(s.Plan.Name)
		out.VCPUs = num(s.Plan.VCPUs, 1)
		out.MemoryBytes = num(s.Plan.Memory, providers.MB)
		out.DiskBytes = num(s.Plan.Storage, providers.GB)
		out.TransferLimitBytes = num(s.Plan.Bandwidth, providers.GB)
	}
	if s.OS != nil {
		out.Image = string(s.OS.Name)
	}
	if s.BackupsEnabled.Set {
		out.BackupsEnabled = providers.Bool(s.BackupsEnabled.V)
	}
	if u := s.ResourceUsage; u != nil {
		if u.CPUPercent.Set {
			out.CPUUsageRatio = providers.Some(u.CPUPercent.V / 100)
		}
		out.MemoryUsedBytes = num(u.MemoryUsed, providers.MB)
		out.DiskUsedBytes = num(u.DiskUsed, providers.GB)
		out.TransferUsedBytes = num(u.BandwidthUsed, providers.GB)
	}
	if t, ok, err := apiclient.ParseTime(string(s.CreatedAt), nil); ok && err == nil {
		out.CreatedTime = providers.Some(float64(t.Unix()))
	}
	return out
}

func num(n apiclient.Num, scale float64) providers.Value {
	if !n.Set {
		return providers.Value{}
	}
	return providers.Some(n.V * scale)
}
