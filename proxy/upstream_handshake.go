package proxy

import (
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"slices"

	"github.com/gobwas/httphead"
	"github.com/gobwas/ws"
)

// The upstream's opening handshake as bytes, for a caller that writes the
// request and gathers the answer itself instead of calling ws.Dialer.Dial.
// appendUpgradeRequestHead, followed by appendForwardHeader's lines and
// the empty line, writes what the Dialer dialUpstream configures writes,
// and checkUpgradeAnswer accepts and refuses what it does, with
// the same errors, Handshake and client-bound answer headers.

// nonceLen is the length of a Sec-WebSocket-Key: the base64 of 16 bytes.
const nonceLen = 24

// acceptLen is the length of a Sec-WebSocket-Accept: the base64 of a SHA-1.
const acceptLen = 28

// makeNonce writes to dst[:nonceLen] the Sec-WebSocket-Key made of the 16
// random bytes src (RFC 6455 section 4.1), as gobwas/ws's Dialer makes its
// own, which it does not export.
func makeNonce(dst []byte, src [16]byte) {
	base64.StdEncoding.Encode(dst[:nonceLen], src[:])
}

// appendUpgradeRequestHead appends to dst the request head gobwas/ws's
// Dialer, with Protocols protocols and Extensions exts, writes for
// Dial(ctx, target.String()), nonce being its Sec-WebSocket-Key, up to the
// lines of the Dialer's Header: the caller appends those (as appendHeader
// writes them) and the empty line.
//
// Dial parses target.String() anew; the request line and Host are taken
// from target directly when that parse gives them back unchanged, and from
// the parse otherwise (a fragment, a user, an escaped host). target must be
// a URL that Dial accepts: for one it refuses, when gobwas/ws writes
// nothing, the request is what target's own fields say.
func appendUpgradeRequestHead(dst []byte, target *url.URL, nonce []byte, protocols []string, exts []httphead.Option) []byte {
	dst = append(dst, "GET "...)
	host := target.Host
	if plainTarget(target) {
		dst = appendRequestURI(dst, target)
	} else {
		u := target
		if r, err := url.ParseRequestURI(target.String()); err == nil {
			u = r
		}
		host = u.Host
		dst = append(dst, u.RequestURI()...)
	}
	dst = append(dst, " HTTP/1.1\r\nHost: "...)
	dst = append(dst, host...)
	dst = append(dst, "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: "...)
	dst = append(dst, nonce...)
	dst = append(dst, "\r\n"...)
	if len(protocols) > 0 {
		dst = append(dst, "Sec-WebSocket-Protocol: "...)
		for i, p := range protocols {
			if i > 0 {
				dst = append(dst, ", "...)
			}
			dst = append(dst, p...)
		}
		dst = append(dst, "\r\n"...)
	}
	if len(exts) > 0 {
		dst = append(dst, "Sec-WebSocket-Extensions: "...)
		dst = appendOptions(dst, exts)
		dst = append(dst, "\r\n"...)
	}
	return dst
}

// plainTarget reports whether url.ParseRequestURI(u.String()) gives back
// u's Host, and a RequestURI that appendRequestURI writes from u: a ws or
// wss URL with a host of unreserved characters, colons and brackets (which
// String does not escape and the parse does not unescape), with no user,
// opaque part or fragment, and a query without control bytes.
func plainTarget(u *url.URL) bool {
	if u.Scheme != "ws" && u.Scheme != "wss" || u.Opaque != "" || u.Fragment != "" || u.User != nil || u.Host == "" {
		return false
	}
	for i := 0; i < len(u.Host); i++ {
		switch c := u.Host[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '-', c == '.', c == '_', c == '~', c == ':', c == '[', c == ']':
		default:
			return false
		}
	}
	for i := 0; i < len(u.RawQuery); i++ {
		if c := u.RawQuery[i]; c < ' ' || c == 0x7f {
			return false
		}
	}
	return true
}

// appendRequestURI appends the RequestURI of the URL that u.String()
// parses to, for a u plainTarget accepts: String puts a slash before a
// path that lacks one, and the parse keeps the escaped path and the query
// as they are.
func appendRequestURI(dst []byte, u *url.URL) []byte {
	p := u.EscapedPath()
	if p == "" || p[0] != '/' {
		dst = append(dst, '/')
	}
	dst = append(dst, p...)
	if u.ForceQuery || u.RawQuery != "" {
		dst = append(dst, '?')
		dst = append(dst, u.RawQuery...)
	}
	return dst
}

