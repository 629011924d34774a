// Package proxy is a transparent, frame-level WebSocket reverse proxy.
//
// Every accepted connection goes through the same pipeline:
//
//	       accept
//	         │
//	read the request head ──── no Upgrade ───▶ plain HTTP reverse proxy
//	         │
//	dial the upstream first (path, query, subprotocols, extensions,
//	end-to-end headers, X-Forwarded-*)
//	         │
//	non-101 / unreachable ───▶ same status (or 502) to the client
//	         │
//	answer the client with what the upstream chose
//	         │
//	client ──▶ copier "client->upstream" ──▶ upstream
//	client ◀── copier "upstream->client" ◀── upstream
//
// A copier reads a frame header, checks it (RFC 6455 section 5), writes the
// header and streams the payload through pooled buffers without holding a
// whole frame in memory, and flushes only when its source has nothing more
// buffered, so a burst of small frames leaves in one write. Masks, RSV bits,
// opcodes and fragmentation pass unchanged. A close frame is relayed as it
// is; when the close handshake is complete both TCP connections are closed.
// A TCP connection that ends without a close frame is mirrored on the other
// side: an RST as an RST, a FIN as a FIN.
package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/wschaos/wschaos/rules"
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("proxy: server closed")

// Proxy is a WebSocket reverse proxy. Its fields are read when Serve is
// called and must not be changed afterwards.
type Proxy struct {
	// Upstream is the ws:// or wss:// URL sessions are relayed to. The
	// request's path is joined to Upstream's path and its query is appended
	// to Upstream's query. It must be set.
	Upstream *url.URL

	// TLSClientConfig configures TLS to a wss:// upstream and to its
	// https:// origin for plain HTTP requests. Nil means the system's roots.
	TLSClientConfig *tls.Config

	// HandshakeTimeout bounds reading the client's request head, dialing
	// the upstream and its handshake. Zero means 10 seconds.
	HandshakeTimeout time.Duration

	// IdleTimeout closes a session, with 1001 to both sides, when no frame
	// has passed in either direction for this long. Zero means no limit.
	IdleTimeout time.Duration

	// MaxFrameSize ends a session whose peer sends a larger frame: that peer
	// gets close 1009, the other side 1001. Zero means no limit: frames are
	// streamed, so their size costs no memory.
	MaxFrameSize int64

	// NetDial dials the upstream's TCP connection. Nil means a net.Dialer
	// without keep-alive: the proxy turns it on once the connection falls
	// quiet, as for connections from Listen. On Linux that dialer clears
	// TCP_QUICKACK before the connect, so that the handshake's last ACK
	// goes out with the upgrade request, one segment fewer.
	NetDial func(ctx context.Context, network, addr string) (net.Conn, error)

	// Logger receives one line when a session opens and one when it ends,
	// and per-frame detail at debug level. Nil means no logs.
	Logger *zap.Logger

	// Events receives an event for every upgrade attempt, refused or not,
	// for every fault fired and for every session's end. Nil means none
	// are recorded.
	Events EventSink

	// Rules are the faults to inject when Serve starts; nil means none.
	// SetRules changes them while serving.
	Rules *rules.Set

	// Seed seeds every random decision of the rules: the same seed and the
	// same sequence of connections give the same faults.
	Seed uint64

	// MaxInspectSize is how much of a message is held for on_message rules;
	// a larger message passes uninspected. Zero means 1 MiB.
	MaxInspectSize int64

	// Loops is how many event loops serve plain sessions, on Linux: a
	// loop accepts, completes both handshakes and relays the frames of a
	// session with no goroutine of its own, until something only the
	// copiers handle (a rule, a fault, a violation, Shutdown) makes the
	// session leave its loop. Loops take effect only for a listener from
	// net.Listen or Listen, an upstream given as ws:// and an IP address,
	// and no TLSConfig, NetDial, IdleTimeout or MaxFrameSize; while rules
	// are loaded, new sessions start on goroutines. A loop keeps its P
	// while it waits, so Serve raises GOMAXPROCS to one more than Loops
	// when it starts them, if it is lower: timers and goroutines need a P
	// of their own. Zero means no loops: every session runs on goroutines.
	Loops int

	// TLSConfig makes the proxy serve TLS (wss://) on its listener itself,
	// which tls_fail rules need. Nil means the listener's connections are
	// used as they are.
	TLSConfig *tls.Config

	mu       sync.Mutex
	started  bool
	closing  bool
	base     context.Context
	cancel   context.CancelFunc
	ln       net.Listener
	sessions map[*session]struct{}
	conns    map[net.Conn]struct{} // accepted, not yet a session
	dials    map[net.Conn]struct{} // upstream connections still in their handshake
	// dialing ends the TCP connects under way when Shutdown starts.
	dialing     context.Context
	stopDialing context.CancelFunc
	idle        chan struct{} // closed when sessions and conns are both empty while closing
	httpSrv     *http.Server
	httpLn      *chanListener
	// httpTransport carries plain HTTP requests to the upstream's origin.
	httpTransport *http.Transport
	nextID        atomic.Uint64 // upgrade attempts: the rules' session ordinal
	acceptPauses  atomic.Uint64 // Stats.AcceptPauses
	accepted      atomic.Uint64 // TLS handshakes: the ordinal of tls_fail rules
	engine        *engine
	lanes         *lanes        // nil: no loops
	serving       chan struct{} // closed when Shutdown starts, for Serve on loops
	poller        *poller       // nil: every copier has a goroutine from the start
	ready         atomic.Bool
	totals        totals
	log           *zap.Logger
	dial          func(ctx context.Context, network, addr string) (net.Conn, error) // NetDial or its default
}

