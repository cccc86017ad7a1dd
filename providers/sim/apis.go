package sim

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

const bingoTime = "2006-01-02 15:04:05"

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// SetCredentials changes what api accepts from now on: a test revokes a
// key by setting another one. Requests with the old credentials get the
// API's documented 401.
func (s *Sim) SetCredentials(api API, c Credentials) {
	s.mu.Lock()
	defer s.mu.Unlock()
	creds := make(map[API]Credentials, len(s.opts.Credentials)+1)
	for k, v := range s.opts.Credentials {
		creds[k] = v
	}
	creds[api] = c
	s.opts.Credentials = creds
}

// pathID splits "/prefix/{id}/rest" into id and rest ("" for the object).
func pathID(path, prefix string) (id int, rest string, ok bool) {
	tail := strings.TrimPrefix(path, prefix)
	if tail == path || tail == "" {
		return 0, "", false
	}
	parts := strings.SplitN(tail, "/", 2)
	id, err := strconv.Atoi(parts[0])
	if err != nil {
		return 0, "", false
	}
	if len(parts) == 2 {
		rest = strings.TrimSuffix(parts[1], "/")
	}
	return id, rest, true
}

func (s *Sim) count(api API, kind string) {
	s.mu.Lock()
	s.requests[api][kind]++
	s.mu.Unlock()
}

// drfPage slices a list DRF style: ?page=N&page_size=M, with an absolute
// `next` link on the request's own host, or null on the last page.
func (s *Sim) drfPage(r *http.Request, total int) (lo, hi int, next, prev any, ok bool) {
	q := r.URL.Query()
	size := s.opts.PageSize
	if v, err := strconv.Atoi(q.Get("page_size")); err == nil && v > 0 {
		size = min(v, s.opts.MaxPageSize)
	}
	page := 1
	if v := q.Get("page"); v != "" {
		p, err := strconv.Atoi(v)
		if err != nil || p < 1 {
			return 0, 0, nil, nil, false
		}
		page = p
	}
	lo = (page - 1) * size
	if lo > total || (lo == total && page > 1) {
		return 0, 0, nil, nil, false
	}
	hi = min(lo+size, total)
	link := func(p int) string {
		u := url.URL{Scheme: "http", Host: r.Host, Path: r.URL.Path}
		v := url.Values{}
		for k, vs := range q {
			v[k] = vs
		}
		v.Set("page", strconv.Itoa(p))
		u.RawQuery = v.Encode()
		return u.String()
	}
	if hi < total {
		next = link(page + 1)
	}
	if page > 1 {
		prev = link(page - 1)
	}
	return lo, hi, next, prev, true
}

// detail renders one machine of api under the lock, or nil if it is gone.
func (s *Sim) detail(api API, id int, render func(*Machine) map[string]any) map[string]any {
	s.count(api, "detail")
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settleLocked(api)
	if m := s.findLocked(api, id); m != nil {
		return render(m)
	}
	return nil
}

// ---- VPN.bingo: /api/v2/nodes/ ----

func (s *Sim) bingoNode(m *Machine) map[string]any {
	return map[string]any{
		"id": m.ID, "country": m.Location, "country_display": m.Location, "name": m.Name,
		"ip": m.IP, "host": m.Host, "port": 443, "instance_id": nil, "instance_status": -1,
		"bandwidth": m.BandwidthMbps, "bandwidth_used_m": m.BandwidthUsedMbps,
		"status": m.Code, "status_display": m.Display, "can_redeploy": m.CanRedepl, "info": nil,
		"expire_time":        m.Expire.UTC().Format(bingoTime),
		"status_update_time": m.StatusUpdate.UTC().Format(bingoTime),
		"update_time":        m.StatusUpdate.UTC().Format(bingoTime),
		"create_time":        m.Created.UTC().Format(bingoTime),
	}
}

