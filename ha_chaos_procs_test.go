package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/vps-exporter/vps_exporter/providers/sim"
)

// The HA chaos test's processes (TestHAChaos): etcd members, vps_sim and
// exporter replicas, each its own process that the test can SIGKILL,
// SIGSTOP and SIGCONT; and the readers of what they say.

// proc is one process of the chaos test. At cleanup it is continued (in
// case it was stopped), killed and reaped, and its output shown when the
// test failed.
type proc struct {
	label string
	cmd   *exec.Cmd
	logs  *syncBuffer
	done  chan struct{} // closed when the process has exited
}

// startProc runs name with args for at most limit.
func startProc(t *testing.T, limit time.Duration, label, name string, args ...string) *proc {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	p := &proc{label: label, logs: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.CommandContext(ctx, name, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	p.cmd.WaitDelay = 5 * time.Second
	if err := p.cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start %s: %v", label, err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGCONT)
		_ = p.cmd.Process.Kill()
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			t.Errorf("%s (pid %d) not reaped 15 s after SIGKILL", label, p.cmd.Process.Pid)
		}
		cancel()
		if t.Failed() {
			out := p.logs.String()
			if len(out) > 12000 {
				out = "...\n" + out[len(out)-12000:]
			}
			t.Logf("%s log:\n%s", label, out)
		}
	})
	return p
}

// signal sends sig to the process, failing the test if it cannot.
func (p *proc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("%s %s: %v", sig, p.label, err)
	}
}

// kill9 kills the process with SIGKILL and waits (10 s at most) for it.
func (p *proc) kill9(t *testing.T) {
	t.Helper()
	p.signal(t, syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s still running 10 s after SIGKILL", p.label)
	}
}

// etcdMember is one member of the test's etcd cluster.
type etcdMember struct {
	*proc
	name      string
	clientURL string
}

// startEtcd runs an n-member static etcd cluster on loopback ports, data
// in the test's temporary directory, and waits (30 s at most) until every
// member reports itself healthy.
func startEtcd(t *testing.T, bin string, n int) []*etcdMember {
	t.Helper()
	type urls struct{ name, client, peer string }
	var us []urls
	var cluster []string
	for i := 0; i < n; i++ {
		u := urls{fmt.Sprintf("e%d", i), "http://" + freePort(t), "http://" + freePort(t)}
		us = append(us, u)
		cluster = append(cluster, u.name+"="+u.peer)
	}
	dir := t.TempDir()
	var out []*etcdMember
	for _, u := range us {
		p := startProc(t, 5*time.Minute, "etcd "+u.name, bin,
			"--name="+u.name, "--data-dir="+filepath.Join(dir, u.name),
			"--listen-client-urls="+u.client, "--advertise-client-urls="+u.client,
			"--listen-peer-urls="+u.peer, "--initial-advertise-peer-urls="+u.peer,
			"--initial-cluster="+strings.Join(cluster, ","), "--initial-cluster-state=new",
			"--initial-cluster-token=vps-chaos", "--heartbeat-interval=100", "--election-timeout=1000",
			"--logger=zap", "--log-level=warn")
		out = append(out, &etcdMember{proc: p, name: u.name, clientURL: u.client})
	}
	for _, m := range out {
		within(t, 30*time.Second, "etcd "+m.name+" healthy", func() bool {
			code, body := httpGet(m.clientURL+"/health", time.Second)
			return code == 200 && strings.Contains(body, `"health":"true"`)
		})
	}
	return out
}

// etcdLeader is the index of the member that is etcd's raft leader, from
// the members' own status (the v3 JSON gateway), or -1 when none says.
func etcdLeader(members []*etcdMember) int {
	ids := map[uint64]int{}
	var leader uint64
	for i, m := range members {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, m.clientURL+"/v3/maintenance/status", strings.NewReader("{}"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			cancel()
			continue
		}
		var st struct {
			Header struct {
				MemberID uint64 `json:"member_id,string"`
			} `json:"header"`
			Leader uint64 `json:"leader,string"`
		}
		err = json.NewDecoder(resp.Body).Decode(&st)
		resp.Body.Close()
		cancel()
		if err == nil {
			ids[st.Header.MemberID] = i
			if st.Leader != 0 {
				leader = st.Leader
			}
		}
	}
	if i, ok := ids[leader]; ok && leader != 0 {
		return i
	}
	return -1
}

// httpGet is one bounded GET: its status (0 when it failed) and body.
func httpGet(url string, timeout time.Duration) (int, string) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// leaderLine matches vps_remediation_leader 1 in /metrics.
var leaderLine = regexp.MustCompile(`(?m)^vps_remediation_leader(\{[^}]*\})? 1$`)

// replica is one exporter replica of the chaos test.
type replica struct {
	*proc
	// client is the label of its credentials in the actions log.
	client string
	addr   string
}

// isLeader reads the replica's vps_remediation_leader: 1, 0, or -1 when
// /metrics does not answer within timeout (killed, stopped).
func (r *replica) isLeader(timeout time.Duration) int {
	code, body := httpGet("http://"+r.addr+"/metrics", timeout)
	switch {
	case code != 200:
		return -1
	case leaderLine.MatchString(body):
		return 1
	}
	return 0
}

// haReplicaConfig turns the configuration vps_sim wrote for one replica
// into that replica's HA configuration: live remediation driven by the
// webhook only (no rules, no escalation inside the test, limits that the
// stream cannot reach), on etcd at endpoints with lease ttl, advertising
// addr. Everything else (accounts, credentials) stays as vps_sim wrote it.
func haReplicaConfig(t *testing.T, simCfg, out, addr string, endpoints []string, ttl time.Duration, token string) {
	t.Helper()
	b, err := os.ReadFile(simCfg)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s: %v", simCfg, err)
	}
	doc["remediation"] = map[string]any{
		"enabled": true, "dry_run": false, "max_actions_per_hour": 10000, "max_fleet_fraction": 1,
		"webhook": map[string]any{
			"enabled": true, "allowed_actions": []string{"reboot"}, "bearer_token": token, "verify": "10m",
		},
		"ha": map[string]any{
			"advertise_url": "http://" + addr,
			"etcd": map[string]any{
				"endpoints": endpoints, "prefix": "/vps_chaos", "lease_ttl": ttl.String(),
			},
		},
	}
	if g, ok := doc["global"].(map[string]any); ok {
		g["refresh_interval"] = "2s"
		g["request_timeout"] = "2s"
	}
	// The VPS.org account only: the alerts are for its servers, and three
	// replicas polling three accounts each would load the shared cores.
	var accounts []any
	if ps, ok := doc["providers"].([]any); ok {
		for _, p := range ps {
			if m, ok := p.(map[string]any); ok && m["type"] == "vpsorg" {
				accounts = append(accounts, m)
			}
		}
	}
	if len(accounts) != 1 {
		t.Fatalf("%s: %d vpsorg accounts, want 1", simCfg, len(accounts))
	}
	doc["providers"] = accounts
	b, err = yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// readActionsLog parses vps_sim's actions log.
func readActionsLog(t *testing.T, path string) []sim.ActionLine {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("actions log: %v", err)
	}
	defer f.Close()
	var out []sim.ActionLine
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var l sim.ActionLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("actions log line %q: %v", sc.Text(), err)
		}
		out = append(out, l)
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("actions log: %v", err)
	}
	return out
}
