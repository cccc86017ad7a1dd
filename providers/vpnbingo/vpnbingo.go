// Package vpnbingo is the client of VPN.bingo's nodes API (v2).
package vpnbingo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/vps-exporter/vps_exporter/providers"
	"github.com/vps-exporter/vps_exporter/providers/apiclient"
)

// Type is the provider name used in config and labels.
const Type = "vpnbingo"

// DefaultBaseURL is VPN.bingo's API host.
const DefaultBaseURL = "https://my.vpn.bingo"

const nodesPath = "/api/v2/nodes/"

// Status codes the API documents.
const (
	StatusPreparing        = -10
	StatusDeployed         = 9
	StatusAwaitHeartbeat   = 10
	StatusHeartbeatAbnorml = 18
	StatusReady            = 19
	StatusPendingRelease   = 20
)

// Options configure a Client.
type Options struct {
	Account  string
	BaseURL  *url.URL
	Token    string
	Location *time.Location // times have no zone; nil means UTC
	HTTP     apiclient.Config
}

// Client talks to one VPN.bingo account.
type Client struct {
	account string
	loc     *time.Location
	api     *apiclient.Client
}

// New returns a Client.
func New(o Options) *Client {
	cfg := o.HTTP
	cfg.Provider, cfg.Account, cfg.BaseURL = Type, o.Account, o.BaseURL
	cfg.Header = http.Header{"Authorization": {"Bearer " + o.Token}}
	cfg.Secrets = append(cfg.Secrets, o.Token)
	loc := o.Location
	if loc == nil {
		loc = time.UTC
	}
	return &Client{account: o.Account, loc: loc, api: apiclient.New(cfg)}
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

// Node is one node as the API sends it.
type Node struct {
	ID             apiclient.Str  `json:"id"`
	Name           apiclient.Str  `json:"name"`
	Country        apiclient.Str  `json:"country"`
	CountryDisplay apiclient.Str  `json:"country_display"`
	IP             apiclient.Str  `json:"ip"`
	Host           apiclient.Str  `json:"host"`
	Port           apiclient.Num  `json:"port"`
	InstanceID     apiclient.Str  `json:"instance_id"`
	Bandwidth      apiclient.Num  `json:"bandwidth"`
	BandwidthUsedM apiclient.Num  `json:"bandwidth_used_m"`
	Status         apiclient.Num  `json:"status"`
	StatusDisplay  apiclient.Str  `json:"status_display"`
	CanRedeploy    apiclient.Bool `json:"can_redeploy"`
	ExpireTime     apiclient.Str  `json:"expire_time"`
	StatusUpdate   apiclient.Str  `json:"status_update_time"`
	CreateTime     apiclient.Str  `json:"create_time"`
}

// envelope is the API's wrapper: {"success","data","error"}.
type envelope struct {
	Success *bool           `json:"success"`
	Data    json.RawMessage `json:"data"`
	Error   json.RawMessage `json:"error"`
}

type listData struct {
	Count   int    `json:"count"`
	Next    string `json:"next"`
	Results []Node `json:"results"`
}

// unwrap returns the data of a successful envelope.
func unwrap(body []byte) (json.RawMessage, error) {
	var env envelope
	if err := json.Unmarshal(body, &env); err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	if env.Success != nil && !*env.Success {
		return nil, refusal(env, body)
	}
	if len(env.Data) == 0 || string(env.Data) == "null" {
		return nil, errors.New("response has no data")
	}
	return env.Data, nil
}

// refusal is the error of an envelope with success:false (DESIGN.md's
// error shape {"success": false, "error": {"code", "message"}}; the API
// page documents none inside a 2xx). Only a 4xx error.code says the API
// refused the request (an *apiclient.Refusal; 401 and 403 a refused key);
// a 5xx code, or none a number, says nothing of what became of it
// (apiclient.CodeError).
func refusal(env envelope, body []byte) error {
	msg := apiclient.APIMessage(body)
	if msg == "" {
		msg = "success is false"
	}
	var e struct {
		Code apiclient.Num `json:"code"`
	}
	code := 0
	if json.Unmarshal(env.Error, &e) == nil && e.Code.Set && e.Code.V == float64(int(e.Code.V)) {
		code = int(e.Code.V)
	}
	return apiclient.CodeError(code, msg)
}

// DecodeList decodes one page of GET /api/v2/nodes/.
func DecodeList(body []byte) (apiclient.DRFPage[Node], error) {
	data, err := unwrap(body)
	if err != nil {
		return apiclient.DRFPage[Node]{}, err
	}
	var d listData
	if err := json.Unmarshal(data, &d); err != nil {
		return apiclient.DRFPage[Node]{}, fmt.Errorf("invalid node list: %w", err)
	}
	// A `next` at the top level (outside data) is honoured too.
	if d.Next == "" {
		var top struct {
			Next string `json:"next"`
		}
		_ = json.Unmarshal(body, &top)
		d.Next = top.Next
	}
	return apiclient.DRFPage[Node]{Count: d.Count, Next: d.Next, Results: d.Results}, nil
}

// DecodeNode decodes GET /api/v2/nodes/{id}/.
func DecodeNode(body []byte) (Node, error) {
	data, err := unwrap(body)
	if err != nil {
		return Node{}, err
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

// List implements providers.Provider: every node of the account, all pages.
func (c *Client) List(ctx context.Context) ([]providers.Server, error) {
	nodes, err := apiclient.ListDRF(ctx, c.api, nodesPath, "nodes_list", func(n Node) string { return string(n.ID) }, DecodeList)
	if err != nil {
		return nil, err
	}
	out := make([]providers.Server, 0, len(nodes))
	for _, n := range nodes {
		if n.ID == "" {
			continue
		}
		out = append(out, c.convert(n))
	}
	return out, nil
}

// Get implements providers.Provider.
func (c *Client) Get(ctx context.Context, id string) (providers.Server, error) {
	n, err := apiclient.Get(ctx, c.api, nodesPath+url.PathEscape(id)+"/", "nodes_detail", DecodeNode)
	if err != nil {
		return providers.Server{}, err
	}
	return c.convert(n), nil
}

// Actions implements providers.Provider: VPN.bingo can only redeploy.
func (c *Client) Actions() []providers.Action { return []providers.Action{providers.ActionRedeploy} }

// ReportedStates implements providers.StateReporter: the states StateOf
// maps this API's statuses to.
func (c *Client) ReportedStates() []providers.State {
	return []providers.State{
		providers.StateRunning, providers.StateStarting, providers.StateProvisioning, providers.StateDegraded, providers.StateTerminating, providers.StateUnknown,
	}
}

type redeployRequest struct {
	Force       bool   `json:"force"`
	CountryCode string `json:"country_code,omitempty"`
}

type redeployResponse struct {
	OriginalNode *struct {
		ID     apiclient.Str `json:"id"`
		Status apiclient.Num `json:"status"`
	} `json:"original_node"`
	NewNode *struct {
		ID apiclient.Str `json:"id"`
	} `json:"new_node"`
}

// DecodeRedeploy decodes the answer to POST /api/v2/nodes/{id}/redeploy/
// and returns the new node's id. The documented answer is
// {"original_node": {...}, "new_node": {"id": ...}}; some deployments wrap
// it in the usual envelope. success:false with a 4xx error.code is a
// refusal (*apiclient.Refusal, see refusal); anything else without a new
// node's id (success:false without such a code, an HTML page, nothing,
// junk, {}) is an error: answered, but not in a way that says whether a
// node was replaced.
func DecodeRedeploy(body []byte) (newID string, err error) {
	var top struct {
		redeployResponse
		envelope
	}
	if err := json.Unmarshal(body, &top); err != nil {
		return "", fmt.Errorf("invalid redeploy answer: %w", err)
	}
	if top.Success != nil && !*top.Success {
		return "", refusal(top.envelope, body)
	}
	r := top.redeployResponse
	if r.NewNode == nil && len(top.Data) > 0 && string(top.Data) != "null" {
		var inner redeployResponse
		if err := json.Unmarshal(top.Data, &inner); err != nil {
			return "", fmt.Errorf("invalid redeploy answer data: %w", err)
		}
		r = inner
	}
	if r.NewNode == nil || r.NewNode.ID == "" {
		return "", errors.New("redeploy answer has no new_node id")
	}
	return string(r.NewNode.ID), nil
}

// Do implements providers.Provider: POST /api/v2/nodes/{id}/redeploy/.
func (c *Client) Do(ctx context.Context, id string, a providers.Action, p providers.ActionParams) (providers.ActionResult, error) {
	if a != providers.ActionRedeploy {
		return providers.ActionResult{}, providers.UnsupportedAction(c, a)
	}
	req := apiclient.Request{
		Method:   http.MethodPost,
		Path:     nodesPath + url.PathEscape(id) + "/redeploy/",
		Body:     redeployRequest{Force: p.Force, CountryCode: p.CountryCode},
		Endpoint: "nodes_redeploy",
	}
	status, body, err := c.api.Do(ctx, req)
	if err != nil {
		return providers.ActionResult{Response: c.api.Redact(apiclient.APIMessage(body))}, err
	}
	res := providers.ActionResult{Response: c.api.Redact(trim(body))}
	newID, err := DecodeRedeploy(body)
	if err != nil {
		return res, c.api.DecodeError(req, status, err)
	}
	res.NewID = newID
	return res, nil
}

func trim(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 500 {
		s = s[:500] + "..."
	}
	return s
}

// StateOf maps a VPN.bingo status code to the normalized state.
func StateOf(code int) providers.State {
	switch code {
	case StatusPreparing:
		return providers.StateProvisioning
	case StatusDeployed, StatusReady:
		return providers.StateRunning
	case StatusAwaitHeartbeat:
		return providers.StateStarting
	case StatusHeartbeatAbnorml:
		return providers.StateDegraded
	case StatusPendingRelease:
		return providers.StateTerminating
	}
	return providers.StateUnknown
}

func (c *Client) convert(n Node) providers.Server {
	s := providers.Server{
		ID:        string(n.ID),
		Name:      string(n.Name),
		Hostname:  string(n.Host),
		IP:        string(n.IP),
		Location:  string(n.Country),
		RawStatus: string(n.StatusDisplay),
		State:     providers.StateUnknown,
	}
	if n.Status.Set {
		code := int(n.Status.V)
		s.RawCode = strconv.Itoa(code)
		if float64(code) == n.Status.V {
			s.State = StateOf(code)
		}
	}
	if s.RawStatus == "" {
		s.RawStatus = s.RawCode
	}
	if p := n.Port.V; n.Port.Set && p == float64(int(p)) && p > 0 && p < 65536 {
		s.Port = strconv.Itoa(int(p))
	}
	s.ExpiryTime = c.unix(string(n.ExpireTime))
	s.CreatedTime = c.unix(string(n.CreateTime))
	s.StatusChangeTime = c.unix(string(n.StatusUpdate))
	if n.Bandwidth.Set {
		s.BandwidthLimitBytesPerSecond = providers.Some(n.Bandwidth.V * providers.MbpsInBytes)
	}
	if n.BandwidthUsedM.Set {
		s.BandwidthUsedBytesPerSecond = providers.Some(n.BandwidthUsedM.V * providers.MbpsInBytes)
	}
	if n.CanRedeploy.Set {
		s.CanRedeploy = providers.Bool(n.CanRedeploy.V)
	}
	return s
}

// unix parses a zone-less API time in the account's zone; an unreadable
// time leaves the metric absent rather than failing the whole fleet.
func (c *Client) unix(s string) providers.Value {
	t, ok, err := apiclient.ParseTime(s, c.loc)
	if !ok || err != nil {
		return providers.Value{}
	}
	return providers.Some(float64(t.Unix()))
}