func (s *Sim) serveBingo(w http.ResponseWriter, r *http.Request) {
	const prefix = "/api/v2/nodes/"
	client, denied := s.authenticate(VPNBingo, r)
	if denied != 0 {
		writeJSON(w, http.StatusUnauthorized, map[string]any{"detail": "Authentication credentials were not provided."})
		return
	}
	if r.URL.Path == prefix && r.Method == http.MethodGet {
		s.count(VPNBingo, "list")
		s.mu.Lock()
		s.settleLocked(VPNBingo)
		fl := s.fleets[VPNBingo]
		lo, hi, next, prev, ok := s.drfPage(r, len(fl))
		if !ok {
			s.mu.Unlock()
			writeJSON(w, http.StatusNotFound, map[string]any{"detail": "Invalid page."})
			return
		}
		results := make([]map[string]any, 0, hi-lo)
		for _, m := range fl[lo:hi] {
			results = append(results, s.bingoNode(m))
		}
		s.mu.Unlock()
		writeJSON(w, http.StatusOK, map[string]any{
			"success": true,
			"data":    map[string]any{"count": len(fl), "next": next, "previous": prev, "results": results},
			"error":   nil,
		})
		return
	}
	id, rest, ok := pathID(r.URL.Path, prefix)
	if !ok {
		writeJSON(w, http.StatusNotFound, map[string]any{"detail": "Not found."})
		return
	}
	switch {
	case rest == "" && r.Method == http.MethodGet:
		node := s.detail(VPNBingo, id, s.bingoNode)
		if node == nil {
			writeJSON(w, http.StatusNotFound, map[string]any{"detail": "Can not find the server"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"success": true, "data": node, "error": nil})
	case rest == "redeploy" && r.Method == http.MethodPost:
		s.count(VPNBingo, "action")
		s.bingoRedeploy(w, r, id, client)
	default:
		writeJSON(w, http.StatusMethodNotAllowed, map[string]any{"detail": fmt.Sprintf("Method \"%s\" not allowed.", r.Method)})
	}
}

var validCountries = map[string]bool{"US": true, "JP": true, "DE": true, "GB": true, "FR": true, "SG": true, "NL": true}

func (s *Sim) bingoRedeploy(w http.ResponseWriter, r *http.Request, id int, client string) {
	var req struct {
		Force       bool   `json:"force"`
		CountryCode string `json:"country_code"`
	}
	if r.ContentLength != 0 {
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&req); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]any{"detail": "JSON parse error - " + err.Error()})
			return
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rec := ActionRecord{API: VPNBingo, ID: strconv.Itoa(id), Action: "redeploy", Force: req.Force, Country: req.CountryCode, Time: s.opts.Now(), Client: client}
	answer := func(status int, body any) {
		rec.Status = status
		s.recordLocked(rec)
		writeJSON(w, status, body)
	}
	s.settleLocked(VPNBingo)
	m := s.findLocked(VPNBingo, id)
	if m == nil {
		answer(http.StatusNotFound, map[string]any{"detail": "Can not find the server"})
		return
	}
	cc := strings.ToUpper(req.CountryCode)
	if cc != "" && !validCountries[cc] {
		answer(http.StatusBadRequest, map[string]any{"country_code": []string{fmt.Sprintf("Invalid country code: %s. Valid country codes include: US, JP, DE, GB, FR, ...", req.CountryCode)}})
		return
	}
	if !req.Force {
		switch m.Code {
		case 9, 10, 18, 19:
		default:
			answer(http.StatusBadRequest, map[string]any{"detail": fmt.Sprintf("Server cann't redeploy on this status(%d)", m.Code)})
			return
		}
		if !m.CanRedepl {
			answer(http.StatusBadRequest, map[string]any{"detail": "Server cann't redeploy now (max redeploy count reached)"})
			return
		}
	}
	now := s.opts.Now()
	newID := s.nextID[VPNBingo]
	s.nextID[VPNBingo]++
	country := m.Location
	if cc != "" {
		country = strings.ToLower(cc)
	}
	n := *m
	n.ID, n.Location, n.Code, n.Display, n.CanRedepl = newID, country, -10, BingoDisplay(-10), false
	n.IP = fmt.Sprintf("192.0.2.%d", newID%250+1)
	n.BandwidthUsedMbps = 0
	n.Created, n.StatusUpdate = now.UTC().Truncate(time.Second), now.UTC().Truncate(time.Second)
	n.settleAt = now.Add(s.opts.Settle)
	n.settleTo = func(x *Machine) { x.Code, x.Display = 19, BingoDisplay(19) }
	n.releasedAt = time.Time{}
	s.treatLocked(VPNBingo, &n, "redeploy")
	m.Code, m.Display, m.CanRedepl = 20, BingoDisplay(20), false
	m.StatusUpdate = now.UTC().Truncate(time.Second)
	m.settleTo = nil
	m.releasedAt = now.Add(s.opts.Settle)
	s.fleets[VPNBingo] = append(s.fleets[VPNBingo], &n)
	rec.NewID = strconv.Itoa(newID)
	answer(http.StatusOK, map[string]any{
		"original_node": map[string]any{"id": m.ID, "status": 20, "status_display": m.Display},
		"new_node":      map[string]any{"id": newID, "country": strings.ToUpper(country), "country_display": country, "status": -10, "status_display": n.Display},
	})
}

