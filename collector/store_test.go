package collector

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vps-exporter/vps_exporter/providers"
)

func TestCRCCombine(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, sizes := range [][]int{{0}, {0, 0}, {1}, {1, 0, 1}, {7, 300, 0, 65536, 3}, {100000, 1}} {
		var all []byte
		crc := uint32(0)
		for _, n := range sizes {
			p := make([]byte, n)
			for i := range p {
				p[i] = byte(r.Uint32())
			}
			all = append(all, p...)
			crc = crcCombine(crc, crc32.ChecksumIEEE(p), crcShift(n))
		}
		if want := crc32.ChecksumIEEE(all); crc != want {
			t.Errorf("parts %v: combined CRC %08x, want %08x", sizes, crc, want)
		}
	}
}

// randomServer is a server with any of the optional values present or
// not, and awkward label values now and then.
func randomServer(r *rand.Rand, id string) providers.Server {
	opt := func(v float64) providers.Value {
		if r.IntN(3) == 0 {
			return providers.Value{}
		}
		return providers.Some(v)
	}
	s := providers.Server{
		ID: id, Name: "srv-" + id, Hostname: id + ".example.com", IP: "10.0.0." + strconv.Itoa(r.IntN(255)),
		Location: "eu", Plan: "p", Image: "debian", State: providers.States()[r.IntN(len(providers.States()))],
		RawStatus: "active", ExpiryTime: opt(1.8e9), CreatedTime: opt(1.7e9 + float64(r.IntN(1000))),
		StatusChangeTime: opt(1.75e9), BandwidthLimitBytesPerSecond: opt(125e6), BandwidthUsedBytesPerSecond: opt(float64(r.IntN(1e6))),
		TransferLimitBytes: opt(1e12), TransferUsedBytes: opt(float64(r.IntN(1e9))), CPUUsageRatio: opt(r.Float64()),
		VCPUs: opt(2), MemoryBytes: opt(4 << 30), MemoryUsedBytes: opt(float64(r.IntN(4 << 30))), DiskBytes: opt(80 << 30),
		DiskUsedBytes: opt(float64(r.IntN(80 << 30))), CanRedeploy: opt(1), BackupsEnabled: opt(0),
	}
	switch r.IntN(20) {
	case 0:
		s.Name = "two\nlines \"quoted\" back\\slash"
	case 1:
		s.Hostname = "bad\xffutf8"
	case 2:
		s.RawCode = "19"
	}
	return s
}

// lineCount, which the copying of unchanged servers relies on, agrees
// with what render writes, family by family.
// Table: every state, a provider's few (a server's state may be outside
// them), and families left out.
func TestLineCountMatchesRender(t *testing.T) {
	for _, tc := range []struct {
		name   string
		states []providers.State
		skip   []int
	}{
		{"all states", providers.States(), nil},
		{"few states", []providers.State{providers.StateRunning, providers.StateStopped, providers.StateUnknown}, nil},
		{"excluded families", providers.States(), []int{famState, famCPU, famDetailTime}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(5, 6))
			names := families()
			bd := newBuilder(&names)
			for _, f := range tc.skip {
				bd.skip[f] = true
			}
			for i := 0; i < 2000; i++ {
				s := randomServer(r, strconv.Itoa(i))
				detailAt := int64(0)
				if r.IntN(2) == 0 {
					detailAt = 1.7e9 + int64(i)
				}
				for f := range bd.fam {
					bd.fam[f] = bd.fam[f][:0]
				}
				bd.render("vpsorg", "acct", &s, detailAt, tc.states)
				for f := 0; f < numFamilies; f++ {
					got := bytes.Count(bd.fam[f], []byte("\n"))
					if want := bd.lineCount(f, &s, detailAt, tc.states); got != want {
						t.Fatalf("server %+v family %s: render wrote %d lines, lineCount says %d", s, names[f].name, got, want)
					}
					if bd.skip[f] && got != 0 {
						t.Fatalf("family %s is left out, but render wrote %d lines", names[f].name, got)
					}
				}
			}
		})
	}
}

// churn is a fleet of one large account that changes at random: servers
// change, come and go, and get new detail reads.
type churn struct {
	r       *rand.Rand
	servers map[int]providers.Server
	detail  map[int]time.Time
	next    int
}

func newChurn(n int) *churn {
	c := &churn{r: rand.New(rand.NewPCG(7, 8)), servers: map[int]providers.Server{}, detail: map[int]time.Time{}}
	for c.next < n {
		c.add()
	}
	return c
}

func (c *churn) add() {
	id := 10000 + c.next*3
	c.next++
	c.servers[id] = randomServer(c.r, strconv.Itoa(id))
}

