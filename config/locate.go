package config

import (
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	commoncfg "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"
)

// walker follows a YAML document through the config's types before it is
// decoded, so that every mistake of a file is found in one run, each with
// its field path: keys that are no field (with a suggestion), values that
// do not decode into their field (each scalar is decoded alone, so errors
// of custom unmarshalers such as durations, which carry no line, are placed
// too), lists where a mapping belongs and the like. It removes what it
// reports from the document, so that the rest decodes and validation can
// report its own mistakes in the same run.
//
// A value is repeated in an error only for a non-secret field; a secret
// field's value and an unknown field's value never are.
type walker struct {
	errs *errorList
	// paths maps each key's and list item's path to its line, lines the
	// other way, to place errors.
	paths map[string]int
	lines map[int]string
	// seen holds, for each node and type already walked, whether the
	// node was dropped: an alias is walked once per type, so an alias
	// bomb costs no more than its document, and a loop ends.
	seen map[seenKey]bool
}

type seenKey struct {
	n      *yaml.Node
	t      reflect.Type
	secret bool
}

// maxDepth bounds the walk: deeper than any config field is junk.
const maxDepth = 32

func newWalker(errs *errorList) *walker {
	return &walker{errs: errs, paths: map[string]int{}, lines: map[int]string{}, seen: map[seenKey]bool{}}
}

var (
	secretType     = reflect.TypeOf(commoncfg.Secret(""))
	durationType   = reflect.TypeOf(model.Duration(0))
	urlType        = reflect.TypeOf(commoncfg.URL{})
	tlsVersionType = reflect.TypeOf(commoncfg.TLSVersion(0))
	providerType   = reflect.TypeOf(Provider{})
	ruleType       = reflect.TypeOf(Rule{})
)

// isSecretName reports whether a field of that name never has its value
// repeated, whatever its type.
func isSecretName(name string) bool {
	switch name {
	case "token", "api_key", "bearer_token", "password", "key":
		return true
	}
	return false
}

func (w *walker) place(path string, n *yaml.Node) {
	if _, ok := w.paths[path]; !ok {
		w.paths[path] = n.Line
	}
	if _, ok := w.lines[n.Line]; !ok {
		w.lines[n.Line] = path
	}
}

func (w *walker) fail(path string, n *yaml.Node, format string, args ...any) {
	w.errs.fail(orTop(path), n.Line, fmt.Sprintf(format, args...))
}

// walk checks node n against type t and reports whether n must be dropped
// from its parent (it cannot be decoded into t; the error is recorded).
func (w *walker) walk(n *yaml.Node, t reflect.Type, path string, secret bool, depth int) (drop bool) {
	if depth > maxDepth {
		return false // the decoder reports what is wrong
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.AliasNode {
		if n.Alias == nil {
			return false
		}
		n = n.Alias
	}
	k := seenKey{n, t, secret}
	if d, ok := w.seen[k]; ok {
		return d
	}
	w.seen[k] = false
	if secret {
		// A field of the Secret type, whatever its name.
		gather(n, true, w.errs.secrets)
	}
	d := w.check(n, t, path, secret, depth)
	w.seen[k] = d
	return d
}

func (w *walker) check(n *yaml.Node, t reflect.Type, path string, secret bool, depth int) (drop bool) {
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return false // the field keeps its default
	}
	switch {
	case isRecord(t):
		if n.Kind != yaml.MappingNode {
			w.fail(path, n, "want a mapping (field: value), got %s", kindName(n))
			return true
		}
		if w.mapping(n, t, path, depth) {
			return true
		}
		// A type's own unmarshaler may refuse a combination of fields
		// (tls_config: both ca and ca_file); its message may quote values.
		if hasUnmarshaler(t) {
			if err := n.Decode(reflect.New(t).Interface()); err != nil {
				w.fail(path, n, "%s", clean(err.Error()))
				return true
			}
		}
		return false
	case t.Kind() == reflect.Slice:
		switch {
		case n.Kind == yaml.ScalarNode && !secret && !w.errs.secrets.has(n.Value) && !isRecord(deref(t.Elem())):
			w.fail(path, n, "%s: want a list, e.g. [%s]", show(n.Value), show(n.Value))
			return true
		case n.Kind != yaml.SequenceNode:
			w.fail(path, n, "want a list (each item on a line starting with \"- \", or [a, b]), got %s", kindName(n))
			return true
		}
		w.sequence(n, t, path, secret, depth)
		return false
	case t.Kind() == reflect.Map:
		if n.Kind != yaml.MappingNode {
			w.fail(path, n, "want a mapping (key: value), got %s", kindName(n))
			return true
		}
		return w.mapping(n, t, path, depth)
	}
	if n.Kind != yaml.ScalarNode {
		w.fail(path, n, "want a single value, got %s", kindName(n))
		return true
	}
	if err := n.Decode(reflect.New(t).Interface()); err != nil {
		w.fail(path, n, "%s", scalarError(t, n, secret, err))
		return true
	}
	return false
}

