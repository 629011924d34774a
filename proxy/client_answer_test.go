package proxy

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// recordConn is a client connection in memory that records what is
// written to it.
type recordConn struct {
	net.Conn
	b []byte
}

func (c *recordConn) Write(b []byte) (int, error)      { c.b = append(c.b, b...); return len(b), nil }
func (c *recordConn) SetDeadline(time.Time) error      { return nil }
func (c *recordConn) SetReadDeadline(time.Time) error  { return nil }
func (c *recordConn) SetWriteDeadline(time.Time) error { return nil }

// emptyReader is the hijacker's reader: the upgrader reads nothing.
var emptyReader = bufio.NewReaderSize(bytes.NewReader(nil), 16)

// upgraderAnswer is what ws.HTTPUpgrader{Header: answer}.Upgrade writes
// to the client for req, and its error.
func upgraderAnswer(req *http.Request, answer http.Header) ([]byte, error) {
	c := &recordConn{}
	hj := &hijacker{conn: c, br: emptyReader, bw: bufio.NewWriterSize(c, 256)}
	_, _, _, err := ws.HTTPUpgrader{Header: answer}.Upgrade(req, hj)
	return c.b, err
}

// readUpgrade parses head as the loop does: http.ReadRequest, then
// checkUpgrade, which joins the Connection lines. It reports whether
// checkUpgrade accepted the request.
func readUpgrade(head string) (*http.Request, bool, error) {
	req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(head)))
	if err != nil {
		return nil, false, err
	}
	return req, checkUpgrade(req) == nil, nil
}

// upgradeHead is a client's upgrade request with key, the Connection
// value connection and the extra header lines extra.
func upgradeHead(key, connection, extra string) string {
	return "GET /chat?room=1 HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\nConnection: " + connection +
		"\r\nSec-WebSocket-Key: " + key + "\r\nSec-WebSocket-Version: 13\r\n" + extra + "\r\n"
}

