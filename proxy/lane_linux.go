//go:build linux

package proxy

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/gobwas/httphead"
	"github.com/gobwas/ws"
	"go.uber.org/zap"

	"github.com/wschaos/wschaos/internal/evloop"
	"github.com/wschaos/wschaos/rules"
)

// lanes run plain sessions on event loops (internal/evloop): a loop
// accepts, reads the upgrade request, dials the upstream, completes both
// handshakes and relays the session's frames, every socket call a raw
// syscall, with no goroutine per session.
//
//	listener ─▶ loop: accept, read head ─▶ not plain ─▶ goroutines (handle)
//	                 │
//	                 ▼
//	           connect, request, answer ─▶ refused ─▶ answered from the loop
//	                 │
//	                 ▼
//	           101, relay plain frames, close handshake, FIN and RST
//	                 │
//	                 ▼ anything else (a fault, a violation, a rule, Shutdown)
//	           leave the lane: the sockets go to the runtime's netpoller
//	           and the copiers take over where the loop stopped
//
// A session leaves its lane at once, wherever its frames are: the copiers
// take the bytes the loop read and did not relay yet, those it relayed
// and dst did not take yet, and the rest of a frame under way, and go on
// as if they had relayed the session from its start. A close frame of the
// proxy's own waits for a frame under way to end, as on goroutines.
type lanes struct {
	p     *Proxy
	g     *evloop.Group
	q     *evloop.Queue
	lfd   int // a copy of the listener's socket, the loops' own
	once  sync.Once
	laddr net.Addr
	up    netip.AddrPort
	loops []*laneLoop

	// waves is held while a wave is handed to the loops (fireOnLoops),
	// so that every loop queues the waves in the same order: a loop
	// waits in a wave for the others to reach it.
	waves sync.Mutex
}

// laneLoop is one loop's state; only the loop touches it.
type laneLoop struct {
	ls    *lanes
	l     *evloop.Loop
	buf   []byte                 // the loop's read buffer, shared by its sessions
	hs    map[*laneConn]struct{} // handshakes under way
	sess  map[*laneSession]struct{}
	acc   *laneAcceptor
	stopd bool // Shutdown: no more accepts

	// accept takes a connection from the listening socket, and newConn
	// hands a socket to goroutines: evloop.Accept and evloop.NewConn
	// unless a test has set them.
	accept  func(lfd int) (int, net.Addr, syscall.Errno)
	newConn func(fd int, laddr, raddr net.Addr) (*evloop.Conn, error)

	// noDelayInherited is set once a socket the loop accepted had
	// TCP_NODELAY from the listening socket; noDelayMissed counts those
	// it found without, up to noDelayChecks (see giveNoDelay).
	noDelayInherited bool
	noDelayMissed    int

	sweeping *evloop.Timer // the next keep-alive sweep, if one is due
	// toKeep are the sessions sweeps found quiet, waiting for their turn
	// to have keep-alive turned on, and keeping is the timer of the next
	// turn (keepAlivePart), if one is due.
	toKeep  []*laneSession
	keeping *evloop.Timer
	// mostKept is the most sessions one turn has turned keep-alive on for.
	mostKept int

	// due are the faults the timers running now carried out on their
	// clients, and dueLines their log lines (faultDue); nil between.
	due      []laneDue
	dueLines *wave

	// Writes made together (sendPending): the close frames a wave's
	// first pass queues (faultClient sets batch, and sendClose queues),
	// and, copied to arena (used bytes of it so far) to be written after
	// the batch of events that made them (the loop runs sendPending after
	// each: startAccepting), what relay read, the clients' 101s and the
	// upstreams' upgrade requests (requesting). inArena tells which of
	// pending write from arena; sending is set while sendPending writes.
	batch      bool
	pending    []*laneDir
	inArena    []bool
	requesting []*laneConn
	sends      []evloop.Send
	arena      []byte
	used       int
	sending    bool
}

const laneReadSize = 64 << 10

// laneArenaSize is how much of what a loop relays in one batch of events
// waits to be written together: beyond it, relay writes at once.
const laneArenaSize = 128 << 10

// laneEvents is what a loop's sockets are registered for, edge-triggered.
const laneEvents = uint32(syscall.EPOLLIN|syscall.EPOLLOUT|syscall.EPOLLRDHUP) | 1<<31 // EPOLLET

// listenEvents is what every loop registers the listening socket for:
// level-triggered, EPOLLEXCLUSIVE so that one loop is woken per
// connection.
const listenEvents = syscall.EPOLLIN | 1<<28

