package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gobwas/httphead"
	"github.com/gobwas/ws"
	"go.uber.org/zap"
)

// maxHeadSize is the largest request head (request line and headers) the
// proxy reads; a larger one gets 431. It is also the size of the buffer a
// connection is read through during its handshake.
const maxHeadSize = 16 << 10

// maxErrorBody is how much of an upstream's non-101 answer is passed on.
const maxErrorBody = 4 << 10

// handle owns an accepted connection until it is a session, is handed to
// the plain HTTP server, or fails its handshake.
func (p *Proxy) handle(conn net.Conn) {
	conn.SetDeadline(time.Now().Add(p.handshakeTimeout()))
	br := getHeadReader(conn)
	head, upgrade, err := peekHead(br)
	if err != nil {
		if errors.Is(err, errHeadTooLarge) {
			writeStatus(conn, http.StatusRequestHeaderFieldsTooLarge, "request head larger than 16 KiB")
			if b, _ := br.Peek(br.Buffered()); headWantsWebSocket(b) {
				p.refuseUnread(conn.RemoteAddr(), requestLine(b), http.StatusRequestHeaderFieldsTooLarge, RefusedBadRequest, err)
			}
		}
		p.log.Debug("request head not read", zap.Stringer("client", conn.RemoteAddr()), zap.Error(err))
		putHeadReader(br)
		conn.Close()
		p.untrack(conn)
		return
	}
	if !upgrade {
		// net/http serves it from here on, keep-alive and all; the bytes
		// already buffered are read first.
		p.untrack(conn)
		conn.SetDeadline(time.Time{}) // net/http sets its own
		keepAlive(conn)               // for its idle keep-alive connections
		if !p.httpLn.hand(&bufferedConn{Conn: conn, br: br}) {
			conn.Close()
		}
		return
	}
	req, ok := parseHead(head)
	if ok {
		br.Discard(len(head))
	} else {
		line := requestLine(head) // head is br's buffer, which ReadRequest may move
		if req, err = http.ReadRequest(br); err != nil {
			writeStatus(conn, http.StatusBadRequest, "malformed request")
			p.refuseUnread(conn.RemoteAddr(), line, http.StatusBadRequest, RefusedBadRequest, fmt.Errorf("malformed request: %w", err))
		}
	}
	if err != nil {
		putHeadReader(br)
		conn.Close()
		p.untrack(conn)
		return
	}
	p.serveWebSocket(conn, br, req, true)
}

// requestLine is the first line of a request head.
func requestLine(head []byte) string {
	line, _, _ := bytes.Cut(head, []byte("\r\n"))
	return string(line)
}

// refuseUnread records an upgrade attempt from client whose request was
// not read whole, refused at step and answered with status (0: not
// answered): it is an attempt all the same, with the path its request
// line (line) gives if any.
func (p *Proxy) refuseUnread(client net.Addr, line string, status int, step string, why error) {
	u := &url.URL{}
	if _, rest, ok := strings.Cut(line, " "); ok {
		target, _, _ := strings.Cut(rest, " ")
		if t, err := url.ParseRequestURI(target); err == nil {
			u = t
		}
	}
	id, addr := p.nextID.Add(1), client.String()
	p.log.Info("upgrade refused", zap.Uint64("session", id), zap.String("client", addr),
		zap.String("path", u.Path), zap.Int("status", status), zap.Error(why))
	p.emitRefused(id, addr, &http.Request{URL: u}, status, step, why.Error())
}

