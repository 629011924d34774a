//go:build linux

package evloop

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wschaos/wschaos/internal/stalled"
)

// TestMain leaves a P free beside the most loops a test starts, as a
// process with loops must (see the package comment): without one, the
// goroutines the loops wake run only when sysmon preempts a loop.
func TestMain(m *testing.M) {
	runtime.GOMAXPROCS(max(runtime.GOMAXPROCS(0), 4+1))
	os.Exit(m.Run())
}

func newGroup(t *testing.T, n int) *Group {
	t.Helper()
	g, err := NewGroup(n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

func listen(t *testing.T, g *Group) *Listener {
	t.Helper()
	ln, err := g.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// echoServer accepts on ln and echoes every connection until it ends.
func echoServer(t *testing.T, ln net.Listener) {
	t.Helper()
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close() // ends the accept loop
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
}

// pair returns a Conn accepted by a group's listener and the client end,
// a plain net.Conn.
func pair(t *testing.T, g *Group) (*Conn, net.Conn) {
	t.Helper()
	ln := listen(t, g)
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	// TCP_DEFER_ACCEPT: the listener sees the connection once it has data.
	if _, err := client.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		t.Fatal(err)
	}
	return c.(*Conn), client
}

// await returns what errc receives, failing the test with stuck if
// nothing comes within 5 s.
func await(t *testing.T, errc <-chan error, stuck string) error {
	t.Helper()
	select {
	case err := <-errc:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal(stuck)
		return nil
	}
}

func TestEchoManyConnections(t *testing.T) {
	for _, loops := range []int{1, 2, 4} {
		t.Run(fmt.Sprintf("%d loops", loops), func(t *testing.T) {
			g := newGroup(t, loops)
			ln := listen(t, g)
			echoServer(t, ln)
			const conns, msgs = 40, 50
			errs := make(chan error, conns)
			for i := range conns {
				go func() {
					errs <- func() error {
						c, err := net.Dial("tcp", ln.Addr().String())
						if err != nil {
							return err
						}
						defer c.Close()
						buf := make([]byte, 0, 2048)
						for j := range msgs {
							msg := bytes.Repeat([]byte{byte(i), byte(j)}, 1+j*20)
							if _, err := c.Write(msg); err != nil {
								return err
							}
							buf = buf[:len(msg)]
							if _, err := io.ReadFull(c, buf); err != nil {
								return err
							}
							if !bytes.Equal(buf, msg) {
								return fmt.Errorf("conn %d message %d: got %d bytes back, not the same", i, j, len(buf))
							}
						}
						return nil
					}()
				}()
			}
			for range conns {
				if err := <-errs; err != nil {
					t.Error(err)
				}
			}
		})
	}
}

func TestDial(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	echoServer(t, ln)
	addr := ln.Addr().(*net.TCPAddr).AddrPort()
	for i := range 10 {
		c, err := Dial(context.Background(), addr)
		if err != nil {
			t.Fatal(err)
		}
		msg := fmt.Sprintf("hello %d", i)
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatal(err)
		}
		if string(got) != msg {
			t.Errorf("got %q; want %q", got, msg)
		}
		if la, ok := c.LocalAddr().(*net.TCPAddr); !ok || la.Port == 0 {
			t.Errorf("local address %v; want the socket's", c.LocalAddr())
		}
		if got, want := c.RemoteAddr().String(), addr.String(); got != want {
			t.Errorf("remote address %s; want %s", got, want)
		}
		c.Close()
	}
}

func TestDialRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().(*net.TCPAddr).AddrPort()
	ln.Close()
	_, err = Dial(context.Background(), addr)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("got %v; want connection refused", err)
	}
}

func TestDialContext(t *testing.T) {
	addr := stalled.Listener(t)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Dial(ctx, addr); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled before the dial: got %v; want context.Canceled", err)
	}

	ctx, cancel = context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	c, err := Dial(ctx, addr)
	if err == nil {
		c.Close()
		t.Fatal("a connect that cannot complete succeeded")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v; want context.DeadlineExceeded", err)
	}

	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	if _, err := Dial(ctx, addr); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled during the connect: got %v; want context.Canceled", err)
	}
}

func TestReadDeadline(t *testing.T) {
	g := newGroup(t, 1)
	c, client := pair(t, g)

	c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	var b [8]byte
	_, err := c.Read(b[:])
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("got %v; want a timeout", err)
	}

	// A deadline moved into the past ends a wait already under way, as
	// the proxy's sweeps do to park a quiet copier.
	c.SetReadDeadline(time.Time{})
	errc := make(chan error, 1)
	go func() {
		_, err := c.Read(b[:])
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	c.SetReadDeadline(time.Unix(1, 0))
	if err := await(t, errc, "a deadline in the past did not end the read"); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("got %v; want deadline exceeded", err)
	}

	// Cleared, the connection reads again.
	c.SetReadDeadline(time.Time{})
	client.Write([]byte("after"))
	n, err := io.ReadFull(c, b[:5])
	if err != nil || string(b[:n]) != "after" {
		t.Errorf("got %q, %v; want \"after\"", b[:n], err)
	}
}

