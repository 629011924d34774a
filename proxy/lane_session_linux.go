//go:build linux

package proxy

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"github.com/gobwas/ws"
	"go.uber.org/zap"

	"github.com/wschaos/wschaos/internal/evloop"
	"github.com/wschaos/wschaos/rules"
)

// laneSession is a session its loop relays. Only the loop touches it.
type laneSession struct {
	ll       *laneLoop
	s        *session
	caddr    net.Addr
	fds      [2]int // client, upstream
	sides    [2]laneSide
	dirs     [2]laneDir // client->upstream, upstream->client
	timer    *evloop.Timer
	deadline time.Time
	leaving  bool
	waiters  []chan struct{}
	closed   bool

	// upstreamDue is set while a fault its timer carried out on the
	// client waits to be carried out on the upstream (faultDue).
	upstreamDue bool

	// The after rules' timers, run by the loop, and the rules that fired
	// and wait for the session to leave its loop.
	afters []laneAfter
	firing []*sessionRule

	// The keep-alive sweep's: frames seen at the last sweep, sweeps since
	// they changed, and whether keep-alive is on.
	seen      uint64
	quiet     int
	keptAlive bool
}

// laneAfter is an after rule's timer in a session on a loop.
type laneAfter struct {
	sr    *sessionRule
	timer *evloop.Timer
}

// sweepEvery is how often a loop looks for sessions fallen quiet; one
// quiet for two sweeps in a row (1 to 1.5 s, as a parked copier) gets TCP
// keep-alive on both connections, which a busy or short one is spared.
const laneSweepEvery = sweepEvery

// keepAliveBatch is how many sessions one turn of keepAlivePart turns
// keep-alive on for: eight setsockopt calls each, about a microsecond
// apiece here. The loop relays nothing and runs no other timer meanwhile,
// and a sweep finds every session opened in the same half second quiet
// at once: a thousand opened together held their loop for 6 to 8 ms in
// one go, making the after rules due then fire that much late. In turns
// of 32, the loop looks at its sockets and its timers between turns.
const keepAliveBatch = 32

// sweep turns keep-alive on for the loop's sessions that have fallen
// quiet, in turns (keepAlivePart), and looks again later while a session
// has it off. A session never has it turned off again: once every one
// has it, sweeping stops, or a timer due every half second would keep an
// idle loop out of its idle wait; a new session starts it again
// (armSweep).
func (ll *laneLoop) sweep() {
	ll.sweeping = nil
	waiting := false
	for ls := range ll.sess {
		if ls.keptAlive {
			continue
		}
		if ls.endsWithin(evloop.KeepAliveIdle) {
			waiting = true // in case the rule does not end it after all
			continue
		}
		n := ls.s.client.frames.Load() + ls.s.upstream.frames.Load()
		if n != ls.seen {
			ls.seen, ls.quiet = n, 0
			waiting = true
			continue
		}
		if ls.quiet++; ls.quiet < 2 {
			waiting = true
			continue
		}
		ls.keptAlive = true
		ll.toKeep = append(ll.toKeep, ls)
	}
	if ll.keeping == nil {
		ll.keepAlivePart()
	}
	if waiting {
		ll.armSweep()
	}
}

// endsWithin reports whether the timer of an after rule that ends the
// session (a close, reset or drop) is waiting and due within d. The sweep
// spares such a session keep-alive when d is the first probe's idle time:
// the eight setsockopt calls would buy nothing, and a burst of sessions
// opened together, which a sweep finds quiet together, would otherwise
// have them made while their rules come due (with after = "1s", in the
// second in which they do).
func (ls *laneSession) endsWithin(d time.Duration) bool {
	for _, a := range ls.afters {
		if until, ok := a.timer.Until(); ok && until > 0 && until < d && ends(a.sr.lr.Action.Kind) {
			return true
		}
	}
	return false
}

// keepAlivePart turns keep-alive on for the next keepAliveBatch sessions
// of toKeep still on the loop, and leaves the rest to a turn due at once,
// which the loop runs after it has waited for its sockets again.
func (ll *laneLoop) keepAlivePart() {
	ll.keeping = nil
	done := 0
	for len(ll.toKeep) > 0 && done < keepAliveBatch {
		ls := ll.toKeep[0]
		ll.toKeep[0] = nil
		ll.toKeep = ll.toKeep[1:]
		if _, on := ll.sess[ls]; !on {
			continue // ended, or left for the copiers, since the sweep
		}
		for _, fd := range ls.fds {
			if fd >= 0 {
				evloop.KeepAlive(fd)
			}
		}
		done++
	}
	ll.mostKept = max(ll.mostKept, done)
	if len(ll.toKeep) > 0 {
		ll.keeping = ll.l.After(0, ll.keepAlivePart)
		return
	}
	ll.toKeep = nil
}

// armSweep schedules the next sweep, if the loop has sessions and none is
// scheduled.
func (ll *laneLoop) armSweep() {
	if ll.sweeping == nil && len(ll.sess) > 0 {
		ll.sweeping = ll.l.After(laneSweepEvery, ll.sweep)
	}
}

// laneDir is one direction of a lane session.
type laneDir struct {
	ls       *laneSession
	from, to *peer  // the peers src and dst are the sockets of
	src, dst int    // indexes into fds
	carry    []byte // read, not yet relayed: a partial header or close frame, or all from a hand-off's boundary
	rem      int64  // payload bytes of the frame under way still to relay
	out      []byte // relayed bytes dst's socket did not take yet
	more     bool   // src may hold bytes not read yet
	ended    bool   // src's read side ended
	closeOut bool   // out ends with src's close frame: closeRelayed once it is written
	ownClose bool   // out is a close frame of the proxy's own: dst got it once it is written
	stuck    bool   // src sent something only the copiers handle: leave the lane
}

