//go:build linux

package evloop

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// socketPair returns the descriptors of both ends of a loopback TCP
// connection, non-blocking; the caller closes them.
func socketPair(t testing.TB) (a, b int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	fd := func(c net.Conn) int {
		// A copy of the connection's descriptor, which stays non-blocking
		// (File would make it blocking).
		defer c.Close()
		rc, err := c.(*net.TCPConn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		d := -1
		if err := rc.Control(func(fd uintptr) { d, err = syscall.Dup(int(fd)) }); err != nil || d < 0 {
			t.Fatalf("dup: %v", err)
		}
		return d
	}
	return fd(c), fd(s)
}

func TestReadWrite(t *testing.T) {
	a, b := socketPair(t)
	t.Cleanup(func() { Close(a); Close(b) })
	buf := make([]byte, 64)
	if n, errno := Read(b, buf); errno != syscall.EAGAIN {
		t.Fatalf("read with nothing sent: got %d, %v; want EAGAIN", n, errno)
	}
	if n, errno := Write(a, nil); n != 0 || errno != 0 {
		t.Fatalf("write of nothing: got %d, %v; want 0, 0", n, errno)
	}
	msg := []byte("hello, loop")
	if n, errno := Write(a, msg); n != len(msg) || errno != 0 {
		t.Fatalf("write: got %d, %v; want %d, 0", n, errno, len(msg))
	}
	var got []byte
	for deadline := time.Now().Add(5 * time.Second); len(got) < len(msg) && time.Now().Before(deadline); {
		n, errno := Read(b, buf)
		if errno == syscall.EAGAIN {
			time.Sleep(time.Millisecond)
			continue
		}
		if errno != 0 {
			t.Fatalf("read: got %v; want no error", errno)
		}
		got = append(got, buf[:n]...)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("read: got %q; want %q", got, msg)
	}
	CloseWrite(a)
	for deadline := time.Now().Add(5 * time.Second); ; {
		n, errno := Read(b, buf)
		if errno == syscall.EAGAIN && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
			continue
		}
		if n != 0 || errno != 0 {
			t.Fatalf("read after the peer's FIN: got %d, %v; want 0, 0", n, errno)
		}
		break
	}
}

// TestWriteToResetPeer writes to a socket whose peer has reset it: the
// write fails, and the process gets no SIGPIPE.
func TestWriteToResetPeer(t *testing.T) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGPIPE)
	defer signal.Stop(sig)

	a, b := socketPair(t)
	t.Cleanup(func() { Close(a) })
	Reset(b)
	var errno syscall.Errno
	for deadline := time.Now().Add(5 * time.Second); errno == 0 && time.Now().Before(deadline); {
		_, errno = Write(a, []byte("x"))
		time.Sleep(time.Millisecond)
	}
	if errno != syscall.EPIPE && errno != syscall.ECONNRESET {
		t.Fatalf("write after the peer's reset: got %v; want EPIPE or ECONNRESET", errno)
	}
	for range 3 { // the socket is dead now: every write fails with EPIPE
		if _, errno = Write(a, []byte("x")); errno != syscall.EPIPE {
			t.Fatalf("write to a dead socket: got %v; want EPIPE", errno)
		}
	}
	select {
	case s := <-sig:
		t.Fatalf("got signal %v; want none", s)
	case <-time.After(50 * time.Millisecond):
	}
}

// BenchmarkSocketCalls writes 1 KiB to one end of a loopback connection
// and reads it at the other: through Write and Read (sendto and recvfrom)
// and, to compare, through write and read.
func BenchmarkSocketCalls(b *testing.B) {
	for _, tc := range []struct {
		name        string
		write, read func(fd int, p []byte) (int, syscall.Errno)
	}{
		{"send-recv", Write, Read},
		{"write-read", func(fd int, p []byte) (int, syscall.Errno) {
			n, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
			return int(n), errno
		}, rawRead},
	} {
		b.Run(tc.name, func(b *testing.B) {
			a, c := socketPair(b)
			b.Cleanup(func() { Close(a); Close(c) })
			buf := make([]byte, 1024)
			b.ReportAllocs()
			for b.Loop() {
				if n, errno := tc.write(a, buf); n != len(buf) || errno != 0 {
					b.Fatalf("write: got %d, %v; want %d, 0", n, errno, len(buf))
				}
				for got := 0; got < len(buf); {
					n, errno := tc.read(c, buf)
					if errno != 0 && errno != syscall.EAGAIN {
						b.Fatalf("read: got %v; want no error", errno)
					}
					got += n
				}
			}
		})
	}
}