// mapping walks the pairs of a mapping node into a struct (record) or a
// map type, removing those it reports, and reports whether the node must
// be dropped (a merge that cannot be merged).
func (w *walker) mapping(n *yaml.Node, t reflect.Type, path string, depth int) (drop bool) {
	keep := n.Content[:0:0]
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if isMerge(k) {
			if !w.merge(v, t, path, depth) {
				keep = append(keep, k, v)
			}
			continue
		}
		if k.Kind != yaml.ScalarNode {
			w.errs.addLine(orTop(path), k.Line, "a key must be a single value, got "+kindName(k))
			continue
		}
		if isRecord(t) && !isIdentifier(k.Value) {
			// No field has such a name, and it is not repeated: a
			// value glued to its key (token = sk-..., token sk-...)
			// would be.
			w.unknownKey(n, k, t, path)
			continue
		}
		p := field(path, k.Value)
		w.place(p, k)
		if line, dup := seen[k.Value]; dup {
			where := fmt.Sprintf("lines %d and %d", line, k.Line)
			if line == k.Line {
				where = fmt.Sprintf("line %d", line)
			}
			w.errs.addLine(p, k.Line, "set twice ("+where+")")
			continue
		}
		seen[k.Value] = k.Line
		var ft reflect.Type
		secret := false
		if isRecord(t) {
			f, ok := fieldByTag(t, k.Value)
			if !ok {
				msg := "unknown field"
				if best := closest(k.Value, fieldNames(t)); best != "" {
					msg += ", did you mean `" + best + "`?"
					// The field it was meant to be is as good as
					// given: "required" on it would be a consequence
					// of this typo, not another mistake.
					w.errs.failed = append(w.errs.failed, field(path, best))
				}
				w.errs.addLine(p, k.Line, msg)
				continue
			}
			ft = f.Type
			secret = deref(ft) == secretType || isSecretName(k.Value)
		} else {
			if err := k.Decode(reflect.New(t.Key()).Interface()); err != nil {
				w.fail(p, k, "not a valid key")
				continue
			}
			ft = t.Elem()
		}
		if w.walk(v, ft, p, secret, depth+1) {
			continue
		}
		keep = append(keep, k, v)
	}
	n.Content = keep
	return false
}

// identifierKey is what an unknown key must look like to be repeated in an
// error: a name, not a value glued to one.
var identifierKey = regexp.MustCompile(`^[A-Za-z_]{1,64}$`)

// isIdentifier reports whether an unknown key may be repeated.
func isIdentifier(key string) bool { return identifierKey.MatchString(key) }

// unknownKey reports a key of a record that is no identifier without
// repeating it: "an unknown key at line N", with the field it starts
// with when it starts with one (token = sk-... is a token: whose colon
// is missing).
func (w *walker) unknownKey(n, k *yaml.Node, t reflect.Type, path string) {
	msg := fmt.Sprintf("an unknown key at line %d (not shown: it is no field name and may hold a value)", k.Line)
	lower := strings.ToLower(k.Value)
	best := ""
	for _, f := range fieldNames(t) {
		if len(f) > len(best) && len(lower) > len(f) && strings.HasPrefix(lower, f) && !isWordByte(lower[len(f)]) {
			best = f
		}
	}
	switch {
	case best != "":
		msg += fmt.Sprintf("; it starts with `%s`: write `%s: value` (a colon and a space after the name)", best, best)
	default:
		// A name spelt with dashes (refresh-interval): the suggestion
		// names the field, not the key.
		if best = closest(k.Value, fieldNames(t)); best != "" {
			msg += ", did you mean `" + best + "`?"
		}
	}
	if best != "" {
		w.errs.failed = append(w.errs.failed, field(path, best))
	}
	w.errs.addLine(orTop(path), k.Line, msg)
}

