//go:build linux

package evloop

import (
	"bytes"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"
)

// readAll reads from the non-blocking socket fd until it has want bytes,
// or EOF if eof, within five seconds.
func readAll(t *testing.T, fd int, want int, eof bool) []byte {
	t.Helper()
	var got []byte
	buf := make([]byte, 64<<10)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		n, errno := Read(fd, buf)
		switch {
		case errno == syscall.EAGAIN:
			if len(got) >= want && !eof {
				return got
			}
			time.Sleep(time.Millisecond)
			continue
		case errno != 0:
			t.Fatalf("read: got %v; want no error", errno)
		case n == 0:
			if !eof {
				t.Fatalf("read: got EOF after %d bytes; want %d and no EOF", len(got), want)
			}
			return got
		}
		got = append(got, buf[:n]...)
	}
	t.Fatalf("read: got %d bytes in 5 s; want %d (EOF: %v)", len(got), want, eof)
	return nil
}

// sendAllModes runs f with a loop whose SendAll uses io_uring, where the
// kernel allows it, and with one that calls sendto: every case must come
// out the same both ways.
func sendAllModes(t *testing.T, f func(t *testing.T, l *Loop)) {
	for _, mode := range []string{"io_uring", "sendto"} {
		t.Run(mode, func(t *testing.T) {
			l := &Loop{noRing: mode == "sendto"}
			t.Cleanup(func() {
				if l.ring != nil {
					l.ring.close()
				}
			})
			f(t, l)
			if mode == "io_uring" && l.ring == nil {
				// A seccomp filter (Docker's default) or
				// kernel.io_uring_disabled: SendAll fell back.
				t.Logf("io_uring unavailable here: the case ran through sendto")
			}
		})
	}
}

