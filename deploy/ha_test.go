package deploy_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/vps-exporter/vps_exporter/config"
)

// k8sObject is the part of a Kubernetes manifest the HA checks read.
type k8sObject struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Data map[string]string `yaml:"data"`
	Spec struct {
		Replicas       int               `yaml:"replicas"`
		ServiceName    string            `yaml:"serviceName"`
		ClusterIP      string            `yaml:"clusterIP"`
		PublishNotRdy  bool              `yaml:"publishNotReadyAddresses"`
		Selector       map[string]any    `yaml:"selector"`
		MaxUnavailable any               `yaml:"maxUnavailable"`
		Ports          []k8sServicePort  `yaml:"ports"`
		Template       k8sPodTemplate    `yaml:"template"`
		MatchLabels    map[string]string `yaml:"matchLabels"`
	} `yaml:"spec"`
}

type k8sServicePort struct {
	Name       string `yaml:"name"`
	Port       int    `yaml:"port"`
	TargetPort any    `yaml:"targetPort"`
}

type k8sPodTemplate struct {
	Metadata struct {
		Labels map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	Spec struct {
		Containers []struct {
			Name string   `yaml:"name"`
			Args []string `yaml:"args"`
			Env  []struct {
				Name      string `yaml:"name"`
				ValueFrom struct {
					FieldRef struct {
						FieldPath string `yaml:"fieldPath"`
					} `yaml:"fieldRef"`
				} `yaml:"valueFrom"`
			} `yaml:"env"`
			Ports []struct {
				Name          string `yaml:"name"`
				ContainerPort int    `yaml:"containerPort"`
			} `yaml:"ports"`
			SecurityContext struct {
				ReadOnlyRootFilesystem bool `yaml:"readOnlyRootFilesystem"`
			} `yaml:"securityContext"`
			VolumeMounts []struct {
				Name      string `yaml:"name"`
				MountPath string `yaml:"mountPath"`
			} `yaml:"volumeMounts"`
		} `yaml:"containers"`
		Volumes []struct {
			Name      string         `yaml:"name"`
			ConfigMap map[string]any `yaml:"configMap"`
			Secret    map[string]any `yaml:"secret"`
			PVC       map[string]any `yaml:"persistentVolumeClaim"`
		} `yaml:"volumes"`
	} `yaml:"spec"`
}

// selectorLabels reads a selector's matchLabels.
func selectorLabels(s map[string]any) map[string]string {
	out := map[string]string{}
	m, _ := s["matchLabels"].(map[string]any)
	for k, v := range m {
		out[k], _ = v.(string)
	}
	if len(m) == 0 { // a Service's selector is the labels themselves
		for k, v := range s {
			out[k], _ = v.(string)
		}
	}
	return out
}

// selects reports whether every label of sel is in labels.
func selects(sel, labels map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return len(sel) > 0
}

// haConfig validates an exporter configuration of the HA kits as the
// exporter would load it, its secret files taken from deploy/secrets and
// its ${NAME}s from env.
func haConfig(t *testing.T, text, secretsDir string, env map[string]string) *config.Config {
	t.Helper()
	for k, v := range env {
		t.Setenv(k, v)
	}
	dir := t.TempDir()
	abs, err := filepath.Abs("secrets")
	if err != nil {
		t.Fatal(err)
	}
	// The kits' webhook token is a placeholder: a real one here.
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte("a-real-webhook-token-0123456789abcdef"), 0o600); err != nil {
		t.Fatal(err)
	}
	text = strings.ReplaceAll(text, secretsDir+"webhook.token", filepath.Join(dir, "token"))
	text = strings.ReplaceAll(text, "/etc/vps_exporter/webhook/token", filepath.Join(dir, "token"))
	text = strings.ReplaceAll(text, secretsDir, abs+"/")
	c, err := config.Parse([]byte(text), dir)
	if err != nil {
		t.Fatalf("the config does not validate:\n%v", err)
	}
	if err := c.Remediation.CheckCredential(false); err != nil {
		t.Fatalf("the config's remediation credential: %v", err)
	}
	if c.Remediation.HA == nil || c.Remediation.HA.Advertise == nil || c.Remediation.StateFile != "" {
		t.Fatalf("remediation.ha %+v, state_file %q: want ha with an advertise_url and no state_file", c.Remediation.HA, c.Remediation.StateFile)
	}
	return c
}