// laneSide is a socket's handler while its session is on the loop.
type laneSide struct {
	ls *laneSession
	i  int
}

func (h *laneSide) Stopped() { h.ls.abort() }

func (h *laneSide) Ready(events uint32) {
	ls := h.ls
	if ls.closed {
		return
	}
	if events&syscall.EPOLLOUT != 0 {
		// The direction writing to this side may go on.
		d := &ls.dirs[1-h.i]
		if d.out != nil && d.flush() && d.more {
			d.relay(false) // stopped before it had read all there was
		}
	}
	if events&(syscall.EPOLLIN|syscall.EPOLLRDHUP|syscall.EPOLLHUP|syscall.EPOLLERR) != 0 && !ls.closed {
		d := &ls.dirs[h.i]
		d.more = true
		d.relay(events&(syscall.EPOLLRDHUP|syscall.EPOLLHUP|syscall.EPOLLERR) == 0)
	}
	ls.check()
}

// newLaneSession registers the session and answers the client; nil if the
// client was refused instead.
func newLaneSession(c *laneConn, hs ws.Handshake, answer http.Header, upending []byte) *laneSession {
	ll, p := c.ll, c.ll.ls.p
	peers := &[2]peer{{side: sideClient, fd: c.fd}, {side: sideUpstream, fd: c.ufd}} // one allocation
	client, upstream := &peers[0], &peers[1]
	s := newSession(p, c.id, c.req, c.start, c.caddr, c.info, client, upstream, hs, true)
	ls := &laneSession{ll: ll, s: s, caddr: c.addr, fds: [2]int{c.fd, c.ufd}}
	s.lane.Store(ls)
	closeBoth := func() {
		ll.l.Forget(c.fd, c)
		ll.l.Forget(c.ufd, c.dialer)
		evloop.Close(c.fd)
		evloop.Close(c.ufd)
	}
	refused := func(status int, step string, why string) {
		p.emitRefused(c.id, c.caddr, c.req, status, step, why)
	}
	// A refused session never ran on the loop: nothing may have it leave.
	// It was listed, though: a goroutine that found it there must find it
	// ended, as abort leaves a session.
	gone := func() {
		ls.closed = true
		ls.endOnLoop()
		s.lane.Store(nil)
	}
	if !p.addSession(s, nil) {
		gone()
		p.dropSession(s)
		var b bytes.Buffer
		writeStatus(&b, http.StatusServiceUnavailable, "shutting down")
		evloop.Write(c.fd, b.Bytes())
		closeBoth()
		refused(http.StatusServiceUnavailable, RefusedClient, "shutting down")
		return nil
	}
	// The client's 101 is the one gobwas/ws's HTTPUpgrader writes on
	// goroutines; a request that upgrader refuses is refused here, with
	// the answer it writes.
	if err := upgradeRefusal(c.req); err != nil {
		p.log.Info("client handshake failed", zap.Uint64("session", c.id), zap.Error(err))
		gone()
		p.dropSession(s)
		evloop.Write(c.fd, upgraderRefusal(c.req, answer))
		closeBoth()
		refused(0, RefusedClient, "answer client: "+err.Error())
		return nil
	}
	// The rules are attached before the 101, as on goroutines. A session
	// stays on its loop under any rule but those that act in the copiers
	// (needsCopiers); one that fires has it leave its loop first. A reload
	// from now on finds the session listed, and attaches it itself.
	timed := false
	if len(p.engine.gen.Load().rules) > 0 {
		if s.attachRules(); s.listNeedsCopiers() {
			// openOnGoroutines attaches it again, keeping each rule's
			// state.
			c.openOnGoroutines(s, ls, appendUpgradeAnswer(nil, c.req, answer), upending)
			return nil
		}
		timed = s.timesAfter()
	}
	for i := range ls.dirs {
		d := &ls.dirs[i]
		d.ls, d.src, d.dst = ls, i, 1-i
		d.from, d.to = &peers[i], &peers[1-i]
		ls.sides[i] = laneSide{ls: ls, i: i}
	}
	// A socket the handshake drained has nothing to read until its next
	// event; bytes read past a head are relayed first, with a read after.
	ls.dirs[0].more = !c.cdrained || len(c.head) > 0
	ls.dirs[1].more = !c.udrained || len(upending) > 0
	ll.l.Rebind(c.fd, &ls.sides[0])
	ll.l.Rebind(c.ufd, &ls.sides[1])
	ll.sess[ls] = struct{}{}
	ll.armSweep()
	if len(c.head) > 0 {
		ls.dirs[0].carry = append([]byte(nil), c.head...)
	}
	if len(upending) > 0 {
		ls.dirs[1].carry = append([]byte(nil), upending...)
	}
	// The 101 goes out first; a client that takes less of it than that
	// gets the rest before any frame. It is made in the loop's buffer,
	// unused until run reads, and kept in its own if it is not all taken.
	// With nothing behind it to relay yet, it waits for the batch's
	// other writes (later), unless an after rule's time counts from it
	// (timesAfter).
	d := &ls.dirs[1]
	if b := appendUpgradeAnswer(ll.buf[:0], c.req, answer); d.more || timed || !ll.later(d, b) {
		d.out = b
		if !d.flush() {
			d.out = append([]byte(nil), d.out...)
		}
	}
	ls.markOpened()
	s.announce()
	return ls
}