// TestKeepAliveOptions sets keep-alive on a Conn as net.TCPConn's
// SetKeepAliveConfig does, Go's defaults for what is not given, turns it
// off again, and sets it on a loop's socket with KeepAlive.
func TestKeepAliveOptions(t *testing.T) {
	g := newGroup(t, 1)
	c, _ := pair(t, g)
	get := func(fd, level, opt int) int {
		v, err := syscall.GetsockoptInt(fd, level, opt)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	opts := func(fd int) [4]int {
		return [4]int{get(fd, syscall.SOL_SOCKET, syscall.SO_KEEPALIVE), get(fd, syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE),
			get(fd, syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL), get(fd, syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT)}
	}
	connOpts := func() (o [4]int) {
		rc, _ := c.SyscallConn()
		rc.Control(func(fd uintptr) { o = opts(int(fd)) })
		return o
	}
	for _, tc := range []struct {
		cfg  net.KeepAliveConfig
		want [4]int
	}{
		{net.KeepAliveConfig{Enable: true}, [4]int{1, 15, 15, 9}},
		{net.KeepAliveConfig{Enable: true, Idle: 30 * time.Second, Interval: 1500 * time.Millisecond, Count: 3}, [4]int{1, 30, 2, 3}},
	} {
		if err := c.SetKeepAliveConfig(tc.cfg); err != nil {
			t.Fatalf("SetKeepAliveConfig(%+v): got %v; want nil", tc.cfg, err)
		}
		if got := connOpts(); got != tc.want {
			t.Errorf("SetKeepAliveConfig(%+v): got options %v; want %v", tc.cfg, got, tc.want)
		}
	}
	if err := c.SetKeepAliveConfig(net.KeepAliveConfig{}); err != nil {
		t.Fatalf("SetKeepAliveConfig off: got %v; want nil", err)
	}
	if got := connOpts()[0]; got != 0 {
		t.Errorf("SO_KEEPALIVE once off: got %d; want 0", got)
	}

	a, b := socketPair(t)
	t.Cleanup(func() { Close(a); Close(b) })
	if errno := KeepAlive(a); errno != 0 {
		t.Fatalf("KeepAlive: got %v; want 0", errno)
	}
	if got, want := opts(a), [4]int{1, 15, 15, 9}; got != want {
		t.Errorf("KeepAlive: got options %v; want %v", got, want)
	}
}

// rawListener returns a listening loopback socket, non-blocking, with
// TCP_NODELAY if nodelay; it is closed when the test ends.
func rawListener(t *testing.T, nodelay bool) (fd int, addr syscall.Sockaddr) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if nodelay {
		if errno := SetNoDelay(fd); errno != 0 {
			t.Fatalf("SetNoDelay on the listener: got %v; want 0", errno)
		}
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 8); err != nil {
		t.Fatal(err)
	}
	addr, err = syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return fd, addr
}

// TestAcceptNoDelay holds Accept to what the loops count on: an accepted
// socket has TCP_NODELAY exactly when the listening socket has it, which
// NoDelay reports; Connect's sockets have it.
func TestAcceptNoDelay(t *testing.T) {
	for _, listenerHas := range []bool{true, false} {
		t.Run(fmt.Sprintf("listener %v", listenerHas), func(t *testing.T) {
			lfd, addr := rawListener(t, listenerHas)
			c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", addr.(*syscall.SockaddrInet4).Port))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			var fd int
			var errno syscall.Errno
			for range 100 { // the connection may reach the queue a little after Dial returns
				if fd, _, errno = Accept(lfd); errno != syscall.EAGAIN {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			if errno != 0 {
				t.Fatalf("Accept: got %v; want 0", errno)
			}
			defer syscall.Close(fd)
			on, errno := NoDelay(fd)
			if errno != 0 || on != listenerHas {
				t.Errorf("NoDelay of the accepted socket: got %v, %v; want %v, 0", on, errno, listenerHas)
			}
			if !listenerHas {
				SetNoDelay(fd)
				if on, _ := NoDelay(fd); !on {
					t.Errorf("NoDelay after SetNoDelay: got false; want true")
				}
			}
		})
	}
	t.Run("connect", func(t *testing.T) {
		_, addr := rawListener(t, false)
		fd, errno := Connect(netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(addr.(*syscall.SockaddrInet4).Port)))
		if errno != 0 && errno != syscall.EINPROGRESS {
			t.Fatalf("Connect: got %v; want 0", errno)
		}
		defer syscall.Close(fd)
		if on, errno := NoDelay(fd); errno != 0 || !on {
			t.Errorf("NoDelay of a connecting socket: got %v, %v; want true, 0", on, errno)
		}
	})
}

// TestConnectAckWithData holds Connect to sending the handshake's last ACK
// with the socket's first write: SYN and data, two segments, where a
// socket connected without clearing TCP_QUICKACK sends three (SYN, ACK,
// data), counted by the kernel (tcpi_segs_out). A write that comes late
// enough for the delayed ACK's timer (up to 200 ms) to send the ACK alone
// is tried again, up to three times.
func TestConnectAckWithData(t *testing.T) {
	_, addr := rawListener(t, false)
	ap := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(addr.(*syscall.SockaddrInet4).Port))
	plain := func() (int, syscall.Errno) {
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			return -1, err.(syscall.Errno)
		}
		err = syscall.Connect(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: int(ap.Port())})
		if err != nil && err != syscall.EINPROGRESS {
			syscall.Close(fd)
			return -1, err.(syscall.Errno)
		}
		return fd, 0
	}
	// segsOut connects with dial, writes as soon as the socket is
	// writable, and returns the segments it has sent by then.
	segsOut := func(t *testing.T, dial func() (int, syscall.Errno)) uint32 {
		t.Helper()
		fd, errno := dial()
		if errno != 0 {
			t.Fatalf("connect: got %v; want 0", errno)
		}
		defer syscall.Close(fd)
		deadline := time.Now().Add(5 * time.Second)
		for {
			n, errno := Write(fd, []byte("GET"))
			if errno == 0 && n == 3 {
				break
			}
			if errno != syscall.EAGAIN || time.Now().After(deadline) {
				t.Fatalf("write: got %d, %v; want 3, 0", n, errno)
			}
			time.Sleep(100 * time.Microsecond)
		}
		info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			t.Fatalf("TCP_INFO: got %v; want nil", err)
		}
		return info.Segs_out
	}
	if got := segsOut(t, plain); got != 3 {
		t.Fatalf("a plain connect and a write: got %d segments sent; want 3 (SYN, ACK, data)", got)
	}
	var got uint32
	for range 3 {
		if got = segsOut(t, func() (int, syscall.Errno) { return Connect(ap) }); got == 2 {
			return
		}
	}
	t.Errorf("Connect and a write at once: got %d segments sent; want 2 (SYN, then the data with the ACK)", got)
}

