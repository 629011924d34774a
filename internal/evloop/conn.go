//go:build linux

package evloop

import (
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Conn is a TCP connection registered with a loop, used from goroutines as
// a net.Conn. Reads and writes are non-blocking syscalls; when one would
// block, the goroutine waits until the loop sees the socket turn readable
// (or writable), a deadline passes or the Conn is closed.
type Conn struct {
	fd    int
	loop  *Loop
	laddr net.Addr
	raddr net.Addr

	// A token in rtok (wtok) says the socket may have turned readable
	// (writable) since the token was last taken: an edge the loop saw, or
	// a deadline change. A reader takes the token, tries, and waits for
	// the next one if the try would block; a token left over makes one
	// try that finds nothing, never a missed edge.
	rtok, wtok chan struct{}

	rmu, wmu sync.Mutex // one reader, one writer at a time, as net.Conn
	rdl, wdl deadline

	closed  atomic.Bool
	closing chan struct{} // closed by Close
	once    sync.Once
}

// deadline is a read or write deadline that a waiting goroutine obeys.
type deadline struct {
	t atomic.Int64 // UnixNano; 0: none
}

func (d *deadline) set(t time.Time) {
	if t.IsZero() {
		d.t.Store(0)
	} else {
		d.t.Store(max(t.UnixNano(), 1))
	}
}

// left reports how long until the deadline; ok false when there is none.
func (d *deadline) left() (time.Duration, bool) {
	t := d.t.Load()
	if t == 0 {
		return 0, false
	}
	return time.Until(time.Unix(0, t)), true
}

func newConn(l *Loop, fd int, laddr, raddr net.Addr) *Conn {
	return &Conn{fd: fd, loop: l, laddr: laddr, raddr: raddr,
		rtok: make(chan struct{}, 1), wtok: make(chan struct{}, 1), closing: make(chan struct{})}
}

// connEvents is what a Conn's socket is registered for.
const connEvents = syscall.EPOLLIN | syscall.EPOLLOUT | syscall.EPOLLRDHUP | 1<<31 // EPOLLET

// ready is called by the loop with the socket's events.
func (c *Conn) ready(ev uint32) {
	if ev&(syscall.EPOLLIN|syscall.EPOLLRDHUP|syscall.EPOLLHUP|syscall.EPOLLERR) != 0 {
		signal(c.rtok)
	}
	if ev&(syscall.EPOLLOUT|syscall.EPOLLHUP|syscall.EPOLLERR) != 0 {
		signal(c.wtok)
	}
}

// signal leaves a token in ch unless one is there.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// wait blocks until tok has a token, d passes or c is closed.
func (c *Conn) wait(tok chan struct{}, d *deadline) error {
	for {
		left, ok := d.left()
		if !ok {
			select {
			case <-tok:
				return nil
			case <-c.closing:
				return net.ErrClosed
			}
		}
		if left <= 0 {
			return os.ErrDeadlineExceeded
		}
		t := time.NewTimer(left)
		select {
		case <-tok:
			t.Stop()
			return nil
		case <-c.closing:
			t.Stop()
			return net.ErrClosed
		case <-t.C:
			// Look again: the deadline may have moved meanwhile.
		}
	}
}

// Read reads like net.Conn's Read: io.EOF when the peer has closed its
// side, an error wrapping syscall.ECONNRESET when it reset the connection.
func (c *Conn) Read(b []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if len(b) == 0 {
		return 0, nil
	}
	for {
		if c.closed.Load() {
			return 0, c.opError("read", net.ErrClosed)
		}
		n, err := syscall.Read(c.fd, b)
		switch {
		case err == nil && n > 0:
			return n, nil
		case err == nil:
			return 0, io.EOF
		case err == syscall.EINTR:
			continue
		case err != syscall.EAGAIN:
			return 0, c.opError("read", os.NewSyscallError("read", err))
		}
		if err := c.wait(c.rtok, &c.rdl); err != nil {
			return 0, c.opError("read", err)
		}
	}
}

// Write writes all of b unless an error, a deadline or Close stops it.
func (c *Conn) Write(b []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	done := 0
	for done < len(b) {
		if c.closed.Load() {
			return done, c.opError("write", net.ErrClosed)
		}
		n, err := syscall.Write(c.fd, b[done:])
		if n > 0 {
			done += n
		}
		switch {
		case err == nil || err == syscall.EINTR:
			continue
		case err != syscall.EAGAIN:
			return done, c.opError("write", os.NewSyscallError("write", err))
		}
		if err := c.wait(c.wtok, &c.wdl); err != nil {
			return done, c.opError("write", err)
		}
	}
	return done, nil
}

func (c *Conn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.laddr, Addr: c.raddr, Err: err}
}

