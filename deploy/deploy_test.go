// Package deploy_test checks the deployment files: every config parses with
// the tool that will read it, the Kubernetes PrometheusRule carries the same
// rules as alerts/, and the systemd unit verifies and stays hardened.
package deploy_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/vps-exporter/vps_exporter/config"
	"github.com/vps-exporter/vps_exporter/internal/testcert"
)

// tool finds a binary from Debian's packages; under CI it must exist.
func tool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s not installed; .ci/run installs it", name)
		}
		t.Skipf("%s not installed", name)
	}
	return p
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Errorf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
	return string(out)
}

// relocate copies a config file with its absolute paths under prefix moved
// into dir, creating each file it names, so that tools which open them can
// check it.
func relocate(t *testing.T, src, prefix, dir string) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(regexp.QuoteMeta(prefix) + `[\w./-]+`)
	for _, p := range re.FindAllString(string(b), -1) {
		dst := filepath.Join(dir, strings.TrimPrefix(p, prefix))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		content := "x\n"
		switch {
		case strings.HasSuffix(p, ".crt"):
			content = testCert(t).cert
		case strings.HasSuffix(p, ".key"):
			content = testCert(t).key
		case strings.HasSuffix(p, ".rules.yml"):
			r, err := os.ReadFile("../alerts/vps_exporter.rules.yml")
			if err != nil {
				t.Fatal(err)
			}
			content = string(r)
		}
		if err := os.WriteFile(dst, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(dir, filepath.Base(src))
	if err := os.WriteFile(out, []byte(strings.ReplaceAll(string(b), prefix, dir+"/")), 0o600); err != nil {
		t.Fatal(err)
	}
	return out
}

type certPair struct{ cert, key string }

var (
	certOnce sync.Once
	certPEM  certPair
)

// testCert is a self-signed certificate and key, made once so that the
// .crt and .key files relocate writes belong together.
func testCert(t *testing.T) certPair {
	certOnce.Do(func() {
		c, k, _ := testcert.PEM(t, "vps-exporter.example.internal")
		certPEM = certPair{cert: string(c), key: string(k)}
	})
	return certPEM
}

// loadChecked loads a config as vps_exporter --config.check does (without
// a web config): config.Load, then the remediation credential rule.
func loadChecked(path string) (*config.Config, error) {
	c, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	return c, c.Remediation.CheckCredential(false)
}

// The example and the quick start pass --config.check as they are written,
// with their placeholders: a new user's first run does not fail on them.
func TestExporterConfigs(t *testing.T) {
	c, err := loadChecked("vps_exporter.example.yml")
	if err != nil {
		t.Fatalf("vps_exporter.example.yml:\n%v", err)
	}
	if len(c.Providers) != 3 || c.Remediation.Enabled || !c.Remediation.DryRun || len(c.Remediation.Rules) == 0 {
		t.Errorf("example config: %d providers, remediation %+v", len(c.Providers), c.Remediation)
	}
	for _, p := range c.Providers {
		if !strings.HasPrefix(string(p.Token), config.Placeholder) {
			t.Errorf("example account %s: the token is not the placeholder from secrets/", p.Name)
		}
	}
	// Made live as it is, it is refused: its webhook token is public.
	b, err := os.ReadFile("vps_exporter.example.yml")
	if err != nil {
		t.Fatal(err)
	}
	live := strings.Replace(strings.Replace(string(b), "enabled: false          # nothing", "enabled: true          # nothing", 1), "dry_run: true ", "dry_run: false", 1)
	lc, err := config.Parse([]byte(live), ".")
	if err != nil {
		t.Fatal(err)
	}
	if !lc.Remediation.Live() {
		t.Fatal("the edit did not make the example live")
	}
	if err := lc.Remediation.CheckCredential(false); err == nil || !strings.Contains(err.Error(), "remediation.webhook.bearer_token: still the example's placeholder") {
		t.Errorf("the example, live with its placeholder webhook token: %v", err)
	}

	m, err := loadChecked("vps_exporter.minimal.yml")
	if err != nil {
		t.Fatalf("vps_exporter.minimal.yml:\n%v", err)
	}
	if len(m.Providers) != 1 || string(m.Providers[0].Token) != "REPLACE_WITH_YOUR_TOKEN" || m.Remediation.Enabled {
		t.Errorf("minimal config: %d providers, remediation enabled %v", len(m.Providers), m.Remediation.Enabled)
	}
	// The Kubernetes ConfigMap's config, with the Secret's keys as files.
	var cm struct {
		Data map[string]string `yaml:"data"`
	}
	decodeFile(t, "kubernetes/configmap.yaml", &cm)
	var secret struct {
		StringData map[string]string `yaml:"stringData"`
	}
	decodeFile(t, "kubernetes/secret.yaml", &secret)
	kdir := t.TempDir()
	for k, v := range secret.StringData {
		if err := os.WriteFile(filepath.Join(kdir, k), []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(kdir, "webhook-token"), []byte("hook-token"), 0o600); err != nil {
		t.Fatal(err)
	}
	kcfg := strings.ReplaceAll(cm.Data["vps_exporter.yml"], "/etc/vps_exporter/secrets/", kdir+"/")
	kcfg = strings.ReplaceAll(kcfg, "/etc/vps_exporter/webhook/token", kdir+"/webhook-token")
	kc, err := config.Parse([]byte(kcfg), kdir)
	if err != nil {
		t.Fatalf("kubernetes/configmap.yaml: %v", err)
	}
	if len(kc.Providers) != len(secret.StringData)-1 { // e2e has a token and a key
		t.Errorf("configmap has %d providers for %d secrets", len(kc.Providers), len(secret.StringData))
	}
}

func TestPrometheusConfigs(t *testing.T) {
	promtool := tool(t, "promtool")
	dir := t.TempDir()
	run(t, promtool, "check", "config", relocate(t, "prometheus.example.yml", "/etc/prometheus/", dir))
	run(t, promtool, "check", "config", "--syntax-only", "compose/prometheus.yml")
	run(t, promtool, "check", "web-config", relocate(t, "web-config.example.yml", "/etc/vps_exporter/", t.TempDir()))
}

func TestAlertmanagerConfigs(t *testing.T) {
	amtool := tool(t, "amtool")
	for _, f := range []string{"alertmanager.example.yml", "compose/alertmanager.yml"} {
		out := run(t, amtool, "check-config", f)
		if !strings.Contains(out, "SUCCESS") {
			t.Errorf("%s: %s", f, out)
		}
		// The repair route: alerts with a remediation label reach the webhook.
		var c struct {
			Route struct {
				Routes []struct {
					Receiver string   `yaml:"receiver"`
					Matchers []string `yaml:"matchers"`
					Continue bool     `yaml:"continue"`
				} `yaml:"routes"`
			} `yaml:"route"`
			Receivers []struct {
				Name     string `yaml:"name"`
				Webhooks []struct {
					URL string `yaml:"url"`
				} `yaml:"webhook_configs"`
			} `yaml:"receivers"`
		}
		decodeFile(t, f, &c)
		found := false
		for _, r := range c.Route.Routes {
			if len(r.Matchers) == 1 && strings.HasPrefix(r.Matchers[0], "remediation=~") && r.Continue {
				for _, rc := range c.Receivers {
					for _, w := range rc.Webhooks {
						found = found || (rc.Name == r.Receiver && strings.HasSuffix(w.URL, "/webhook/alertmanager"))
					}
				}
			}
		}
		if !found {
			t.Errorf("%s: no route from remediation alerts to /webhook/alertmanager", f)
		}
	}
}

// The PrometheusRule carries exactly the rules of alerts/.
func TestPrometheusRuleMatchesAlerts(t *testing.T) {
	var alerts struct {
		Groups []any `yaml:"groups"`
	}
	decodeFile(t, "../alerts/vps_exporter.rules.yml", &alerts)
	var pr struct {
		Kind string `yaml:"kind"`
		Spec struct {
			Groups []any `yaml:"groups"`
		} `yaml:"spec"`
	}
	decodeFile(t, "kubernetes/prometheusrule.yaml", &pr)
	if pr.Kind != "PrometheusRule" || len(alerts.Groups) == 0 || !reflect.DeepEqual(alerts.Groups, pr.Spec.Groups) {
		t.Error("kubernetes/prometheusrule.yaml differs from alerts/vps_exporter.rules.yml; copy the groups over")
	}
}

// Every Kubernetes manifest is well-formed, listed in the kustomization, and
// the pod runs unprivileged with its state on a volume.
func TestKubernetesManifests(t *testing.T) {
	var k struct {
		Resources []string `yaml:"resources"`
	}
	decodeFile(t, "kubernetes/kustomization.yaml", &k)
	files, _ := filepath.Glob("kubernetes/*.yaml")
	listed := map[string]bool{"kustomization.yaml": true}
	for _, r := range k.Resources {
		listed[r] = true
	}
	kinds := map[string]bool{}
	for _, f := range files {
		if !listed[filepath.Base(f)] {
			t.Errorf("%s is not in kustomization.yaml", f)
		}
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		var m struct {
			APIVersion string `yaml:"apiVersion"`
			Kind       string `yaml:"kind"`
			Metadata   struct {
				Name string `yaml:"name"`
			} `yaml:"metadata"`
		}
		decodeFile(t, f, &m)
		if m.APIVersion == "" || m.Kind == "" || m.Metadata.Name == "" {
			t.Errorf("%s: apiVersion %q kind %q name %q", f, m.APIVersion, m.Kind, m.Metadata.Name)
		}
		kinds[m.Kind] = true
	}
	for _, want := range []string{"Deployment", "Service", "Secret", "ConfigMap", "ServiceMonitor", "PrometheusRule", "PersistentVolumeClaim"} {
		if !kinds[want] {
			t.Errorf("no %s manifest", want)
		}
	}
	var d struct {
		Spec struct {
			Replicas int `yaml:"replicas"`
			Template struct {
				Spec struct {
					SecurityContext struct {
						RunAsNonRoot bool `yaml:"runAsNonRoot"`
					} `yaml:"securityContext"`
					Containers []struct {
						Name            string   `yaml:"name"`
						Args            []string `yaml:"args"`
						SecurityContext struct {
							ReadOnlyRootFilesystem   bool `yaml:"readOnlyRootFilesystem"`
							AllowPrivilegeEscalation bool `yaml:"allowPrivilegeEscalation"`
						} `yaml:"securityContext"`
						VolumeMounts []struct {
							MountPath string `yaml:"mountPath"`
							SubPath   string `yaml:"subPath"`
						} `yaml:"volumeMounts"`
					} `yaml:"containers"`
				} `yaml:"spec"`
			} `yaml:"template"`
		} `yaml:"spec"`
	}
	decodeFile(t, "kubernetes/deployment.yaml", &d)
	ps := d.Spec.Template.Spec
	if d.Spec.Replicas != 1 || !ps.SecurityContext.RunAsNonRoot || len(ps.Containers) != 2 {
		t.Errorf("deployment: %+v", d.Spec)
	}
	for _, c := range ps.Containers {
		if !c.SecurityContext.ReadOnlyRootFilesystem || c.SecurityContext.AllowPrivilegeEscalation {
			t.Errorf("deployment: container %s is not locked down", c.Name)
		}
		for _, v := range c.VolumeMounts {
			if v.SubPath != "" {
				t.Errorf("deployment: %s mounts %s with subPath: it never sees ConfigMap updates", c.Name, v.MountPath)
			}
		}
	}
	// The reloader watches the directory the exporter reads its config from.
	if len(ps.Containers) == 2 && !slices.Contains(ps.Containers[0].Args, "--config.file=/etc/vps_exporter/config/vps_exporter.yml") ||
		!slices.Contains(ps.Containers[1].Args, "--watched-dir=/etc/vps_exporter/config") {
		t.Errorf("deployment: the config reloader does not watch the config's directory")
	}
	state := false
	for _, v := range ps.Containers[0].VolumeMounts {
		state = state || v.MountPath == "/var/lib/vps_exporter"
	}
	if !state {
		t.Error("deployment: the remediation state directory is not on a volume")
	}
}

// The docker-compose stack mounts files that exist.
func TestComposeMounts(t *testing.T) {
	var c struct {
		Services map[string]struct {
			Volumes []string `yaml:"volumes"`
		} `yaml:"services"`
	}
	decodeFile(t, "compose/docker-compose.yml", &c)
	for _, want := range []string{"vps_exporter", "prometheus", "alertmanager", "grafana"} {
		if _, ok := c.Services[want]; !ok {
			t.Errorf("compose: no %s service", want)
		}
	}
	for name, s := range c.Services {
		for _, v := range s.Volumes {
			src := strings.SplitN(v, ":", 2)[0]
			if !strings.HasPrefix(src, ".") {
				continue // a named volume
			}
			if _, err := os.Stat(filepath.Join("compose", src)); err != nil {
				t.Errorf("compose %s mounts %s: %v", name, src, err)
			}
		}
	}
}

// The systemd unit verifies, and its exposure stays low.
func TestSystemdUnit(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed")
	}
	b, err := os.ReadFile("systemd/vps_exporter.service")
	if err != nil {
		t.Fatal(err)
	}
	// verify wants ExecStart to exist: point it at a real executable.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	unit := filepath.Join(t.TempDir(), "vps_exporter.service")
	if err := os.WriteFile(unit, bytes.ReplaceAll(b, []byte("/usr/local/bin/vps_exporter"), []byte(self)), 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, analyze, "verify", unit)
	out := run(t, analyze, "security", "--offline=yes", unit)
	m := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure level in:\n%s", out)
	}
	if v, _ := strconv.ParseFloat(m[1], 64); v > 2.0 {
		t.Errorf("systemd exposure %s, want at most 2.0 (OK)", m[1])
	}
}

