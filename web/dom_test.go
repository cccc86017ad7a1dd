package web

import (
	"encoding/xml"
	"io"
	"strings"
)

// node is an element of a parsed page: enough of a DOM to find elements
// by id, class or tag and read their text.
type node struct {
	tag      string
	attr     map[string]string
	children []*node
	text     string // the element's own text, in order, children excluded
	full     strings.Builder
}

// parseHTML parses an HTML page with encoding/xml in its lenient mode
// (void elements closed, HTML entities known): the pages here are
// well-formed, and a tag the parser sees is a tag a browser sees.
func parseHTML(s string) (*node, error) {
	d := xml.NewDecoder(strings.NewReader(s))
	d.Strict = false
	d.AutoClose = xml.HTMLAutoClose
	d.Entity = xml.HTMLEntity
	root := &node{tag: "#document", attr: map[string]string{}}
	stack := []*node{root}
	for {
		tok, err := d.Token()
		if err == io.EOF {
			return root, nil
		}
		if err != nil {
			return nil, err
		}
		top := stack[len(stack)-1]
		switch t := tok.(type) {
		case xml.StartElement:
			n := &node{tag: strings.ToLower(t.Name.Local), attr: map[string]string{}}
			for _, a := range t.Attr {
				name := strings.ToLower(a.Name.Local)
				if a.Name.Space != "" {
					name = strings.ToLower(a.Name.Space) + ":" + name
				}
				n.attr[name] = a.Value
			}
			top.children = append(top.children, n)
			stack = append(stack, n)
		case xml.EndElement:
			if len(stack) > 1 {
				stack = stack[:len(stack)-1]
			}
		case xml.CharData:
			top.text += string(t)
			for _, n := range stack {
				n.full.Write(t)
			}
		}
	}
}

// Text is the element's text with its descendants', spaces collapsed.
func (n *node) Text() string { return strings.Join(strings.Fields(n.full.String()), " ") }

// all returns the elements under n (n included) that keep accepts.
func (n *node) all(keep func(*node) bool) []*node {
	var out []*node
	var walk func(*node)
	walk = func(m *node) {
		if keep(m) {
			out = append(out, m)
		}
		for _, c := range m.children {
			walk(c)
		}
	}
	walk(n)
	return out
}

// byID returns the element with that id, nil when there is none.
func (n *node) byID(id string) *node {
	if r := n.all(func(m *node) bool { return m.attr["id"] == id }); len(r) > 0 {
		return r[0]
	}
	return nil
}

// byTag returns the elements of that tag.
func (n *node) byTag(tag string) []*node {
	return n.all(func(m *node) bool { return m.tag == tag })
}

// byClass returns the elements that have class c.
func (n *node) byClass(c string) []*node {
	return n.all(func(m *node) bool { return hasWord(m.attr["class"], c) })
}

func hasWord(list, w string) bool {
	for _, f := range strings.Fields(list) {
		if f == w {
			return true
		}
	}
	return false
}
