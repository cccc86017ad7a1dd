package collector

import (
	"bytes"
	"compress/flate"
	"hash/crc32"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/vps-exporter/vps_exporter/providers"
)

// The per-server metric families, in output order.
const (
	famInfo = iota
	famUp
	famState
	famProviderStatus
	famExpiry
	famCreated
	famStatusChange
	famBandwidthLimit
	famBandwidthUsed
	famTransferLimit
	famTransferUsed
	famCPU
	famVCPUs
	famMemory
	famMemoryUsed
	famDisk
	famDiskUsed
	famCanRedeploy
	famBackups
	famDetailTime
	numFamilies
)

type family struct{ name, help string }

// families returns the per-server families' names and help texts.
func families() [numFamilies]family {
	return [numFamilies]family{
		famInfo:           {"vps_server_info", "Server metadata; always 1."},
		famUp:             {"vps_server_up", "1 when the server's normalized state is running, else 0."},
		famState:          {"vps_server_state", "Normalized server state: one series per state, 1 for the current one."},
		famProviderStatus: {"vps_server_provider_status", "The provider's raw status text (and numeric code where it has one); always 1."},
		famExpiry:         {"vps_server_expiry_timestamp_seconds", "When the server's rental expires, as a Unix timestamp."},
		famCreated:        {"vps_server_created_timestamp_seconds", "When the server was created, as a Unix timestamp."},
		famStatusChange:   {"vps_server_status_change_timestamp_seconds", "When the provider last changed the server's status, as a Unix timestamp."},
		famBandwidthLimit: {"vps_server_bandwidth_limit_bytes_per_second", "Allocated bandwidth in bytes per second (VPN.bingo Mbps x 125000)."},
		famBandwidthUsed:  {"vps_server_bandwidth_used_bytes_per_second", "Bandwidth in use in bytes per second (VPN.bingo Mbps x 125000)."},
		famTransferLimit:  {"vps_server_transfer_limit_bytes", "Monthly data transfer allowance in bytes."},
		famTransferUsed:   {"vps_server_transfer_used_bytes", "Data transferred this month in bytes."},
		famCPU:            {"vps_server_cpu_usage_ratio", "CPU usage as a ratio from 0 to 1."},
		famVCPUs:          {"vps_server_vcpus", "Number of virtual CPUs."},
		famMemory:         {"vps_server_memory_bytes", "Memory size in bytes."},
		famMemoryUsed:     {"vps_server_memory_used_bytes", "Memory in use in bytes."},
		famDisk:           {"vps_server_disk_bytes", "Disk size in bytes."},
		famDiskUsed:       {"vps_server_disk_used_bytes", "Disk space in use in bytes."},
		famCanRedeploy:    {"vps_server_can_redeploy", "1 when the provider allows a redeploy without force."},
		famBackups:        {"vps_server_backups_enabled", "1 when provider backups are enabled."},
		famDetailTime:     {"vps_server_detail_timestamp_seconds", "When the server's per-server detail data (VPS.org resource usage, transfer) was last read successfully, as a Unix timestamp; kept when the values are dropped for age; absent until a read succeeded."},
	}
}

// Blocks: an account's servers, in order, are cut into runs of about
// blockMin+blockAvg (at least blockMin, at most blockMax); each run's
// series are rendered into one block (a few MB). A cut falls before a
// server whose id hashes to a multiple of blockAvg, so a server that comes
// or goes changes the blocks around it only, not every block after it. A
// change of one server costs its block's compression; a scrape costs a
// write per block and family, so blocks are not made much smaller.
const (
	blockMin = 256
	blockAvg = 1024
	blockMax = 4096
)