// appendOptions appends opts as httphead.WriteOptions writes them.
func appendOptions(dst []byte, opts []httphead.Option) []byte {
	for i := range opts {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendTokenSanitized(dst, opts[i].Name)
		opts[i].Parameters.ForEach(func(k, v []byte) bool {
			dst = append(dst, ';')
			dst = appendTokenSanitized(dst, k)
			if len(v) != 0 {
				dst = append(dst, '=')
				dst = appendTokenSanitized(dst, v)
			}
			return true
		})
	}
	return dst
}

// appendTokenSanitized appends b as httphead's writeTokenSanitized writes
// it: as it is if every byte is a token's, else quoted, a control byte or
// a quote escaped by a backslash. Its table counts bytes below 32 as
// neither token nor control: they are quoted but not escaped.
func appendTokenSanitized(dst, b []byte) []byte {
	var qt bool
	var pos int
	for i := 0; i < len(b); i++ {
		c := b[i]
		if !httphead.OctetTypes[c].IsToken() && !qt {
			qt = true
			dst = append(dst, '"')
		}
		if httphead.OctetTypes[c].IsControl() || c == '"' {
			if !qt {
				qt = true
				dst = append(dst, '"')
			}
			dst = append(dst, b[pos:i]...)
			dst = append(dst, '\\', c)
			pos = i + 1
		}
	}
	if !qt {
		return append(dst, b...)
	}
	dst = append(dst, b[pos:]...)
	return append(dst, '"')
}

// appendHeader appends h as http.Header.Write writes it: keys in sorted
// order, those that are not tokens dropped, each value with CR and LF
// turned to spaces and surrounding white space trimmed.
func appendHeader(dst []byte, h http.Header) []byte {
	var buf [32]string
	keys := buf[:0]
	for k := range h {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		for _, v := range h[k] {
			dst = appendField(dst, k, v)
		}
	}
	return dst
}

// appendField appends the header line k: v as http.Header.Write writes
// it: nothing if k is not a token, v with CR and LF turned to spaces and
// surrounding white space trimmed.
func appendField(dst []byte, k, v string) []byte {
	if !validFieldName(k) {
		return dst
	}
	dst = append(dst, k...)
	dst = append(dst, ": "...)
	i, j := 0, len(v)
	for i < j && isASCIISpace(v[i]) {
		i++
	}
	for j > i && isASCIISpace(v[j-1]) {
		j--
	}
	for ; i < j; i++ {
		c := v[i]
		if c == '\r' || c == '\n' {
			c = ' '
		}
		dst = append(dst, c)
	}
	return append(dst, "\r\n"...)
}

// validFieldName reports whether k is a token (RFC 9110 section 5.1), as
// httpguts.ValidHeaderFieldName does.
func validFieldName(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		if !httphead.OctetTypes[k[i]].IsToken() {
			return false
		}
	}
	return true
}

// isASCIISpace is textproto's: the bytes TrimString trims.
func isASCIISpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r'
}

// answerStatus is an upstream's answer to the upgrade with a status other
// than 101 (and an HTTP version of at least 1.1): gobwas/ws's Dialer calls
// OnStatusError for it, and the caller reads the whole answer as
// readStatusError does. It unwraps to the ws.StatusError the Dialer
// returns, and says what that says.
type answerStatus struct {
	status int
}

func (e *answerStatus) Error() string { return ws.StatusError(e.status).Error() }
func (e *answerStatus) Unwrap() error { return ws.StatusError(e.status) }

// errAnswerIncomplete is checkUpgradeAnswer's error for a head whose lines
// end before the empty line that ends a 101's headers, where the Dialer
// reads on and meets the end of the stream (io.EOF) or its deadline.
var errAnswerIncomplete = errors.New("upstream answer's head is incomplete")

// Answer header keys as gobwas/ws canonicalizes them.
const (
	keyUpgrade    = "Upgrade"
	keyConnection = "Connection"
	keyAccept     = "Sec-Websocket-Accept"
	keyProtocol   = "Sec-Websocket-Protocol"
	keyExtensions = "Sec-Websocket-Extensions"
)