// ---- VPS.org: /api/v1/servers/ ----

func (s *Sim) vpsServer(m *Machine, detail bool) map[string]any {
	plan := map[string]any{"id": 1 + m.ID%3, "name": m.Plan, "vcpus": m.VCPUs, "memory": m.MemoryMB, "storage": m.DiskGB}
	out := map[string]any{
		"id": m.ID, "name": m.Name, "hostname": m.Host, "status": m.Status, "ip_address": m.IP,
		"location": m.Location, "plan": plan, "os": map[string]any{"id": 3 + m.ID%3, "name": m.Image},
		"created_at": m.Created.UTC().Format(time.RFC3339), "updated_at": m.StatusUpdate.UTC().Format(time.RFC3339),
	}
	if m.Status == "provisioning" {
		out["ip_address"] = nil
	}
	if detail {
		plan["bandwidth"] = m.TransferGB
		out["ipv6_address"] = fmt.Sprintf("2001:db8::%x", m.ID)
		out["backups_enabled"] = m.Backups
		out["resource_usage"] = map[string]any{
			"cpu_percent": m.CPUPercent, "memory_used": m.MemoryUsedMB,
			"disk_used": m.DiskUsedGB, "bandwidth_used": m.TransferUsedGB,
		}
	}
	return out
}

