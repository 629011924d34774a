//go:build linux

package evloop

import (
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// Loops returns the group's loops.
func (g *Group) Loops() []*Loop { return g.loops }

// Submit queues f to run on the loop and reports whether it was queued:
// false once the loop has stopped.
func (l *Loop) Submit(f func()) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.exited {
		return false
	}
	l.work = append(l.work, f)
	l.wakeLocked()
	return true
}

// Done is closed once the loop has stopped.
func (l *Loop) Done() <-chan struct{} { return l.done }

// Add registers fd for h with events (EPOLLIN, EPOLLET, ...). On the loop
// only.
func (l *Loop) Add(fd int, h Handler, events uint32) error {
	if errno := l.add(fd, h, events); errno != nil {
		return os.NewSyscallError("epoll_ctl", errno)
	}
	return nil
}

// Remove takes fd out of the loop's set and forgets h, before the socket
// is closed or handed to goroutines. On the loop only.
func (l *Loop) Remove(fd int, h Handler) {
	rawEpollCtl(l.epfd, syscall.EPOLL_CTL_DEL, fd, nil)
	l.forget(fd, h)
}

// Forget drops h as fd's handler, before fd is closed: closing the
// socket takes it out of the epoll set, so no epoll_ctl is needed. On the
// loop only.
func (l *Loop) Forget(fd int, h Handler) { l.forget(fd, h) }

// NewConn hands fd, a connected non-blocking TCP socket taken out of its
// loop's set, to goroutines through the runtime's netpoller.
func NewConn(fd int, laddr, raddr net.Addr) (*Conn, error) { return newConn(fd, laddr, raddr) }

// The loops' socket calls. Each is one raw syscall (see sys.go), never
// blocking: the sockets are non-blocking.

// Accept accepts one connection from the listening socket lfd,
// non-blocking. Linux gives an accepted socket the listening socket's
// options: it has TCP_NODELAY if lfd has it (SetNoDelay), one setsockopt
// per connection saved. NoDelay tells whether the kernel did.
func Accept(lfd int) (int, net.Addr, syscall.Errno) { return rawAccept(lfd) }

// SetNoDelay sets TCP_NODELAY on the socket fd, listening or connected.
func SetNoDelay(fd int) syscall.Errno { return setNoDelay(fd) }

// ClearQuickAck clears TCP_QUICKACK on the socket fd, before its connect,
// so that the handshake's last ACK goes with its first write
// (clearQuickAck). Connect does it for its sockets.
func ClearQuickAck(fd int) syscall.Errno { return clearQuickAck(fd) }

// NoDelay reports whether the socket fd has TCP_NODELAY.
func NoDelay(fd int) (bool, syscall.Errno) { return noDelay(fd) }

// Read reads from the socket fd into b, again if a signal interrupted it.
func Read(fd int, b []byte) (int, syscall.Errno) {
	if len(b) == 0 {
		return 0, 0
	}
	for {
		n, errno := rawRecv(fd, b)
		if errno != syscall.EINTR {
			return n, errno
		}
	}
}

// Write writes b to the socket fd, as much as it takes, again if a signal
// interrupted it. A peer gone gives EPIPE, never SIGPIPE.
func Write(fd int, b []byte) (int, syscall.Errno) { return send(fd, b, syscall.MSG_NOSIGNAL) }

// WriteBeforeClose writes b to the socket fd as Write does, for a
// connection closed right after it: the kernel holds the bytes (MSG_MORE)
// and the close's FIN goes out in the same segment (tcp_send_fin tacks
// it onto an unsent tail), a segment less for both ends. If the socket is
// not closed after all, Push sends the bytes.
func WriteBeforeClose(fd int, b []byte) (int, syscall.Errno) {
	return send(fd, b, syscall.MSG_NOSIGNAL|syscall.MSG_MORE)
}