// eligibleForLanes reports whether the proxy's settings let plain
// sessions run on loops, with the upstream's address and the listening
// socket; why says what keeps them off the loops otherwise.
func (p *Proxy) eligibleForLanes(ln net.Listener) (up netip.AddrPort, fd int, why string) {
	switch {
	case p.TLSConfig != nil:
		return up, -1, "TLS to clients"
	case p.NetDial != nil:
		return up, -1, "a dialer of its own"
	case p.Upstream.Scheme != "ws":
		return up, -1, "a wss:// upstream"
	case p.IdleTimeout > 0:
		return up, -1, "an idle timeout"
	case p.MaxFrameSize > 0:
		return up, -1, "a frame size limit"
	}
	tcp, ok := ln.(*net.TCPListener)
	if !ok {
		return up, -1, "a listener not made by net.Listen"
	}
	host, port := p.Upstream.Hostname(), p.Upstream.Port()
	if port == "" {
		port = "80"
	}
	ap, err := netip.ParseAddrPort(net.JoinHostPort(host, port))
	if err != nil || ap.Addr().Zone() != "" { // a zone needs the resolver's scope handling
		return up, -1, "an upstream given by name"
	}
	fd = -1
	if raw, err := tcp.SyscallConn(); err == nil {
		raw.Control(func(f uintptr) { fd = int(f) })
	}
	if fd < 0 {
		return up, -1, "a listener without a socket"
	}
	return ap, fd, ""
}

// startLanes starts the loops; startAccepting has them accept.
func (p *Proxy) startLanes(ln net.Listener) (*lanes, error) {
	if p.Loops <= 0 {
		return nil, nil
	}
	up, lfd, why := p.eligibleForLanes(ln)
	if why != "" {
		p.log.Info("event loops not used: every session on goroutines", zap.String("why", why))
		return nil, nil
	}
	if runtime.GOMAXPROCS(0) < p.Loops+1 {
		runtime.GOMAXPROCS(p.Loops + 1) // a P for everything but the loops
	}
	g, err := evloop.NewGroup(p.Loops)
	if err != nil {
		return nil, err
	}
	q, err := evloop.NewQueue()
	if err != nil {
		g.Close()
		return nil, err
	}
	// The loops accept on a copy of the listening socket, and the listener
	// is closed: the runtime's netpoller, which had the original in its
	// set, would otherwise wake a thread for every connection, with no
	// goroutine to give it to.
	dfd, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(lfd), syscall.F_DUPFD_CLOEXEC, 0)
	if errno != 0 {
		g.Close()
		q.Close()
		return nil, fmt.Errorf("loops: dup the listener: %w", errno)
	}
	ln.Close()
	// Accepted sockets take TCP_NODELAY from the listening socket: one
	// setsockopt per connection saved (giveNoDelay).
	evloop.SetNoDelay(int(dfd))
	ls := &lanes{p: p, g: g, q: q, lfd: int(dfd), laddr: ln.Addr(), up: up}
	for _, l := range g.Loops() {
		ll := &laneLoop{ls: ls, l: l, buf: make([]byte, laneReadSize), arena: make([]byte, laneArenaSize), hs: map[*laneConn]struct{}{},
			sess: map[*laneSession]struct{}{}, accept: evloop.Accept, newConn: evloop.NewConn}
		ll.acc = &laneAcceptor{ll: ll}
		ls.loops = append(ls.loops, ll)
	}
	return ls, nil
}

// startAccepting puts the listener in every loop's set, unless
// stopAccepting came first. Each loop is first told to make the writes
// its sessions leave to the end of a batch of events (sendPending), so
// that no session is on a loop before it is.
func (ls *lanes) startAccepting() error {
	errs := make(chan error, len(ls.loops))
	ls.onLoops(func(ll *laneLoop) {
		ll.l.AfterEvents(ll.sendPending)
		if ll.stopd {
			errs <- nil
			return
		}
		errs <- ll.l.Add(ls.lfd, ll.acc, listenEvents)
	})
	close(errs)
	for err := range errs {
		if err != nil {
			return fmt.Errorf("loops: %w", err)
		}
	}
	return nil
}

// onLoops runs f on every loop and waits for them all.
func (ls *lanes) onLoops(f func(ll *laneLoop)) {
	var wg sync.WaitGroup
	for _, ll := range ls.loops {
		wg.Add(1)
		if !ll.l.Submit(func() { defer wg.Done(); f(ll) }) {
			wg.Done()
		}
	}
	wg.Wait()
}

