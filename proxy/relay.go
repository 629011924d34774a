package proxy

import (
	"bufio"
	"errors"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"go.uber.org/zap"
)

// copier relays the frames of one direction, src to dst.
type copier struct {
	s        *session
	src, dst *peer
	hdr      [ws.MaxHeaderSize]byte // read side
	whdr     [ws.MaxHeaderSize]byte // write side, under dst.wmu
	ctl      [ws.MaxControlFramePayloadSize]byte
	in       inspector               // on_message rules
	delay    atomic.Pointer[delayer] // a delay rule fired for this direction
	state    atomic.Int32            // copierParked or copierRunning
	rem      int64                   // payload bytes of a frame a loop began relaying; the copier's once it runs
	out      []byte                  // bytes a loop read and dst did not take yet, written first
	outClose bool                    // out ends with src's close frame
	skip     int64                   // payload bytes of a frame a loop was draining, dropped first

	// idle is the poller's sweep count when the copier began to wait for
	// its source at a frame boundary; 0 while it is not waiting, and
	// idleInterrupted once a sweep has set a read deadline in the past to
	// end the wait (see poller.sweep). imu keeps the sweep's setting of
	// that deadline before the copier's clearing of it.
	idle atomic.Int64
	imu  sync.Mutex
}

// idleInterrupted marks a copier whose idle wait a sweep has ended.
const idleInterrupted = -1

// A copier's states: parked copiers have no goroutine; the poller or the
// session's end starts them.
const (
	copierParked int32 = iota + 1
	copierRunning
)

// parkAfter is how long a started copier waits at a frame boundary, at
// least, before it parks with the poller and its goroutine ends, so that a
// session that falls idle costs no goroutine again. The poller sweeps the
// running copiers every sweepEvery and parks those that have waited since
// two sweeps before: between parkAfter and parkAfter+sweepEvery.
const (
	parkAfter  = time.Second
	sweepEvery = parkAfter / 2
)

// errParked ends a copier's goroutine, not the copier: it is parked.
var errParked = errors.New("parked")

// park hands the copier to the poller when its source has been quiet for
// parkAfter; it reports whether the copier's goroutine must now return.
func (c *copier) park() bool {
	pl := c.s.p.poller
	if pl == nil || c.src.fd < 0 || c.waitIdle(pl) {
		return false
	}
	c.src.keepAlive() // quiet long enough for it to matter
	if !c.state.CompareAndSwap(copierRunning, copierParked) {
		return false
	}
	if pl.park(c) {
		pl.parkedAfterRun()
		return true // from here on another goroutine may run c
	}
	return !c.state.CompareAndSwap(copierParked, copierRunning)
}

// waitIdle waits for the source to have bytes, holding no buffer
// meanwhile, until a sweep of pl finds the copier has waited long enough;
// it reports false then. The wait sets no deadline of its own: a busy
// copier costs the poller nothing but two atomic stores per wait.
func (c *copier) waitIdle(pl *poller) bool {
	fr := c.src.br
	if fr.raw == nil || fr.r != fr.w || fr.err != nil {
		return true
	}
	c.idle.Store(max(pl.sweepCount(), 1))
	err := fr.fill()
	if c.idle.Swap(0) == idleInterrupted {
		c.imu.Lock() // the sweep has set its deadline once this is held
		fr.conn.SetReadDeadline(time.Time{})
		c.imu.Unlock()
	}
	return !errors.Is(err, os.ErrDeadlineExceeded) || fr.err != nil
}

// interruptIdle ends the copier's idle wait if it has lasted since before
// sweep number old, by a read deadline in the past; the copier then parks
// (or, if bytes came meanwhile, clears the deadline and goes on).
func (c *copier) interruptIdle(old int64) {
	if since := c.idle.Load(); since <= 0 || since > old {
		return
	}
	c.imu.Lock()
	defer c.imu.Unlock()
	if since := c.idle.Load(); since > 0 && since <= old && c.idle.CompareAndSwap(since, idleInterrupted) {
		c.src.conn.SetReadDeadline(aLongTimeAgo)
	}
}

