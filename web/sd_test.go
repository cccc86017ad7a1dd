package web

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vps-exporter/vps_exporter/collector"
	"github.com/vps-exporter/vps_exporter/providers"
)

// sdStore holds one server of each shape the providers give: a VPN.bingo
// node with a service port, a VPS.org server with IPv6, E2E nodes with and
// without a public address, a name that is not valid UTF-8, and an account
// whose last refresh failed.
func sdStore() *collector.Store {
	st := collector.NewStore()
	t0 := time.Unix(1.7e9, 0)
	st.Update("vpnbingo", "bingo", []providers.Server{
		{ID: "28", Name: "Basic-", Hostname: "test.vpn.bingo", IP: "1.1.1.1", Port: "443", Location: "us", State: providers.StateDegraded, RawStatus: "Heartbeat Abnormal", RawCode: "18"},
		{ID: "29", Name: "no-host", IP: "1.1.1.2", Port: "8443", State: providers.StateRunning, RawStatus: "Ready"},
	}, nil, t0, time.Second)
	st.Update("vpsorg", "vps", []providers.Server{
		{ID: "12345", Name: "web-01", Hostname: "web01.example.com", IP: "203.0.113.10", IPv6: "2001:db8::1", Location: "us-west", Plan: "Standard VPS", Image: "Debian 12", State: providers.StateRunning, RawStatus: "active"},
		{ID: "12346", Name: "bad\xffname", Hostname: "web02.example.com", IP: "203.0.113.11", State: providers.StateStopped, RawStatus: "stopped"},
	}, nil, t0, time.Second)
	st.Update("e2e", "e2e", []providers.Server{
		{ID: "169", Name: "node-pub", IP: "101.53.1.1", PrivateIP: "172.16.0.4", Location: "Delhi", State: providers.StateRunning, RawStatus: "Running"},
		{ID: "170", Name: "node-private", IP: "172.16.0.5", PrivateIP: "172.16.0.5", Location: "Delhi", State: providers.StateRunning, RawStatus: "Running"},
	}, nil, t0, time.Second)
	// The E2E account's next refresh fails: its targets stay.
	st.Update("e2e", "e2e", nil, errors.New("HTTP 503"), t0.Add(time.Minute), time.Second)
	return st
}

// sdGroup is one Prometheus HTTP SD target group.
type sdGroup struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels"`
}

// The hand-written JSON is what encoding/json writes for the same groups,
// byte for byte, whatever the names hold.
func TestSDMatchesEncodingJSON(t *testing.T) {
	st := sdStore()
	st.Update("vpsorg", "odd", []providers.Server{
		{ID: "1", Name: "quote\" back\\slash\nnl\ttab\x01ctl <html> & \u2028\u2029 é 日本", IP: "192.0.2.1", State: providers.StateRunning, RawStatus: "bad\xffutf8"},
	}, nil, time.Unix(1.7e9, 0), 0)
	snaps := st.Snapshots()
	for _, q := range []sdQuery{{port: "9100", address: AddrPublicIPv4}, {port: "1", address: AddrService}, {port: "9100", address: "none"}} {
		var want []sdGroup
		for _, sn := range snaps {
			for _, s := range sn.Servers {
				target := sdTarget(s, q)
				if target == "" {
					continue
				}
				l := map[string]string{}
				for _, kv := range sdLabelValues(sn, s) {
					if kv[1] != "" {
						l["__meta_vps_"+kv[0]] = strings.ToValidUTF8(kv[1], "\uFFFD")
					}
				}
				want = append(want, sdGroup{Targets: []string{target}, Labels: l})
			}
		}
		if want == nil {
			want = []sdGroup{}
		}
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(want); err != nil {
			t.Fatal(err)
		}
		if got := string(renderSD(snaps, q)); got != buf.String() {
			t.Errorf("address %s:\n got %s\nwant %s", q.address, got, buf.String())
		}
	}
}