// stopAccepting takes the listener out of every loop's set, before it is
// closed, and closes the connections still in their handshake.
func (ls *lanes) stopAccepting() {
	ls.onLoops(func(ll *laneLoop) {
		ll.stopd = true
		ll.l.Remove(ls.lfd, ll.acc)
		if ll.acc.resume != nil {
			ll.acc.resume.Stop()
			ll.acc.resume = nil
		}
		for c := range ll.hs {
			if c.req == nil {
				c.fail()
				continue
			}
			// An attempt with an ordinal is refused, as the goroutines'
			// dial that Shutdown ends; its client, closed, gets no answer.
			c.refuse(http.StatusBadGateway, RefusedUnreachable, c.dialError(ErrServerClosed), "")
		}
	})
	ls.closeListener()
}

// stop ends the loops; every session has left them or ended by then.
func (ls *lanes) stop() {
	ls.onLoops(func(ll *laneLoop) {
		for s := range ll.sess {
			s.abort()
		}
	})
	ls.g.Close()
	ls.q.Close()
	ls.closeListener()
}

// closeListener closes the loops' copy of the listening socket, once it
// is out of every loop's set (stopAccepting) or the loops have stopped.
func (ls *lanes) closeListener() {
	ls.once.Do(func() { syscall.Close(ls.lfd) })
}

// laneAcceptor is the listening socket's handler on one loop.
type laneAcceptor struct {
	ll *laneLoop
	// pause is how long the loop last stopped accepting for want of a
	// resource (backOff); 0 once an accept has succeeded since.
	pause time.Duration
	// resume puts the listening socket back in the loop's set at the end
	// of a pause; nil while the socket is in the set.
	resume *evloop.Timer
}

func (a *laneAcceptor) Stopped() {}

func (a *laneAcceptor) Ready(uint32) {
	ll := a.ll
	for range 16 {
		if ll.stopd {
			return
		}
		fd, addr, errno := ll.accept(ll.ls.lfd)
		switch errno {
		case 0:
			a.pause = 0
		case syscall.EAGAIN:
			return // none left, or another loop took it
		case syscall.ECONNABORTED, syscall.EINTR:
			continue // that one is gone, or a signal came; the next may be there
		default:
			a.backOff(os.NewSyscallError("accept4", errno))
			return
		}
		ll.giveNoDelay(fd)
		c := &laneConn{ll: ll, fd: fd, addr: addr, start: time.Now()}
		ll.hs[c] = struct{}{}
		if err := ll.l.Add(fd, c, laneEvents); err != nil {
			delete(ll.hs, c)
			evloop.Close(fd)
			continue
		}
		c.timer = ll.l.After(ll.ls.p.handshakeTimeout(), c.timedOut)
	}
}

// backOff takes the listening socket out of the loop's set for a pause,
// after an accept failed with err: for want of a resource, descriptors
// (EMFILE, ENFILE) or memory (ENOBUFS, ENOMEM), or anything else that the
// next accept would meet as well. The socket stays readable while
// connections wait in its backlog, so the loop would otherwise go round at
// once, failing again, for as long as the shortage lasts. The pause
// doubles, from minAcceptPause to maxAcceptPause, while accepts keep
// failing (acceptPause, as Serve pauses); connections wait in the backlog
// meanwhile. A paused loop is not called for the socket: it is out of the
// set.
func (a *laneAcceptor) backOff(err error) {
	a.ll.l.Remove(a.ll.ls.lfd, a)
	a.pause = a.ll.ls.p.acceptPause(a.pause, err)
	a.resume = a.ll.l.After(a.pause, a.listen)
}

// listen puts the listening socket back in the loop's set at the end of a
// pause, or pauses again if it cannot.
func (a *laneAcceptor) listen() {
	a.resume = nil
	if a.ll.stopd {
		return
	}
	if err := a.ll.l.Add(a.ll.ls.lfd, a, listenEvents); err != nil {
		a.backOff(err)
	}
}

// noDelayChecks is how many accepted sockets without TCP_NODELAY a loop
// finds before it stops looking and sets the option on every socket. A
// socket the kernel queued before startLanes set the option on the
// listener lacks it; a kernel that copied no option would leave them all
// without.
const noDelayChecks = 1024

