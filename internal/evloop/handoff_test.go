//go:build linux

package evloop

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"unsafe"
)

// echoHandler keeps a socket on its loop and answers each 64-byte message
// it reads through reply, which runs it on the loop or hands it to a
// goroutine.
type echoHandler struct {
	fd    int
	buf   [64]byte
	n     int
	reply func(fd int, msg [64]byte)
}

func (h *echoHandler) Ready(uint32) {
	for {
		n, errno := rawRead(h.fd, h.buf[h.n:])
		if errno != 0 || n <= 0 {
			return
		}
		h.n += n
		if h.n == len(h.buf) {
			h.n = 0
			h.reply(h.fd, h.buf)
		}
	}
}

func (h *echoHandler) Stopped() {}

func write(fd int, msg [64]byte) {
	syscall.Write(fd, msg[:])
}

// eventQueue hands jobs from a loop to one goroutine that waits on an
// eventfd through the runtime's netpoller.
type eventQueue struct {
	mu   sync.Mutex
	jobs []func()
	efd  int
	f    *os.File
}

func newEventQueue(b *testing.B) *eventQueue {
	efd, _, errno := syscall.RawSyscall(syscall.SYS_EVENTFD2, 0, syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if errno != 0 {
		b.Fatal(errno)
	}
	q := &eventQueue{efd: int(efd), f: os.NewFile(efd, "eventfd")}
	go func() { // goroutine "handoff-worker": ends when the file is closed
		var b [8]byte
		for {
			if _, err := q.f.Read(b[:]); err != nil {
				return
			}
			q.mu.Lock()
			jobs := q.jobs
			q.jobs = nil
			q.mu.Unlock()
			for _, j := range jobs {
				j()
			}
		}
	}()
	b.Cleanup(func() { q.f.Close() })
	return q
}

func (q *eventQueue) put(j func()) {
	q.mu.Lock()
	q.jobs = append(q.jobs, j)
	q.mu.Unlock()
	one := uint64(1)
	syscall.RawSyscall(syscall.SYS_WRITE, uintptr(q.efd), uintptr(unsafe.Pointer(&one)), 8)
}

// BenchmarkHandoff echoes 64-byte messages whose reply is written by the
// loop itself ("loop") or by a goroutine the loop hands the reply to:
// started with go ("go"), woken through a channel ("chan"), or woken
// through an eventfd in the runtime's netpoller ("eventfd").
func BenchmarkHandoff(b *testing.B) {
	variants := []struct {
		name  string
		reply func(b *testing.B) func(fd int, msg [64]byte)
	}{
		{"loop", func(*testing.B) func(int, [64]byte) { return write }},
		{"go", func(*testing.B) func(int, [64]byte) {
			return func(fd int, msg [64]byte) { go write(fd, msg) }
		}},
		{"chan", func(b *testing.B) func(int, [64]byte) {
			ch := make(chan [64]byte, 16)
			var fd0 int
			go func() { // goroutine "handoff-chan"
				for m := range ch {
					write(fd0, m)
				}
			}()
			b.Cleanup(func() { close(ch) })
			return func(fd int, msg [64]byte) { fd0 = fd; ch <- msg }
		}},
		{"eventfd", func(b *testing.B) func(int, [64]byte) {
			q := newEventQueue(b)
			return func(fd int, msg [64]byte) { q.put(func() { write(fd, msg) }) }
		}},
	}
	for _, v := range variants {
		b.Run(v.name, func(b *testing.B) {
			g, err := NewGroup(1)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { g.Close() })
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			client, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer client.Close()
			sc, err := ln.Accept()
			if err != nil {
				b.Fatal(err)
			}
			f, err := sc.(*net.TCPConn).File() // a duplicate, for the loop
			sc.Close()
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			fd := int(f.Fd())
			syscall.SetNonblock(fd, true)
			l := g.loops[0]
			h := &echoHandler{fd: fd, reply: v.reply(b)}
			done := make(chan error, 1)
			l.submit(func() { done <- l.add(fd, h, syscall.EPOLLIN|syscall.EPOLLRDHUP|1<<31) })
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { l.submit(func() { l.forget(fd, h) }) })
			msg := make([]byte, 64)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if _, err := client.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(client, msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