func TestSD(t *testing.T) {
	h := NewSDHandler(sdStore())
	for _, tc := range []struct {
		name, query string
		code        int
		targets     []string // in order
		err         string
	}{
		// Accounts in name order, servers in id order.
		{"default: public IPv4, port 9100", "", 200, []string{"1.1.1.1:9100", "1.1.1.2:9100", "101.53.1.1:9100", "203.0.113.10:9100", "203.0.113.11:9100"}, ""},
		{"port", "?port=9115", 200, []string{"1.1.1.1:9115", "1.1.1.2:9115", "101.53.1.1:9115", "203.0.113.10:9115", "203.0.113.11:9115"}, ""},
		{"private addresses", "?address=private_ipv4", 200, []string{"172.16.0.4:9100", "172.16.0.5:9100"}, ""},
		{"IPv6 bracketed", "?address=public_ipv6", 200, []string{"[2001:db8::1]:9100"}, ""},
		{"hostnames", "?address=hostname&port=22", 200, []string{"test.vpn.bingo:22", "web01.example.com:22", "web02.example.com:22"}, ""},
		{"VPN service endpoints", "?address=service", 200, []string{"test.vpn.bingo:443", "1.1.1.2:8443"}, ""},
		{"provider", "?provider=vpsorg", 200, []string{"203.0.113.10:9100", "203.0.113.11:9100"}, ""},
		{"account", "?account=bingo&account=e2e", 200, []string{"1.1.1.1:9100", "1.1.1.2:9100", "101.53.1.1:9100"}, ""},
		{"states", "?state=running&state=degraded", 200, []string{"1.1.1.1:9100", "1.1.1.2:9100", "101.53.1.1:9100", "203.0.113.10:9100"}, ""},
		{"no match", "?account=none", 200, []string{}, ""},
		{"unknown address", "?address=mac", 400, nil, `bad query: address: want public_ipv4, private_ipv4, public_ipv6, hostname or service, got "mac"`},
		{"bad port", "?port=70000", 400, nil, `bad query: port: want a number from 1 to 65535, got "70000"`},
		{"port twice", "?port=1&port=2", 400, nil, "bad query: port: give it once"},
		{"bad state", "?state=on", 400, nil, `bad query: state: unknown state "on"`},
		{"bad provider", "?provider=aws", 400, nil, `bad query: provider: want vpnbingo, vpsorg or e2e, got "aws"`},
		{"unknown parameter", "?adress=hostname", 400, nil, "bad query: adress: unknown query parameter (want port, address, provider, account, state)"},
		// As every /api endpoint (internal/httpq): the first unknown name in
		// name order, repeated only when it reads as an identifier.
		{"unknown parameters, the first by name", "?zone=1&adress=hostname", 400, nil, "bad query: adress: unknown query parameter (want port, address, provider, account, state)"},
		{"a value pasted as a name", "?sk-SECRET-token=1", 400, nil, "bad query: an unknown query parameter (want port, address, provider, account, state)"},
		{"a name that is no identifier", "?Port=9100", 400, nil, "bad query: an unknown query parameter (want port, address, provider, account, state)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("GET", "/sd"+tc.query, nil))
			if rec.Code != tc.code {
				t.Fatalf("HTTP %d, want %d: %s", rec.Code, tc.code, rec.Body)
			}
			if tc.code != 200 {
				if got := strings.TrimSpace(rec.Body.String()); got != tc.err {
					t.Fatalf("error %q, want %q", got, tc.err)
				}
				return
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			var groups []sdGroup
			if err := json.Unmarshal(rec.Body.Bytes(), &groups); err != nil {
				t.Fatal(err)
			}
			got := []string{}
			for _, g := range groups {
				if len(g.Targets) != 1 {
					t.Fatalf("group with %d targets", len(g.Targets))
				}
				got = append(got, g.Targets[0])
			}
			if !slices.Equal(got, tc.targets) {
				t.Fatalf("targets %v, want %v", got, tc.targets)
			}
		})
	}
}

// The labels of the default query, byte for byte: present only where the
// provider gives the value, valid UTF-8, keys in a stable (sorted) order.
func TestSDGolden(t *testing.T) {
	rec := httptest.NewRecorder()
	NewSDHandler(sdStore()).ServeHTTP(rec, httptest.NewRequest("GET", "/sd", nil))
	golden := filepath.Join("testdata", "sd.golden.json")
	if *update {
		if err := os.WriteFile(golden, rec.Body.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Body.String() != string(want) {
		t.Errorf("/sd differs from %s (run go test -update to accept):\n%s", golden, firstDiff(rec.Body.String(), string(want)))
	}
	for _, absent := range []string{`"__meta_vps_public_ipv6":""`, `"__meta_vps_plan":""`, "\xff"} {
		if strings.Contains(rec.Body.String(), absent) {
			t.Errorf("/sd has %q", absent)
		}
	}
}

// Each query's body is cached until the store changes; the same query in
// another spelling shares it.
func TestSDCache(t *testing.T) {
	st := sdStore()
	h := NewSDHandler(st)
	get := func(url string) string {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", url, nil))
		return rec.Body.String()
	}
	first := get("/sd")
	if second := get("/sd?port=9100&address=public_ipv4"); second != first || len(h.cache) != 1 {
		t.Fatalf("the default query spelt out: a second cache entry (%d) or another body", len(h.cache))
	}
	cached := h.cache[sdQuery{port: "9100", address: AddrPublicIPv4}.key()]
	_ = get("/sd")
	if &cached[0] != &h.cache[sdQuery{port: "9100", address: AddrPublicIPv4}.key()][0] {
		t.Error("the default body was rendered again without a change")
	}
	a := get("/sd?state=running&state=degraded&provider=vpsorg&provider=vpnbingo")
	if b := get("/sd?provider=vpnbingo&state=degraded&provider=vpsorg&state=running"); a != b || len(h.cache) != 2 {
		t.Errorf("one query in two orders: %d cache entries", len(h.cache))
	}
	getDefault := func() string { return get("/sd") }
	st.Update("vpsorg", "vps", []providers.Server{{ID: "1", IP: "198.51.100.7", State: providers.StateRunning}}, nil, time.Unix(1.7e9, 0), 0)
	if got := getDefault(); !strings.Contains(got, "198.51.100.7:9100") || strings.Contains(got, "203.0.113.10") {
		t.Errorf("after a change the body is stale: %s", got)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/sd", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST answered %d", rec.Code)
	}
}
