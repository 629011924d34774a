//go:build linux

package evloop

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"
)

// Listener accepts TCP connections on the group's loops. The listening
// socket is in every loop's epoll set with EPOLLEXCLUSIVE, so one loop
// wakes per connection; it accepts one connection per wake and queues it
// for Accept, handed to the runtime's netpoller. Accept's goroutine is
// woken through a channel, so each connection pays the hop that
// BenchmarkHandoff measures for channels: this is scaffolding for loops
// that run the upgrade handshake themselves before any hand-off.
type Listener struct {
	fd    int
	g     *Group
	addr  net.Addr
	conns chan *Conn

	mu      sync.Mutex
	paused  []*Loop // loops that stopped accepting while conns was full
	closed  bool
	closing chan struct{}
}

// acceptQueue is how many accepted connections wait for Accept before the
// loops stop accepting (the kernel's backlog then holds the rest).
const acceptQueue = 1024

// listenEvents is what the listening socket is registered for: level
// triggered, one loop woken per connection.
const listenEvents = syscall.EPOLLIN | 1<<28 // EPOLLEXCLUSIVE

// Listen listens on addr, an IPv4 or IPv6 address and port, with
// TCP_DEFER_ACCEPT set as proxy.Listen sets it.
func (g *Group) Listen(addr string) (*Listener, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("evloop: listen %s: %w", addr, err)
	}
	fd, err := socket(ap)
	if err != nil {
		return nil, fmt.Errorf("evloop: listen %s: %w", addr, err)
	}
	fail := func(op string, err error) (*Listener, error) {
		syscall.Close(fd)
		return nil, fmt.Errorf("evloop: listen %s: %s: %w", addr, op, err)
	}
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
		return fail("setsockopt", err)
	}
	if err := syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_DEFER_ACCEPT, 1); err != nil {
		return fail("setsockopt", err)
	}
	if err := syscall.Bind(fd, sockaddr(ap)); err != nil {
		return fail("bind", err)
	}
	// The kernel caps the backlog at net.core.somaxconn (syscall's
	// SOMAXCONN, 128, is older than that setting's default of 4096).
	if err := syscall.Listen(fd, 1<<16-1); err != nil {
		return fail("listen", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		return fail("getsockname", err)
	}
	ln := &Listener{fd: fd, g: g, addr: tcpAddr(sa), conns: make(chan *Conn, acceptQueue), closing: make(chan struct{})}
	errs := make(chan error, len(g.loops))
	for _, l := range g.loops {
		l.submit(func() { errs <- l.add(fd, &acceptor{ln: ln, loop: l}, listenEvents) })
	}
	for range g.loops {
		if err := <-errs; err != nil {
			ln.Close()
			return nil, fmt.Errorf("evloop: listen %s: epoll_ctl: %w", addr, err)
		}
	}
	return ln, nil
}

// acceptor is the listening socket's handler in one loop.
type acceptor struct {
	ln   *Listener
	loop *Loop
}

func (a *acceptor) Ready(uint32) {
	ln, l := a.ln, a.loop
	// Under mu, the room seen is the room there is when the connection
	// is queued: loops send only under it, Accept only takes.
	ln.mu.Lock()
	defer ln.mu.Unlock()
	if len(ln.conns) == cap(ln.conns) {
		// Stop accepting here until Accept makes room; the socket is
		// level-triggered and would report the same connection again.
		// (A registration with EPOLLEXCLUSIVE cannot be modified, only
		// removed and added again.)
		rawEpollCtl(l.epfd, syscall.EPOLL_CTL_DEL, ln.fd, nil)
		ln.paused = append(ln.paused, l)
		return
	}
	fd, sa, errno := rawAccept(ln.fd)
	if errno != 0 {
		return // EAGAIN: another loop took it; anything else: the client is gone
	}
	setNoDelay(fd)
	c, err := newConn(fd, ln.addr, sa)
	if err != nil {
		return // newConn closed it
	}
	ln.conns <- c
}

// stopped is called when the loop stops; the Listener owns the socket.
func (a *acceptor) Stopped() {}

// Accept waits for the next connection.
func (ln *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-ln.conns:
		ln.resume()
		return c, nil
	case <-ln.closing:
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: ln.addr, Err: net.ErrClosed}
	}
}

