// Package sim fakes the three provider APIs over real HTTP: a generated
// fleet of configurable size with mixed states, the documented envelopes,
// paging, auth and action endpoints, and settable latency and faults. The
// tests, the benchmarks, the demo mode and the end-to-end stack use it.
package sim

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"
)

// API names one simulated provider API.
type API string

// The simulated APIs.
const (
	VPNBingo API = "vpnbingo"
	VPSOrg   API = "vpsorg"
	E2E      API = "e2e"
)

// APIs lists every simulated API.
func APIs() []API { return []API{VPNBingo, VPSOrg, E2E} }

// Credentials are what a simulated API accepts.
type Credentials struct {
	Token     string // Authorization: Bearer
	APIKey    string // E2E apikey query parameter
	ProjectID string // E2E project_id query parameter
}

// Options configure a Sim.
type Options struct {
	// Servers is the fleet size of each API.
	Servers int
	// PerAPI, when it has an API, sets that API's fleet size instead.
	PerAPI map[API]int
	// Seed makes the generated fleet reproducible.
	Seed uint64
	// PageSize is the default DRF page size (VPN.bingo, VPS.org); 0 means 50.
	PageSize int
	// MaxPageSize caps ?page_size= and E2E's per_page; 0 means 100.
	MaxPageSize int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Settle is how long an action's transitional state lasts before the
	// machine reaches its end state (rebooting -> active); 0 means 2s.
	Settle time.Duration
	// Credentials per API; a zero value accepts any token.
	Credentials map[API]Credentials
	// Clients are more credentials per API, each accepted beside
	// Credentials and named by its label in the action records.
	Clients map[API][]Client
	// OnAction, when set, is called with each action record as the call
	// is answered, in order, under the Sim's lock: it must not call the
	// Sim. NewActionLog's Record is one.
	OnAction func(ActionRecord)
}

// Machine is one simulated server. Fields are shared across APIs; each API
// renders the ones it documents.
type Machine struct {
	ID        int
	Name      string
	Host      string
	IP        string
	Location  string // VPN.bingo country, VPS.org location, E2E region
	Plan      string
	Image     string
	Status    string // VPS.org / E2E status text
	Code      int    // VPN.bingo status code
	Display   string // VPN.bingo status_display
	CanRedepl bool

	BandwidthMbps     float64
	BandwidthUsedMbps float64
	Expire            time.Time
	Created           time.Time
	StatusUpdate      time.Time

	VCPUs          int
	MemoryMB       int
	DiskGB         int
	TransferGB     int
	CPUPercent     float64
	MemoryUsedMB   int
	DiskUsedGB     int
	TransferUsedGB int
	Backups        bool

	settleAt   time.Time
	settleTo   func(*Machine)
	releasedAt time.Time // VPN.bingo: a Pending Release node vanishes after this

	// The health model (health.go): a sick machine, stopped since it
	// fell sick (cold), healing at healAt.
	sick   *Sickness
	cold   bool
	healAt time.Time
}

// ActionRecord is one action call the simulator received.
type ActionRecord struct {
	API    API
	ID     string
	Action string
	Force  bool
	// Country is the redeploy country_code, if any.
	Country string
	// Status is the HTTP status answered.
	Status int
	// NewID is the node a redeploy created.
	NewID string
	Time  time.Time
	// Client is the label of the credential that made the call
	// (DefaultClient, or a Client's Label).
	Client string
}

// Sim is the simulated provider fleet. It is safe for concurrent use.
type Sim struct {
	opts Options

	mu      sync.Mutex
	fleets  map[API][]*Machine
	nextID  map[API]int
	faults  map[API]*Fault
	latency map[API]time.Duration
	// detailFaults are per-server faults of the detail read.
	detailFaults map[API]map[int]*Fault
	throttles    map[API]*bucket
	requests     map[API]map[string]int
	actions      []ActionRecord
	closed       chan struct{}
	once         sync.Once
}