// Close closes the socket; a Read or Write waiting on it returns
// net.ErrClosed.
func (c *Conn) Close() error {
	first := false
	c.once.Do(func() {
		first = true
		c.closed.Store(true)
		close(c.closing)
		// Forget the handler first: the loop runs its queue in order, so
		// a socket that reuses the number once it is closed, registered
		// through the queue, is registered after this.
		c.loop.submit(func() { c.loop.forget(c.fd, c) })
	})
	if !first {
		return c.opError("close", net.ErrClosed)
	}
	// Wait for a Read or Write under way, which ends at once now that
	// closing is closed: the number must not be closed, and perhaps
	// reused by another socket, while one of them is about to use it.
	c.rmu.Lock()
	c.wmu.Lock()
	err := syscall.Close(c.fd)
	c.wmu.Unlock()
	c.rmu.Unlock()
	if err != nil {
		return c.opError("close", os.NewSyscallError("close", err))
	}
	return nil
}

// shut closes the Conn when its loop stops.
func (c *Conn) shut() {
	c.once.Do(func() {
		c.closed.Store(true)
		close(c.closing)
		go func() { // goroutine "evloop-shut": takes the locks Read and Write hold while waiting
			c.rmu.Lock()
			c.wmu.Lock()
			syscall.Close(c.fd)
			c.wmu.Unlock()
			c.rmu.Unlock()
		}()
	})
}

// CloseWrite shuts down the writing side: the peer reads EOF.
func (c *Conn) CloseWrite() error {
	if c.closed.Load() {
		return c.opError("close", net.ErrClosed)
	}
	if err := syscall.Shutdown(c.fd, syscall.SHUT_WR); err != nil {
		return c.opError("close", os.NewSyscallError("shutdown", err))
	}
	return nil
}

// SetLinger sets SO_LINGER as net.TCPConn's SetLinger does: with 0, Close
// resets the connection.
func (c *Conn) SetLinger(sec int) error {
	l := syscall.Linger{}
	if sec >= 0 {
		l.Onoff, l.Linger = 1, int32(sec)
	}
	if err := syscall.SetsockoptLinger(c.fd, syscall.SOL_SOCKET, syscall.SO_LINGER, &l); err != nil {
		return c.opError("set", os.NewSyscallError("setsockopt", err))
	}
	return nil
}

// LocalAddr returns the local address.
func (c *Conn) LocalAddr() net.Addr { return c.laddr }

// RemoteAddr returns the peer's address.
func (c *Conn) RemoteAddr() net.Addr { return c.raddr }

// SetDeadline sets both deadlines.
func (c *Conn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

// SetReadDeadline sets the read deadline; a Read waiting looks at it again.
func (c *Conn) SetReadDeadline(t time.Time) error {
	if c.closed.Load() {
		return c.opError("set", net.ErrClosed)
	}
	c.rdl.set(t)
	signal(c.rtok)
	return nil
}

// SetWriteDeadline sets the write deadline; a Write waiting looks at it
// again.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	if c.closed.Load() {
		return c.opError("set", net.ErrClosed)
	}
	c.wdl.set(t)
	signal(c.wtok)
	return nil
}

// SyscallConn returns the socket as a syscall.RawConn whose Read and Write
// wait as the Conn's do.
func (c *Conn) SyscallConn() (syscall.RawConn, error) {
	return rawConn{c}, nil
}

type rawConn struct{ c *Conn }

func (r rawConn) Control(f func(fd uintptr)) error {
	if r.c.closed.Load() {
		return r.c.opError("raw-control", net.ErrClosed)
	}
	f(uintptr(r.c.fd))
	return nil
}

func (r rawConn) Read(f func(fd uintptr) bool) error {
	c := r.c
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for {
		if c.closed.Load() {
			return c.opError("raw-read", net.ErrClosed)
		}
		if f(uintptr(c.fd)) {
			return nil
		}
		if err := c.wait(c.rtok, &c.rdl); err != nil {
			return c.opError("raw-read", err)
		}
	}
}

func (r rawConn) Write(f func(fd uintptr) bool) error {
	c := r.c
	c.wmu.Lock()
	defer c.wmu.Unlock()
	for {
		if c.closed.Load() {
			return c.opError("raw-write", net.ErrClosed)
		}
		if f(uintptr(c.fd)) {
			return nil
		}
		if err := c.wait(c.wtok, &c.wdl); err != nil {
			return c.opError("raw-write", err)
		}
	}
}
