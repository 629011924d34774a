package proxy

import (
	"io"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/gobwas/ws"

	"github.com/wschaos/wschaos/rules"
)

// delayer holds the frames of one direction for a while before writing
// them, in order, without stalling the other direction: its copier keeps
// reading and queueing while the delayer's goroutine writes what is due.
type delayer struct {
	c   *copier
	a   *rules.Action // the delay rule's: Latency and Jitter
	rnd *rand.Rand    // nil: no jitter

	mu   sync.Mutex
	q    []heldFrame
	last time.Time // the latest due time queued, so that order is kept
	wake chan struct{}
}

// heldFrame is a whole frame waiting for its time, or the end of the
// source's connection (a FIN) behind the frames it sent before it.
type heldFrame struct {
	due   time.Time
	h     ws.Header
	p     []byte
	close *closeInfo // non-nil for a close frame
	eof   bool       // not a frame: the source's FIN, to mirror in its turn
}

// startDelay makes every frame in dir wait latency (plus jitter) from now
// on. A direction already delayed keeps its first delay.
func (s *session) startDelay(dir rules.Direction, a *rules.Action, rnd *rand.Rand) {
	for _, c := range s.copiers {
		if c == nil || dir&sideDir(c.src.side) == 0 { // none if it ended on its loop
			continue
		}
		// Each direction draws its jitter from its own source, seeded
		// from the rule's, so the two delayers share nothing.
		var own *rand.Rand
		if rnd != nil {
			own = rand.New(rand.NewPCG(rnd.Uint64(), rnd.Uint64()))
		}
		d := &delayer{c: c, a: a, rnd: own, wake: make(chan struct{}, 1)}
		if c.delay.CompareAndSwap(nil, d) {
			go d.run() // goroutine "delay <side>": ends with the session
		}
	}
}

// hold reads the frame whose header is h and queues it.
func (d *delayer) hold(h ws.Header) (closing *closeInfo, err error) {
	// The buffer grows as the payload arrives: a length is only a claim.
	p, err := io.ReadAll(io.LimitReader(d.c.src.br, h.Length))
	if err == nil && int64(len(p)) < h.Length {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return nil, err
	}
	f := heldFrame{h: h, p: p}
	if h.OpCode == ws.OpClose {
		info := parseClose(h, p)
		f.close = &info
	}
	wait := d.a.Latency
	if d.rnd != nil {
		// JitterFrom draws up to the largest jitter the rules accept.
		wait += d.a.JitterFrom(d.rnd)
		if wait < d.a.Latency {
			wait = math.MaxInt64 // the sum overflowed
		}
	}
	f.due = time.Now().Add(wait)
	d.mu.Lock()
	if f.due.Before(d.last) {
		f.due = d.last
	}
	d.last = f.due
	d.q = append(d.q, f)
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
	return f.close, nil
}

// endAfterQueued queues the source's FIN behind the frames still held, so
// that it does not overtake them; it reports false when none are held and
// the FIN can be mirrored at once.
func (d *delayer) endAfterQueued() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.q) == 0 {
		return false
	}
	d.q = append(d.q, heldFrame{due: d.last, eof: true})
	select {
	case d.wake <- struct{}{}:
	default:
	}
	return true
}

// run writes queued frames when they are due, until the session ends.
func (d *delayer) run() {
	s := d.c.s
	for {
		d.mu.Lock()
		if len(d.q) == 0 {
			d.mu.Unlock()
			select {
			case <-d.wake:
				continue
			case <-s.done:
				return
			}
		}
		f := d.q[0]
		d.mu.Unlock()
		if wait := time.Until(f.due); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-s.done:
				t.Stop()
				return
			}
		}
		d.mu.Lock()
		d.q = d.q[1:]
		d.mu.Unlock()
		if s.closing.Load() {
			return // nothing follows the proxy's own close frame
		}
		if f.eof {
			d.c.dst.closeWrite()
			s.maybeFinish()
			s.arm(closeGrace)
			continue
		}
		var err error
		if f.close != nil {
			err = d.c.deliverClose(f.h, f.p, *f.close)
		} else {
			// Counting rules count a delayed message when it is
			// delivered.
			claimed := s.claimCounted(d.c.src.side, f.h)
			err = d.c.writeWhole(f.h, f.p)
			s.fireCounted(claimed)
		}
		if err != nil {
			s.arm(closeGrace)
			return
		}
	}
}
