//go:build linux

package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gobwas/ws"
)

// The echo upstream runs in a process of its own (the harness re-executed
// with -echo-child), so that its file descriptors do not count against the
// harness's own limit when thousands of sessions are open. It listens on
// one loopback port per target, which keeps each target's connections in
// a 4-tuple space of their own, prints "ports P1 P2 ..." and serves until
// its standard input is closed.

// runEchoChild is the echo upstream process's main.
func runEchoChild(n int) {
	var ports []string
	for range n {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			fmt.Fprintln(os.Stderr, "echo:", err)
			os.Exit(1)
		}
		ports = append(ports, strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
		go acceptEcho(ln)
	}
	fmt.Println("ports", strings.Join(ports, " "))
	io.Copy(io.Discard, os.Stdin) // the harness is gone or done
	os.Exit(0)
}

func acceptEcho(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			// EMFILE and the like: back off rather than spin.
			fmt.Fprintln(os.Stderr, "echo: accept:", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		go echoConn(c)
	}
}

// echoBufSize is the write buffer a connection borrows while it echoes.
const echoBufSize = 32 << 10

var echoBufs = sync.Pool{New: func() any { b := make([]byte, echoBufSize); return &b }}

// echoConn upgrades c and sends every frame back as it comes: same FIN,
// RSV and opcode, unmasked, the payload streamed through a pooled buffer
// so that a large frame needs no more memory than a small one. Consecutive
// frames already buffered leave in one write. A ping is answered with a
// pong, a close frame is echoed and the connection closed. Clients do not
// send frames before the 101 arrives, so nothing read ahead by the
// upgrader is lost.
func echoConn(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := ws.Upgrade(c); err != nil {
		return
	}
	c.SetDeadline(time.Time{})
	br := bufio.NewReaderSize(c, 4<<10)
	var hdr [ws.MaxHeaderSize]byte
	var out *[]byte // held only while frames are being echoed
	pos := 0
	flush := func() error {
		if out == nil {
			return nil
		}
		_, err := c.Write((*out)[:pos])
		echoBufs.Put(out)
		out, pos = nil, 0
		return err
	}
	defer flush()
	for {
		if br.Buffered() == 0 {
			if err := flush(); err != nil {
				return
			}
		}
		h, err := ws.ReadHeaderBuffer(br, hdr[:])
		if err != nil {
			return
		}
		if out == nil {
			out = echoBufs.Get().(*[]byte)
		}
		buf := *out
		if len(buf)-pos < ws.MaxHeaderSize {
			if err := flush(); err != nil {
				return
			}
			out = echoBufs.Get().(*[]byte)
			buf = *out
		}
		reply := h
		switch h.OpCode {
		case ws.OpPong:
			if _, err := br.Discard(int(h.Length)); err != nil {
				return
			}
			continue
		case ws.OpPing:
			reply.OpCode = ws.OpPong
		}
		pos += putHeader(buf[pos:], reply)
		off := 0
		for rem := int(h.Length); rem > 0; {
			if pos == len(buf) {
				if err := flush(); err != nil {
					return
				}
				out = echoBufs.Get().(*[]byte)
				buf = *out
			}
			k := min(len(buf)-pos, rem)
			if _, err := io.ReadFull(br, buf[pos:pos+k]); err != nil {
				return
			}
			if h.Masked {
				ws.Cipher(buf[pos:pos+k], h.Mask, off)
			}
			off += k
			rem -= k
			pos += k
		}
		if h.OpCode == ws.OpClose {
			flush()
			return
		}
	}
}

// putHeader writes an unmasked frame header to b and returns its length.
func putHeader(b []byte, h ws.Header) int {
	b[0] = byte(h.OpCode) | h.Rsv<<4
	if h.Fin {
		b[0] |= 0x80
	}
	switch {
	case h.Length < 126:
		b[1] = byte(h.Length)
		return 2
	case h.Length <= 0xffff:
		b[1] = 126
		binary.BigEndian.PutUint16(b[2:], uint16(h.Length))
		return 4
	default:
		b[1] = 127
		binary.BigEndian.PutUint64(b[2:], uint64(h.Length))
		return 10
	}
}

// echoProc is the running echo upstream.
type echoProc struct {
	c     *child
	ports []int
	stdin io.WriteCloser
}

// startEcho re-executes the harness as the echo upstream with n ports.
// on, if not nil, are the CPUs it runs on.
func startEcho(n int, on *cpuSet) (*echoProc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "-echo-child", "-echo-ports", strconv.Itoa(n))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout = pw
	cmd.Stderr = os.Stderr
	c, err := startChild("echo upstream", cmd, on)
	pw.Close()
	if err != nil {
		pr.Close()
		return nil, err
	}
	line := make(chan string, 1)
	go func() {
		defer pr.Close()
		s, _ := bufio.NewReader(pr).ReadString('\n')
		line <- s
		io.Copy(io.Discard, pr)
	}()
	e := &echoProc{c: c, stdin: stdin}
	select {
	case s := <-line:
		f := strings.Fields(s)
		if len(f) != n+1 || f[0] != "ports" {
			e.stop()
			return nil, fmt.Errorf("echo upstream said %q", s)
		}
		for _, p := range f[1:] {
			port, _ := strconv.Atoi(p)
			e.ports = append(e.ports, port)
		}
	case <-time.After(10 * time.Second):
		e.stop()
		return nil, errors.New("echo upstream did not start in 10s")
	}
	return e, nil
}

func (e *echoProc) stop() {
	e.stdin.Close()
	e.c.stop(2 * time.Second)
	forget(e.c)
}