// block is a run of consecutive servers of one account with their series
// rendered in the text exposition format, family by family (family f of
// every server of the block at buf[off[f]:off[f+1]]), and each family's
// part compressed on its own. Its text is never modified once built: a
// change of one of its servers builds a new block (copying the lines of
// the servers that did not change), and a scrape in progress keeps the
// one it was planned with.
type block struct {
	n   int // servers
	buf []byte
	off [numFamilies + 1]int // int, not uint32: no size of a label value can wrap an offset
	// Family f's part compressed (non-final deflate blocks ending in a
	// sync flush) is zlen[f] bytes at z[zat[f]:]: in the block's own
	// buffer when it is built, in the compressed body of the last plan
	// that included it from then on (the plan moves it there; guarded by
	// Store.bodyMu), so that the compressed series exist once too. crc is
	// each part's CRC-32 and shift its length as the CRC combination needs
	// it (crcShift).
	z     []byte
	zat   [numFamilies]int
	zlen  [numFamilies]int
	crc   [numFamilies]uint32
	shift [numFamilies]uint32
}

// zpart returns family f's compressed part; the caller holds bodyMu.
func (b *block) zpart(f int) []byte { return b.z[b.zat[f] : b.zat[f]+b.zlen[f]] }

// family returns the block's lines of family f.
func (b *block) family(f int) []byte { return b.buf[b.off[f]:b.off[f+1]] }

// piece is a fixed part of the body (a family's HELP and TYPE lines) in
// both forms.
type piece struct {
	plain, z   []byte
	crc, shift uint32
}

// cutBefore reports whether a block of n servers ends before the server
// with this id.
func (bd *builder) cutBefore(n int, id string) bool {
	if n >= bd.max {
		return true
	}
	if n < bd.min {
		return false
	}
	h := uint32(2166136261) // FNV-1a
	for i := 0; i < len(id); i++ {
		h = (h ^ uint32(id[i])) * 16777619
	}
	return h%uint32(bd.avg) == 0
}

// builder renders blocks. Its buffers are reused from one block to the
// next; the store's updates, which use it, are serialized.
type builder struct {
	names *[numFamilies]family
	// skip: the families global.exclude_metrics leaves out, rendered as
	// no lines.
	skip   [numFamilies]bool
	zw     *flate.Writer
	zbuf   bytes.Buffer
	fam    [numFamilies][]byte // the block's servers rendered anew, by family
	segs   []seg               // the block being assembled
	lbl, x []byte
	same   []int32 // per server: its unchanged self in the previous list, or -1
	// A block ends before a server whose id hashes to a multiple of avg,
	// once it has min servers, or at max servers (blockMin, blockAvg,
	// blockMax; tests use smaller blocks).
	min, avg, max int
}

func newBuilder(names *[numFamilies]family) *builder {
	zw, _ := flate.NewWriter(io.Discard, flate.BestSpeed)
	return &builder{names: names, zw: zw, min: blockMin, avg: blockAvg, max: blockMax}
}

// headers returns each family's HELP and TYPE lines in both forms.
func (bd *builder) headers() *[numFamilies]piece {
	var out [numFamilies]piece
	for f := range out {
		h := "# HELP " + bd.names[f].name + " " + bd.names[f].help + "\n# TYPE " + bd.names[f].name + " gauge\n"
		out[f] = piece{plain: []byte(h), z: bd.deflate([]byte(h)), crc: crc32.ChecksumIEEE([]byte(h)), shift: crcShift(len(h))}
	}
	return &out
}

// deflate compresses p on its own as non-final blocks ending in a sync
// flush (byte-aligned: such pieces can follow one another in one stream).
func (bd *builder) deflate(p []byte) []byte {
	bd.zbuf.Reset()
	bd.zw.Reset(&bd.zbuf)
	_, _ = bd.zw.Write(p)
	_ = bd.zw.Flush()
	bd.zw.Reset(io.Discard) // keep no reference to the buffer's past
	return bytes.Clone(bd.zbuf.Bytes())
}