func decodeFile(t *testing.T, path string, v any) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := yaml.NewDecoder(f).Decode(v); err != nil && !errors.Is(err, io.EOF) {
		t.Fatalf("%s: %v", path, err)
	}
}

// The Kubernetes ScrapeConfigs, turned into plain Prometheus scrape
// configs (the operator's camelCase field names to Prometheus' snake_case),
// pass promtool: the service discovery jobs are valid Prometheus.
func TestScrapeConfigs(t *testing.T) {
	promtool := tool(t, "promtool")
	f, err := os.Open("kubernetes/scrapeconfig.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	names := strings.NewReplacer("httpSDConfigs", "http_sd_configs", "refreshInterval", "refresh_interval",
		"sourceLabels", "source_labels", "targetLabel", "target_label", "metricsPath", "metrics_path", "relabelings", "relabel_configs")
	var jobs []map[string]any
	dec := yaml.NewDecoder(f)
	for {
		var doc struct {
			Kind     string `yaml:"kind"`
			Metadata struct {
				Name string `yaml:"name"`
			} `yaml:"metadata"`
			Spec yaml.Node `yaml:"spec"`
		}
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if doc.Kind != "ScrapeConfig" {
			t.Fatalf("kind %q", doc.Kind)
		}
		b, err := yaml.Marshal(&doc.Spec)
		if err != nil {
			t.Fatal(err)
		}
		var job map[string]any
		if err := yaml.Unmarshal([]byte(names.Replace(string(b))), &job); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), "/sd?") {
			t.Errorf("%s does not discover through /sd", doc.Metadata.Name)
		}
		job["job_name"] = doc.Metadata.Name
		jobs = append(jobs, job)
	}
	if len(jobs) != 2 {
		t.Fatalf("%d ScrapeConfigs, want the node and the VPN probe jobs", len(jobs))
	}
	out, err := yaml.Marshal(map[string]any{"scrape_configs": jobs})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "prometheus.yml")
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, promtool, "check", "config", path)
	for _, f := range []string{"prometheus.example.yml", "compose/prometheus.yml"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"/sd?port=9100", "/sd?address=service&provider=vpnbingo", "__meta_vps_server_state"} {
			if !strings.Contains(string(b), want) {
				t.Errorf("%s has no %q: the service discovery jobs are missing", f, want)
			}
		}
	}
}

