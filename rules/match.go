package rules

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"
)

// Session is what a rule's match is checked against: the facts of an
// upgrade request.
type Session struct {
	Path        string
	Query       map[string][]string // as url.Values
	Header      map[string][]string // as http.Header: canonical names
	Subprotocol string              // the one the upstream chose; empty before it answered, or if it chose none
	Answered    bool                // the upstream has answered: Subprotocol is its choice, even if empty
	Offered     []string            // the subprotocols the client offered
	Client      netip.Addr
}

// Match is a checked match table. The zero Match holds for every session.
type Match struct {
	Path        *Glob
	Query       map[string]*Glob // by parameter name
	Header      map[string]*Glob // by lower-case header name
	Subprotocol *Glob
	Client      *netip.Prefix
}

// Matches reports whether every condition of m holds for s. A query or
// header condition holds when any of the parameter's or header's values
// matches.
func (m *Match) Matches(s *Session) bool {
	if m.Path != nil && !m.Path.Match(s.Path) {
		return false
	}
	if m.Subprotocol != nil {
		switch {
		case s.Answered || s.Subprotocol != "":
			// The upstream's choice decides; if it chose none, there is
			// no subprotocol to match.
			if s.Subprotocol == "" || !m.Subprotocol.Match(s.Subprotocol) {
				return false
			}
		case !slices.ContainsFunc(s.Offered, m.Subprotocol.Match):
			// Before the upstream has answered (a reject on connect), any
			// offered subprotocol counts.
			return false
		}
	}
	if m.Client != nil && !m.Client.Contains(s.Client.Unmap()) {
		return false
	}
	for k, g := range m.Query {
		if !slices.ContainsFunc(s.Query[k], g.Match) {
			return false
		}
	}
	for k, g := range m.Header {
		if !slices.ContainsFunc(headerValues(s.Header, k), g.Match) {
			return false
		}
	}
	return true
}

// OnlyClient reports whether m checks nothing but the client's address, the
// one thing known before a TLS handshake.
func (m *Match) OnlyClient() bool {
	return m.Path == nil && m.Subprotocol == nil && len(m.Query) == 0 && len(m.Header) == 0
}

func headerValues(h map[string][]string, lower string) []string {
	for k, vs := range h {
		if strings.EqualFold(k, lower) {
			return vs
		}
	}
	return nil
}

// String describes m, such as `path=/chat/* header[x-tenant]=acme`; empty
// for the zero Match.
func (m *Match) String() string {
	var parts []string
	if m.Path != nil {
		parts = append(parts, "path="+m.Path.String())
	}
	for _, k := range sortedKeys(m.Query) {
		parts = append(parts, fmt.Sprintf("query[%s]=%s", k, m.Query[k]))
	}
	for _, k := range sortedKeys(m.Header) {
		parts = append(parts, fmt.Sprintf("header[%s]=%s", k, m.Header[k]))
	}
	if m.Subprotocol != nil {
		parts = append(parts, "subprotocol="+m.Subprotocol.String())
	}
	if m.Client != nil {
		parts = append(parts, "client="+m.Client.String())
	}
	return strings.Join(parts, " ")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// Glob is a shell-style pattern: * matches any run of characters, / included;
// ? matches one character; [abc], [a-z] and [!abc] match one character of a
// class; \ makes the next character literal. It matches the whole string.
type Glob struct {
	src string
	re  *regexp.Regexp
}

// ParseGlob checks and compiles a glob.
func ParseGlob(s string) (*Glob, error) {
	var b strings.Builder
	b.WriteString(`(?s)^`) // (?s): * and ? match a newline too
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '*':
			b.WriteString(".*")
		case '?':
			b.WriteString(".")
		case '\\':
			if i+1 == len(s) {
				return nil, fmt.Errorf("glob %q ends with a lone \\; write \\\\ for a backslash", s)
			}
			_, n := utf8.DecodeRuneInString(s[i+1:])
			b.WriteString(regexp.QuoteMeta(s[i+1 : i+1+n]))
			i += n
		case '[':
			end := strings.IndexByte(s[i+1:], ']')
			if end < 0 || (end == 0 && !strings.Contains(s[i+2:], "]")) {
				return nil, fmt.Errorf("glob %q has a [ without its ]; write \\[ for a literal [", s)
			}
			class := s[i+1 : i+1+end]
			if class == "" || class == "!" {
				return nil, fmt.Errorf("glob %q has an empty class []; list characters inside, such as [abc]", s)
			}
			if class[0] == '!' {
				class = "^" + class[1:]
			}
			b.WriteString("[" + strings.ReplaceAll(class, `\`, `\\`) + "]")
			i += end + 1
		default:
			_, n := utf8.DecodeRuneInString(s[i:])
			b.WriteString(regexp.QuoteMeta(s[i : i+n]))
			i += n - 1
		}
	}
	b.WriteString("$")
	re, err := regexp.Compile(b.String())
	if err != nil {
		return nil, fmt.Errorf("glob %q is not valid: %v", s, err)
	}
	return &Glob{src: s, re: re}, nil
}

// Match reports whether s matches the whole glob.
func (g *Glob) Match(s string) bool { return g.re.MatchString(s) }

func (g *Glob) String() string { return g.src }