// build returns the blocks of an account's servers (ordered by id, unique;
// detail parallel to them or nil; states: the states the state-set lists)
// and the index of each block's first server. A block of old (the
// account's previous state; nil: none) whose servers are all unchanged,
// and only those, is kept as it is; a new block copies the lines of its
// unchanged servers from old's blocks and renders only the others (old's
// blocks are not used when they were rendered with other states or
// another exclusion). rendered, when not nil, is told of each render.
func (bd *builder) build(provider, account string, old *account, servers []providers.Server, detail []int64, states []providers.State, rendered func(account, id string)) ([]*block, []int) {
	var oldS []providers.Server
	var oldD []int64
	if old != nil && (old.skip != bd.skip || !slices.Equal(old.states, states)) {
		old = nil
	}
	if old != nil && old.blocks != nil {
		oldS, oldD = old.snap.Servers, old.detail
	}
	// Match each server with its unchanged self in the previous list:
	// both are ordered by id.
	if cap(bd.same) < len(servers) {
		bd.same = make([]int32, len(servers))
	}
	same := bd.same[:len(servers)]
	j := 0
	for i := range servers {
		same[i] = -1
		id := servers[i].ID
		for j < len(oldS) && providers.IDLess(oldS[j].ID, id) {
			j++
		}
		if j < len(oldS) && oldS[j].ID == id && oldS[j] == servers[i] && at(oldD, j) == at(detail, i) {
			same[i] = int32(j)
		}
	}
	var blocks []*block
	var starts []int
	lo := 0
	for i := 1; i <= len(servers); i++ {
		if i < len(servers) && !bd.cutBefore(i-lo, servers[i].ID) {
			continue
		}
		blocks = append(blocks, bd.block(provider, account, old, servers[lo:i], detail, lo, same[lo:i], states, rendered))
		starts = append(starts, lo)
		lo = i
	}
	bd.trim()
	return blocks, starts
}

// keepScratch is the most a builder keeps of one of its buffers between
// updates (a block's bytes, a few MB at most with ordinary label values):
// a larger one, grown for an odd fleet, is let go.
const keepScratch = 4 << 20

func (bd *builder) trim() {
	clear(bd.segs[:cap(bd.segs)]) // keep no old block alive
	if cap(bd.segs) > keepScratch/64 {
		bd.segs = nil
	}
	for f := range bd.fam {
		if cap(bd.fam[f]) > keepScratch {
			bd.fam[f] = nil
		}
	}
	if cap(bd.same)*4 > keepScratch {
		bd.same = nil
	}
	if bd.zbuf.Cap() > keepScratch {
		bd.zbuf = bytes.Buffer{}
	}
}

// at is the detail read time of server i, 0 when none.
func at(detail []int64, i int) int64 {
	if detail == nil {
		return 0
	}
	return detail[i]
}