func (s *Sim) serveVPS(w http.ResponseWriter, r *http.Request) {
	const prefix = "/api/v1/servers/"
	client, denied := s.authenticate(VPSOrg, r)
	if denied != 0 {
		writeJSON(w, http.StatusUnauthorized, map[string]any{"detail": "Invalid or missing API token"})
		return
	}
	if r.URL.Path == prefix && r.Method == http.MethodGet {
		s.count(VPSOrg, "list")
		q := r.URL.Query()
		s.mu.Lock()
		s.settleLocked(VPSOrg)
		var fl []*Machine
		for _, m := range s.fleets[VPSOrg] {
			if st := q.Get("status"); st != "" && st != m.Status {
				continue
			}
			if loc := q.Get("location"); loc != "" && loc != m.Location {
				continue
			}
			fl = append(fl, m)
		}
		lo, hi, next, prev, ok := s.drfPage(r, len(fl))
		if !ok {
			s.mu.Unlock()
			writeJSON(w, http.StatusNotFound, map[string]any{"detail": "Invalid page."})
			return
		}
		results := make([]map[string]any, 0, hi-lo)
		for _, m := range fl[lo:hi] {
			results = append(results, s.vpsServer(m, false))
		}
		s.mu.Unlock()
		writeJSON(w, http.StatusOK, map[string]any{"count": len(fl), "next": next, "previous": prev, "results": results})
		return
	}
	id, rest, ok := pathID(r.URL.Path, prefix)
	if !ok {
		writeJSON(w, http.StatusNotFound, map[string]any{"detail": "Not found."})
		return
	}
	if rest == "" && r.Method == http.MethodGet {
		body := s.detail(VPSOrg, id, func(m *Machine) map[string]any { return s.vpsServer(m, true) })
		if body == nil {
			writeJSON(w, http.StatusNotFound, map[string]any{"detail": "Not found - Server does not exist"})
			return
		}
		writeJSON(w, http.StatusOK, body)
		return
	}
	if r.Method != http.MethodPost || (rest != "reboot" && rest != "start" && rest != "stop") {
		writeJSON(w, http.StatusMethodNotAllowed, map[string]any{"detail": fmt.Sprintf("Method \"%s\" not allowed.", r.Method)})
		return
	}
	s.count(VPSOrg, "action")
	s.mu.Lock()
	defer s.mu.Unlock()
	rec := ActionRecord{API: VPSOrg, ID: strconv.Itoa(id), Action: rest, Time: s.opts.Now(), Client: client}
	answer := func(status int, body any) {
		rec.Status = status
		s.recordLocked(rec)
		writeJSON(w, status, body)
	}
	s.settleLocked(VPSOrg)
	m := s.findLocked(VPSOrg, id)
	if m == nil {
		answer(http.StatusNotFound, map[string]any{"detail": "Not found - Server does not exist"})
		return
	}
	var via, end, msg string
	switch rest {
	case "reboot":
		if m.Status != "active" {
			answer(http.StatusBadRequest, map[string]any{"detail": "Bad request - Server is not running"})
			return
		}
		via, end, msg = "rebooting", "active", "Server is rebooting"
	case "start":
		if m.Status == "active" {
			answer(http.StatusBadRequest, map[string]any{"detail": "Bad request - Server is already running"})
			return
		}
		via, end, msg = "starting", "active", "Server is starting"
	case "stop":
		if m.Status != "active" {
			answer(http.StatusBadRequest, map[string]any{"detail": "Bad request - Server is not running"})
			return
		}
		via, end, msg = "stopping", "stopped", "Server is stopping"
	}
	m.Status = via
	m.StatusUpdate = s.opts.Now().UTC().Truncate(time.Second)
	m.settleAt = s.opts.Now().Add(s.opts.Settle)
	m.settleTo = func(x *Machine) { x.Status = end }
	s.treatLocked(VPSOrg, m, rest)
	answer(http.StatusOK, map[string]any{"status": "success", "message": msg, "server": map[string]any{"id": m.ID, "name": m.Name, "status": via}})
}

// ---- E2E Networks: /myaccount/api/v1/nodes/ ----

func e2eEnvelope(code int, message string, data any, errs any) map[string]any {
	return map[string]any{"code": code, "data": data, "errors": errs, "message": message}
}

func (s *Sim) e2eNode(m *Machine) map[string]any {
	return map[string]any{
		"id": m.ID, "name": m.Name, "created_at": m.Created.UTC().Format("2006-01-02T15:04:05.000000Z"),
		"public_ip_address": m.IP, "private_ip_address": m.Host, "backup": m.Backups,
		"disk": fmt.Sprintf("%d GB", m.DiskGB), "status": m.Status, "vcpus": strconv.Itoa(m.VCPUs),
		"memory": fmt.Sprintf("%.2f GB", float64(m.MemoryMB)/1024), "plan": m.Plan, "region": m.Location,
	}
}

