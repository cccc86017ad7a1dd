package main

import (
	"runtime/debug"
	"strconv"
	"strings"
	"testing"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"

	"github.com/vps-exporter/vps_exporter/internal/syncbuf"
)

// GOGC unset: the daemon's default target, logged; set: left alone.
func TestSetGCPercent(t *testing.T) {
	orig := debug.SetGCPercent(100)
	defer debug.SetGCPercent(orig)
	for _, tc := range []struct {
		env     string
		runtime int // what the runtime made of GOGC at start (-1: off)
		want    int
		wantLog string
	}{
		{"", 100, defaultGCPercent, "gogc=" + strconv.Itoa(defaultGCPercent)},
		{"150", 150, 150, `msg="garbage collector target from the environment" gogc=150 gogc_in_force=150`},
		{"off", -1, -1, `msg="garbage collector target from the environment" gogc=off gogc_in_force=off`},
		{"0150", 150, 150, `msg="garbage collector target from the environment" gogc=0150 gogc_in_force=150`},
		{"-5", -1, -1, `msg="garbage collector target from the environment" gogc=-5 gogc_in_force=off`},
		// Go ignores a GOGC it cannot parse: the log says so.
		{"50x", 100, 100, `level=warn msg="GOGC from the environment not understood by Go; its default target is in force" gogc=50x gogc_in_force=100`},
	} {
		debug.SetGCPercent(tc.runtime)
		logs := &syncbuf.Buffer{}
		setGCPercent(level.NewFilter(log.NewLogfmtLogger(logs), level.AllowAll()), func(k string) string {
			if k == "GOGC" {
				return tc.env
			}
			return ""
		})
		if got := debug.SetGCPercent(100); got != tc.want {
			t.Errorf("GOGC=%q: GC percent %d, want %d", tc.env, got, tc.want)
		}
		if !strings.Contains(logs.String(), tc.wantLog) {
			t.Errorf("GOGC=%q: log %q lacks %s", tc.env, logs.String(), tc.wantLog)
		}
	}
}
