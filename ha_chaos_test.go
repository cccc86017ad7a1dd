package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vps-exporter/vps_exporter/config"
	"github.com/vps-exporter/vps_exporter/providers/sim"
)

// TestHAChaos is issue 23's chaos test on the built binaries: 3 etcd
// members (Debian etcd 3.4 from scripts/etcd, or $VPS_ETCD), vps_sim as its own process
// with --replicas=3 and --actions-log, and 3 exporter replicas with live
// remediation on remediation.ha. A stream of Alertmanager notifications,
// each for a distinct VPS.org server, goes to random replicas while the
// leader is killed with SIGKILL, the next leader is stopped with SIGSTOP
// past its lease and continued, and 2 of the 3 etcd members (etcd's own
// raft leader among them) are stopped and continued. Then, from the
// provider's own actions log (which replica's credential made each call):
//   - no server was acted on twice;
//   - the killed replica sent nothing after its kill; the frozen one
//     nothing after its SIGCONT while it was not elected again (at most
//     the one call that may have been on its way when it was frozen, the
//     gap issue 23 says the provider APIs leave open);
//   - nobody sent anything while etcd had no quorum (after the lease);
//   - every alert answered 200 was acted on, except those accepted in the
//     few seconds before a kill, a freeze or the loss of quorum (their
//     intents may be pending: the next leader marks them unknown and does
//     not resend);
//   - another replica reports vps_remediation_leader 1 within lease_ttl
//   - 5 s of the kill and of the freeze.
func TestHAChaos(t *testing.T) {
	const (
		ttl      = 3 * time.Second
		failover = ttl + 5*time.Second // the bound the issue gives: lease_ttl + a few seconds
		token    = "chaos-SECRET-hook-8e2a"
		// inFlight is how long before a kill, a freeze or the loss of
		// quorum an accepted alert may still be on its way to its action
		// (and then left unknown by the next leader, not resent).
		inFlight = 2 * time.Second
	)
	etcdBin := debianEtcd(t) // ha_binary_test.go: scripts/etcd, or $VPS_ETCD
	simBin := buildVPSSim(t)
	dir := t.TempDir()
	alogPath := filepath.Join(dir, "actions.jsonl")
	simCfg := filepath.Join(dir, "sim.yml")
	simProc := startProc(t, 5*time.Minute, "vps_sim", simBin, "--servers=600", "--replicas=3", "--seed=11",
		"--refresh-interval=2s", "--actions-log="+alogPath, "--config-out="+simCfg)
	var simCfgs []*config.Config
	within(t, 60*time.Second, "vps_sim's three replica configurations", func() bool {
		simCfgs = simCfgs[:0]
		for i := 1; i <= 3; i++ {
			c, err := config.Load(filepath.Join(dir, fmt.Sprintf("sim.replica-%d.yml", i)))
			if err != nil {
				return false
			}
			simCfgs = append(simCfgs, c)
		}
		return true
	})
	var secrets []string
	for _, c := range simCfgs {
		for _, p := range c.Providers {
			secrets = append(secrets, string(p.Token), string(p.APIKey))
		}
	}

	probe := filepath.Join(dir, "probe.yml")
	haReplicaConfig(t, filepath.Join(dir, "sim.replica-1.yml"), probe, "127.0.0.1:9", []string{"http://127.0.0.1:9"}, ttl, token)
	haWired(t, probe)

	members := startEtcd(t, etcdBin, 3)
	var endpoints []string
	for _, m := range members {
		endpoints = append(endpoints, m.clientURL)
	}
	var reps []*replica
	for i := 1; i <= 3; i++ {
		addr := freePort(t)
		cfg := filepath.Join(dir, fmt.Sprintf("ha-%d.yml", i))
		haReplicaConfig(t, filepath.Join(dir, fmt.Sprintf("sim.replica-%d.yml", i)), cfg, addr, endpoints, ttl, token)
		p := startProc(t, 5*time.Minute, fmt.Sprintf("replica-%d", i), binPath, "--config.file="+cfg, "--web.listen-address="+addr)
		reps = append(reps, &replica{proc: p, client: fmt.Sprintf("replica-%d", i), addr: addr})
	}
	for _, r := range reps {
		within(t, 60*time.Second, r.label+" listing sim-vpsorg", func() bool {
			code, body := httpGet("http://"+r.addr+"/metrics", 2*time.Second)
			return code == 200 && hasLine(body, `vps_provider_up{account="sim-vpsorg",provider="vpsorg"} 1`)
		})
	}
	_, body := httpGet("http://"+reps[0].addr+"/metrics", 5*time.Second)
	servers := runningServers(body, "sim-vpsorg")
	if len(servers) < 100 {
		t.Fatalf("%d running VPS.org servers, want at least 100", len(servers))
	}
	rand.Shuffle(len(servers), func(i, j int) { servers[i], servers[j] = servers[j], servers[i] })

	mon := startMonitor(reps)
	defer mon.stop()
	first, _ := waitLeader(t, reps, 30*time.Second)
	t.Logf("first leader: %s", reps[first].client)
	// The last servers are for the bursts posted to the leader right
	// before it is killed or frozen, so that it has work in hand.
	const burstSize = 8
	bursts := [][]string{servers[len(servers)-burstSize:], servers[len(servers)-2*burstSize : len(servers)-burstSize]}
	servers = servers[:len(servers)-2*burstSize]
	st := startStream(reps, servers, token)
	defer st.stop()
	within(t, 30*time.Second, "the first actions", func() bool { return len(readActionsLog(t, alogPath)) >= 3 })
	time.Sleep(3 * time.Second)

	// 1. kill -9 of the leader.
	killed := first
	t.Logf("a burst of %d alerts to %s before its kill: HTTP %d", burstSize, reps[killed].client, postAlerts(reps[killed], token, bursts[0]))
	t.Logf("its first call %s", firstCall(t, alogPath, bursts[0]))
	tKill := time.Now()
	reps[killed].kill9(t)
	second, took := waitLeader(t, reps, failover+10*time.Second, killed)
	t.Logf("kill -9 of %s: %s leads after %s", reps[killed].client, reps[second].client, took.Round(time.Millisecond))
	if took > failover {
		t.Errorf("failover after the kill took %s, want at most %s", took, failover)
	}
	time.Sleep(5 * time.Second)

	// 2. SIGSTOP of the leader past its lease, then SIGCONT.
	frozen := second
	t.Logf("a burst of %d alerts to %s before its freeze: HTTP %d", burstSize, reps[frozen].client, postAlerts(reps[frozen], token, bursts[1]))
	t.Logf("its first call %s", firstCall(t, alogPath, bursts[1]))
	tStop := time.Now()
	reps[frozen].signal(t, syscall.SIGSTOP)
	third, took := waitLeader(t, reps, failover+10*time.Second, killed, frozen)
	t.Logf("SIGSTOP of %s: %s leads after %s", reps[frozen].client, reps[third].client, took.Round(time.Millisecond))
	if took > failover {
		t.Errorf("failover after the freeze took %s, want at most %s", took, failover)
	}
	time.Sleep(ttl)
	tCont := time.Now()
	reps[frozen].signal(t, syscall.SIGCONT)
	if !eventually(20*time.Second, func() bool { return reps[frozen].isLeader(2*time.Second) == 0 }) {
		t.Errorf("%s still reports leader (or does not answer) 20 s after its SIGCONT", reps[frozen].client)
	}
	time.Sleep(5 * time.Second)

	// 3. SIGSTOP of 2 of the 3 etcd members, etcd's raft leader first.
	lead := etcdLeader(members)
	if lead < 0 {
		t.Logf("no etcd member names the raft leader; freezing e0 and e1")
		lead = 0
	}
	icy := []int{lead, (lead + 1) % 3}
	tFreeze := time.Now()
	for _, i := range icy {
		members[i].signal(t, syscall.SIGSTOP)
	}
	t.Logf("SIGSTOP of etcd %s (raft leader) and %s", members[icy[0]].name, members[icy[1]].name)
	if !eventually(failover+10*time.Second, func() bool {
		for i, r := range reps {
			if i != killed && r.isLeader(2*time.Second) == 1 {
				return false
			}
		}
		return true
	}) {
		t.Errorf("a replica still reports leader %s after etcd lost its quorum", failover+10*time.Second)
	}
	time.Sleep(ttl)
	tThaw := time.Now()
	for _, i := range icy {
		members[i].signal(t, syscall.SIGCONT)
	}
	fourth, took := waitLeader(t, reps, 60*time.Second, killed)
	t.Logf("etcd continued: %s leads after %s", reps[fourth].client, took.Round(time.Millisecond))
	time.Sleep(5 * time.Second)
	alerts := st.stop()

	// Every alert accepted outside the windows around the chaos is acted on.
	exempt := func(at time.Time) bool {
		for _, w := range [][2]time.Time{{tKill.Add(-inFlight), tKill}, {tStop.Add(-inFlight), tStop}, {tFreeze.Add(-inFlight), tFreeze.Add(time.Second)}} {
			if !at.Before(w[0]) && !at.After(w[1]) {
				return true
			}
		}
		return false
	}
	var want []string
	accepted, exempted := 0, 0
	answeredBy := map[string]int{}
	for _, a := range alerts {
		switch {
		case a.acceptedAt.IsZero():
			continue
		case exempt(a.acceptedAt):
			exempted++
		default:
			want = append(want, a.id)
		}
		accepted++
		answeredBy[a.by]++
	}
	if accepted < 30 || len(want) < 15 {
		t.Errorf("only %d of %d alerts were accepted, %d outside the chaos windows: too few to say anything", accepted, len(alerts), len(want))
	}
	var missing []string
	if !eventually(60*time.Second, func() bool {
		acted := map[string]bool{}
		for _, l := range readActionsLog(t, alogPath) {
			acted[l.ID] = true
		}
		missing = missing[:0]
		for _, id := range want {
			if !acted[id] {
				missing = append(missing, id)
			}
		}
		return len(missing) == 0
	}) {
		t.Errorf("%d alerts answered 200 outside the chaos windows were never acted on: %v", len(missing), missing)
	}
	time.Sleep(2 * time.Second) // late calls, if any, land in the log

	lines := readActionsLog(t, alogPath)
	for i, b := range bursts {
		by := map[string]int{}
		for _, l := range lines {
			if contains(b, l.ID) {
				by[l.Client]++
			}
		}
		t.Logf("burst %d (to %s): acted on by %v", i+1, []string{reps[killed].client, reps[frozen].client}[i], by)
	}
	checkActionsLog(t, lines, chaosTimes{
		killed: reps[killed].client, tKill: tKill,
		frozen: reps[frozen].client, tStop: tStop, tCont: tCont, reelected: mon.firstLeaderAfter(frozen, tCont),
		tFreeze: tFreeze, tThaw: tThaw, ttl: ttl,
	})
	t.Logf("%d alerts sent, %d accepted (%d in a chaos window; answered 200 by %v), %d action calls; posts by replica and answer: %v", len(alerts), accepted, exempted, answeredBy, len(lines), st.answers())

	b, _ := os.ReadFile(alogPath)
	for _, p := range append([]*proc{simProc}, procsOf(reps)...) {
		for _, s := range append(secrets, token) {
			if s != "" && (strings.Contains(p.logs.String(), s) || strings.Contains(string(b), s)) {
				t.Errorf("a credential in %s's log or the actions log", p.label)
			}
		}
	}
}