// Alertmanager sends the webhook's bearer token from the Secret the
// exporter reads it from: the destructive endpoint is never open.
func TestWebhookCredentialWired(t *testing.T) {
	var amc struct {
		Spec struct {
			Receivers []struct {
				WebhookConfigs []struct {
					HTTPConfig struct {
						Authorization struct {
							Type        string `yaml:"type"`
							Credentials struct {
								Name string `yaml:"name"`
								Key  string `yaml:"key"`
							} `yaml:"credentials"`
						} `yaml:"authorization"`
					} `yaml:"httpConfig"`
				} `yaml:"webhookConfigs"`
			} `yaml:"receivers"`
		} `yaml:"spec"`
	}
	decodeFile(t, "kubernetes/alertmanagerconfig.yaml", &amc)
	auth := amc.Spec.Receivers[0].WebhookConfigs[0].HTTPConfig.Authorization
	if auth.Type != "Bearer" || auth.Credentials.Name != "vps-exporter-webhook" || auth.Credentials.Key != "token" {
		t.Errorf("AlertmanagerConfig authorization %+v", auth)
	}
	b, err := os.ReadFile("kubernetes/secret.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "name: vps-exporter-webhook") {
		t.Error("no vps-exporter-webhook Secret")
	}
	var cm struct {
		Data map[string]string `yaml:"data"`
	}
	decodeFile(t, "kubernetes/configmap.yaml", &cm)
	if !strings.Contains(cm.Data["vps_exporter.yml"], "bearer_token_file: /etc/vps_exporter/webhook/token") {
		t.Error("the exporter's config does not read the webhook token")
	}
	d, err := os.ReadFile("kubernetes/deployment.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(d), "secretName: vps-exporter-webhook") || !strings.Contains(string(d), "mountPath: /etc/vps_exporter/webhook") {
		t.Error("the deployment does not mount the webhook token")
	}
}
