package config

import (
	"net/url"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// Secrets never leave the package in an error. Each place that repeats a
// value (a list that should be one, an unknown action, a time zone that
// does not load, yaml's own messages) knows only its own field, and a
// YAML alias, a merge key or a flow mapping can carry a secret's value
// into any of them: `token: &t sk-abc` and `allowed_actions: *t`. So the
// values of every secret of the file are collected (the values of secret
// fields wherever they are in the document, the user info and query of a
// URL, the content of every *_file read) and removed from every error line
// at the end, whatever put them there.

// redacted replaces a secret in an error line.
const redacted = "<redacted>"

// wholeOnly is the length below which a secret is removed only where it
// stands alone (not inside a longer word): `token: t` must not take every
// t out of the messages.
const wholeOnly = 8

// secrets is the set of secret values of one file.
type secrets map[string]struct{}

func (s secrets) add(v string) {
	if v = strings.TrimSpace(v); v != "" {
		s[v] = struct{}{}
	}
}

// has reports whether v is a secret of the file.
func (s secrets) has(v string) bool {
	_, ok := s[strings.TrimSpace(v)]
	return ok
}

// redact removes every secret from line: as it is, Go-quoted (as %q and
// show write it), URL-escaped, and the start of it where show cut a long
// value (`"sk-abc..."...`).
func (s secrets) redact(line string) string {
	if len(s) == 0 {
		return line
	}
	vals := make([]string, 0, len(s))
	for v := range s {
		vals = append(vals, v)
	}
	// Longest first: a secret inside a longer one must not leave the
	// rest of the longer one behind.
	sort.Slice(vals, func(i, j int) bool {
		if len(vals[i]) != len(vals[j]) {
			return len(vals[i]) > len(vals[j])
		}
		return vals[i] < vals[j]
	})
	for _, v := range vals {
		q := strconv.Quote(v)
		q = q[1 : len(q)-1]
		for _, form := range []string{v, q, url.QueryEscape(v), url.PathEscape(v)} {
			line = replaceSecret(line, form, len(v) >= wholeOnly)
		}
		// show cuts a long value at a rune boundary and appends `"...`:
		// the start of a secret may end a cut value.
		for k := len(q) - 1; k >= 4; k-- {
			if !utf8.RuneStart(q[k]) {
				continue
			}
			if cut := q[:k] + `"...`; strings.Contains(line, cut) {
				line = strings.ReplaceAll(line, cut, redacted+`"...`)
			}
		}
	}
	return line
}

// replaceSecret replaces form in line: everywhere, or (anywhere false)
// only where it is not part of a longer word.
func replaceSecret(line, form string, anywhere bool) string {
	if form == "" || !strings.Contains(line, form) {
		return line
	}
	if anywhere {
		return strings.ReplaceAll(line, form, redacted)
	}
	first, _ := utf8.DecodeRuneInString(form)
	last, _ := utf8.DecodeLastRuneInString(form)
	var b strings.Builder
	for {
		i := strings.Index(line, form)
		if i < 0 {
			b.WriteString(line)
			return b.String()
		}
		before, _ := utf8.DecodeLastRuneInString(line[:i])
		after, _ := utf8.DecodeRuneInString(line[i+len(form):])
		inWord := (i > 0 && isWordRune(before) && isWordRune(first)) ||
			(i+len(form) < len(line) && isWordRune(after) && isWordRune(last))
		b.WriteString(line[:i])
		if inWord {
			b.WriteString(form)
		} else {
			b.WriteString(redacted)
		}
		line = line[i+len(form):]
	}
}

func isWordRune(r rune) bool { return r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) }

// secretNames are the fields whose values are secrets, wherever they are.
var secretNames = []string{"token", "api_key", "bearer_token", "password", "key"}