// serveWebSocket answers an upgrade request that has been read from br:
// dials the upstream first, then answers the client with the upstream's
// choices and relays frames until the session ends. pooled reports whether
// br came from the head reader pool.
func (p *Proxy) serveWebSocket(conn net.Conn, br *bufio.Reader, req *http.Request, pooled bool) {
	start := time.Now()
	id := p.nextID.Add(1)
	// The handshake's lines carry the session's fields; the logger is made
	// only for a line, which a session that opens does not log here.
	log := func() *zap.Logger {
		return p.log.With(zap.Uint64("session", id), zap.Stringer("client", conn.RemoteAddr()), zap.String("path", req.URL.Path))
	}
	answerBy := func() {
		// The handshake deadline may have passed while the upstream was
		// dialed; the client still gets its answer.
		conn.SetWriteDeadline(time.Now().Add(closeGrace))
	}
	refuse := func(status int, step string, why error) {
		if pooled {
			putHeadReader(br)
		}
		conn.Close()
		p.untrack(conn)
		p.emitRefused(id, conn.RemoteAddr().String(), req, status, step, why.Error())
	}

	if err := checkUpgrade(req); err != nil {
		// gobwas/ws writes the answer RFC 6455 section 4.2.1 asks for
		// (400, or 426 for a wrong version); it fails the same check.
		if errors.Is(err, errBadKey) {
			// gobwas/ws checks only the key's length: it would answer 101.
			writeStatus(conn, http.StatusBadRequest, err.Error())
		} else {
			_, _, _, _ = ws.HTTPUpgrader{}.Upgrade(req, &hijacker{conn: conn, br: br})
		}
		status := http.StatusBadRequest
		if errors.Is(err, errBadVersion) {
			status = http.StatusUpgradeRequired
		}
		log().Info("upgrade refused", zap.Int("status", status), zap.Error(err))
		refuse(status, RefusedBadRequest, err)
		return
	}

	addr := conn.RemoteAddr().String()
	info := sessionInfo(req, addr)
	if lr := p.engine.rejectFor(&info, id); lr != nil {
		answerBy()
		p.reject(conn, addr, lr, log(), id, req)
		refuse(lr.Action.Status, RefusedRule, fmt.Errorf("rule %s", lr.Name))
		return
	}

	up, err := p.dialUpstream(req, conn)
	if errors.Is(err, errBadExtensions) {
		// The client's request, found wanting before anything is dialed.
		answerBy()
		writeStatus(conn, http.StatusBadRequest, err.Error())
		log().Info("upgrade refused", zap.Int("status", http.StatusBadRequest), zap.Error(err))
		refuse(http.StatusBadRequest, RefusedBadRequest, err)
		return
	}
	if err != nil {
		answerBy()
		status, step := http.StatusBadGateway, RefusedUnreachable
		if se := (*upstreamStatusError)(nil); errors.As(err, &se) {
			status, step = se.status, RefusedUpstream
			se.writeTo(conn)
		} else {
			step = dialFailure(err)
			writeStatus(conn, status, "upstream unreachable: "+err.Error())
		}
		log().Warn("upstream refused the session", zap.Int("status", status), zap.Error(err))
		refuse(status, step, err)
		return
	}

	// The session is registered before the client gets its 101, in place
	// of the accepted connection, so that a Shutdown from now on closes it
	// gracefully; the 101 is written holding the client's write lock, so
	// that a close frame queued meanwhile follows it.
	client := newPeer(sideClient, conn, nil)
	s := newSession(p, id, req, start, addr, info, client, newPeer(sideUpstream, up.conn, up.br), up.hs, false)
	ok := p.addSession(s, conn)
	if ok {
		s.attach() // before the 101: the session is listed with its rules from the start
	}
	if !ok {
		up.close()
		p.dropSession(s)
		answerBy()
		writeStatus(conn, http.StatusServiceUnavailable, "shutting down")
		refuse(http.StatusServiceUnavailable, RefusedClient, errors.New("shutting down"))
		return
	}
	client.wmu.Lock()
	u := ws.HTTPUpgrader{Header: up.answer}
	if _, _, _, err := u.Upgrade(req, &hijacker{conn: conn, br: br}); err != nil {
		client.wmu.Unlock()
		log().Info("client handshake failed", zap.Error(err))
		s.stopTimers()
		up.close()
		p.dropSession(s)
		refuse(0, RefusedClient, fmt.Errorf("answer client: %w", err))
		return
	}
	conn.SetDeadline(time.Time{})
	// Frames the client pipelined behind its request move to the frame
	// reader; the head reader goes back to its pool.
	pending, _ := br.Peek(br.Buffered())
	client.br = newFrameReader(unprefixed(conn, &pending))
	if pooled {
		putHeadReader(br)
	}
	client.unlock()

	s.open()
}