const (
	defaultHandshakeTimeout = 10 * time.Second
	// closeGrace bounds how long a session waits for the peer's half of a
	// close handshake, or for the other side to notice a mirrored FIN,
	// before both TCP connections are closed.
	closeGrace = 2 * time.Second
)

// Serve accepts connections on ln and proxies them until Shutdown or Close
// is called, or ln fails. It always returns a non-nil error: ErrServerClosed
// after Shutdown or Close.
func (p *Proxy) Serve(ln net.Listener) error {
	if err := p.init(ln); err != nil {
		return err
	}
	p.engine.load(p.Rules)
	ls, err := p.startLanes(ln)
	if err != nil {
		p.log.Warn("loops not started; sessions run on goroutines", zap.Error(err))
	}
	p.ready.Store(true)
	go p.serveHTTP()
	if ls != nil {
		// Set under the lock Shutdown reads it under: Shutdown either
		// sees the loops, and takes the listener out of their sets before
		// closing it, or came first and the loops never accept.
		p.mu.Lock()
		closing := p.closing
		if !closing {
			p.lanes = ls
		}
		p.mu.Unlock()
		if closing {
			ls.stop()
			return ErrServerClosed
		}
		if err := ls.startAccepting(); err != nil {
			ls.stopAccepting()
			return err
		}
		<-p.serving
		return ErrServerClosed
	}
	var delay time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if p.isClosing() {
				return ErrServerClosed
			}
			if retryAccept(err) {
				delay = p.acceptPause(delay, err)
				select {
				case <-time.After(delay):
				case <-p.base.Done():
					return ErrServerClosed
				}
				continue
			}
			return fmt.Errorf("accept: %w", err)
		}
		delay = 0
		if p.TLSConfig != nil {
			conn = p.tlsServer(conn)
		}
		if !p.track(conn) {
			conn.Close()
			return ErrServerClosed
		}
		go p.handle(conn)
	}
}

// Accepting backs off from minAcceptPause, doubling up to maxAcceptPause,
// while accepts fail for want of a resource, as net/http's server does.
const (
	minAcceptPause = 5 * time.Millisecond
	maxAcceptPause = time.Second
)

