package deploy_test

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/vps-exporter/vps_exporter/config"
)

// k8sSecret is a Secret manifest's name and keys.
type k8sSecret struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	StringData map[string]string `yaml:"stringData"`
}

// secretsIn decodes every Secret of a multi-document manifest, by name.
func secretsIn(t *testing.T, path string) map[string]k8sSecret {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]k8sSecret{}
	dec := yaml.NewDecoder(f)
	for {
		var s k8sSecret
		err := dec.Decode(&s)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if s.Kind == "Secret" {
			out[s.Metadata.Name] = s
		}
	}
}

// The Kubernetes manifests wire the webhook's credential as the compose
// stack does, from one Secret: the AlertmanagerConfig sends the Secret's
// key as a Bearer token to the exporter's Service, and the exporter, with
// the Deployment's volumes mounted as Kubernetes mounts them (one file per
// key), reads that same value as remediation.webhook.bearer_token.
func TestKubernetesWebhookSecret(t *testing.T) {
	var amc struct {
		Spec struct {
			Receivers []struct {
				WebhookConfigs []struct {
					URL        string `yaml:"url"`
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
	if len(amc.Spec.Receivers) != 1 || len(amc.Spec.Receivers[0].WebhookConfigs) != 1 {
		t.Fatalf("AlertmanagerConfig: want one receiver with one webhook, got %+v", amc.Spec.Receivers)
	}
	wh := amc.Spec.Receivers[0].WebhookConfigs[0]
	auth := wh.HTTPConfig.Authorization
	if auth.Type != "Bearer" || auth.Credentials.Name == "" || auth.Credentials.Key == "" {
		t.Fatalf("AlertmanagerConfig authorization %+v: want a Bearer token from a Secret", auth)
	}

	// The URL is the exporter's Service in the kustomization's namespace.
	var k struct {
		Namespace string `yaml:"namespace"`
	}
	decodeFile(t, "kubernetes/kustomization.yaml", &k)
	var svc struct {
		Metadata struct {
			Name string `yaml:"name"`
		} `yaml:"metadata"`
		Spec struct {
			Ports []struct {
				Port int `yaml:"port"`
			} `yaml:"ports"`
		} `yaml:"spec"`
	}
	decodeFile(t, "kubernetes/service.yaml", &svc)
	if len(svc.Spec.Ports) != 1 {
		t.Fatalf("service: %d ports", len(svc.Spec.Ports))
	}
	if want := fmt.Sprintf("http://%s.%s.svc:%d/webhook/alertmanager", svc.Metadata.Name, k.Namespace, svc.Spec.Ports[0].Port); wh.URL != want {
		t.Errorf("AlertmanagerConfig webhook URL %q, want %q", wh.URL, want)
	}

	secrets := secretsIn(t, "kubernetes/secret.yaml")
	token, ok := secrets[auth.Credentials.Name].StringData[auth.Credentials.Key]
	if !ok {
		t.Fatalf("no Secret %s with the key %s in kubernetes/secret.yaml", auth.Credentials.Name, auth.Credentials.Key)
	}

	// The exporter's container, its volumes mounted under root as
	// Kubernetes would: each Secret's keys as files in its mount.
	var d struct {
		Spec struct {
			Template struct {
				Spec struct {
					Containers []struct {
						Name         string   `yaml:"name"`
						Args         []string `yaml:"args"`
						VolumeMounts []struct {
							Name      string `yaml:"name"`
							MountPath string `yaml:"mountPath"`
						} `yaml:"volumeMounts"`
					} `yaml:"containers"`
					Volumes []struct {
						Name   string `yaml:"name"`
						Secret struct {
							SecretName string `yaml:"secretName"`
						} `yaml:"secret"`
						ConfigMap struct {
							Name string `yaml:"name"`
						} `yaml:"configMap"`
					} `yaml:"volumes"`
				} `yaml:"spec"`
			} `yaml:"template"`
		} `yaml:"spec"`
	}
	decodeFile(t, "kubernetes/deployment.yaml", &d)
	ps := d.Spec.Template.Spec
	if len(ps.Containers) == 0 || ps.Containers[0].Name != "vps-exporter" {
		t.Fatalf("deployment: the first container is not vps-exporter")
	}
	var cm struct {
		Metadata struct {
			Name string `yaml:"name"`
		} `yaml:"metadata"`
		Data map[string]string `yaml:"data"`
	}
	decodeFile(t, "kubernetes/configmap.yaml", &cm)
	root := t.TempDir()
	configFile := ""
	for _, a := range ps.Containers[0].Args {
		if v, ok := strings.CutPrefix(a, "--config.file="); ok {
			configFile = v
		}
	}
	for _, m := range ps.Containers[0].VolumeMounts {
		files := map[string]string{}
		for _, v := range ps.Volumes {
			switch {
			case v.Name != m.Name:
			case v.Secret.SecretName != "":
				s, ok := secrets[v.Secret.SecretName]
				if !ok {
					t.Errorf("deployment: volume %s names Secret %s, which kubernetes/secret.yaml does not have", v.Name, v.Secret.SecretName)
				}
				files = s.StringData
			case v.ConfigMap.Name == cm.Metadata.Name:
				files = cm.Data
			}
		}
		for k, content := range files {
			p := filepath.Join(root, m.MountPath, k)
			if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	if configFile == "" {
		t.Fatal("deployment: the exporter has no --config.file")
	}
	body, err := os.ReadFile(filepath.Join(root, configFile))
	if err != nil {
		t.Fatalf("deployment: --config.file=%s is not in a mounted volume: %v", configFile, err)
	}
	// The config's absolute paths, moved under root with the mounts.
	c, err := config.Parse([]byte(strings.ReplaceAll(string(body), "/etc/vps_exporter/", root+"/etc/vps_exporter/")), filepath.Dir(filepath.Join(root, configFile)))
	if err != nil {
		t.Fatalf("the exporter's config with the Deployment's mounts: %v", err)
	}
	if !c.Remediation.Webhook.Enabled {
		t.Error("the exporter's webhook is off: the AlertmanagerConfig sends to nothing")
	}
	if got := string(c.Remediation.Webhook.BearerToken); got != strings.TrimSpace(token) {
		t.Errorf("the exporter reads the webhook token %q, Alertmanager sends the Secret's %q", got, token)
	}
}

// The docker-compose stack's Alertmanager sends the credential its
// exporter takes: the demo's fixed token while the exporter runs --demo
// (TestComposeAlertmanagerReachesDemoWebhook, in the root package, runs the
// pair), a credentials_file otherwise.
func TestComposeWebhookCredential(t *testing.T) {
	var compose struct {
		Services map[string]struct {
			Command []string `yaml:"command"`
		} `yaml:"services"`
	}
	decodeFile(t, "compose/docker-compose.yml", &compose)
	var am struct {
		Receivers []struct {
			Webhooks []struct {
				URL        string `yaml:"url"`
				HTTPConfig struct {
					Authorization struct {
						Type            string `yaml:"type"`
						Credentials     string `yaml:"credentials"`
						CredentialsFile string `yaml:"credentials_file"`
					} `yaml:"authorization"`
				} `yaml:"http_config"`
			} `yaml:"webhook_configs"`
		} `yaml:"receivers"`
	}
	decodeFile(t, "compose/alertmanager.yml", &am)
	demo := false
	for _, a := range compose.Services["vps_exporter"].Command {
		demo = demo || a == "--demo"
	}
	n := 0
	for _, r := range am.Receivers {
		for _, w := range r.Webhooks {
			if !strings.HasSuffix(w.URL, "/webhook/alertmanager") {
				continue
			}
			n++
			a := w.HTTPConfig.Authorization
			switch {
			case a.Type != "" && a.Type != "Bearer":
				t.Errorf("%s: authorization type %q, want Bearer", w.URL, a.Type)
			case demo && a.Credentials != "demo":
				t.Errorf("%s: the exporter runs --demo, whose webhook takes the token demo; Alertmanager sends %q", w.URL, a.Credentials)
			case !demo && a.CredentialsFile == "":
				t.Errorf("%s: no credentials_file for the exporter's webhook token", w.URL)
			}
		}
	}
	if n == 0 {
		t.Error("compose/alertmanager.yml: no webhook to the exporter")
	}
}
