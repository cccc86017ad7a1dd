package collector

import (
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/vps-exporter/vps_exporter/internal/metricnames"
	"github.com/vps-exporter/vps_exporter/providers"
)

// The configuration checks exclude_metrics against metricnames: the
// collector's families are exactly those, in its order.
func TestFamilyNamesAreMetricnames(t *testing.T) {
	names := families()
	var got []string
	for _, f := range names {
		got = append(got, f.name)
	}
	if want := metricnames.Server(); !slices.Equal(got, want) {
		t.Errorf("families %v, metricnames.Server() %v", got, want)
	}
	for _, n := range metricnames.DefaultExcluded() {
		if !metricnames.IsServer(n) {
			t.Errorf("default excluded %q is not a per-server family", n)
		}
	}
}

// parseFamilies parses a /metrics body (failing t if it is not valid text
// format) into its families.
func parseFamilies(t *testing.T, body string) map[string]int {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	out := map[string]int{}
	for name, mf := range mfs {
		out[name] = len(mf.GetMetric())
	}
	return out
}

// stateSeries counts vps_server_state series per server id, and the
// servers whose current state is not 1 in exactly one of them.
func stateSeries(t *testing.T, body string) (map[string]int, int) {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	per, ones := map[string]int{}, map[string]int{}
	if mf := mfs["vps_server_state"]; mf != nil {
		for _, m := range mf.GetMetric() {
			var id string
			for _, l := range m.GetLabel() {
				if l.GetName() == "id" {
					id = l.GetValue()
				}
			}
			per[id]++
			if m.GetGauge().GetValue() == 1 {
				ones[id]++
			}
		}
	}
	bad := 0
	for id := range per {
		if ones[id] != 1 {
			bad++
		}
	}
	return per, bad
}

// The state-set lists the account's states (and a server's own when a
// client reports one it did not list); exclude_metrics leaves families
// out, and a change of it renders every account again, gzip and plain
// alike, the same as a fresh store with that exclusion.
func TestStatesAndExclude(t *testing.T) {
	few := []providers.State{providers.StateRunning, providers.StateStopped, providers.StateUnknown}
	r := rand.New(rand.NewPCG(11, 12))
	var servers []providers.Server
	for i := 0; i < 40; i++ {
		s := randomServer(r, strconv.Itoa(i))
		s.State = few[i%len(few)]
		servers = append(servers, s)
	}
	servers[7].State = providers.StateDegraded // not listed: still has its current state
	for _, tc := range []struct {
		name      string
		states    []providers.State
		exclude   []string
		perServer int // state series per server (but server 7 with few states)
		absent    []string
	}{
		{"every state", nil, nil, len(providers.States()), nil},
		{"the client's states", few, nil, len(few), nil},
		{"defaults left out", few, metricnames.DefaultExcluded(), len(few), metricnames.DefaultExcluded()},
		{"state-set left out", few, []string{"vps_server_state", "vps_server_info"}, 0, []string{"vps_server_state", "vps_server_info"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := NewStore()
			h := NewHandler(st, prometheus.NewRegistry(), log.NewNopLogger())
			apply := func(st *Store, list []providers.Server) {
				st.Apply(Refresh{Provider: "vpsorg", Account: "a", Servers: slices.Clone(list), States: tc.states,
					Started: fixedNow, At: fixedNow, DetailAt: make([]time.Time, len(list))})
			}
			apply(st, servers)
			before, _ := scrape(t, h, true)
			if !st.SetExclude(tc.exclude) && len(tc.exclude) > 0 {
				t.Fatal("SetExclude says nothing changed")
			}
			for _, gz := range []bool{false, true} {
				body, _ := scrape(t, h, gz)
				fams := parseFamilies(t, body)
				for _, n := range tc.absent {
					if fams[n] != 0 {
						t.Errorf("gzip %v: %s has %d series, want it left out", gz, n, fams[n])
					}
				}
				if fams["vps_server_up"] != len(servers) {
					t.Errorf("gzip %v: vps_server_up has %d series, want %d", gz, fams["vps_server_up"], len(servers))
				}
				per, bad := stateSeries(t, body)
				for id, n := range per {
					want := tc.perServer
					if id == "7" && tc.states != nil {
						want++
					}
					if n != want {
						t.Errorf("gzip %v: server %s has %d state series, want %d", gz, id, n, want)
					}
				}
				if bad != 0 {
					t.Errorf("gzip %v: %d servers without exactly one current state", gz, bad)
				}
			}
			// An update after the change, then the exclusion lifted: the
			// series are back, as before.
			changed := slices.Clone(servers)
			changed[3].CPUUsageRatio = providers.Some(0.5)
			apply(st, changed)
			st.SetExclude(nil)
			apply(st, servers)
			after, _ := scrape(t, h, true)
			if after != before {
				t.Errorf("after the exclusion was lifted /metrics differs from before it:\n%s", firstDiff(after, before))
			}
			// The same exclusion in a fresh store renders the same.
			st.SetExclude(tc.exclude)
			apply(st, changed)
			fresh := NewStore()
			fresh.SetExclude(tc.exclude)
			apply(fresh, changed)
			got, _ := scrape(t, h, false)
			want, _ := scrape(t, NewHandler(fresh, prometheus.NewRegistry(), log.NewNopLogger()), false)
			if got != want {
				t.Errorf("a store whose exclusion changed differs from a fresh one:\n%s", firstDiff(got, want))
			}
		})
	}
}
