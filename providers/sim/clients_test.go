package sim

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestClientsAndActionLog: each client's credential is accepted beside the
// default one, on every API, over real HTTP; every action call answered
// (accepted or refused) is one JSON line naming the client's label, the
// account, the server, the action and the status, never a credential; a
// wrong credential is refused and logs nothing.
func TestClientsAndActionLog(t *testing.T) {
	const (
		defTok = "def-SECRET-tok"
		r1Tok  = "r1-SECRET-tok"
		r2Tok  = "r2-SECRET-tok"
		r1Key  = "r1-SECRET-key"
		r2Key  = "r2-SECRET-key"
		defKey = "def-SECRET-key"
	)
	var buf bytes.Buffer
	alog := NewActionLog(&buf, map[API]string{VPNBingo: "sim-bingo", VPSOrg: "sim-vpsorg", E2E: "sim-e2e"})
	s := New(Options{
		Servers: 20, Seed: 3, OnAction: alog.Record,
		Credentials: map[API]Credentials{
			VPNBingo: {Token: defTok}, VPSOrg: {Token: defTok},
			E2E: {Token: defTok, APIKey: defKey, ProjectID: "p"},
		},
		Clients: map[API][]Client{
			VPNBingo: {{Label: "replica-1", Credentials: Credentials{Token: r1Tok}}, {Label: "replica-2", Credentials: Credentials{Token: r2Tok}}},
			VPSOrg:   {{Label: "replica-1", Credentials: Credentials{Token: r1Tok}}, {Label: "replica-2", Credentials: Credentials{Token: r2Tok}}},
			E2E: {{Label: "replica-1", Credentials: Credentials{Token: r1Tok, APIKey: r1Key, ProjectID: "p"}},
				{Label: "replica-2", Credentials: Credentials{Token: r2Tok, APIKey: r2Key, ProjectID: "p"}}},
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := s.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close(); srv.Close() }()

	call := func(method, url, token, body string) int {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	e2e := func(id, key, project string) string {
		return srv.URL[E2E] + "/myaccount/api/v1/nodes/" + id + "/actions/?apikey=" + key + "&project_id=" + project
	}
	type want struct {
		api                      API
		account, id, action, who string
		status                   int
	}
	for _, tc := range []struct {
		name        string
		method, url string
		token, body string
		status      int
		logged      *want
	}{
		{"replica-1 reboots a VPS.org server", "POST", srv.URL[VPSOrg] + "/api/v1/servers/12000/reboot/", r1Tok, "", 200,
			&want{VPSOrg, "sim-vpsorg", "12000", "reboot", "replica-1", 200}},
		{"replica-2 reboots it again: refused, still logged", "POST", srv.URL[VPSOrg] + "/api/v1/servers/12000/reboot/", r2Tok, "", 400,
			&want{VPSOrg, "sim-vpsorg", "12000", "reboot", "replica-2", 400}},
		{"the default credential", "POST", srv.URL[VPSOrg] + "/api/v1/servers/12001/reboot/", defTok, "", 200,
			&want{VPSOrg, "sim-vpsorg", "12001", "reboot", DefaultClient, 200}},
		{"an unknown token is refused and not logged", "POST", srv.URL[VPSOrg] + "/api/v1/servers/12002/reboot/", "nobody", "", 401, nil},
		{"replica-2 redeploys a VPN.bingo node", "POST", srv.URL[VPNBingo] + "/api/v2/nodes/1000/redeploy/", r2Tok, `{"force":false}`, 200,
			&want{VPNBingo, "sim-bingo", "1000", "redeploy", "replica-2", 200}},
		{"replica-1 on E2E with its own key", "PUT", e2e("169", r1Key, "p"), r1Tok, `{"type":"reboot"}`, 200,
			&want{E2E, "sim-e2e", "169", "reboot", "replica-1", 200}},
		{"replica-1's token with replica-2's key", "PUT", e2e("170", r2Key, "p"), r1Tok, `{"type":"reboot"}`, 401, nil},
		{"replica-2 on another project", "PUT", e2e("170", r2Key, "q"), r2Tok, `{"type":"reboot"}`, 403, nil},
	} {
		before := len(s.Actions())
		if got := call(tc.method, tc.url, tc.token, tc.body); got != tc.status {
			t.Errorf("%s: HTTP %d, want %d", tc.name, got, tc.status)
		}
		acts := s.Actions()
		switch {
		case tc.logged == nil && len(acts) != before:
			t.Errorf("%s: recorded %+v", tc.name, acts[before:])
		case tc.logged != nil && len(acts) != before+1:
			t.Errorf("%s: %d records, want 1 more", tc.name, len(acts)-before)
		case tc.logged != nil && acts[before].Client != tc.logged.who:
			t.Errorf("%s: record client %q, want %q", tc.name, acts[before].Client, tc.logged.who)
		}
	}

	var lines []ActionLine
	sc := bufio.NewScanner(bytes.NewReader(buf.Bytes()))
	for sc.Scan() {
		var l ActionLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		if !strings.Contains(sc.Text(), `"time":"`) || !strings.Contains(sc.Text(), ".") {
			t.Errorf("line without a millisecond time: %s", sc.Text())
		}
		lines = append(lines, l)
	}
	wantLines := []want{
		{VPSOrg, "sim-vpsorg", "12000", "reboot", "replica-1", 200},
		{VPSOrg, "sim-vpsorg", "12000", "reboot", "replica-2", 400},
		{VPSOrg, "sim-vpsorg", "12001", "reboot", DefaultClient, 200},
		{VPNBingo, "sim-bingo", "1000", "redeploy", "replica-2", 200},
		{E2E, "sim-e2e", "169", "reboot", "replica-1", 200},
	}
	if len(lines) != len(wantLines) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(wantLines), buf.String())
	}
	for i, w := range wantLines {
		l := lines[i]
		got := want{l.API, l.Account, l.ID, l.Action, l.Client, l.Status}
		if got != w {
			t.Errorf("line %d: %+v, want %+v", i, got, w)
		}
		if time.Since(l.Time) > time.Minute || l.Time.After(time.Now()) {
			t.Errorf("line %d: time %v is not now", i, l.Time)
		}
		if i > 0 && l.Time.Before(lines[i-1].Time) {
			t.Errorf("line %d: out of order", i)
		}
	}
	if lines[3].NewID == "" {
		t.Errorf("the redeploy's line has no new_id")
	}
	if strings.Contains(buf.String(), "SECRET") {
		t.Errorf("a credential in the actions log:\n%s", buf.String())
	}
	if err := alog.Err(); err != nil {
		t.Errorf("Err: %v", err)
	}
}

type failWriter struct{ n int }

func (f *failWriter) Write(p []byte) (int, error) {
	f.n++
	return 0, errors.New("disk full")
}

// TestActionLogWriteError: a failed write is reported by Err and stops
// the log (no half-written file growing after a hole).
func TestActionLogWriteError(t *testing.T) {
	w := &failWriter{}
	l := NewActionLog(w, nil)
	l.Record(ActionRecord{API: VPSOrg, ID: "1", Action: "reboot", Status: 200, Time: time.Now()})
	l.Record(ActionRecord{API: VPSOrg, ID: "2", Action: "reboot", Status: 200, Time: time.Now()})
	if err := l.Err(); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("Err = %v, want the write error", err)
	}
	if w.n != 1 {
		t.Errorf("%d writes, want 1 (none after the failure)", w.n)
	}
}