// markOpened is session.markOpened for a session on a loop: the loop runs
// its after rules' timers, as precisely as its epoll timeout (a timer of
// the runtime's made here would wait on the loop's P). A reload arms the
// timers of rules new to an open session on the runtime's timers.
func (ls *laneSession) markOpened() {
	s := ls.s
	s.mu.Lock()
	s.opened = true
	s.openRules(time.Now())
	list := *s.rules.Load()
	s.mu.Unlock()
	for _, sr := range list {
		if d, ok := s.afterDelay(sr); ok {
			ls.afters = append(ls.afters, laneAfter{sr: sr, timer: ls.ll.l.After(d, func() { ls.afterDue(sr) })})
		}
	}
}

// afterDue fires an after rule's timer, unless a reload removed the rule.
// A close, reset or drop the loop carries out itself when nothing is
// under way in either direction (faultDue); for anything else the session
// leaves its loop, and the rule fires once it has (leave).
func (ls *laneSession) afterDue(sr *sessionRule) {
	s := ls.s
	if ls.closed || !containsRule(*s.rules.Load(), sr) {
		return
	}
	if ls.upstreamDue {
		// A fault of this session's, due with sr, waits for its
		// upstream: sr's turn comes after it.
		ls.ll.l.Then(func() { ls.afterDue(sr) })
		return
	}
	if f, ok := loopFault(sr.lr); ok && ls.idle() {
		if s.claimFiring(sr) {
			ls.ll.faultDue(ls, sr, f)
		}
		return
	}
	ls.firing = append(ls.firing, sr)
	ls.leaving = true
	ls.check()
}

// faultDue carries out f, fired by sr's timer, on ls: on its client now,
// and on its upstream once every timer due with sr's has run
// (upstreamsDue). After rules that come due together, as the sessions of
// a burst of handshakes do, are so carried out as a wave is: every client
// first, then every upstream, then the log lines. Done session by
// session, each client's close frame also waited for the upstream writes
// of the sessions before it: with 1,000 sessions closed 1 s after their
// 101 (go run ./bench -workloads faults -fault-every 0, ten alternating
// runs each), a burst's lateness grew by a median 9.4 µs a session, 3.4
// clients first, and the median lateness went from 0.50 to 0.27 ms. (The
// p99, 3.6 and 3.8 ms, is the scheduler's: see the README.)
func (ll *laneLoop) faultDue(ls *laneSession, sr *sessionRule, f laneFault) {
	if ll.dueLines == nil {
		ll.dueLines = &wave{}
		ll.l.Then(ll.upstreamsDue)
	}
	ls.s.noteFiring(sr, ll.dueLines)
	ls.faultClient(f)
	ls.upstreamDue = true
	ll.due = append(ll.due, laneDue{ls, f})
}

// laneDue is a fault a timer carried out on a session's client, to be
// carried out on its upstream.
type laneDue struct {
	ls *laneSession
	f  laneFault
}

// upstreamsDue carries out the faults of the timers just run on their
// upstreams, and writes their log lines.
func (ll *laneLoop) upstreamsDue() {
	ll.sendPending()
	due, lines := ll.due, ll.dueLines
	ll.due, ll.dueLines = nil, nil
	for _, d := range due {
		d.ls.upstreamDue = false
		d.ls.faultUpstream(d.f)
	}
	for _, line := range lines.later {
		line()
	}
}

// idle reports whether a close frame of the proxy's own can go to either
// side at once: no frame is half relayed, nothing waits to be written, and
// the session is not leaving its loop.
func (ls *laneSession) idle() bool {
	for i := range ls.dirs {
		d := &ls.dirs[i]
		if d.rem > 0 || d.out != nil || d.stuck || d.ended {
			return false
		}
	}
	return !ls.leaving
}

// laneFault is a fault the loop carries out on a session idle on it: a
// close, a reset or a drop. It ends the session in three steps, as a wave
// does on goroutines: begin, then each side (the client first), then
// maybeFinish.
type laneFault struct {
	kind   rules.ActionKind
	to     rules.Target
	code   ws.StatusCode // Close
	reason string        // Close
	why    string        // "rule NAME"
}

// loopFault returns the fault lr's action is for a loop, and whether the
// loop can carry it out.
func loopFault(lr *liveRule) (laneFault, bool) {
	a := &lr.Action
	return laneFault{kind: a.Kind, to: a.To, code: ws.StatusCode(a.Code), reason: a.Reason, why: "rule " + lr.Name}, ends(a.Kind)
}

// begin records how the fault ends the session and arms closeGrace.
func (ls *laneSession) begin(f laneFault) {
	if f.kind == rules.Close {
		ls.s.setEnd("proxy", f.why, f.code, f.reason)
	} else {
		ls.s.setEnd("proxy", f.why+": "+killHow(f.kind == rules.Reset), 0, "")
	}
	ls.arm(closeGrace)
}

// carryOut does the fault to the peer on side: the close frame its to
// names, or 1001; for a reset or a drop to that side, an RST or a FIN.
// From then on the loop drops what the peers send up to their close
// frames (drain); a FIN or RST from one is not passed on (readEnded).
func (ls *laneSession) carryOut(f laneFault, side side) {
	if f.kind == rules.Close || !targeted(f.to, side) {
		ls.sendClose(side, f.to, f.code, f.reason)
		return
	}
	i, p := 0, ls.s.client
	if side == sideUpstream {
		i, p = 1, ls.s.upstream
	}
	p.killed.Store(true)
	if f.kind == rules.Drop {
		evloop.CloseWrite(ls.fds[i])
		return
	}
	// Nothing more is read from it, or written to it.
	p.gone.Store(true)
	ls.dirs[i].ended = true
	ls.ll.l.Forget(ls.fds[i], &ls.sides[i])
	evloop.Reset(ls.fds[i])
	ls.fds[i] = -1
}