// haWired skips the test while the exporter refuses remediation.ha (a
// build without issue 23's wiring: the engine on etcd, forwarding).
func haWired(t *testing.T, cfg string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, binPath, "--config.check", "--config.file="+cfg).CombinedOutput()
	if strings.Contains(string(out), "not supported yet in this build") {
		t.Skip("needs issue 23's wiring (branch ha1-wire: the remediation engine run by the etcd-elected leader, fenced writes, send check; ha2-standby: standbys forwarding the webhook): this build refuses remediation.ha")
	}
	if err != nil {
		t.Fatalf("--config.check on the HA configuration: %v\n%s", err, out)
	}
}

// chaosTimes are the moments of the chaos and who was hit.
type chaosTimes struct {
	killed       string
	tKill        time.Time
	frozen       string
	tStop, tCont time.Time
	reelected    time.Time // the frozen replica's next term (zero: none)
	tFreeze      time.Time
	tThaw        time.Time
	ttl          time.Duration
}

// checkActionsLog asserts the provider's own record against the chaos.
func checkActionsLog(t *testing.T, lines []sim.ActionLine, c chaosTimes) {
	t.Helper()
	problems, late := actionsLogProblems(lines, c)
	for _, p := range problems {
		t.Error(p)
	}
	if len(late) == 1 {
		t.Logf("one call of the frozen replica arrived after its SIGCONT (on its way when it froze): %+v", late[0])
	}
}

