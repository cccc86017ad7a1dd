package httpq

import (
	"net/url"
	"testing"
)

func TestUnknown(t *testing.T) {
	known := []string{"provider", "account", "limit"}
	for _, tc := range []struct {
		query string
		known []string
		want  string // "" : no error
	}{
		{"", known, ""},
		{"provider=vpsorg&limit=5&account=a", known, ""},
		{"foo=1", known, "foo: unknown query parameter (want provider, account, limit)"},
		{"provider=x&acount=a&zzz=1", known, "acount: unknown query parameter (want provider, account, limit)"},
		{"Provider=x", known, "an unknown query parameter (want provider, account, limit)"},
		{"sk-live-0123456789=1", known, "an unknown query parameter (want provider, account, limit)"},
		{"foo", nil, "foo: unknown query parameter (this endpoint takes none)"},
	} {
		q, err := url.ParseQuery(tc.query)
		if err != nil {
			t.Fatal(err)
		}
		got := ""
		if err := Unknown(q, tc.known...); err != nil {
			got = err.Error()
		}
		if got != tc.want {
			t.Errorf("%q: %q, want %q", tc.query, got, tc.want)
		}
	}
}