// faultClient begins f and carries it out on the client: the first of a
// wave's two passes, which every fault on a loop is a part of (fireOnLoops,
// faultDue). A close frame is queued, not written: the caller writes the
// pass's frames together (sendPending) once it has queued them all.
func (ls *laneSession) faultClient(f laneFault) {
	ls.begin(f)
	ls.ll.batch = true
	ls.carryOut(f, sideClient)
	ls.ll.batch = false
}

// faultUpstream carries out f, begun by faultClient, on the upstream,
// unless the session has ended meanwhile: the wave's second pass. The
// session ends here if nothing is left to wait for.
func (ls *laneSession) faultUpstream(f laneFault) {
	if !ls.closed {
		ls.carryOut(f, sideUpstream)
		ls.maybeFinish()
	}
}

// sendClose writes a close fault's frame to the peer on side: code and
// reason if to names it, 1001 otherwise.
func (ls *laneSession) sendClose(side side, to rules.Target, code ws.StatusCode, reason string) {
	p, d := ls.s.client, &ls.dirs[1] // the direction that writes to p
	if side == sideUpstream {
		p, d = ls.s.upstream, &ls.dirs[0]
	}
	if p.gotClose.Load() || p.gone.Load() {
		return
	}
	if !targeted(to, side) {
		code, reason = closeGoingAway, "going away"
	}
	d.out, d.ownClose = closeFrame(side, code, reason), true
	if ll := ls.ll; ll.batch {
		ll.queue(d, false)
		return
	}
	d.flush()
}

// later queues the write of b, relayed by d, for sendPending to make
// after the loop's batch of events, with the batch's other writes: it
// copies b to the loop's arena, which the next read may overwrite. False
// if the arena has no room left: d writes b itself.
func (ll *laneLoop) later(d *laneDir, b []byte) bool {
	a, ok := ll.stash(b)
	if ok {
		d.out = a
		ll.queue(d, true)
	}
	return ok
}

// stash copies b to the loop's arena, for sendPending to write; false if
// the arena has no room left, or sendPending is writing.
func (ll *laneLoop) stash(b []byte) ([]byte, bool) {
	if ll.sending || len(ll.arena)-ll.used < len(b) {
		return nil, false
	}
	a := ll.arena[ll.used : ll.used+len(b) : ll.used+len(b)]
	ll.used += copy(a, b)
	return a, true
}

// queue adds d, whose out is to be written, to the writes sendPending
// makes; inArena says that out is in the loop's arena.
func (ll *laneLoop) queue(d *laneDir, inArena bool) {
	ll.pending = append(ll.pending, d)
	ll.inArena = append(ll.inArena, inArena)
}

// sendPending makes, with one SendAll, the writes queued since it last
// ran: the close frames of a wave's first pass (faultClient), and what
// relay read in the batch of events just handled, the batch's 101s
// (later) and its upgrade requests (request). Each direction's flush,
// and each handshake's wrote, then takes its write into account; what a
// socket did not take is copied out of the arena to wait for its
// writability.
//
// Written together, the writes go in one syscall for each
// evloop.SendAllBatch of them, during which no peer woken by one can
// take the loop's CPU, and after the work that prepared them. For a
// tick over 8,000 sessions on two loops, the last client had its close
// frame a median 94 ms after the tick was due, against 134 ms written
// one by one; relaying 1 KiB echoes on 64 connections, the proxy spent
// a fifth less CPU per round trip (see "Writes in batches" in the
// README).
func (ll *laneLoop) sendPending() {
	if len(ll.pending)+len(ll.requesting) == 0 || ll.sending {
		return
	}
	ll.sending = true
	defer func() { ll.sending = false }()
	sends := ll.sends[:0]
	for _, d := range ll.pending {
		s := evloop.Send{Fd: -1}
		if !d.ls.closed { // the session may have ended since
			s = evloop.Send{Fd: d.ls.fds[d.dst], B: d.out, More: d.closeOut && d.endsHandshake()}
		}
		sends = append(sends, s)
	}
	for _, c := range ll.requesting {
		s := evloop.Send{Fd: -1}
		if !c.done {
			s = evloop.Send{Fd: c.ufd, B: c.requests}
		}
		sends = append(sends, s)
	}
	ll.l.SendAll(sends)
	for i, c := range ll.requesting {
		s := &sends[len(ll.pending)+i]
		c.queued = false
		if c.done {
			c.requests = nil
		} else {
			c.wrote(c.requests, s.N, s.Errno)
		}
		*s, ll.requesting[i] = evloop.Send{}, nil
	}
	for i, d := range ll.pending {
		if d.ls.closed {
			d.out, d.ownClose = nil, false
		} else {
			d.out = d.out[sends[i].N:]
			if !d.flush() && ll.inArena[i] {
				d.out = append([]byte(nil), d.out...)
			}
		}
		sends[i], ll.pending[i] = evloop.Send{}, nil
	}
	ll.used = 0
	if cap(sends) > evloop.SendAllBatch {
		// A tick's: not kept for the next.
		ll.sends, ll.pending, ll.inArena, ll.requesting = nil, nil, nil, nil
		return
	}
	ll.sends, ll.pending, ll.inArena, ll.requesting = sends[:0], ll.pending[:0], ll.inArena[:0], ll.requesting[:0]
}

