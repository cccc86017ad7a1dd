package collector

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-kit/log"

	"github.com/vps-exporter/vps_exporter/internal/syncbuf"
	"github.com/vps-exporter/vps_exporter/providers"
)

// refusingDetailer refuses (403) the detail reads of some servers.
type refusingDetailer struct {
	*fakeDetailer
	mu     sync.Mutex
	refuse map[string]bool
}

func (f *refusingDetailer) Detail(ctx context.Context, id string) (providers.Server, error) {
	f.mu.Lock()
	refused := f.refuse[id]
	f.mu.Unlock()
	if refused {
		f.fakeDetailer.mu.Lock()
		f.fakeDetailer.seen = append(f.fakeDetailer.seen, id)
		f.fakeDetailer.mu.Unlock()
		return providers.Server{}, fmt.Errorf("GET /api/v1/servers/%s/: HTTP 403: forbidden: %w", id, providers.ErrUnauthorized)
	}
	return f.fakeDetailer.Detail(ctx, id)
}

// A detail read refused (401/403) marks its server, and only it, however
// many others are refused and in whatever order (issue 24): backed off
// (tried after 2, 4, 8, 16, 16, ... intervals), its detail time aging,
// while every other server is read each interval; one line when it starts
// (at the next list) and one when it ends, or one line for many. Servers
// refused one after the other, with no accepted read between, do not stop
// the account's reads: only a refused list does.
func TestDetailRefusedServerBacksOff(t *testing.T) {
	all := ids(30)
	for _, tc := range []struct {
		name    string
		refused []string
	}{
		{"one server", []string{"105"}},
		{"three servers, refused apart", []string{"103", "117", "128"}},
		{"two servers refused one after the other", []string{"104", "105"}},
		{"three servers refused one after the other", []string{"110", "111", "112"}},
		{"every server (a key without the detail scope)", ids(30)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &refusingDetailer{fakeDetailer: &fakeDetailer{cpu: map[string]float64{}}, refuse: map[string]bool{}}
			for _, id := range all {
				f.cpu[id] = 0.5
			}
			logs := &syncbuf.Buffer{}
			d := newDetails(f, time.Minute, log.NewLogfmtLogger(logs))
			t0 := time.Unix(1.7e9, 0)
			d.setList(servers(all...))
			// pass reads every due server at now, refusals apart: the
			// reads of the others come between them (a pass in id order
			// after the first).
			pass := func(now time.Time) map[string]int {
				f.fakeDetailer.mu.Lock()
				f.fakeDetailer.seen = nil
				f.fakeDetailer.mu.Unlock()
				for {
					id, _ := d.next(now)
					if id == "" {
						break
					}
					srv, err := f.Detail(context.Background(), id)
					d.done(id, srv, err, now)
				}
				f.fakeDetailer.mu.Lock()
				defer f.fakeDetailer.mu.Unlock()
				seen := map[string]int{}
				for _, id := range f.fakeDetailer.seen {
					seen[id]++
				}
				return seen
			}
			pass(t0)
			d.listed(servers(all...), nil, t0)
			f.mu.Lock()
			for _, id := range tc.refused {
				f.refuse[id] = true
			}
			f.mu.Unlock()
			tries := map[string][]int{} // the minutes each refused server was tried
			for i := 1; i <= 40; i++ {
				now := t0.Add(time.Duration(i) * time.Minute)
				seen := pass(now)
				for _, id := range all {
					if slices.Contains(tc.refused, id) {
						if seen[id] > 0 {
							tries[id] = append(tries[id], i)
						}
					} else if seen[id] != 1 {
						t.Fatalf("minute %d: server %s read %d times; want once an interval while others are refused", i, id, seen[id])
					}
				}
				d.listed(servers(all...), nil, now)
				// The refused server's detail time ages; the others' does not.
				_, at, _ := d.merge(servers(all...), now)
				for k, id := range all {
					if want := now; slices.Contains(tc.refused, id) {
						if !at[k].Equal(t0) {
							t.Fatalf("minute %d: refused server %s read at %v; want its last accepted read %v kept", i, id, at[k], t0)
						}
					} else if !at[k].Equal(want) {
						t.Fatalf("minute %d: server %s read at %v; want %v", i, id, at[k], want)
					}
				}
			}
			for _, id := range tc.refused {
				if want := []int{1, 3, 7, 15, 31}; !slices.Equal(tries[id], want) {
					t.Errorf("server %s tried at minutes %v; want the backoff's %v", id, tries[id], want)
				}
			}
			many := len(tc.refused) > maxLoggedServers
			warns := linesAt(logs, "warn")
			if want := len(tc.refused); (!many && len(warns) != want) || (many && len(warns) != 1) {
				t.Fatalf("%d refused servers logged as:\n%s", want, strings.Join(warns, "\n"))
			}
			if many {
				if w := warns[0]; !strings.Contains(w, fmt.Sprintf("servers=%d", len(tc.refused))) || !strings.Contains(w, "refused for these servers") || !strings.Contains(w, "HTTP 403") {
					t.Errorf("refusals logged as %s", w)
				}
			} else {
				for k, id := range tc.refused {
					if !strings.Contains(warns[k], "id="+id) || !strings.Contains(warns[k], "refused for this server") || !strings.Contains(warns[k], "HTTP 403") {
						t.Errorf("refusal logged as %s", warns[k])
					}
				}
			}
			// Accepted again: read at its next try, one line each, and
			// then every interval.
			f.mu.Lock()
			clear(f.refuse)
			f.mu.Unlock()
			for i := 41; i <= 64; i++ {
				now := t0.Add(time.Duration(i) * time.Minute)
				pass(now)
				d.listed(servers(all...), nil, now)
			}
			infos := linesAt(logs, "info")
			if want := len(tc.refused); (!many && len(infos) != want) || (many && len(infos) != 1) {
				t.Fatalf("recoveries logged as:\n%s", strings.Join(infos, "\n"))
			}
			for k, line := range infos {
				if !strings.Contains(line, "recovered") || (!many && !strings.Contains(line, "id="+tc.refused[k])) ||
					(many && !strings.Contains(line, fmt.Sprintf("servers=%d", len(tc.refused)))) {
					t.Errorf("recovery logged as %s", line)
				}
			}
			now := t0.Add(65 * time.Minute)
			if seen := pass(now); len(seen) != len(all) {
				t.Errorf("after the recoveries %d servers read in an interval; want all %d", len(seen), len(all))
			}
		})
	}
}
