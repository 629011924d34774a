package proxy

import (
	"bytes"
	"net"
	"net/http"
	"strings"
	"testing"
)

// forwardedMap is what appendForwardHeader writes, as a map that
// http.Header.Write writes: the standard library's writing is the oracle.
func forwardedMap(req *http.Request, client string, overTLS bool) http.Header {
	h := http.Header{}
	for k, vs := range req.Header {
		if !isHopByHop(k) && !handshakeHeaderKey(http.CanonicalHeaderKey(k)) && !connectionListed(req.Header, k) {
			h[k] = vs
		}
	}
	if host, _, err := net.SplitHostPort(client); err == nil {
		if prior := req.Header.Values("X-Forwarded-For"); len(prior) > 0 {
			host = strings.Join(prior, ", ") + ", " + host
		}
		h["X-Forwarded-For"] = []string{host}
	}
	h["X-Forwarded-Proto"] = []string{"http"}
	if overTLS {
		h["X-Forwarded-Proto"] = []string{"https"}
	}
	h["X-Forwarded-Host"] = []string{req.Host}
	return h
}

func TestAppendForwardHeader(t *testing.T) {
	tests := []struct {
		name    string
		head    string
		client  string
		overTLS bool
		want    string
	}{
		{
			name:   "end-to-end headers",
			head:   crlf("GET / HTTP/1.1", "Host: proxy:8080", "Origin: http://app", "User-Agent: ua/1"),
			client: "127.0.0.1:5000",
			want: "Origin: http://app\r\nUser-Agent: ua/1\r\nX-Forwarded-For: 127.0.0.1\r\n" +
				"X-Forwarded-Host: proxy:8080\r\nX-Forwarded-Proto: http\r\n",
		},
		{
			name: "hop-by-hop, named by Connection and the handshake's own dropped",
			head: crlf("GET / HTTP/1.1", "Host: h", "Connection: Upgrade, X-Hop", "X-Hop: a", "Keep-Alive: 5",
				"Upgrade: websocket", "Sec-WebSocket-Key: k", "Sec-WebSocket-Version: 13", "Sec-WebSocket-Protocol: chat",
				"Te: trailers", "Proxy-Authorization: Basic x", "Cookie: c=1"),
			client: "[::1]:5000",
			want:   "Cookie: c=1\r\nX-Forwarded-For: ::1\r\nX-Forwarded-Host: h\r\nX-Forwarded-Proto: http\r\n",
		},
		{
			name: "the request's X-Forwarded- replaced, its For added to",
			head: crlf("GET / HTTP/1.1", "Host: h", "X-Forwarded-For: 10.0.0.1", "X-Forwarded-For: 10.0.0.2",
				"X-Forwarded-Proto: https", "X-Forwarded-Host: elsewhere"),
			client:  "127.0.0.1:5000",
			overTLS: true,
			want:    "X-Forwarded-For: 10.0.0.1, 10.0.0.2, 127.0.0.1\r\nX-Forwarded-Host: h\r\nX-Forwarded-Proto: https\r\n",
		},
		{
			name:   "a client address without a port keeps the request's For",
			head:   crlf("GET / HTTP/1.1", "Host: h", "X-Forwarded-For: 10.0.0.1"),
			client: "@",
			want:   "X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Host: h\r\nX-Forwarded-Proto: http\r\n",
		},
		{
			name:   "values in order, trimmed",
			head:   crlf("GET / HTTP/1.1", "Host: h", "B: 2", "A:  1 ", "B: 3\t", "Zz: last"),
			client: "127.0.0.1:1",
			want:   "A: 1\r\nB: 2\r\nB: 3\r\nX-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Host: h\r\nX-Forwarded-Proto: http\r\nZz: last\r\n",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, ok := parseHead([]byte(tc.head))
			if !ok {
				t.Fatalf("parseHead(%q): got false; want a request", tc.head)
			}
			if got := string(appendForwardHeader(nil, req, tc.client, tc.overTLS)); got != tc.want {
				t.Errorf("appendForwardHeader:\ngot  %q;\nwant %q", got, tc.want)
			}
			// Appended, not overwritten; and what http.Header.Write writes.
			var want bytes.Buffer
			want.WriteString("prefix")
			forwardedMap(req, tc.client, tc.overTLS).Write(&want)
			if got := appendForwardHeader([]byte("prefix"), req, tc.client, tc.overTLS); !bytes.Equal(got, want.Bytes()) {
				t.Errorf("appendForwardHeader after a prefix:\ngot  %q;\nwant %q", got, want.Bytes())
			}
		})
	}
}

// FuzzAppendForwardHeader holds appendForwardHeader to http.Header.Write
// of the same headers, for any request parseHead reads.
func FuzzAppendForwardHeader(f *testing.F) {
	for _, tc := range plainHeads {
		f.Add(tc.head, "127.0.0.1:4000", false)
	}
	f.Add(crlf("GET / HTTP/1.1", "Host: h", "Connection: x-a, Keep-Alive", "X-A: 1", "X-Forwarded-For: 1.2.3.4"), "[::1]:1", true)
	f.Fuzz(func(t *testing.T, head, client string, overTLS bool) {
		req, ok := parseHead([]byte(head))
		if !ok {
			return
		}
		var want bytes.Buffer
		forwardedMap(req, client, overTLS).Write(&want)
		if got := appendForwardHeader(nil, req, client, overTLS); !bytes.Equal(got, want.Bytes()) {
			t.Fatalf("appendForwardHeader(%q, %q, %v):\ngot  %q;\nwant %q", head, client, overTLS, got, want.Bytes())
		}
	})
}

func TestAppendForwardHeaderAllocs(t *testing.T) {
	req, ok := parseHead([]byte(plainHeads[0].head))
	if !ok {
		t.Fatal("parseHead: got false; want a request")
	}
	dst := make([]byte, 0, 1024)
	if n := testing.AllocsPerRun(100, func() {
		dst = appendForwardHeader(dst[:0], req, "127.0.0.1:4000", false)
	}); n != 0 {
		t.Errorf("appendForwardHeader: got %v allocations; want 0", n)
	}
}