// fireOnLoops fires lr, a close, reset or drop rule, on the sessions of
// ss that wait on their loops with nothing under way, as a wave does: the
// loops do to all their clients what the rule says first, then to their
// upstreams. It returns how many it fired on, and the sessions it left to
// the caller: those not on a loop, or not idle on one.
//
// The two passes are the wave's on every loop at once: a loop done with
// its clients waits for the other loops to be done with theirs before it
// writes to its upstreams, as the wave's workers do on goroutines. A loop
// that went on alone would take CPU from the loops still writing to
// clients, and wake the upstreams to answer meanwhile, when the wave is
// judged by its last client (8,000 sessions on two loops: the spread of
// the clients' close frames, 14 alternating runs each, median 154 ms
// without the wait, 123 ms with it). The wait is bounded: what a loop
// does in its first pass is write to sockets without blocking.
func fireOnLoops(ss []*session, lr *liveRule) (int, []*session) {
	f, ok := loopFault(lr)
	if !ok {
		return 0, ss
	}
	loops, rest := byLoop(ss)
	if len(loops) == 0 {
		return 0, rest
	}
	type result struct {
		fired int
		rest  []*session
	}
	results := make(chan result, len(loops))
	asked := 0
	var group *lanes
	for ll := range loops {
		group = ll.ls
		break
	}
	// clients counts the loops not yet done with their clients. The loops
	// queue the waves in one order (group.waves): two waves queued
	// crosswise would each hold a loop waiting for the other.
	var clients sync.WaitGroup
	clients.Add(len(loops))
	group.waves.Lock()
	for ll, list := range loops {
		if !ll.l.Submit(func() {
			var r result
			var ending []*laneSession
			w := &wave{}
			for _, ls := range list {
				s := ls.s
				if ls.closed || s.lane.Load() != ls || !ls.idle() {
					r.rest = append(r.rest, s)
					continue
				}
				if sr := s.ruleState(lr); sr != nil && s.claimFiring(sr) {
					s.noteFiring(sr, w)
					ls.faultClient(f)
					ending = append(ending, ls)
				}
			}
			ll.sendPending()
			clients.Done()
			clients.Wait()
			for _, ls := range ending {
				ls.faultUpstream(f)
			}
			for _, line := range w.later {
				line()
			}
			r.fired = len(ending)
			results <- r
		}) {
			clients.Done()
			continue // the loops have stopped: so have the sessions
		}
		asked++
	}
	group.waves.Unlock()
	fired := 0
	for range asked {
		r := <-results
		fired += r.fired
		rest = append(rest, r.rest...)
	}
	return fired, rest
}

// stopAfters stops the after rules' timers still waiting and returns
// their rules.
func (ls *laneSession) stopAfters() []*sessionRule {
	var waiting []*sessionRule
	for _, a := range ls.afters {
		if a.timer.Stop() {
			waiting = append(waiting, a.sr)
		}
	}
	ls.afters = nil
	return waiting
}

// run starts relaying what arrived with the handshakes.
func (ls *laneSession) run() {
	// Rules loaded before the session was listed were attached by
	// newLaneSession; a reload since finds it listed, and attaches it.
	for i := range ls.dirs {
		if !ls.closed {
			ls.dirs[i].relay(false)
		}
	}
	ls.check()
}

// relay reads src until it has nothing more or the loop must stop, and
// writes what it read to dst, in one write per read. A read that drained
// src (below) leaves its write to the end of the loop's batch of events
// (later), unless it ends with src's close frame.
//
// A read that did not fill the buffer is trusted to have drained the
// socket when trustShort says the event that woke the loop reported
// no hang-up (EPOLLRDHUP, EPOLLHUP, EPOLLERR), as nginx trusts it:
// bytes, a FIN or an RST that come after it raise a new edge-triggered
// event, and one that came with the bytes read was in that event. That
// spares a read returning EAGAIN per event.
func (d *laneDir) relay(trustShort bool) {
	ls := d.ls
	buf := ls.ll.buf
	for d.more && d.out == nil && !d.ended && !d.stuck && !ls.leaving && !ls.closed {
		k := copy(buf, d.carry)
		d.carry = d.carry[:0]
		n, errno := evloop.Read(ls.fds[d.src], buf[k:])
		switch {
		case errno == syscall.EAGAIN:
			d.more = false
			n = 0
		case errno != 0:
			d.carry = append(d.carry, buf[:k]...)
			d.readEnded(errno)
			return
		case n == 0:
			d.carry = append(d.carry, buf[:k]...)
			d.readEnded(0)
			return
		}
		if s := ls.s; s.closing.Load() {
			// The proxy closed the session: only the peers' close
			// frames still matter.
			used := d.drain(buf[:k+n])
			d.carry = append(d.carry, buf[used:k+n]...)
			if ls.closed {
				return
			}
			continue
		}
		stop, closed := d.walk(buf[:k+n])
		d.carry = append(d.carry, buf[stop:k+n]...)
		drained := errno == 0 && trustShort && n < len(buf)-k
		if stop > 0 && drained && !closed && ls.ll.later(d, buf[:stop]) {
			d.more = false
			return
		}
		if stop > 0 {
			d.out = buf[:stop]
			d.closeOut = closed
			if !d.flush() {
				// Keep what dst did not take; buf is the loop's.
				d.out = append([]byte(nil), d.out...)
			}
		}
		if errno == syscall.EAGAIN {
			return
		}
		if drained {
			d.more = false
			return
		}
	}
}

