package proxy

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"
)

// side names one end of a session.
type side uint8

const (
	sideClient side = iota
	sideUpstream
)

func (s side) String() string {
	if s == sideClient {
		return "client"
	}
	return "upstream"
}

const (
	// frameWriteSize is the pooled buffer a batch of frames is written
	// through; a session holds one only while it writes.
	frameWriteSize = 32 << 10
)

// peer is one side of a session: its connection, the reader its frames
// come through, and what it has said so far.
type peer struct {
	side side
	conn net.Conn
	fd   int          // the socket, for the poller; -1 when not a plain TCP connection
	br   *frameReader // read only by the copier whose source this peer is

	wmu     sync.Mutex             // serializes writes to conn
	bw      *bufio.Writer          // pooled; non-nil while a batch is written; guarded by wmu
	pending atomic.Pointer[[]byte] // a close frame of the proxy's own, waiting for wmu

	// Counted by the copier reading this peer.
	frames, messages, bytes atomic.Uint64

	fragmented bool // a data message from this peer is unfinished; copier only

	sentClose atomic.Bool // this peer sent a close frame
	gotClose  atomic.Bool // a close frame was written to this peer
	gone      atomic.Bool // this peer's connection ended
	killed    atomic.Bool // a reset or drop rule ended it
	keptAlive atomic.Bool // keep-alive was turned on for conn
	closeInfo atomic.Pointer[closeInfo]
}

// closeInfo is what a close frame said.
type closeInfo struct {
	code   ws.StatusCode // 0: the frame had no code (the receiver reports 1005)
	reason string
}

func newPeer(s side, conn net.Conn, br *frameReader) *peer {
	p := &peer{side: s, conn: conn, br: br, fd: -1}
	c := conn
	if pc, ok := c.(*prefixConn); ok {
		c = pc.Conn // its prefix is read by now
	}
	if sc, ok := c.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			raw.Control(func(fd uintptr) { p.fd = int(fd) })
		}
	}
	return p
}

// keepAlive turns on TCP keep-alive for the peer's connection, once: when
// the connection falls quiet (its copier parks), or when the session opens
// if it cannot park.
func (p *peer) keepAlive() {
	if !p.keptAlive.Swap(true) {
		keepAlive(p.conn)
	}
}

var writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, frameWriteSize) }}

// writer returns the peer's batch writer, taking one from the pool if it
// has none. wmu must be held.
func (p *peer) writer() *bufio.Writer {
	if p.bw == nil {
		p.bw = writerPool.Get().(*bufio.Writer)
		p.bw.Reset(p.conn)
	}
	return p.bw
}

// flush writes what the batch writer holds and gives it back to the pool.
// wmu must be held.
func (p *peer) flush() error {
	if p.bw == nil {
		return nil
	}
	err := p.bw.Flush()
	p.bw.Reset(nil)
	writerPool.Put(p.bw)
	p.bw = nil
	return err
}

// unlock releases wmu and then writes a pending close frame of the proxy's
// own, which may have been queued while wmu was held.
func (p *peer) unlock() {
	p.wmu.Unlock()
	if p.pending.Load() != nil {
		p.tryWritePending()
	}
}

// queueClose makes frame the next thing written to the peer, as soon as no
// relayed frame is half written, unless a close frame is queued already:
// the first stands, which may be partly written (a loop's, left to the
// copiers by laneSession.leave).
func (p *peer) queueClose(frame []byte) {
	p.pending.CompareAndSwap(nil, &frame)
	p.tryWritePending()
}

func (p *peer) tryWritePending() {
	if !p.wmu.TryLock() {
		return // the holder writes it when it unlocks
	}
	defer p.wmu.Unlock()
	f := p.pending.Swap(nil)
	if f == nil || p.gotClose.Load() || p.gone.Load() {
		return
	}
	p.writeClose(*f)
	p.gotClose.Store(true)
}

// writeClose writes what the batch writer holds and then a close frame of
// the proxy's own, within closeGrace. When nothing is batched, on a plain
// socket, it first writes the frame without waiting, which takes it whole
// unless the peer has stopped reading, and sets the deadline only for what
// is left: a wave closing thousands of sessions is spared a timer update
// for each. wmu must be held.
func (p *peer) writeClose(b []byte) {
	if p.bw == nil && p.br != nil && p.br.raw != nil { // br is set under wmu
		raw := p.br.raw
		var n int
		var err error
		raw.Write(func(fd uintptr) bool {
			n, err = syscall.Write(int(fd), b)
			return true // never wait here
		})
		if err == nil && n == len(b) {
			return
		}
		if err != nil && !errors.Is(err, syscall.EAGAIN) && !errors.Is(err, syscall.EINTR) {
			return // the connection is broken; its copier finds out
		}
		b = b[max(n, 0):]
	}
	p.conn.SetWriteDeadline(time.Now().Add(closeGrace))
	if p.flush() == nil {
		p.conn.Write(b)
	}
}

// closeWrite sends a FIN, mirroring a peer that ended without a close frame.
func (p *peer) closeWrite() {
	type closeWriter interface{ CloseWrite() error }
	if cw, ok := rawConn(p.conn).(closeWriter); ok {
		cw.CloseWrite()
		return
	}
	p.conn.Close()
}

// reset ends the connection with a TCP RST (SO_LINGER 0), mirroring a peer
// whose connection was reset.
func (p *peer) reset() {
	c := rawConn(p.conn)
	if l, ok := c.(interface{ SetLinger(int) error }); ok {
		l.SetLinger(0)
	}
	c.Close()
}

// isReset reports whether err is the peer resetting its connection.
func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET)
}

// isEOF reports whether err is the peer closing its connection with a FIN,
// between frames or in the middle of one.
func isEOF(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// rawConn returns the transport under c's TLS and buffering wrappers.
func rawConn(c net.Conn) net.Conn {
	for {
		w, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return c
		}
		c = w.NetConn()
	}
}

// isTLS reports whether c, under any buffering wrapper, is a TLS connection.
func isTLS(c net.Conn) bool {
	for {
		if _, ok := c.(*tls.Conn); ok {
			return true
		}
		w, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return false
		}
		c = w.NetConn()
	}
}

// closeFrame returns a close frame with code and reason, masked when it
// goes to the upstream (RFC 6455 section 5.3). A zero code gives an empty
// payload, which the receiver reports as 1005.
func closeFrame(to side, code ws.StatusCode, reason string) []byte {
	var body []byte
	if code != 0 {
		body = ws.NewCloseFrameBody(code, reason)
	}
	f := ws.NewCloseFrame(body)
	if to == sideUpstream {
		f = ws.MaskFrameInPlace(f)
	}
	b, _ := ws.CompileFrame(f)
	return b
}