// send is Write and WriteBeforeClose, with sendto's flags.
func send(fd int, b []byte, flags int) (int, syscall.Errno) {
	if len(b) == 0 {
		return 0, 0
	}
	for {
		n, errno := rawSend(fd, b, flags)
		if errno != syscall.EINTR {
			return n, errno
		}
	}
}

// Push sends what WriteBeforeClose left held on fd: setting TCP_NODELAY
// pushes a socket's pending frames.
func Push(fd int) syscall.Errno { return setNoDelay(fd) }

// Close closes fd.
func Close(fd int) syscall.Errno {
	_, _, errno := syscall.RawSyscall(syscall.SYS_CLOSE, uintptr(fd), 0, 0)
	return errno
}

// CloseWrite sends a FIN: the peer reads EOF.
func CloseWrite(fd int) syscall.Errno {
	_, _, errno := syscall.RawSyscall(syscall.SYS_SHUTDOWN, uintptr(fd), syscall.SHUT_WR, 0)
	return errno
}

// Reset closes fd with SO_LINGER 0: the peer sees an RST.
func Reset(fd int) syscall.Errno {
	l := syscall.Linger{Onoff: 1}
	syscall.RawSyscall6(syscall.SYS_SETSOCKOPT, uintptr(fd), syscall.SOL_SOCKET, syscall.SO_LINGER,
		uintptr(unsafe.Pointer(&l)), unsafe.Sizeof(l), 0)
	return Close(fd)
}

// Connect opens a non-blocking TCP socket to ap, with TCP_NODELAY, and
// starts connecting; the socket turns writable when the connect is over,
// and SockError then says how it went. The handshake's last ACK waits for
// the socket's first write (clearQuickAck), which the caller makes as
// soon as it is writable.
func Connect(ap netip.AddrPort) (int, syscall.Errno) {
	fam := family(ap)
	fd, _, errno := syscall.RawSyscall(syscall.SYS_SOCKET, uintptr(fam),
		syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if errno != 0 {
		return -1, errno
	}
	setNoDelay(int(fd))
	clearQuickAck(int(fd))
	var rsa syscall.RawSockaddrAny
	var l uintptr
	a := ap.Addr().Unmap()
	port := ap.Port()
	if fam == syscall.AF_INET {
		p := (*syscall.RawSockaddrInet4)(unsafe.Pointer(&rsa))
		p.Family = syscall.AF_INET
		p.Port = port>>8 | port<<8
		p.Addr = a.As4()
		l = syscall.SizeofSockaddrInet4
	} else {
		p := (*syscall.RawSockaddrInet6)(unsafe.Pointer(&rsa))
		p.Family = syscall.AF_INET6
		p.Port = port>>8 | port<<8
		p.Addr = ap.Addr().As16()
		l = syscall.SizeofSockaddrInet6
	}
	_, _, errno = syscall.RawSyscall(syscall.SYS_CONNECT, fd, uintptr(unsafe.Pointer(&rsa)), l)
	if errno != 0 && errno != syscall.EINPROGRESS {
		Close(int(fd))
		return -1, errno
	}
	return int(fd), 0
}

// SockError returns fd's pending error (SO_ERROR): after a connect, 0 once
// it succeeded.
func SockError(fd int) syscall.Errno {
	var v int32
	l := uint32(4)
	_, _, errno := syscall.RawSyscall6(syscall.SYS_GETSOCKOPT, uintptr(fd), syscall.SOL_SOCKET, syscall.SO_ERROR,
		uintptr(unsafe.Pointer(&v)), uintptr(unsafe.Pointer(&l)), 0)
	if errno != 0 {
		return errno
	}
	return syscall.Errno(v)
}

// LocalAddr returns fd's local address.
func LocalAddr(fd int) net.Addr {
	var rsa syscall.RawSockaddrAny
	l := uint32(syscall.SizeofSockaddrAny)
	if _, _, errno := syscall.RawSyscall(syscall.SYS_GETSOCKNAME, uintptr(fd), uintptr(unsafe.Pointer(&rsa)),
		uintptr(unsafe.Pointer(&l))); errno != 0 {
		return &net.TCPAddr{}
	}
	return rawAddr(&rsa)
}

// Queue runs functions handed over by loops on goroutines of their own.
// Its one goroutine waits on an eventfd through the runtime's netpoller,
// so that a loop hands work over without waking a goroutine itself (which
// would put it on the loop's P, where it waits to be stolen: see
// BenchmarkHandoff); that goroutine starts one goroutine per function.
type Queue struct {
	mu     sync.Mutex
	jobs   []func()
	closed bool // guarded by mu
	efd    int
	f      *os.File
	done   chan struct{}
}

// NewQueue starts a queue; Close ends its goroutine.
func NewQueue() (*Queue, error) {
	efd, _, errno := syscall.RawSyscall(syscall.SYS_EVENTFD2, 0, syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if errno != 0 {
		return nil, os.NewSyscallError("eventfd2", errno)
	}
	q := &Queue{efd: int(efd), f: os.NewFile(efd, "eventfd"), done: make(chan struct{})}
	go q.run() // goroutine "evloop queue": ends with Close
	return q, nil
}

func (q *Queue) run() {
	defer close(q.done)
	var b [8]byte
	var jobs []func()
	for {
		if _, err := q.f.Read(b[:]); err != nil {
			return
		}
		q.mu.Lock()
		jobs, q.jobs = q.jobs, jobs[:0]
		q.mu.Unlock()
		for i, j := range jobs {
			go j() // goroutine: whatever the loop handed over
			jobs[i] = nil
		}
	}
}

// Go runs f on a goroutine of its own, soon; from a loop or anywhere else.
// After Close, f is dropped.
func (q *Queue) Go(f func()) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return
	}
	q.jobs = append(q.jobs, f)
	if len(q.jobs) == 1 {
		one := uint64(1)
		syscall.RawSyscall(syscall.SYS_WRITE, uintptr(q.efd), uintptr(unsafe.Pointer(&one)), 8)
	}
}