// actionsLogProblems is what the provider's record says went wrong: a
// server acted on twice, a call from the killed replica after its kill,
// more than one call (the one on its way when it froze) from the frozen
// replica after it froze and before its next term, a call while etcd had
// no quorum past the lease. late are the frozen replica's calls counted.
func actionsLogProblems(lines []sim.ActionLine, c chaosTimes) (problems []string, late []sim.ActionLine) {
	per := map[string][]sim.ActionLine{}
	var keys []string
	for _, l := range lines {
		k := string(l.API) + "/" + l.ID
		if per[k] == nil {
			keys = append(keys, k)
		}
		per[k] = append(per[k], l)
	}
	for _, k := range keys {
		if ls := per[k]; len(ls) > 1 {
			problems = append(problems, fmt.Sprintf("server %s acted on %d times: %+v", k, len(ls), ls))
		}
	}
	for _, l := range lines {
		switch {
		case l.Client == c.killed && l.Time.After(c.tKill.Add(time.Second)):
			problems = append(problems, fmt.Sprintf("the killed replica %s sent a call after its kill: %+v", c.killed, l))
		case l.Client == c.frozen && l.Time.After(c.tStop.Add(500*time.Millisecond)) && (c.reelected.IsZero() || l.Time.Before(c.reelected)):
			late = append(late, l)
		case l.Time.After(c.tFreeze.Add(c.ttl)) && !l.Time.After(c.tThaw):
			problems = append(problems, fmt.Sprintf("a call while etcd had no quorum (%s after the freeze): %+v", l.Time.Sub(c.tFreeze), l))
		}
	}
	if len(late) > 1 {
		problems = append(problems, fmt.Sprintf("the frozen replica %s sent %d calls after it was deposed, want at most the one on its way: %+v", c.frozen, len(late), late))
	}
	return problems, late
}