// walk finds the frames in b, checking each as the copiers do, and
// returns how much of b is relayed now; closed reports that it ends with
// src's close frame.
func (d *laneDir) walk(b []byte) (stop int, closed bool) {
	ls, s, src := d.ls, d.ls.s, d.from
	debug := s.p.log.Core().Enabled(zap.DebugLevel)
	pos := 0
	for pos < len(b) {
		if d.rem > 0 {
			pos = d.pass(b, pos)
			continue
		}
		if ls.leaving || src.sentClose.Load() {
			// Frames after src's close frame are the copiers' to drain.
			d.stuck = !ls.leaving
			return pos, false
		}
		h, size, ok, err := headerAt(b[pos:])
		if err != nil {
			d.stuck = true // the copiers end the session as they do
			return pos, false
		}
		if !ok {
			return pos, false
		}
		var counting []*sessionRule
		if !h.OpCode.IsControl() && s.isCounting(src.side) {
			counting = *s.rules.Load()
			if countFires(counting, src.side, h) {
				// The copiers relay this frame, count it and fire
				// the rule, as they would have on their own; it is
				// looked at before check, which keeps state.
				d.stuck = true
				return pos, false
			}
		}
		if s.checkFrame(src, h) != nil {
			d.stuck = true
			return pos, false
		}
		if counting != nil {
			countOnLoop(counting, src.side, h)
		}
		if h.OpCode == ws.OpClose {
			if int64(len(b)-pos-size) < h.Length {
				return pos, false
			}
			p := b[pos+size : pos+size+int(h.Length)]
			info := parseClose(h, p)
			src.frames.Add(1)
			src.bytes.Add(uint64(h.Length))
			src.closeInfo.Store(&info)
			// Who closed first is recorded before the frame goes on.
			s.setEnd(src.side.String(), "close frame", info.code, info.reason)
			return pos + size + int(h.Length), true
		}
		src.frames.Add(1)
		src.bytes.Add(uint64(h.Length))
		if h.Fin && !h.OpCode.IsControl() {
			src.messages.Add(1)
		}
		if debug {
			s.log(zap.DebugLevel, "frame", zap.Stringer("from", src.side), zap.Uint8("opcode", uint8(h.OpCode)),
				zap.Bool("fin", h.Fin), zap.Uint8("rsv", h.Rsv), zap.Int64("length", h.Length))
		}
		pos += size
		d.rem = h.Length
	}
	return pos, false
}

// pass returns where in b, from pos, the payload of the frame under way
// ends, and counts what it passes off d.rem.
func (d *laneDir) pass(b []byte, pos int) int {
	k := min(d.rem, int64(len(b)-pos))
	d.rem -= k
	return pos + int(k)
}

// drain reads the frames in b once the proxy has closed the session, as
// the copiers' drain does: nothing is relayed, and src's close frame moves
// the close handshake on. It returns how much of b it used; the rest is a
// partial header or close frame.
func (d *laneDir) drain(b []byte) int {
	src := d.from
	pos := 0
	for pos < len(b) {
		if d.rem > 0 {
			pos = d.pass(b, pos)
			continue
		}
		h, size, ok, err := headerAt(b[pos:])
		if err != nil {
			// Not a frame: the rest is dropped, and the close
			// handshake's timer ends the session.
			return len(b)
		}
		if !ok {
			return pos
		}
		if h.OpCode != ws.OpClose || h.Length > ws.MaxControlFramePayloadSize {
			pos += size
			d.rem = h.Length
			continue
		}
		if int64(len(b)-pos-size) < h.Length {
			return pos
		}
		p := b[pos+size : pos+size+int(h.Length)]
		pos += size + int(h.Length)
		if !src.sentClose.Swap(true) {
			info := parseClose(h, p)
			src.closeInfo.Store(&info)
		}
		d.ls.maybeFinish()
		if d.ls.closed {
			return pos
		}
	}
	return pos
}

// closeRelayed moves the close handshake on once src's close frame has
// been written (deliverClose, for the loop).
func (d *laneDir) closeRelayed() {
	ls := d.ls
	src, dst := d.from, d.to
	dst.gotClose.Store(true)
	src.sentClose.Store(true)
	ls.s.log(zap.DebugLevel, "close relayed", zap.Stringer("from", src.side))
	if dst.sentClose.Load() {
		ls.maybeFinish()
	} else {
		ls.arm(relayedCloseTimeout)
	}
}

// flush writes out to dst; it reports whether all of it went. A close
// frame at its end moves the close handshake on once it is written, or
// dst is gone, as deliverClose does after its write: not before, or the
// handshake could end, and the connections be closed, with the frame and
// what went before it still unwritten.
func (d *laneDir) flush() bool {
	ls := d.ls
	// The frame that completes the close handshake is held by the
	// kernel until the close right after it, which sends it with the
	// FIN: one segment. (A peer that sent bytes after its own close
	// frame, which RFC 6455 section 5.5.1 forbids, has them unread, and
	// the close answers with an RST instead, the frame unsent.)
	last := d.closeOut && d.endsHandshake()
	write := evloop.Write
	if last {
		write = evloop.WriteBeforeClose
	}
	for len(d.out) > 0 {
		n, errno := write(ls.fds[d.dst], d.out)
		if errno == syscall.EAGAIN {
			return false
		}
		if errno != 0 {
			// dst is gone; reading it tells how, and that is mirrored.
			ls.arm(closeGrace)
			break
		}
		d.out = d.out[n:]
	}
	d.out = nil
	if d.closeOut {
		d.closeOut = false
		d.closeRelayed()
		if last && !ls.closed && ls.fds[d.dst] >= 0 {
			// Not closed after all: the held bytes go now.
			evloop.Push(ls.fds[d.dst])
		}
	}
	if d.ownClose {
		d.ownClose = false
		d.to.gotClose.Store(true)
		d.ls.maybeFinish()
	}
	return true
}

// endsHandshake reports whether closeRelayed, once src's close frame is
// written, finds the close handshake done and closes both connections:
// dst has sent its close frame (else it arms a timer), which makes dst
// done, and src, which will have sent one, got dst's or is gone.
func (d *laneDir) endsHandshake() bool {
	return d.to.sentClose.Load() && (d.from.gone.Load() || d.from.gotClose.Load())
}