// The Kubernetes HA kit (deploy/kubernetes/ha, a kustomization over the
// base): 3 replicas, each reachable at the advertise_url its config builds
// from the downward API through the headless Service, a PDB, and a config
// that validates.
func TestKubernetesHA(t *testing.T) {
	var k struct {
		Namespace string   `yaml:"namespace"`
		Resources []string `yaml:"resources"`
		Patches   []struct {
			Path   string `yaml:"path"`
			Patch  string `yaml:"patch"`
			Target struct {
				Kind string `yaml:"kind"`
				Name string `yaml:"name"`
			} `yaml:"target"`
		} `yaml:"patches"`
	}
	decodeFile(t, "kubernetes/ha/kustomization.yaml", &k)
	objs := map[string]k8sObject{} // kind -> object (one of each here)
	for _, r := range k.Resources {
		p := filepath.Join("kubernetes/ha", r)
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			if _, err := os.Stat(filepath.Join(p, "kustomization.yaml")); err != nil {
				t.Errorf("resource %s: no kustomization: %v", r, err)
			}
			continue
		}
		var o k8sObject
		decodeFile(t, p, &o)
		objs[o.Kind] = o
	}
	// The base's Deployment and its state volume are deleted by patches
	// naming them as the base does; the ConfigMap is replaced.
	deleted := map[string]bool{}
	var cm k8sObject
	for _, p := range k.Patches {
		switch {
		case p.Path != "":
			decodeFile(t, filepath.Join("kubernetes/ha", p.Path), &cm)
		case strings.Contains(p.Patch, "$patch: delete"):
			var o k8sObject
			if err := yaml.Unmarshal([]byte(p.Patch), &o); err != nil {
				t.Fatalf("patch of %s: %v", p.Target.Name, err)
			}
			if o.Kind != p.Target.Kind || o.Metadata.Name != p.Target.Name {
				t.Errorf("a delete patch names %s %s, its target %s %s", o.Kind, o.Metadata.Name, p.Target.Kind, p.Target.Name)
			}
			deleted[o.Kind+"/"+o.Metadata.Name] = true
		}
	}
	var base, pvc, baseCM k8sObject
	decodeFile(t, "kubernetes/deployment.yaml", &base)
	decodeFile(t, "kubernetes/pvc.yaml", &pvc)
	decodeFile(t, "kubernetes/configmap.yaml", &baseCM)
	if !deleted["Deployment/"+base.Metadata.Name] || !deleted["PersistentVolumeClaim/"+pvc.Metadata.Name] {
		t.Errorf("deleted %v, want the base's Deployment %s and PVC %s", deleted, base.Metadata.Name, pvc.Metadata.Name)
	}
	if cm.Kind != "ConfigMap" || cm.Metadata.Name != baseCM.Metadata.Name || cm.Data["vps_exporter.yml"] == "" {
		t.Fatalf("the config patch is %s %s, want the base's ConfigMap %s with vps_exporter.yml", cm.Kind, cm.Metadata.Name, baseCM.Metadata.Name)
	}

	sts, svc, pdb := objs["StatefulSet"], objs["Service"], objs["PodDisruptionBudget"]
	pod := sts.Spec.Template
	labels := pod.Metadata.Labels
	if sts.Spec.Replicas != 3 || !selects(selectorLabels(sts.Spec.Selector), labels) {
		t.Errorf("statefulset: %d replicas, selector %v for pods %v; want 3 it selects", sts.Spec.Replicas, sts.Spec.Selector, labels)
	}
	if svc.Spec.ClusterIP != "None" || !svc.Spec.PublishNotRdy || sts.Spec.ServiceName != svc.Metadata.Name || !selects(selectorLabels(svc.Spec.Selector), labels) {
		t.Errorf("peers service %s (clusterIP %q, publishNotReadyAddresses %v), statefulset serviceName %q: want a headless service of the pods, the statefulset's",
			svc.Metadata.Name, svc.Spec.ClusterIP, svc.Spec.PublishNotRdy, sts.Spec.ServiceName)
	}
	if fmt.Sprint(pdb.Spec.MaxUnavailable) != "1" || !selects(selectorLabels(pdb.Spec.Selector), labels) {
		t.Errorf("pdb: maxUnavailable %v, selector %v: want 1, selecting the pods", pdb.Spec.MaxUnavailable, pdb.Spec.Selector)
	}
	// The ServiceMonitor scrapes the port named http-metrics: the peers
	// service must not offer it, or every pod is scraped twice.
	for _, p := range svc.Spec.Ports {
		if p.Name == "http-metrics" {
			t.Error("the peers service has a port http-metrics: the ServiceMonitor would scrape each pod twice")
		}
	}
	if len(pod.Spec.Containers) == 0 {
		t.Fatal("statefulset: no containers")
	}
	c := pod.Spec.Containers[0]
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.ValueFrom.FieldRef.FieldPath
	}
	if env["POD_NAME"] != "metadata.name" || env["POD_NAMESPACE"] != "metadata.namespace" {
		t.Errorf("exporter env %v: want POD_NAME and POD_NAMESPACE from the downward API", env)
	}
	volumes := map[string]bool{}
	for _, v := range pod.Spec.Volumes {
		volumes[v.Name] = true
		if v.PVC != nil {
			t.Errorf("statefulset: volume %s is a PVC; with ha the state is in etcd", v.Name)
		}
		if v.ConfigMap != nil && v.ConfigMap["name"] != cm.Metadata.Name {
			t.Errorf("statefulset: config volume from %v, want %s", v.ConfigMap["name"], cm.Metadata.Name)
		}
	}
	for _, ct := range pod.Spec.Containers {
		if !ct.SecurityContext.ReadOnlyRootFilesystem {
			t.Errorf("statefulset: container %s is not read-only", ct.Name)
		}
		for _, m := range ct.VolumeMounts {
			if !volumes[m.Name] {
				t.Errorf("statefulset: %s mounts %s, which is not a volume", ct.Name, m.Name)
			}
		}
	}
	if !slices.Contains(c.Args, "--config.file=/etc/vps_exporter/config/vps_exporter.yml") || !slices.Contains(c.Args, "--web.listen-address=:9877") {
		t.Errorf("exporter args %v", c.Args)
	}

	// Each pod's config: its advertise_url is its DNS name under the
	// headless service, on the container's port, reached by the peers.
	for i := range sts.Spec.Replicas {
		podName := fmt.Sprintf("%s-%d", sts.Metadata.Name, i)
		cfg := haConfig(t, cm.Data["vps_exporter.yml"], "/etc/vps_exporter/secrets/", map[string]string{"POD_NAME": podName, "POD_NAMESPACE": k.Namespace})
		u := cfg.Remediation.HA.Advertise
		wantHost := fmt.Sprintf("%s.%s.%s.svc", podName, svc.Metadata.Name, k.Namespace)
		if u.Hostname() != wantHost || u.Port() != "9877" || c.Ports[0].ContainerPort != 9877 || svc.Spec.Ports[0].Port != 9877 {
			t.Errorf("pod %s advertises %s, want http://%s:9877 (container port %d, service port %d)", podName, u, wantHost, c.Ports[0].ContainerPort, svc.Spec.Ports[0].Port)
		}
		if n := len(cfg.Remediation.HA.Etcd.Endpoints); n < 3 {
			t.Errorf("%d etcd endpoints, want a 3-member cluster's", n)
		}
	}
}