// resume lets the loops that paused accepting accept again.
func (ln *Listener) resume() {
	ln.mu.Lock()
	paused := ln.paused
	ln.paused = nil
	closed := ln.closed
	ln.mu.Unlock()
	if closed {
		return
	}
	for _, l := range paused {
		l.submit(func() {
			ln.mu.Lock()
			closed := ln.closed // its number may be another socket's by now
			ln.mu.Unlock()
			if !closed {
				ev := syscall.EpollEvent{Events: listenEvents, Fd: int32(ln.fd)}
				rawEpollCtl(l.epfd, syscall.EPOLL_CTL_ADD, ln.fd, &ev)
			}
		})
	}
}

// Close stops listening. Connections accepted but not yet taken by Accept
// are closed.
func (ln *Listener) Close() error {
	ln.mu.Lock()
	if ln.closed {
		ln.mu.Unlock()
		return &net.OpError{Op: "close", Net: "tcp", Addr: ln.addr, Err: net.ErrClosed}
	}
	ln.closed = true
	close(ln.closing)
	ln.mu.Unlock()
	for _, l := range ln.g.loops {
		done := make(chan struct{})
		l.submit(func() {
			// Out of the set, and forgotten, before the number can be
			// reused.
			rawEpollCtl(l.epfd, syscall.EPOLL_CTL_DEL, ln.fd, nil)
			l.fds.del(int32(ln.fd))
			close(done)
		})
		select {
		case <-done:
		case <-l.done: // the group was closed: nothing runs the queue
		}
	}
	err := syscall.Close(ln.fd)
	for {
		select {
		case c := <-ln.conns:
			c.Close()
		default:
			if err != nil {
				return &net.OpError{Op: "close", Net: "tcp", Addr: ln.addr, Err: os.NewSyscallError("close", err)}
			}
			return nil
		}
	}
}

// Addr returns the address listened on.
func (ln *Listener) Addr() net.Addr { return ln.addr }

// Dial connects to addr; ctx bounds the connect. The connection is
// waited for through the runtime's netpoller, as net.Dialer does, without
// its getsockname and getpeername.
func Dial(ctx context.Context, addr netip.AddrPort) (*Conn, error) {
	raddr := net.TCPAddrFromAddrPort(addr)
	opErr := func(err error) error {
		return &net.OpError{Op: "dial", Net: "tcp", Addr: raddr, Err: err}
	}
	if err := ctx.Err(); err != nil {
		return nil, opErr(err)
	}
	fd, err := socket(addr)
	if err != nil {
		return nil, opErr(os.NewSyscallError("socket", err))
	}
	syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
	if err := syscall.Connect(fd, sockaddr(addr)); err != nil && err != syscall.EINPROGRESS {
		syscall.Close(fd)
		return nil, opErr(os.NewSyscallError("connect", err))
	}
	c, err := newConn(fd, nil, raddr)
	if err != nil {
		return nil, opErr(err)
	}
	// ctx's end, by deadline or cancel, ends the wait; ctx.Err is set
	// by then, so the error says which.
	stop := context.AfterFunc(ctx, func() { c.f.SetWriteDeadline(time.Unix(1, 0)) })
	var connErr error
	// f is called before the first wait too, when the connect may be
	// under way: SO_ERROR is 0 then as well, and only getpeername tells
	// a connected socket from one still connecting (as net does).
	err = c.rc.Write(func(fd uintptr) bool {
		soerr, err := syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_ERROR)
		if err != nil {
			connErr = os.NewSyscallError("getsockopt", err)
			return true
		}
		switch e := syscall.Errno(soerr); e {
		case 0:
		case syscall.EINPROGRESS, syscall.EALREADY, syscall.EINTR:
			return false
		default:
			connErr = os.NewSyscallError("connect", e)
			return true
		}
		if _, err := syscall.Getpeername(int(fd)); err == syscall.ENOTCONN {
			return false // not yet: wait for writability
		} else if err != nil {
			connErr = os.NewSyscallError("getpeername", err)
		}
		return true
	})
	stop()
	if err == nil {
		err = connErr
	}
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	if err != nil {
		c.Close()
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, opErr(err)
	}
	c.f.SetWriteDeadline(time.Time{})
	if sa, err := syscall.Getsockname(int(c.fd())); err == nil {
		c.laddr = tcpAddr(sa)
	}
	return c, nil
}