// New returns a Sim with a generated fleet.
func New(o Options) *Sim {
	if o.PageSize <= 0 {
		o.PageSize = 50
	}
	if o.MaxPageSize <= 0 {
		o.MaxPageSize = 100
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Settle <= 0 {
		o.Settle = 2 * time.Second
	}
	s := &Sim{
		opts:         o,
		fleets:       map[API][]*Machine{},
		nextID:       map[API]int{},
		faults:       map[API]*Fault{},
		latency:      map[API]time.Duration{},
		detailFaults: map[API]map[int]*Fault{},
		throttles:    map[API]*bucket{},
		requests:     map[API]map[string]int{},
		closed:       make(chan struct{}),
	}
	for _, api := range APIs() {
		s.requests[api] = map[string]int{}
	}
	s.generate()
	return s
}

// Close releases handlers blocked in a hang fault.
func (s *Sim) Close() { s.once.Do(func() { close(s.closed) }) }

// Handler returns the HTTP handler of one API.
func (s *Sim) Handler(api API) http.Handler {
	var h http.Handler
	switch api {
	case VPNBingo:
		h = http.HandlerFunc(s.serveBingo)
	case VPSOrg:
		h = http.HandlerFunc(s.serveVPS)
	case E2E:
		h = http.HandlerFunc(s.serveE2E)
	default:
		panic(fmt.Sprintf("sim: unknown API %q", api))
	}
	return s.withFaults(api, h)
}

// SetLatency delays every response of api by d.
func (s *Sim) SetLatency(api API, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latency[api] = d
}

// Requests returns how many requests api has served per endpoint kind
// (list, detail, action), faults included.
func (s *Sim) Requests(api API) map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int{}
	for k, v := range s.requests[api] {
		out[k] = v
	}
	return out
}

// ResetRequests zeroes the request counters.
func (s *Sim) ResetRequests() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, api := range APIs() {
		s.requests[api] = map[string]int{}
	}
}

// Actions returns the action calls received so far.
func (s *Sim) Actions() []ActionRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]ActionRecord(nil), s.actions...)
}

// Machines returns a copy of api's fleet, ordered by id.
func (s *Sim) Machines(api API) []Machine {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settleLocked(api)
	out := make([]Machine, 0, len(s.fleets[api]))
	for _, m := range s.fleets[api] {
		out = append(out, *m)
	}
	return out
}

// Update changes one machine; it reports whether the id exists.
func (s *Sim) Update(api API, id int, f func(*Machine)) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.findLocked(api, id)
	if m == nil {
		return false
	}
	f(m)
	return true
}

// SetBingoStatus sets a VPN.bingo node's status code and display text.
func (s *Sim) SetBingoStatus(id, code int) bool {
	return s.Update(VPNBingo, id, func(m *Machine) {
		m.Code, m.Display = code, BingoDisplay(code)
		m.StatusUpdate = s.opts.Now().UTC().Truncate(time.Second)
	})
}

func (s *Sim) findLocked(api API, id int) *Machine {
	fl := s.fleets[api]
	i := sort.Search(len(fl), func(i int) bool { return fl[i].ID >= id })
	if i < len(fl) && fl[i].ID == id {
		return fl[i]
	}
	return nil
}

// settleLocked finishes transitions whose time has come.
func (s *Sim) settleLocked(api API) {
	now := s.opts.Now()
	fl := s.fleets[api][:0]
	for _, m := range s.fleets[api] {
		if !m.releasedAt.IsZero() && now.After(m.releasedAt) {
			continue // released: gone from the API
		}
		if m.settleTo != nil && now.After(m.settleAt) {
			f := m.settleTo
			m.settleTo = nil
			f(m)
			m.StatusUpdate = now.UTC().Truncate(time.Second)
		}
		s.healDueLocked(api, m, now)
		fl = append(fl, m)
	}
	s.fleets[api] = fl
}

// BingoDisplay is VPN.bingo's status_display for a code.
func BingoDisplay(code int) string {
	switch code {
	case -10:
		return "Preparing"
	case 9:
		return "Deployment Successful"
	case 10:
		return "Awaiting Heartbeat"
	case 18:
		return "Heartbeat Abnormal"
	case 19:
		return "Ready"
	case 20:
		return "Pending Release"
	case 7:
		return "Maintenance"
	}
	return "Status " + strconv.Itoa(code)
}

