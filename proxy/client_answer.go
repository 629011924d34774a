package proxy

import (
	"bytes"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/gobwas/httphead"
	"github.com/gobwas/ws"
)

// The client's 101 as bytes, for a caller that writes the answer itself
// instead of calling ws.HTTPUpgrader.Upgrade. upgradeRefusal refuses what
// ws.HTTPUpgrader{Header: answer}.Upgrade refuses, with the same error,
// and appendUpgradeAnswer writes what it writes for the rest.
//
// That upgrader has no Protocol, Extension or Negotiate callback: it
// selects no subprotocol and no extension itself, and writes neither
// Sec-WebSocket-Protocol nor Sec-WebSocket-Extensions but those answer
// carries, which are the upstream's choices.

// upgradeRefusal is the error ws.HTTPUpgrader's Upgrade returns for req,
// which it answers with a refusal, or nil if it answers 101. It
// checks what Upgrade checks, in the same order, as strictly: the first
// value of each header field, the key's length only, the Connection list
// read as gobwas/ws reads it. Of a request checkUpgrade accepted it still
// refuses a Connection list with its upgrade token after something that
// is not a token, a comma or a space, such as a quoted string or a tab:
// gobwas/ws's scan stops there.
func upgradeRefusal(req *http.Request) error {
	h := req.Header
	switch {
	case req.Method != http.MethodGet:
		return ws.ErrHandshakeBadMethod
	case req.ProtoMajor < 1 || (req.ProtoMajor == 1 && req.ProtoMinor < 1):
		return ws.ErrHandshakeBadProtocol
	case req.Host == "":
		return ws.ErrHandshakeBadHost
	case !strings.EqualFold(firstValue(h, "Upgrade"), "websocket"):
		return ws.ErrHandshakeBadUpgrade
	case !connectionUpgrades(firstValue(h, "Connection")):
		return ws.ErrHandshakeBadConnection
	case len(firstValue(h, "Sec-Websocket-Key")) != nonceLen:
		return ws.ErrHandshakeBadSecKey
	}
	switch firstValue(h, "Sec-Websocket-Version") {
	case "13":
		return nil
	case "":
		return ws.ErrHandshakeBadSecVersion
	}
	return ws.ErrHandshakeUpgradeRequired
}

// firstValue is h[key]'s first value, key being canonical already, as
// gobwas/ws's httpGetHeader reads it.
func firstValue(h http.Header, key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// connectionUpgrades reports whether gobwas/ws's HTTPUpgrader finds the
// upgrade token in the Connection value c: c is "Upgrade", or its scan as
// a token list (httphead.ScanTokens) meets a token "upgrade", in any case,
// before anything but tokens, commas and spaces, which ends it. The scan
// is httphead's, over a string: it skips SP, and CRLF followed by SP, but
// not HT, which its octet table leaves out (it fills it from SP on); a
// token is a run of httphead's token octets.
func connectionUpgrades(c string) bool {
	if c == "Upgrade" {
		return true
	}
	for i := 0; i < len(c); {
		b := c[i]
		switch {
		case b == ' ' || b == ',':
			i++
		case b == '\r' && i+2 < len(c) && c[i+1] == '\n' && c[i+2] == ' ':
			i += 3
		case httphead.OctetTypes[b].IsToken():
			j := i + 1
			for j < len(c) && httphead.OctetTypes[c[j]].IsToken() {
				j++
			}
			if strings.EqualFold(c[i:j], "upgrade") {
				return true
			}
			i = j
		default:
			return false
		}
	}
	return false
}

// appendUpgradeAnswer appends to dst the 101 that
// ws.HTTPUpgrader{Header: answer}.Upgrade writes for req, which
// upgradeRefusal must have found nil for: the status line, Upgrade and
// Connection, the Sec-WebSocket-Accept of req's key, and answer as
// http.Header.Write writes it (sorted, names that are not tokens
// dropped, values with CR and LF turned to spaces and trimmed).
func appendUpgradeAnswer(dst []byte, req *http.Request, answer http.Header) []byte {
	dst = append(dst, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "...)
	var accept [acceptLen]byte
	acceptFor(&accept, []byte(firstValue(req.Header, "Sec-Websocket-Key")))
	dst = append(dst, accept[:]...)
	dst = append(dst, "\r\n"...)
	dst = appendHeader(dst, answer)
	return append(dst, "\r\n"...)
}

// upgraderRefusal returns what ws.HTTPUpgrader{Header: answer}.Upgrade
// writes to a client whose request req it refuses, as the goroutines'
// handshake has it write: the upgrader itself writes it, to a buffer.
func upgraderRefusal(req *http.Request, answer http.Header) []byte {
	var c bufferConn
	ws.HTTPUpgrader{Header: answer}.Upgrade(req, &hijacker{conn: &c})
	return c.b.Bytes()
}

// bufferConn is the connection upgraderRefusal lends the upgrader: what is
// written to it is kept, and its deadlines are nothing. The upgrader calls
// nothing else of it.
type bufferConn struct {
	net.Conn
	b bytes.Buffer
}

func (c *bufferConn) Write(p []byte) (int, error)      { return c.b.Write(p) }
func (c *bufferConn) SetDeadline(time.Time) error      { return nil }
func (c *bufferConn) SetWriteDeadline(time.Time) error { return nil }