func TestWriteDeadline(t *testing.T) {
	g := newGroup(t, 1)
	c, _ := pair(t, g) // the client never reads
	c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	big := make([]byte, 64<<20)
	n, err := c.Write(big)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("got %v after %d bytes; want deadline exceeded", err, n)
	}
	if n == 0 || n == len(big) {
		t.Errorf("wrote %d of %d bytes; want some, not all", n, len(big))
	}
}

func TestLargeWriteWhilePeerReadsSlowly(t *testing.T) {
	g := newGroup(t, 1)
	c, client := pair(t, g)
	data := make([]byte, 8<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		errc <- err
	}()
	got := make([]byte, 0, len(data))
	buf := make([]byte, 4096)
	for len(got) < len(data) {
		n, err := client.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, buf[:n]...)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Error("the bytes read differ from the bytes written")
	}
}

func TestCloseEndsWaits(t *testing.T) {
	cases := []struct {
		name string
		op   func(c *Conn) error
	}{
		{"read", func(c *Conn) error {
			var b [1]byte
			_, err := c.Read(b[:])
			return err
		}},
		{"write", func(c *Conn) error {
			_, err := c.Write(make([]byte, 64<<20))
			return err
		}},
		{"raw read", func(c *Conn) error {
			rc, _ := c.SyscallConn()
			return rc.Read(func(uintptr) bool { return false })
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := newGroup(t, 1)
			c, _ := pair(t, g)
			errc := make(chan error, 1)
			go func() { errc <- tc.op(c) }()
			time.Sleep(20 * time.Millisecond)
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			if err := await(t, errc, "Close did not end the wait"); !errors.Is(err, net.ErrClosed) {
				t.Errorf("got %v; want net.ErrClosed", err)
			}
			if err := c.Close(); !errors.Is(err, net.ErrClosed) {
				t.Errorf("second Close: got %v; want net.ErrClosed", err)
			}
		})
	}
}

func TestPeerEnds(t *testing.T) {
	cases := []struct {
		name string
		end  func(client net.Conn)
		want func(error) bool
	}{
		{"FIN", func(c net.Conn) { c.(*net.TCPConn).CloseWrite() }, func(err error) bool { return err == io.EOF }},
		{"RST", func(c net.Conn) { c.(*net.TCPConn).SetLinger(0); c.Close() },
			func(err error) bool { return errors.Is(err, syscall.ECONNRESET) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := newGroup(t, 1)
			c, client := pair(t, g)
			errc := make(chan error, 1)
			go func() {
				var b [1]byte
				_, err := c.Read(b[:])
				errc <- err
			}()
			time.Sleep(20 * time.Millisecond)
			tc.end(client)
			if err := await(t, errc, "the read did not end"); !tc.want(err) {
				t.Errorf("got %v", err)
			}
		})
	}
}

func TestCloseWriteAndLinger(t *testing.T) {
	g := newGroup(t, 1)
	c, client := pair(t, g)
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	var b [1]byte
	if _, err := client.Read(b[:]); err != io.EOF {
		t.Errorf("client read after CloseWrite: got %v; want EOF", err)
	}
	// Still open for reading.
	client.Write([]byte("y"))
	if _, err := io.ReadFull(c, b[:]); err != nil || b[0] != 'y' {
		t.Errorf("read after CloseWrite: got %q, %v", b[:], err)
	}

	c2, client2 := pair(t, g)
	c2.SetLinger(0)
	c2.Close()
	client2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := client2.Read(b[:]); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("client read after a reset: got %v; want ECONNRESET", err)
	}
}

func TestRawConnReadWaitsForReadiness(t *testing.T) {
	g := newGroup(t, 1)
	c, client := pair(t, g)
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(20 * time.Millisecond)
		client.Write([]byte("raw"))
	}()
	var got []byte
	calls := 0
	err = rc.Read(func(fd uintptr) bool {
		calls++
		var b [16]byte
		n, err := syscall.Read(int(fd), b[:])
		if err == syscall.EAGAIN {
			return false
		}
		got = append(got, b[:max(n, 0)]...)
		return true
	})
	if err != nil || string(got) != "raw" {
		t.Errorf("got %q, %v; want \"raw\"", got, err)
	}
	if calls < 2 {
		t.Errorf("f was called %d times; want a try that found nothing, then one after the data came", calls)
	}
}