// TestWriteBeforeClose holds WriteBeforeClose to sending its bytes and the
// close's FIN in one segment, where Write and a close send two, counted
// by the reading end's kernel (tcpi_segs_in); and Push to sending the
// bytes of a socket that is not closed after all (tcpi_notsent_bytes).
func TestWriteBeforeClose(t *testing.T) {
	msg := []byte("\x88\x02\x03\xe8") // a close frame, 1000
	segsIn := func(t *testing.T, fd int) uint32 {
		t.Helper()
		info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			t.Fatalf("TCP_INFO: got %v; want nil", err)
		}
		return info.Segs_in
	}
	// readAll reads fd until EOF (eof) or until it has n bytes.
	readAll := func(t *testing.T, fd, n int, eof bool) []byte {
		t.Helper()
		var got []byte
		buf := make([]byte, 64)
		deadline := time.Now().Add(5 * time.Second)
		for (eof || len(got) < n) && time.Now().Before(deadline) {
			k, errno := Read(fd, buf)
			switch {
			case errno == syscall.EAGAIN:
				time.Sleep(100 * time.Microsecond)
			case errno != 0:
				t.Fatalf("read: got %v; want bytes or EOF", errno)
			case k == 0:
				return got
			default:
				got = append(got, buf[:k]...)
			}
		}
		if eof {
			t.Fatalf("read: got %q and no EOF in 5s; want %q, EOF", got, msg)
		}
		return got
	}
	for _, tc := range []struct {
		name  string
		write func(int, []byte) (int, syscall.Errno)
		segs  uint32
	}{
		{"Write", Write, 2},
		{"WriteBeforeClose", WriteBeforeClose, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := socketPair(t)
			t.Cleanup(func() { Close(b) })
			before := segsIn(t, b)
			if n, errno := tc.write(a, msg); n != len(msg) || errno != 0 {
				Close(a)
				t.Fatalf("write: got %d, %v; want %d, 0", n, errno, len(msg))
			}
			Close(a)
			if got := readAll(t, b, 0, true); !bytes.Equal(got, msg) {
				t.Fatalf("read: got %q; want %q", got, msg)
			}
			if got := segsIn(t, b) - before; got != tc.segs {
				t.Errorf("segments received for the bytes and the FIN: got %d; want %d", got, tc.segs)
			}
		})
	}
	t.Run("Push", func(t *testing.T) {
		a, b := socketPair(t)
		t.Cleanup(func() { Close(a); Close(b) })
		if n, errno := WriteBeforeClose(a, msg); n != len(msg) || errno != 0 {
			t.Fatalf("write: got %d, %v; want %d, 0", n, errno, len(msg))
		}
		if errno := Push(a); errno != 0 {
			t.Fatalf("Push: got %v; want 0", errno)
		}
		// Held bytes would otherwise go out on a timer, some 200 ms on.
		info, err := unix.GetsockoptTCPInfo(a, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			t.Fatalf("TCP_INFO: got %v; want nil", err)
		}
		if info.Notsent_bytes != 0 {
			t.Errorf("bytes not sent after Push: got %d; want 0", info.Notsent_bytes)
		}
		if got := readAll(t, b, len(msg), false); !bytes.Equal(got, msg) {
			t.Fatalf("read after Push: got %q; want %q", got, msg)
		}
	})
}
