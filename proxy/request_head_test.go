package proxy

import (
	"bufio"
	"encoding/base64"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

// crlf turns a head written with \n line ends, one per line, into one
// with CRLF line ends, ended by an empty line.
func crlf(lines ...string) string {
	return strings.Join(lines, "\r\n") + "\r\n\r\n"
}

// readHead is the request http.ReadRequest reads from head.
func readHead(t testing.TB, head string) (*http.Request, error) {
	t.Helper()
	return http.ReadRequest(bufio.NewReader(strings.NewReader(head)))
}

// plainHeads are upgrade requests as clients send them; parseHead reads
// every one of them.
var plainHeads = []struct{ name, head string }{
	{"Chromium", crlf(
		"GET /chat?room=1 HTTP/1.1",
		"Host: 127.0.0.1:8080",
		"Connection: Upgrade",
		"Pragma: no-cache",
		"Cache-Control: no-cache",
		"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36",
		"Upgrade: websocket",
		"Origin: http://127.0.0.1:8080",
		"Sec-WebSocket-Version: 13",
		"Accept-Encoding: gzip, deflate, br, zstd",
		"Accept-Language: en-US,en;q=0.9",
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
		"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits")},
	{"Firefox", crlf(
		"GET /chat HTTP/1.1",
		"Host: localhost:8080",
		"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0",
		"Accept: */*",
		"Accept-Language: en-US,en;q=0.5",
		"Accept-Encoding: gzip, deflate, br, zstd",
		"Sec-WebSocket-Version: 13",
		"Origin: http://localhost:8080",
		"Sec-WebSocket-Extensions: permessage-deflate",
		"Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==",
		"Connection: keep-alive, Upgrade",
		"Sec-Fetch-Dest: empty",
		"Sec-Fetch-Mode: websocket",
		"Sec-Fetch-Site: same-origin",
		"Pragma: no-cache",
		"Cache-Control: no-cache",
		"Upgrade: websocket")},
	{"Pragma without Cache-Control", crlf(
		"GET / HTTP/1.1",
		"Host: h",
		"Pragma: no-cache",
		"Upgrade: websocket",
		"Connection: Upgrade",
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
		"Sec-WebSocket-Version: 13")},
	{"gorilla/websocket", crlf(
		"GET /ws HTTP/1.1",
		"Host: 127.0.0.1:9000",
		"User-Agent: Go-http-client/1.1",
		"Connection: Upgrade",
		"Sec-WebSocket-Key: +/+/+/+/+/+/+/+/+/+/+w==",
		"Sec-WebSocket-Protocol: chat, superchat",
		"Sec-WebSocket-Version: 13",
		"Upgrade: websocket")},
	{"node ws", crlf(
		"GET /path/%7Euser?x=1&y=%20 HTTP/1.1",
		"Sec-WebSocket-Version: 13",
		"Sec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA==",
		"Connection: Upgrade",
		"Upgrade: websocket",
		"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
		"Host: [::1]:8080")},
	{"Python websockets", crlf(
		"GET / HTTP/1.1",
		"Host: localhost:8765",
		"Upgrade: websocket",
		"Connection: Upgrade",
		"Sec-WebSocket-Key: 3o1Rr2m4sYQ0nQAvPVU8xQ==",
		"Sec-WebSocket-Version: 13",
		"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
		"User-Agent: Python/3.11 websockets/10.4")},
	{"repeated fields, odd spacing and case", crlf(
		"GET /a/b/../c HTTP/1.1",
		"host:   h:1  ",
		"upgrade:websocket",
		"CONNECTION: keep-alive",
		"connection: \tUpgrade\t",
		"Sec-WebSocket-Protocol: a",
		"sec-websocket-protocol: b",
		"X-Empty:",
		"X-Odd~Name_1!: v\"q\" (c) <>",
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
		"Sec-WebSocket-Version: 13")},
	{"fragment and odd target", crlf(
		"GET //double/slash?q=a%2Fb#frag HTTP/1.1",
		"Host: h",
		"Upgrade: websocket")},
	{"no header but Host", crlf("GET / HTTP/1.1", "Host: h")},
}

func TestParseHeadAsReadRequest(t *testing.T) {
	for _, tc := range plainHeads {
		t.Run(tc.name, func(t *testing.T) {
			want, err := readHead(t, tc.head)
			if err != nil {
				t.Fatalf("ReadRequest: got %v; want a request", err)
			}
			got, ok := parseHead([]byte(tc.head))
			if !ok {
				t.Fatalf("parseHead: got false; want the request ReadRequest reads")
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("parseHead: got %+v; want %+v", got, want)
			}
		})
	}
}

// TestParseHeadDeclines lists heads parseHead leaves to http.ReadRequest:
// some it reads differently, some it refuses, the rest are rare.
func TestParseHeadDeclines(t *testing.T) {
	const rest = "Host: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
	for _, tc := range []struct{ name, head string }{
		{"HTTP/1.0", "GET / HTTP/1.0\r\n" + rest},
		{"HTTP/2", "GET / HTTP/2.0\r\n" + rest},
		{"POST", "POST / HTTP/1.1\r\n" + rest},
		{"lower case method", "get / HTTP/1.1\r\n" + rest},
		{"absolute-form target", "GET http://h/ HTTP/1.1\r\n" + rest},
		{"asterisk target", "GET * HTTP/1.1\r\n" + rest},
		{"empty target", "GET  HTTP/1.1\r\n" + rest},
		{"two spaces", "GET  / HTTP/1.1\r\n" + rest},
		{"space in target", "GET /a b HTTP/1.1\r\n" + rest},
		{"non-ASCII target", "GET /\xc3\xa9 HTTP/1.1\r\n" + rest},
		{"bad escape in target", "GET /%zz HTTP/1.1\r\n" + rest},
		{"leading empty line", "\r\nGET / HTTP/1.1\r\n" + rest},
		{"bare LF ends", "GET / HTTP/1.1\nHost: h\nUpgrade: websocket\n\n"},
		{"bare LF inside", "GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n"},
		{"bare CR inside", "GET / HTTP/1.1\r\nHost: h\rX: y\r\n\r\n"},
		{"no empty line", "GET / HTTP/1.1\r\nHost: h\r\n"},
		{"folded line", "GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n"},
		{"first line folded", "GET / HTTP/1.1\r\n X: a\r\nHost: h\r\n\r\n"},
		{"no Host", "GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"},
		{"two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"},
		{"Content-Length", "GET / HTTP/1.1\r\nContent-Length: 0\r\n" + rest},
		{"Transfer-Encoding", "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n" + rest},
		{"Trailer", "GET / HTTP/1.1\r\nTrailer: X\r\n" + rest},
		{"Connection close", "GET / HTTP/1.1\r\nConnection: Upgrade, Close\r\nHost: h\r\n\r\n"},
		{"space before colon", "GET / HTTP/1.1\r\nX : y\r\n" + rest},
		{"no colon", "GET / HTTP/1.1\r\nX y\r\n" + rest},
		{"empty name", "GET / HTTP/1.1\r\n: y\r\n" + rest},
		{"name with a slash", "GET / HTTP/1.1\r\nX/Y: z\r\n" + rest},
		{"non-ASCII value", "GET / HTTP/1.1\r\nX: caf\xc3\xa9\r\n" + rest},
		{"control byte in value", "GET / HTTP/1.1\r\nX: a\x01b\r\n" + rest},
		{"DEL in value", "GET / HTTP/1.1\r\nX: a\x7fb\r\n" + rest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if req, ok := parseHead([]byte(tc.head)); ok {
				t.Errorf("parseHead(%q): got %+v, true; want false", tc.head, req)
			}
		})
	}
}

