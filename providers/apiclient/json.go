package apiclient

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Num is a JSON number that also arrives as a string ("2", "15.00 GB") or
// null. Raw keeps the text for unit parsing; Set is false for null/absent.
type Num struct {
	V   float64
	Raw string
	Set bool
}

// UnmarshalJSON accepts a number, a string holding a number with an optional
// unit, or null.
func (n *Num) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	*n = Num{}
	if len(b) == 0 || string(b) == "null" {
		return nil
	}
	if b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		s = strings.TrimSpace(s)
		if s == "" {
			return nil
		}
		n.Raw = s
		v, _, err := SplitUnit(s)
		if err != nil {
			return err
		}
		n.V, n.Set = v, true
		return nil
	}
	if b[0] == 't' || b[0] == 'f' {
		var v bool
		if err := json.Unmarshal(b, &v); err != nil {
			return err
		}
		n.Raw = string(b)
		n.Set = true
		if v {
			n.V = 1
		}
		return nil
	}
	v, err := strconv.ParseFloat(string(b), 64)
	if err != nil {
		return fmt.Errorf("not a number: %.40q", b)
	}
	n.V, n.Raw, n.Set = v, string(b), true
	return nil
}

// SplitUnit parses "15.00 GB" into 15 and "GB"; a bare number has no unit.
func SplitUnit(s string) (float64, string, error) {
	s = strings.TrimSpace(s)
	i := 0
	for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '.' || s[i] == '-' || s[i] == '+' || s[i] == 'e' || s[i] == 'E') {
		// Stop at an 'e' that starts a unit word rather than an exponent.
		if (s[i] == 'e' || s[i] == 'E') && (i == 0 || i+1 >= len(s) || !(s[i+1] >= '0' && s[i+1] <= '9' || s[i+1] == '-' || s[i+1] == '+')) {
			break
		}
		i++
	}
	v, err := strconv.ParseFloat(s[:i], 64)
	if err != nil {
		return 0, "", fmt.Errorf("not a number: %.40q", s)
	}
	return v, strings.TrimSpace(s[i:]), nil
}

// Str is a JSON string that also accepts a number or null (ids, codes).
type Str string

// UnmarshalJSON accepts a string, a number or null.
func (s *Str) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case len(b) == 0 || string(b) == "null":
		*s = ""
	case b[0] == '"':
		var v string
		if err := json.Unmarshal(b, &v); err != nil {
			return err
		}
		*s = Str(v)
	case b[0] == '{' || b[0] == '[':
		// An object where a string was expected: keep nothing rather
		// than fail the whole list.
		*s = ""
	default:
		*s = Str(b)
	}
	return nil
}

// Bool is a JSON boolean that also accepts 0/1, "true"/"false" and null.
type Bool struct {
	V   bool
	Set bool
}

// UnmarshalJSON accepts true/false, 0/1, their string forms, or null.
func (v *Bool) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	*v = Bool{}
	s := strings.Trim(string(b), `"`)
	switch strings.ToLower(s) {
	case "", "null":
		return nil
	case "true", "1", "yes":
		*v = Bool{V: true, Set: true}
	case "false", "0", "no":
		*v = Bool{V: false, Set: true}
	default:
		return fmt.Errorf("not a boolean: %.40q", b)
	}
	return nil
}

// ParseTime reads the time layouts the providers use: RFC 3339 with or
// without fractional seconds, and "2006-01-02 15:04:05" without a zone,
// which is read in loc. The empty string is not an error: ok is false.
func ParseTime(s string, loc *time.Location) (t time.Time, ok bool, err error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, false, nil
	}
	if loc == nil {
		loc = time.UTC
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, true, nil
	}
	for _, layout := range []string{"2006-01-02 15:04:05", "2006-01-02T15:04:05", "2006-01-02 15:04:05.999999", "2006-01-02T15:04:05.999999", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, loc); err == nil {
			return t, true, nil
		}
	}
	return time.Time{}, false, fmt.Errorf("unrecognized time %.40q", s)
}