// Close ends the queue's goroutine once it has started what was queued.
func (q *Queue) Close() error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return nil
	}
	q.closed = true
	// Whatever is still queued starts now.
	jobs := q.jobs
	q.jobs = nil
	q.mu.Unlock()
	err := q.f.Close()
	<-q.done
	for _, j := range jobs {
		go j() // goroutine: whatever the loop handed over
	}
	return err
}

// Rebind makes h the handler of fd, registered already, from its next
// event on. On the loop only.
func (l *Loop) Rebind(fd int, h Handler) { l.fds.set(int32(fd), h) }

// KeepAliveIdle is how long a connection KeepAlive is on for may be quiet
// before its first probe: Go's default, as its interval is.
const KeepAliveIdle = 15 * time.Second

// KeepAlive turns TCP keep-alive on for fd with Go's defaults
// (KeepAliveIdle idle and interval, 9 probes), as
// net.TCPConn.SetKeepAliveConfig does.
func KeepAlive(fd int) syscall.Errno {
	secs := int(KeepAliveIdle / time.Second)
	return setKeepAlive(fd, true, secs, secs, 9)
}

// setKeepAlive turns TCP keep-alive on fd on, with its first probe after
// idle seconds, the next every interval seconds and count of them
// unanswered ending the connection, or off.
func setKeepAlive(fd int, on bool, idle, interval, count int) syscall.Errno {
	enable := 0
	if on {
		enable = 1
	}
	for _, o := range [][3]int{
		{syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, enable},
		{syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, idle},
		{syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL, interval},
		{syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT, count},
	} {
		v := int32(o[2])
		if _, _, errno := syscall.RawSyscall6(syscall.SYS_SETSOCKOPT, uintptr(fd), uintptr(o[0]), uintptr(o[1]),
			uintptr(unsafe.Pointer(&v)), 4, 0); errno != 0 || !on {
			return errno
		}
	}
	return 0
}