// answerHeadLen returns the length of the answer head at the start of b,
// its status line, header lines and the empty line that ends them, or -1
// if b does not hold all of it yet. A line ends at LF, with or without a
// CR before it, as gobwas/ws's Dialer reads lines: what follows the first
// empty line after the status line are frames.
func answerHeadLen(b []byte) int {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return -1
	}
	for off := i + 1; ; {
		i := bytes.IndexByte(b[off:], '\n')
		if i < 0 {
			return -1
		}
		empty := i == 0 || i == 1 && b[off] == '\r'
		off += i + 1
		if empty {
			return off
		}
	}
}

// checkUpgradeAnswer checks the head of an upstream's answer to a request
// appendUpgradeRequestHead began with nonce, protocols and exts, as gobwas/ws's
// Dialer checks it, and returns the Handshake the Dialer returns and the
// headers dialUpstream passes on in the client's 101: every header the
// Dialer gives OnHeader that is not hop-by-hop, in its canonical form,
// then the chosen subprotocol and extensions.
//
// head holds the answer from its status line on; bytes after the empty
// line that ends its headers (answerHeadLen) are not looked at. Its status
// line is read first: a malformed one is ws.ErrMalformedResponse, an HTTP
// version below 1.1 ws.ErrHandshakeBadProtocol, whatever the status, and a
// status other than 101 an *answerStatus, whatever follows. A 101's
// headers give the Dialer's errors: ws.ErrMalformedResponse for a line
// without a colon or a malformed Sec-WebSocket-Extensions,
// ws.ErrHandshakeBadUpgrade, ws.ErrHandshakeBadConnection or
// ws.ErrHandshakeBadSecAccept for a header that is not exactly the one
// RFC 6455 asks for or is missing, ws.ErrHandshakeBadSubProtocol and
// ws.ErrHandshakeBadExtensions for a choice that was not offered; a head
// whose lines run out first is errAnswerIncomplete. A nonce that is not
// nonceLen bytes, which the Dialer never makes, matches no accept.
//
// head is only read; answer's strings may share one copy of it, and the
// Handshake's extensions are the offered ones with the parameters the
// upstream chose, copied.
func checkUpgradeAnswer(head, nonce []byte, protocols []string, exts []httphead.Option) (hs ws.Handshake, answer http.Header, err error) {
	const (
		seenUpgrade = 1 << iota
		seenConnection
		seenAccept
		seenAll = seenUpgrade | seenConnection | seenAccept
	)
	sl, off, ok := cutLine(head, 0)
	if !ok {
		return ws.Handshake{}, nil, errAnswerIncomplete
	}
	major, minor, status, ok := parseStatusLine(sl)
	if !ok {
		return ws.Handshake{}, nil, ws.ErrMalformedResponse
	}
	if major != 1 || minor < 1 {
		return ws.Handshake{}, nil, ws.ErrHandshakeBadProtocol
	}
	if status != http.StatusSwitchingProtocols {
		return ws.Handshake{}, nil, &answerStatus{status: status}
	}

	var (
		seen   byte
		accept [acceptLen]byte
		str    string // head[strOff:] as a string, made for the first header passed on
		strOff int
		vals   []string // one backing for the answer's values
		keyBuf [64]byte
	)
	for {
		start := off
		var line []byte
		if line, off, ok = cutLine(head, off); !ok {
			return ws.Handshake{}, nil, errAnswerIncomplete
		}
		if len(line) == 0 {
			break
		}
		colon := bytes.IndexByte(line, ':')
		if colon < 0 {
			return ws.Handshake{}, nil, ws.ErrMalformedResponse
		}
		ki, kj := trimSpaceTab(line[:colon])
		vi, vj := trimSpaceTab(line[colon+1:])
		k, v := line[ki:kj], line[colon+1+vi:colon+1+vj]
		ck := keyBuf[:0]
		if len(k) > len(keyBuf) {
			ck = make([]byte, 0, len(k))
		}
		ck = canonicalKey(ck, k)

		switch string(ck) {
		case keyUpgrade:
			seen |= seenUpgrade
			if !bytes.EqualFold(v, []byte("websocket")) {
				return ws.Handshake{}, nil, ws.ErrHandshakeBadUpgrade
			}
		case keyConnection:
			seen |= seenConnection
			if !bytes.EqualFold(v, []byte("Upgrade")) {
				return ws.Handshake{}, nil, ws.ErrHandshakeBadConnection
			}
		case keyAccept:
			seen |= seenAccept
			if len(v) != acceptLen || len(nonce) != nonceLen {
				return ws.Handshake{}, nil, ws.ErrHandshakeBadSecAccept
			}
			if accept[0] == 0 {
				acceptFor(&accept, nonce)
			}
			if !bytes.Equal(v, accept[:]) {
				return ws.Handshake{}, nil, ws.ErrHandshakeBadSecAccept
			}
		case keyProtocol:
			// A later header may name another offered subprotocol; one
			// not offered is refused only while none has been chosen.
			for _, want := range protocols {
				if string(v) == want {
					hs.Protocol = want
					break
				}
			}
			if hs.Protocol == "" {
				return ws.Handshake{}, nil, ws.ErrHandshakeBadSubProtocol
			}
		case keyExtensions:
			if hs.Extensions, err = matchExtensions(v, exts, hs.Extensions); err != nil {
				return ws.Handshake{}, nil, err
			}
		default:
			if str == "" {
				strOff = start
				str = string(head[start:])
				n := bytes.Count(head[start:], []byte{'\n'}) + 2
				answer = make(http.Header)
				vals = make([]string, 0, n)
			}
			key := str[start+ki-strOff : start+kj-strOff]
			if !bytes.Equal(ck, k) {
				key = string(ck)
			}
			if isHopByHop(key) {
				continue
			}
			ks := start + colon + 1 - strOff
			vals, answer = addValue(answer, vals, key, str[ks+vi:ks+vj])
		}
	}
	if seen != seenAll {
		switch {
		case seen&seenUpgrade == 0:
			return ws.Handshake{}, nil, ws.ErrHandshakeBadUpgrade
		case seen&seenConnection == 0:
			return ws.Handshake{}, nil, ws.ErrHandshakeBadConnection
		default:
			return ws.Handshake{}, nil, ws.ErrHandshakeBadSecAccept
		}
	}

	// What dialUpstream sets after Dial returns; the Dialer never gives
	// OnHeader these keys, so setting is adding.
	if answer == nil {
		answer = make(http.Header)
	}
	if hs.Protocol != "" {
		vals, answer = addValue(answer, vals, keyProtocol, hs.Protocol)
	}
	if len(hs.Extensions) > 0 {
		var buf [128]byte
		vals, answer = addValue(answer, vals, keyExtensions, string(appendOptions(buf[:0], hs.Extensions)))
	}
	return hs, answer, nil
}

