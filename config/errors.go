package config

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// FieldError is one mistake in a configuration file: Path names the field
// (`providers[1] (bingo-prod).rate_limit`), Msg says what is wrong with it.
// Msg shows the value of a non-secret field, never that of a secret one.
type FieldError struct {
	Path string
	Msg  string

	line int // where the field is in the file, for ordering; 0 unknown
}

// Error returns "path: message".
func (e *FieldError) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

// Errors is every mistake found in one configuration file, in the order of
// the file. Its text is one mistake per line.
type Errors []*FieldError

// Error returns the mistakes, one per line.
func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap returns the mistakes for errors.Is and errors.As.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// maxErrors bounds the mistakes reported for one file; the rest are
// counted on a last line.
const maxErrors = 100

// errorList collects the mistakes of one file: the walk of the YAML
// document adds those of values that do not decode into their field, and
// validation adds its own. A field whose value did not decode is left at
// its default for validation, so validation's errors at or under that field
// (consequences, not mistakes) are dropped.
type errorList struct {
	errs    Errors
	failed  []string // paths whose value did not decode
	dropped int      // mistakes past maxErrors
	// secrets are the file's secret values, removed from every line
	// when the mistakes leave the package (see secrets).
	secrets secrets
}

// secret records a secret value of the file.
func (l *errorList) secret(v string) {
	if l.secrets == nil {
		l.secrets = secrets{}
	}
	l.secrets.add(v)
}

// final removes the file's secrets from the lines of es, which are about
// to leave the package.
func (l *errorList) final(es Errors) Errors {
	for _, e := range es {
		e.Path = l.secrets.redact(e.Path)
		e.Msg = l.secrets.redact(e.Msg)
	}
	return es
}

// add records a mistake at path, unless the path's value failed to decode.
func (l *errorList) add(path, format string, args ...any) {
	l.addLine(path, 0, fmt.Sprintf(format, args...))
}

func (l *errorList) addLine(path string, line int, msg string) {
	for _, f := range l.failed {
		if under(path, f) {
			return
		}
	}
	if len(l.errs) >= maxErrors {
		l.dropped++
		return
	}
	// One mistake, one line: nothing a message quotes may break it.
	msg = strings.ReplaceAll(msg, "\n", " ")
	l.errs = append(l.errs, &FieldError{Path: path, Msg: msg, line: line})
}

// fail records that the value at path did not decode, and why.
func (l *errorList) fail(path string, line int, msg string) {
	l.addLine(path, line, msg)
	l.failed = append(l.failed, path)
}

// failedAt reports whether the value at (or under) one of paths did not
// decode: a check of their combination would report a consequence.
func (l *errorList) failedAt(paths ...string) bool {
	for _, p := range paths {
		for _, f := range l.failed {
			if under(f, p) {
				return true
			}
		}
	}
	return false
}

// err returns the mistakes in the order of the file (those without a
// place last), or nil. lines maps field paths to their lines; a path that
// is not in the file (a required field left out) takes the line of its
// closest parent that is.
func (l *errorList) err(lines map[string]int) error {
	if len(l.errs) == 0 {
		return nil
	}
	for _, e := range l.errs {
		if e.line == 0 {
			e.line = lineOf(e.Path, lines)
		}
	}
	sort.SliceStable(l.errs, func(i, j int) bool { return rank(l.errs[i].line) < rank(l.errs[j].line) })
	out := l.final(l.errs)
	if l.dropped > 0 {
		return append(out, &FieldError{Msg: fmt.Sprintf("... and %d more errors", l.dropped)})
	}
	return out
}

func rank(line int) int {
	if line == 0 {
		return int(^uint(0) >> 1)
	}
	return line
}

func lineOf(path string, lines map[string]int) int {
	for path != "" {
		if n, ok := lines[path]; ok {
			return n
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			return 0
		}
		path = strings.TrimRight(path[:i], " ")
	}
	return 0
}

// under reports whether path is at or below parent.
func under(path, parent string) bool {
	if !strings.HasPrefix(path, parent) {
		return false
	}
	if len(path) == len(parent) {
		return true
	}
	switch path[len(parent)] {
	case '.', '[', ' ':
		return true
	}
	return false
}

// itemPath names item i of a list; accounts and rules are named by their
// name too (`providers[1] (bingo-prod)`), as an operator knows them.
func itemPath(list string, i int, name string) string {
	p := fmt.Sprintf("%s[%d]", list, i)
	if name != "" {
		p += " (" + show(name) + ")"
	}
	return p
}

// field joins a field name to its parent's path.
func field(parent, name string) string {
	if parent == "" {
		return show(name)
	}
	return parent + "." + show(name)
}

// maxShown bounds a value repeated in an error.
const maxShown = 64

// show returns a value (of a non-secret field) or a name for an error
// line: as it is when it is short, printable and unambiguous, else
// Go-quoted and cut, so that it can never break the one-per-line format.
func show(s string) string {
	plain := s != "" && len(s) <= maxShown && utf8.ValidString(s) && strings.TrimSpace(s) == s
	if plain {
		for _, r := range s {
			if !unicode.IsPrint(r) || r == '"' || r == '`' {
				plain = false
				break
			}
		}
	}
	if plain {
		return s
	}
	if len(s) > maxShown {
		cut := maxShown
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return strconv.Quote(s[:cut]) + "..."
	}
	return strconv.Quote(s)
}

// suggest returns "did you mean `x`?" for the known name closest to an
// unknown one, or "" when none is close: the same name spelled with other
// case, dashes or underscores (timeZone, time-zone), a small edit distance
// (tokn, refresh_intervall), the start of a longer name (refresh) or its
// last words (url for base_url).
func suggest(unknown string, known []string) string {
	best := closest(unknown, known)
	if best == "" {
		return ""
	}
	return "did you mean `" + best + "`?"
}

// closest is the known name suggest would suggest, or "".
func closest(unknown string, known []string) string {
	best, bestScore := "", -1
	for _, k := range known {
		score, ok := closeness(unknown, k)
		if ok && (bestScore < 0 || score < bestScore) {
			best, bestScore = k, score
		}
	}
	return best
}

// closeness scores how close a typo is to a known name (lower is closer)
// and whether it is close enough to suggest.
func closeness(typo, known string) (int, bool) {
	a := strings.ToLower(typo)
	norm := strings.NewReplacer("_", "", "-", "", " ", "")
	if norm.Replace(a) == norm.Replace(known) {
		return 0, true
	}
	d := editDistance(a, known)
	limit := 1
	switch n := utf8.RuneCountInString(known); {
	case n > 8:
		limit = 3
	case n > 4:
		limit = 2
	}
	if d <= limit {
		return d, true
	}
	if n := utf8.RuneCountInString(a); (n >= 4 && strings.HasPrefix(known, a)) || (n >= 3 && strings.HasSuffix(known, "_"+a)) {
		return d, true
	}
	return 0, false
}

// editDistance is the optimal string alignment distance between a and b:
// insertions, deletions, substitutions and transpositions of adjacent
// runes each cost 1.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	// Three rows: the one before the previous, the previous, the current.
	pp := make([]int, len(rb)+1)
	p := make([]int, len(rb)+1)
	c := make([]int, len(rb)+1)
	for j := range p {
		p[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		c[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			c[j] = min(p[j]+1, c[j-1]+1, p[j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				c[j] = min(c[j], pp[j-2]+1)
			}
		}
		pp, p, c = p, c, pp
	}
	return p[len(rb)]
}
