package proxy

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/httphead"
	"github.com/gobwas/ws"
)

// answerConn is an upstream connection in memory: it records what is
// written to it and answers with its template, in which "{accept}" stands
// for the Sec-WebSocket-Accept of the key the request carried.
type answerConn struct {
	template string
	req      bytes.Buffer
	nonce    []byte
	answer   []byte // the template expanded, once the first Read has come
	out      []byte // what is left to read
	expanded bool
}

func (c *answerConn) Write(b []byte) (int, error) { return c.req.Write(b) }

func (c *answerConn) Read(b []byte) (int, error) {
	if !c.expanded {
		c.expanded = true
		c.nonce = requestKey(c.req.Bytes())
		c.answer = expandAnswer(c.template, c.nonce)
		c.out = c.answer
	}
	if len(c.out) == 0 {
		return 0, io.EOF
	}
	n := copy(b, c.out)
	c.out = c.out[n:]
	return n, nil
}

func (c *answerConn) Close() error { return nil }
func (c *answerConn) LocalAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 50000}
}
func (c *answerConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2), Port: 9001}
}
func (c *answerConn) SetDeadline(time.Time) error      { return nil }
func (c *answerConn) SetReadDeadline(time.Time) error  { return nil }
func (c *answerConn) SetWriteDeadline(time.Time) error { return nil }

// requestKey returns the Sec-WebSocket-Key of a request head.
func requestKey(req []byte) []byte {
	const field = "\r\nSec-WebSocket-Key: "
	i := bytes.Index(req, []byte(field))
	if i < 0 {
		return nil
	}
	k := req[i+len(field):]
	if j := bytes.Index(k, []byte("\r\n")); j >= 0 {
		k = k[:j]
	}
	return bytes.Clone(k)
}