// block returns the block of servers (the account's from index first on),
// old's own when it holds exactly these servers unchanged.
func (bd *builder) block(provider, account string, old *account, servers []providers.Server, detail []int64, first int, same []int32, states []providers.State, rendered func(account, id string)) *block {
	if len(same) > 0 && same[0] >= 0 {
		k := sort.SearchInts(old.start, int(same[0]))
		if k < len(old.start) && old.start[k] == int(same[0]) && old.blocks[k].n == len(same) {
			keep := true
			for t := range same {
				if same[t] != same[0]+int32(t) {
					keep = false
					break
				}
			}
			if keep {
				return old.blocks[k]
			}
		}
	}
	// Render the changed and new servers, each family apart.
	for f := range bd.fam {
		bd.fam[f] = bd.fam[f][:0]
	}
	for t := range servers {
		if same[t] < 0 {
			bd.render(provider, account, &servers[t], at(detail, first+t), states)
			if rendered != nil {
				rendered(account, servers[t].ID)
			}
		}
	}
	// Each family's lines in order, as segments of the renders above or
	// of the previous blocks (a run of unchanged servers is one segment),
	// then copied once into a block of exactly their size.
	bd.segs = bd.segs[:0]
	total := 0
	add := func(src int, from []byte, lo, hi int) {
		if hi == lo {
			return
		}
		total += hi - lo
		if n := len(bd.segs); n > 0 && bd.segs[n-1].src == src && bd.segs[n-1].hi == lo {
			bd.segs[n-1].hi = hi
			return
		}
		bd.segs = append(bd.segs, seg{src: src, from: from, lo: lo, hi: hi})
	}
	var ends [numFamilies]int // each family's end, in bytes from the block's start
	for f := 0; f < numFamilies; f++ {
		fresh := 0       // next unread byte of bd.fam[f]
		ob, pos := -1, 0 // old block and position in its buf
		next := 0        // the old server at pos
		for t := range servers {
			if same[t] < 0 {
				end := skipLines(bd.fam[f], fresh, bd.lineCount(f, &servers[t], at(detail, first+t), states))
				add(-1, bd.fam[f], fresh, end)
				fresh = end
				continue
			}
			want := int(same[t])
			if ob < 0 || want < next || want >= old.start[ob]+old.blocks[ob].n {
				ob = sort.Search(len(old.start), func(k int) bool { return old.start[k] > want }) - 1
				pos, next = old.blocks[ob].off[f], old.start[ob]
			}
			ob0 := old.blocks[ob]
			for ; next < want; next++ {
				pos = skipLines(ob0.buf, pos, bd.lineCount(f, &old.snap.Servers[next], at(old.detail, next), states))
			}
			end := skipLines(ob0.buf, pos, bd.lineCount(f, &servers[t], at(detail, first+t), states))
			add(ob, ob0.buf, pos, end)
			pos, next = end, next+1
		}
		ends[f] = total
	}
	// Exactly what was written: the lines live until one of the block's
	// servers changes.
	b := &block{n: len(servers), buf: make([]byte, 0, total)}
	for _, sg := range bd.segs {
		b.buf = append(b.buf, sg.from[sg.lo:sg.hi]...)
	}
	for f := 0; f < numFamilies; f++ {
		b.off[f+1] = ends[f]
	}
	bd.zbuf.Reset()
	for f := 0; f < numFamilies; f++ {
		b.zat[f] = bd.zbuf.Len()
		part := b.family(f)
		if len(part) == 0 {
			continue
		}
		bd.zw.Reset(&bd.zbuf)
		_, _ = bd.zw.Write(part)
		_ = bd.zw.Flush()
		b.zlen[f] = bd.zbuf.Len() - b.zat[f]
		b.crc[f] = crc32.ChecksumIEEE(part)
		b.shift[f] = crcShift(len(part))
	}
	bd.zw.Reset(io.Discard)
	b.z = bytes.Clone(bd.zbuf.Bytes())
	return b
}

// seg is a piece of a block being built: from[lo:hi], from the renders
// (src -1) or an old block (src its index).
type seg struct {
	src    int
	from   []byte
	lo, hi int
}

// skipLines returns the position after the n lines of b from pos on.
func skipLines(b []byte, pos, n int) int {
	for ; n > 0; n-- {
		pos += bytes.IndexByte(b[pos:], '\n') + 1
	}
	return pos
}

// value is the value of an optional family f of s (OK false: the server
// has no such series).
func value(f int, s *providers.Server) providers.Value {
	switch f {
	case famExpiry:
		return s.ExpiryTime
	case famCreated:
		return s.CreatedTime
	case famStatusChange:
		return s.StatusChangeTime
	case famBandwidthLimit:
		return s.BandwidthLimitBytesPerSecond
	case famBandwidthUsed:
		return s.BandwidthUsedBytesPerSecond
	case famTransferLimit:
		return s.TransferLimitBytes
	case famTransferUsed:
		return s.TransferUsedBytes
	case famCPU:
		return s.CPUUsageRatio
	case famVCPUs:
		return s.VCPUs
	case famMemory:
		return s.MemoryBytes
	case famMemoryUsed:
		return s.MemoryUsedBytes
	case famDisk:
		return s.DiskBytes
	case famDiskUsed:
		return s.DiskUsedBytes
	case famCanRedeploy:
		return s.CanRedeploy
	case famBackups:
		return s.BackupsEnabled
	}
	return providers.Value{}
}

// lineCount is how many lines render writes for s in family f (states:
// the states the state-set lists). Lines are never broken inside: a
// newline in a label value is escaped.
func (bd *builder) lineCount(f int, s *providers.Server, detailAt int64, states []providers.State) int {
	if bd.skip[f] {
		return 0
	}
	switch f {
	case famInfo, famUp, famProviderStatus:
		return 1
	case famState:
		if slices.Contains(states, s.State) {
			return len(states)
		}
		return len(states) + 1
	case famDetailTime:
		if detailAt != 0 {
			return 1
		}
		return 0
	}
	if value(f, s).OK {
		return 1
	}
	return 0
}

