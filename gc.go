package main

import (
	"math"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
)

// defaultGCPercent is the garbage collector's target when GOGC is not set:
// a collection starts when the heap has grown by 25% over what the last
// one kept, not Go's default 100%. Most of what the exporter keeps is the
// stored /metrics text, which the collector never scans (it holds no
// pointers): a collection costs what the rest costs, so collecting more
// often is cheap, while Go's default would let the heap reach twice the
// stored text. Measured at 100,000 servers (docs/benchmarks.md, Memory):
// median resident memory 718 MiB at GOGC=100, 553 at 50, 470 at 25, for
// about 17 s more CPU in 4 minutes at 25 than at 100. Prometheus, for its
// part, runs with 75 unless GOGC is set.
const defaultGCPercent = 25

// setGCPercent applies defaultGCPercent unless the GOGC environment
// variable (getenv) sets the target, and logs the target in force.
func setGCPercent(logger log.Logger, getenv func(string) string) {
	if v := strings.TrimSpace(getenv("GOGC")); v != "" {
		// What the runtime made of it: Go takes a value it cannot parse
		// as its default, 100, without a word.
		cur := gcPercentInForce()
		inForce := "off"
		if cur >= 0 {
			inForce = strconv.FormatInt(cur, 10)
		}
		n, err := strconv.ParseInt(v, 10, 32)
		understood := v == "off" && cur < 0 || err == nil && (n < 0 && cur < 0 || n == cur)
		if !understood {
			level.Warn(logger).Log("msg", "GOGC from the environment not understood by Go; its default target is in force", "gogc", v, "gogc_in_force", inForce)
			return
		}
		level.Info(logger).Log("msg", "garbage collector target from the environment", "gogc", v, "gogc_in_force", inForce)
		return
	}
	debug.SetGCPercent(defaultGCPercent)
	level.Info(logger).Log("msg", "garbage collector target set (GOGC unset)", "gogc", defaultGCPercent)
}

// gcPercentInForce is the garbage collector's target as the runtime has
// it, -1 when off (read without changing it).
func gcPercentInForce() int64 {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 100
	}
	v := s[0].Value.Uint64()
	if v > math.MaxInt32 {
		return -1 // off: the runtime's -1 read as unsigned
	}
	return int64(v)
}
