package main

import (
	"runtime/debug"
	"strconv"
	"strings"
	"testing"

	"github.com/go-kit/log"

	"github.com/vps-exporter/vps_exporter/internal/syncbuf"
)

// GOGC unset: the daemon's default target, logged; set: left alone.
func TestSetGCPercent(t *testing.T) {
	orig := debug.SetGCPercent(100)
	defer debug.SetGCPercent(orig)
	for _, tc := range []struct {
		env     string
		want    int
		wantLog string
	}{
		{"", defaultGCPercent, "gogc=" + strconv.Itoa(defaultGCPercent)},
		{"150", 100, "gogc=150"}, // the runtime read GOGC itself; 100 is what this test set
		{"off", 100, "gogc=off"},
	} {
		debug.SetGCPercent(100)
		logs := &syncbuf.Buffer{}
		setGCPercent(log.NewLogfmtLogger(logs), func(k string) string {
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