// giveNoDelay sees that fd, just accepted, has TCP_NODELAY. Linux copies
// it from the listening socket, which startLanes sets it on. The accept
// queue is first in, first out: once a loop has accepted a socket that has
// the option, every socket it accepts later was queued later, and has it
// too. Until then the loop looks at each (getsockopt) and sets the option
// where it is missing.
func (ll *laneLoop) giveNoDelay(fd int) {
	if ll.noDelayInherited {
		return
	}
	if ll.noDelayMissed < noDelayChecks {
		if on, errno := evloop.NoDelay(fd); errno == 0 && on {
			ll.noDelayInherited = true
			return
		}
		ll.noDelayMissed++
	}
	evloop.SetNoDelay(fd)
}

// laneConn is a client connection in its handshake, on a loop.
type laneConn struct {
	ll    *laneLoop
	fd    int
	addr  net.Addr
	caddr string // addr as its String gives it, once dialed
	start time.Time
	timer *evloop.Timer
	head  []byte // the request's bytes so far

	// Once the request is read: the upstream's connection.
	req      *http.Request
	info     rules.Session // the rules' view of the attempt
	id       uint64
	ufd      int
	dialer   *laneDialer // &dialerv once dialed
	dialerv  laneDialer
	nonce    [nonceLen]byte
	protos   []string
	exts     []httphead.Option
	uhead    []byte
	requests []byte    // the upgrade request, until written
	queued   bool      // requests, in the loop's arena, waits for sendPending
	deadline time.Time // the end of the upstream's handshake timeout
	done     bool
	// A socket whose last read was short, with no hang-up reported, has
	// nothing more to read until its next event (see laneDir.relay).
	cdrained, udrained bool
}

func (c *laneConn) Stopped() { c.fail() }

// Ready reads the request head; once it is whole, the upstream is dialed.
func (c *laneConn) Ready(events uint32) {
	if c.done || c.req != nil {
		if c.req != nil && events&(syscall.EPOLLHUP|syscall.EPOLLERR) != 0 && !c.done {
			// The client left while its upstream was dialed: the
			// goroutines' handshake notices when it writes the answer;
			// here the answer is not written at all.
			c.refuse(0, RefusedClient, errors.New("client gone during the handshake"), "")
		}
		return
	}
	// Most requests come in one read: their bytes are looked at in the
	// loop's buffer, and copied to c.head only to be kept past this event
	// or handed on.
	buf := c.ll.buf
	trust := events&(syscall.EPOLLRDHUP|syscall.EPOLLHUP|syscall.EPOLLERR) == 0
	head := c.head // the bytes so far, in c.head or (read at once) in buf
	i := -1        // where the head ends, once it has; bytes before this event had not
	for {
		n, errno := evloop.Read(c.fd, buf)
		if errno == syscall.EAGAIN {
			break
		}
		if errno != 0 || n == 0 {
			c.fail()
			return
		}
		if len(c.head) == 0 {
			head = buf[:n]
		} else {
			c.head = append(c.head, buf[:n]...)
			head = c.head
		}
		c.cdrained = trust && n < len(buf)
		if i = bytes.Index(head, []byte("\r\n\r\n")); i >= 0 || len(head) > maxHeadSize || c.cdrained {
			break
		}
		c.keepHead(head) // buf is read into again
		head = c.head
	}
	if i < 0 && len(head) <= maxHeadSize {
		c.keepHead(head)
		return // more to come
	}
	if i < 0 || i+4 > maxHeadSize || !headWantsWebSocket(head[:i+2]) {
		c.keepHead(head)
		c.toGoroutines()
		return
	}
	// A head parseHead leaves to http.ReadRequest, as one checkUpgrade
	// refuses, is the goroutines' to read and answer.
	req, ok := parseHead(head[:i+4])
	if !ok || checkUpgrade(req) != nil {
		c.keepHead(head)
		c.toGoroutines()
		return
	}
	var exts []httphead.Option
	for _, v := range req.Header.Values("Sec-Websocket-Extensions") {
		var ok bool
		if exts, ok = httphead.ParseOptions([]byte(v), exts); !ok {
			c.keepHead(head)
			c.toGoroutines()
			return
		}
	}
	c.req, c.exts = req, exts
	c.protos = splitTokens(req.Header.Values("Sec-Websocket-Protocol"))
	// Frames pipelined behind the request, kept.
	switch rest := head[i+4:]; {
	case len(c.head) > 0:
		c.head = rest
	case len(rest) > 0:
		c.head = bytes.Clone(rest)
	}
	c.dial()
}

// keepHead has c.head hold head, the bytes read of the request so far:
// c.head itself, or those of one read still in the loop's buffer.
func (c *laneConn) keepHead(head []byte) {
	if len(c.head) == 0 && len(head) > 0 {
		c.head = bytes.Clone(head)
	}
}

