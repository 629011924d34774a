package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
)

// readBufSize is the buffer a peer's bytes are read into while some are
// waiting to be relayed. A read of at least this much goes straight into
// the caller's buffer.
const readBufSize = 4 << 10

var readBufPool = sync.Pool{New: func() any { b := make([]byte, readBufSize); return &b }}

// frameReader is a peer's read side. Unlike a bufio.Reader it holds a
// buffer only while bytes are buffered: an idle session holds none. On a
// plain TCP connection it waits for bytes through the runtime's poller
// (syscall.RawConn) with no buffer, takes one from a pool only when the
// socket is readable, and gives it back once everything buffered has been
// consumed; the read costs the same syscalls as net.Conn.Read. Other
// connections (TLS) are read through net.Conn.Read into a buffer kept for
// the session.
type frameReader struct {
	conn net.Conn
	raw  syscall.RawConn // nil: read through conn, and keep buf
	buf  *[]byte         // nil when nothing is buffered (raw only)
	r, w int
	err  error // the error that ended reading; returned once the buffer is drained

	// The raw reads' argument and results; fillFn and intoFn are rawFill
	// and rawInto bound once, so that a read allocates nothing.
	dst    []byte
	n      int
	rerr   error
	fillFn func(fd uintptr) bool
	intoFn func(fd uintptr) bool
}

// newFrameReader returns a reader of c that first returns pending, the
// bytes a handshake read past its end.
func newFrameReader(c net.Conn, pending []byte) *frameReader {
	fr := &frameReader{conn: c}
	if sc, ok := c.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			fr.raw = raw
			fr.fillFn, fr.intoFn = fr.rawFill, fr.rawInto
		}
	}
	if fr.raw == nil || len(pending) > 0 {
		fr.take(max(len(pending), readBufSize))
		fr.w = copy(*fr.buf, pending)
	}
	return fr
}

// take gets a buffer of at least n bytes.
func (fr *frameReader) take(n int) {
	if n <= readBufSize {
		fr.buf = readBufPool.Get().(*[]byte)
	} else {
		b := make([]byte, n)
		fr.buf = &b
	}
	fr.r, fr.w = 0, 0
}

// release gives the buffer back once it is drained, on a raw connection.
func (fr *frameReader) release() {
	if fr.raw == nil || fr.buf == nil || fr.r != fr.w {
		return
	}
	if len(*fr.buf) == readBufSize {
		readBufPool.Put(fr.buf)
	}
	fr.buf, fr.r, fr.w = nil, 0, 0
}

// Buffered returns how many bytes can be read without waiting.
func (fr *frameReader) Buffered() int { return fr.w - fr.r }

// buffered returns the bytes that can be read without waiting, without
// consuming them.
func (fr *frameReader) buffered() []byte {
	if fr.buf == nil {
		return nil
	}
	return (*fr.buf)[fr.r:fr.w]
}

// Read reads up to len(p) bytes: what is buffered, or, with nothing
// buffered, what one read of the connection gives.
func (fr *frameReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if fr.r == fr.w {
		if fr.err != nil {
			return 0, fr.err
		}
		if len(p) >= readBufSize {
			// Large reads skip the buffer.
			n, err := fr.readConn(p)
			if err != nil {
				fr.err = err
				if n == 0 {
					return 0, err
				}
			}
			return n, nil
		}
		if err := fr.fill(); err != nil {
			return 0, err
		}
	}
	n := copy(p, (*fr.buf)[fr.r:fr.w])
	fr.r += n
	fr.release()
	return n, nil
}

// Discard skips the next n bytes.
func (fr *frameReader) Discard(n int) (int, error) {
	done := 0
	for done < n {
		if fr.r == fr.w {
			if fr.err != nil {
				return done, fr.err
			}
			if err := fr.fill(); err != nil {
				return done, err
			}
		}
		k := min(n-done, fr.w-fr.r)
		fr.r += k
		done += k
		fr.release()
	}
	return done, nil
}

// fill reads at least one byte into an empty buffer. On a raw connection
// the buffer is taken only once the socket is readable (see rawFill).
func (fr *frameReader) fill() error {
	fr.r, fr.w = 0, 0
	var n int
	var err error
	if fr.raw == nil {
		n, err = fr.conn.Read(*fr.buf)
		if n == 0 && err == nil {
			err = io.ErrNoProgress
		}
	} else {
		fr.n, fr.rerr = 0, nil
		if err = fr.raw.Read(fr.fillFn); err == nil {
			n, err = fr.n, fr.rerr
			if n == 0 && err == nil {
				err = io.EOF
			}
		}
	}
	fr.w = n
	if err != nil {
		if n == 0 && errors.Is(err, os.ErrDeadlineExceeded) {
			return err // an idle wait ended by a sweep: not an end
		}
		fr.err = err
		if n == 0 {
			fr.release()
			return err
		}
	}
	return nil
}

// readConn reads once from the connection straight into p.
func (fr *frameReader) readConn(p []byte) (int, error) {
	if fr.raw == nil {
		n, err := fr.conn.Read(p)
		if n == 0 && err == nil {
			err = io.ErrNoProgress
		}
		return n, err
	}
	fr.dst, fr.n, fr.rerr = p, 0, nil
	err := fr.raw.Read(fr.intoFn)
	fr.dst = nil
	switch {
	case err != nil:
		return 0, err
	case fr.rerr != nil:
		return 0, fr.rerr
	case fr.n == 0:
		return 0, io.EOF
	}
	return fr.n, nil
}

// rawFill is the non-blocking read that syscall.RawConn.Read retries each
// time the socket becomes readable. It takes a pooled buffer for the read
// and gives it back if there was nothing to read, so that waiting holds no
// buffer.
func (fr *frameReader) rawFill(fd uintptr) bool {
	for {
		if fr.buf == nil {
			fr.buf = readBufPool.Get().(*[]byte)
		}
		n, err := syscall.Read(int(fd), *fr.buf)
		switch err {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			readBufPool.Put(fr.buf)
			fr.buf = nil
			return false
		}
		return fr.result(n, err)
	}
}

// rawInto is rawFill for a read straight into fr.dst.
func (fr *frameReader) rawInto(fd uintptr) bool {
	n, err := syscall.Read(int(fd), fr.dst)
	for err == syscall.EINTR {
		n, err = syscall.Read(int(fd), fr.dst)
	}
	return fr.result(n, err)
}

// result records a read syscall's outcome; it reports whether the read is
// over (false: wait for the socket to become readable).
func (fr *frameReader) result(n int, err error) bool {
	switch {
	case err == syscall.EAGAIN:
		return false
	case err != nil:
		fr.rerr = &net.OpError{Op: "read", Net: "tcp", Source: fr.conn.LocalAddr(), Addr: fr.conn.RemoteAddr(), Err: &os.SyscallError{Syscall: "read", Err: err}}
		return true
	}
	fr.n = max(n, 0)
	return true
}