// acceptPause returns how long accepting pauses after an accept failed
// with err, the pause before it having been last (0: none since an accept
// succeeded): twice as long, from minAcceptPause to maxAcceptPause. It
// counts the pause (Stats.AcceptPauses) and logs it. Serve and the loops'
// acceptors pause alike.
func (p *Proxy) acceptPause(last time.Duration, err error) time.Duration {
	d := min(max(2*last, minAcceptPause), maxAcceptPause)
	p.acceptPauses.Add(1)
	p.log.Warn("accept failed; retrying", zap.Error(err), zap.Duration("in", d))
	return d
}

// retryAccept reports whether an accept error is one to wait out rather
// than one that ends Serve: a timeout, a shortage of descriptors (EMFILE,
// ENFILE) or memory (ENOBUFS, ENOMEM), which a reconnect storm can bring
// about and sessions ending relieve, or a connection aborted before it was
// taken.
func retryAccept(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func (p *Proxy) init(ln net.Listener) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.started {
		return errors.New("proxy: Serve called twice")
	}
	if p.closing {
		return ErrServerClosed
	}
	if p.Upstream == nil {
		return errors.New("proxy: Upstream is not set")
	}
	switch p.Upstream.Scheme {
	case "ws", "wss":
	default:
		return fmt.Errorf("proxy: upstream scheme %q is not ws or wss", p.Upstream.Scheme)
	}
	p.started = true
	p.log = p.Logger
	p.dialing, p.stopDialing = context.WithCancel(context.Background())
	p.dial = p.NetDial
	if p.dial == nil {
		p.dial = (&net.Dialer{KeepAlive: -1, Control: dialControl}).DialContext
	}
	if p.log == nil {
		p.log = zap.NewNop()
	}
	p.base, p.cancel = context.WithCancel(context.Background())
	p.ln = ln
	p.sessions = make(map[*session]struct{})
	p.conns = make(map[net.Conn]struct{})
	p.dials = make(map[net.Conn]struct{})
	p.idle = make(chan struct{})
	p.serving = make(chan struct{})
	p.httpLn = newChanListener(ln.Addr())
	p.httpSrv = p.newHTTPServer()
	p.engine = newEngine(p)
	if pl, err := newPoller(p.appendSessions); err == nil {
		p.poller = pl
		go pl.run() // goroutine "poller": ends with Shutdown
	} else {
		p.log.Debug("idle sessions keep their goroutines", zap.Error(err))
	}
	return nil
}

func (p *Proxy) isClosing() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closing
}

// track records an accepted connection; it reports false while closing.
func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

// untrack forgets an accepted connection once it became a session, was
// handed to the HTTP server, or failed its handshake.
func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.conns, c)
	p.checkIdleLocked()
}

// addSession registers s in place of its client's accepted connection, in
// one step, so that Shutdown sees it as one or the other and closes it
// gracefully as a session. It reports false while closing; s is
// registered either way, so that Shutdown waits for it.
func (p *Proxy) addSession(s *session, c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.conns, c)
	p.sessions[s] = struct{}{}
	p.totals.sessions++
	return !p.closing
}

// dropSession forgets a session whose client never got its 101.
func (p *Proxy) dropSession(s *session) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.sessions, s)
	p.totals.sessions--
	p.checkIdleLocked()
}

func (p *Proxy) removeSession(s *session) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.sessions, s)
	p.totals.c2u.add(s.client.traffic())
	p.totals.u2c.add(s.upstream.traffic())
	p.checkIdleLocked()
}

func (p *Proxy) checkIdleLocked() {
	if p.closing && len(p.sessions) == 0 && len(p.conns) == 0 {
		select {
		case <-p.idle:
		default:
			close(p.idle)
		}
	}
}

