package collector

// Edge cases of the block/plan design (issue 18), from a review.

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vps-exporter/vps_exporter/providers"
)

// Ids a provider may send, mixing numbers and text: the store's order
// was not a strict weak order on them ("9" < "10" < "1a" < "9"), so its
// dedupe by adjacency let a duplicate id through and /metrics carried
// the same series twice.
func TestDuplicateIDInMixedOrder(t *testing.T) {
	st := NewStore()
	list := []providers.Server{{ID: "9"}, {ID: "10"}, {ID: "1a"}, {ID: "9"}}
	sn := st.Update("vpnbingo", "a", list, nil, time.Unix(1.7e9, 0), 0)
	out, _ := scrape(t, NewHandler(st, prometheus.NewRegistry(), log.NewNopLogger()), false)
	if n := strings.Count(out, `vps_server_up{provider="vpnbingo",account="a",id="9"}`); n != 1 {
		t.Errorf("server 9 has %d vps_server_up series, want 1 (snapshot ids %s)", n, idsOf(sn.Servers))
	}
}

// checkBody checks a plain body: each stored family's HELP and TYPE once,
// and all of a family's samples right after them (no family split).
func checkBody(body string) error {
	seen := map[string]bool{}
	cur := ""
	for _, line := range strings.Split(strings.TrimSuffix(body, "\n"), "\n") {
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			name, _, _ := strings.Cut(rest, " ")
			if seen[name] {
				return fmt.Errorf("family %s has a second TYPE line", name)
			}
			seen[name], cur = true, name
			continue
		}
		if strings.HasPrefix(line, "#") || !strings.HasPrefix(line, "vps_server_") {
			continue
		}
		name, _, _ := strings.Cut(line, "{")
		if name != cur {
			return fmt.Errorf("sample of %s under the TYPE of %s: %.120q", name, cur, line)
		}
	}
	return nil
}

// Odd accounts (none, one server, a label value larger than the scratch
// the builder keeps, escapes), many blocks, changes, a removal and a
// withdrawal: plain and gzip agree, families are whole, and a removed or
// withdrawn account's series are gone.
func TestOddAccounts(t *testing.T) {
	st := NewStore()
	st.bld.min, st.bld.avg, st.bld.max = 2, 4, 8
	h := NewHandler(st, prometheus.NewRegistry(), log.NewNopLogger())
	t0 := time.Unix(1.7e9, 0)
	huge := strings.Repeat("x\\\"\n", 2<<20) // 8 MiB raw, 14 MiB escaped
	var big []providers.Server
	for i := 0; i < 50; i++ {
		s := providers.Server{ID: strconv.Itoa(100 + i), Name: "n\"\\\n" + strconv.Itoa(i), State: providers.StateRunning,
			CPUUsageRatio: providers.Some(0.5), RawStatus: "a\nb"}
		if i == 17 {
			s.Name = huge
		}
		big = append(big, s)
	}
	st.Update("vpsorg", "big", big, nil, t0, 0)
	st.Update("e2e", "empty", []providers.Server{}, nil, t0, 0)
	st.Update("e2e", "nil", nil, nil, t0, 0)
	st.Update("vpnbingo", "one", []providers.Server{{ID: "7", State: providers.StateStopped}}, nil, t0, 0)
	st.Update("vpnbingo", "gone", []providers.Server{{ID: "8"}}, nil, t0, 0)
	for round := 0; round < 4; round++ {
		plain, _ := scrape(t, h, false)
		gz, _ := scrape(t, h, true)
		if plain != gz {
			t.Fatalf("round %d: gzip body differs from plain:\n%s", round, firstDiff(plain, gz))
		}
		if err := checkBody(plain); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if round >= 2 && strings.Contains(plain, `account="gone"`) {
			t.Fatalf("round %d: a removed account's series are served", round)
		}
		if round >= 3 && strings.Contains(plain, `account="one"`) {
			t.Fatalf("round %d: a withdrawn account's series are served", round)
		}
		switch round {
		case 0: // the huge server changes, another one goes
			big[17].CPUUsageRatio = providers.Some(0.25)
			big = append(big[:30:30], big[31:]...)
			st.Update("vpsorg", "big", big, nil, t0, 0)
		case 1:
			st.Remove("gone")
		case 2:
			st.Apply(Refresh{Provider: "vpnbingo", Account: "one", Err: errors.New("down"), Started: t0.Add(time.Hour),
				At: t0.Add(time.Hour), StaleAfter: time.Minute})
		}
	}
	if c := cap(st.bld.fam[famInfo]); c > keepScratch {
		t.Errorf("the builder keeps %d bytes of scratch after a huge server", c)
	}
}

// blockingWriter is a scraper that stalls inside its second write (the
// stored compressed body) until released.
type blockingWriter struct {
	h        http.Header
	buf      bytes.Buffer
	writes   int
	stalled  chan struct{}
	released chan struct{}
}

func (w *blockingWriter) Header() http.Header { return w.h }
func (w *blockingWriter) WriteHeader(int)     {}
func (w *blockingWriter) Write(p []byte) (int, error) {
	w.writes++
	if w.writes == 2 {
		close(w.stalled)
		<-w.released
	}
	return w.buf.Write(p)
}

// A slow scraper holds no lock: updates and other scrapes (which plan
// again and move the blocks' compressed parts) go on, and what the slow
// one finally writes is still the body of its generation, gzip-valid.
func TestSlowScraperDuringUpdates(t *testing.T) {
	c := newChurn(2000)
	st := NewStore()
	st.bld.min, st.bld.avg, st.bld.max = 16, 64, 256
	h := NewHandler(st, prometheus.NewRegistry(), log.NewNopLogger())
	t0 := time.Unix(1.7e9, 0)
	st.Apply(c.refresh("big", t0))
	st.Update("e2e", "small", []providers.Server{{ID: "1"}}, nil, t0, 0)
	want, _ := scrape(t, h, false)

	w := &blockingWriter{h: http.Header{}, stalled: make(chan struct{}), released: make(chan struct{})}
	req := httptest.NewRequest("GET", "/metrics", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); h.ServeHTTP(w, req) }()
	select {
	case <-w.stalled:
	case <-time.After(10 * time.Second):
		t.Fatal("the slow scrape never wrote its body")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 1; i <= 10; i++ {
			c.step(30)
			st.Apply(c.refresh("big", t0.Add(time.Duration(i)*time.Minute)))
			st.Remove("small")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
			if err := checkBody(rec.Body.String()); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		close(w.released)
		t.Fatal("updates and scrapes were blocked by a slow scraper")
	}
	close(w.released)
	wg.Wait()
	zr, err := gzip.NewReader(bytes.NewReader(w.buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("the slow scrape's gzip body: %v", err)
	}
	if string(got) != want {
		t.Fatalf("the slow scrape's body is not its generation's:\n%s", firstDiff(string(got), want))
	}
}
