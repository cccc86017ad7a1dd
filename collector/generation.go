package collector

// Generation changes whenever the data of a server or the set of accounts
// changes: a reader that caches what it rendered from Snapshots renders
// again only when it moves.
func (s *Store) Generation() uint64 { return s.generation() }
