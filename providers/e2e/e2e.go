// Package e2e is the client of E2E Networks' MyAccount nodes API (v1).
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/vps-exporter/vps_exporter/providers"
	"github.com/vps-exporter/vps_exporter/providers/apiclient"
)

// Type is the provider name used in config and labels.
const Type = "e2e"

// DefaultBaseURL is E2E Networks' API host.
const DefaultBaseURL = "https://api.e2enetworks.com"

const nodesPath = "/myaccount/api/v1/nodes/"

// DefaultPerPage is the page size asked of the list endpoint.
const DefaultPerPage = 100

// Options configure a Client.
type Options struct {
	Account   string
	BaseURL   *url.URL
	APIKey    string
	Token     string
	ProjectID string
	Location  string
	PerPage   int
	HTTP      apiclient.Config
}

// Client talks to one E2E Networks account (project and location).
type Client struct {
	account  string
	location string
	perPage  int
	api      *apiclient.Client
}

// New returns a Client. The API key, project and location travel in the
// query of every request, the token in the Authorization header.
func New(o Options) *Client {
	cfg := o.HTTP
	cfg.Provider, cfg.Account, cfg.BaseURL = Type, o.Account, o.BaseURL
	cfg.Header = http.Header{"Authorization": {"Bearer " + o.Token}}
	q := url.Values{"apikey": {o.APIKey}, "project_id": {o.ProjectID}}
	if o.Location != "" {
		q.Set("location", o.Location)
	}
	cfg.Query = q
	cfg.Secrets = append(cfg.Secrets, o.APIKey, o.Token)
	if o.PerPage <= 0 {
		o.PerPage = DefaultPerPage
	}
	return &Client{account: o.Account, location: o.Location, perPage: o.PerPage, api: apiclient.New(cfg)}
}

var _ providers.RateReporter = (*Client)(nil)

// Type implements providers.Provider.
func (c *Client) Type() string { return Type }

// Account implements providers.Provider.
func (c *Client) Account() string { return c.account }

// RateLimit implements providers.RateReporter.
func (c *Client) RateLimit() (perSecond float64, ok bool) { return c.api.RateLimit() }

// Throttled implements providers.RateReporter.
func (c *Client) Throttled() bool { return c.api.Throttled() }

// Node is one node as the API sends it. Numbers often arrive as strings
// with units: "memory":"15.00 GB", "disk":"60 GB", "vcpus":"2".
type Node struct {
	ID        apiclient.Str  `json:"id"`
	Name      apiclient.Str  `json:"name"`
	CreatedAt apiclient.Str  `json:"created_at"`
	PublicIP  apiclient.Str  `json:"public_ip_address"`
	PrivateIP apiclient.Str  `json:"private_ip_address"`
	Backup    apiclient.Bool `json:"backup"`
	Backups   apiclient.Bool `json:"backups"`
	Disk      apiclient.Num  `json:"disk"`
	Status    apiclient.Str  `json:"status"`
	VCPUs     apiclient.Num  `json:"vcpus"`
	Memory    apiclient.Num  `json:"memory"`
	Plan      apiclient.Str  `json:"plan"`
	Region    apiclient.Str  `json:"region"`
	Location  apiclient.Str  `json:"location"`
	Image     apiclient.Str  `json:"image"`
	OS        apiclient.Str  `json:"os"`
}

// envelope is {"code","data","errors","message","total_count","total_page_number"}.
type envelope struct {
	Code            *apiclient.Num  `json:"code"`
	Data            json.RawMessage `json:"data"`
	Errors          json.RawMessage `json:"errors"`
	Message         string          `json:"message"`
	TotalCount      *apiclient.Num  `json:"total_count"`
	TotalPageNumber *apiclient.Num  `json:"total_page_number"`
}

func decodeEnvelope(body []byte) (envelope, error) {
	var env envelope
	if err := json.Unmarshal(body, &env); err != nil {
		return env, fmt.Errorf("invalid JSON: %w", err)
	}
	if env.Code != nil && env.Code.V >= 400 {
		// A code >= 400 inside a 2xx (DESIGN.md's error envelope; the
		// API page shows only code 200): a 4xx is the API's no (401
		// and 403 match providers.ErrUnauthorized), a 5xx no usable
		// answer.
		return env, apiclient.CodeError(int(env.Code.V), apiclient.APIMessage(body))
	}
	if len(env.Data) == 0 || string(env.Data) == "null" {
		if msg := apiclient.APIMessage(body); msg != "" {
			return env, fmt.Errorf("response has no data: %s", msg)
		}
		return env, errors.New("response has no data")
	}
	return env, nil
}

// Page is one decoded page of the node list.
type Page struct {
	Nodes []Node
	// Pages is total_page_number, 0 when the API did not send it.
	Pages int
	// Total is total_count, -1 when the API did not send it.
	Total int
}