// knownFields are the names of every field of the configuration: a known
// field is not a misspelt secret.
var knownFields = func() map[string]bool {
	m := map[string]bool{}
	var add func(t reflect.Type, seen map[reflect.Type]bool)
	add = func(t reflect.Type, seen map[reflect.Type]bool) {
		t = deref(t)
		switch t.Kind() {
		case reflect.Slice, reflect.Map:
			add(t.Elem(), seen)
			return
		case reflect.Struct:
		default:
			return
		}
		if seen[t] {
			return
		}
		seen[t] = true
		for _, f := range fields(t) {
			m[f.name] = true
			add(f.Type, seen)
		}
	}
	add(reflect.TypeOf(Config{}), map[reflect.Type]bool{})
	return m
}()

// secretKey reports whether the value of a mapping key of that name is a
// secret: a secret field's name; or a name that is no field of the
// configuration and is close to one (tokn) or says it holds one
// (my_token, secret, passwd). A *_file or *_ref names where a secret is,
// not the secret.
func secretKey(name string) bool {
	k := strings.ToLower(name)
	if strings.HasSuffix(k, "_file") || strings.HasSuffix(k, "_ref") {
		return false
	}
	if isSecretName(k) {
		return true
	}
	if knownFields[k] {
		return false
	}
	for _, s := range secretNames {
		if _, close := closeness(k, s); close {
			return true
		}
	}
	for _, part := range []string{"token", "secret", "passw", "apikey", "api_key", "credential"} {
		if strings.Contains(k, part) {
			return true
		}
	}
	return false
}

// gather collects the secrets of a document (all of it, when secret is
// true: the value of a secret field): every scalar under a secret key
// (keys and values, through aliases and merges), and the user info and
// query values of base_url and proxy_url. Each node is visited at
// most once per kind (secret or not), so an alias bomb costs no more
// than its document.
func gather(root *yaml.Node, secret bool, into secrets) {
	type visit struct {
		n      *yaml.Node
		secret bool
	}
	seen := map[visit]bool{}
	var walk func(n *yaml.Node, secret bool)
	walk = func(n *yaml.Node, secret bool) {
		if n == nil {
			return
		}
		if n.Kind == yaml.AliasNode {
			walk(n.Alias, secret)
			return
		}
		if seen[visit{n, secret}] {
			return
		}
		seen[visit{n, secret}] = true
		switch n.Kind {
		case yaml.ScalarNode:
			if secret {
				into.add(n.Value)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				walk(k, secret)
				sec := secret
				if k.Kind == yaml.ScalarNode {
					sec = sec || secretKey(k.Value)
					if k.Value == "base_url" || k.Value == "proxy_url" {
						if s := scalarOf(v); s != nil {
							for _, x := range urlSecrets(s.Value) {
								into.add(x)
							}
						}
					}
				}
				walk(v, sec)
			}
		default: // documents and sequences
			for _, c := range n.Content {
				walk(c, secret)
			}
		}
	}
	walk(root, secret)
}

// scalarOf returns n (through an alias) when it is a scalar.
func scalarOf(n *yaml.Node) *yaml.Node {
	if n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n == nil || n.Kind != yaml.ScalarNode {
		return nil
	}
	return n
}

// urlSecrets returns the parts of a URL (as written, parsed or not) that
// may be credentials: the user info and its password (`admin:sk-abc@host`
// without a scheme too) and the query's values, as written and unescaped.
func urlSecrets(raw string) []string {
	var out []string
	add := func(s string) {
		if s == "" {
			return
		}
		out = append(out, s)
		if u, err := url.PathUnescape(s); err == nil && u != s {
			out = append(out, u)
		}
		if u, err := url.QueryUnescape(s); err == nil && u != s {
			out = append(out, u)
		}
	}
	rest := raw
	if i := strings.LastIndex(rest, "@"); i >= 0 {
		info := rest[:i]
		if j := strings.Index(info, "//"); j >= 0 {
			info = info[j+2:]
		}
		add(info)
		if _, pw, ok := strings.Cut(info, ":"); ok {
			add(pw)
		}
	}
	if _, q, ok := strings.Cut(raw, "?"); ok {
		q, _, _ = strings.Cut(q, "#")
		for _, pair := range strings.FieldsFunc(q, func(r rune) bool { return r == '&' || r == ';' }) {
			_, v, _ := strings.Cut(pair, "=")
			add(v)
		}
	}
	return out
}
