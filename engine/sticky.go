package engine

import (
	"sync"
)

// maxSessions bounds the sticky table; past it, expired entries are swept
// and, if still full, arbitrary ones dropped (a dropped session only loses
// its preference).
const maxSessions = 200_000

// stickyStore is the in-memory Sessions. It expires entries lazily, so it
// needs no goroutine.
type stickyStore struct {
	mu      sync.Mutex
	m       map[uint64]stickyEntry
	inserts int
}

type stickyEntry struct {
	// via is the target's stable name, so the entry survives reloads.
	via   string
	until int64
}

// Get returns the target a session is pinned to, if it is still fresh.
func (s *stickyStore) Get(id uint64, now int64) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.m[id]
	if !ok || e.until <= now {
		return "", false
	}
	return e.via, true
}

// Set pins a session to a target for ttl nanoseconds from now.
func (s *stickyStore) Set(id uint64, via string, now, ttl int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = make(map[uint64]stickyEntry)
	}
	if e, ok := s.m[id]; ok && e.via == via {
		// Refresh in place: no string change, no sweep.
		s.m[id] = stickyEntry{via: e.via, until: now + ttl}
		return
	}
	s.inserts++
	if s.inserts%1024 == 0 || len(s.m) >= maxSessions {
		for k, e := range s.m {
			if e.until <= now {
				delete(s.m, k)
			}
		}
		// Still full of live sessions: drop a batch, so the next
		// inserts do not each pay for a sweep.
		for k := range s.m {
			if len(s.m) < maxSessions-maxSessions/100 {
				break
			}
			delete(s.m, k)
		}
	}
	s.m[id] = stickyEntry{via: via, until: now + ttl}
}

// Len returns the number of entries held, fresh or not.
func (s *stickyStore) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}