// render appends a server's series to bd.fam, family by family (none of
// the skipped ones); the scrape path only copies them. The state-set lists
// states, and the server's own state after them should it not be one of
// them (a client that reports a state it did not list): a server always
// has its current state.
func (bd *builder) render(provider, account string, s *providers.Server, detailAt int64, states []providers.State) {
	// The identifying labels every series shares.
	lbl := bd.lbl[:0]
	lbl = appendLabel(lbl, "provider", provider, true)
	lbl = appendLabel(lbl, "account", account, false)
	lbl = appendLabel(lbl, "id", s.ID, false)
	bd.lbl = lbl
	names := bd.names
	sample := func(f int, extra []byte, v float64) {
		b := bd.fam[f]
		b = append(b, names[f].name...)
		b = append(b, '{')
		b = append(b, lbl...)
		b = append(b, extra...)
		b = append(b, '}', ' ')
		b = appendFloat(b, v)
		bd.fam[f] = append(b, '\n')
	}
	for f := 0; f < numFamilies; f++ {
		if bd.skip[f] {
			continue
		}
		switch f {
		case famInfo:
			x := bd.x[:0]
			x = appendLabel(x, "name", s.Name, false)
			x = appendLabel(x, "hostname", s.Hostname, false)
			x = appendLabel(x, "ip", s.IP, false)
			x = appendLabel(x, "location", s.Location, false)
			x = appendLabel(x, "plan", s.Plan, false)
			x = appendLabel(x, "image", s.Image, false)
			bd.x = x
			sample(f, x, 1)
		case famUp:
			v := 0.0
			if s.State == providers.StateRunning {
				v = 1
			}
			sample(f, nil, v)
		case famState:
			for _, st := range states {
				v := 0.0
				if s.State == st {
					v = 1
				}
				x := appendLabel(bd.x[:0], "state", string(st), false)
				bd.x = x
				sample(f, x, v)
			}
			if !slices.Contains(states, s.State) {
				x := appendLabel(bd.x[:0], "state", string(s.State), false)
				bd.x = x
				sample(f, x, 1)
			}
		case famProviderStatus:
			x := appendLabel(bd.x[:0], "status", s.RawStatus, false)
			if s.RawCode != "" {
				x = appendLabel(x, "code", s.RawCode, false)
			}
			bd.x = x
			sample(f, x, 1)
		case famDetailTime:
			if detailAt != 0 {
				sample(f, nil, float64(detailAt))
			}
		default:
			if v := value(f, s); v.OK {
				sample(f, nil, v.V)
			}
		}
	}
}

// appendLabel appends name="value" with the text format's escaping; a
// value that is not valid UTF-8 is repaired rather than breaking the scrape.
func appendLabel(b []byte, name, value string, first bool) []byte {
	if !first {
		b = append(b, ',')
	}
	b = append(b, name...)
	b = append(b, '=', '"')
	if !utf8.ValidString(value) {
		value = strings.ToValidUTF8(value, "\uFFFD")
	}
	for i := 0; i < len(value); i++ {
		switch c := value[i]; c {
		case '\\':
			b = append(b, '\\', '\\')
		case '"':
			b = append(b, '\\', '"')
		case '\n':
			b = append(b, '\\', 'n')
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// appendFloat formats v as the text format does.
func appendFloat(b []byte, v float64) []byte {
	switch {
	case v != v:
		return append(b, "NaN"...)
	case v > 1.7976931348623157e308:
		return append(b, "+Inf"...)
	case v < -1.7976931348623157e308:
		return append(b, "-Inf"...)
	case v == float64(int64(v)) && v < 1e15 && v > -1e15:
		return strconv.AppendInt(b, int64(v), 10)
	}
	return strconv.AppendFloat(b, v, 'g', -1, 64)
}
