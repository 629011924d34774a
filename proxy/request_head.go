package proxy

import (
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
)

// parseHead reads a request head (request line, header lines and the
// empty line that ends them) as net/http's ReadRequest does, without its
// line reader: the head's bytes become one string, of which the method,
// the target and every header name and value are parts. It reads only
// the plain form an upgrade request takes (RFC 9112 sections 3 and 5):
//
//	GET <origin-form target> HTTP/1.1 CRLF
//	<token>:<value> CRLF  (printable ASCII, spaces and tabs; no folding)
//	...
//	CRLF
//
// with one Host, and no Content-Length, Transfer-Encoding, Trailer or
// Connection close. Of anything else it reports false, and the
// caller reads the head with http.ReadRequest, which decides; when it
// reports true, ReadRequest would have read the same request
// (FuzzParseHead).
func parseHead(head []byte) (*http.Request, bool) {
	s := string(head)
	line, rest, ok := strings.Cut(s, "\r\n")
	if !ok || (rest != "\r\n" && !strings.HasSuffix(rest, "\r\n\r\n")) {
		return nil, false
	}
	target, ok := strings.CutPrefix(line, "GET ")
	if !ok {
		return nil, false
	}
	target, ok = strings.CutSuffix(target, " HTTP/1.1")
	if !ok || len(target) == 0 || target[0] != '/' || !printable(target) {
		return nil, false
	}
	u, err := url.ParseRequestURI(target)
	if err != nil {
		return nil, false
	}

	// The header lines, each ended by CRLF, counted first: their values
	// share one slice.
	lines := rest[:len(rest)-2]
	n := strings.Count(lines, "\r\n")
	h := make(http.Header, n)
	values := make([]string, n)
	var host string
	hosts := 0
	for i := 0; i < n; i++ {
		line, lines, _ = strings.Cut(lines, "\r\n")
		colon := strings.IndexByte(line, ':')
		if colon <= 0 || !isToken(line[:colon]) {
			return nil, false
		}
		v := line[colon+1:]
		vi, vj := trimSpaceTab(v)
		v = v[vi:vj]
		if !headerValue(v) {
			return nil, false
		}
		k := headerKey(line[:colon])
		switch k {
		case "Content-Length", "Transfer-Encoding", "Trailer":
			return nil, false
		case "Connection":
			if hasToken(v, "close") {
				return nil, false
			}
		case "Host":
			host = v
			hosts++
			continue
		}
		values[i] = v
		if vs := h[k]; vs != nil {
			h[k] = append(vs, v)
		} else {
			h[k] = values[i : i+1 : i+1]
		}
	}
	if hosts != 1 {
		return nil, false
	}
	// As ReadRequest does (browsers send Pragma: no-cache).
	if p := h["Pragma"]; len(p) > 0 && p[0] == "no-cache" && h["Cache-Control"] == nil {
		h["Cache-Control"] = []string{"no-cache"}
	}
	return &http.Request{
		Method:     http.MethodGet,
		URL:        u,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     h,
		Body:       http.NoBody,
		Host:       host,
		RequestURI: target,
	}, true
}

// wsHeaders are the canonical names (textproto's) of the fields an upgrade
// carries that textproto does not keep a copy of: it makes a new string of
// each, for every request that spells it Sec-WebSocket-*, as clients do.
// The proxy writes these names in this form wherever it looks them up, so
// that Header.Get and Header.Values find them without a copy either.
var wsHeaders = [...]string{"Sec-Websocket-Key", "Sec-Websocket-Version", "Sec-Websocket-Extensions", "Sec-Websocket-Protocol"}

// headerKey is the token k in its canonical form, as
// textproto.CanonicalMIMEHeaderKey gives it.
func headerKey(k string) string {
	if len(k) > len("Sec-Websocket-") && strings.EqualFold(k[:len("Sec-Websocket-")], "Sec-Websocket-") {
		for _, h := range wsHeaders {
			if strings.EqualFold(k, h) {
				return h
			}
		}
	}
	return textproto.CanonicalMIMEHeaderKey(k)
}

// printable reports whether s is visible ASCII only, as a request target
// is (RFC 9112 section 3.2).
func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// isToken reports whether s is a token (RFC 9110 section 5.6.2), as a
// header field name is.
func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// headerValue reports whether s is visible ASCII, spaces and tabs only:
// a field value without obsolete text (RFC 9110 section 5.5).
func headerValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < ' ' && c != '\t') || c >= 0x7f {
			return false
		}
	}
	return true
}

// hasToken reports whether the comma-separated list v has token t, in any
// case.
func hasToken(v, t string) bool {
	for e := range strings.SplitSeq(v, ",") {
		if strings.EqualFold(strings.TrimSpace(e), t) {
			return true
		}
	}
	return false
}