var (
	bingoCountries = []string{"us", "jp", "de", "gb", "fr", "sg", "nl"}
	vpsLocations   = []string{"us-west", "us-east", "eu-central", "ap-south"}
	vpsPlans       = []struct {
		name             string
		vcpus, mem, stor int
		transferGB       int
	}{{"Standard VPS", 2, 4096, 80, 2048}, {"Performance VPS", 4, 8192, 160, 4096}, {"Micro VPS", 1, 1024, 25, 1024}}
	vpsImages = []string{"Ubuntu 22.04 LTS", "Debian 12", "Rocky Linux 9"}
	e2ePlans  = []struct{ name, mem, disk, vcpus string }{{"B-2VCPU-8RAM-115DISK", "8.00 GB", "115 GB", "2"}, {"C2-12GB", "12.00 GB", "100 GB", "4"}, {"B-4VCPU-15RAM-60DISK", "15.00 GB", "60 GB", "4"}}
	e2eStatus = []string{"Running", "Powered off", "Creating", "Locked", "RUNNING", "powered-off", "Reinstalling"}
)

// generate builds a reproducible fleet with every kind of trouble: degraded
// and stopped machines, expiries within a day and a week, saturated
// bandwidth, CPU, memory, disk and transfer.
func (s *Sim) generate() {
	r := rand.New(rand.NewPCG(s.opts.Seed, s.opts.Seed^0x9e3779b97f4a7c15))
	now := s.opts.Now().UTC().Truncate(time.Second)
	count, n := map[API]int{}, 0
	for _, api := range APIs() {
		count[api] = s.opts.Servers
		if c, ok := s.opts.PerAPI[api]; ok {
			count[api] = c
		}
		n = max(n, count[api])
	}
	for i := 0; i < n; i++ {
		created := now.Add(-time.Duration(30+r.IntN(700)) * 24 * time.Hour)
		if i < count[VPNBingo] {
			s.fleets[VPNBingo] = append(s.fleets[VPNBingo], genBingo(r, i, now, created))
		}
		if i < count[VPSOrg] {
			s.fleets[VPSOrg] = append(s.fleets[VPSOrg], genVPS(r, i, created))
		}
		if i < count[E2E] {
			s.fleets[E2E] = append(s.fleets[E2E], genE2E(i, created))
		}
	}
	s.nextID[VPNBingo] = 1000 + n
	s.nextID[VPSOrg] = 12000 + n
	s.nextID[E2E] = 169 + n
}

// genBingo makes VPN.bingo node i of a generated fleet.
func genBingo(r *rand.Rand, i int, now, created time.Time) *Machine {
	id := 1000 + i
	b := &Machine{
		ID: id, Name: fmt.Sprintf("vpn-%04d", i), Host: fmt.Sprintf("n%d.vpn.example", id),
		IP:       fmt.Sprintf("198.51.%d.%d", (i/250)%256, i%250+1),
		Location: bingoCountries[i%len(bingoCountries)], Code: 19,
		CanRedepl: true, BandwidthMbps: float64(100 * (1 + r.IntN(10))),
		Created: created, StatusUpdate: created.Add(time.Hour),
		Expire: now.Add(time.Duration(30+r.IntN(300)) * 24 * time.Hour),
	}
	b.BandwidthUsedMbps = float64(int(b.BandwidthMbps * r.Float64() * 0.6))
	switch {
	case i%10 == 3:
		b.Code = 18
	case i%25 == 7:
		b.Code = 10
	case i%40 == 11:
		b.Code, b.CanRedepl = -10, false
	case i%50 == 44:
		b.Code = 20
	case i%60 == 17:
		b.Code = 7 // undocumented code: must come out as unknown
	case i%2 == 0:
		b.Code = 9
	}
	switch {
	case i%20 == 5:
		b.Expire = now.Add(time.Duration(2+r.IntN(4)) * 24 * time.Hour)
	case i%30 == 9:
		b.Expire = now.Add(time.Duration(1+r.IntN(20)) * time.Hour)
	}
	if i%15 == 4 {
		b.BandwidthUsedMbps = b.BandwidthMbps * 0.97
		b.CanRedepl = false
	}
	b.Display = BingoDisplay(b.Code)
	return b
}

