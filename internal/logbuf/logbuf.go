// Package logbuf coalesces log lines written from many goroutines into few
// writes.
//
// A proxy that logs a line per session event writes thousands of lines a
// second during a reconnect storm or a rule's tick; one write(2) each
// costs more than the line. A Writer appends each line to a buffer and
// wakes its flusher goroutine, which writes whatever has gathered in one
// call. When the process is quiet a line is written as soon as the flusher
// runs, a scheduling hop later. After each write the flusher pauses for
// Pause before it takes the next, so that under load the lines of many
// goroutines gather without a wake-up (a futex call and a thread switch)
// and a write for each: at most one write per Pause.
//
//	Write ──append──▶ [pending] ──flusher──▶ one Write to the destination
//	Sync  ──────────── waits until every line appended before it is written
package logbuf

import (
	"io"
	"sync"
	"time"
)

// DefaultLimit is the pending size at which Write waits for the flusher
// instead of growing the buffer further.
const DefaultLimit = 1 << 20

// Pause is how long the flusher waits after a write before the next: a
// line written meanwhile waits at most that long, and wakes nobody. Each
// pause ends with a timer's wake-up of the flusher, and often of a thread
// for it; 10 ms keeps those to a hundred a second under any load, and a
// line's delay below what a reader of the log notices.
const Pause = 10 * time.Millisecond

// Writer is an io.Writer (and a zapcore.WriteSyncer) that hands lines to a
// flusher goroutine. It is safe for concurrent use. Close stops the
// flusher after writing what is pending; writes after Close go straight
// to the destination.
type Writer struct {
	dst   io.Writer
	limit int
	kick  chan struct{} // cap 1: the flusher has something to write
	stop  chan struct{} // closed by Close
	done  chan struct{} // closed when the flusher has returned

	mu      sync.Mutex
	pending []byte   // appended, not yet taken by the flusher
	spare   []byte   // the flusher's last buffer, for reuse
	in, out uint64   // bytes appended in all; bytes written in all
	waiters []waiter // Sync and Write calls waiting for out to reach a mark
	err     error    // the destination's first write error
	closed  bool
}

type waiter struct {
	mark uint64
	ch   chan struct{}
}

// New returns a Writer writing to dst, with its flusher started. limit is
// the pending size past which Write waits; 0 means DefaultLimit.
func New(dst io.Writer, limit int) *Writer {
	if limit <= 0 {
		limit = DefaultLimit
	}
	w := &Writer{
		dst:   dst,
		limit: limit,
		kick:  make(chan struct{}, 1),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	go w.flusher() // goroutine "log flusher": ends with Close
	return w
}

// Write appends a copy of p to the pending lines. It returns at once unless
// more than the limit is pending, in which case it waits for the flusher.
// A write error of the destination is returned by Sync, not here.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		<-w.done // the final flush goes first, and alone
		return w.dst.Write(p)
	}
	w.pending = append(w.pending, p...)
	w.in += uint64(len(p))
	var wait chan struct{}
	if len(w.pending) > w.limit {
		wait = w.waitLocked(w.in)
	}
	w.mu.Unlock()
	w.kickFlusher()
	if wait != nil {
		select {
		case <-wait:
		case <-w.done:
		}
	}
	return len(p), nil
}

// Sync waits until every line written before it has reached the
// destination, and then syncs the destination if it can be synced (a
// terminal or a pipe reports that it cannot, as os.File's Sync does).
func (w *Writer) Sync() error {
	w.mu.Lock()
	var wait chan struct{}
	if w.closed {
		wait = w.done // Close's final flush writes what is pending
	} else if w.out < w.in {
		wait = w.waitLocked(w.in)
	}
	w.mu.Unlock()
	if wait != nil {
		w.kickFlusher()
		select {
		case <-wait:
		case <-w.done:
		}
	}
	w.mu.Lock()
	err := w.err
	w.mu.Unlock()
	if s, ok := w.dst.(interface{ Sync() error }); ok && err == nil {
		err = s.Sync()
	}
	return err
}

// Close writes what is pending and stops the flusher. It is safe to call
// more than once.
func (w *Writer) Close() error {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.stop)
	}
	w.mu.Unlock()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// kickFlusher makes the flusher run soon, if it is not due to already.
func (w *Writer) kickFlusher() {
	select {
	case w.kick <- struct{}{}:
	default: // the flusher is already due to run
	}
}

// waitLocked registers a wait for out to reach mark. w.mu must be held.
func (w *Writer) waitLocked(mark uint64) chan struct{} {
	ch := make(chan struct{})
	w.waiters = append(w.waiters, waiter{mark: mark, ch: ch})
	return ch
}

func (w *Writer) flusher() {
	defer close(w.done)
	pause := time.NewTimer(Pause)
	pause.Stop()
	for {
		select {
		case <-w.kick:
			if !w.flush() {
				continue
			}
		case <-w.stop:
			w.flush()
			return
		}
		// Lines written during the pause only fill kick's one place.
		pause.Reset(Pause)
		select {
		case <-pause.C:
		case <-w.stop:
			pause.Stop()
			w.flush()
			return
		}
	}
}

// flush writes everything pending in one call to the destination and
// releases the waits it satisfies; it reports whether there was anything.
func (w *Writer) flush() bool {
	w.mu.Lock()
	b := w.pending
	w.pending, w.spare = w.spare[:0], nil
	mark := w.in
	w.mu.Unlock()
	if len(b) == 0 {
		w.mu.Lock()
		w.spare = b
		w.mu.Unlock()
		return false
	}
	_, err := w.dst.Write(b)
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil && w.err == nil {
		w.err = err
	}
	if cap(b) <= w.limit { // a buffer grown by a burst is not kept
		w.spare = b[:0]
	}
	w.out = mark
	keep := w.waiters[:0]
	for _, wt := range w.waiters {
		if wt.mark <= mark {
			close(wt.ch)
		} else {
			keep = append(keep, wt)
		}
	}
	clear(w.waiters[len(keep):])
	w.waiters = keep
	return true
}