func (s *Sim) serveE2E(w http.ResponseWriter, r *http.Request) {
	const prefix = "/myaccount/api/v1/nodes/"
	q := r.URL.Query()
	client, denied := s.authenticate(E2E, r)
	switch denied {
	case 0:
	case http.StatusForbidden:
		writeJSON(w, http.StatusForbidden, e2eEnvelope(403, "Forbidden", map[string]any{}, "project_id does not belong to this account"))
		return
	default:
		writeJSON(w, http.StatusUnauthorized, e2eEnvelope(401, "Unauthorized", map[string]any{}, "Invalid apikey or token"))
		return
	}
	if r.URL.Path == prefix && r.Method == http.MethodGet {
		s.count(E2E, "list")
		page, per := 1, 10
		if v, err := strconv.Atoi(q.Get("page_no")); err == nil && v > 0 {
			page = v
		}
		if v, err := strconv.Atoi(q.Get("per_page")); err == nil && v > 0 {
			per = min(v, s.opts.MaxPageSize)
		}
		s.mu.Lock()
		s.settleLocked(E2E)
		fl := s.fleets[E2E]
		pages := (len(fl) + per - 1) / per
		lo := min((page-1)*per, len(fl))
		hi := min(lo+per, len(fl))
		data := make([]map[string]any, 0, hi-lo)
		for _, m := range fl[lo:hi] {
			data = append(data, s.e2eNode(m))
		}
		s.mu.Unlock()
		env := e2eEnvelope(200, "Success", data, map[string]any{})
		env["total_count"] = len(fl)
		env["total_page_number"] = pages
		writeJSON(w, http.StatusOK, env)
		return
	}
	id, rest, ok := pathID(r.URL.Path, prefix)
	if !ok {
		writeJSON(w, http.StatusNotFound, e2eEnvelope(404, "Not Found", map[string]any{}, "Not found"))
		return
	}
	switch {
	case rest == "" && r.Method == http.MethodGet:
		node := s.detail(E2E, id, s.e2eNode)
		if node == nil {
			writeJSON(w, http.StatusNotFound, e2eEnvelope(404, "Not Found", map[string]any{}, "Node not found"))
			return
		}
		writeJSON(w, http.StatusOK, e2eEnvelope(200, "Success", node, map[string]any{}))
	case rest == "actions" && r.Method == http.MethodPut:
		s.count(E2E, "action")
		s.e2eAction(w, r, id, client)
	default:
		writeJSON(w, http.StatusMethodNotAllowed, e2eEnvelope(405, "Method Not Allowed", map[string]any{}, "Method not allowed"))
	}
}

func (s *Sim) e2eAction(w http.ResponseWriter, r *http.Request, id int, client string) {
	var req struct {
		Type string `json:"type"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, e2eEnvelope(400, "Bad Request", map[string]any{}, "invalid JSON body"))
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rec := ActionRecord{API: E2E, ID: strconv.Itoa(id), Action: req.Type, Time: s.opts.Now(), Client: client}
	answer := func(status int, body any) {
		rec.Status = status
		s.recordLocked(rec)
		writeJSON(w, status, body)
	}
	s.settleLocked(E2E)
	m := s.findLocked(E2E, id)
	if m == nil {
		answer(http.StatusNotFound, e2eEnvelope(404, "Not Found", map[string]any{}, "Node not found"))
		return
	}
	running := StateIsRunningE2E(m.Status)
	var via, end string
	switch req.Type {
	case "reboot":
		if !running {
			answer(http.StatusBadRequest, e2eEnvelope(400, "Bad Request", map[string]any{}, "Node is not running"))
			return
		}
		via, end = "Rebooting", "Running"
	case "power_on":
		if running {
			answer(http.StatusBadRequest, e2eEnvelope(400, "Bad Request", map[string]any{}, "Node is already running"))
			return
		}
		via, end = "Starting", "Running"
	case "power_off":
		if !running {
			answer(http.StatusBadRequest, e2eEnvelope(400, "Bad Request", map[string]any{}, "Node is not running"))
			return
		}
		via, end = "Stopping", "Powered off"
	default:
		answer(http.StatusBadRequest, e2eEnvelope(400, "Bad Request", map[string]any{}, fmt.Sprintf("invalid action type %q", req.Type)))
		return
	}
	m.Status = via
	m.settleAt = s.opts.Now().Add(s.opts.Settle)
	m.settleTo = func(x *Machine) { x.Status = end }
	s.treatLocked(E2E, m, req.Type)
	answer(http.StatusOK, e2eEnvelope(200, "Success", map[string]any{"id": m.ID, "status": via}, map[string]any{}))
}

// StateIsRunningE2E reports whether an E2E status text means running.
func StateIsRunningE2E(status string) bool { return strings.EqualFold(status, "running") }