// DecodeList decodes one page of GET /myaccount/api/v1/nodes/.
func DecodeList(body []byte) (Page, error) {
	env, err := decodeEnvelope(body)
	if err != nil {
		return Page{}, err
	}
	p := Page{Total: -1}
	if string(bytes.TrimSpace(env.Data)) == "{}" {
		return p, nil // an empty fleet, as some deployments send it
	}
	if err := json.Unmarshal(env.Data, &p.Nodes); err != nil {
		return Page{}, fmt.Errorf("invalid node list: %w", err)
	}
	if env.TotalPageNumber != nil && env.TotalPageNumber.Set {
		p.Pages = int(env.TotalPageNumber.V)
	}
	if env.TotalCount != nil && env.TotalCount.Set {
		p.Total = int(env.TotalCount.V)
	}
	return p, nil
}

// DecodeNode decodes GET /myaccount/api/v1/nodes/{id}/: the envelope, or a
// bare node object.
func DecodeNode(body []byte) (Node, error) {
	env, err := decodeEnvelope(body)
	data := env.Data
	if err != nil && env.Code != nil && env.Code.V >= 400 {
		return Node{}, err // the envelope's error, not a bare node
	}
	if err != nil {
		// A bare node (no envelope) is accepted too.
		var probe struct {
			ID apiclient.Str `json:"id"`
		}
		if json.Unmarshal(body, &probe) != nil || probe.ID == "" {
			return Node{}, err
		}
		data = body
	}
	var n Node
	if err := json.Unmarshal(data, &n); err != nil {
		return Node{}, fmt.Errorf("invalid node: %w", err)
	}
	if n.ID == "" {
		return Node{}, errors.New("node has no id")
	}
	return n, nil
}

// List implements providers.Provider: page_no from 1 until
// total_page_number; without it, until a short or empty page.
func (c *Client) List(ctx context.Context) ([]providers.Server, error) {
	var out []providers.Server
	seen := map[string]bool{}
	total := -1
	for page := 1; ; page++ {
		req := apiclient.Request{
			Method: http.MethodGet, Path: nodesPath, Endpoint: "nodes_list", Idempotent: true,
			Query: url.Values{"page_no": {strconv.Itoa(page)}, "per_page": {strconv.Itoa(c.perPage)}},
		}
		if page > apiclient.MaxPages {
			return nil, c.api.NotSentf(req, "more than %d pages", apiclient.MaxPages)
		}
		status, body, err := c.api.Do(ctx, req)
		if err != nil {
			return nil, err
		}
		p, err := DecodeList(body)
		if err != nil {
			return nil, c.api.DecodeError(req, status, fmt.Errorf("page %d: %w", page, err))
		}
		if total < 0 {
			total = p.Total
		}
		fresh := 0
		for _, n := range p.Nodes {
			if n.ID == "" || seen[string(n.ID)] {
				continue
			}
			seen[string(n.ID)] = true
			out = append(out, c.convert(n))
			fresh++
		}
		switch {
		case p.Pages > 0 && page < p.Pages && fresh > 0:
			continue
		case p.Pages > 0:
		case len(p.Nodes) >= c.perPage && fresh > 0:
			continue // no page count given: a full page may have a successor
		}
		if total >= 0 && len(out) < total {
			return nil, c.api.DecodeError(req, status, fmt.Errorf("list incomplete: %d of %d nodes", len(out), total))
		}
		return out, nil
	}
}

// Get implements providers.Provider.
func (c *Client) Get(ctx context.Context, id string) (providers.Server, error) {
	n, err := apiclient.Get(ctx, c.api, nodesPath+url.PathEscape(id)+"/", "nodes_detail", DecodeNode)
	if err != nil {
		return providers.Server{}, err
	}
	return c.convert(n), nil
}

// Actions implements providers.Provider.
func (c *Client) Actions() []providers.Action {
	return []providers.Action{providers.ActionReboot, providers.ActionStart, providers.ActionStop}
}

// ReportedStates implements providers.StateReporter: the states StateOf
// maps this API's statuses to.
func (c *Client) ReportedStates() []providers.State {
	return []providers.State{
		providers.StateRunning, providers.StateStarting, providers.StateStopping, providers.StateStopped, providers.StateRebooting, providers.StateProvisioning, providers.StateSuspended, providers.StateTerminating, providers.StateUnknown,
	}
}

// actionType maps a neutral action to the API's action type.
func actionType(a providers.Action) (string, bool) {
	switch a {
	case providers.ActionReboot:
		return "reboot", true
	case providers.ActionStart:
		return "power_on", true
	case providers.ActionStop:
		return "power_off", true
	}
	return "", false
}

