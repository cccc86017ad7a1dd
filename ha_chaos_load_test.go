package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// The chaos test's observers and load: a monitor of each replica's
// vps_remediation_leader, and the Alertmanager notifications it posts.

// monitor polls each replica's vps_remediation_leader every 200 ms.
type monitor struct {
	mu     sync.Mutex
	seen   []observation
	cancel context.CancelFunc
	done   chan struct{}
}

type observation struct {
	at      time.Time
	replica int
	leader  int // 1, 0, -1 (no answer)
}

func startMonitor(reps []*replica) *monitor {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	m := &monitor{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(m.done)
		for ctx.Err() == nil {
			for i, r := range reps {
				v := r.isLeader(500 * time.Millisecond)
				m.mu.Lock()
				m.seen = append(m.seen, observation{time.Now(), i, v})
				m.mu.Unlock()
			}
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	return m
}

func (m *monitor) stop() {
	m.cancel()
	<-m.done
}

// ledAround says whether replica i was seen leading within d of t.
func (m *monitor) ledAround(i int, t time.Time, d time.Duration) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, o := range m.seen {
		if o.replica == i && o.leader == 1 && o.at.After(t.Add(-d)) && o.at.Before(t.Add(d)) {
			return true
		}
	}
	return false
}

// firstLeaderAfter is when replica i was first seen leader after t (zero:
// never). It is an upper bound of its election: a call it made as the
// leader just before is counted as after its deposition.
func (m *monitor) firstLeaderAfter(i int, t time.Time) time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, o := range m.seen {
		if o.replica == i && o.leader == 1 && o.at.After(t) {
			return o.at
		}
	}
	return time.Time{}
}

// firstCall waits (3 s at most, polling every 5 ms) for the first call
// for one of ids in the actions log, so that the chaos that follows hits
// a leader in the middle of its burst, and says what it saw.
func firstCall(t *testing.T, path string, ids []string) string {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		for _, l := range readActionsLog(t, path) {
			if contains(ids, l.ID) {
				return fmt.Sprintf("reached the provider %s before the chaos", time.Since(l.Time).Round(time.Millisecond))
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	return "did not come within 3 s"
}

// alertJSON is one firing Alertmanager alert asking for a reboot of a
// VPS.org server of sim-vpsorg.
func alertJSON(id string) string {
	return fmt.Sprintf(`{"status":"firing","labels":{"alertname":"ChaosBroken","provider":"vpsorg","account":"sim-vpsorg","id":%q,"remediation":"reboot"},"startsAt":%q,"endsAt":"0001-01-01T00:00:00Z","fingerprint":"chaos-%s"}`,
		id, time.Now().UTC().Format(time.RFC3339), id)
}

// postAlerts posts one notification with an alert for each of ids to r
// (5 s at most) and returns its status, 0 for no answer.
func postAlerts(r *replica, token string, ids []string) int {
	var as []string
	for _, id := range ids {
		as = append(as, alertJSON(id))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	body := `{"version":"4","status":"firing","receiver":"vps","groupKey":"chaos","alerts":[` + strings.Join(as, ",") + `]}`
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+r.addr+"/webhook/alertmanager", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// alertSent is one alert of the stream and when a replica answered 200.
type alertSent struct {
	id         string
	acceptedAt time.Time // zero: never accepted
	by         string    // the replica that answered 200 (itself or forwarding)
}

// stream posts one notification every 300 ms, each for the next server,
// to a random replica, retrying (another random replica) until one
// answers 200, 8 tries at most, as Alertmanager retries.
type stream struct {
	mu     sync.Mutex
	sent   []alertSent
	tries  map[string]int // replica:status (0: no answer) -> posts
	cancel context.CancelFunc
	done   chan struct{}
}

func startStream(reps []*replica, servers []string, token string) *stream {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	s := &stream{cancel: cancel, done: make(chan struct{}), tries: map[string]int{}}
	client := &http.Client{Timeout: 2 * time.Second}
	go func() {
		defer close(s.done)
		for _, id := range servers {
			if ctx.Err() != nil {
				return
			}
			a := alertSent{id: id}
			body := `{"version":"4","status":"firing","receiver":"vps","groupKey":"chaos","alerts":[` + alertJSON(id) + `]}`
			for try := 0; try < 8 && ctx.Err() == nil; try++ {
				r := reps[rand.IntN(len(reps))]
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+r.addr+"/webhook/alertmanager", strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+token)
				req.Header.Set("Content-Type", "application/json")
				resp, err := client.Do(req)
				code := 0
				if err == nil {
					code = resp.StatusCode
				}
				s.mu.Lock()
				s.tries[fmt.Sprintf("%s:%d", r.client, code)]++
				s.mu.Unlock()
				if err == nil {
					resp.Body.Close()
					if resp.StatusCode == http.StatusOK {
						a.acceptedAt, a.by = time.Now(), r.client
						break
					}
				}
				time.Sleep(250 * time.Millisecond)
			}
			s.mu.Lock()
			s.sent = append(s.sent, a)
			s.mu.Unlock()
			select {
			case <-ctx.Done():
			case <-time.After(300 * time.Millisecond):
			}
		}
	}()
	return s
}

// answers counts the posts by replica and status (0: no answer).
func (s *stream) answers() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.tries))
	for k, v := range s.tries {
		out[k] = v
	}
	return out
}

// stop ends the stream and returns what it sent; safe to call twice.
func (s *stream) stop() []alertSent {
	s.cancel()
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]alertSent(nil), s.sent...)
}