// checkUpgrade reports whether req is a WebSocket opening handshake that
// RFC 6455 section 4.2.1 accepts. The proxy checks before it dials, so that
// a bad request never reaches the upstream.
func checkUpgrade(req *http.Request) error {
	switch {
	case req.Method != http.MethodGet:
		return errors.New("method is not GET")
	case req.ProtoMajor != 1 || req.ProtoMinor < 1:
		return errors.New("HTTP version below 1.1")
	case req.Host == "":
		return errors.New("no Host header")
	case !strings.EqualFold(req.Header.Get("Upgrade"), "websocket"):
		return errors.New("Upgrade is not websocket")
	case !headerHasToken(req.Header, "Connection", "upgrade"):
		return errors.New("Connection has no upgrade token")
	case !validKey(req.Header.Get("Sec-Websocket-Key")):
		return errBadKey
	case req.Header.Get("Sec-Websocket-Version") == "":
		return errors.New("no Sec-WebSocket-Version")
	case req.Header.Get("Sec-Websocket-Version") != "13":
		return errBadVersion
	}
	// A list may be split over several field lines (RFC 9110 section
	// 5.3); gobwas/ws's HTTPUpgrader, which answers the client, reads only
	// the first.
	if c := req.Header["Connection"]; len(c) > 1 {
		req.Header["Connection"] = []string{strings.Join(c, ", ")}
	}
	return nil
}

// validKey reports whether k is the base64 of 16 bytes (RFC 6455 section
// 4.2.1, item 5).
func validKey(k string) bool {
	var b [24]byte // what 24 characters of base64 decode to, and more
	if len(k) != 24 {
		return false
	}
	n, err := base64.StdEncoding.Decode(b[:], []byte(k))
	return err == nil && n == 16
}

func headerHasToken(h http.Header, key, token string) bool {
	for _, v := range h[http.CanonicalHeaderKey(key)] {
		if hasToken(v, token) {
			return true
		}
	}
	return false
}

// upstream is a dialed and upgraded upstream connection.
type upstream struct {
	conn   net.Conn
	br     *frameReader // first returns the frames the upstream sent right after its 101
	hs     ws.Handshake
	answer http.Header // what the client's 101 carries on the upstream's behalf
}

func (u *upstream) close() {
	u.conn.Close()
}

// upstreamStatusError is an upstream's non-101 answer to the upgrade.
type upstreamStatusError struct {
	status int
	header http.Header
	body   []byte
}

func (e *upstreamStatusError) Error() string {
	return fmt.Sprintf("upstream answered %d %s", e.status, http.StatusText(e.status))
}

// writeTo passes the answer to the client: same status, end-to-end
// headers, and at most maxErrorBody of the body.
func (e *upstreamStatusError) writeTo(w io.Writer) {
	resp := &http.Response{
		StatusCode:    e.status,
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        e.header,
		Body:          io.NopCloser(bytes.NewReader(e.body)),
		ContentLength: int64(len(e.body)),
		Close:         true,
	}
	resp.Write(w)
}

// emitRefused records that upgrade attempt id, req from client, was
// refused at step, with status (0: none was sent) and why.
func (p *Proxy) emitRefused(id uint64, client string, req *http.Request, status int, step, why string) {
	p.emit(Event{Time: time.Now(), Kind: EventRefused, Session: id, Client: client,
		Path: req.URL.Path, Query: req.URL.RawQuery, Status: status, Refusal: step, Why: why})
}

