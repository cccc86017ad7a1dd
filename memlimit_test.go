package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/KimMachineGun/automemlimit/memlimit"
	"github.com/go-kit/log"
)

func TestParseFlagsAutoMemLimit(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		enabled bool
		ratio   float64
		err     string
	}{
		{"defaults", nil, true, 0.9, ""},
		{"off", []string{"--no-auto-gomemlimit"}, false, 0.9, ""},
		{"ratio 1", []string{"--auto-gomemlimit.ratio=1"}, true, 1, ""},
		{"ratio 0.5", []string{"--auto-gomemlimit.ratio=0.5"}, true, 0.5, ""},
		{"ratio 0", []string{"--auto-gomemlimit.ratio=0"}, false, 0, "--auto-gomemlimit.ratio must be greater than 0 and at most 1, got 0"},
		{"ratio negative", []string{"--auto-gomemlimit.ratio=-0.5"}, false, 0, "must be greater than 0 and at most 1, got -0.5"},
		{"ratio above 1", []string{"--auto-gomemlimit.ratio=1.5"}, false, 0, "must be greater than 0 and at most 1, got 1.5"},
		{"ratio NaN", []string{"--auto-gomemlimit.ratio=NaN"}, false, 0, "must be greater than 0 and at most 1, got NaN"},
		{"ratio not a number", []string{"--auto-gomemlimit.ratio=most"}, false, 0, "invalid syntax"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := parseFlags(tc.args)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if f.autoMemLimit != tc.enabled || f.autoMemLimitRatio != tc.ratio {
				t.Errorf("auto-gomemlimit %v ratio %v, want %v %v", f.autoMemLimit, f.autoMemLimitRatio, tc.enabled, tc.ratio)
			}
		})
	}
}

// unsetenv removes an environment variable for the test (t.Setenv
// restores it afterwards).
func unsetenv(t *testing.T, key string) {
	t.Setenv(key, "")
	os.Unsetenv(key)
}

// TestAutoMemLimit sets the Go memory limit from an injected cgroup limit
// and checks the limit and the log line; the process's limit is restored
// after each case.
func TestAutoMemLimit(t *testing.T) {
	const gib = 1 << 30
	const before = 123 << 20 // what the runtime would have read from a GOMEMLIMIT
	called := false
	limitOf := func(v uint64) memlimit.Provider {
		return func() (uint64, error) { called = true; return v, nil }
	}
	failing := func(err error) memlimit.Provider {
		return func() (uint64, error) { called = true; return 0, err }
	}
	for _, tc := range []struct {
		name         string
		env          map[string]string
		ratio        float64
		provider     memlimit.Provider
		want         int64
		wantCalled   bool
		log, notLog  string
		wantWarnings bool
	}{
		{"1 GiB at 0.9", nil, 0.9, limitOf(gib), 966367641, true,
			`msg="Go memory limit set from the cgroup memory limit" cgroup_limit_bytes=1073741824 ratio=0.9 go_memory_limit_bytes=966367641`, "ratio_from", false},
		{"1 GiB at 1", nil, 1, limitOf(gib), gib, true,
			`cgroup_limit_bytes=1073741824 ratio=1 go_memory_limit_bytes=1073741824`, "", false},
		{"no cgroup limit", nil, 0.9, failing(memlimit.ErrNoLimit), math.MaxInt64, true,
			`msg="no cgroup memory limit; Go memory limit not set"`, "cgroup_limit_bytes", false},
		{"cgroup unreadable", nil, 0.9, failing(errors.New("failed to read memory.max: permission denied")), before, true,
			`level=warn msg="cannot set the Go memory limit from the cgroup memory limit; not set" err="failed to set GOMEMLIMIT: failed to read memory.max: permission denied"`, "", true},
		{"GOMEMLIMIT set", map[string]string{"GOMEMLIMIT": "123MiB"}, 0.9, limitOf(gib), before, false,
			`msg="GOMEMLIMIT is set in the environment; leaving it (--auto-gomemlimit does not override it)" gomemlimit=123MiB go_memory_limit_bytes=128974848`, "cgroup", false},
		{"AUTOMEMLIMIT ratio", map[string]string{"AUTOMEMLIMIT": "0.5"}, 0.9, limitOf(gib), gib / 2, true,
			`cgroup_limit_bytes=1073741824 ratio=0.5 go_memory_limit_bytes=536870912 ratio_from=AUTOMEMLIMIT`, "", false},
		{"AUTOMEMLIMIT off", map[string]string{"AUTOMEMLIMIT": "off"}, 0.9, limitOf(gib), before, false,
			`msg="AUTOMEMLIMIT=off in the environment: Go memory limit not set from the cgroup"`, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			unsetenv(t, "GOMEMLIMIT")
			unsetenv(t, "AUTOMEMLIMIT")
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			prev := debug.SetMemoryLimit(before)
			t.Cleanup(func() { debug.SetMemoryLimit(prev) })
			called = false
			var buf strings.Builder
			got := autoMemLimit(log.NewLogfmtLogger(&buf), tc.ratio, tc.provider)
			if got != tc.want || debug.SetMemoryLimit(-1) != tc.want {
				t.Errorf("limit %d (runtime %d), want %d", got, debug.SetMemoryLimit(-1), tc.want)
			}
			if called != tc.wantCalled {
				t.Errorf("provider called: %v, want %v", called, tc.wantCalled)
			}
			out := buf.String()
			if !strings.Contains(out, tc.log) {
				t.Errorf("log:\n%s\nwant %s", out, tc.log)
			}
			if tc.notLog != "" && strings.Contains(out, tc.notLog) {
				t.Errorf("log has %q:\n%s", tc.notLog, out)
			}
			if n := strings.Count(out, "\n"); n != 1 {
				t.Errorf("%d log lines, want 1:\n%s", n, out)
			}
			if strings.Contains(out, "level=warn") != tc.wantWarnings {
				t.Errorf("warning: %v, want %v:\n%s", !tc.wantWarnings, tc.wantWarnings, out)
			}
		})
	}
}

