package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
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
	late := checkActionsLog(t, lines, chaosTimes{
		killed: reps[killed].client, tKill: tKill,
		frozen: reps[frozen].client, tStop: tStop, tCont: tCont, reelected: mon.firstLeaderAfter(frozen, tCont),
		tFreeze: tFreeze, tThaw: tThaw, ttl: ttl,
	})
	for _, l := range lines {
		if i := clientIndex(reps, l.Client); i < 0 {
			t.Errorf("a call from an unknown client: %+v", l)
		} else if !mon.ledAround(i, l.Time, 5*time.Second) && !isLate(l, late) {
			t.Errorf("a call from %s, never seen leading within 5 s of it: %+v", l.Client, l)
		}
	}
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
// It returns the frozen replica's late calls.
func checkActionsLog(t *testing.T, lines []sim.ActionLine, c chaosTimes) []sim.ActionLine {
	t.Helper()
	problems, late := actionsLogProblems(lines, c)
	for _, p := range problems {
		t.Error(p)
	}
	if len(late) == 1 {
		t.Logf("one call of the frozen replica arrived after it froze (on its way then): %+v", late[0])
	}
	return late
}

func isLate(l sim.ActionLine, late []sim.ActionLine) bool {
	for _, x := range late {
		if x == l {
			return true
		}
	}
	return false
}

// clientIndex is the replica whose credential label is client, or -1.
func clientIndex(reps []*replica, client string) int {
	for i, r := range reps {
		if r.client == client {
			return i
		}
	}
	return -1
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