// aLongTimeAgo is a deadline that has passed.
var aLongTimeAgo = time.Unix(1, 0)

// wake starts a parked copier's goroutine.
func (c *copier) wake() {
	if c.state.CompareAndSwap(copierParked, copierRunning) {
		go c.run() // copier "client->upstream" or "upstream->client"
	}
}

// run relays frames from src to dst until src ends or the session is
// closed. It is the body of a copier goroutine.
func (c *copier) run() {
	err := c.loop()
	if err == errParked {
		return // the copier lives on, parked
	}
	c.src.gone.Store(true)
	c.ended(err)
	c.s.copierDone()
}

func (c *copier) loop() error {
	s, src := c.s, c.src
	debug := s.p.log.Core().Enabled(zap.DebugLevel)
	if c.skip > 0 {
		// The session left its loop in the middle of a frame it drained.
		skip := c.skip
		c.skip = 0
		if _, err := src.br.Discard(int(min(skip, 1<<30))); err != nil {
			return err
		}
	}
	if c.rem > 0 || len(c.out) > 0 {
		// The session left its loop in the middle of a frame, or with
		// bytes dst had not taken.
		if err := c.relayRest(); err != nil {
			return err
		}
	}
	for {
		if c.park() {
			return errParked
		}
		h, err := ws.ReadHeaderBuffer(src.br, c.hdr[:])
		if err != nil {
			return err
		}
		if debug {
			s.log(zap.DebugLevel, "frame", zap.Stringer("from", src.side), zap.Uint8("opcode", uint8(h.OpCode)),
				zap.Bool("fin", h.Fin), zap.Uint8("rsv", h.Rsv), zap.Int64("length", h.Length))
		}
		if s.closing.Load() || src.sentClose.Load() {
			// The proxy closed the session, or src already said its last
			// word: only its close frame still matters, hung or not (the
			// answer to the proxy's close frame ends the session).
			if err := c.drain(h); err != nil {
				return err
			}
			continue
		}
		if s.isHung(src.side) {
			// Not a frame more is relayed, pings and pongs included. The
			// frames are read and dropped, so that the peer going away is
			// still seen and mirrored.
			if _, err := src.br.Discard(int(min(h.Length, 1<<30))); err != nil {
				return err
			}
			continue
		}
		if v := c.check(h); v != nil {
			code := closeProtocolError
			if errors.Is(v, errTooBig) {
				code = closeTooBig
			}
			s.fail(src, code, v.Error())
			if _, err := src.br.Discard(int(min(h.Length, 1<<30))); err != nil {
				return err
			}
			continue
		}
		src.frames.Add(1)
		src.bytes.Add(uint64(h.Length))
		if h.Fin && !h.OpCode.IsControl() {
			src.messages.Add(1)
		}
		if d := c.delay.Load(); d != nil {
			// A message the inspector was holding when the delay began
			// goes first, as it is; a delayed direction is not inspected.
			if err := c.release(); err != nil {
				return err
			}
			c.in.holding = false
			closing, err := d.hold(h)
			if err != nil {
				return err
			}
			if closing != nil {
				src.sentClose.Store(true)
			}
			continue
		}
		if h.OpCode == ws.OpClose {
			if err := c.release(); err != nil {
				return err
			}
			if err := c.relayClose(h); err != nil {
				return err
			}
			continue
		}
		if !h.OpCode.IsControl() && (c.in.holding || c.wantsInspect(h)) {
			if err := c.hold(h); err != nil {
				return err
			}
			continue
		}
		claimed := s.claimCounted(src.side, h)
		err = c.relayFrame(h)
		s.fireCounted(claimed)
		if err != nil {
			return err
		}
	}
}

