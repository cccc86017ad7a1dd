package journal_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/vps-exporter/vps_exporter/remediation/journal"
	"github.com/vps-exporter/vps_exporter/remediation/journal/journaltest"
)

func TestBoltConformance(t *testing.T) {
	journaltest.Run(t, func(t *testing.T) (journal.Store, func(*testing.T) journal.Store) {
		path := filepath.Join(t.TempDir(), "state.db")
		s, err := journal.OpenBolt("test state", path, time.Second, journaltest.Buckets...)
		if err != nil {
			t.Fatal(err)
		}
		cur := s
		t.Cleanup(func() { _ = cur.Close() })
		return s, func(t *testing.T) journal.Store {
			if err := cur.Close(); err != nil {
				t.Fatal(err)
			}
			next, err := journal.OpenBolt("test state", path, time.Second, journaltest.Buckets...)
			if err != nil {
				t.Fatal(err)
			}
			cur = next
			return next
		}
	})
}

// A file another process (here: another open) holds is refused after the
// lock wait, with an error IsLocked recognizes.
func TestBoltLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := journal.OpenBolt("test state", path, time.Second, journaltest.Buckets...)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = journal.OpenBolt("test state", path, 100*time.Millisecond)
	if !journal.IsLocked(err) {
		t.Fatalf("second open: %v, want a lock timeout", err)
	}
	if want := "open test state " + path + ": timeout"; err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
}