// answerRequests are clients' upgrade requests: accepted by checkUpgrade
// unless refused says so, answered 101 by gobwas/ws unless refusal does.
var answerRequests = []struct {
	name    string
	head    string
	refused bool  // by checkUpgrade
	refusal error // by ws.HTTPUpgrader, of one checkUpgrade accepted
}{
	{name: "RFC 6455's key", head: upgradeHead("dGhlIHNhbXBsZSBub25jZQ==", "Upgrade", "")},
	{name: "key with + and /", head: upgradeHead("+/+/+/+/+/+/+/+/+/+/+w==", "Upgrade", "")},
	{name: "key of zeros", head: upgradeHead(base64.StdEncoding.EncodeToString(make([]byte, 16)), "Upgrade", "")},
	{name: "key of ones", head: upgradeHead(base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0xff}, 16)), "Upgrade", "")},
	{name: "Firefox's Connection", head: upgradeHead("x3JJHMbDL1EzLkh9GBhXDw==", "keep-alive, Upgrade", "")},
	{name: "lower case Connection", head: upgradeHead("x3JJHMbDL1EzLkh9GBhXDw==", "upgrade", "")},
	{name: "upper case Connection", head: upgradeHead("x3JJHMbDL1EzLkh9GBhXDw==", "UPGRADE", "")},
	{name: "Connection list with spaces", head: upgradeHead("x3JJHMbDL1EzLkh9GBhXDw==", "keep-alive ,  upgrade , close", "")},
	{name: "tab before upgrade", head: upgradeHead("x3JJHMbDL1EzLkh9GBhXDw==", "keep-alive,\tupgrade", ""), refusal: ws.ErrHandshakeBadConnection},
	{name: "tab after upgrade", head: upgradeHead("x3JJHMbDL1EzLkh9GBhXDw==", "upgrade\t, close", "")},
	{name: "Connection over two lines", head: upgradeHead("x3JJHMbDL1EzLkh9GBhXDw==", "keep-alive", "Connection: Upgrade\r\n")},
	{name: "Connection with empty elements", head: upgradeHead("x3JJHMbDL1EzLkh9GBhXDw==", ", ,Upgrade,", "")},
	{name: "Connection with HTTP2-Settings", head: upgradeHead("x3JJHMbDL1EzLkh9GBhXDw==", "Upgrade, HTTP2-Settings", "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n")},
	{name: "quoted string before upgrade", head: upgradeHead("x3JJHMbDL1EzLkh9GBhXDw==", `"x", upgrade`, ""), refusal: ws.ErrHandshakeBadConnection},
	{name: "separator before upgrade", head: upgradeHead("x3JJHMbDL1EzLkh9GBhXDw==", "a/b, upgrade", ""), refusal: ws.ErrHandshakeBadConnection},
	{name: "non-ASCII before upgrade", head: upgradeHead("x3JJHMbDL1EzLkh9GBhXDw==", "\u00a0upgrade", ""), refusal: ws.ErrHandshakeBadConnection},
	{name: "separator after upgrade", head: upgradeHead("x3JJHMbDL1EzLkh9GBhXDw==", "upgrade, a/b", "")},
	{name: "lower case field names", head: "GET / HTTP/1.1\r\nhost: example.com\r\nupgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-key: x3JJHMbDL1EzLkh9GBhXDw==\r\nsec-websocket-version: 13\r\nsec-websocket-protocol: chat\r\n\r\n"},
	{name: "upper case field names", head: "GET / HTTP/1.1\r\nHOST: example.com\r\nUPGRADE: WebSocket\r\nCONNECTION: Upgrade\r\nSEC-WEBSOCKET-KEY: x3JJHMbDL1EzLkh9GBhXDw==\r\nSEC-WEBSOCKET-VERSION: 13\r\n\r\n"},
	{name: "protocols offered", head: upgradeHead("x3JJHMbDL1EzLkh9GBhXDw==", "Upgrade", "Sec-WebSocket-Protocol: chat, superchat\r\n")},
	{name: "protocols over two lines", head: upgradeHead("x3JJHMbDL1EzLkh9GBhXDw==", "Upgrade", "Sec-WebSocket-Protocol: chat\r\nsec-websocket-protocol: superchat\r\n")},
	{name: "extensions offered", head: upgradeHead("x3JJHMbDL1EzLkh9GBhXDw==", "Upgrade", "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits, x-foo; a=\"b, c\"\r\n")},
	{name: "both offered", head: upgradeHead("dGhlIHNhbXBsZSBub25jZQ==", "keep-alive, Upgrade", "Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Extensions: permessage-deflate\r\nOrigin: http://example.com\r\nCookie: a=1; b=2\r\n")},
	{name: "second key", head: upgradeHead("dGhlIHNhbXBsZSBub25jZQ==", "Upgrade", "Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\n")},
	{name: "HTTP/1.2", head: strings.Replace(upgradeHead("dGhlIHNhbXBsZSBub25jZQ==", "Upgrade", ""), "HTTP/1.1", "HTTP/1.2", 1)},
	{name: "POST", head: strings.Replace(upgradeHead("dGhlIHNhbXBsZSBub25jZQ==", "Upgrade", ""), "GET", "POST", 1), refused: true},
	{name: "HTTP/1.0", head: strings.Replace(upgradeHead("dGhlIHNhbXBsZSBub25jZQ==", "Upgrade", ""), "HTTP/1.1", "HTTP/1.0", 1), refused: true},
	{name: "no upgrade token", head: upgradeHead("dGhlIHNhbXBsZSBub25jZQ==", "keep-alive", ""), refused: true},
	{name: "short key", head: upgradeHead("dGhlIHNhbXBsZQ==", "Upgrade", ""), refused: true},
	{name: "key of 24 bytes, not base64", head: upgradeHead("dGhlIHNhbXBsZSBub25jZQ!!", "Upgrade", ""), refused: true},
	{name: "version 8", head: strings.Replace(upgradeHead("dGhlIHNhbXBsZSBub25jZQ==", "Upgrade", ""), "Version: 13", "Version: 8", 1), refused: true},
	{name: "no version", head: strings.Replace(upgradeHead("dGhlIHNhbXBsZSBub25jZQ==", "Upgrade", ""), "Sec-WebSocket-Version: 13\r\n", "", 1), refused: true},
	{name: "Upgrade: h2c", head: strings.Replace(upgradeHead("dGhlIHNhbXBsZSBub25jZQ==", "Upgrade", ""), "Upgrade: websocket", "Upgrade: h2c", 1), refused: true},
}