func TestSendAll(t *testing.T) {
	t.Run("each to its socket", func(t *testing.T) {
		sendAllModes(t, func(t *testing.T, l *Loop) {
			var sends []Send
			var peers []int
			for i := range 3 {
				a, b := socketPair(t)
				t.Cleanup(func() { Close(a); Close(b) })
				sends = append(sends, Send{Fd: a, B: fmt.Appendf(nil, "close frame %d", i)})
				peers = append(peers, b)
			}
			sends = append(sends, Send{Fd: sends[0].Fd}) // nothing to write
			l.SendAll(sends)
			for i, s := range sends {
				if s.N != len(s.B) || s.Errno != 0 {
					t.Fatalf("send %d: got %d, %v; want %d, 0", i, s.N, s.Errno, len(s.B))
				}
			}
			for i, b := range peers {
				if got := readAll(t, b, len(sends[i].B), false); !bytes.Equal(got, sends[i].B) {
					t.Fatalf("peer %d read %q; want %q", i, got, sends[i].B)
				}
			}
		})
	})

	t.Run("more than a batch, in order", func(t *testing.T) {
		sendAllModes(t, func(t *testing.T, l *Loop) {
			a, b := socketPair(t)
			t.Cleanup(func() { Close(a); Close(b) })
			sends := make([]Send, SendAllBatch+10)
			var want []byte
			for i := range sends {
				sends[i] = Send{Fd: a, B: []byte{byte(i)}}
				want = append(want, byte(i))
			}
			l.SendAll(sends)
			for i, s := range sends {
				if s.N != 1 || s.Errno != 0 {
					t.Fatalf("send %d: got %d, %v; want 1, 0", i, s.N, s.Errno)
				}
			}
			if got := readAll(t, b, len(want), false); !bytes.Equal(got, want) {
				t.Fatalf("peer read % x; want % x", got, want)
			}
		})
	})

	t.Run("full socket", func(t *testing.T) {
		sendAllModes(t, func(t *testing.T, l *Loop) {
			a, b := socketPair(t)
			t.Cleanup(func() { Close(a); Close(b) })
			if err := syscall.SetsockoptInt(a, syscall.SOL_SOCKET, syscall.SO_SNDBUF, 4096); err != nil {
				t.Fatal(err)
			}
			big := make([]byte, 16<<20) // more than both buffers hold
			sends := []Send{{Fd: a, B: big}, {Fd: a, B: big}, {Fd: a, B: big}}
			l.SendAll(sends)
			if s := sends[0]; s.N <= 0 || s.N >= len(big) || s.Errno != 0 {
				t.Fatalf("send to a socket that fills: got %d, %v; want part of %d, 0", s.N, s.Errno, len(big))
			}
			// The kernel may take a little more after a short write; not
			// twice more.
			if s := sends[2]; s.N != 0 || s.Errno != syscall.EAGAIN {
				t.Fatalf("send to a full socket: got %d, %v; want 0, EAGAIN", s.N, s.Errno)
			}
			total := sends[0].N + sends[1].N
			if got := readAll(t, b, total, false); len(got) != total {
				t.Fatalf("peer read %d bytes; want the %d written", len(got), total)
			}
		})
	})

	t.Run("reset peer, no SIGPIPE", func(t *testing.T) {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGPIPE)
		defer signal.Stop(sig)
		sendAllModes(t, func(t *testing.T, l *Loop) {
			a, b := socketPair(t)
			t.Cleanup(func() { Close(a) })
			Reset(b)
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
				if _, errno := Write(a, []byte("x")); errno != 0 {
					break // the RST has come back
				}
			}
			sends := []Send{{Fd: a, B: []byte("after the reset")}}
			l.SendAll(sends)
			if s := sends[0]; s.N != 0 || s.Errno != syscall.EPIPE {
				t.Fatalf("send to a dead socket: got %d, %v; want 0, EPIPE", s.N, s.Errno)
			}
		})
		select {
		case s := <-sig:
			t.Fatalf("got signal %v; want none", s)
		case <-time.After(50 * time.Millisecond):
		}
	})

	t.Run("held for the FIN", func(t *testing.T) {
		sendAllModes(t, func(t *testing.T, l *Loop) {
			a, b := socketPair(t)
			t.Cleanup(func() { Close(b) })
			msg := []byte("the last close frame")
			sends := []Send{{Fd: a, B: msg, More: true}}
			l.SendAll(sends)
			if s := sends[0]; s.N != len(msg) || s.Errno != 0 {
				t.Fatalf("send: got %d, %v; want %d, 0", s.N, s.Errno, len(msg))
			}
			Close(a)
			if got := readAll(t, b, len(msg), true); !bytes.Equal(got, msg) {
				t.Fatalf("peer read %q before EOF; want %q", got, msg)
			}
		})
	})

	t.Run("bad descriptor", func(t *testing.T) {
		sendAllModes(t, func(t *testing.T, l *Loop) {
			sends := []Send{{Fd: -1, B: []byte("x")}}
			l.SendAll(sends)
			if s := sends[0]; s.N != 0 || s.Errno != syscall.EBADF {
				t.Fatalf("send to fd -1: got %d, %v; want 0, EBADF", s.N, s.Errno)
			}
		})
	})
}

// BenchmarkSendAll writes a 2-byte close frame to each of 256 loopback
// connections, as a tick's first pass does: in one SendAll, through
// io_uring and through sendto.
func BenchmarkSendAll(b *testing.B) {
	for _, mode := range []string{"io_uring", "sendto"} {
		b.Run(mode, func(b *testing.B) {
			l := &Loop{noRing: mode == "sendto"}
			defer func() {
				if l.ring != nil {
					l.ring.close()
				}
			}()
			sends := make([]Send, SendAllBatch)
			peers := make([]int, len(sends))
			for i := range sends {
				a, p := socketPair(b)
				defer Close(a)
				defer Close(p)
				sends[i].Fd, peers[i] = a, p
			}
			frame := []byte{0x88, 0x00}
			buf := make([]byte, 4096)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				for i := range sends {
					sends[i].B = frame
				}
				l.SendAll(sends)
				b.StopTimer()
				for _, p := range peers {
					Read(p, buf)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(sends)), "ns/send")
		})
	}
}