// isWordByte reports whether a byte continues a field name.
func isWordByte(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
}

// merge walks the value of a merge key (<<: *defaults), which must be a
// mapping or a list of them, and reports whether the merge must be
// dropped.
func (w *walker) merge(v *yaml.Node, t reflect.Type, path string, depth int) (drop bool) {
	target := v
	if target.Kind == yaml.AliasNode && target.Alias != nil {
		target = target.Alias
	}
	items := []*yaml.Node{v}
	if target.Kind == yaml.SequenceNode {
		items = target.Content
	}
	for _, it := range items {
		m := it
		if m.Kind == yaml.AliasNode && m.Alias != nil {
			m = m.Alias
		}
		if m.Kind != yaml.MappingNode {
			w.fail(field(path, "<<"), v, "a merge needs a mapping or a list of mappings, got %s", kindName(m))
			return true
		}
		if w.walk(it, t, path, false, depth+1) {
			return true
		}
	}
	return false
}

// sequence walks the items of a list. An item of a record type that does
// not decode becomes an empty mapping (so the others keep their index); an
// item of another type is removed.
func (w *walker) sequence(n *yaml.Node, t reflect.Type, path string, secret bool, depth int) {
	elem := t.Elem()
	keep := n.Content[:0:0]
	for i, item := range n.Content {
		p := itemPath(path, i, itemName(item, deref(elem)))
		w.place(p, item)
		if !w.walk(item, elem, p, secret, depth+1) {
			keep = append(keep, item)
		} else if isRecord(deref(elem)) {
			keep = append(keep, &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: item.Line, Column: item.Column})
		}
	}
	n.Content = keep
}

// itemName is the name of an account or a rule, as validation names them.
func itemName(n *yaml.Node, t reflect.Type) string {
	if t != providerType && t != ruleType {
		return ""
	}
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind != yaml.MappingNode {
		return ""
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k, v := n.Content[i], n.Content[i+1]; k.Value == "name" && v.Kind == yaml.ScalarNode && v.ShortTag() != "!!null" {
			if t == providerType && !ValidAccountName(v.Value) {
				return "" // see accountPath
			}
			return v.Value
		}
	}
	return ""
}

var bareNumber = regexp.MustCompile(`^[0-9]+$`)

// scalarError says why a single value does not decode into its field:
// with the value and a hint for a non-secret field, without for a secret
// one.
func scalarError(t reflect.Type, n *yaml.Node, secret bool, err error) string {
	if secret {
		return "cannot be read as text (the value is not shown: it is a secret)"
	}
	v := show(n.Value)
	switch t {
	case durationType:
		if bareNumber.MatchString(n.Value) {
			return fmt.Sprintf("%s: not a duration, e.g. %ss", v, n.Value)
		}
		return v + ": not a duration, e.g. 60s, 10m or 24h (units ms, s, m, h, d, w, y)"
	case urlType:
		// Not repeated: a proxy URL may carry a password.
		return "not a valid URL"
	case tlsVersionType:
		return v + ": unknown TLS version (want TLS10, TLS11, TLS12 or TLS13)"
	}
	switch t.Kind() {
	case reflect.Bool:
		return v + ": not a boolean (true or false)"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return v + ": not a whole number"
	case reflect.Float32, reflect.Float64:
		return v + ": not a number"
	case reflect.String:
		return v + ": cannot be read as text"
	}
	return clean(err.Error())
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	}
	return "a single value"
}

func orTop(path string) string {
	if path == "" {
		return "config"
	}
	return path
}

