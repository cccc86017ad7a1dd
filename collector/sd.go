package collector

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/vps-exporter/vps_exporter/providers"
)

// SD address kinds: which of a server's addresses becomes its target.
const (
	AddrPublicIPv4  = "public_ipv4"
	AddrPrivateIPv4 = "private_ipv4"
	AddrPublicIPv6  = "public_ipv6"
	AddrHostname    = "hostname"
	AddrService     = "service" // VPN.bingo host:port
)

// sdQuery is a parsed /sd query.
type sdQuery struct {
	port      string
	address   string
	providers []string
	accounts  []string
	states    []providers.State
}

// isDefault reports whether q is the query without parameters.
func (q sdQuery) isDefault() bool {
	return q.port == "9100" && q.address == AddrPublicIPv4 && len(q.providers) == 0 && len(q.accounts) == 0 && len(q.states) == 0
}

// parseSDQuery validates the query; an error names the parameter.
func parseSDQuery(v url.Values) (sdQuery, error) {
	q := sdQuery{port: "9100", address: AddrPublicIPv4}
	for k, vals := range v {
		switch k {
		case "port":
			if len(vals) != 1 {
				return q, fmt.Errorf("port: give it once")
			}
			n, err := strconv.Atoi(vals[0])
			if err != nil || n < 1 || n > 65535 {
				return q, fmt.Errorf("port: want a number from 1 to 65535, got %q", vals[0])
			}
			q.port = strconv.Itoa(n)
		case "address":
			if len(vals) != 1 {
				return q, fmt.Errorf("address: give it once")
			}
			switch vals[0] {
			case AddrPublicIPv4, AddrPrivateIPv4, AddrPublicIPv6, AddrHostname, AddrService:
				q.address = vals[0]
			default:
				return q, fmt.Errorf("address: want public_ipv4, private_ipv4, public_ipv6, hostname or service, got %q", vals[0])
			}
		case "provider":
			for _, p := range vals {
				switch p {
				case "vpnbingo", "vpsorg", "e2e":
				default:
					return q, fmt.Errorf("provider: want vpnbingo, vpsorg or e2e, got %q", p)
				}
			}
			q.providers = vals
		case "account":
			q.accounts = vals
		case "state":
			for _, s := range vals {
				st, ok := providers.ParseState(s)
				if !ok {
					return q, fmt.Errorf("state: unknown state %q", s)
				}
				q.states = append(q.states, st)
			}
		default:
			return q, fmt.Errorf("%s: unknown query parameter (want port, address, provider, account, state)", k)
		}
	}
	return q, nil
}

// sdGroup is one Prometheus HTTP SD target group.
type sdGroup struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels"`
}

// SDHandler serves /sd: Prometheus HTTP service discovery of every server
// of every account, from the store's snapshots (never an API call). The
// body for the query without parameters is rendered once per change of
// the store.
type SDHandler struct {
	store *Store

	mu       sync.Mutex
	cacheGen uint64
	cache    []byte
}

// NewSDHandler returns the /sd handler.
func NewSDHandler(store *Store) *SDHandler { return &SDHandler{store: store} }

// ServeHTTP implements http.Handler.
func (h *SDHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	q, err := parseSDQuery(r.URL.Query())
	if err != nil {
		http.Error(w, "bad query: "+err.Error(), http.StatusBadRequest)
		return
	}
	var body []byte
	if q.isDefault() {
		body = h.cached()
	} else {
		snaps, _ := h.store.snapshotsGen()
		body = renderSD(snaps, q)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = w.Write(body)
}

// cached returns the default query's body, rendering it again only when
// the store changed since.
func (h *SDHandler) cached() []byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	snaps, gen := h.store.snapshotsGen()
	if h.cache == nil || gen != h.cacheGen {
		h.cache, h.cacheGen = renderSD(snaps, sdQuery{port: "9100", address: AddrPublicIPv4}), gen
	}
	return h.cache
}

// renderSD writes the target groups of the servers q selects, by account
// and id; servers without the chosen address are left out.
func renderSD(snaps []Snapshot, q sdQuery) []byte {
	groups := []sdGroup{}
	for _, sn := range snaps {
		if len(q.providers) > 0 && !slices.Contains(q.providers, sn.Provider) {
			continue
		}
		if len(q.accounts) > 0 && !slices.Contains(q.accounts, sn.Account) {
			continue
		}
		for _, s := range sn.Servers {
			if len(q.states) > 0 && !slices.Contains(q.states, s.State) {
				continue
			}
			target := sdTarget(s, q)
			if target == "" {
				continue
			}
			groups = append(groups, sdGroup{Targets: []string{target}, Labels: sdLabels(sn, s)})
		}
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(groups) // maps of strings: cannot fail
	return b.Bytes()
}

// publicIPv4 is the server's public IPv4 address, if it has one: E2E's
// address falls back to the private one when a node has no public one.
func publicIPv4(s providers.Server) string {
	if s.IP == "" || s.IP == s.PrivateIP {
		return ""
	}
	if ip := net.ParseIP(s.IP); ip != nil && ip.To4() != nil {
		return s.IP
	}
	return ""
}

func privateIPv4(s providers.Server) string {
	if ip := net.ParseIP(s.PrivateIP); ip != nil && ip.To4() != nil {
		return s.PrivateIP
	}
	return ""
}

func publicIPv6(s providers.Server) string {
	if ip := net.ParseIP(s.IPv6); ip != nil && ip.To4() == nil {
		return s.IPv6
	}
	return ""
}

// sdTarget is host:port of the chosen address, "" when there is none.
func sdTarget(s providers.Server, q sdQuery) string {
	var host string
	port := q.port
	switch q.address {
	case AddrPublicIPv4:
		host = publicIPv4(s)
	case AddrPrivateIPv4:
		host = privateIPv4(s)
	case AddrPublicIPv6:
		host = publicIPv6(s)
	case AddrHostname:
		host = validHost(s.Hostname)
	case AddrService:
		host, port = validHost(s.Hostname), s.Port
		if host == "" {
			host = publicIPv4(s)
		}
	}
	if host == "" || port == "" {
		return ""
	}
	return net.JoinHostPort(host, port)
}

// validHost returns a host name fit for a target: no spaces, slashes or
// port of its own.
func validHost(h string) string {
	if h == "" || strings.ContainsAny(h, " /:?#@[]\t\r\n") || !utf8.ValidString(h) {
		return ""
	}
	return h
}

// sdLabels are the discovery labels of one server: only those the
// provider gives, valid UTF-8.
func sdLabels(sn Snapshot, s providers.Server) map[string]string {
	l := make(map[string]string, 14)
	set := func(k, v string) {
		if v != "" {
			l["__meta_vps_"+k] = strings.ToValidUTF8(v, "\uFFFD")
		}
	}
	set("provider", sn.Provider)
	set("account", sn.Account)
	set("server_id", s.ID)
	set("server_name", s.Name)
	set("server_hostname", s.Hostname)
	set("server_state", string(s.State))
	set("server_status", s.RawStatus)
	set("location", s.Location)
	set("plan", s.Plan)
	set("image", s.Image)
	set("public_ipv4", publicIPv4(s))
	set("private_ipv4", privateIPv4(s))
	set("public_ipv6", publicIPv6(s))
	set("service_port", s.Port)
	return l
}
