package main

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// The read-only endpoints answer GET and HEAD; any other method is a 405
// with an Allow header, as /metrics (issue 24: they answered POST and
// DELETE with 200).
func TestReadOnlyEndpointsRefuseOtherMethods(t *testing.T) {
	e := startExporter(t, "--demo", "--demo.servers=6")
	e.waitFor("ready", func() bool { code, _ := e.get("/-/ready"); return code == 200 })
	client := &http.Client{Timeout: 20 * time.Second}
	for _, path := range []string{"/-/healthy", "/-/ready", "/api/v1/accounts", "/metrics"} {
		for _, tc := range []struct {
			method string
			code   int
		}{
			{"GET", 200},
			{"HEAD", 200},
			{"POST", 405},
			{"PUT", 405},
			{"DELETE", 405},
			{"PATCH", 405},
		} {
			req, err := http.NewRequest(tc.method, "http://"+e.addr+path, strings.NewReader(""))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.code {
				t.Errorf("%s %s: HTTP %d, want %d", tc.method, path, resp.StatusCode, tc.code)
				continue
			}
			if allow := resp.Header.Get("Allow"); tc.code == 405 && allow != "GET, HEAD" {
				t.Errorf("%s %s: Allow %q, want GET, HEAD", tc.method, path, allow)
			}
		}
	}
}