// dialUpstream opens the upstream session for req, carrying the path and
// query, the offered subprotocols and extensions, the end-to-end headers
// and X-Forwarded-*.
func (p *Proxy) dialUpstream(req *http.Request, client net.Conn) (*upstream, error) {
	target := joinURL(p.Upstream, req.URL)
	var exts []httphead.Option
	for _, v := range req.Header.Values("Sec-Websocket-Extensions") {
		var ok bool
		exts, ok = httphead.ParseOptions([]byte(v), exts)
		if !ok {
			return nil, errBadExtensions
		}
	}
	answer := http.Header{}
	var statusErr *upstreamStatusError
	var dialed net.Conn // tracked while the handshake lasts
	d := ws.Dialer{
		Protocols:  splitTokens(req.Header.Values("Sec-Websocket-Protocol")),
		Extensions: exts,
		Header:     ws.HandshakeHeaderBytes(appendForwardHeader(nil, req, client.RemoteAddr().String(), isTLS(client))),
		TLSConfig:  p.TLSClientConfig,
		NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := p.dialTracked(ctx, network, addr)
			dialed = c
			return c, err
		},
		OnHeader: gatherAnswer(answer),
		OnStatusError: func(status int, _ []byte, r io.Reader) {
			statusErr = readStatusError(status, r)
		},
	}
	// A context that is never done, with Timeout bounding the connect and
	// the handshake through connection deadlines: gobwas/ws then starts no
	// goroutine per dial to watch the context. Shutdown ends a dial under
	// way through dialTracked instead.
	d.Timeout = p.handshakeTimeout()
	conn, br, hs, err := d.Dial(context.Background(), target.String())
	if dialed != nil {
		p.untrackDial(dialed)
	}
	if err != nil {
		if statusErr != nil {
			return nil, statusErr
		}
		return nil, fmt.Errorf("dial %s: %w", target.Redacted(), err)
	}
	addNegotiated(answer, hs)
	var pending []byte
	if br != nil {
		pending, _ = br.Peek(br.Buffered())
	}
	fr := newFrameReader(conn, pending)
	if br != nil {
		ws.PutReader(br)
	}
	return &upstream{conn: conn, br: fr, hs: hs, answer: answer}, nil
}

// dialTracked dials the upstream's TCP connection so that Shutdown can
// end it: the connect through p.dialing, the handshake that follows by
// closing the connection, which stays in p.dials until untrackDial.
func (p *Proxy) dialTracked(ctx context.Context, network, addr string) (net.Conn, error) {
	// net.Dialer's Cancel would start a goroutine per dial; AfterFunc
	// starts none unless Shutdown comes.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(p.dialing, cancel)()
	c, err := p.dial(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing {
		c.Close()
		return nil, ErrServerClosed
	}
	p.dials[c] = struct{}{}
	return c, nil
}

// untrackDial forgets an upstream connection whose handshake is over.
func (p *Proxy) untrackDial(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.dials, c)
}

// gatherAnswer is the Dialer's OnHeader callback that gathers into
// answer the end-to-end headers of the upstream's 101, which the client's
// 101 carries.
func gatherAnswer(answer http.Header) func(k, v []byte) error {
	return func(k, v []byte) error {
		key := string(k)
		if !isHopByHop(key) {
			answer.Add(key, string(v))
		}
		return nil
	}
}

// addNegotiated sets in answer the subprotocol and the extensions the
// upstream chose (hs), which the client's 101 carries on its behalf.
func addNegotiated(answer http.Header, hs ws.Handshake) {
	if hs.Protocol != "" {
		answer.Set("Sec-Websocket-Protocol", hs.Protocol)
	}
	if len(hs.Extensions) > 0 {
		var b strings.Builder
		httphead.WriteOptions(&b, hs.Extensions)
		answer.Set("Sec-Websocket-Extensions", b.String())
	}
}

func readStatusError(status int, r io.Reader) *upstreamStatusError {
	e := &upstreamStatusError{status: status, header: http.Header{}}
	// ReadResponse drops a Connection header that says close: keep the
	// head as it came to see which headers Connection names.
	var raw bytes.Buffer
	resp, err := http.ReadResponse(bufio.NewReader(io.TeeReader(r, &raw)), nil)
	if err != nil {
		return e
	}
	tp := textproto.NewReader(bufio.NewReader(&raw))
	tp.ReadLine()
	sent, _ := tp.ReadMIMEHeader()
	defer resp.Body.Close()
	for k, vs := range resp.Header {
		if isHopByHop(k) || k == "Content-Length" || connectionListed(http.Header(sent), k) {
			continue
		}
		e.header[k] = vs
	}
	e.body, _ = io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	return e
}

