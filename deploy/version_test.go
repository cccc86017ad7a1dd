package deploy

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestImageTagFollowsVERSION: the Kubernetes Deployment names the image
// `make docker-push` pushes for the current VERSION, and the Dockerfile
// stamps that VERSION by default.
func TestImageTagFollowsVERSION(t *testing.T) {
	v, err := os.ReadFile("../VERSION")
	if err != nil {
		t.Fatal(err)
	}
	version := strings.TrimSpace(string(v))
	if !regexp.MustCompile(`^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.]+)?$`).MatchString(version) {
		t.Fatalf("VERSION %q is not a semantic version", version)
	}
	dep, err := os.ReadFile("kubernetes/deployment.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if want := "image: ghcr.io/vps-exporter/vps_exporter:v" + version; !strings.Contains(string(dep), want) {
		t.Errorf("kubernetes/deployment.yaml does not name %q", want)
	}
	df, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ARG VERSION", "ARG REVISION", "cat VERSION", "prometheus/common/version", "$p.Version=$v", "$p.Revision=$REVISION"} {
		if !strings.Contains(string(df), want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	cl, err := os.ReadFile("../CHANGELOG.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(cl), "## "+version+" ") {
		t.Errorf("CHANGELOG.md has no section for %s", version)
	}
}