// TestAutoGoMemLimitBinary runs the built exporter: the ratio is
// validated like every flag (exit 1), a GOMEMLIMIT in the environment is
// kept and said so, and without one the limit follows this machine's
// cgroup (whichever it has), as go_gc_gomemlimit_bytes shows.
func TestAutoGoMemLimitBinary(t *testing.T) {
	skipShort(t)
	t.Run("bad ratio", func(t *testing.T) {
		for _, ratio := range []string{"0", "1.01", "-1"} {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			out, err := exec.CommandContext(ctx, binPath, "--demo", "--auto-gomemlimit.ratio="+ratio).CombinedOutput()
			cancel()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Errorf("ratio %s: %v, want exit 1", ratio, err)
			}
			if want := "vps_exporter: --auto-gomemlimit.ratio must be greater than 0 and at most 1, got " + ratio; !strings.Contains(string(out), want) {
				t.Errorf("ratio %s: output %q, want %q", ratio, out, want)
			}
		}
	})
	t.Run("GOMEMLIMIT kept", func(t *testing.T) {
		t.Setenv("GOMEMLIMIT", "300MiB")
		e := startExporter(t, "--demo", "--demo.servers=3")
		if want := `msg="GOMEMLIMIT is set in the environment; leaving it (--auto-gomemlimit does not override it)" gomemlimit=300MiB go_memory_limit_bytes=314572800`; !strings.Contains(e.logs.String(), want) {
			t.Errorf("log lacks %s:\n%s", want, e.logs)
		}
		if m := e.metrics(); !hasLine(m, "go_gc_gomemlimit_bytes 3.145728e+08") {
			t.Error("go_gc_gomemlimit_bytes is not 300 MiB")
		}
	})
	t.Run("from the cgroup", func(t *testing.T) {
		unsetenv(t, "GOMEMLIMIT")
		unsetenv(t, "AUTOMEMLIMIT")
		e := startExporter(t, "--demo", "--demo.servers=3", "--auto-gomemlimit.ratio=0.8")
		cg, err := memlimit.FromCgroup()
		wantLog, wantMetric := "", ""
		switch {
		case errors.Is(err, memlimit.ErrNoLimit):
			wantLog = `msg="no cgroup memory limit; Go memory limit not set"`
			wantMetric = "go_gc_gomemlimit_bytes 9.223372036854776e+18"
		case err != nil:
			t.Skipf("this machine's cgroup cannot be read: %v", err)
		default:
			limit := uint64(float64(cg) * 0.8)
			wantLog = fmt.Sprintf("cgroup_limit_bytes=%d ratio=0.8 go_memory_limit_bytes=%d", cg, limit)
			wantMetric = fmt.Sprintf("go_gc_gomemlimit_bytes %g", float64(limit))
		}
		if !strings.Contains(e.logs.String(), wantLog) {
			t.Errorf("log lacks %s:\n%s", wantLog, e.logs)
		}
		if m := e.metrics(); !hasLine(m, wantMetric) {
			t.Errorf("/metrics lacks %s", wantMetric)
		}
	})
}
