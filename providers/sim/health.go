package sim

import "time"

// Remove takes one machine out of api's fleet (deleted by its owner, or
// reclaimed): it vanishes from lists and reads. It reports whether the id
// existed.
func (s *Sim) Remove(api API, id int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	fl := s.fleets[api]
	for i, m := range fl {
		if m.ID == id {
			s.fleets[api] = append(fl[:i:i], fl[i+1:]...)
			return true
		}
	}
	return false
}

// The repairs that can cure a sick machine (Sickness.Cure).
const (
	// CureReboot: a reboot heals it.
	CureReboot = "reboot"
	// CurePowerCycle: a stop, then a start, heals it (a reboot does not).
	CurePowerCycle = "power_cycle"
	// CureRedeploy: a VPN.bingo redeploy makes a healthy node.
	CureRedeploy = "redeploy"
	// CureNone: nothing heals it.
	CureNone = ""
)

// Sickness is a fault inside a simulated machine that its provider's API
// shows and that only one kind of repair cures: VPS.org's CPU is pinned
// at 99% (resource_usage), VPN.bingo's node reads Heartbeat Abnormal
// (status 18; a redeploy's replacement inherits it unless the cure is a
// redeploy). Every other repair completes, and the symptom is back when
// the machine is up again.
type Sickness struct {
	Cure string
	// HealAfter is how long after the curing repair completes the
	// symptom clears (0: at once).
	HealAfter time.Duration
}

// Symptoms of a sick machine, and the values a healthy one returns to.
const (
	sickCPUPercent    = 99.0
	healthyCPUPercent = 12.5
)

// SetSick makes one VPS.org or VPN.bingo machine sick; it reports false
// for an unknown id or another API.
func (s *Sim) SetSick(api API, id int, k Sickness) bool {
	if api != VPSOrg && api != VPNBingo {
		return false
	}
	return s.Update(api, id, func(m *Machine) {
		kk := k
		m.sick, m.cold, m.healAt = &kk, false, time.Time{}
		s.symptomLocked(api, m)
	})
}

// Sick reports whether a machine is sick now.
func (s *Sim) Sick(api API, id int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settleLocked(api)
	m := s.findLocked(api, id)
	return m != nil && m.sick != nil
}

// symptomLocked shows a sick machine's symptom.
func (s *Sim) symptomLocked(api API, m *Machine) {
	switch api {
	case VPSOrg:
		m.CPUPercent = sickCPUPercent
	case VPNBingo:
		m.Code, m.Display, m.CanRedepl = 18, BingoDisplay(18), true
	}
}

// healLocked ends a machine's sickness.
func (s *Sim) healLocked(api API, m *Machine) {
	m.sick, m.cold, m.healAt = nil, false, time.Time{}
	switch api {
	case VPSOrg:
		m.CPUPercent = healthyCPUPercent
	case VPNBingo:
		m.Code, m.Display = 19, BingoDisplay(19)
	}
}

// treatLocked applies the health model to an action the API accepted on
// m (action is the API's own name: reboot, start, stop, power_on,
// power_off, redeploy; for a redeploy m is the new node): it wraps the
// transition that ends the action.
func (s *Sim) treatLocked(api API, m *Machine, action string) {
	end := m.settleTo
	if end == nil {
		return
	}
	switch action {
	case "stop", "power_off":
		m.settleTo = func(x *Machine) {
			end(x)
			if x.sick != nil {
				x.cold = true
			}
		}
	case "reboot", "start", "power_on":
		m.settleTo = func(x *Machine) {
			end(x)
			if x.sick == nil {
				if api == VPSOrg {
					// A boot ends a runaway process.
					x.CPUPercent = min(x.CPUPercent, healthyCPUPercent)
				}
				return
			}
			cured := (x.sick.Cure == CureReboot && action == "reboot") ||
				(x.sick.Cure == CurePowerCycle && x.cold && action != "reboot")
			x.cold = false
			s.afterRepairLocked(api, x, cured)
		}
	case "redeploy":
		m.settleTo = func(x *Machine) {
			end(x)
			if x.sick != nil {
				s.afterRepairLocked(api, x, x.sick.Cure == CureRedeploy)
			}
		}
	}
}

// afterRepairLocked heals a cured machine (now or after its delay) or
// shows its symptom again.
func (s *Sim) afterRepairLocked(api API, x *Machine, cured bool) {
	switch {
	case !cured:
		s.symptomLocked(api, x)
	case x.sick.HealAfter <= 0:
		s.healLocked(api, x)
	default:
		s.symptomLocked(api, x)
		x.healAt = s.opts.Now().Add(x.sick.HealAfter)
	}
}

// healDueLocked heals a machine whose cure has taken effect.
func (s *Sim) healDueLocked(api API, m *Machine, now time.Time) {
	if m.sick != nil && !m.healAt.IsZero() && now.After(m.healAt) {
		s.healLocked(api, m)
	}
}
