package etcdha

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// etcdBinary is Debian's etcd as scripts/etcd unpacks it, or $VPS_ETCD.
// Without it the test is skipped, except under CI (.ci/run installs it),
// where it fails.
func etcdBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: starts no process")
	}
	bin := os.Getenv("VPS_ETCD")
	if bin == "" {
		bin = filepath.Join("..", "..", "..", ".build", "etcd", "usr", "bin", "etcd")
	}
	if _, err := os.Stat(bin); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("etcd not found at %s: run scripts/etcd (.ci/run does)", bin)
		}
		t.Skipf("etcd not found at %s: run scripts/etcd", bin)
	}
	return bin
}

// member is one etcd process of a test cluster.
type member struct {
	name, client string
	cmd          *exec.Cmd
}

// startCluster runs n etcd members (the real binary) on loopback ports in
// temporary directories, for the test only, and waits for the cluster to
// answer.
func startCluster(t *testing.T, bin string, n int) []*member {
	t.Helper()
	ms := make([]*member, n)
	peers := make([]string, n)
	var initial []string
	for i := range ms {
		ms[i] = &member{name: fmt.Sprintf("m%d", i), client: "http://" + freeAddr(t)}
		peers[i] = "http://" + freeAddr(t)
		initial = append(initial, ms[i].name+"="+peers[i])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	for i, m := range ms {
		m.cmd = exec.CommandContext(ctx, bin, "--name", m.name, "--data-dir", t.TempDir(),
			"--listen-client-urls", m.client, "--advertise-client-urls", m.client,
			"--listen-peer-urls", peers[i], "--initial-advertise-peer-urls", peers[i],
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", "etcdha-test", "--logger", "zap", "--log-level", "error")
		m.cmd.WaitDelay = 5 * time.Second
		if err := m.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = m.cmd.Process.Signal(syscall.SIGCONT)
			_ = m.cmd.Process.Kill()
			_ = m.cmd.Wait()
		})
	}
	c, err := clientv3.New(clientv3.Config{Endpoints: endpoints(ms), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitFor(t, 30*time.Second, "the etcd cluster answering", func() bool {
		rctx, rcancel := context.WithTimeout(context.Background(), time.Second)
		defer rcancel()
		_, err := c.Put(rctx, "/health", "ok")
		return err == nil
	})
	return ms
}

func endpoints(ms []*member) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.client)
	}
	return out
}

// termSpan is when one term led, as its replica saw it.
type termSpan struct {
	who        string
	start, end time.Time
}

// On a real three-member cluster (Debian's etcd 3.4 with the v3.7
// client), two replicas run: one leads. Two members frozen (SIGSTOP): no
// quorum, so the leader is deposed within its lease and nobody leads
// while quorum is lost; the members resumed, a replica leads again. No
// two terms ever overlap.
func TestQuorumLoss(t *testing.T) {
	bin := etcdBinary(t)
	const ttl = 3 * time.Second
	ms := startCluster(t, bin, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	var mu sync.Mutex
	var spans []termSpan
	live := func() (n int) {
		mu.Lock()
		defer mu.Unlock()
		for _, s := range spans {
			if s.end.IsZero() {
				n++
			}
		}
		return n
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(spans) }
	var wg sync.WaitGroup
	for _, name := range []string{"a", "b"} {
		e := newElectorOn(t, endpoints(ms), name, ttl)
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.Run(ctx, func(term *Term) {
				mu.Lock()
				i := len(spans)
				spans = append(spans, termSpan{who: name, start: time.Now()})
				mu.Unlock()
				<-term.Context().Done()
				mu.Lock()
				spans[i].end = time.Now()
				mu.Unlock()
			})
		}()
	}
	waitFor(t, 20*time.Second, "a leader", func() bool { return live() == 1 })

	for _, m := range ms[1:] {
		if err := m.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
	}
	frozen := time.Now()
	waitFor(t, ttl+5*time.Second, "the leader deposed without quorum", func() bool { return live() == 0 })
	t.Logf("deposed %v after quorum was lost", time.Since(frozen).Round(time.Millisecond))
	terms := count()
	time.Sleep(3 * ttl)
	if live() != 0 || count() != terms {
		t.Fatalf("a term began without quorum: %d live, %d terms (were %d)", live(), count(), terms)
	}

	for _, m := range ms[1:] {
		if err := m.cmd.Process.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
	}
	resumed := time.Now()
	waitFor(t, 30*time.Second, "a leader after quorum is back", func() bool { return live() == 1 })
	t.Logf("a leader %v after quorum was back", time.Since(resumed).Round(time.Millisecond))

	cancel()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	sort.Slice(spans, func(i, j int) bool { return spans[i].start.Before(spans[j].start) })
	for i := 1; i < len(spans); i++ {
		if spans[i].start.Before(spans[i-1].end) {
			t.Errorf("terms overlap: %s %v-%v and %s from %v", spans[i-1].who, spans[i-1].start.Format("15:04:05.000"),
				spans[i-1].end.Format("15:04:05.000"), spans[i].who, spans[i].start.Format("15:04:05.000"))
		}
	}
}
