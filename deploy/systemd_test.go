package deploy_test

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/vps-exporter/vps_exporter/config"
)

// unitSettings reads a systemd unit's [Service] settings: each key's values
// in order, continuation lines joined, comments dropped.
func unitSettings(t *testing.T, path string) map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]string{}
	section, pending := "", ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if pending != "" {
			line = pending + " " + line
			pending = ""
		}
		if strings.HasSuffix(line, "\\") {
			pending = strings.TrimSuffix(line, "\\")
			continue
		}
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "["):
			section = line
		case section == "[Service]":
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("%s: not a setting: %q", path, line)
			}
			out[k] = append(out[k], strings.Join(strings.Fields(v), " "))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// The unit runs as a dynamic user, which cannot read root's secret files:
// it hands them over with LoadCredential= (from the directory the docs
// name), its config directory is readable, and a config that names its
// secrets under ${CREDENTIALS_DIRECTORY}, as the unit's comment says, loads
// them from the copies systemd makes (secrets_<file name>). Before, the
// unit had DynamicUser=yes and root-owned 0640 secrets in a 0750 directory:
// the service could read neither.
func TestSystemdCredentials(t *testing.T) {
	const unit = "systemd/vps_exporter.service"
	s := unitSettings(t, unit)
	if got := s["DynamicUser"]; len(got) != 1 || got[0] != "yes" {
		t.Fatalf("DynamicUser %q: the test is about a dynamic user", got)
	}
	if got := s["ConfigurationDirectoryMode"]; len(got) != 1 || got[0] != "0755" {
		t.Errorf("ConfigurationDirectoryMode %q: the dynamic user must read vps_exporter.yml (which holds no secret)", got)
	}
	creds := s["LoadCredential"]
	if len(creds) != 1 {
		t.Fatalf("LoadCredential %q, want one: the secrets directory", creds)
	}
	id, src, ok := strings.Cut(creds[0], ":")
	if !ok || src != "/etc/vps_exporter/secrets" || !regexp.MustCompile(`^[a-z]+$`).MatchString(id) {
		t.Fatalf("LoadCredential=%s, want ID:/etc/vps_exporter/secrets", creds[0])
	}
	for _, k := range []string{"ExecStartPre", "ExecStart"} {
		if len(s[k]) != 1 || !strings.Contains(s[k][0], "--config.file=${CONFIGURATION_DIRECTORY}/vps_exporter.yml") {
			t.Errorf("%s %q does not read the config in the configuration directory", k, s[k])
		}
	}
	b, err := os.ReadFile(unit)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "token_file: ${CREDENTIALS_DIRECTORY}/"+id+"_vps-main.token") {
		t.Errorf("the unit's comment does not show how the config names a credential (%s_<file name>)", id)
	}

	// What systemd does at start: every file of the directory, copied
	// as ID_<name> into a directory only the service reads.
	dir := t.TempDir()
	names, err := filepath.Glob("secrets/*")
	if err != nil || len(names) == 0 {
		t.Fatalf("no deploy/secrets: %v", err)
	}
	for _, n := range names {
		v, err := os.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, id+"_"+filepath.Base(n)), v, 0o400); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("CREDENTIALS_DIRECTORY", dir)
	example, err := os.ReadFile("vps_exporter.example.yml")
	if err != nil {
		t.Fatal(err)
	}
	// The example, as installed for the unit: its secrets/<name> become
	// ${CREDENTIALS_DIRECTORY}/<id>_<name>, and it is read from a
	// directory holding no secrets.
	cfg := strings.ReplaceAll(string(example), "_file: secrets/", "_file: ${CREDENTIALS_DIRECTORY}/"+id+"_")
	if cfg == string(example) {
		t.Fatal("the example names no secrets/ file")
	}
	path := filepath.Join(t.TempDir(), "vps_exporter.yml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(path)
	if err != nil {
		t.Fatalf("the example naming its secrets under ${CREDENTIALS_DIRECTORY}:\n%v", err)
	}
	for _, p := range c.Providers {
		if !strings.HasPrefix(string(p.Token), config.Placeholder) {
			t.Errorf("account %s: token not read from the credentials directory", p.Name)
		}
	}
	if !strings.HasPrefix(string(c.Remediation.Webhook.BearerToken), config.Placeholder) {
		t.Error("webhook token not read from the credentials directory")
	}
}

// The example configuration's header says what a reload does with secrets
// under the shipped unit: LoadCredential= copies them at start, so a
// reload re-reads copies that do not change and a changed secret needs a
// restart (issue 24: it said only "read again on every reload").
func TestExampleSaysSecretsNeedARestart(t *testing.T) {
	if creds := unitSettings(t, "systemd/vps_exporter.service")["LoadCredential"]; len(creds) == 0 {
		t.Skip("the unit hands over no credentials: nothing is copied at start")
	}
	b, err := os.ReadFile("vps_exporter.example.yml")
	if err != nil {
		t.Fatal(err)
	}
	var header []string // the leading comment, one string
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "#") {
			break
		}
		header = append(header, strings.TrimSpace(strings.TrimPrefix(line, "#")))
	}
	text := strings.Join(header, " ")
	for _, want := range []string{"LoadCredential=", "when the service starts", "systemctl restart vps_exporter", "a reload does not pick it up"} {
		if !strings.Contains(text, want) {
			t.Errorf("the example's header does not say %q:\n%s", want, strings.Join(header, "\n"))
		}
	}
}
