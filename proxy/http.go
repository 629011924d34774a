package proxy

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"net/http/httputil"
	"sync"
	"time"

	"go.uber.org/zap"
)

// newHTTPServer returns the server plain HTTP requests are handed to: a
// reverse proxy to the upstream's http(s) origin. An upgrade request that
// arrives later on a kept-alive connection becomes a session like any
// other.
func (p *Proxy) newHTTPServer() *http.Server {
	p.httpTransport = &http.Transport{
		DialContext:         p.NetDial,
		TLSClientConfig:     p.TLSClientConfig,
		TLSHandshakeTimeout: p.handshakeTimeout(),
		IdleConnTimeout:     90 * time.Second,
		MaxIdleConnsPerHost: 16,
	}
	origin := *p.Upstream
	origin.Scheme = "http"
	if p.Upstream.Scheme == "wss" {
		origin.Scheme = "https"
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.Out.URL = joinURL(&origin, r.In.URL)
			r.Out.Host = ""
			r.SetXForwarded()
			// SetXForwarded looks at r.TLS, which net/http leaves nil: it
			// is handed the proxy's buffered connection, not a tls.Conn.
			if c, ok := r.In.Context().Value(connKey{}).(net.Conn); ok && isTLS(c) {
				r.Out.Header.Set("X-Forwarded-Proto", "https")
			}
		},
		Transport: p.httpTransport,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			p.log.Warn("plain HTTP request failed", zap.String("path", r.URL.Path), zap.Error(err))
			http.Error(w, "upstream unreachable: "+err.Error(), http.StatusBadGateway)
		},
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "" && headerHasToken(r.Header, "Upgrade", "websocket") {
			conn, rw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				http.Error(w, "cannot take over the connection", http.StatusInternalServerError)
				return
			}
			if !p.track(conn) {
				conn.Close()
				return
			}
			conn.SetDeadline(time.Now().Add(p.handshakeTimeout()))
			p.serveWebSocket(conn, rw.Reader, r, false)
			return
		}
		rp.ServeHTTP(w, r)
	})
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: p.handshakeTimeout(),
		MaxHeaderBytes:    maxHeadSize, // a kept-alive connection's later requests, as peekHead bounds the first
		ConnContext:       func(ctx context.Context, c net.Conn) context.Context { return context.WithValue(ctx, connKey{}, c) },
		ErrorLog:          zap.NewStdLog(p.log.Named("http")),
	}
}

// serveHTTP runs the plain HTTP server until the proxy shuts down. It is
// the body of the "http" goroutine Serve starts.
func (p *Proxy) serveHTTP() {
	p.httpSrv.Serve(p.httpLn)
}

// chanListener is the net.Listener the plain HTTP server accepts from: the
// proxy hands it connections it has found to be plain HTTP.
type chanListener struct {
	addr   net.Addr
	conns  chan net.Conn
	once   sync.Once
	closed chan struct{}
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, conns: make(chan net.Conn), closed: make(chan struct{})}
}

// hand passes c to the HTTP server; it reports false once the listener is
// closed.
func (l *chanListener) hand(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.closed:
		return false
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// bufferedConn reads through the reader its request head was peeked with.
type bufferedConn struct {
	net.Conn
	br *bufio.Reader
}

func (c *bufferedConn) Read(b []byte) (int, error) { return c.br.Read(b) }

// NetConn returns the connection under the buffer, for TLS detection.
func (c *bufferedConn) NetConn() net.Conn { return c.Conn }

var headReaderPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, maxHeadSize) }}

func getHeadReader(c net.Conn) *bufio.Reader {
	br := headReaderPool.Get().(*bufio.Reader)
	br.Reset(c)
	return br
}

func putHeadReader(br *bufio.Reader) {
	br.Reset(nil)
	headReaderPool.Put(br)
}

// connKey carries the accepted connection in a plain HTTP request's
// context.
type connKey struct{}
