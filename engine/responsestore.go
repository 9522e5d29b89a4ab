package engine

import (
	"bytes"
	"container/list"
	"sync"
)

// responseStore keeps Responses API answers in memory for
// previous_response_id and GET /v1/responses/{id}: bounded by a time to
// live and a total size, the oldest going first, and each visible only
// to the gateway key that created it. It outlives reloads; its bounds
// are the config's at each write.
type responseStore struct {
	mu    sync.Mutex
	byID  map[string]*list.Element
	order list.List // of *storedResponse, oldest first
	size  int64
}

// storedResponse is one stored answer.
type storedResponse struct {
	id string
	// key is the creating gateway key's name; "" with auth off.
	key string
	// response is the Response object, as GET returns it; history the
	// conversation as chat messages (a JSON array) that a follow-up
	// with previous_response_id continues.
	response, history []byte
	at                int64
}

// bytes is what r holds in memory, as the size bound counts it: the
// capacity of its slices, which put makes its own.
func (r *storedResponse) bytes() int64 {
	return int64(len(r.id) + len(r.key) + cap(r.response) + cap(r.history))
}

func newResponseStore() *responseStore {
	return &responseStore{byID: map[string]*list.Element{}}
}

// put stores r at now, evicting what is past ttl and, oldest first, what
// the size bound no longer holds. An answer larger than the whole bound
// is not stored; put reports whether r was. The store keeps copies of
// r's bytes, so that an answer cut from a larger buffer does not hold
// that buffer, uncounted, for its time to live.
func (st *responseStore) put(r *storedResponse, now, ttl, maxBytes int64) bool {
	r.response, r.history = bytes.Clone(r.response), bytes.Clone(r.history)
	st.mu.Lock()
	defer st.mu.Unlock()
	st.expire(now, ttl)
	n := r.bytes()
	if n > maxBytes {
		return false
	}
	if old, ok := st.byID[r.id]; ok {
		st.remove(old)
	}
	for st.size+n > maxBytes {
		st.remove(st.order.Front())
	}
	r.at = now
	st.byID[r.id] = st.order.PushBack(r)
	st.size += n
	return true
}

// get returns the answer id stored for gateway key key, if it is there
// and still within ttl. Another key's answer is not found, as if it did
// not exist.
func (st *responseStore) get(id, key string, now, ttl int64) (*storedResponse, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.expire(now, ttl)
	e, ok := st.byID[id]
	if !ok {
		return nil, false
	}
	r := e.Value.(*storedResponse)
	if r.key != key {
		return nil, false
	}
	return r, true
}

// expire drops the answers older than ttl; the list is in time order.
func (st *responseStore) expire(now, ttl int64) {
	for e := st.order.Front(); e != nil && now-e.Value.(*storedResponse).at > ttl; e = st.order.Front() {
		st.remove(e)
	}
}

func (st *responseStore) remove(e *list.Element) {
	r := st.order.Remove(e).(*storedResponse)
	delete(st.byID, r.id)
	st.size -= r.bytes()
}