// appendForwardHeader appends, as appendHeader writes header lines, the
// headers the upstream request carries besides those gobwas/ws writes
// itself: every end-to-end header of req, and X-Forwarded-For, -Proto and
// -Host, which replace the request's own (X-Forwarded-For adds client's
// host to those it names).
func appendForwardHeader(dst []byte, req *http.Request, client string, overTLS bool) []byte {
	const xff, xfp, xfh = "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host"
	forwardedFor, hasFor := "", false
	if host, _, err := net.SplitHostPort(client); err == nil {
		forwardedFor, hasFor = host, true
		if prior := req.Header.Values(xff); len(prior) > 0 {
			forwardedFor = strings.Join(prior, ", ") + ", " + host
		}
	}
	proto := "http"
	if overTLS {
		proto = "https"
	}
	var buf [32]string
	keys := append(buf[:0], xfp, xfh)
	if hasFor {
		keys = append(keys, xff)
	}
	for k := range req.Header {
		ck := http.CanonicalHeaderKey(k)
		switch {
		case k == xfp, k == xfh, k == xff && hasFor:
			// Replaced.
		case hopByHop[ck], handshakeHeaderKey(ck), connectionListed(req.Header, k):
		default:
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		switch {
		case k == xfp:
			dst = appendField(dst, k, proto)
		case k == xfh:
			dst = appendField(dst, k, req.Host)
		case k == xff && hasFor:
			dst = appendField(dst, k, forwardedFor)
		default:
			for _, v := range req.Header[k] {
				dst = appendField(dst, k, v)
			}
		}
	}
	return dst
}

// hopByHop are the headers RFC 9110 section 7.6.1 says a proxy must not
// forward, plus the ones any Connection header names.
var hopByHop = map[string]bool{
	"Connection":          true,
	"Proxy-Connection":    true,
	"Keep-Alive":          true,
	"Proxy-Authenticate":  true,
	"Proxy-Authorization": true,
	"Te":                  true,
	"Trailer":             true,
	"Transfer-Encoding":   true,
	"Upgrade":             true,
}

func isHopByHop(k string) bool { return hopByHop[http.CanonicalHeaderKey(k)] }

// connectionListed reports whether h's Connection field names k: a header
// that is hop-by-hop for this connection only (RFC 9110 section 7.6.1).
func connectionListed(h http.Header, k string) bool {
	for _, v := range h["Connection"] { // canonical already: no CanonicalHeaderKey per call
		if hasToken(v, k) {
			return true
		}
	}
	return false
}

// handshakeHeaderKey names, in their canonical form, the headers
// gobwas/ws's Dialer writes itself.
func handshakeHeaderKey(k string) bool {
	switch k {
	case "Host", "Sec-Websocket-Key", "Sec-Websocket-Version", "Sec-Websocket-Protocol",
		"Sec-Websocket-Extensions", "Sec-Websocket-Accept", "Content-Length":
		return true
	}
	return false
}

func splitTokens(vs []string) []string {
	var out []string
	for _, v := range vs {
		for t := range strings.SplitSeq(v, ",") {
			if t = strings.TrimSpace(t); t != "" {
				out = append(out, t)
			}
		}
	}
	return out
}

// joinURL returns base with the path of r joined to its path and the query
// of r appended to its query, as httputil's single-host director does.
func joinURL(base, r *url.URL) *url.URL {
	u := joinedURL(base, r)
	return &u
}

// joinedURL is joinURL's URL as a value, for a caller that keeps it on its
// stack.
func joinedURL(base, r *url.URL) url.URL {
	u := *base
	u.Path, u.RawPath = joinPath(base, r)
	switch {
	case base.RawQuery == "":
		u.RawQuery = r.RawQuery
	case r.RawQuery != "":
		u.RawQuery = base.RawQuery + "&" + r.RawQuery
	}
	return u
}

func joinPath(a, b *url.URL) (path, rawpath string) {
	if a.RawPath == "" && b.RawPath == "" {
		return singleJoiningSlash(a.Path, b.Path), ""
	}
	apath, bpath := a.EscapedPath(), b.EscapedPath()
	aslash, bslash := strings.HasSuffix(apath, "/"), strings.HasPrefix(bpath, "/")
	switch {
	case aslash && bslash:
		return a.Path + b.Path[1:], apath + bpath[1:]
	case !aslash && !bslash:
		return a.Path + "/" + b.Path, apath + "/" + bpath
	}
	return a.Path + b.Path, apath + bpath
}

func singleJoiningSlash(a, b string) string {
	aslash, bslash := strings.HasSuffix(a, "/"), strings.HasPrefix(b, "/")
	switch {
	case a == "":
		if b == "" {
			return "/"
		}
		return b
	case aslash && bslash:
		return a + b[1:]
	case !aslash && !bslash && b != "":
		return a + "/" + b
	}
	return a + b
}

// writeStatus writes a minimal HTTP error answer and leaves the connection
// to be closed.
func writeStatus(w io.Writer, status int, msg string) {
	msg += "\n"
	fmt.Fprintf(w, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %s\r\nConnection: close\r\n\r\n%s",
		status, http.StatusText(status), strconv.Itoa(len(msg)), msg)
}

// hijacker lets gobwas/ws's HTTPUpgrader answer a request the proxy read
// itself: it "hijacks" the connection the proxy already owns.
type hijacker struct {
	conn net.Conn
	br   *bufio.Reader
	bw   *bufio.Writer
	h    http.Header
}

func (h *hijacker) Header() http.Header {
	if h.h == nil {
		h.h = http.Header{}
	}
	return h.h
}
func (h *hijacker) Write(b []byte) (int, error) { return h.conn.Write(b) }
func (h *hijacker) WriteHeader(int)             {}
func (h *hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if h.bw == nil {
		h.bw = bufio.NewWriterSize(h.conn, 512)
	}
	return h.conn, bufio.NewReadWriter(h.br, h.bw), nil
}

var (
	errHeadTooLarge  = errors.New("request head too large")
	errBadVersion    = errors.New("Sec-WebSocket-Version is not 13")
	errBadKey        = errors.New("bad Sec-WebSocket-Key")
	errBadExtensions = errors.New("malformed Sec-WebSocket-Extensions")
)

// peekHead waits until br holds a whole request head, returns it (valid
// until br is read) and reports whether it asks for a WebSocket upgrade;
// it consumes nothing.
func peekHead(br *bufio.Reader) (head []byte, upgrade bool, err error) {
	for n := 1; ; n = br.Buffered() + 1 {
		_, err := br.Peek(n)
		b, _ := br.Peek(br.Buffered())
		if i := bytes.Index(b, []byte("\r\n\r\n")); i >= 0 {
			return b[:i+4], headWantsWebSocket(b[:i+2]), nil
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, false, errHeadTooLarge
		}
		if err != nil {
			return nil, false, err
		}
	}
}

// headWantsWebSocket reports whether a request head has an Upgrade header
// naming websocket (RFC 6455 section 4.1).
func headWantsWebSocket(head []byte) bool {
	for line := range bytes.SplitSeq(head, []byte("\r\n")) {
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok || !bytes.EqualFold(bytes.TrimSpace(k), []byte("Upgrade")) {
			continue
		}
		for t := range bytes.SplitSeq(v, []byte(",")) {
			if bytes.EqualFold(bytes.TrimSpace(t), []byte("websocket")) {
				return true
			}
		}
	}
	return false
}

// reject refuses an upgrade as a reject rule says: its status, Retry-After
// and body. The upstream is never dialed.
func (p *Proxy) reject(w io.Writer, client string, lr *liveRule, log *zap.Logger, id uint64, req *http.Request) {
	a := &lr.Action
	h := http.Header{"Content-Type": {"text/plain; charset=utf-8"}}
	if a.RetryAfter >= 0 {
		h.Set("Retry-After", strconv.Itoa(a.RetryAfter))
	}
	e := &upstreamStatusError{status: a.Status, header: h, body: []byte(a.Body)}
	e.writeTo(w)
	log.Info("fault fired", zap.String("rule", lr.Name), zap.Stringer("trigger", lr.Trigger),
		zap.Stringer("action", a.Kind), zap.Int("status", a.Status), zap.Uint64("seed", p.Seed))
	p.emit(Event{Time: time.Now(), Kind: EventFault, Session: id, Client: client,
		Path: req.URL.Path, Query: req.URL.RawQuery, By: "rule", Rule: lr.Name,
		Trigger: lr.Trigger.String(), Action: a.Kind.String(), Status: a.Status})
}

// dialFailure is the step at which an upstream that could not be dialed,
// or failed its handshake without an answer, refused an attempt:
// RefusedTimeout for a timeout of any kind (a deadline, ETIMEDOUT),
// RefusedUnreachable otherwise.
func dialFailure(err error) string {
	if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
		return RefusedTimeout
	}
	return RefusedUnreachable
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