// toGoroutines hands the connection, with what has been read of it, to
// the goroutines' handshake (handle), which serves whatever it is.
func (c *laneConn) toGoroutines() {
	p := c.ll.ls.p
	c.finishHandshake(false)
	conn, err := c.ll.newConn(c.fd, c.ll.ls.laddr, c.addr)
	if err != nil {
		// NewConn closed the socket: the client gets no answer. An
		// upgrade request is an attempt all the same.
		if head, _, _ := bytes.Cut(c.head, []byte("\r\n\r\n")); headWantsWebSocket(head) {
			p.refuseUnread(c.addr, requestLine(head), 0, RefusedProxy,
				fmt.Errorf("handing the connection to goroutines failed: %w", err))
		}
		return
	}
	bc := &prefixConn{Conn: conn, prefix: c.head}
	c.ll.ls.q.Go(func() {
		if !p.track(bc) {
			bc.Close()
			return
		}
		p.handle(bc)
	})
}

// finishHandshake takes the connection out of the loop's handshakes and
// its sockets out of the loop's set: for goroutines, or (closing) to be
// closed, which takes them out of the set itself.
func (c *laneConn) finishHandshake(closing bool) {
	c.endHandshake()
	drop := c.ll.l.Remove
	if closing {
		drop = c.ll.l.Forget
	}
	drop(c.fd, c)
	if c.dialer != nil {
		drop(c.ufd, c.dialer)
	}
}

// endHandshake takes the connection out of the loop's handshakes; its
// sockets stay registered, for the session.
func (c *laneConn) endHandshake() {
	c.done = true
	delete(c.ll.hs, c)
	c.timer.Stop()
}

// fail closes the connection (and its upstream's) without an answer.
func (c *laneConn) fail() {
	if c.done {
		return
	}
	c.finishHandshake(true)
	evloop.Close(c.fd)
	if c.dialer != nil {
		evloop.Close(c.ufd)
	}
}

func (c *laneConn) timedOut() {
	if c.req == nil {
		c.fail() // as the goroutines' handshake: no answer to a request never read
		return
	}
	op := "read"
	switch {
	case c.dialer == nil || !c.dialer.connected:
		op = "dial"
	case len(c.requests) > 0:
		op = "write"
	}
	c.upstreamFailed(c.upstreamError(op, os.ErrDeadlineExceeded))
}

// upstreamError is err, the failure of op ("dial", "read" or "write") on
// the upstream's socket, as the goroutines' dial reports it: a net.OpError
// wrapped with the target, so that a refusal reads the same whichever
// served it. err is os.ErrDeadlineExceeded, or a syscall's errno.
func (c *laneConn) upstreamError(op string, err error) error {
	if errno, ok := err.(syscall.Errno); ok {
		name := op
		if op == "dial" {
			name = "connect"
		}
		err = os.NewSyscallError(name, errno)
	}
	oe := &net.OpError{Op: op, Net: "tcp", Addr: net.TCPAddrFromAddrPort(c.ll.ls.up), Err: err}
	if op != "dial" {
		oe.Source = evloop.LocalAddr(c.ufd)
	}
	return c.dialError(oe)
}

// dialError wraps err with the target, as the goroutines' dial does.
func (c *laneConn) dialError(err error) error {
	return fmt.Errorf("dial %s: %w", joinURL(c.ll.ls.p.Upstream, c.req.URL).Redacted(), err)
}

// upstreamFailed refuses the client, as serveWebSocket does when the
// upstream could not be reached or failed its handshake: at the step
// dialFailure gives.
func (c *laneConn) upstreamFailed(err error) {
	c.refuse(http.StatusBadGateway, dialFailure(err), err, "upstream unreachable: "+err.Error())
}

// refuse answers the client with status and msg (no answer if msg is
// empty), closes both connections and records the refusal, as
// serveWebSocket does; status 0 is a client gone.
func (c *laneConn) refuse(status int, step string, why error, msg string) {
	p := c.ll.ls.p
	if msg != "" {
		var b bytes.Buffer
		writeStatus(&b, status, msg)
		evloop.Write(c.fd, b.Bytes())
	}
	if status != 0 {
		p.log.Warn("upstream refused the session", zap.Uint64("session", c.id), zap.Stringer("client", c.addr),
			zap.String("path", c.req.URL.Path), zap.Int("status", status), zap.Error(why))
	} else {
		p.log.Info("client handshake failed", zap.Uint64("session", c.id), zap.Stringer("client", c.addr),
			zap.String("path", c.req.URL.Path), zap.Error(why))
	}
	c.fail()
	p.emitRefused(c.id, c.addr.String(), c.req, status, step, why.Error())
}