// Do implements providers.Provider: PUT /myaccount/api/v1/nodes/{id}/actions/
// with {"type": "reboot" | "power_on" | "power_off"}.
func (c *Client) Do(ctx context.Context, id string, a providers.Action, _ providers.ActionParams) (providers.ActionResult, error) {
	typ, ok := actionType(a)
	if !ok {
		return providers.ActionResult{}, providers.UnsupportedAction(c, a)
	}
	req := apiclient.Request{
		Method:   http.MethodPut,
		Path:     nodesPath + url.PathEscape(id) + "/actions/",
		Body:     map[string]string{"type": typ},
		Endpoint: "nodes_action",
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

// DecodeAction checks the answer to PUT /myaccount/api/v1/nodes/{id}/actions/:
// the API's envelope {"code", "data", "errors", "message"}. A code in
// 200..299 is acceptance (data may be empty, as the documented answer to
// a delete is); a 4xx code is a refusal (*apiclient.Refusal: DESIGN.md's
// error envelope, the API page shows only code 200); a 5xx code, another
// code, or a body that is not the envelope (an HTML page, nothing, junk,
// JSON without a code) is an error: answered, but not in a way that says
// what became of the action.
func DecodeAction(body []byte) error {
	var env envelope
	if err := json.Unmarshal(body, &env); err != nil {
		return fmt.Errorf("invalid action answer: %w", err)
	}
	switch {
	case env.Code == nil || !env.Code.Set:
		return errors.New("action answer has no code")
	case env.Code.V >= 400:
		return apiclient.CodeError(int(env.Code.V), apiclient.APIMessage(body))
	case env.Code.V < 200 || env.Code.V > 299:
		return fmt.Errorf("action answer has code %v", env.Code.V)
	}
	return nil
}

// StateOf maps an E2E status text (any case; '-', '_' and space alike) to
// the normalized state.
func StateOf(status string) providers.State {
	switch providers.NormalizeText(status) {
	case "running":
		return providers.StateRunning
	case "powered off", "power off":
		return providers.StateStopped
	case "create", "created", "creating", "reinstalling":
		return providers.StateProvisioning
	case "terminate", "terminating":
		return providers.StateTerminating
	case "locked":
		return providers.StateSuspended
	case "rebooting":
		return providers.StateRebooting
	case "starting", "powering on":
		return providers.StateStarting
	case "stopping", "powering off":
		return providers.StateStopping
	}
	return providers.StateUnknown
}

// bytesOf reads a size like "15.00 GB" or "512 MB"; a bare number is in
// bareUnit (the API documents memory in MB and disk in GB).
func bytesOf(n apiclient.Num, bareUnit float64) providers.Value {
	if !n.Set {
		return providers.Value{}
	}
	_, unit, err := apiclient.SplitUnit(n.Raw)
	if err != nil {
		unit = ""
	}
	var scale float64
	switch u := strings.ToUpper(unit); strings.TrimSuffix(strings.TrimSuffix(u, "IB"), "B") {
	case "":
		scale = bareUnit
		if u == "B" {
			scale = 1
		}
	case "K":
		scale = 1 << 10
	case "M":
		scale = providers.MB
	case "G":
		scale = providers.GB
	case "T":
		scale = providers.TB
	default:
		return providers.Value{}
	}
	return providers.Some(n.V * scale)
}

func (c *Client) convert(n Node) providers.Server {
	s := providers.Server{
		ID:        string(n.ID),
		Name:      string(n.Name),
		IP:        string(n.PublicIP),
		PrivateIP: string(n.PrivateIP),
		Plan:      string(n.Plan),
		Image:     string(n.Image),
		RawStatus: string(n.Status),
		State:     StateOf(string(n.Status)),
	}
	if s.IP == "" {
		s.IP = string(n.PrivateIP)
	}
	if s.Image == "" {
		s.Image = string(n.OS)
	}
	switch {
	case n.Region != "":
		s.Location = string(n.Region)
	case n.Location != "":
		s.Location = string(n.Location)
	default:
		s.Location = c.location
	}
	if n.VCPUs.Set {
		s.VCPUs = providers.Some(n.VCPUs.V)
	}
	s.MemoryBytes = bytesOf(n.Memory, providers.MB)
	s.DiskBytes = bytesOf(n.Disk, providers.GB)
	switch {
	case n.Backups.Set:
		s.BackupsEnabled = providers.Bool(n.Backups.V)
	case n.Backup.Set:
		s.BackupsEnabled = providers.Bool(n.Backup.V)
	}
	if t, ok, err := apiclient.ParseTime(string(n.CreatedAt), nil); ok && err == nil {
		s.CreatedTime = providers.Some(float64(t.Unix()))
	}
	return s
}