// step changes up to k servers, removes and adds a few, and returns the
// ids it changed or added and how many it removed.
func (c *churn) step(k int) (map[string]bool, int) {
	ids := make([]int, 0, len(c.servers))
	for id := range c.servers {
		ids = append(ids, id)
	}
	changed := map[string]bool{}
	for i := 0; i < k; i++ {
		id := ids[c.r.IntN(len(ids))]
		if c.r.IntN(2) == 0 {
			s := c.servers[id]
			s.CPUUsageRatio = providers.Some(c.r.Float64())
			c.servers[id] = s
		} else {
			c.detail[id] = time.Unix(1.7e9+int64(c.r.IntN(1e6)), 0)
		}
		changed[strconv.Itoa(id)] = true
	}
	removed := 0
	for i := 0; i < c.r.IntN(3); i++ {
		id := ids[c.r.IntN(len(ids))]
		if _, ok := c.servers[id]; ok {
			removed++
		}
		delete(c.servers, id)
		delete(c.detail, id)
		delete(changed, strconv.Itoa(id))
	}
	for i := 0; i < c.r.IntN(3); i++ {
		c.add()
		changed[strconv.Itoa(10000+(c.next-1)*3)] = true
	}
	return changed, removed
}

// refresh is the fleet as a poller hands it over: in list order (here
// shuffled now and then), with detail times parallel.
func (c *churn) refresh(account string, at time.Time) Refresh {
	list := make([]providers.Server, 0, len(c.servers))
	for _, s := range c.servers {
		list = append(list, s)
	}
	if c.r.IntN(3) != 0 {
		sortServers(list)
	}
	times := make([]time.Time, len(list))
	for i, s := range list {
		id, _ := strconv.Atoi(s.ID)
		times[i] = c.detail[id]
	}
	return Refresh{Provider: "vpsorg", Account: account, Servers: list, DetailAt: times, Details: true, Started: at, At: at}
}

func idsOf(list []providers.Server) string {
	var b strings.Builder
	for _, s := range list {
		b.WriteString(s.ID + ",")
	}
	return b.String()
}

func sortServers(list []providers.Server) {
	for i := 1; i < len(list); i++ { // insertion sort: the test's own, not the store's
		for j := i; j > 0 && providers.IDLess(list[j].ID, list[j-1].ID); j-- {
			list[j], list[j-1] = list[j-1], list[j]
		}
	}
}

func gunzip(t *testing.T, z []byte) string {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(z))
	if err != nil {
		t.Fatal(err)
	}
	zr.Multistream(false)
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// A large account, many blocks, through rounds of random changes: the
// store serves (plain and gzip) exactly what a fresh store renders from
// the same data, renders only the servers that changed or came, and
// rebuilds only the blocks that hold them.
func TestBlocksAfterChangesEqualFreshRender(t *testing.T) {
	n := 4000
	if testing.Short() {
		n = 1500
	}
	c := newChurn(n)
	st := NewStore()
	st.bld.min, st.bld.avg, st.bld.max = 16, 64, 256 // many blocks
	var rendered []string
	st.rendered = func(_, id string) { rendered = append(rendered, id) }
	h := NewHandler(st, prometheus.NewRegistry(), log.NewNopLogger())
	t0 := time.Unix(1.7e9, 0)
	st.Apply(c.refresh("big", t0))
	st.Update("e2e", "small", []providers.Server{randomServer(c.r, "1")}, nil, t0, 0)
	if got := len(st.accounts["big"].blocks); got < n/(16+64)/2 {
		t.Fatalf("%d servers in %d blocks", n, got)
	}
	for round := 0; round < 30; round++ {
		prev := st.accounts["big"]
		k := []int{0, 1, 5, 50}[round%4]
		changed, removed := c.step(k)
		rendered = nil
		sn := st.Apply(c.refresh("big", t0.Add(time.Duration(round)*time.Minute)))
		// Only the changed and new servers were rendered.
		for _, id := range rendered {
			if !changed[id] {
				t.Fatalf("round %d: server %s rendered again without a change", round, id)
			}
		}
		if len(rendered) != len(changed) {
			t.Fatalf("round %d: rendered %d servers, %d changed or came", round, len(rendered), len(changed))
		}
		// Only the blocks holding them were rebuilt.
		cur := st.accounts["big"]
		kept := map[*block]bool{}
		oldIDs := map[string]string{} // an old block's first id: its ids
		for i, b := range prev.blocks {
			kept[b] = true
			oldIDs[prev.snap.Servers[prev.start[i]].ID] = idsOf(prev.snap.Servers[prev.start[i] : prev.start[i]+b.n])
		}
		for i, b := range cur.blocks {
			if kept[b] {
				continue
			}
			servers := sn.Servers[cur.start[i] : cur.start[i]+b.n]
			holds := false
			for _, s := range servers {
				holds = holds || changed[s.ID]
			}
			// Rebuilt, it must hold a changed server or other servers
			// than any previous block (one came or went).
			if !holds && oldIDs[servers[0].ID] == idsOf(servers) {
				t.Fatalf("round %d: block %d (servers %d..) rebuilt with none of its servers changed", round, i, cur.start[i])
			}
		}
		// The same data again: nothing rendered, every block kept.
		rendered = nil
		again := st.Apply(c.refresh("big", t0.Add(time.Duration(round)*time.Minute+time.Second)))
		if len(rendered) != 0 || !slices.Equal(st.accounts["big"].blocks, cur.blocks) || len(again.Servers) != len(sn.Servers) {
			t.Fatalf("round %d: the same data again rendered %d servers or rebuilt blocks", round, len(rendered))
		}
		if len(changed) == 0 && removed == 0 {
			for i := range cur.blocks {
				if cur.blocks[i] != prev.blocks[i] {
					t.Fatalf("round %d: nothing changed, block %d rebuilt", round, i)
				}
			}
		}
		if round%3 == 2 {
			continue // changes may pile up between scrapes
		}
		plain, _ := scrape(t, h, false)
		req := httptest.NewRequest("GET", "/metrics", nil)
		req.Header.Set("Accept-Encoding", "gzip")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if got := gunzip(t, rec.Body.Bytes()); got != plain {
			t.Fatalf("round %d: gzip body differs from plain", round)
		}
		fresh := NewStore()
		for _, s := range st.Snapshots() {
			a := st.accounts[s.Account]
			var at []time.Time
			if a.detail != nil {
				at = make([]time.Time, len(a.detail))
				for i, d := range a.detail {
					if d != 0 {
						at[i] = time.Unix(d, 0)
					}
				}
			}
			fresh.Apply(Refresh{Provider: s.Provider, Account: s.Account, Servers: s.Servers, DetailAt: at, Started: t0, At: t0})
		}
		want, _ := scrape(t, NewHandler(fresh, prometheus.NewRegistry(), log.NewNopLogger()), false)
		if plain != want {
			t.Fatalf("round %d: the long-lived store's /metrics differs from a fresh render:\n%s", round, firstDiff(plain, want))
		}
	}
}