// rejected refuses the attempt, before anything is dialed, when a reject
// rule applies to it, as serveWebSocket does; it reports whether it did.
func (c *laneConn) rejected() bool {
	p := c.ll.ls.p
	if len(p.engine.gen.Load().rules) == 0 {
		return false
	}
	lr := p.engine.rejectFor(&c.info, c.id)
	if lr == nil {
		return false
	}
	var b bytes.Buffer
	log := p.log.With(zap.Uint64("session", c.id), zap.String("client", c.caddr), zap.String("path", c.req.URL.Path))
	p.reject(&b, c.caddr, lr, log, c.id, c.req)
	evloop.Write(c.fd, b.Bytes())
	c.fail()
	p.emitRefused(c.id, c.caddr, c.req, lr.Action.Status, RefusedRule, "rule "+lr.Name)
	return true
}

// dial starts the upstream's connection.
func (c *laneConn) dial() {
	ls := c.ll.ls
	c.id = ls.p.nextID.Add(1)
	c.caddr = c.addr.String()
	c.info = sessionInfo(c.req, c.caddr)
	if c.rejected() {
		return
	}
	// The upstream's connect and handshake have a handshake timeout of
	// their own from here, as the goroutines' dial has, however long the
	// client took to send its request.
	c.deadline = time.Now().Add(ls.p.handshakeTimeout())
	c.timer.Reset(ls.p.handshakeTimeout())
	fd, errno := evloop.Connect(ls.up)
	if errno != 0 {
		c.upstreamFailed(c.upstreamError("dial", errno))
		return
	}
	c.ufd = fd
	c.dialer = &c.dialerv
	c.dialer.c = c
	var key [16]byte
	rand.Read(key[:])
	makeNonce(c.nonce[:], key)
	if err := c.ll.l.Add(fd, c.dialer, laneEvents); err != nil {
		evloop.Close(fd)
		c.dialer = nil
		c.upstreamFailed(c.dialError(err))
	}
}

// request writes the upgrade request to the upstream, just connected, or
// queues it for sendPending to write with the batch's other writes. It is
// built in the loop's buffer; only what the socket does not take at once
// is copied, to c.requests, for the next events to write.
func (c *laneConn) request() {
	ll := c.ll
	target := joinedURL(ll.ls.p.Upstream, c.req.URL)
	req := appendUpgradeRequestHead(ll.buf[:0], &target, c.nonce[:], c.protos, c.exts)
	req = appendForwardHeader(req, c.req, c.caddr, false)
	req = append(req, "\r\n"...)
	if b, ok := ll.stash(req); ok {
		c.requests, c.queued = b, true
		ll.requesting = append(ll.requesting, c)
		return
	}
	n, errno := evloop.Write(c.ufd, req)
	c.wrote(req, n, errno)
}

// wrote takes the first write of req, the upgrade request: n bytes taken,
// or errno. What is left is copied to c.requests: req is in the loop's
// buffer or arena.
func (c *laneConn) wrote(req []byte, n int, errno syscall.Errno) {
	c.requests = nil
	switch {
	case errno == syscall.EAGAIN:
		n = 0
	case errno != 0:
		c.upstreamFailed(c.upstreamError("write", errno))
		return
	}
	if n < len(req) {
		c.requests = bytes.Clone(req[n:])
	}
}

// laneDialer is the upstream's connection during the handshake.
type laneDialer struct {
	c         *laneConn
	connected bool
}

func (d *laneDialer) Stopped() { d.c.fail() }