func deref(t reflect.Type) reflect.Type {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

// isRecord reports whether t is a struct decoded field by field (a struct
// without yaml-tagged fields, such as a URL, is a single value).
func isRecord(t reflect.Type) bool {
	if t.Kind() != reflect.Struct {
		return false
	}
	for i := 0; i < t.NumField(); i++ {
		if t.Field(i).Tag.Get("yaml") != "" {
			return true
		}
	}
	return false
}

type obsoleteUnmarshaler interface {
	UnmarshalYAML(unmarshal func(any) error) error
}

func hasUnmarshaler(t reflect.Type) bool {
	p := reflect.PointerTo(t)
	return p.Implements(reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()) || p.Implements(reflect.TypeOf((*obsoleteUnmarshaler)(nil)).Elem())
}

func isMerge(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Value == "<<" && (n.Tag == "" || n.Tag == "!" || n.ShortTag() == "!!merge")
}

// fieldByTag returns the struct field that yaml decodes key into,
// looking into inlined structs.
func fieldByTag(t reflect.Type, key string) (reflect.StructField, bool) {
	for _, f := range fields(t) {
		if f.name == key {
			return f.StructField, true
		}
	}
	return reflect.StructField{}, false
}

// fieldNames returns the keys a struct takes, in order.
func fieldNames(t reflect.Type) []string {
	var names []string
	for _, f := range fields(t) {
		names = append(names, f.name)
	}
	return names
}

type namedField struct {
	reflect.StructField
	name string
}

func fields(t reflect.Type) []namedField {
	var out []namedField
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if strings.Contains(opts, "inline") {
			out = append(out, fields(f.Type)...)
			continue
		}
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out = append(out, namedField{f, name})
	}
	return out
}

// located places an error of the strict decoder that the walk did not
// find (it should find them all): on the field of the line it names, with
// every quoted value removed. It is the last resort, so it says only
// what yaml says.
func (w *walker) located(err error) *FieldError {
	msg := strings.TrimPrefix(err.Error(), "yaml: unmarshal errors:\n")
	msg, _, _ = strings.Cut(strings.TrimSpace(msg), "\n")
	if m := lineRef.FindStringSubmatch(msg); m != nil {
		if n, err := strconv.Atoi(m[1]); err == nil && w.lines[n] != "" {
			return &FieldError{Path: w.lines[n], Msg: clean(lineRef.ReplaceAllString(msg, "")), line: n}
		}
	}
	return &FieldError{Path: "config", Msg: clean(msg)}
}

var (
	lineRef = regexp.MustCompile(`line ([0-9]+): `)
	// The values yaml.v3's and Go's errors quote: `v`, "v", an anchor's
	// name (to the last quote before what yaml says of it: a name may
	// hold a quote), and 'v' of more than one character (see
	// singleQuoted).
	quotedValue  = regexp.MustCompile("`[^`]*`")
	doubleQuoted = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	anchorName   = regexp.MustCompile(`anchor '.*' (referenced|value contains itself)`)
)

// clean drops yaml's prefix and every quoted value from a message that
// may quote a value (a secret in the wrong place, a password in a URL).
// yaml's syntax messages stay as they are: they quote tokens, one
// character each (did not find expected ',' or ']').
func clean(msg string) string {
	msg = strings.TrimPrefix(msg, "yaml: ")
	msg = quotedValue.ReplaceAllString(msg, "`<value>`")
	msg = anchorName.ReplaceAllString(msg, "anchor '<value>' $1")
	msg = singleQuoted(msg)
	return doubleQuoted.ReplaceAllString(msg, "<value>")
}

// singleQuoted replaces each 'v' of msg by '<value>', except a single
// character: a token yaml quotes. A quote that no other closes is left:
// it is an apostrophe.
func singleQuoted(msg string) string {
	var b strings.Builder
	for {
		i := strings.IndexByte(msg, '\'')
		if i < 0 {
			b.WriteString(msg)
			return b.String()
		}
		b.WriteString(msg[:i])
		rest := msg[i+1:]
		if r, n := utf8.DecodeRuneInString(rest); n > 0 && r != '\'' && len(rest) > n && rest[n] == '\'' {
			b.WriteString(msg[i : i+n+2]) // a token: ','
			msg = rest[n+1:]
			continue
		}
		j := strings.IndexByte(rest, '\'')
		if j < 0 {
			b.WriteString(msg[i:])
			return b.String()
		}
		b.WriteString("'<value>'")
		msg = rest[j+1:]
	}
}
