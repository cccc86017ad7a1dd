package apiclient_test

import (
	"math"
	"testing"
	"time"

	"github.com/vps-exporter/vps_exporter/providers/apiclient"
)

// FuzzLenient feeds the lenient JSON types and the unit and time parsers
// arbitrary text: an error or a finite value, never a panic.
func FuzzLenient(f *testing.F) {
	for _, s := range []string{`2`, `"2"`, `"15.00 GB"`, `"1.5e3 MB"`, `null`, `true`, `"  "`, `1e400`, `"-0"`, `"2025-02-13 10:36:59"`, `"2024-06-01T10:00:00+05:30"`, `"12 Exabytes"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var n apiclient.Num
		if err := n.UnmarshalJSON(b); err == nil && n.Set && (math.IsNaN(n.V) || math.IsInf(n.V, 0)) {
			t.Fatalf("Num %q = %v", b, n.V)
		}
		var s apiclient.Str
		_ = s.UnmarshalJSON(b)
		var v apiclient.Bool
		_ = v.UnmarshalJSON(b)
		if x, _, err := apiclient.SplitUnit(string(b)); err == nil && (math.IsNaN(x) || math.IsInf(x, 0)) {
			t.Fatalf("SplitUnit %q = %v", b, x)
		}
		_, _, _ = apiclient.ParseTime(string(b), time.UTC)
	})
}
