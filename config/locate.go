package config

import (
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// locate finds where a document that failed to decode into a value of
// type t went wrong, and returns that error with its field path
// (`providers[1].rate_limit: ...`) instead of a line number: each scalar
// is decoded alone into its field's type, so errors of custom
// unmarshalers (durations, URLs), which carry no line, are placed too.
// It returns nil when it cannot place the error.
func locate(data []byte, t reflect.Type, decodeErr error) error {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil || len(root.Content) == 0 {
		return nil
	}
	w := &walker{lines: map[int]string{}}
	if err := w.walk(root.Content[0], t, "", 0); err != nil {
		return err
	}
	msg := firstLine(decodeErr.Error())
	if m := unknownField.FindStringSubmatch(msg); m != nil {
		for _, p := range w.unknown {
			if p == m[1] || strings.HasSuffix(p, "."+m[1]) {
				return fmt.Errorf("%s: unknown field", p)
			}
		}
	}
	// Another error yaml reports with a line (a mapping where a list
	// belongs): name the field on that line.
	lines := w.lines
	if m := lineRef.FindStringSubmatch(decodeErr.Error()); m != nil {
		if n, err := strconv.Atoi(m[1]); err == nil && lines[n] != "" {
			msg := lineRef.ReplaceAllString(firstLine(decodeErr.Error()), "")
			return fmt.Errorf("%s: %s", lines[n], clean(msg))
		}
	}
	return nil
}

var (
	lineRef      = regexp.MustCompile(`line ([0-9]+): `)
	unknownField = regexp.MustCompile(`field (\S+) not found in type`)
)

// walker records, while following a document through the config's types,
// which field path each line holds and the keys that are no field.
type walker struct {
	lines   map[int]string
	unknown []string
}

func firstLine(s string) string {
	s = strings.TrimPrefix(s, "yaml: unmarshal errors:\n")
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

// clean drops yaml's prefixes and every quoted value (it may be a secret
// pasted into the wrong field).
func clean(msg string) string {
	msg = strings.TrimPrefix(msg, "yaml: ")
	msg = quotedValue.ReplaceAllString(msg, "`<value>`")
	return doubleQuoted.ReplaceAllString(msg, "<value>")
}

var doubleQuoted = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)

// walk follows node n through type t, recording the path of every key's
// line, and returns the first scalar that does not decode into its field.
func (w *walker) walk(n *yaml.Node, t reflect.Type, path string, depth int) error {
	if depth > 32 {
		return nil // deeper than any config field: an alias loop, or junk
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	switch {
	case n.Kind == yaml.ScalarNode:
		if n.Tag == "!!null" {
			return nil
		}
		if err := n.Decode(reflect.New(t).Interface()); err != nil {
			return fmt.Errorf("%s: %s", orTop(path), clean(lineRef.ReplaceAllString(firstLine(err.Error()), "")))
		}
	case t.Kind() == reflect.Struct && n.Kind == yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := k.Value
			if path != "" {
				p = path + "." + k.Value
			}
			w.lines[k.Line] = p
			f, ok := fieldByTag(t, k.Value)
			if !ok {
				w.unknown = append(w.unknown, p)
				continue
			}
			if err := w.walk(v, f.Type, p, depth+1); err != nil {
				return err
			}
		}
	case t.Kind() == reflect.Slice && n.Kind == yaml.SequenceNode:
		for i, item := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			w.lines[item.Line] = p
			if err := w.walk(item, t.Elem(), p, depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

func orTop(path string) string {
	if path == "" {
		return "config"
	}
	return path
}

// fieldByTag returns the struct field that yaml decodes key into,
// looking into inlined structs.
func fieldByTag(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if strings.Contains(opts, "inline") {
			if sf, ok := fieldByTag(f.Type, key); ok {
				return sf, true
			}
			continue
		}
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		if name == key {
			return f, true
		}
	}
	return reflect.StructField{}, false
}
