package config

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// The collector: one line per mistake, in the order of the file, nothing
// reported under a field whose value did not decode, at most maxErrors.
func TestErrorList(t *testing.T) {
	lines := map[string]int{"global": 1, "global.refresh_interval": 2, "providers": 3, "providers[0] (a)": 4, "providers[0] (a).rate_limit": 6, "remediation": 9}
	for _, tc := range []struct {
		name string
		fill func(l *errorList)
		want string
	}{
		{"none", func(*errorList) {}, ""},
		{"one", func(l *errorList) { l.add("global.refresh_interval", "must be positive") }, "global.refresh_interval: must be positive"},
		{"file order", func(l *errorList) {
			l.add("remediation.cooldown", "must not be negative")
			l.fail("providers[0] (a).rate_limit", 6, "fast: not a number")
			l.add("providers[0] (a).token", "required (token or token_file)")
			l.add("providers", "at least one account is required")
		}, "providers: at least one account is required\n" +
			"providers[0] (a).token: required (token or token_file)\n" +
			"providers[0] (a).rate_limit: fast: not a number\n" +
			"remediation.cooldown: must not be negative"},
		{"no place: last, in the order added", func(l *errorList) {
			l.add("elsewhere", "b")
			l.add("", "a")
			l.add("global", "c")
		}, "global: c\nelsewhere: b\na"},
		{"consequences of a value that did not decode are dropped", func(l *errorList) {
			l.fail("providers[0]", 4, "want a mapping (field: value), got a list")
			l.add("providers[0].type", "required (vpnbingo, vpsorg or e2e)")
			l.add("providers[0]", "needs something")
			l.add("providers[00]", "another field")
			l.add("providers[0] (a).name", "decorated: the same item")
		}, "providers[00]: another field\nproviders[0]: want a mapping (field: value), got a list"},
		{"a message stays on its line", func(l *errorList) { l.add("global", "a\nb") }, "global: a b"},
		{"bounded", func(l *errorList) {
			for i := 0; i < maxErrors+5; i++ {
				l.add(fmt.Sprintf("f%d", i), "x")
			}
		}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := &errorList{}
			tc.fill(l)
			err := l.err(lines)
			if tc.name == "bounded" {
				var es Errors
				if !errors.As(err, &es) || len(es) != maxErrors+1 || es[maxErrors].Error() != "... and 5 more errors" {
					t.Fatalf("%d errors, last %v", len(es), es[len(es)-1])
				}
				return
			}
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != tc.want {
				t.Errorf("got:\n%s\nwant:\n%s", got, tc.want)
			}
			if err != nil {
				var fe *FieldError
				if !errors.As(err, &fe) {
					t.Error("errors.As finds no FieldError")
				}
			}
		})
	}
}

func TestFailedAt(t *testing.T) {
	l := &errorList{}
	l.fail("remediation.rules[0] (r).state", 3, "x")
	for path, want := range map[string]bool{
		"remediation.rules[0] (r).state":  true,
		"remediation.rules[0] (r)":        true, // the failed field is under it
		"remediation.rules[0] (r).status": false,
		"remediation.rules[1] (s).state":  false,
	} {
		if got := l.failedAt(path); got != want {
			t.Errorf("failedAt(%q) = %v", path, got)
		}
	}
}