// addValue is h.Add(key, v), the value slice of a new key cut from vals.
func addValue(h http.Header, vals []string, key, v string) ([]string, http.Header) {
	key = http.CanonicalHeaderKey(key)
	if vs := h[key]; len(vs) > 0 {
		h[key] = append(vs, v)
		return vals, h
	}
	vals = append(vals, v)
	n := len(vals)
	h[key] = vals[n-1 : n : n]
	return vals, h
}

// cutLine returns the line of b that starts at off, without its LF or CRLF,
// and the offset of the next, as gobwas/ws's readLine reads lines; ok is
// false if no LF ends it.
func cutLine(b []byte, off int) (line []byte, next int, ok bool) {
	i := bytes.IndexByte(b[off:], '\n')
	if i < 0 {
		return nil, len(b), false
	}
	line = b[off : off+i]
	if i > 0 && line[i-1] == '\r' {
		line = line[:i-1]
	}
	return line, off + i + 1, true
}

// trimSpaceTab returns the bounds of b without leading and trailing spaces
// and tabs, as gobwas/ws's btrim trims.
func trimSpaceTab[T string | []byte](b T) (i, j int) {
	j = len(b)
	for i < j && (b[i] == ' ' || b[i] == '\t') {
		i++
	}
	for j > i && (b[j-1] == ' ' || b[j-1] == '\t') {
		j--
	}
	return i, j
}

// canonicalKey appends k canonicalized as gobwas/ws does: a letter upper
// case at the start and after a dash, lower case elsewhere, every other
// byte as it is.
func canonicalKey(dst, k []byte) []byte {
	upper := true
	for _, c := range k {
		if upper && 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		} else if !upper && 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
		upper = c == '-'
	}
	return dst
}