// A server that comes or goes rebuilds the blocks around it, not every
// block after it.
func TestBlockCutsAreLocal(t *testing.T) {
	list := make([]providers.Server, 20000)
	for i := range list {
		list[i] = providers.Server{ID: strconv.Itoa(100000 + i), State: providers.StateRunning}
	}
	st := NewStore()
	st.bld.min, st.bld.avg, st.bld.max = 64, 256, 1024
	st.Update("vpsorg", "a", list, nil, time.Unix(1.7e9, 0), 0)
	before := st.accounts["a"].blocks
	if len(before) < 20 {
		t.Fatalf("20,000 servers in only %d blocks", len(before))
	}
	// One server gone near the start, one new near the end.
	list2 := append(append([]providers.Server(nil), list[:100]...), list[101:]...)
	list2 = append(list2[:19000], append([]providers.Server{{ID: "118999x", State: providers.StateRunning}}, list2[19000:]...)...)
	st.Update("vpsorg", "a", list2, nil, time.Unix(1.7e9, 0), 0)
	old := map[*block]bool{}
	for _, b := range before {
		old[b] = true
	}
	rebuilt := 0
	for _, b := range st.accounts["a"].blocks {
		if !old[b] {
			rebuilt++
		}
	}
	if rebuilt > 4 {
		t.Errorf("one server gone and one new rebuilt %d of %d blocks", rebuilt, len(before))
	}
}

// Scrapes, snapshot readers and updates at once (run with -race): every
// scrape is a complete, valid body of one generation.
func TestStoreConcurrentScrapes(t *testing.T) {
	c := newChurn(3000)
	st := NewStore()
	st.bld.min, st.bld.avg, st.bld.max = 16, 64, 256
	h := NewHandler(st, prometheus.NewRegistry(), log.NewNopLogger())
	t0 := time.Unix(1.7e9, 0)
	st.Apply(c.refresh("big", t0))
	var mu sync.Mutex // c is not safe for concurrent use
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			mu.Lock()
			c.step(20)
			r := c.refresh("big", t0.Add(time.Duration(i)*time.Second))
			mu.Unlock()
			st.Apply(r)
			st.Update("e2e", fmt.Sprintf("e%d", i%3), []providers.Server{{ID: "1"}}, nil, t0, 0)
			if i%5 == 4 {
				st.Remove(fmt.Sprintf("e%d", i%3))
			}
		}
	}()
	var scrapers sync.WaitGroup
	for w := 0; w < 3; w++ {
		scrapers.Add(1)
		go func(gz bool) {
			defer scrapers.Done()
			for i := 0; i < 15; i++ {
				req := httptest.NewRequest("GET", "/metrics", nil)
				if gz {
					req.Header.Set("Accept-Encoding", "gzip")
				}
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				body := rec.Body.String()
				if gz {
					body = gunzip(t, rec.Body.Bytes())
				}
				if rec.Code != http.StatusOK || strings.Count(body, "# TYPE vps_server_up gauge\n") != 1 || !strings.HasSuffix(body, "\n") {
					t.Errorf("a scrape during updates is not a complete body")
				}
				for _, s := range st.Snapshots() {
					_ = len(s.Servers)
				}
				if sn, ok := st.Snapshot("big"); ok && len(sn.Servers) == 0 {
					t.Error("empty snapshot")
				}
			}
		}(w%2 == 0)
	}
	scrapers.Wait()
	close(stop)
	wg.Wait()
}
