// Package echo is wschaos's built-in upstream: a WebSocket server that
// sends every message back as it came, so the proxy can be tried with
// nothing else running.
package echo

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/wschaos/wschaos/rules"
)

// Server echoes WebSocket messages on any path. A plain HTTP request gets a
// short text saying so.
type Server struct {
	srv    *http.Server
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// Start serves on ln until Close. It starts the "echo" goroutine, which
// ends when Close is called.
func Start(ln net.Listener) *Server {
	s := &Server{conns: map[net.Conn]struct{}{}}
	s.srv = &http.Server{Handler: http.HandlerFunc(s.serveHTTP), ReadHeaderTimeout: 10 * time.Second}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.srv.Serve(ln)
	}()
	return s
}

// Close stops the server and ends every open session.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	if errors.Is(err, context.DeadlineExceeded) {
		err = nil
	}
	return err
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Upgrade") == "" {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "wschaos echo upstream: open a WebSocket on any path and every message comes back.\n")
		return
	}
	u := ws.HTTPUpgrader{
		// The first subprotocol the client offers is accepted, so that
		// clients that insist on one can be tried too.
		Protocol: func(string) bool { return true },
	}
	conn, rw, _, err := u.Upgrade(r, w)
	if err != nil {
		return
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		conn.Close()
		return
	}
	s.conns[conn] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	// Frames the client sent right behind its request are in rw.Reader.
	peer := struct {
		io.Reader
		io.Writer
	}{rw.Reader, conn}
	defer func() {
		s.mu.Lock()
		delete(s.conns, conn)
		s.mu.Unlock()
		conn.Close()
		s.wg.Done()
	}()
	// Pings are answered by wsutil's control handler; a close frame is
	// echoed whole, code and reason, by echoClose.
	ctl := wsutil.ControlFrameHandler(peer, ws.StateServerSide)
	handle := func(h ws.Header, r io.Reader) error {
		if h.OpCode == ws.OpClose && h.Length >= 2 {
			return echoClose(peer, h, r)
		}
		return ctl(h, r)
	}
	rd := wsutil.DefaultReader(peer, ws.StateServerSide)
	rd.OnIntermediate = handle
	for {
		h, err := rd.NextFrame()
		if err != nil {
			return
		}
		if h.OpCode.IsControl() {
			if err := handle(h, rd); err != nil {
				return
			}
			continue
		}
		msg, err := io.ReadAll(rd)
		if err != nil {
			return
		}
		if err := wsutil.WriteServerMessage(peer, h.OpCode, msg); err != nil {
			return
		}
	}
}

// echoClose answers a close frame with its own code and reason, or with
// 1002 when its code is one an endpoint must not send or its reason is not
// UTF-8 (RFC 6455 sections 5.5.1 and 7.4).
func echoClose(w io.Writer, h ws.Header, r io.Reader) error {
	p := make([]byte, h.Length)
	if _, err := io.ReadFull(r, p); err != nil {
		return err
	}
	code, reason := ws.ParseCloseFrameData(p)
	// The close-code table the proxy's rules use; gobwas/ws's
	// CheckCloseFrameData refuses 1012-1014.
	if c, _ := rules.LookupCode(int(code)); !c.Sendable || !utf8.ValidString(reason) {
		p = ws.NewCloseFrameBody(ws.StatusProtocolError, "invalid close frame")
	}
	if err := ws.WriteFrame(w, ws.NewCloseFrame(p)); err != nil {
		return err
	}
	return wsutil.ClosedError{Code: code, Reason: reason}
}
