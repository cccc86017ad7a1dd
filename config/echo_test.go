package config_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vps-exporter/vps_exporter/config"
)

// canary is the secret each case misplaces: it must appear in no error.
const canary = "sk-CANARY-7f3e9a"

const (
	notShownToken = " (the value is not shown: if it is the secret itself, write it as token instead)"
	unknownKey    = "an unknown key at line %d (not shown: it is no field name and may hold a value)"
	startsToken   = "; it starts with `token`: write `token: value` (a colon and a space after the name)"
	badAccount    = `not a valid account name (the value is not shown: it may hold a line of the file that joined it, a mis-indented token say); ` +
		`use 1 to 64 letters, digits, "_", "-", "." or ":", starting with a letter or digit: it is the account label`
	needCredential = "remediation.webhook.bearer_token: required for live remediation (enabled: true, dry_run: false): set bearer_token or bearer_token_file, " +
		"or basic_auth_users in --web.config.file; the credential guards the webhook and pause, resume and reset, which act on servers"
)

const notShownTLS = " (the value is not shown: if it is a key, a certificate or a password itself, put it in a file and name that file here)"

// haTLS is a valid configuration with remediation.ha whose etcd.tls block
// holds tls.
func haTLS(tls string) string {
	return "providers: [{type: vpsorg, name: a, token: t}]\nremediation:\n  ha:\n    advertise_url: http://r:9877\n" +
		"    etcd: {endpoints: [https://e:2379], tls: {" + tls + "}}\n"
}

func lineN(format string, n int) string { return strings.Replace(format, "%d", string(rune('0'+n)), 1) }

// A secret in the wrong place is never repeated: a token pasted into a
// *_file key, glued to its key, or joined to the account name by a
// mis-indented line. The error names the key, exactly.
func TestMisplacedSecretsNeverEcho(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"token in token_file", "providers: [{type: vpsorg, name: a, token_file: " + canary + "}]",
			"providers[0] (a).token_file: cannot read the file it names: no such file or directory" + notShownToken},
		{"api key in api_key_file", "providers: [{type: e2e, name: a, token: t, project_id: '1', api_key_file: " + canary + "}]",
			"providers[0] (a).api_key_file: cannot read the file it names: no such file or directory (the value is not shown: if it is the secret itself, write it as api_key instead)"},
		{"webhook token in bearer_token_file", "providers: [{type: vpsorg, name: a, token: t}]\nremediation: {webhook: {bearer_token_file: " + canary + "}}",
			"remediation.webhook.bearer_token_file: cannot read the file it names: no such file or directory (the value is not shown: if it is the secret itself, write it as bearer_token instead)"},
		{"token in a *_file naming an unset variable", "providers: [{type: vpsorg, name: a, token_file: '${NO_SUCH_VAR_H6}/" + canary + "'}]",
			"providers[0] (a).token_file: names ${NO_SUCH_VAR_H6}, which is not set in the environment (systemd sets ${CREDENTIALS_DIRECTORY} for LoadCredential=)" +
				"; the value is not shown: if it is the secret itself, write it as token instead"},
		{"token = value, flow", "providers: [{type: vpsorg, name: a, token = " + canary + "}]",
			"providers[0] (a): " + lineN(unknownKey, 1) + startsToken},
		{"token value, flow", "providers: [{type: vpsorg, name: a, token " + canary + "}]",
			"providers[0] (a): " + lineN(unknownKey, 1) + startsToken},
		{"token=value, block, quoted key", "providers:\n  - type: vpsorg\n    name: a\n    \"token=" + canary + "\": x\n",
			"providers[0] (a): " + lineN(unknownKey, 4) + startsToken},
		{"a value as a key", "providers:\n  - type: vpsorg\n    name: a\n    token: t\n    " + canary + ": 1\n",
			"providers[0] (a): " + lineN(unknownKey, 5)},
		{"a value as a top-level key", canary + ": 1\nproviders: [{type: vpsorg, name: a, token: t}]\n",
			"config: " + lineN(unknownKey, 1)},
		{"mis-indented token joins the name", "providers:\n  - type: vpsorg\n    token: t\n    name: a\n     " + canary + "\n    rate_limit: -1\n",
			"providers[0].name: " + badAccount + "\nproviders[0].rate_limit: must not be negative, got -1"},
		{"mis-indented token joins the name, long", "providers:\n  - type: vpsorg\n    token: t\n    name: a\n      " + canary + strings.Repeat("x", 80) + "\n",
			"providers[0].name: " + badAccount},
		{"secret in etcd tls ca_file", haTLS("ca_file: " + canary),
			"remediation.ha.etcd.tls.ca_file: cannot read the file it names: no such file or directory" + notShownTLS},
		{"secret in etcd tls cert_file", haTLS("cert_file: " + canary + ", key_file: /dev/null"),
			"remediation.ha.etcd.tls.cert_file: cannot read the file it names: no such file or directory" + notShownTLS},
		{"secret in etcd tls key_file", haTLS("cert_file: /dev/null, key_file: " + canary),
			"remediation.ha.etcd.tls.key_file: cannot read the file it names: no such file or directory" + notShownTLS},
		{"secret in etcd tls key_file, absolute", haTLS("cert_file: /dev/null, key_file: /" + canary),
			"remediation.ha.etcd.tls.key_file: cannot read the file it names: no such file or directory" + notShownTLS},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Parse([]byte(tc.yaml), t.TempDir())
			if err == nil {
				t.Fatalf("accepted; want:\n%s", tc.want)
			}
			if err.Error() != tc.want {
				t.Errorf("error:\n%v\nwant:\n%s", err, tc.want)
			}
			if strings.Contains(err.Error(), "CANARY") {
				t.Errorf("the misplaced secret is in the error:\n%v", err)
			}
		})
	}
}