// FuzzParseHead holds parseHead to http.ReadRequest: whatever it reads,
// ReadRequest reads the same.
func FuzzParseHead(f *testing.F) {
	for _, tc := range plainHeads {
		f.Add(tc.head)
	}
	f.Add("GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n")
	f.Add("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\nPragma: no-cache\r\nCache-Control: max-age=0\r\n\r\n")
	f.Fuzz(func(t *testing.T, head string) {
		got, ok := parseHead([]byte(head))
		if !ok {
			return
		}
		want, err := readHead(t, head)
		if err != nil {
			t.Fatalf("parseHead(%q) read a request; ReadRequest: %v", head, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("parseHead(%q): got %+v; want %+v", head, got, want)
		}
	})
}

// BenchmarkParseHead and BenchmarkReadRequest read Chromium's upgrade
// request.
func BenchmarkParseHead(b *testing.B) {
	head := []byte(plainHeads[0].head)
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := parseHead(head); !ok {
			b.Fatal("parseHead: got false; want a request")
		}
	}
}

func BenchmarkReadRequest(b *testing.B) {
	head := plainHeads[0].head
	br := bufio.NewReaderSize(nil, maxHeadSize)
	r := strings.NewReader(head)
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(head)
		br.Reset(r)
		if _, err := http.ReadRequest(br); err != nil {
			b.Fatal(err)
		}
	}
}

func TestValidKey(t *testing.T) {
	for _, k := range []string{
		"dGhlIHNhbXBsZSBub25jZQ==", "+/+/+/+/+/+/+/+/+/+/+w==", "AAAAAAAAAAAAAAAAAAAAAA==",
		"", "dGhlIHNhbXBsZSBub25jZQ", "dGhlIHNhbXBsZSBub25jZQ=", "dGhlIHNhbXBsZSBub25jZQ===",
		"dGhlIHNhbXBsZSBub25jZQ=A", "dGhlIHNhbXBsZSBub25jZ===", "dGhlIHNhbXBsZSBub25jZXM=",
		"dGhlIHNhbXBsZSBub25jZQ-=", "dGhlIHNhbXBsZSBub25jZQ_=", "dGhlIHNhbXBsZSBub25jZXMh",
		"dGhlIHNhbXBsZSBub25jZQ==dGhl", "dGhlIHNhbXBsZSBub25jZR==", " GhlIHNhbXBsZSBub25jZQ==",
	} {
		b, err := base64.StdEncoding.DecodeString(k)
		want := err == nil && len(b) == 16
		if got := validKey(k); got != want {
			t.Errorf("validKey(%q): got %v; want %v", k, got, want)
		}
	}
}
