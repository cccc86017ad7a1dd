package apiclient

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"golang.org/x/sync/errgroup"

	"github.com/vps-exporter/vps_exporter/providers"
)

// MaxPages bounds how many pages one list may take, so that a server that
// pages forever cannot keep a refresh busy.
const MaxPages = 10000

// DRFPage is one page of a Django REST framework style list: count, results
// and a `next` link when there is more.
type DRFPage[T any] struct {
	Count   int
	Next    string
	Results []T
}

// ListDRF fetches every page of a DRF-style list. decode turns a response
// body into a page. It follows `next` when present; when `next` is absent but
// fewer than `count` items have arrived, it asks for ?page=N+1 (DRF's page
// number style), and stops when that page is missing (404) or brings nothing
// new: the API offers no more. A `next` link that loops back or points to
// another host is an error.
func ListDRF[T any](ctx context.Context, c *Client, path, endpoint string, id func(T) string, decode func(body []byte) (DRFPage[T], error)) ([]T, error) {
	var all []T
	err := WalkDRF(ctx, c, path, endpoint, id, decode, func(items []T) error {
		all = append(all, items...)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return all, nil
}

// WalkDRF is ListDRF handing each page's new items to fn as they arrive,
// so that work on them can start before the list is complete.
func WalkDRF[T any](ctx context.Context, c *Client, path, endpoint string, id func(T) string, decode func(body []byte) (DRFPage[T], error), fn func([]T) error) error {
	total := 0
	seenURL := map[string]bool{}
	seenID := map[string]bool{}
	req := Request{Method: http.MethodGet, Path: path, Endpoint: endpoint, Idempotent: true}
	count := -1
	guessed := false // req is a ?page= we made up, not a link the API gave
	for page := 1; ; page++ {
		if page > MaxPages {
			return c.NotSentf(req, "more than %d pages", MaxPages)
		}
		status, body, err := c.Do(ctx, req)
		if err != nil {
			if guessed && status == http.StatusNotFound {
				return nil
			}
			return err
		}
		p, err := decode(body)
		if err != nil {
			return c.DecodeError(req, status, fmt.Errorf("decode page %d: %w", page, err))
		}
		if count < 0 {
			count = p.Count
		}
		var items []T
		for _, item := range p.Results {
			k := id(item)
			if seenID[k] {
				continue
			}
			seenID[k] = true
			items = append(items, item)
		}
		fresh := len(items)
		total += fresh
		if fresh > 0 {
			if err := fn(items); err != nil {
				return err
			}
		}
		switch {
		case p.Next != "":
			if seenURL[p.Next] {
				return c.NotSentf(Request{Method: http.MethodGet, URL: p.Next}, "paging link loops back to an earlier page")
			}
			seenURL[p.Next] = true
			req = Request{Method: http.MethodGet, URL: p.Next, Endpoint: endpoint, Idempotent: true}
			guessed = false
		case total < count && fresh > 0:
			req = Request{Method: http.MethodGet, Path: path, Endpoint: endpoint, Idempotent: true,
				Query: url.Values{"page": {strconv.Itoa(page + 1)}}}
			guessed = true
		default:
			return nil
		}
	}
}

// Get fetches one object with GET path and decodes it. A 404 wraps
// providers.ErrNotFound; a body that does not decode is an *Error.
func Get[T any](ctx context.Context, c *Client, path, endpoint string, decode func([]byte) (T, error)) (T, error) {
	return GetRequest(ctx, c, Request{Method: http.MethodGet, Path: path, Endpoint: endpoint, Idempotent: true}, decode)
}

// GetRequest is Get for a request the caller built (a background read).
func GetRequest[T any](ctx context.Context, c *Client, req Request, decode func([]byte) (T, error)) (T, error) {
	var zero T
	status, body, err := c.Do(ctx, req)
	if err != nil {
		if status == http.StatusNotFound {
			return zero, fmt.Errorf("%w: %w", providers.ErrNotFound, err)
		}
		return zero, err
	}
	v, err := decode(body)
	if err != nil {
		return zero, c.DecodeError(req, status, err)
	}
	return v, nil
}

// ListDRFParallel is ListDRF reading the pages after the first up to conc
// at a time when the API pages by number (`next` is the same URL with
// page=2): a long list on a slow API then takes about pages/conc round
// trips instead of one per page. Any other paging (a cursor, no `next`),
// or a list that grew since its first page, is read one page at a time by
// ListDRF (the first page again: one request more).
func ListDRFParallel[T any](ctx context.Context, c *Client, path, endpoint string, id func(T) string, decode func(body []byte) (DRFPage[T], error), conc int) ([]T, error) {
	first := Request{Method: http.MethodGet, Path: path, Endpoint: endpoint, Idempotent: true}
	status, body, err := c.Do(ctx, first)
	if err != nil {
		return nil, err
	}
	p1, err := decode(body)
	if err != nil {
		return nil, c.DecodeError(first, status, fmt.Errorf("decode page 1: %w", err))
	}
	per := len(p1.Results)
	pageURL, numbered := pageNumberLink(p1.Next)
	if conc <= 1 || !numbered || per == 0 || p1.Count <= per {
		// Page by page from the first page on (read again: the
		// sequential walk keeps its own loop and duplicate guards).
		return ListDRF(ctx, c, path, endpoint, id, decode)
	}
	pages := (p1.Count + per - 1) / per
	if pages > MaxPages {
		return nil, c.NotSentf(first, "more than %d pages", MaxPages)
	}
	results := make([]DRFPage[T], pages+1)
	results[1] = p1
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(conc)
	for n := 2; n <= pages; n++ {
		g.Go(func() error {
			req := Request{Method: http.MethodGet, URL: pageURL(n), Endpoint: endpoint, Idempotent: true}
			status, body, err := c.Do(gctx, req)
			if status == http.StatusNotFound && n == pages {
				return nil // the list shrank since page 1
			}
			if err != nil {
				return err
			}
			p, err := decode(body)
			if err != nil {
				return c.DecodeError(req, status, fmt.Errorf("decode page %d: %w", n, err))
			}
			results[n] = p
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if results[pages].Next != "" {
		// The list grew since page 1: read it page by page instead.
		return ListDRF(ctx, c, path, endpoint, id, decode)
	}
	var all []T
	seen := map[string]bool{}
	for _, p := range results[1:] {
		for _, item := range p.Results {
			if k := id(item); !seen[k] {
				seen[k] = true
				all = append(all, item)
			}
		}
	}
	return all, nil
}

// pageNumberLink reports whether next is a page-number link (page=2) and
// returns a function making the link of page n.
func pageNumberLink(next string) (func(n int) string, bool) {
	if next == "" {
		return nil, false
	}
	u, err := url.Parse(next)
	if err != nil {
		return nil, false
	}
	q := u.Query()
	if q.Get("page") != "2" {
		return nil, false
	}
	return func(n int) string {
		v := *u
		qq := v.Query()
		qq.Set("page", strconv.Itoa(n))
		v.RawQuery = qq.Encode()
		return v.String()
	}, true
}
