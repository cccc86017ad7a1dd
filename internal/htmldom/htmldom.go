// Package htmldom parses an HTML page into just enough of a DOM for tests
// to find elements by id, class or tag and read their text: the status
// page's own tests and the browser test, which reads the DOM chromium
// serialised.
package htmldom

import (
	"encoding/xml"
	"io"
	"strings"
)

// Node is an element of a parsed page.
type Node struct {
	// Tag is the element's name, lower case ("#document" for the root).
	Tag string
	// Attr holds its attributes by lower-case name.
	Attr map[string]string
	// Children are its child elements, in order.
	Children []*Node
	// Own is the element's own text, in order, its children's excluded.
	Own  string
	full strings.Builder
}

// Parse parses an HTML page with encoding/xml in its lenient mode (void
// elements closed, HTML entities known): the pages parsed here are
// well-formed, and a tag the parser sees is a tag a browser sees.
func Parse(s string) (*Node, error) {
	d := xml.NewDecoder(strings.NewReader(s))
	d.Strict = false
	d.AutoClose = xml.HTMLAutoClose
	d.Entity = xml.HTMLEntity
	root := &Node{Tag: "#document", Attr: map[string]string{}}
	stack := []*Node{root}
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
			n := &Node{Tag: strings.ToLower(t.Name.Local), Attr: map[string]string{}}
			for _, a := range t.Attr {
				name := strings.ToLower(a.Name.Local)
				if a.Name.Space != "" {
					name = strings.ToLower(a.Name.Space) + ":" + name
				}
				n.Attr[name] = a.Value
			}
			top.Children = append(top.Children, n)
			stack = append(stack, n)
		case xml.EndElement:
			if len(stack) > 1 {
				stack = stack[:len(stack)-1]
			}
		case xml.CharData:
			top.Own += string(t)
			for _, n := range stack {
				n.full.Write(t)
			}
		}
	}
}

// Text is the element's text with its descendants', spaces collapsed.
func (n *Node) Text() string { return strings.Join(strings.Fields(n.full.String()), " ") }

// All returns the elements under n (n included) that keep accepts.
func (n *Node) All(keep func(*Node) bool) []*Node {
	var out []*Node
	var walk func(*Node)
	walk = func(m *Node) {
		if keep(m) {
			out = append(out, m)
		}
		for _, c := range m.Children {
			walk(c)
		}
	}
	walk(n)
	return out
}

// ByID returns the element with that id, nil when there is none.
func (n *Node) ByID(id string) *Node {
	if r := n.All(func(m *Node) bool { return m.Attr["id"] == id }); len(r) > 0 {
		return r[0]
	}
	return nil
}

// ByTag returns the elements of that tag.
func (n *Node) ByTag(tag string) []*Node {
	return n.All(func(m *Node) bool { return m.Tag == tag })
}

// ByClass returns the elements that have class c.
func (n *Node) ByClass(c string) []*Node {
	return n.All(func(m *Node) bool { return hasWord(m.Attr["class"], c) })
}

func hasWord(list, w string) bool {
	for _, f := range strings.Fields(list) {
		if f == w {
			return true
		}
	}
	return false
}
