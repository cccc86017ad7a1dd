package logging

import (
	"bytes"
	"regexp"
	"strings"
	"testing"

	"github.com/go-kit/log/level"
)

// TestOneShape: the slog bridge's lines and the project's own have the same
// keys in the same order, in both formats, and the level filter holds for
// both.
func TestOneShape(t *testing.T) {
	for _, tc := range []struct{ format, own, bridged string }{
		{"logfmt", `^level=info ts=\S+ caller=\S+ msg=own k=v$`, `^level=info ts=\S+ caller=\S+ msg=bridged k=v$`},
		{"json", `"ts":`, `"ts":`},
	} {
		var buf bytes.Buffer
		l, s := New(tc.format, "info", &buf)
		level.Info(l).Log("msg", "own", "k", "v")
		s.Info("bridged", "k", "v")
		level.Debug(l).Log("msg", "hidden")
		s.Debug("hidden too")
		lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
		if len(lines) != 2 {
			t.Fatalf("%s: %d lines, want 2 (debug filtered):\n%s", tc.format, len(lines), buf.String())
		}
		for i, want := range []string{tc.own, tc.bridged} {
			if !matches(want, lines[i]) {
				t.Errorf("%s line %d: %s, want %s", tc.format, i, lines[i], want)
			}
			if strings.Contains(lines[i], "time") {
				t.Errorf("%s line %d has a time key of its own: %s", tc.format, i, lines[i])
			}
		}
	}
}

func matches(pattern, s string) bool { return regexp.MustCompile(pattern).MatchString(s) }