// relayFrame writes h to dst and streams its payload from src. Frames are
// batched: the write buffer is flushed only when src has nothing more
// buffered, so header and payload, and a burst of small frames, leave in
// one write.
func (c *copier) relayFrame(h ws.Header) error {
	dst := c.dst
	dst.wmu.Lock()
	defer dst.unlock()
	bw := dst.writer()
	if bw.Available() < ws.MaxHeaderSize {
		if err := bw.Flush(); err != nil {
			return &writeError{err}
		}
	}
	if err := ws.WriteHeaderBuffer(bw, h, bw.AvailableBuffer()); err != nil {
		return &writeError{err}
	}
	return c.relayPayloadLocked(bw, h.Length)
}

// relayRest writes what a loop read from src and dst had not taken when
// the session left the loop, and streams the rest of a frame whose header
// and first bytes the loop relayed. dst.wmu is held already: the loop took
// it for the copier as the session left (laneSession.leave), so that
// nothing was written to dst in between.
func (c *copier) relayRest() error {
	dst := c.dst
	out, closed, rem := c.out, c.outClose, c.rem
	c.out, c.outClose, c.rem = nil, false, 0
	bw := dst.writer()
	_, err := bw.Write(out)
	if !closed {
		defer dst.unlock()
		if err != nil {
			return &writeError{err}
		}
		return c.relayPayloadLocked(bw, rem)
	}
	// out ends with src's close frame: once it is written, the close
	// handshake moves on as deliverClose moves it.
	if ferr := dst.flush(); err == nil {
		err = ferr
	}
	var code ws.StatusCode
	if info := c.src.closeInfo.Load(); info != nil {
		code = info.code // the loop read it
	}
	return c.closeDelivered(err, code)
}

// relayPayloadLocked streams rem payload bytes from src to bw, dst's batch
// writer; dst.wmu is held.
func (c *copier) relayPayloadLocked(bw *bufio.Writer, rem int64) error {
	src, dst := c.src, c.dst
	for rem > 0 {
		if bw.Available() == 0 || src.br.Buffered() == 0 {
			// Pass on what is here before waiting for more.
			if err := bw.Flush(); err != nil {
				return &writeError{err}
			}
		}
		buf := bw.AvailableBuffer()
		buf = buf[:min(int64(cap(buf)), rem)]
		n, err := src.br.Read(buf)
		bw.Write(buf[:n])
		rem -= int64(n)
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			dst.flush()
			return err
		}
	}
	if !headerBuffered(src.br) {
		// The next read may wait: pass on what is here first.
		if err := dst.flush(); err != nil {
			return &writeError{err}
		}
	}
	return nil
}

// headerBuffered reports whether br holds a whole frame header (RFC 6455
// section 5.2), so that reading it will not wait for the network.
func headerBuffered(br *frameReader) bool {
	n := br.Buffered()
	if n < 2 {
		return false
	}
	return n >= headerSize(br.buffered()[1])
}

// headerSize returns the size of a frame header whose second byte is b1
// (RFC 6455 section 5.2): the extended length and the mask key it says
// follow.
func headerSize(b1 byte) int {
	size := 2
	switch b1 & 0x7f {
	case 126:
		size += 2
	case 127:
		size += 8
	}
	if b1&0x80 != 0 {
		size += 4
	}
	return size
}

// relayClose passes a close frame on unchanged, and remembers its code and
// reason for the session's log.
func (c *copier) relayClose(h ws.Header) error {
	p := c.ctl[:h.Length]
	if _, err := io.ReadFull(c.src.br, p); err != nil {
		return err
	}
	return c.deliverClose(h, p, parseClose(h, p))
}

// deliverClose writes a close frame from src to dst and notes that the
// close handshake has moved on.
func (c *copier) deliverClose(h ws.Header, p []byte, info closeInfo) error {
	src, dst := c.src, c.dst
	src.closeInfo.Store(&info)
	// Who closed first is recorded before the frame goes on, so that a
	// quick answer cannot be taken for it.
	c.s.setEnd(src.side.String(), "close frame", info.code, info.reason)

	dst.wmu.Lock()
	err := c.writeWholeLocked(h, p)
	return c.closeDelivered(err, info.code)
}

