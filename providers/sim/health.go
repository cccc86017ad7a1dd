package sim

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
