package main

import (
	"errors"
	"os"
	"runtime/debug"

	"github.com/KimMachineGun/automemlimit/memlimit"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
)

// autoMemLimit sets the Go runtime's memory limit (GOMEMLIMIT) to ratio of
// the memory limit provider reports (memlimit.FromCgroup: the container's
// cgroup limit), as Prometheus' --auto-gomemlimit does with the same
// library, so that the garbage collector works harder before the kernel's
// OOM killer would: the heap may grow to GOGC's target while there is
// room, and no further than the limit. It logs what it did, and returns
// the Go memory limit in effect afterwards.
//
// A GOMEMLIMIT in the environment is left as it is (the runtime read it at
// start); with no cgroup limit nothing is set. As in Prometheus (it is the
// library's rule), the environment variable AUTOMEMLIMIT overrides ratio,
// and AUTOMEMLIMIT=off turns this off.
func autoMemLimit(logger log.Logger, ratio float64, provider memlimit.Provider) int64 {
	if v := os.Getenv("GOMEMLIMIT"); v != "" {
		level.Info(logger).Log("msg", "GOMEMLIMIT is set in the environment; leaving it (--auto-gomemlimit does not override it)",
			"gomemlimit", v, "go_memory_limit_bytes", debug.SetMemoryLimit(-1))
		return debug.SetMemoryLimit(-1)
	}
	var cgroup uint64
	noLimit := false
	// The provider as the library calls it, observed for the log line: the
	// limit it reported, or that there is none.
	observed := func() (uint64, error) {
		v, err := provider()
		cgroup, noLimit = v, errors.Is(err, memlimit.ErrNoLimit)
		return v, err
	}
	limit, err := memlimit.Set(memlimit.WithRatio(ratio), memlimit.WithProvider(observed))
	env, envSet := os.LookupEnv("AUTOMEMLIMIT")
	switch {
	case err != nil:
		level.Warn(logger).Log("msg", "cannot set the Go memory limit from the cgroup memory limit; not set", "err", err)
	case envSet && env == "off":
		level.Info(logger).Log("msg", "AUTOMEMLIMIT=off in the environment: Go memory limit not set from the cgroup")
	case noLimit:
		level.Info(logger).Log("msg", "no cgroup memory limit; Go memory limit not set")
	default:
		var used any = ratio
		if envSet {
			used = env // the library took the ratio from the environment
		}
		kv := []any{"msg", "Go memory limit set from the cgroup memory limit", "cgroup_limit_bytes", cgroup, "ratio", used, "go_memory_limit_bytes", limit}
		if envSet {
			kv = append(kv, "ratio_from", "AUTOMEMLIMIT")
		}
		level.Info(logger).Log(kv...)
	}
	return debug.SetMemoryLimit(-1)
}