// closeDelivered moves the close handshake on once src's close frame has
// been written to dst (err: how the write went); dst.wmu is held, and
// released here.
func (c *copier) closeDelivered(err error, code ws.StatusCode) error {
	src, dst := c.src, c.dst
	if !dst.gotClose.Swap(true) {
		dst.pending.Store(nil)
	}
	dst.wmu.Unlock()

	src.sentClose.Store(true)
	c.s.log(zap.DebugLevel, "close relayed", zap.Stringer("from", src.side), zap.Int("code", int(code)))
	if dst.sentClose.Load() {
		c.s.maybeFinish()
	} else {
		c.s.arm(relayedCloseTimeout)
	}
	if err != nil {
		return &writeError{err}
	}
	return nil
}

// writeWhole writes a frame held in memory to dst.
func (c *copier) writeWhole(h ws.Header, p []byte) error {
	c.dst.wmu.Lock()
	defer c.dst.unlock()
	return c.writeWholeLocked(h, p)
}

// writeWholeLocked writes and flushes a frame held in memory; dst.wmu must
// be held.
func (c *copier) writeWholeLocked(h ws.Header, p []byte) error {
	bw := c.dst.writer()
	err := ws.WriteHeaderBuffer(bw, h, c.whdr[:])
	if err == nil {
		_, err = bw.Write(p)
	}
	if ferr := c.dst.flush(); err == nil {
		err = ferr
	}
	return err
}

// drain reads a frame after the session is closing: the payload is
// discarded, and a close frame counts as src's answer.
func (c *copier) drain(h ws.Header) error {
	src := c.src
	if h.OpCode != ws.OpClose || h.Length > ws.MaxControlFramePayloadSize {
		_, err := src.br.Discard(int(min(h.Length, 1<<30)))
		return err
	}
	p := c.ctl[:h.Length]
	if _, err := io.ReadFull(src.br, p); err != nil {
		return err
	}
	if !src.sentClose.Swap(true) {
		info := parseClose(h, p)
		src.closeInfo.Store(&info)
	}
	c.s.maybeFinish()
	return nil
}

// parseClose reads the code and reason of a close frame's payload p, which
// it unmasks in place.
func parseClose(h ws.Header, p []byte) closeInfo {
	if h.Masked {
		ws.Cipher(p, h.Mask, 0)
	}
	if len(p) < 2 {
		return closeInfo{}
	}
	code, reason := ws.ParseCloseFrameData(p)
	if h.Masked {
		ws.Cipher(p, h.Mask, 0) // the frame is relayed as it came
	}
	return closeInfo{code: code, reason: reason}
}

// writeError marks a failure to write to the destination, as opposed to
// reading from the source.
type writeError struct{ err error }

func (e *writeError) Error() string { return "write: " + e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

// ended mirrors how src's connection ended onto dst.
func (c *copier) ended(err error) {
	s, src, dst := c.s, c.src, c.dst
	if s.finished.Load() {
		return // the proxy closed the connections itself
	}
	if src.killed.Load() {
		s.maybeFinish() // a reset or drop rule ended src on purpose
		return
	}
	if s.closing.Load() {
		// The proxy is closing the session itself: dst gets (or got) the
		// proxy's own close frame, which a mirrored FIN or RST must not
		// overtake. The close handshake, or closeGrace, ends dst.
		s.maybeFinish()
		return
	}
	var we *writeError
	switch {
	case errors.As(err, &we):
		// dst is gone; its own copier sees how and mirrors it onto src.
		s.arm(closeGrace)
	case isReset(err):
		s.setEnd(src.side.String(), "tcp reset", 0, "")
		dst.reset()
		s.abort()
	case isEOF(err):
		if !src.sentClose.Load() {
			s.setEnd(src.side.String(), "tcp closed without close frame", 0, "")
		}
		if d := c.delay.Load(); d != nil && d.endAfterQueued() {
			return // the delayer mirrors the FIN after the frames it holds
		}
		dst.closeWrite()
		s.maybeFinish()
		s.arm(closeGrace)
	default:
		s.setEnd(src.side.String(), "read failed: "+err.Error(), 0, "")
		s.abort()
	}
}