// genVPS makes VPS.org server i of a generated fleet.
func genVPS(r *rand.Rand, i int, created time.Time) *Machine {
	p := vpsPlans[i%len(vpsPlans)]
	v := &Machine{
		ID: 12000 + i, Name: fmt.Sprintf("web-%04d", i), Host: fmt.Sprintf("web%d.example.com", i),
		IP:       fmt.Sprintf("203.0.%d.%d", (i/250)%256, i%250+1),
		Location: vpsLocations[i%len(vpsLocations)], Plan: p.name, Image: vpsImages[i%len(vpsImages)],
		Status: "active", VCPUs: p.vcpus, MemoryMB: p.mem, DiskGB: p.stor, TransferGB: p.transferGB,
		CPUPercent: float64(int(r.Float64()*600)) / 10, MemoryUsedMB: p.mem * (20 + r.IntN(50)) / 100,
		DiskUsedGB: p.stor * (10 + r.IntN(60)) / 100, TransferUsedGB: p.transferGB * r.IntN(60) / 100,
		Backups: i%3 == 0, Created: created, StatusUpdate: created,
	}
	switch {
	case i%10 == 6:
		v.Status = "stopped"
	case i%30 == 8:
		v.Status = "suspended"
	case i%40 == 21:
		v.Status = "provisioning"
	case i%50 == 23:
		v.Status = "rebooting"
	}
	switch i % 12 {
	case 1:
		v.CPUPercent = 97.5
	case 2:
		v.MemoryUsedMB = p.mem * 96 / 100
	case 5:
		v.DiskUsedGB = p.stor * 95 / 100
	case 10:
		v.TransferUsedGB = p.transferGB * 93 / 100
	}
	return v
}

// genE2E makes E2E node i of a generated fleet.
func genE2E(i int, created time.Time) *Machine {
	ep := e2ePlans[i%len(e2ePlans)]
	vc, _ := strconv.Atoi(ep.vcpus)
	e := &Machine{
		ID: 169 + i, Name: fmt.Sprintf("node-%04d", i), IP: fmt.Sprintf("101.53.%d.%d", (i/250)%256, i%250+1),
		Host: fmt.Sprintf("172.16.%d.%d", (i/250)%256, i%250+1), Location: "Delhi", Plan: ep.name,
		Image: "Ubuntu-22.04", Status: "Running", VCPUs: vc, Created: created, Backups: i%4 == 0,
	}
	e.MemoryMB, e.DiskGB = parseSizeMB(ep.mem), parseSizeGB(ep.disk)
	if i%10 == 2 {
		e.Status = e2eStatus[1+(i/10)%(len(e2eStatus)-1)]
	}
	return e
}

func parseSizeMB(s string) int {
	f, _ := strconv.ParseFloat(s[:len(s)-3], 64)
	return int(f * 1024)
}

func parseSizeGB(s string) int {
	f, _ := strconv.Atoi(s[:len(s)-3])
	return f
}

// Servers are the three simulated APIs listening on their ports.
type Servers struct {
	URL map[API]string
	srv []*http.Server
}

// Start serves every API of s on its own 127.0.0.1 port until ctx ends or
// Close is called.
func (s *Sim) Start(ctx context.Context) (*Servers, error) {
	return s.StartOn(ctx, "127.0.0.1")
}

// StartOn serves every API of s on its own free port of host until ctx
// ends or Close (or Shutdown) is called. The URLs name host, or 127.0.0.1
// when host is empty or an unspecified address (0.0.0.0, ::), which listen
// on every interface.
func (s *Sim) StartOn(ctx context.Context, host string) (*Servers, error) {
	urlHost := host
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		urlHost = "127.0.0.1"
	}
	out := &Servers{URL: map[API]string{}}
	for _, api := range APIs() {
		ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			out.Close()
			return nil, fmt.Errorf("sim: listen: %w", err)
		}
		hs := &http.Server{Handler: s.Handler(api), ReadHeaderTimeout: 10 * time.Second}
		out.srv = append(out.srv, hs)
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		out.URL[api] = "http://" + net.JoinHostPort(urlHost, port)
		go func() {
			if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				_ = err // the listener is ours; nothing to report
			}
		}()
	}
	go func() {
		<-ctx.Done()
		out.Close()
	}()
	return out, nil
}

// Close stops the servers.
func (o *Servers) Close() {
	for _, hs := range o.srv {
		_ = hs.Close()
	}
}

// Shutdown stops the servers gracefully: no new connections, the requests
// under way finish. When ctx ends first, it closes them and returns ctx's
// error.
func (o *Servers) Shutdown(ctx context.Context) error {
	var errs []error
	for _, hs := range o.srv {
		errs = append(errs, hs.Shutdown(ctx))
	}
	if err := errors.Join(errs...); err != nil {
		o.Close()
		return fmt.Errorf("sim: shutdown: %w", err)
	}
	return nil
}