// TestNumberReuse closes connections and opens new ones as fast as it can,
// so that socket numbers are reused while the loops still hold events for
// their previous owners; no connection may see another's bytes.
func TestNumberReuse(t *testing.T) {
	g := newGroup(t, 2)
	ln := listen(t, g)
	echoServer(t, ln)
	for i := range 300 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		msg := []byte(fmt.Sprintf("message %d", i))
		c.Write(msg)
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("connection %d: got %q, %v; want %q", i, got, err, msg)
		}
		c.Close()
	}
}

func TestListenerClose(t *testing.T) {
	g := newGroup(t, 2)
	ln, err := g.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := ln.Accept()
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	if err := await(t, errc, "Close did not end Accept"); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: got %v; want net.ErrClosed", err)
	}
	if _, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		t.Error("a connection to a closed listener succeeded")
	}
}

func TestAcceptQueueFull(t *testing.T) {
	for _, loops := range []int{1, 2} {
		t.Run(fmt.Sprintf("%d loops", loops), func(t *testing.T) {
			g := newGroup(t, loops)
			ln := listen(t, g)
			// More connections than the queue holds, none accepted yet:
			// the loops pause, the kernel's backlog keeps the rest, and
			// Accept resumes them.
			const n = acceptQueue + 50
			clients := make([]net.Conn, 0, n)
			t.Cleanup(func() {
				for _, c := range clients {
					c.Close()
				}
			})
			for range n {
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				clients = append(clients, c)
				c.Write([]byte("z"))
			}
			for i := range n {
				c, err := ln.Accept()
				if err != nil {
					t.Fatalf("accept %d: %v", i, err)
				}
				c.Close()
			}
		})
	}
}

func TestConnOutlivesGroup(t *testing.T) {
	g, err := NewGroup(1)
	if err != nil {
		t.Fatal(err)
	}
	c, client := pair(t, g)
	g.Close()
	client.Write([]byte("still"))
	var b [5]byte
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, b[:]); err != nil || string(b[:]) != "still" {
		t.Errorf("got %q, %v; want \"still\": a handed-off Conn is not the loops'", b[:], err)
	}
}

func TestIdleLoopWakes(t *testing.T) {
	g := newGroup(t, 1)
	ln := listen(t, g)
	echoServer(t, ln)
	// Long enough for the loop to have gone to its idle wait.
	time.Sleep(time.Duration(idleWaits+5) * busyWait * time.Millisecond)
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("w"))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil || b[0] != 'w' {
		t.Errorf("got %q, %v; want \"w\"", b[:], err)
	}
}

// TestAddressesAndTypes checks what the proxy relies on of a net.Conn from
// a listener: both addresses, and the errors of a closed connection.
func TestAddressesAndTypes(t *testing.T) {
	g := newGroup(t, 1)
	c, client := pair(t, g)
	if got, want := c.RemoteAddr().String(), client.LocalAddr().String(); got != want {
		t.Errorf("remote address %s; want %s", got, want)
	}
	if got, want := c.LocalAddr().String(), client.RemoteAddr().String(); got != want {
		t.Errorf("local address %s; want %s", got, want)
	}
	c.Close()
	var b [1]byte
	if _, err := c.Read(b[:]); !errors.Is(err, net.ErrClosed) {
		t.Errorf("read after close: got %v; want net.ErrClosed", err)
	}
	var oe *net.OpError
	if _, err := c.Write(b[:]); !errors.As(err, &oe) || oe.Op != "write" {
		t.Errorf("write after close: got %v; want a *net.OpError for write", err)
	}
}

// TestNoWakeAfterStop queues work on a loop that has stopped: the loop's
// eventfd is closed, and its number may be another file's by then, which
// must not be written to.
func TestNoWakeAfterStop(t *testing.T) {
	g, err := NewGroup(1)
	if err != nil {
		t.Fatal(err)
	}
	l := g.loops[0]
	efd := l.efd
	g.Close()
	// Take the freed numbers: the lowest free one is handed out first.
	var reads []int
	for range 4 {
		var p [2]int
		if err := syscall.Pipe2(p[:], syscall.O_NONBLOCK|syscall.O_CLOEXEC); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { syscall.Close(p[0]); syscall.Close(p[1]) })
		reads = append(reads, p[0])
		if p[1] == efd {
			t.Logf("the eventfd's number %d is a pipe's write end now", efd)
		}
	}
	l.submit(func() { t.Error("work ran on a stopped loop") })
	l.wake()
	for _, fd := range reads {
		var b [8]byte
		if n, err := syscall.Read(fd, b[:]); err != syscall.EAGAIN {
			t.Errorf("pipe %d: read %d bytes, %v; want nothing written to it", fd, n, err)
		}
	}
}