// answerHeaders are client-bound answer headers as the upstream side
// makes them, and some it never makes.
func answerHeaders(t testing.TB) []http.Header {
	_, exts := offers(t, "", deflate)
	_, upstream, err := checkUpgradeAnswer([]byte(benchAnswer), []byte("dGhlIHNhbXBsZSBub25jZQ=="), []string{"chat"}, exts)
	if err != nil {
		t.Fatalf("checkUpgradeAnswer(%q): got %v; want nil", benchAnswer, err)
	}
	hs := []http.Header{
		upstream,
		{"Sec-WebSocket-Protocol": {"chat"}},
		{"Sec-WebSocket-Extensions": {"permessage-deflate; server_no_context_takeover; client_max_window_bits=10"}},
		{"Sec-WebSocket-Extensions": {`x-foo; a="b, c", permessage-deflate`}, "Sec-WebSocket-Protocol": {"superchat"}},
		{
			"Set-Cookie":             {"a=1; Path=/; HttpOnly", "b=2; Expires=Mon, 02 Jan 2006 15:04:05 GMT", "c=3"},
			"X-Things":               {"one, two,three", "  four  "},
			"x-lower":                {"v"},
			"X-MiXeD-CaSe":           {"v"},
			"Server":                 {"up/1.0 (linux)"},
			"Date":                   {"Mon, 02 Jan 2006 15:04:05 GMT"},
			"Sec-WebSocket-Protocol": {"chat"},
			"Sec-Websocket-Accept":   {"from the upstream"},
			"A":                      {"sorts before Sec-WebSocket-Accept, written after it"},
			"~":                      {"sorts last"},
		},
		{"X-Empty": {}, "X-Blank": {""}},
	}
	return append(hs, headerOffers()...)
}

// TestAppendUpgradeAnswer holds upgradeRefusal and appendUpgradeAnswer to
// ws.HTTPUpgrader{Header: answer}.Upgrade over every request and answer.
func TestAppendUpgradeAnswer(t *testing.T) {
	answers := answerHeaders(t)
	for _, tc := range answerRequests {
		t.Run(tc.name, func(t *testing.T) {
			req, accepted, err := readUpgrade(tc.head)
			if err != nil {
				t.Fatalf("ReadRequest(%q): got %v; want nil", tc.head, err)
			}
			if accepted == tc.refused {
				t.Fatalf("checkUpgrade(%q) accepted: got %v; want %v", tc.head, accepted, !tc.refused)
			}
			refusal := upgradeRefusal(req)
			if accepted && refusal != tc.refusal {
				t.Errorf("upgradeRefusal(%q): got %v; want %v", tc.head, refusal, tc.refusal)
			}
			for _, answer := range answers {
				want, err := upgraderAnswer(req, answer)
				if refusal != err {
					t.Fatalf("upgradeRefusal(%q): got %v; want %v, the upgrader's", tc.head, refusal, err)
				}
				if err != nil {
					continue
				}
				if got := appendUpgradeAnswer(nil, req, answer); !bytes.Equal(got, want) {
					t.Errorf("appendUpgradeAnswer(%q, %q): got %q; want %q", tc.head, answer, got, want)
				}
				prefix := []byte("pending:")
				if got := appendUpgradeAnswer(prefix, req, answer); !bytes.Equal(got, append(prefix, want...)) {
					t.Errorf("appendUpgradeAnswer(%q, %q, %q): got %q; want %q", prefix, tc.head, answer, got, append(prefix, want...))
				}
			}
		})
	}
}