func TestShow(t *testing.T) {
	for in, want := range map[string]string{
		"60":                    "60",
		"5 minutes":             "5 minutes",
		"Europe/Berlin":         "Europe/Berlin",
		"":                      `""`,
		" 60":                   `" 60"`,
		"a\nb":                  `"a\nb"`,
		`say "hi"`:              `"say \"hi\""`,
		"tab\there":             `"tab\there"`,
		"\xff":                  `"\xff"`,
		strings.Repeat("é", 40): `"` + strings.Repeat("é", 32) + `"...`,
	} {
		if got := show(in); got != want {
			t.Errorf("show(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestSuggest(t *testing.T) {
	provider := fieldNames(providerType)
	for _, tc := range []struct {
		typo  string
		known []string
		want  string
	}{
		{"time_zone", provider, "timezone"},       // spelling: underscore
		{"timeZone", provider, "timezone"},        // spelling: case
		{"rate-limit", provider, "rate_limit"},    // spelling: dash
		{"tokn", provider, "token"},               // one deletion
		{"toekn", provider, "token"},              // one transposition
		{"token_fiel", provider, "token_file"},    // transposition beats the others
		{"apikey", provider, "api_key"},           // spelling
		{"api_key_fil", provider, "api_key_file"}, // one deletion, long name
		{"proxy", provider, "proxy_url"},          // the start of a name
		{"tls", provider, ""},                     // too short a start
		{"url", provider, "base_url"},             // the last word of a name
		{"file", provider, "token_file"},          // the first of several with that last word
		{"interval", fieldNames(globalType()), "refresh_interval"},
		{"ur", provider, ""},     // too short an end
		{"colour", provider, ""}, // nothing close
		{"tokenfile", provider, "token_file"},
		{"refresh", fieldNames(globalType()), "refresh_interval"},
		{"max_concurency", fieldNames(globalType()), "max_concurrency"},
		{"provider", fieldNames(configType()), "providers"},
		{"remediations", fieldNames(configType()), "remediation"},
		{"rule", fieldNames(remediationType()), "rules"},
		{"stat", fieldNames(ruleType), "state"}, // state over status: closer
		{"xy", []string{"id"}, ""},
	} {
		want := ""
		if tc.want != "" {
			want = "did you mean `" + tc.want + "`?"
		}
		if got := suggest(tc.typo, tc.known); got != want {
			t.Errorf("suggest(%q) = %q, want %q", tc.typo, got, want)
		}
	}
}

func TestEditDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"", "", 0},
		{"", "abc", 3},
		{"abc", "", 3},
		{"token", "token", 0},
		{"tokn", "token", 1},
		{"toekn", "token", 1},
		{"kitten", "sitting", 3},
		{"ca", "abc", 3}, // optimal string alignment, not Damerau
		{"zeitzone", "timezone", 4},
		{"größe", "grösse", 2},
	} {
		if got := editDistance(tc.a, tc.b); got != tc.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}

func configType() reflect.Type      { return reflect.TypeOf(Config{}) }
func globalType() reflect.Type      { return reflect.TypeOf(Global{}) }
func remediationType() reflect.Type { return reflect.TypeOf(Remediation{}) }

// clean keeps yaml's syntax messages readable (they quote tokens, one
// character each) and drops every value a message quotes.
func TestClean(t *testing.T) {
	for in, want := range map[string]string{
		"yaml: line 1: did not find expected ',' or ']'":               "line 1: did not find expected ',' or ']'",
		"yaml: line 1: did not find expected ',' or '}'":               "line 1: did not find expected ',' or '}'",
		"yaml: line 1: did not find expected '-' indicator":            "line 1: did not find expected '-' indicator",
		"yaml: line 3: could not find expected ':'":                    "line 3: could not find expected ':'",
		"yaml: unknown anchor 'tok-SECRET' referenced":                 "unknown anchor '<value>' referenced",
		"yaml: unknown anchor 'ab'cd-SECRET' referenced":               "unknown anchor '<value>' referenced",
		"yaml: anchor 'a-SECRET' value contains itself":                "anchor '<value>' value contains itself",
		"yaml: unknown anchor 'y' referenced":                          "unknown anchor '<value>' referenced",
		"cannot unmarshal !!str `tok-SECRET` into int":                 "cannot unmarshal !!str `<value>` into int",
		`parse "http://u:pw-SECRET@x": invalid port`:                   "parse <value>: invalid port",
		`invalid escape "pw\"-SECRET"`:                                 "invalid escape <value>",
		"expected ',' but found 'pw-SECRET' and ']'":                   "expected ',' but found '<value>' and ']'",
		"found character that cannot start any token":                  "found character that cannot start any token",
		"found 'é' where 'x' was expected":                             "found 'é' where 'x' was expected",
		"yaml: line 1: mapping values are not allowed in this context": "line 1: mapping values are not allowed in this context",
	} {
		if got := clean(in); got != want {
			t.Errorf("clean(%q)\n got %q\nwant %q", in, got, want)
		}
	}
}