// readEnded mirrors how src's connection ended (copier.ended, for the
// loop): errno 0 is a FIN. relay reads src only once dst has taken all it
// relayed, so a FIN goes on at once.
func (d *laneDir) readEnded(errno syscall.Errno) {
	ls, s := d.ls, d.ls.s
	src := d.from
	d.ended = true
	src.gone.Store(true)
	switch {
	case s.closing.Load():
		// The proxy is closing the session itself (fault): dst gets
		// (or got) its close frame, which a mirrored FIN or RST must not
		// overtake, as in copier.ended. The close handshake, or
		// closeGrace, ends dst.
		ls.maybeFinish()
	case errno == 0:
		if !src.sentClose.Load() {
			s.setEnd(src.side.String(), "tcp closed without close frame", 0, "")
		}
		evloop.CloseWrite(ls.fds[d.dst])
		ls.maybeFinish()
		ls.arm(closeGrace)
	case errno == syscall.ECONNRESET:
		s.setEnd(src.side.String(), "tcp reset", 0, "")
		ls.ll.l.Forget(ls.fds[d.dst], &ls.sides[d.dst])
		evloop.Reset(ls.fds[d.dst])
		ls.fds[d.dst] = -1
		ls.abort()
	default:
		s.setEnd(src.side.String(), "read failed: "+errno.Error(), 0, "")
		ls.abort()
	}
	if !ls.closed && ls.dirs[0].ended && ls.dirs[1].ended {
		ls.abort()
	}
}

// maybeFinish closes both connections once each side has both sent and
// received a close frame, or is gone.
func (ls *laneSession) maybeFinish() {
	if ls.s.closeHandshakeDone() {
		ls.abort()
	}
}

// arm ends the session after d unless it has ended by then; the first
// deadline armed stands.
func (ls *laneSession) arm(d time.Duration) {
	if ls.timer != nil || ls.closed {
		return
	}
	ls.deadline = time.Now().Add(d)
	ls.timer = ls.ll.l.After(d, func() {
		ls.timer = nil
		ls.s.setEnd("proxy", "close handshake timed out", 0, "")
		ls.abort()
	})
}

// check leaves the lane when the session must.
func (ls *laneSession) check() {
	if ls.closed {
		return
	}
	if ls.dirs[0].stuck || ls.dirs[1].stuck {
		ls.leaving = true
	}
	if ls.leaving {
		// Bytes dst has not taken yet go with the session: waiting for
		// them could take forever, a peer that does not read holding up
		// whatever needs the copiers (Shutdown, SetRules, Inject).
		ls.leave()
	}
}

// abort closes both connections and ends the session (finish, for the
// loop).
func (ls *laneSession) abort() {
	if ls.closed {
		return
	}
	ls.closed = true
	s := ls.s
	ls.endOnLoop()
	if ls.timer != nil {
		ls.timer.Stop()
	}
	ls.stopAfters()
	for i, fd := range ls.fds {
		if fd >= 0 {
			ls.ll.l.Forget(fd, &ls.sides[i])
			evloop.Close(fd)
		}
	}
	delete(ls.ll.sess, ls)
	s.recordEnd(s.stopTimers())
	s.lane.Store(nil)
	ls.release()
}

// endOnLoop marks the session ended by its loop, whose connections are
// gone: whatever a goroutine still does to it (Shutdown's close frames,
// its abort) finds it finished and nothing to write to.
func (ls *laneSession) endOnLoop() {
	s := ls.s
	s.client.gone.Store(true)
	s.upstream.gone.Store(true)
	s.finished.Store(true)
	close(s.done)
}

// release lets the goroutines waiting for the session to leave go on.
func (ls *laneSession) release() {
	if len(ls.waiters) == 0 {
		return
	}
	ws := ls.waiters
	ls.waiters = nil
	ls.ll.ls.q.Go(func() {
		for _, w := range ws {
			close(w)
		}
	})
}