func TestAppendUpgradeAnswerAllocs(t *testing.T) {
	req, _, err := readUpgrade(upgradeHead("dGhlIHNhbXBsZSBub25jZQ==", "keep-alive, Upgrade", "Sec-WebSocket-Protocol: chat\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	answer := answerHeaders(t)[0]
	dst := make([]byte, 0, 1024)
	if n := testing.AllocsPerRun(100, func() {
		if upgradeRefusal(req) != nil {
			t.Fatal("refused")
		}
		dst = appendUpgradeAnswer(dst[:0], req, answer)
	}); n != 0 {
		t.Errorf("upgradeRefusal and appendUpgradeAnswer: got %v allocations; want 0", n)
	}
}

// FuzzAppendUpgradeAnswer holds upgradeRefusal and appendUpgradeAnswer to
// ws.HTTPUpgrader{Header: answer}.Upgrade for any request http.ReadRequest
// reads, as the loop reads it, and any answer header.
func FuzzAppendUpgradeAnswer(f *testing.F) {
	f.Add("dGhlIHNhbXBsZSBub25jZQ==", "Upgrade", "Sec-WebSocket-Protocol: chat\r\n", "Set-Cookie", "a=1", "X-Things", " b, c \r\n")
	f.Add("x3JJHMbDL1EzLkh9GBhXDw==", "keep-alive, Upgrade", "Sec-WebSocket-Extensions: permessage-deflate\r\n", "sec-websocket-protocol", "chat", "Bad Name", "v")
	f.Add("+/+/+/+/+/+/+/+/+/+/+w==", `"x", upgrade`, "", "", "", "~", "\r\n")
	f.Fuzz(func(t *testing.T, key, connection, extra, name1, value1, name2, value2 string) {
		head := upgradeHead(key, connection, extra)
		req, accepted, err := readUpgrade(head)
		if err != nil {
			t.Skip()
		}
		answer := http.Header{name1: {value1}, name2: {value1, value2}, "Sec-WebSocket-Protocol": {value2}}
		refusal := upgradeRefusal(req)
		want, err := upgraderAnswer(req, answer)
		if refusal != err {
			t.Fatalf("upgradeRefusal(%q): got %v; want %v, the upgrader's", head, refusal, err)
		}
		// A request checkUpgrade refuses is answered on goroutines; one
		// the upgrader refuses the loop refuses too, without a 101: the
		// loop answers neither, and appendUpgradeAnswer is not for them.
		if !accepted || err != nil {
			t.Skip()
		}
		if got := appendUpgradeAnswer(nil, req, answer); !bytes.Equal(got, want) {
			t.Errorf("appendUpgradeAnswer(%q, %q): got %q; want %q", head, answer, got, want)
		}
	})
}

// BenchmarkAppendUpgradeAnswer and BenchmarkUpgraderAnswer compare the
// 101 a loop writes, made by appendUpgradeAnswer, with the same made by
// ws.HTTPUpgrader over an in-memory connection, as it was before.
func BenchmarkAppendUpgradeAnswer(b *testing.B) {
	req, answer := benchUpgrade(b)
	dst := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		if err := upgradeRefusal(req); err != nil {
			b.Fatal(err)
		}
		dst = appendUpgradeAnswer(dst[:0], req, answer)
	}
	b.SetBytes(int64(len(dst)))
}

func BenchmarkUpgraderAnswer(b *testing.B) {
	req, answer := benchUpgrade(b)
	var n int
	b.ReportAllocs()
	for b.Loop() {
		out, err := upgraderAnswer(req, answer)
		if err != nil {
			b.Fatal(err)
		}
		n = len(out)
	}
	b.SetBytes(int64(n))
}

// benchUpgrade is a Firefox-like request that offers a subprotocol and
// permessage-deflate, and the answer header the upstream's 101 makes.
func benchUpgrade(b *testing.B) (*http.Request, http.Header) {
	head := upgradeHead("dGhlIHNhbXBsZSBub25jZQ==", "keep-alive, Upgrade",
		"Origin: http://example.com\r\nSec-WebSocket-Protocol: chat\r\nSec-WebSocket-Extensions: "+deflate+"\r\n")
	req, accepted, err := readUpgrade(head)
	if err != nil || !accepted {
		b.Fatalf("readUpgrade(%q): got %v, %v; want accepted", head, accepted, err)
	}
	return req, answerHeaders(b)[0]
}