// An unknown key that looks like a name is still named, with a suggestion;
// one that does not is not, but its suggestion is still made.
func TestUnknownIdentifierKeyNamed(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"providers: [{type: vpsorg, name: a, token: t, tokn: x}]", "providers[0] (a).tokn: unknown field, did you mean `token`?"},
		{"providers: [{type: vpnbingo, name: a, token: t, timeZone: UTC}]", "providers[0] (a).timeZone: unknown field, did you mean `timezone`?"},
		{"providers: [{type: vpnbingo, name: a, token: t, time-zone: UTC}]", "providers[0] (a): " + lineN(unknownKey, 1) + ", did you mean `timezone`?"},
		{"global: {refresh-interval: 5s}\nproviders: [{type: vpnbingo, name: a, token: t}]", "global: " + lineN(unknownKey, 1) + ", did you mean `refresh_interval`?"},
		{"providers: [{type: vpnbingo, name: a, token: t, colour2: red}]", "providers[0] (a): " + lineN(unknownKey, 1)},
	} {
		_, err := config.Parse([]byte(tc.yaml), ".")
		if err == nil || err.Error() != tc.want {
			t.Errorf("%s:\n%v\nwant:\n%s", tc.yaml, err, tc.want)
		}
	}
}

// The credential rule comes in the same run as the file's other mistakes,
// in the order of the file (at remediation's line when bearer_token is not
// written); not when its own fields did not decode.
func TestCredentialInSameRun(t *testing.T) {
	const live = "remediation:\n  enabled: true\n  dry_run: false\n  state_file: /tmp/x.db\n"
	for _, tc := range []struct {
		name  string
		yaml  string
		basic bool
		want  string // "" accepted
	}{
		{"parse error and credential", "global:\n  intreval: 60s\nproviders: [{type: vpsorg, name: a, token: t}]\n" + live,
			false, "global.intreval: unknown field\n" + needCredential},
		{"unknown account and credential", "providers: [{type: vpsorg, name: a, token: t}]\n" + live +
			"  rules: [{name: r, account: nope, state: [stopped], action: reboot}]\n",
			false, needCredential + "\nremediation.rules[0] (r).account: no account named \"nope\""},
		{"basic auth is a credential", "global:\n  intreval: 60s\nproviders: [{type: vpsorg, name: a, token: t}]\n" + live,
			true, "global.intreval: unknown field"},
		{"dry_run that does not decode: no consequence", "providers: [{type: vpsorg, name: a, token: t}]\nremediation: {enabled: true, dry_run: nope, state_file: /tmp/x.db}\n",
			false, "remediation.dry_run: nope: not a boolean (true or false)"},
		{"unreadable bearer_token_file: no consequence", "providers: [{type: vpsorg, name: a, token: t}]\n" + live + "  webhook: {bearer_token_file: /nonexistent/h6}\n",
			false, "remediation.webhook.bearer_token_file: cannot read the file it names: no such file or directory (the value is not shown: if it is the secret itself, write it as bearer_token instead)"},
		{"credential given", "providers: [{type: vpsorg, name: a, token: t}]\n" + live + "  webhook: {bearer_token: hook-abcdef}\n", false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.ParseWith([]byte(tc.yaml), ".", config.Options{Credential: true, WebBasicAuth: tc.basic})
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || err.Error() != tc.want):
				t.Fatalf("error:\n%v\nwant:\n%s", err, tc.want)
			}
			var es config.Errors
			if tc.want != "" && (!errors.As(err, &es) || len(es) != strings.Count(tc.want, "\n")+1) {
				t.Errorf("want config.Errors, one per line; got %T %d", err, len(es))
			}
		})
	}
}

// A configuration read by a systemd unit names its secrets under
// ${CREDENTIALS_DIRECTORY} (LoadCredential=): they load from there.
func TestCredentialsDirectory(t *testing.T) {
	creds := t.TempDir()
	for name, v := range map[string]string{"vps.token": "tok-from-creds\n", "webhook.token": "hook-from-creds\n", "e2e.apikey": "key-from-creds\n"} {
		if err := os.WriteFile(filepath.Join(creds, name), []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("CREDENTIALS_DIRECTORY", creds)
	cfg := filepath.Join(t.TempDir(), "vps_exporter.yml")
	if err := os.WriteFile(cfg, []byte(`providers:
  - {type: vpsorg, name: a, token_file: "${CREDENTIALS_DIRECTORY}/vps.token"}
  - {type: e2e, name: b, token_file: "${CREDENTIALS_DIRECTORY}/vps.token", api_key_file: "${CREDENTIALS_DIRECTORY}/e2e.apikey", project_id: "1"}
remediation:
  webhook: {bearer_token_file: "${CREDENTIALS_DIRECTORY}/webhook.token"}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := [...]string{string(c.Providers[0].Token), string(c.Providers[1].APIKey), string(c.Remediation.Webhook.BearerToken)}; got != [...]string{"tok-from-creds", "key-from-creds", "hook-from-creds"} {
		t.Errorf("secrets %q, want those of the credentials directory", got)
	}
	// Without the variable (the unit lost LoadCredential=), the error
	// names the variable and the key.
	t.Setenv("CREDENTIALS_DIRECTORY", "")
	if err := os.Unsetenv("CREDENTIALS_DIRECTORY"); err != nil {
		t.Fatal(err)
	}
	_, err = config.Load(cfg)
	if err == nil || !strings.HasPrefix(err.Error(), "providers[0] (a).token_file: names ${CREDENTIALS_DIRECTORY}, which is not set in the environment") {
		t.Errorf("without CREDENTIALS_DIRECTORY: %v", err)
	}
}
