//go:build linux

package evloop

import (
	"net"
	"net/netip"
	"syscall"
	"time"
	"unsafe"
)

// The loops' own syscalls go through syscall.RawSyscall: the runtime does
// not account for them, so it does not hand the loop's P to another thread
// during one (see the package comment). They are all non-blocking but for
// the wait, whose timeout bounds it.

func rawEpollWait(epfd int, events []syscall.EpollEvent, msec int) (int, syscall.Errno) {
	n, _, errno := syscall.RawSyscall6(syscall.SYS_EPOLL_PWAIT, uintptr(epfd),
		uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), uintptr(msec), 0, 0)
	return int(n), errno
}

// sysEpollPwait2 is epoll_pwait2's number, the same on every architecture
// (Linux 5.11 and later).
const sysEpollPwait2 = 441

// rawEpollWaitFor waits as rawEpollWait does, for at most d, to the
// nanosecond with epoll_pwait2 where the kernel has it and allows it.
// noPwait2 is set, and the wait made in milliseconds rounded up, where
// not.
func rawEpollWaitFor(epfd int, events []syscall.EpollEvent, d time.Duration, noPwait2 *bool) (int, syscall.Errno) {
	if !*noPwait2 {
		ts := syscall.NsecToTimespec(int64(d))
		n, _, errno := syscall.RawSyscall6(sysEpollPwait2, uintptr(epfd),
			uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), uintptr(unsafe.Pointer(&ts)), 0, 0)
		if errno != syscall.ENOSYS && errno != syscall.EPERM {
			return int(n), errno
		}
		// ENOSYS: a kernel before 5.11; EPERM: a seccomp filter that
		// predates the syscall (as container runtimes' defaults did).
		*noPwait2 = true
	}
	return rawEpollWait(epfd, events, ceilMillis(d))
}

// ceilMillis is d in milliseconds, rounded up, so that a wait never ends
// before a timer is due.
func ceilMillis(d time.Duration) int {
	return int((d + time.Millisecond - 1) / time.Millisecond)
}

func rawEpollCtl(epfd, op, fd int, ev *syscall.EpollEvent) syscall.Errno {
	_, _, errno := syscall.RawSyscall6(syscall.SYS_EPOLL_CTL, uintptr(epfd), uintptr(op), uintptr(fd),
		uintptr(unsafe.Pointer(ev)), 0, 0)
	return errno
}

// rawRecv and rawSend are a socket's reads and writes: recvfrom and sendto
// go to the socket directly, where read and write pass through the file
// layer first (its permission and notification hooks), which costs about
// 0.2 µs more per read and write on loopback (BenchmarkSocketCalls).
func rawRecv(fd int, b []byte) (int, syscall.Errno) {
	n, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), 0, 0, 0)
	return int(n), errno
}

func rawSend(fd int, b []byte, flags int) (int, syscall.Errno) {
	n, _, errno := syscall.RawSyscall6(syscall.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)),
		uintptr(flags), 0, 0)
	return int(n), errno
}

// rawRead reads an eventfd.
func rawRead(fd int, b []byte) (int, syscall.Errno) {
	n, _, errno := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	return int(n), errno
}

// rawAccept accepts one connection, non-blocking and close-on-exec. The
// socket has the listening socket's options, TCP_NODELAY among them.
func rawAccept(lfd int) (int, net.Addr, syscall.Errno) {
	var rsa syscall.RawSockaddrAny
	l := uint32(syscall.SizeofSockaddrAny)
	fd, _, errno := syscall.RawSyscall6(syscall.SYS_ACCEPT4, uintptr(lfd), uintptr(unsafe.Pointer(&rsa)),
		uintptr(unsafe.Pointer(&l)), syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0, 0)
	if errno != 0 {
		return -1, nil, errno
	}
	return int(fd), rawAddr(&rsa), 0
}

// setNoDelay sets TCP_NODELAY on fd.
func setNoDelay(fd int) syscall.Errno {
	one := int32(1)
	_, _, errno := syscall.RawSyscall6(syscall.SYS_SETSOCKOPT, uintptr(fd), syscall.IPPROTO_TCP, syscall.TCP_NODELAY,
		uintptr(unsafe.Pointer(&one)), 4, 0)
	return errno
}

// clearQuickAck clears TCP_QUICKACK on fd (tcp(7)). Cleared on a socket
// before its connect, it has Linux send the handshake's last ACK with the
// socket's first data rather than on its own (tcp_rcv_synsent_state_process
// delays it for a socket in delayed-ACK mode, up to 200 ms if no data
// comes): one segment fewer per connection, for a caller that writes as
// soon as the connect is over. Data written that promptly after the
// handshake also has Linux treat the connection as interactive from
// then on (delayed-ACK mode, which any connection enters once it answers
// promptly what it received): its ACKs ride on the data it sends next,
// or go alone when the delayed-ACK timer fires.
func clearQuickAck(fd int) syscall.Errno {
	zero := int32(0)
	_, _, errno := syscall.RawSyscall6(syscall.SYS_SETSOCKOPT, uintptr(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK,
		uintptr(unsafe.Pointer(&zero)), 4, 0)
	return errno
}

// noDelay reports whether fd has TCP_NODELAY.
func noDelay(fd int) (bool, syscall.Errno) {
	var v int32
	l := uint32(4)
	_, _, errno := syscall.RawSyscall6(syscall.SYS_GETSOCKOPT, uintptr(fd), syscall.IPPROTO_TCP, syscall.TCP_NODELAY,
		uintptr(unsafe.Pointer(&v)), uintptr(unsafe.Pointer(&l)), 0)
	return v != 0, errno
}

// rawAddr decodes an IPv4 or IPv6 socket address.
func rawAddr(rsa *syscall.RawSockaddrAny) net.Addr {
	switch rsa.Addr.Family {
	case syscall.AF_INET:
		p := (*syscall.RawSockaddrInet4)(unsafe.Pointer(rsa))
		port := int(p.Port>>8 | p.Port<<8) // network byte order
		return net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.AddrFrom4(p.Addr), uint16(port)))
	case syscall.AF_INET6:
		p := (*syscall.RawSockaddrInet6)(unsafe.Pointer(rsa))
		port := int(p.Port>>8 | p.Port<<8)
		return net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.AddrFrom16(p.Addr), uint16(port)))
	}
	return &net.TCPAddr{}
}

// socket opens a non-blocking, close-on-exec TCP socket for ap's family.
func socket(ap netip.AddrPort) (int, error) {
	return syscall.Socket(family(ap), syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
}

// family is the address family of a socket to or at ap: IPv4 for an IPv4
// address or one mapped into IPv6.
func family(ap netip.AddrPort) int {
	if ap.Addr().Is6() && !ap.Addr().Is4In6() {
		return syscall.AF_INET6
	}
	return syscall.AF_INET
}

func sockaddr(ap netip.AddrPort) syscall.Sockaddr {
	a := ap.Addr().Unmap()
	if a.Is4() {
		return &syscall.SockaddrInet4{Port: int(ap.Port()), Addr: a.As4()}
	}
	return &syscall.SockaddrInet6{Port: int(ap.Port()), Addr: a.As16()}
}

func tcpAddr(sa syscall.Sockaddr) net.Addr {
	switch sa := sa.(type) {
	case *syscall.SockaddrInet4:
		return net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port)))
	case *syscall.SockaddrInet6:
		return net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port)))
	}
	return &net.TCPAddr{}
}
