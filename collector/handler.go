package collector

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"hash/crc32"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
)

// contentType is the text exposition format, version 0.0.4.
const contentType = "text/plain; version=0.0.4; charset=utf-8"

// gzipHeader is a gzip member header: deflate, no name, no mtime, unknown OS.
var gzipHeader = [10]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff}

// Handler serves /metrics: the stored per-server series, then whatever g
// gathers (per-account, API, remediation, Go and process metrics). With
// Accept-Encoding gzip, the stored part's compressed blocks are reused and
// only the small gathered part is compressed on each scrape.
type Handler struct {
	store   *Store
	gather  prometheus.Gatherer
	logger  log.Logger
	flaters sync.Pool
	bufs    sync.Pool
}

// NewHandler returns the /metrics handler.
func NewHandler(store *Store, g prometheus.Gatherer, logger log.Logger) *Handler {
	return &Handler{store: store, gather: g, logger: logger}
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b := h.store.current()
	dyn, _ := h.bufs.Get().(*bytes.Buffer)
	if dyn == nil {
		dyn = new(bytes.Buffer)
	}
	dyn.Reset()
	defer h.bufs.Put(dyn)
	// The registry (Go, process, account and API metrics) is gathered
	// while the stored bytes are written: the scrape waits for the longer
	// of the two, not their sum.
	gathered := make(chan struct{})
	go func() {
		defer close(gathered)
		h.encodeGathered(dyn)
	}()

	w.Header().Set("Content-Type", contentType)
	// The answer depends on Accept-Encoding, plain or gzip: a cache must
	// not give one client's gzip to another.
	w.Header().Set("Vary", "Accept-Encoding")
	if !acceptsGzip(r.Header.Get("Accept-Encoding")) {
		// The stored text goes out straight from the blocks, a write
		// per block and family.
		writeAll(w, b.plain)
		<-gathered
		_, _ = w.Write(dyn.Bytes())
		return
	}
	w.Header().Set("Content-Encoding", "gzip")
	_, _ = w.Write(gzipHeader[:])
	_, _ = w.Write(b.deflate)
	<-gathered
	fw, _ := h.flaters.Get().(*flate.Writer)
	if fw == nil {
		fw, _ = flate.NewWriter(w, flate.BestSpeed)
	} else {
		fw.Reset(w)
	}
	_, _ = fw.Write(dyn.Bytes())
	_ = fw.Close()
	fw.Reset(io.Discard) // the pool keeps no response writer alive
	h.flaters.Put(fw)
	var trailer [8]byte
	binary.LittleEndian.PutUint32(trailer[:4], crc32.Update(b.crc, crc32.IEEETable, dyn.Bytes()))
	binary.LittleEndian.PutUint32(trailer[4:], uint32(b.size+dyn.Len()))
	_, _ = w.Write(trailer[:])
}

// writeAll writes the stored pieces in order; after a failed write (the
// scraper went away) the rest are not tried.
func writeAll(w io.Writer, pieces [][]byte) {
	for _, p := range pieces {
		if _, err := w.Write(p); err != nil {
			return
		}
	}
}

// encodeGathered writes the registry's metrics in the text format. A
// collector's error is logged and the rest still served.
func (h *Handler) encodeGathered(buf *bytes.Buffer) {
	mfs, err := h.gather.Gather()
	if err != nil {
		level.Error(h.logger).Log("msg", "error gathering metrics", "err", err)
	}
	enc := expfmt.NewEncoder(buf, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			level.Error(h.logger).Log("msg", "error encoding metric family", "family", mf.GetName(), "err", err)
		}
	}
}

// acceptsGzip reports whether an Accept-Encoding header accepts gzip: it is
// listed (or "*" is) with a weight above 0.
func acceptsGzip(header string) bool {
	accept := false
	for _, part := range strings.Split(header, ",") {
		enc, params, _ := strings.Cut(part, ";")
		enc = strings.ToLower(strings.TrimSpace(enc))
		if enc != "gzip" && enc != "*" {
			continue
		}
		q := 1.0
		for _, p := range strings.Split(params, ";") {
			if k, v, ok := strings.Cut(strings.TrimSpace(p), "="); ok && strings.EqualFold(k, "q") {
				if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
					q = f
				}
			}
		}
		if enc == "gzip" {
			return q > 0 // an explicit gzip entry wins over "*"
		}
		accept = q > 0
	}
	return accept
}