// parseStatusLine parses a status line as gobwas/ws's
// httpParseResponseLine does: the version is what precedes the first
// space, the status what lies between it and the second, and without a
// second space the whole line is taken for the version.
func parseStatusLine(line []byte) (major, minor, status int, ok bool) {
	proto, code := line, []byte(nil)
	if a := bytes.IndexByte(line, ' '); a >= 0 {
		if b := bytes.IndexByte(line[a+1:], ' '); b >= 0 {
			proto, code = line[:a], line[a+1:a+1+b]
		}
	}
	if major, minor, ok = parseVersion(proto); !ok {
		return 0, 0, 0, false
	}
	if status, ok = asciiToInt(code); !ok {
		return 0, 0, 0, false
	}
	return major, minor, status, true
}

// parseVersion is gobwas/ws's httpParseVersion.
func parseVersion(b []byte) (major, minor int, ok bool) {
	switch {
	case string(b) == "HTTP/1.0":
		return 1, 0, true
	case string(b) == "HTTP/1.1":
		return 1, 1, true
	case len(b) < 8 || string(b[:5]) != "HTTP/":
		return 0, 0, false
	}
	b = b[5:]
	dot := bytes.IndexByte(b, '.')
	if dot < 0 {
		return 0, 0, false
	}
	if major, ok = asciiToInt(b[:dot]); !ok {
		return 0, 0, false
	}
	if minor, ok = asciiToInt(b[dot+1:]); !ok {
		return 0, 0, false
	}
	return major, minor, true
}

// asciiToInt is gobwas/ws's: every byte's high nibble must be 3, its low
// nibble is its digit, so that ':' to '?' count 10 to 15, and the sum
// wraps as the Dialer's does.
func asciiToInt(b []byte) (n int, ok bool) {
	if len(b) == 0 {
		return 0, false
	}
	for i, c := range b {
		if c&0xf0 != 0x30 {
			return 0, false
		}
		n += int(c&0xf) * pow10(len(b)-i-1)
	}
	return n, true
}

// pow10 is 10 to the e, wrapping as gobwas/ws's pow does.
func pow10(e int) int {
	p, a := 1, 10
	for e > 0 {
		if e&1 != 0 {
			p *= a
		}
		e >>= 1
		a *= a
	}
	return p
}

// acceptFor writes the Sec-WebSocket-Accept for nonce (RFC 6455 section
// 4.2.2, item 5.4).
func acceptFor(dst *[acceptLen]byte, nonce []byte) {
	const magic = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
	var p [nonceLen + len(magic)]byte
	copy(p[:], nonce)
	copy(p[nonceLen:], magic)
	sum := sha1.Sum(p[:])
	base64.StdEncoding.Encode(dst[:], sum[:])
}

// matchExtensions is gobwas/ws's matchSelectedExtensions: it appends to
// received the offered extension of each option selected names, with the
// parameters selected gives it, copied; an option that was not offered is
// ws.ErrHandshakeBadExtensions, a malformed list ws.ErrMalformedResponse.
func matchExtensions(selected []byte, offered, received []httphead.Option) ([]httphead.Option, error) {
	if len(selected) == 0 {
		return received, nil
	}
	var (
		index  = -1
		option httphead.Option
		err    error
	)
	match := func() bool {
		for _, want := range offered {
			if bytes.Equal(option.Name, want.Name) {
				want.Parameters, _ = option.Parameters.Copy(make([]byte, option.Parameters.Size()))
				received = append(received, want)
				return true
			}
		}
		return false
	}
	ok := httphead.ScanOptions(selected, func(i int, name, attr, val []byte) httphead.Control {
		if i != index {
			index = i
			if i != 0 && !match() {
				err = ws.ErrHandshakeBadExtensions
				return httphead.ControlBreak
			}
			option = httphead.Option{Name: name}
		}
		if attr != nil {
			option.Parameters.Set(attr, val)
		}
		return httphead.ControlContinue
	})
	if !ok {
		return received, ws.ErrMalformedResponse
	}
	if !match() {
		return received, ws.ErrHandshakeBadExtensions
	}
	return received, err
}