func (d *laneDialer) Ready(events uint32) {
	c := d.c
	if c.done {
		return
	}
	if !d.connected {
		if events&(syscall.EPOLLOUT|syscall.EPOLLERR|syscall.EPOLLHUP) == 0 {
			return
		}
		// Writable without an error or a hang-up: connected. Otherwise
		// SO_ERROR says why not.
		var errno syscall.Errno
		if events&(syscall.EPOLLERR|syscall.EPOLLHUP) != 0 {
			errno = evloop.SockError(c.ufd)
		}
		if errno != 0 || events&syscall.EPOLLHUP != 0 {
			if errno == 0 {
				errno = syscall.ECONNREFUSED
			}
			c.upstreamFailed(c.upstreamError("dial", errno))
			return
		}
		d.connected = true
		c.request()
		if c.done || c.queued {
			return // the answer comes after the request, with an event of its own
		}
	}
	for len(c.requests) > 0 {
		n, errno := evloop.Write(c.ufd, c.requests)
		if errno == syscall.EAGAIN {
			return
		}
		if errno != 0 {
			c.upstreamFailed(c.upstreamError("write", errno))
			return
		}
		c.requests = c.requests[n:]
	}
	if events&(syscall.EPOLLIN|syscall.EPOLLRDHUP|syscall.EPOLLHUP|syscall.EPOLLERR) == 0 {
		// Writable only, as when the connect is over: the answer
		// raises an edge of its own when it comes, and a read now
		// would find nothing.
		return
	}
	buf := c.ll.buf
	trust := events&(syscall.EPOLLRDHUP|syscall.EPOLLHUP|syscall.EPOLLERR) == 0
	for {
		n, errno := evloop.Read(c.ufd, buf)
		if errno == syscall.EAGAIN {
			return
		}
		if errno != 0 {
			c.upstreamFailed(c.upstreamError("read", errno))
			return
		}
		if n == 0 {
			// gobwas/ws reports an answer cut short as io.EOF, at any point.
			c.upstreamFailed(c.dialError(io.EOF))
			return
		}
		// An answer that comes in one read, as most do, is looked at in
		// the loop's buffer; c.uhead keeps one that does not.
		got := buf[:n]
		if len(c.uhead) > 0 {
			c.uhead = append(c.uhead, got...)
			got = c.uhead
		}
		c.udrained = trust && n < len(buf)
		// gobwas/ws judges the answer line by line: a status other than
		// 101, or a line it refuses, decides before the head's end. Its
		// head has no size limit but the handshake timeout, as the
		// Dialer's.
		head := got
		if n := answerHeadLen(got); n >= 0 {
			head = got[:n]
		}
		if hs, answer, err := checkUpgradeAnswer(head, c.nonce[:], c.protos, c.exts); err != errAnswerIncomplete {
			c.answered(got, len(head), hs, answer, err)
			return
		}
		if len(c.uhead) == 0 {
			c.uhead = bytes.Clone(got) // buf is read into again
		}
		if c.udrained {
			return // the rest comes with the next event
		}
	}
}

// answered acts on the upstream's answer, whose head is got[:n], or as
// much of it as decides that it is refused, and on what
// checkUpgradeAnswer made of it. got is c.uhead, or the loop's buffer
// when c.uhead is empty.
func (c *laneConn) answered(got []byte, n int, hs ws.Handshake, answer http.Header, err error) {
	st, refused := err.(*answerStatus) // checkUpgradeAnswer returns it unwrapped
	if len(c.uhead) == 0 && (refused || len(got) > n) {
		c.uhead = bytes.Clone(got) // kept past this event: out of the buffer
	}
	if refused {
		c.statusAnswer(st.status)
		return
	}
	if err != nil {
		c.upstreamFailed(c.dialError(err))
		return
	}
	var upending []byte // frames the upstream sent behind its 101
	if len(c.uhead) > n {
		upending = c.uhead[n:]
	}
	c.endHandshake()

	s := newLaneSession(c, hs, answer, upending)
	if s == nil {
		return
	}
	s.run()
}

// statusAnswer passes on a non-101 answer, whose status line says status:
// goroutines read the rest of it.
func (c *laneConn) statusAnswer(status int) {
	p := c.ll.ls.p
	c.finishHandshake(false)
	// An attempt whose sockets cannot be handed over is refused all the
	// same, its client without an answer: NewConn closed its socket.
	handOffFailed := func(err error) {
		why := fmt.Errorf("upstream answered %d; passing it on failed: %w", status, err)
		p.log.Warn("upstream refused the session", zap.Uint64("session", c.id), zap.Stringer("client", c.addr),
			zap.String("path", c.req.URL.Path), zap.Error(why))
		p.emitRefused(c.id, c.addr.String(), c.req, 0, RefusedUpstream, why.Error())
	}
	cconn, err := c.ll.newConn(c.fd, c.ll.ls.laddr, c.addr)
	if err != nil {
		evloop.Close(c.ufd)
		handOffFailed(err)
		return
	}
	uconn, err := c.ll.newConn(c.ufd, nil, net.TCPAddrFromAddrPort(c.ll.ls.up))
	if err != nil {
		cconn.Close()
		handOffFailed(err)
		return
	}
	req, id, head, addr, deadline := c.req, c.id, c.uhead, c.addr, c.deadline
	c.ll.ls.q.Go(func() {
		tracked := p.trackAnswer(cconn, uconn)
		if !tracked {
			// Shutdown has begun: it would have closed both.
			cconn.Close()
			uconn.Close()
		}
		// The rest of the answer is read within the dial's timeout, as
		// gobwas/ws reads it for the goroutines' dial.
		uconn.SetDeadline(deadline)
		// The status is the one gobwas/ws reads, as the goroutines' dial
		// passes it to readStatusError: net/http may not read the answer.
		se := readStatusError(status, io.MultiReader(bytes.NewReader(head), uconn))
		uconn.Close()
		cconn.SetWriteDeadline(time.Now().Add(closeGrace))
		se.writeTo(cconn)
		cconn.Close()
		p.log.Warn("upstream refused the session", zap.Uint64("session", id), zap.Stringer("client", addr),
			zap.String("path", req.URL.Path), zap.Int("status", se.status), zap.Error(se))
		p.emitRefused(id, addr.String(), req, se.status, RefusedUpstream, se.Error())
		if tracked {
			p.untrackDial(uconn)
			p.untrack(cconn)
		}
	})
}

