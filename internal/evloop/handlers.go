//go:build linux

package evloop

// handlers is a loop's table from a registered socket's number to its
// handler. The kernel hands out the lowest free file descriptor, so the
// numbers in use are small and dense: a slice indexed by the number
// finds a handler without hashing, and holds no more per socket than a
// map's slot would. Only the loop's goroutine uses it.
type handlers struct {
	h []Handler
}

// get returns fd's handler, or nil.
func (t *handlers) get(fd int32) Handler {
	if uint32(fd) < uint32(len(t.h)) {
		return t.h[fd]
	}
	return nil
}

// set makes h the handler of fd, growing the table to hold fd.
func (t *handlers) set(fd int32, h Handler) {
	if fd < 0 {
		return // not a file descriptor: never registered
	}
	if int(fd) >= len(t.h) {
		n := max(64, 2*len(t.h), int(fd)+1)
		t.h = append(t.h, make([]Handler, n-len(t.h))...)
	}
	t.h[fd] = h
}

// del forgets fd's handler.
func (t *handlers) del(fd int32) {
	if uint32(fd) < uint32(len(t.h)) {
		t.h[fd] = nil
	}
}

// each calls f for every handler, in the order of their numbers; f may
// delete the handler it is given.
func (t *handlers) each(f func(fd int32, h Handler)) {
	for fd, h := range t.h {
		if h != nil {
			f(int32(fd), h)
		}
	}
}
