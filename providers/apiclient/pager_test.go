package apiclient_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/vps-exporter/vps_exporter/providers/apiclient"
)

type item struct {
	ID string `json:"id"`
}

func decodeItems(b []byte) (apiclient.DRFPage[item], error) {
	var p struct {
		Count   int     `json:"count"`
		Next    *string `json:"next"`
		Results []item  `json:"results"`
	}
	err := json.Unmarshal(b, &p)
	out := apiclient.DRFPage[item]{Count: p.Count, Results: p.Results}
	if p.Next != nil {
		out.Next = *p.Next
	}
	return out, err
}

// page is one canned list page: the count it claims, its items and the
// key of the next page ("" for none).
type page struct {
	count int
	items []string
	next  string
}

// ListDRFParallel returns every item, in order, whatever the paging: page
// numbers (read several at a time), a cursor (followed page by page), and
// a list that grew between its first and last page (read again page by
// page).
func TestListDRFParallel(t *testing.T) {
	for _, tc := range []struct {
		name string
		// pages by key ("" for the first)
		pages    map[string]page
		query    string // the query parameter the keys travel in
		want     []string
		minCalls int
	}{
		{"page numbers", map[string]page{"": {5, []string{"1", "2"}, "2"}, "2": {5, []string{"3", "4"}, "3"}, "3": {5, []string{"5"}, ""}},
			"page", []string{"1", "2", "3", "4", "5"}, 3},
		{"cursor", map[string]page{"": {5, []string{"1", "2"}, "c1"}, "c1": {5, []string{"3", "4"}, "c2"}, "c2": {5, []string{"5"}, ""}},
			"cursor", []string{"1", "2", "3", "4", "5"}, 4},
		{"grew after page 1", map[string]page{"": {4, []string{"1", "2"}, "2"}, "2": {5, []string{"3", "4"}, "3"}, "3": {5, []string{"5"}, ""}},
			"page", []string{"1", "2", "3", "4", "5"}, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int32
			var u string
			base := server(t, func(w http.ResponseWriter, r *http.Request) {
				calls.Add(1)
				p, ok := tc.pages[r.URL.Query().Get(tc.query)]
				if !ok {
					w.WriteHeader(http.StatusNotFound)
					return
				}
				var next any
				if p.next != "" {
					next = fmt.Sprintf("%s/list/?%s=%s", u, tc.query, p.next)
				}
				res := []item{}
				for _, id := range p.items {
					res = append(res, item{id})
				}
				_ = json.NewEncoder(w).Encode(map[string]any{"count": p.count, "next": next, "results": res})
			})
			u = base.String()
			c := apiclient.New(apiclient.Config{BaseURL: base})
			got, err := apiclient.ListDRFParallel(context.Background(), c, "/list/", "list", func(i item) string { return i.ID }, decodeItems, 4)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, i := range got {
				ids = append(ids, i.ID)
			}
			if n := int(calls.Load()); !slices.Equal(ids, tc.want) || n < tc.minCalls {
				t.Errorf("got %v in %d calls, want %v (at least %d calls)", ids, n, tc.want, tc.minCalls)
			}
		})
	}
}
