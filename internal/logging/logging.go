// Package logging is the logger of the project's programs: go-kit/log in
// logfmt or json, filtered by level, every line with level, ts, caller and
// msg; and an slog bridge for exporter-toolkit that writes the same shape.
package logging

import (
	"io"
	"log/slog"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	slgk "github.com/tjhop/slog-gokit"
)

// base is the format and the level filter, without ts and caller.
func base(format, lvl string, w io.Writer) log.Logger {
	var l log.Logger
	if format == "json" {
		l = log.NewJSONLogger(log.NewSyncWriter(w))
	} else {
		l = log.NewLogfmtLogger(log.NewSyncWriter(w))
	}
	return level.NewFilter(l, level.Allow(level.ParseDefault(lvl, level.InfoValue())))
}

// New returns a logger writing format (logfmt or json) to w, keeping the
// lines at lvl (debug, info, warn, error) and above; and, for libraries
// that log with slog (exporter-toolkit), one that writes through it, its
// lines in the same format, keys and order.
func New(format, lvl string, w io.Writer) (log.Logger, *slog.Logger) {
	b := base(format, lvl, w)
	v := new(slog.LevelVar)
	if err := v.UnmarshalText([]byte(lvl)); err != nil {
		v.Set(slog.LevelInfo)
	}
	return log.With(b, "ts", log.DefaultTimestampUTC, "caller", log.DefaultCaller), slog.New(slgk.NewGoKitHandler(toolkitKeys{b}, v))
}

// toolkitKeys rewrites the slog bridge's records into the project's
// shape: its "time" becomes "ts" (UTC, as log.DefaultTimestampUTC writes
// it) and the keys come in the same order as the project's own lines.
type toolkitKeys struct{ next log.Logger }

// Log implements log.Logger.
func (t toolkitKeys) Log(kv ...any) error {
	var ts, caller, lvl any
	rest := make([]any, 0, len(kv))
	for i := 0; i+1 < len(kv); i += 2 {
		switch kv[i] {
		case "time":
			if tm, ok := kv[i+1].(time.Time); ok {
				ts = tm.UTC().Format(time.RFC3339Nano)
			} else {
				ts = kv[i+1]
			}
		case "caller":
			caller = kv[i+1]
		case level.Key():
			lvl = kv[i+1]
		default:
			rest = append(rest, kv[i], kv[i+1])
		}
	}
	out := make([]any, 0, len(kv)+6)
	if ts == nil {
		ts = time.Now().UTC().Format(time.RFC3339Nano)
	}
	// level.Info(logger) puts the level first, then log.With's ts and
	// caller: the same order here.
	if lvl != nil {
		out = append(out, level.Key(), lvl)
	}
	out = append(out, "ts", ts)
	if caller != nil {
		out = append(out, "caller", caller)
	}
	return t.next.Log(append(out, rest...)...)
}