// runningServers are the ids of an account's servers that /metrics says
// are up.
func runningServers(metrics, account string) []string {
	line := regexp.MustCompile(`(?m)^vps_server_up\{([^}]*)\} 1$`)
	id := regexp.MustCompile(`(?:^|,)id="(\d+)"`)
	var out []string
	for _, m := range line.FindAllStringSubmatch(metrics, -1) {
		if !strings.Contains(","+m[1]+",", `,account="`+account+`",`) {
			continue
		}
		if v := id.FindStringSubmatch(m[1]); v != nil {
			out = append(out, v[1])
		}
	}
	sort.Strings(out)
	return out
}

func procsOf(reps []*replica) []*proc {
	out := make([]*proc, 0, len(reps))
	for _, r := range reps {
		out = append(out, r.proc)
	}
	return out
}

// waitLeader waits (at most bound) until a replica not in skip reports
// vps_remediation_leader 1, and returns it and how long that took.
func waitLeader(t *testing.T, reps []*replica, bound time.Duration, skip ...int) (int, time.Duration) {
	t.Helper()
	start := time.Now()
	for time.Since(start) < bound {
		for i, r := range reps {
			if !contains(skip, i) && r.isLeader(500*time.Millisecond) == 1 {
				return i, time.Since(start)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no replica leader (skipping %v) within %s", skip, bound)
	return -1, 0
}

// eventually polls cond every 100 ms for up to d and says whether it
// held.
func eventually(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
	return true
}

func contains[T comparable](xs []T, x T) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

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
				v := r.isLeader(300 * time.Millisecond)
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
