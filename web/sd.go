package web

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/vps-exporter/vps_exporter/collector"
	"github.com/vps-exporter/vps_exporter/internal/httpq"
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

// key is the query in a canonical form, for the cache.
func (q sdQuery) key() string {
	p, a := slices.Clone(q.providers), slices.Clone(q.accounts)
	st := make([]string, len(q.states))
	for i, s := range q.states {
		st[i] = string(s)
	}
	slices.Sort(p)
	slices.Sort(a)
	slices.Sort(st)
	return fmt.Sprintf("%s|%s|%q|%q|%q", q.port, q.address, p, a, st)
}

// parseSDQuery validates the query; an error names the parameter. An
// unknown parameter is answered as every /api endpoint answers it
// (internal/httpq): the first in name order, named only when it reads as
// an identifier.
func parseSDQuery(v url.Values) (sdQuery, error) {
	q := sdQuery{port: "9100", address: AddrPublicIPv4}
	if err := httpq.Unknown(v, "port", "address", "provider", "account", "state"); err != nil {
		return q, err
	}
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
		}
	}
	return q, nil
}

// SDHandler serves /sd: Prometheus HTTP service discovery of every server
// of every account, from the store's snapshots (never an API call). Each
// query's body is rendered once per change of the store: Prometheus asks
// the same few queries again and again.
type SDHandler struct {
	store Inventory

	mu    sync.Mutex
	gen   uint64            // the store generation the cache is of
	cache map[string][]byte // canonical query -> body
}

// maxSDQueries bounds the distinct queries cached per generation.
const maxSDQueries = 32

// NewSDHandler returns the /sd handler.
func NewSDHandler(store Inventory) *SDHandler { return &SDHandler{store: store} }

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
	body := h.body(q)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = w.Write(body)
}

// body returns the query's body, rendering it only when the store changed
// since it was last rendered. Concurrent requests share one rendering.
func (h *SDHandler) body(q sdQuery) []byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	gen := h.store.Generation()
	if gen != h.gen || h.cache == nil || len(h.cache) >= maxSDQueries {
		h.cache, h.gen = map[string][]byte{}, gen
	}
	k := q.key()
	b, ok := h.cache[k]
	if !ok {
		// Snapshots read after gen: a change in between bumps gen
		// again, and the next request renders anew.
		b = renderSD(h.store.Snapshots(), q)
		h.cache[k] = b
	}
	return b
}

// renderSD writes the target groups of the servers q selects, by account
// and id; servers without the chosen address are left out. It writes the
// JSON itself (what encoding/json writes for []sdGroup, byte for byte,
// TestSDMatchesEncodingJSON): at 10,000 servers the reflection and the
// maps cost more than the rest of the rendering.
func renderSD(snaps []collector.Snapshot, q sdQuery) []byte {
	n := 0
	for _, sn := range snaps {
		n += len(sn.Servers)
	}
	b := make([]byte, 0, 64+n*450)
	b = append(b, '[')
	first := true
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
			if !first {
				b = append(b, ',')
			}
			first = false
			b = append(b, `{"targets":[`...)
			b = appendJSONString(b, target)
			b = append(b, `],"labels":{`...)
			sep := false
			for _, l := range sdLabelValues(sn, s) {
				if l[1] == "" {
					continue
				}
				if sep {
					b = append(b, ',')
				}
				sep = true
				// The names are plain ASCII: no escaping.
				b = append(b, `"__meta_vps_`...)
				b = append(b, l[0]...)
				b = append(b, `":`...)
				v := l[1]
				if !utf8.ValidString(v) {
					v = strings.ToValidUTF8(v, "\uFFFD")
				}
				b = appendJSONString(b, v)
			}
			b = append(b, "}}"...)
		}
	}
	return append(b, "]\n"...)
}

// appendJSONString appends s (valid UTF-8) as a JSON string, escaped as
// encoding/json does without HTML escaping.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c == '\t':
				b = append(b, '\\', 't')
			case c < 0x20:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == '\u2028' || r == '\u2029' {
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}

// publicIPv4 is the server's public IPv4 address, if it has one: E2E's
// address falls back to the private one when a node has no public one.
func publicIPv4(s providers.Server) string {
	if s.IP == "" || s.IP == s.PrivateIP {
		return ""
	}
	return ipv4(s.IP)
}

func privateIPv4(s providers.Server) string { return ipv4(s.PrivateIP) }

// ipv4 returns a if it is an IPv4 address, else "".
func ipv4(a string) string {
	if ip, err := netip.ParseAddr(a); err == nil && ip.Is4() {
		return a
	}
	return ""
}

func publicIPv6(s providers.Server) string {
	if ip, err := netip.ParseAddr(s.IPv6); err == nil && ip.Is6() && !ip.Is4In6() && ip.Zone() == "" {
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

// sdLabelValues are the discovery labels of one server (without their
// __meta_vps_ prefix) in the sorted order of their names; an empty value
// is a label the provider does not give, left out.
func sdLabelValues(sn collector.Snapshot, s providers.Server) [14][2]string {
	return [14][2]string{
		{"account", sn.Account},
		{"image", s.Image},
		{"location", s.Location},
		{"plan", s.Plan},
		{"private_ipv4", privateIPv4(s)},
		{"provider", sn.Provider},
		{"public_ipv4", publicIPv4(s)},
		{"public_ipv6", publicIPv6(s)},
		{"server_hostname", s.Hostname},
		{"server_id", s.ID},
		{"server_name", s.Name},
		{"server_state", string(s.State)},
		{"server_status", s.RawStatus},
		{"service_port", s.Port},
	}
}