// trackAnswer records the connections of an attempt whose non-101 answer
// goroutines pass on, as a goroutines' handshake has its client in
// p.conns and its upstream in p.dials: Shutdown closes both and waits for
// them. It reports false once Shutdown has begun.
func (p *Proxy) trackAnswer(client, upstream net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing {
		return false
	}
	p.conns[client] = struct{}{}
	p.dials[upstream] = struct{}{}
	return true
}

// openOnGoroutines opens on goroutines a session whose handshakes a loop
// completed, as serveWebSocket does from addSession on: rules were loaded
// during the handshake, and a session is attached to the rules before its
// client has its 101 (answer), which the copiers relay from the start.
// ls, which never ran, is let go; a goroutine that waits for it to leave
// its lane finds it gone and waits for the 101 on the client's lock.
func (c *laneConn) openOnGoroutines(s *session, ls *laneSession, answer, upending []byte) {
	ll, p := c.ll, c.ll.ls.p
	ll.l.Remove(c.fd, c)
	ll.l.Remove(c.ufd, c.dialer)
	ls.closed = true
	ulocal := evloop.LocalAddr(c.ufd)
	cconn, cerr := ll.newConn(c.fd, ll.ls.laddr, c.addr)
	uconn, uerr := ll.newConn(c.ufd, ulocal, net.TCPAddrFromAddrPort(ll.ls.up))
	refused := func(err error) {
		s.lane.Store(nil)
		p.dropSession(s)
		p.emitRefused(c.id, c.addr.String(), c.req, 0, RefusedClient, "answer client: "+err.Error())
	}
	if cerr != nil || uerr != nil {
		if cerr == nil {
			cconn.Close()
		}
		if uerr == nil {
			uconn.Close()
		}
		refused(errors.Join(cerr, uerr))
		return
	}
	client, upstream := s.client, s.upstream
	client.conn, client.br = cconn, newFrameReader(cconn, c.head)
	upstream.conn, upstream.br = uconn, newFrameReader(uconn, upending)
	client.wmu.Lock() // a close frame queued meanwhile follows the 101
	s.makeCopiers()
	s.lane.Store(nil)
	ll.ls.q.Go(func() {
		s.attach()
		cconn.SetWriteDeadline(time.Now().Add(closeGrace))
		if _, err := cconn.Write(answer); err != nil {
			client.wmu.Unlock()
			p.log.Info("client handshake failed", zap.Uint64("session", s.id), zap.Error(err))
			s.stopTimers()
			cconn.Close()
			uconn.Close()
			refused(err)
			return
		}
		cconn.SetWriteDeadline(time.Time{})
		client.unlock()
		s.open()
	})
}

// leaveAll has every session on the loops leave them, and waits.
func (ls *lanes) leaveAll() {
	var mu sync.Mutex
	var waits []chan struct{}
	ls.onLoops(func(ll *laneLoop) {
		for s := range ll.sess {
			w := make(chan struct{})
			mu.Lock()
			waits = append(waits, w)
			mu.Unlock()
			s.leaveFor(w)
		}
	})
	for _, w := range waits {
		<-w
	}
}

// abortAll ends every session still on the loops: Shutdown's time is up.
func (ls *lanes) abortAll() {
	ls.onLoops(func(ll *laneLoop) {
		for s := range ll.sess {
			s.s.setEnd("proxy", "forced shutdown", 0, "")
			s.abort()
		}
	})
}