// Shutdown stops accepting, sends close 1001 Going Away to both sides of
// every session and waits for the close handshakes until ctx is done; then
// it closes whatever remains. Plain HTTP connections are shut down as
// http.Server.Shutdown does. It returns ctx's error if it had to force.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	if !p.started {
		p.closing = true // a later Serve returns at once
		p.mu.Unlock()
		return nil
	}
	p.closing = true
	p.ready.Store(false)
	lanes := p.lanes
	if lanes == nil {
		p.ln.Close()
	}
	select {
	case <-p.serving:
	default:
		close(p.serving)
	}
	for c := range p.conns {
		// A connection still in its handshake has no session to close
		// gracefully: its client has not been answered yet.
		c.Close()
	}
	// Nor has the upstream of one: its dial ends now, not when the
	// handshake timeout would end it.
	p.stopDialing()
	for c := range p.dials {
		c.Close()
	}
	sessions := make([]*session, 0, len(p.sessions))
	for s := range p.sessions {
		sessions = append(sessions, s)
	}
	p.checkIdleLocked()
	p.mu.Unlock()

	if lanes != nil {
		// Out of the loops' sets before its number can be reused.
		lanes.stopAccepting()
		p.ln.Close()
		lanes.leaveAll()
	}
	for _, s := range sessions {
		s.closeBoth(closeGoingAway, "going away", "shutdown")
	}
	httpDone := make(chan error, 1)
	go func() { httpDone <- p.httpSrv.Shutdown(ctx) }()

	var err error
	select {
	case <-p.idle:
	case <-ctx.Done():
		err = ctx.Err()
	}
	p.cancel()
	p.abortSessions(lanes)
	p.engine.stop()
	if herr := <-httpDone; herr != nil {
		// Requests still in flight when ctx ended are cut.
		p.httpSrv.Close()
		if err == nil && !errors.Is(herr, context.Canceled) && !errors.Is(herr, context.DeadlineExceeded) {
			err = herr
		}
	}
	p.httpTransport.CloseIdleConnections()
	<-p.idle
	if lanes != nil {
		lanes.stop()
	}
	if p.poller != nil {
		p.poller.stop()
	}
	return err
}

// abortSessions ends every session still open without waiting for its
// close handshake: Shutdown's time is up. No session is added meanwhile:
// the proxy is closing, and addSession refuses.
func (p *Proxy) abortSessions(lanes *lanes) {
	if lanes != nil {
		lanes.abortAll()
	}
	p.mu.Lock()
	sessions := make([]*session, 0, len(p.sessions))
	for s := range p.sessions {
		sessions = append(sessions, s)
	}
	p.mu.Unlock()
	for _, s := range sessions {
		s.setEnd("proxy", "forced shutdown", 0, "")
		s.abort()
	}
}

// Close is Shutdown with no time to drain: close frames go out where they
// can at once, then every connection is closed.
func (p *Proxy) Close() error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := p.Shutdown(ctx)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// Addr returns the address Serve listens on, or nil before Serve.
func (p *Proxy) Addr() net.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln == nil {
		return nil
	}
	return p.ln.Addr()
}

func (p *Proxy) handshakeTimeout() time.Duration {
	if p.HandshakeTimeout > 0 {
		return p.HandshakeTimeout
	}
	return defaultHandshakeTimeout
}

// tlsServer wraps an accepted connection in TLS; a tls_fail rule that
// applies to the client aborts the handshake (the client reports 1015, or
// a network error).
func (p *Proxy) tlsServer(conn net.Conn) net.Conn {
	ordinal := p.accepted.Add(1)
	cfg := p.TLSConfig.Clone()
	cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		info := rules.Session{}
		if ap, err := netip.ParseAddrPort(conn.RemoteAddr().String()); err == nil {
			info.Client = ap.Addr().Unmap()
		}
		if lr := p.engine.tlsFailFor(&info, ordinal); lr != nil {
			p.log.Info("fault fired", zap.String("rule", lr.Name), zap.Stringer("trigger", lr.Trigger),
				zap.Stringer("action", lr.Action.Kind), zap.Stringer("client", conn.RemoteAddr()), zap.Uint64("seed", p.Seed))
			p.emit(Event{Time: time.Now(), Kind: EventFault, Client: conn.RemoteAddr().String(), By: "rule",
				Rule: lr.Name, Trigger: lr.Trigger.String(), Action: lr.Action.Kind.String()})
			return nil, errors.New("tls_fail rule " + lr.Name)
		}
		return nil, nil
	}
	return tls.Server(conn, cfg)
}

// Ready reports whether the proxy is accepting sessions with its rules
// loaded.
func (p *Proxy) Ready() bool { return p.ready.Load() }