// wsAccept is the Sec-WebSocket-Accept for nonce (RFC 6455 section 4.2.2).
func wsAccept(nonce []byte) string {
	h := sha1.Sum([]byte(string(nonce) + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

func expandAnswer(template string, nonce []byte) []byte {
	return []byte(strings.ReplaceAll(template, "{accept}", wsAccept(nonce)))
}

// dialerResult is what dialUpstream makes of an answer with gobwas/ws's
// Dialer, and what the Dialer left buffered after the head.
type dialerResult struct {
	hs     ws.Handshake
	answer http.Header
	err    error
	rest   []byte
}

// dialerAnswer runs gobwas/ws's Dialer, set up as dialUpstream sets it up,
// against an upstream that answers template. It returns what dialUpstream
// gets, the nonce the Dialer sent and the answer with {accept} expanded.
func dialerAnswer(template string, protocols []string, exts []httphead.Option) (res dialerResult, nonce, head []byte) {
	c := &answerConn{template: template}
	answer := http.Header{}
	var status int
	d := ws.Dialer{
		Protocols:     protocols,
		Extensions:    exts,
		NetDial:       func(context.Context, string, string) (net.Conn, error) { return c, nil },
		OnHeader:      gatherAnswer(answer),
		OnStatusError: func(s int, _ []byte, _ io.Reader) { status = s },
	}
	_, br, hs, err := d.Dial(context.Background(), "ws://upstream.test/chat")
	if br != nil {
		res.rest = bytes.Clone(must(br.Peek(br.Buffered())))
		ws.PutReader(br)
	}
	if se := ws.StatusError(0); errors.As(err, &se) && int(se) != status {
		panic("OnStatusError was given " + strconv.Itoa(status) + ", Dial returned " + err.Error())
	}
	if err != nil {
		res.err = err
		return res, c.nonce, c.answer
	}
	addNegotiated(answer, hs) // dialUpstream's step after Dial
	res.hs, res.answer = hs, answer
	return res, c.nonce, c.answer
}

func must[T any](v T, _ error) T { return v }

// gobwasErrors are the errors gobwas/ws's Dialer returns for an answer;
// checkUpgradeAnswer must return the same.
var gobwasErrors = []error{
	ws.ErrMalformedResponse,
	ws.ErrHandshakeBadProtocol,
	ws.ErrHandshakeBadUpgrade,
	ws.ErrHandshakeBadConnection,
	ws.ErrHandshakeBadSecAccept,
	ws.ErrHandshakeBadSubProtocol,
	ws.ErrHandshakeBadExtensions,
}

// sameError reports how ours differs from the Dialer's error want, or "".
// The Dialer's StatusError is an *answerStatus, and the end of the stream
// it meets within the head errAnswerIncomplete.
func sameError(want, ours error) string {
	switch se := ws.StatusError(0); {
	case want == nil:
		if ours != nil {
			return "got " + ours.Error() + "; want nil"
		}
		return ""
	case ours == nil:
		return "got nil; want " + want.Error()
	case errors.As(want, &se):
		var as *answerStatus
		if !errors.As(ours, &as) || as.status != int(se) || !errors.Is(ours, want) || ours.Error() != want.Error() {
			return "got " + ours.Error() + "; want *answerStatus{" + strconv.Itoa(int(se)) + "}"
		}
		return ""
	case want == io.EOF:
		if ours != errAnswerIncomplete {
			return "got " + ours.Error() + "; want errAnswerIncomplete (the Dialer: EOF)"
		}
		return ""
	}
	for _, e := range gobwasErrors {
		if want == e {
			if !errors.Is(ours, want) {
				return "got " + ours.Error() + "; want " + want.Error()
			}
			return ""
		}
	}
	return "the Dialer's error " + strconv.Quote(want.Error()) + " is none this test knows"
}

// compareAnswer checks checkUpgradeAnswer against the Dialer on the answer
// template and reports whether the Dialer accepted it.
func compareAnswer(t *testing.T, template string, protocols []string, exts []httphead.Option) bool {
	t.Helper()
	want, nonce, head := dialerAnswer(template, protocols, exts)
	if len(nonce) != nonceLen {
		t.Fatalf("the Dialer's key: got %q; want %d bytes", nonce, nonceLen)
	}
	hs, answer, err := checkUpgradeAnswer(head, nonce, protocols, exts)
	if d := sameError(want.err, err); d != "" {
		t.Fatalf("checkUpgradeAnswer(%q): %s", head, d)
	}
	if want.err != nil {
		if answer != nil || !reflect.DeepEqual(hs, ws.Handshake{}) {
			t.Errorf("checkUpgradeAnswer(%q) failing: got %+v, %v; want zero values", head, hs, answer)
		}
		return false
	}
	if !reflect.DeepEqual(hs, want.hs) {
		t.Errorf("checkUpgradeAnswer(%q) handshake: got %+v; want %+v", head, hs, want.hs)
	}
	if !reflect.DeepEqual(answer, want.answer) {
		t.Errorf("checkUpgradeAnswer(%q) answer: got %q; want %q", head, answer, want.answer)
	}
	n := answerHeadLen(head)
	if n < 0 {
		t.Fatalf("answerHeadLen(%q): got -1; want the head's length", head)
	}
	if rest := head[n:]; !bytes.HasPrefix(rest, want.rest) || len(head) <= ws.DefaultClientReadBufferSize && len(rest) != len(want.rest) {
		t.Errorf("bytes after answerHeadLen(%q) = %d: got %q; the Dialer kept %q", head, n, rest, want.rest)
	}
	return true
}

// offers returns the subprotocols and extensions dialUpstream offers for
// a client's Sec-WebSocket-Protocol and Sec-WebSocket-Extensions.
func offers(t testing.TB, protocols, extensions string) ([]string, []httphead.Option) {
	var exts []httphead.Option
	if extensions != "" {
		var ok bool
		if exts, ok = httphead.ParseOptions([]byte(extensions), nil); !ok {
			t.Fatalf("ParseOptions(%q): got false; want true", extensions)
		}
	}
	var ps []string
	if protocols != "" {
		ps = splitTokens([]string{protocols})
	}
	return ps, exts
}

const (
	deflate     = "permessage-deflate; client_max_window_bits"
	accept101   = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n"
	wrongAccept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
)

var answerTests = []struct {
	name       string
	head       string
	protocols  string // as the client offers them, split as dialUpstream splits them
	extensions string
	ok         bool // whether the Dialer accepts it
}{
	{name: "valid", head: accept101 + "\r\n", ok: true},
	{name: "end-to-end headers", head: accept101 + "Date: Mon, 02 Jan 2006 15:04:05 GMT\r\nServer: up/1.0\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\nx-custom-thing:  v  \r\nContent-Length: 0\r\n\r\n", ok: true},
	{name: "hop-by-hop headers", head: accept101 + "Keep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\nProxy-Authenticate: Basic\r\nTE: trailers\r\nTrailer: X\r\nProxy-Connection: close\r\nX-Kept: 1\r\n\r\n", ok: true},
	{name: "header named by Connection", head: "HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\nUpgrade-Insecure: 1\r\n\r\n", ok: true},
	{name: "case variants", head: "HTTP/1.1 101 switching protocols\r\nupgrade: WebSocket\r\nCONNECTION: upgrade\r\nsec-websocket-accept: {accept}\r\n\r\n", ok: true},
	{name: "spaces and tabs", head: "HTTP/1.1 101 Switching Protocols\r\n Upgrade \t:  websocket\t\r\nConnection:Upgrade\r\nSec-WebSocket-Accept:\t{accept} \r\n\r\n", ok: true},
	{name: "bare LF", head: "HTTP/1.1 101 Switching Protocols\nUpgrade: websocket\nConnection: Upgrade\nSec-WebSocket-Accept: {accept}\nX-A: 1\n\n", ok: true},
	{name: "mixed line ends", head: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\n\r\n", ok: true},
	{name: "frames after the head", head: accept101 + "\r\n\x81\x05hello", ok: true},
	{name: "empty line after LF ends the head", head: accept101 + "\n\r\nX-After: 1\r\n\r\n", ok: true},
	{name: "HTTP/1.2", head: "HTTP/1.2 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n", ok: true},
	{name: "empty reason", head: "HTTP/1.1 101 \r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n", ok: true},
	{name: "empty header name", head: accept101 + ": nameless\r\n\r\n", ok: true},
	{name: "name with a space", head: accept101 + "x bad-NAME: 1\r\n\r\n", ok: true},
	{name: "long name", head: accept101 + "x-" + strings.Repeat("aB", 60) + ": long\r\n\r\n", ok: true},
	{name: "colon in value", head: accept101 + "X-Url: http://a:1/b\r\n\r\n", ok: true},
	{name: "empty value", head: accept101 + "X-Empty:\r\nX-Empty: \r\n\r\n", ok: true},

	{name: "wrong accept", head: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + wrongAccept + "\r\n\r\n"},
	{name: "short accept", head: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: abc\r\n\r\n"},
	{name: "accept with its case changed", head: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Accept: " + strings.ToLower(wrongAccept) + "\r\n\r\n"},
	{name: "accept twice", head: accept101 + "Sec-WebSocket-Accept: {accept}\r\n\r\n", ok: true},
	{name: "accept and a wrong one", head: accept101 + "Sec-WebSocket-Accept: " + wrongAccept + "\r\n\r\n"},
	{name: "no accept", head: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"},
	{name: "no upgrade", head: "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"},
	{name: "no connection", head: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"},
	{name: "no headers", head: "HTTP/1.1 101 Switching Protocols\r\n\r\n"},
	{name: "upgrade with two tokens", head: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket, h2c\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"},
	{name: "upgrade not websocket", head: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"},
	{name: "upgrade twice", head: accept101 + "Upgrade: WEBSOCKET\r\n\r\n", ok: true},
	{name: "upgrade twice, the second wrong", head: accept101 + "Upgrade: tls\r\n\r\n"},
	{name: "connection keep-alive, upgrade", head: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"},
	{name: "connection upgrade, close", head: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade, close\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"},
	{name: "connection twice", head: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nConnection: keep-alive\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"},

	{name: "subprotocol offered", head: accept101 + "Sec-WebSocket-Protocol: superchat\r\n\r\n", protocols: "chat, superchat", ok: true},
	{name: "subprotocol not chosen", head: accept101 + "\r\n", protocols: "chat, superchat", ok: true},
	{name: "subprotocol not offered", head: accept101 + "Sec-WebSocket-Protocol: other\r\n\r\n", protocols: "chat, superchat"},
	{name: "subprotocol with none offered", head: accept101 + "Sec-WebSocket-Protocol: chat\r\n\r\n"},
	{name: "subprotocol list", head: accept101 + "Sec-WebSocket-Protocol: chat, superchat\r\n\r\n", protocols: "chat, superchat"},
	{name: "subprotocol in another case", head: accept101 + "Sec-WebSocket-Protocol: Chat\r\n\r\n", protocols: "chat"},
	{name: "subprotocol empty", head: accept101 + "Sec-WebSocket-Protocol: \r\n\r\n", protocols: "chat"},
	{name: "subprotocol twice", head: accept101 + "Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: superchat\r\n\r\n", protocols: "chat, superchat", ok: true},
	{name: "subprotocol, then one not offered", head: accept101 + "Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: other\r\n\r\n", protocols: "chat, superchat", ok: true},
	{name: "subprotocol not offered, then one offered", head: accept101 + "Sec-WebSocket-Protocol: other\r\nSec-WebSocket-Protocol: chat\r\n\r\n", protocols: "chat, superchat"},

	{name: "extension offered", head: accept101 + "Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n", extensions: deflate, ok: true},
	{name: "extension with parameters", head: accept101 + "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_max_window_bits=10\r\n\r\n", extensions: deflate, ok: true},
	{name: "extension with a quoted parameter", head: accept101 + "Sec-WebSocket-Extensions: permessage-deflate; x=\"a b\"; y=\"q\\\"r\"\r\n\r\n", extensions: deflate, ok: true},
	{name: "extension with nine parameters", head: accept101 + "Sec-WebSocket-Extensions: permessage-deflate; a=1; b=2; c=3; d=4; e=5; f=6; g=7; h=8; i=9\r\n\r\n", extensions: deflate, ok: true},
	{name: "two extensions", head: accept101 + "Sec-WebSocket-Extensions: x-foo; a=1, permessage-deflate\r\n\r\n", extensions: deflate + ", x-foo", ok: true},
	{name: "extensions over two headers", head: accept101 + "Sec-WebSocket-Extensions: x-foo\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=9\r\n\r\n", extensions: deflate + ", x-foo", ok: true},
	{name: "extension twice", head: accept101 + "Sec-WebSocket-Extensions: x-foo, x-foo; b\r\n\r\n", extensions: "x-foo", ok: true},
	{name: "extension not offered", head: accept101 + "Sec-WebSocket-Extensions: x-bar\r\n\r\n", extensions: deflate},
	{name: "extension with none offered", head: accept101 + "Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n"},
	{name: "offered extension, then one not offered", head: accept101 + "Sec-WebSocket-Extensions: permessage-deflate, x-bar\r\n\r\n", extensions: deflate},
	{name: "extension not offered, then one offered", head: accept101 + "Sec-WebSocket-Extensions: x-bar; a, permessage-deflate\r\n\r\n", extensions: deflate},
	{name: "extensions empty", head: accept101 + "Sec-WebSocket-Extensions: \r\n\r\n", extensions: deflate, ok: true},
	{name: "extensions malformed", head: accept101 + "Sec-WebSocket-Extensions: permessage-deflate; \"\r\n\r\n", extensions: deflate},
	{name: "extensions only commas", head: accept101 + "Sec-WebSocket-Extensions: ,,\r\n\r\n", extensions: deflate},
	{name: "extension and subprotocol", head: accept101 + "Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=15\r\nServer: x\r\n\r\n", protocols: "chat", extensions: deflate, ok: true},

	{name: "HTTP/1.0 101", head: "HTTP/1.0 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"},
	{name: "HTTP/1.0 403", head: "HTTP/1.0 403 Forbidden\r\nContent-Length: 0\r\n\r\n"},
	{name: "HTTP/2.0 101", head: "HTTP/2.0 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"},
	{name: "HTTP/0.9", head: "HTTP/0.9 101 x\r\n\r\n"},
	{name: "200", head: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"},
	{name: "403", head: "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"},
	{name: "503", head: "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\n\r\n"},
	{name: "426 with a bad header", head: "HTTP/1.1 426 Upgrade Required\r\nno colon\r\n"},
	{name: "403, status line only", head: "HTTP/1.1 403 Forbidden\r\n"},
	{name: "status with a colon", head: "HTTP/1.1 1:1 Odd\r\n\r\n"},
	{name: "status 0101", head: "HTTP/1.1 0101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n", ok: true},

	{name: "garbage status line", head: "garbage\r\n\r\n"},
	{name: "no reason, no space", head: "HTTP/1.1 101\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"},
	{name: "status not a number", head: "HTTP/1.1 abc OK\r\n\r\n"},
	{name: "two spaces", head: "HTTP/1.1  101 Switching Protocols\r\n\r\n"},
	{name: "lower-case http", head: "http/1.1 101 Switching Protocols\r\n\r\n"},
	{name: "version without a dot", head: "HTTP/11 101 Switching Protocols\r\n\r\n"},
	{name: "empty status line", head: "\r\nHTTP/1.1 101 Switching Protocols\r\n\r\n"},
	{name: "empty", head: ""},
	{name: "status line unended", head: "HTTP/1.1 101 Switching Protocols"},
	{name: "head unended", head: accept101},
	{name: "header unended", head: accept101 + "X-A: 1"},
	{name: "line without a colon", head: accept101 + "no colon here\r\n\r\n"},
	{name: "folded line", head: accept101 + "X-A: 1\r\n 2\r\n\r\n"},
	{name: "CR alone", head: accept101 + "\r\r\n\r\n"},
	{name: "bad line before the end", head: accept101 + "no colon"},
}

func TestCheckUpgradeAnswer(t *testing.T) {
	for _, tt := range answerTests {
		t.Run(tt.name, func(t *testing.T) {
			protocols, exts := offers(t, tt.protocols, tt.extensions)
			if ok := compareAnswer(t, tt.head, protocols, exts); ok != tt.ok {
				t.Errorf("the Dialer's decision on %q: got %v; the table says %v", tt.head, ok, tt.ok)
			}
		})
	}
}

// TestCheckUpgradeAnswerAsDialUpstream holds checkUpgradeAnswer to what
// dialUpstream itself returns for the table's answers.
func TestCheckUpgradeAnswerAsDialUpstream(t *testing.T) {
	for _, tt := range answerTests {
		t.Run(tt.name, func(t *testing.T) {
			c := &answerConn{template: tt.head}
			p := &Proxy{
				Upstream: &url.URL{Scheme: "ws", Host: "upstream.test", Path: "/"},
				dial:     func(context.Context, string, string) (net.Conn, error) { return c, nil },
				dialing:  context.Background(),
				dials:    map[net.Conn]struct{}{},
			}
			req := &http.Request{Method: http.MethodGet, URL: &url.URL{Path: "/chat"}, Host: "proxy.test", Header: http.Header{}}
			if tt.protocols != "" {
				req.Header.Set("Sec-WebSocket-Protocol", tt.protocols)
			}
			if tt.extensions != "" {
				req.Header.Set("Sec-WebSocket-Extensions", tt.extensions)
			}
			up, err := p.dialUpstream(req, &answerConn{})
			protocols, exts := offers(t, tt.protocols, tt.extensions)
			hs, answer, ours := checkUpgradeAnswer(c.answer, c.nonce, protocols, exts)
			var se *upstreamStatusError
			var as *answerStatus
			switch {
			case err == nil:
				up.close()
				if ours != nil {
					t.Fatalf("checkUpgradeAnswer(%q): got %v; dialUpstream got nil", c.answer, ours)
				}
				if !reflect.DeepEqual(hs, up.hs) {
					t.Errorf("handshake: got %+v; dialUpstream got %+v", hs, up.hs)
				}
				if !reflect.DeepEqual(answer, up.answer) {
					t.Errorf("answer: got %q; dialUpstream got %q", answer, up.answer)
				}
			case errors.As(err, &se):
				if !errors.As(ours, &as) || as.status != se.status {
					t.Errorf("checkUpgradeAnswer(%q): got %v; dialUpstream got %v", c.answer, ours, err)
				}
			case errors.Is(err, io.EOF):
				if ours != errAnswerIncomplete {
					t.Errorf("checkUpgradeAnswer(%q): got %v; dialUpstream got %v", c.answer, ours, err)
				}
			default:
				if ours == nil || !errors.Is(err, ours) {
					t.Errorf("checkUpgradeAnswer(%q): got %v; dialUpstream got %v", c.answer, ours, err)
				}
			}
		})
	}
}

// FuzzCheckUpgradeAnswer holds checkUpgradeAnswer to the Dialer on any
// answer, "{accept}" in it standing for the right accept, and any offer.
func FuzzCheckUpgradeAnswer(f *testing.F) {
	for _, tt := range answerTests {
		f.Add(tt.head, tt.protocols, tt.extensions)
	}
	f.Fuzz(func(t *testing.T, head, protocols, extensions string) {
		var exts []httphead.Option
		if extensions != "" {
			var ok bool
			if exts, ok = httphead.ParseOptions([]byte(extensions), nil); !ok {
				t.Skip("dialUpstream refuses such a client") // errBadExtensions
			}
		}
		compareAnswer(t, head, splitTokens([]string{protocols}), exts)
	})
}

func TestAnswerHeadLen(t *testing.T) {
	for _, tt := range []struct {
		b    string
		want int
	}{
		{"", -1},
		{"HTTP/1.1 101 OK", -1},
		{"HTTP/1.1 101 OK\r\n", -1},
		{"\r\n", -1},
		{"\r\n\r\n", 4},
		{"HTTP/1.1 101 OK\r\n\r\n", 19},
		{"HTTP/1.1 101 OK\n\n", 17},
		{"HTTP/1.1 101 OK\r\nA: 1\r\n\r\nxyz", 25},
		{"HTTP/1.1 101 OK\r\nA: 1\n\nB: 2\r\n\r\n", 23},
		{"HTTP/1.1 101 OK\r\nA: 1\r\r\n\r\n", 26},
	} {
		if got := answerHeadLen([]byte(tt.b)); got != tt.want {
			t.Errorf("answerHeadLen(%q): got %d; want %d", tt.b, got, tt.want)
		}
	}
}

func TestAnswerStatus(t *testing.T) {
	_, _, err := checkUpgradeAnswer([]byte("HTTP/1.1 503 Service Unavailable\r\n\r\n"), []byte(strings.Repeat("A", nonceLen)), nil, nil)
	var as *answerStatus
	if !errors.As(err, &as) || as.status != http.StatusServiceUnavailable {
		t.Fatalf("checkUpgradeAnswer(503): got %v; want *answerStatus{503}", err)
	}
	if !errors.Is(err, ws.StatusError(503)) || errors.Is(err, ws.StatusError(502)) {
		t.Errorf("errors.Is(%v, ws.StatusError(503)): got %v; want true, and false for 502", err, errors.Is(err, ws.StatusError(503)))
	}
}

// requestTarget is a target of the request test: the URL given to Dial's
// String, and a name.
type requestTarget struct {
	name string
	u    *url.URL
}

func parsedTarget(raw string) requestTarget {
	u, err := url.Parse(raw)
	if err != nil {
		panic(err)
	}
	return requestTarget{raw, u}
}

func joinedTarget(base, reqURI string) requestTarget {
	r, err := url.ParseRequestURI(reqURI)
	if err != nil {
		panic(err)
	}
	u := joinURL(parsedTarget(base).u, r)
	return requestTarget{base + " + " + reqURI, u}
}

var requestTargets = []requestTarget{
	parsedTarget("ws://example.com"),
	parsedTarget("ws://example.com/"),
	parsedTarget("ws://example.com/chat"),
	parsedTarget("ws://example.com/chat/"),
	parsedTarget("ws://example.com?x=1"),
	parsedTarget("ws://example.com/chat?room=1&name=a%20b"),
	parsedTarget("ws://example.com/chat?"),
	parsedTarget("ws://example.com/chat?a?b"),
	parsedTarget("ws://example.com/a%2Fb/c%20d"),
	parsedTarget("ws://example.com/a%2fb"),
	parsedTarget("ws://example.com/%7Euser/caf%C3%A9"),
	parsedTarget("ws://example.com/a;b=c/d:e@f!$&'()*+,="),
	parsedTarget("ws://example.com:80/chat"),
	parsedTarget("ws://example.com:443/chat"),
	parsedTarget("ws://example.com:8080/chat"),
	parsedTarget("ws://example.com:/chat"),
	parsedTarget("ws://127.0.0.1:9001/"),
	parsedTarget("ws://[::1]/chat"),
	parsedTarget("ws://[::1]:8080/chat?q=1"),
	parsedTarget("ws://[2001:db8::1]:80"),
	parsedTarget("ws://[fe80::1%25eth0]:9001/x"),
	parsedTarget("ws://user:pass@example.com/chat"),
	parsedTarget("ws://example.com/chat#frag"),
	parsedTarget("ws://example.com/chat?q=1#frag"),
	parsedTarget("ws://ex%C3%A4mple.com/chat"),
	parsedTarget("ws://Example.COM/Chat"),
	parsedTarget("ws://under_score.example/x~y"),
	{"constructed path with a space", &url.URL{Scheme: "ws", Host: "example.com", Path: "/a b/ü"}},
	{"constructed path without a slash", &url.URL{Scheme: "ws", Host: "example.com", Path: "chat"}},
	{"constructed path *", &url.URL{Scheme: "ws", Host: "example.com", Path: "*"}},
	{"constructed raw path not matching", &url.URL{Scheme: "ws", Host: "example.com", Path: "/a/b", RawPath: "/x%2Fy"}},
	{"constructed raw path matching", &url.URL{Scheme: "ws", Host: "example.com", Path: "/a/b c", RawPath: "/a%2Fb%20c"}},
	{"constructed upper-case scheme", &url.URL{Scheme: "WS", Host: "example.com", Path: "/x"}},
	{"constructed force query", &url.URL{Scheme: "ws", Host: "example.com", ForceQuery: true}},
	joinedTarget("ws://example.com", "/chat?x=1"),
	joinedTarget("ws://example.com/base/", "/chat"),
	joinedTarget("ws://example.com/base?k=v", "/chat/a%2Fb?x=1"),
	joinedTarget("ws://[::1]:9001/base", "/"),
}

func protocolsOffers() [][]string {
	return [][]string{nil, {"chat"}, {"chat", "superchat", "v2.json"}}
}

func extensionsOffers() [][]httphead.Option {
	odd := httphead.Option{Name: []byte("x-odd")}
	odd.Parameters.Set([]byte("sp"), []byte("a b"))
	odd.Parameters.Set([]byte("q"), []byte(`say "hi"`))
	odd.Parameters.Set([]byte("ctl"), []byte("a\x01b\x7fc"))
	odd.Parameters.Set([]byte("flag"), nil)
	odd.Parameters.Set([]byte("bs"), []byte(`a\b`))
	exts, _ := httphead.ParseOptions([]byte(deflate+"; server_max_window_bits=10, x-foo"), nil)
	return [][]httphead.Option{nil, exts, {odd, {Name: []byte("a,b")}}}
}

func headerOffers() []http.Header {
	many := http.Header{}
	for i := range 40 {
		many.Set("X-H"+strconv.Itoa(39-i), strconv.Itoa(i))
	}
	return []http.Header{
		nil,
		{},
		{
			"Origin":            {"http://example.com"},
			"User-Agent":        {"test/1.0"},
			"Cookie":            {"a=1", "b=2"},
			"X-Forwarded-For":   {"10.0.0.1, 127.0.0.1"},
			"X-Forwarded-Proto": {"http"},
			"X-Forwarded-Host":  {"proxy.example"},
		},
		{
			"x-lower":      {"  padded \t"},
			"X-Newlines":   {"a\r\nb\nc\rd", "\r\n lead", "trail \r\n"},
			"Bad Name":     {"dropped"},
			"":             {"dropped"},
			"X-Bad\x01":    {"dropped"},
			"X-Empty":      {"", " "},
			"X-Non-Ascii":  {"café"},
			"Ümlaut":       {"dropped"},
			"X-Nil-Values": nil,
		},
		many,
	}
}

// appendUpgradeRequest is the whole head the Dialer writes with Header
// ws.HandshakeHeaderBytes(header), header being header lines as
// appendHeader writes them: appendUpgradeRequestHead, header and the empty
// line, as a loop writes them.
func appendUpgradeRequest(dst []byte, target *url.URL, nonce []byte, protocols []string, exts []httphead.Option, header []byte) []byte {
	dst = appendUpgradeRequestHead(dst, target, nonce, protocols, exts)
	dst = append(dst, header...)
	return append(dst, "\r\n"...)
}

func TestAppendUpgradeRequest(t *testing.T) {
	for _, target := range requestTargets {
		t.Run(target.name, func(t *testing.T) {
			for _, protocols := range protocolsOffers() {
				for _, exts := range extensionsOffers() {
					for _, header := range headerOffers() {
						c := &answerConn{}
						d := ws.Dialer{
							Protocols:  protocols,
							Extensions: exts,
							Header:     ws.HandshakeHeaderHTTP(header),
							NetDial:    func(context.Context, string, string) (net.Conn, error) { return c, nil },
						}
						_, _, _, err := d.Dial(context.Background(), target.u.String())
						want := c.req.Bytes()
						if len(want) == 0 {
							t.Fatalf("the Dialer wrote nothing for %q: %v", target.u, err)
						}
						nonce := requestKey(want)
						got := appendUpgradeRequest(nil, target.u, nonce, protocols, exts, appendHeader(nil, header))
						if !bytes.Equal(got, want) {
							t.Errorf("appendUpgradeRequest(%q, %q, %v, %q):\ngot %q;\nwant %q", target.u, protocols, exts, header, got, want)
						}
						// Appended, not overwritten.
						prefix := []byte("prefix")
						if got := appendUpgradeRequest(prefix, target.u, nonce, protocols, exts, appendHeader(nil, header)); !bytes.Equal(got[:6], prefix) || !bytes.Equal(got[6:], want) {
							t.Errorf("appendUpgradeRequest after %q: got %q; want %q", prefix, got, append(prefix, want...))
						}
					}
				}
			}
		})
	}
}

func TestMakeNonce(t *testing.T) {
	src := [16]byte{'t', 'h', 'e', ' ', 's', 'a', 'm', 'p', 'l', 'e', ' ', 'n', 'o', 'n', 'c', 'e'}
	dst := make([]byte, nonceLen+1)
	dst[nonceLen] = '!'
	makeNonce(dst, src)
	if got, want := string(dst), "dGhlIHNhbXBsZSBub25jZQ==!"; got != want {
		t.Errorf("makeNonce(%q): got %q; want %q", src, got, want)
	}
	// The RFC's example: a 101 with its accept passes.
	head := []byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
	if _, _, err := checkUpgradeAnswer(head, dst[:nonceLen], nil, nil); err != nil {
		t.Errorf("checkUpgradeAnswer(%q, RFC 6455's key): got %v; want nil", head, err)
	}
}

func TestUpgradeHandshakeAllocs(t *testing.T) {
	target := parsedTarget("ws://127.0.0.1:9001/chat?room=1").u
	nonce := []byte("dGhlIHNhbXBsZSBub25jZQ==")
	header := appendHeader(nil, headerOffers()[2])
	dst := make([]byte, 0, 1024)
	if n := testing.AllocsPerRun(100, func() {
		dst = appendUpgradeRequest(dst[:0], target, nonce, []string{"chat"}, nil, header)
	}); n != 0 {
		t.Errorf("appendUpgradeRequest: got %v allocations; want 0", n)
	}
	head := []byte(strings.ReplaceAll(accept101+"\r\n", "{accept}", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="))
	if n := testing.AllocsPerRun(100, func() {
		if _, _, err := checkUpgradeAnswer(head, nonce, nil, nil); err != nil {
			t.Fatal(err)
		}
	}); n > 1 {
		t.Errorf("checkUpgradeAnswer of a bare 101: got %v allocations; want 1, its answer header", n)
	}
}

func BenchmarkAppendUpgradeRequest(b *testing.B) {
	target := joinedTarget("ws://127.0.0.1:9001/", "/chat?room=1").u
	nonce := []byte("dGhlIHNhbXBsZSBub25jZQ==")
	_, exts := offers(b, "", deflate)
	header := appendHeader(nil, headerOffers()[2])
	dst := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		dst = appendUpgradeRequest(dst[:0], target, nonce, []string{"chat"}, exts, header)
	}
	b.SetBytes(int64(len(dst)))
}

// benchAnswer is an upstream's 101 as a browser-facing server sends it.
const benchAnswer = "HTTP/1.1 101 Switching Protocols\r\nDate: Mon, 02 Jan 2006 15:04:05 GMT\r\nServer: up/1.0\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: chat\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=15\r\n\r\n"

func BenchmarkCheckUpgradeAnswer(b *testing.B) {
	nonce := []byte("dGhlIHNhbXBsZSBub25jZQ==")
	_, exts := offers(b, "", deflate)
	head := []byte(benchAnswer)
	b.ReportAllocs()
	b.SetBytes(int64(len(head)))
	for b.Loop() {
		if _, _, err := checkUpgradeAnswer(head, nonce, []string{"chat"}, exts); err != nil {
			b.Fatal(err)
		}
	}
}

// benchUpstream answers benchAnswer, its accept made for the request's
// key, without allocating.
type benchUpstream struct {
	req, answer, out []byte
}

func (c *benchUpstream) Write(b []byte) (int, error) {
	c.req = append(c.req, b...)
	return len(b), nil
}

func (c *benchUpstream) Read(b []byte) (int, error) {
	if c.out == nil {
		const field = "\r\nSec-WebSocket-Key: "
		k := c.req[bytes.Index(c.req, []byte(field))+len(field):][:nonceLen]
		c.out = c.answer
		i := bytes.Index(c.answer, []byte("Sec-WebSocket-Accept: ")) + len("Sec-WebSocket-Accept: ")
		acceptFor((*[acceptLen]byte)(c.answer[i:]), k)
	}
	if len(c.out) == 0 {
		return 0, io.EOF
	}
	n := copy(b, c.out)
	c.out = c.out[n:]
	return n, nil
}

// BenchmarkDialerUpgrade is what the two replace: the Dialer's Upgrade,
// writing the request and checking the same answer, with dialUpstream's
// callbacks and steps after it.
func BenchmarkDialerUpgrade(b *testing.B) {
	target := joinedTarget("ws://127.0.0.1:9001/", "/chat?room=1").u
	_, exts := offers(b, "", deflate)
	header := ws.HandshakeHeaderHTTP(headerOffers()[2])
	c := &benchUpstream{answer: []byte(benchAnswer)}
	b.ReportAllocs()
	for b.Loop() {
		c.req, c.out = c.req[:0], nil
		answer := http.Header{}
		d := ws.Dialer{
			Protocols:  []string{"chat"},
			Extensions: exts,
			Header:     header,
			OnHeader:   gatherAnswer(answer),
		}
		_, hs, err := d.Upgrade(c, target)
		if err != nil {
			b.Fatal(err)
		}
		addNegotiated(answer, hs)
	}
}

// FuzzAppendUpgradeRequest holds appendUpgradeRequest to the Dialer on
// any ws:// URL url.Parse accepts and any offer and header.
func FuzzAppendUpgradeRequest(f *testing.F) {
	for _, target := range requestTargets {
		f.Add(target.u.String(), "chat, superchat", deflate, "X-Key", " value\r\n")
	}
	f.Fuzz(func(t *testing.T, rawURL, protocols, extensions, key, value string) {
		target, err := url.Parse(rawURL)
		if err != nil || target.Scheme != "ws" {
			t.Skip() // wss: the Dialer writes the request through TLS
		}
		var exts []httphead.Option
		if extensions != "" {
			var ok bool
			if exts, ok = httphead.ParseOptions([]byte(extensions), nil); !ok {
				t.Skip()
			}
		}
		ps := splitTokens([]string{protocols})
		header := http.Header{key: {value}, "Origin": {"http://example.com"}}
		c := &answerConn{}
		d := ws.Dialer{
			Protocols:  ps,
			Extensions: exts,
			Header:     ws.HandshakeHeaderHTTP(header),
			NetDial:    func(context.Context, string, string) (net.Conn, error) { return c, nil },
		}
		d.Dial(context.Background(), target.String())
		want := c.req.Bytes()
		if len(want) == 0 {
			t.Skip("the Dialer refuses the URL")
		}
		if got := appendUpgradeRequest(nil, target, requestKey(want), ps, exts, appendHeader(nil, header)); !bytes.Equal(got, want) {
			t.Errorf("appendUpgradeRequest(%q, %q, %q, %q): got %q; want %q", target, ps, extensions, header, got, want)
		}
	})
}

// TestDialFailure names the step of a failed dial as both paths refuse
// it: a timeout of any kind is RefusedTimeout, the rest RefusedUnreachable.
func TestDialFailure(t *testing.T) {
	op := func(op string, err error) error {
		return fmt.Errorf("dial ws://127.0.0.1:1/: %w", &net.OpError{Op: op, Net: "tcp", Err: err})
	}
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"context deadline", fmt.Errorf("dial: %w", context.DeadlineExceeded), RefusedTimeout},
		{"read deadline", op("read", os.ErrDeadlineExceeded), RefusedTimeout},
		{"connect timed out", op("dial", os.NewSyscallError("connect", syscall.ETIMEDOUT)), RefusedTimeout},
		{"read timed out", op("read", os.NewSyscallError("read", syscall.ETIMEDOUT)), RefusedTimeout},
		{"connect refused", op("dial", os.NewSyscallError("connect", syscall.ECONNREFUSED)), RefusedUnreachable},
		{"reset", op("read", os.NewSyscallError("read", syscall.ECONNRESET)), RefusedUnreachable},
		{"answer cut short", fmt.Errorf("dial ws://127.0.0.1:1/: %w", io.EOF), RefusedUnreachable},
		{"bad answer", fmt.Errorf("dial ws://127.0.0.1:1/: %w", errors.New("handshake error: bad \"Sec-WebSocket-Accept\" header")), RefusedUnreachable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := dialFailure(tc.err); got != tc.want {
				t.Errorf("dialFailure(%v): got %q; want %q", tc.err, got, tc.want)
			}
		})
	}
}
