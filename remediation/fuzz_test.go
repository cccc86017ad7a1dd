package remediation

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vps-exporter/vps_exporter/config"
)

// FuzzWebhook posts arbitrary bodies to the Alertmanager webhook: it answers
// one of its documented statuses and never panics. No account exists, so
// whatever is queued is suppressed, never acted on.
func FuzzWebhook(f *testing.F) {
	f.Add([]byte(webhookPayload("firing", "1003", "2026-01-01T00:00:00Z")))
	f.Add([]byte(webhookPayload("resolved", "1003", "2026-01-01T00:00:00Z")))
	f.Add([]byte(`{"version":"4","alerts":[{"status":"firing","labels":{"remediation":"reboot","id":"1"},"startsAt":"2026-01-01T00:00:00Z"}]}`))
	f.Add([]byte(`{"version":"4","alerts":null}`))
	f.Add([]byte(`{"version":"3"}`))
	f.Add([]byte(`[]`))
	c := config.DefaultRemediation()
	c.Enabled, c.DryRun, c.Webhook.Enabled = true, false, true
	c.Webhook.AllowedActions = []string{"reboot", "redeploy", "start", "stop"}
	c.StateFile = filepath.Join(f.TempDir(), "state.db")
	e := accountlessEngine()
	if err := e.Configure(c, time.Minute, nil); err != nil {
		f.Fatal(err)
	}
	f.Cleanup(e.Close)
	ctx, cancel := context.WithCancel(context.Background())
	f.Cleanup(cancel)
	wh := NewWebhook(ctx, e, 64, 1)
	ok := map[int]bool{http.StatusOK: true, http.StatusBadRequest: true, http.StatusRequestEntityTooLarge: true, http.StatusTooManyRequests: true}
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := httptest.NewRecorder()
		wh.ServeHTTP(rec, httptest.NewRequest("POST", "/webhook/alertmanager", strings.NewReader(string(body))))
		if !ok[rec.Code] {
			t.Fatalf("HTTP %d: %s", rec.Code, rec.Body.String())
		}
	})
}