// composeService is the part of a compose service the HA checks read.
type composeService struct {
	Image       string            `yaml:"image"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	Volumes     []string          `yaml:"volumes"`
	Networks    map[string]struct {
		Aliases []string `yaml:"aliases"`
	} `yaml:"networks"`
}

// The docker-compose HA kit: a 3-member etcd bootstrapped statically, 3
// replicas whose configs validate and advertise their own service names,
// pointing at the three members; Prometheus scrapes the three.
func TestComposeHA(t *testing.T) {
	var c struct {
		Services map[string]composeService `yaml:"services"`
	}
	decodeFile(t, "compose/docker-compose.ha.yml", &c)
	flag := func(s composeService, name string) string {
		for _, a := range s.Command {
			if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
				return v
			}
		}
		return ""
	}
	var members, clients []string
	cluster := ""
	for name, s := range c.Services {
		if !strings.HasPrefix(name, "etcd-") {
			continue
		}
		if !strings.Contains(s.Image, "etcd") || flag(s, "name") != name || flag(s, "initial-cluster-state") != "new" {
			t.Errorf("%s: image %q, --name %q: want the etcd image, its own name, a new cluster", name, s.Image, flag(s, "name"))
		}
		if cluster == "" {
			cluster = flag(s, "initial-cluster")
		} else if flag(s, "initial-cluster") != cluster {
			t.Errorf("%s: --initial-cluster %q differs from %q", name, flag(s, "initial-cluster"), cluster)
		}
		members = append(members, name+"=http://"+name+":2380")
		if flag(s, "initial-advertise-peer-urls") != "http://"+name+":2380" || flag(s, "advertise-client-urls") != "http://"+name+":2379" {
			t.Errorf("%s advertises peer %q client %q", name, flag(s, "initial-advertise-peer-urls"), flag(s, "advertise-client-urls"))
		}
		clients = append(clients, "http://"+name+":2379")
	}
	slices.Sort(members)
	slices.Sort(clients)
	got := strings.Split(cluster, ",")
	slices.Sort(got)
	if len(members) != 3 || !slices.Equal(got, members) {
		t.Errorf("etcd members %v, --initial-cluster %v: want 3, the same", members, got)
	}

	replicas := 0
	for name, s := range c.Services {
		if !strings.HasPrefix(name, "vps_exporter_") {
			continue
		}
		replicas++
		var cfgPath string
		for _, v := range s.Volumes {
			src, dst, _ := strings.Cut(v, ":")
			if _, err := os.Stat(filepath.Join("compose", src)); err != nil {
				t.Errorf("%s mounts %s: %v", name, src, err)
			}
			if strings.HasPrefix(dst, "/etc/vps_exporter/vps_exporter.yml") {
				cfgPath = filepath.Join("compose", src)
			}
		}
		if flag(s, "config.file") != "/etc/vps_exporter/vps_exporter.yml" || cfgPath == "" {
			t.Fatalf("%s: --config.file %q, config mounted from %q", name, flag(s, "config.file"), cfgPath)
		}
		if !slices.Contains(s.Networks["default"].Aliases, "vps_exporter") {
			t.Errorf("%s: not under the alias vps_exporter that Alertmanager sends to", name)
		}
		b, err := os.ReadFile(cfgPath)
		if err != nil {
			t.Fatal(err)
		}
		cfg := haConfig(t, string(b), "/etc/vps_exporter/secrets/", s.Environment)
		if u := cfg.Remediation.HA.Advertise; u.Host != net.JoinHostPort(name, "9877") {
			t.Errorf("%s advertises %s, want http://%s:9877", name, u, name)
		}
		eps := slices.Clone(cfg.Remediation.HA.Etcd.Endpoints)
		slices.Sort(eps)
		if !slices.Equal(eps, clients) {
			t.Errorf("%s: etcd endpoints %v, want the members' %v", name, eps, clients)
		}
	}
	if replicas != 3 {
		t.Errorf("%d exporter replicas, want 3", replicas)
	}
	var prom struct {
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	decodeFile(t, "compose/ha/prometheus.yml", &prom)
	var targets []string
	for _, sc := range prom.ScrapeConfigs {
		if sc.JobName == "vps_exporter" {
			for _, s := range sc.StaticConfigs {
				targets = append(targets, s.Targets...)
			}
		}
	}
	if len(targets) != 3 {
		t.Errorf("Prometheus scrapes %v as job vps_exporter, want the 3 replicas", targets)
	}
}