// leave hands the session to the copiers: its sockets go to the runtime's
// netpoller, the bytes held to the frame readers.
func (ls *laneSession) leave() {
	s, ll := ls.s, ls.ll
	// Writes left to the end of the batch go first: what dst does not
	// take of them goes with the session, and out of the arena.
	ll.sendPending()
	for i, fd := range ls.fds {
		ll.l.Remove(fd, &ls.sides[i])
	}
	delete(ll.sess, ls)
	peers := [2]*peer{s.client, s.upstream}
	addrs := [2]net.Addr{ls.caddr, net.TCPAddrFromAddrPort(ll.ls.up)}
	var conns [2]*evloop.Conn
	for i, fd := range ls.fds {
		if fd < 0 {
			continue
		}
		var laddr net.Addr = ll.ls.laddr
		if i == 1 {
			laddr = evloop.LocalAddr(fd)
		}
		conn, err := ll.newConn(fd, laddr, addrs[i])
		if err != nil {
			ls.fds[i] = -1 // NewConn closed it
			continue
		}
		conns[i] = conn
	}
	if conns[0] == nil || conns[1] == nil {
		for i, c := range conns {
			if c != nil {
				c.Close()
				ls.fds[i] = -1
			}
		}
		s.setEnd("proxy", "hand-off failed", 0, "")
		ls.abort()
		return
	}
	s.makeCopiers()
	var owed []*peer // peers a close frame of the proxy's own is still owed
	for i, c := range conns {
		peers[i].conn = c
		d := &ls.dirs[i]
		peers[i].br = newFrameReader(c, d.carry)
		if d.ownClose {
			// The rest of the proxy's close frame (fault) is
			// written as the copiers write theirs.
			dst, rest := s.copiers[i].dst, d.out
			dst.pending.Store(&rest)
			owed = append(owed, dst)
			d.out, d.ownClose = nil, false
		}
		if s.closing.Load() && d.rem > 0 {
			// The rest of a frame drain was dropping, not relaying.
			s.copiers[i].skip, d.rem = d.rem, 0
		}
		if d.rem > 0 || d.out != nil {
			// What dst has not taken yet, and the rest of the frame in
			// transit, go to dst before anything else: its copier holds
			// dst's write lock from here, taken for it before a goroutine
			// can see the session off its loop, so that a close frame of
			// the proxy's own queued from then on waits for them
			// (relayRest unlocks). Nothing else takes the lock while the
			// session is on a loop: this never waits.
			s.copiers[i].dst.wmu.Lock()
			s.copiers[i].rem, s.copiers[i].out, s.copiers[i].outClose = d.rem, d.out, d.closeOut
		}
	}
	ls.closed = true // the loop's part is over
	var rem time.Duration
	if ls.timer != nil {
		ls.timer.Stop()
		rem = max(time.Until(ls.deadline), 0)
	}
	ws := ls.waiters
	ls.waiters = nil
	// The after rules still waiting go on with the runtime's timers, from
	// the same start; those that fired are fired now.
	waiting, firing := ls.stopAfters(), ls.firing
	ls.firing = nil
	s.lane.Store(nil)
	ll.ls.q.Go(func() {
		if rem > 0 || !ls.deadline.IsZero() {
			s.arm(rem)
		}
		s.mu.Lock()
		if !s.finished.Load() {
			list := *s.rules.Load()
			for _, sr := range waiting {
				if containsRule(list, sr) { // a reload since may have removed it
					s.armAfter(sr)
				}
			}
		}
		s.mu.Unlock()
		// The rest of a close frame of the proxy's own goes before
		// anything a waiter (Shutdown, a fault) may queue.
		for _, p := range owed {
			p.tryWritePending()
		}
		if len(owed) > 0 {
			s.maybeFinish() // the frame may complete the handshake, which nobody else would see
		}
		for _, w := range ws {
			close(w)
		}
		// Each on a goroutine of its own: a close frame waits for the
		// rest of a frame in transit, which resume's copiers relay.
		for _, sr := range firing {
			go s.fire(sr, nil) // goroutine "fire": ends once the rule's action is taken
		}
		s.resume()
	})
}

// leaveFor has the session leave its loop; w is closed once it has, or
// once the session has ended. On the loop only.
func (ls *laneSession) leaveFor(w chan struct{}) {
	ls.waiters = append(ls.waiters, w)
	ls.leaving = true
	ls.check()
}

// offLane returns once the session is not on a loop any more: it has left
// its lane, which it is asked to, or ended. Called from goroutines before
// anything acts on the session.
func (s *session) offLane() {
	if s.lane.Load() != nil {
		offLanes([]*session{s})
	}
}

// offLanes has every session of ss that is on a loop leave it, and
// returns once each has left its lane or ended: each loop is asked once
// for all of its sessions, so that a wave does not wait for a loop's turn
// session by session.
func offLanes(ss []*session) {
	type leaving struct {
		s *session
		w chan struct{}
	}
	var waits []leaving
	loops, _ := byLoop(ss)
	for ll, list := range loops {
		ws := make([]chan struct{}, len(list))
		for i := range ws {
			ws[i] = make(chan struct{})
		}
		if !ll.l.Submit(func() {
			for i, ls := range list {
				if ls.closed || ls.s.lane.Load() != ls {
					close(ws[i])
					continue
				}
				ls.leaveFor(ws[i])
			}
		}) {
			continue // the loops have stopped: so have the sessions
		}
		for i, ls := range list {
			waits = append(waits, leaving{ls.s, ws[i]})
		}
	}
	for _, l := range waits {
		select {
		case <-l.w:
		case <-l.s.done: // ended on its loop meanwhile
		}
	}
}

// byLoop groups the sessions of ss that are on a loop by their loop, and
// returns the others.
func byLoop(ss []*session) (on map[*laneLoop][]*laneSession, off []*session) {
	on = map[*laneLoop][]*laneSession{}
	for _, s := range ss {
		if ls := s.lane.Load(); ls != nil {
			on[ls.ll] = append(on[ls.ll], ls)
		} else {
			off = append(off, s)
		}
	}
	return on, off
}

// headerAt parses the frame header at the start of b (RFC 6455 section
// 5.2) as ws.ReadHeader does; ok is false while b holds only part of it.
func headerAt(b []byte) (h ws.Header, size int, ok bool, err error) {
	if len(b) < 2 {
		return h, 0, false, nil
	}
	if size = headerSize(b[1]); len(b) < size {
		return h, size, false, nil
	}
	l := b[1] & 0x7f
	h.Masked = b[1]&0x80 != 0
	h.Fin = b[0]&0x80 != 0
	h.Rsv = (b[0] & 0x70) >> 4
	h.OpCode = ws.OpCode(b[0] & 0x0f)
	switch l {
	case 126:
		h.Length = int64(binary.BigEndian.Uint16(b[2:]))
	case 127:
		if b[2]&0x80 != 0 {
			return h, size, false, ws.ErrHeaderLengthMSB
		}
		h.Length = int64(binary.BigEndian.Uint64(b[2:]))
	default:
		h.Length = int64(l)
	}
	if h.Masked {
		copy(h.Mask[:], b[size-4:size])
	}
	return h, size, true, nil
}
