package rules

import (
	"net/netip"
	"strings"
	"testing"
)

func TestGlob(t *testing.T) {
	for _, tt := range []struct {
		glob string
		in   string
		want bool
	}{
		// Literals, anchored at both ends.
		{glob: "/chat", in: "/chat", want: true},
		{glob: "/chat", in: "/chat/", want: false},
		{glob: "/chat", in: "/chatroom", want: false},
		{glob: "chat", in: "/chat", want: false},
		{glob: "", in: "", want: true},
		{glob: "", in: "x", want: false},
		{glob: "/Chat", in: "/chat", want: false},
		// Regular-expression characters are literal.
		{glob: "a.b", in: "a.b", want: true},
		{glob: "a.b", in: "axb", want: false},
		{glob: "a+", in: "aa", want: false},
		{glob: "(x|y)", in: "(x|y)", want: true},
		{glob: "(x|y)", in: "x", want: false},
		{glob: "^$", in: "^$", want: true},
		{glob: "{a}", in: "{a}", want: true},
		{glob: "a]", in: "a]", want: true},
		// Non-ASCII text.
		{glob: "/café", in: "/café", want: true},
		{glob: "/caf?", in: "/café", want: true},
		{glob: "/caf?", in: "/cafe\u0301", want: false},
		{glob: "日本*", in: "日本語", want: true},
		// * matches any run, / and newlines included.
		{glob: "*", in: "", want: true},
		{glob: "*", in: "anything/at/all", want: true},
		{glob: "*", in: "a\nb", want: true},
		{glob: "/chat/*", in: "/chat/room", want: true},
		{glob: "/chat/*", in: "/chat/a/b/c", want: true},
		{glob: "/chat/*", in: "/chat/", want: true},
		{glob: "/chat/*", in: "/chat", want: false},
		{glob: "/chat/*", in: "/other/chat/x", want: false},
		{glob: "*/chat", in: "/v1/chat", want: true},
		{glob: "*chat*", in: "/v1/chatroom", want: true},
		{glob: "/a*b*c", in: "/aXbYc", want: true},
		{glob: "/a*b*c", in: "/aXcYb", want: false},
		// ? matches exactly one character.
		{glob: "?", in: "a", want: true},
		{glob: "?", in: "", want: false},
		{glob: "?", in: "ab", want: false},
		{glob: "?", in: "/", want: true},
		{glob: "?", in: "\n", want: true},
		{glob: "v?", in: "v2", want: true},
		{glob: "v??", in: "v2", want: false},
		// Classes.
		{glob: "[abc]", in: "b", want: true},
		{glob: "[abc]", in: "d", want: false},
		{glob: "[abc]", in: "ab", want: false},
		{glob: "v[0-9]", in: "v7", want: true},
		{glob: "v[0-9]", in: "vx", want: false},
		{glob: "[a-cx-z]", in: "y", want: true},
		{glob: "[a-cx-z]", in: "m", want: false},
		{glob: "[.]", in: ".", want: true},
		{glob: "[.]", in: "x", want: false},
		{glob: "[*]", in: "*", want: true},
		{glob: "[*]", in: "x", want: false},
		{glob: "[[]", in: "[", want: true},
		{glob: "[é]", in: "é", want: true},
		// Inside a class, \ is an ordinary character.
		{glob: `[\]`, in: `\`, want: true},
		// Negated classes.
		{glob: "[!abc]", in: "d", want: true},
		{glob: "[!abc]", in: "a", want: false},
		{glob: "[!abc]", in: "", want: false},
		{glob: "[!0-9]x", in: "ax", want: true},
		{glob: "[!0-9]x", in: "5x", want: false},
		{glob: "[a!]", in: "!", want: true},
		// Escapes.
		{glob: `\*`, in: "*", want: true},
		{glob: `\*`, in: "x", want: false},
		{glob: `\?`, in: "?", want: true},
		{glob: `\?`, in: "x", want: false},
		{glob: `\[x]`, in: "[x]", want: true},
		{glob: `\[x]`, in: "x", want: false},
		{glob: `\\`, in: `\`, want: true},
		{glob: `\a`, in: "a", want: true},
		{glob: `\.`, in: ".", want: true},
		{glob: `\.`, in: "x", want: false},
		{glob: `\é`, in: "é", want: true},
		{glob: `/a\*/*`, in: "/a*/b", want: true},
		{glob: `/a\*/*`, in: "/ab/b", want: false},
	} {
		t.Run(tt.glob+" "+tt.in, func(t *testing.T) {
			g, err := ParseGlob(tt.glob)
			if err != nil {
				t.Fatalf("got %v; want no error", err)
			}
			if got := g.Match(tt.in); got != tt.want {
				t.Errorf("Match(%q): got %v; want %v", tt.in, got, tt.want)
			}
			if got := g.String(); got != tt.glob {
				t.Errorf("String: got %q; want %q", got, tt.glob)
			}
		})
	}
}

func TestGlobErrors(t *testing.T) {
	for _, tt := range []struct {
		glob string
		msg  string // a fragment of the error
	}{
		{glob: "[", msg: "has a [ without its ]"},
		{glob: "/chat/[ab", msg: "has a [ without its ]"},
		{glob: "[]", msg: "has a [ without its ]"},
		{glob: "[]abc", msg: "has a [ without its ]"},
		{glob: "[!]", msg: "has an empty class []"},
		{glob: "[]a]", msg: "has an empty class []"},
		{glob: `abc\`, msg: `ends with a lone \`},
		{glob: `\`, msg: `ends with a lone \`},
		{glob: "[z-a]", msg: "is not valid"},
		{glob: "[[:alpha:]]", msg: "is not valid"},
		{glob: "\xff", msg: "is not valid"},
	} {
		t.Run(tt.glob, func(t *testing.T) {
			g, err := ParseGlob(tt.glob)
			if err == nil {
				t.Fatalf("got %v; want an error", g)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("got %q; want it to contain %q", err, tt.msg)
			}
		})
	}
}

// compileMatchSpec compiles m as the match of a valid rule.
func compileMatchSpec(t *testing.T, m MatchSpec) *Match {
	t.Helper()
	set, errs := Compile([]Spec{{Name: "m", Match: m, On: "connect", Action: "reset"}}, Options{})
	if errs != nil {
		t.Fatalf("compile %+v: %v", m, errs)
	}
	return &set.Rules[0].Match
}

func TestMatch(t *testing.T) {
	addr := netip.MustParseAddr
	for _, tt := range []struct {
		name    string
		match   MatchSpec
		session Session
		want    bool
	}{
		{
			name:    "zero match, zero session",
			match:   MatchSpec{},
			session: Session{},
			want:    true,
		},
		{
			name:  "zero match, any session",
			match: MatchSpec{},
			session: Session{
				Path:        "/x",
				Query:       map[string][]string{"a": {"b"}},
				Header:      map[string][]string{"X-Y": {"z"}},
				Subprotocol: "p",
				Client:      addr("192.0.2.1"),
			},
			want: true,
		},
		{
			name:    "path matches",
			match:   MatchSpec{Path: "/chat/*"},
			session: Session{Path: "/chat/room/1"},
			want:    true,
		},
		{
			name:    "path does not match",
			match:   MatchSpec{Path: "/chat/*"},
			session: Session{Path: "/admin"},
			want:    false,
		},
		{
			name:    "query: one of the values matches",
			match:   MatchSpec{Query: map[string]string{"room": "lobby*"}},
			session: Session{Query: map[string][]string{"room": {"other", "lobby-2"}}},
			want:    true,
		},
		{
			name:    "query: no value matches",
			match:   MatchSpec{Query: map[string]string{"room": "lobby*"}},
			session: Session{Query: map[string][]string{"room": {"other"}}},
			want:    false,
		},
		{
			name:    "query: the parameter is missing",
			match:   MatchSpec{Query: map[string]string{"room": "*"}},
			session: Session{Query: map[string][]string{"other": {"lobby"}}},
			want:    false,
		},
		{
			name:    "query: an empty value matches *",
			match:   MatchSpec{Query: map[string]string{"debug": "*"}},
			session: Session{Query: map[string][]string{"debug": {""}}},
			want:    true,
		},
		{
			name:    "query: names are case-sensitive",
			match:   MatchSpec{Query: map[string]string{"room": "*"}},
			session: Session{Query: map[string][]string{"Room": {"lobby"}}},
			want:    false,
		},
		{
			name:    "query: every parameter must match",
			match:   MatchSpec{Query: map[string]string{"a": "1", "b": "2"}},
			session: Session{Query: map[string][]string{"a": {"1"}, "b": {"3"}}},
			want:    false,
		},
		{
			name:    "header: canonical name",
			match:   MatchSpec{Header: map[string]string{"X-Tenant": "acme"}},
			session: Session{Header: map[string][]string{"X-Tenant": {"acme"}}},
			want:    true,
		},
		{
			name:    "header: name in the rule in another case",
			match:   MatchSpec{Header: map[string]string{"x-TENANT": "acme"}},
			session: Session{Header: map[string][]string{"X-Tenant": {"acme"}}},
			want:    true,
		},
		{
			name:    "header: name in the session in another case",
			match:   MatchSpec{Header: map[string]string{"X-Tenant": "acme"}},
			session: Session{Header: map[string][]string{"x-tenant": {"acme"}}},
			want:    true,
		},
		{
			name:    "header: any of several values",
			match:   MatchSpec{Header: map[string]string{"X-Tenant": "ac*"}},
			session: Session{Header: map[string][]string{"X-Tenant": {"other", "acme"}}},
			want:    true,
		},
		{
			name:    "header: values are case-sensitive",
			match:   MatchSpec{Header: map[string]string{"X-Tenant": "acme"}},
			session: Session{Header: map[string][]string{"X-Tenant": {"ACME"}}},
			want:    false,
		},
		{
			name:    "header: * with the header present",
			match:   MatchSpec{Header: map[string]string{"Authorization": "*"}},
			session: Session{Header: map[string][]string{"Authorization": {""}}},
			want:    true,
		},
		{
			name:    "header: * with the header missing",
			match:   MatchSpec{Header: map[string]string{"Authorization": "*"}},
			session: Session{Header: map[string][]string{"X-Other": {"x"}}},
			want:    false,
		},
		{
			name:    "subprotocol: the chosen one matches",
			match:   MatchSpec{Subprotocol: "chat.v*"},
			session: Session{Subprotocol: "chat.v2", Offered: []string{"chat.v2", "other"}},
			want:    true,
		},
		{
			name:    "subprotocol: the chosen one decides, not the offered ones",
			match:   MatchSpec{Subprotocol: "chat.v*"},
			session: Session{Subprotocol: "other", Offered: []string{"chat.v2", "other"}},
			want:    false,
		},
		{
			name:    "subprotocol: the upstream chose none, an offered one would match",
			match:   MatchSpec{Subprotocol: "chat.v*"},
			session: Session{Answered: true, Offered: []string{"chat.v1"}},
			want:    false,
		},
		{
			name:    "subprotocol: the upstream chose none, any glob",
			match:   MatchSpec{Subprotocol: "*"},
			session: Session{Answered: true, Offered: []string{"chat.v1"}},
			want:    false,
		},
		{
			name:    "subprotocol: none chosen, one offered matches",
			match:   MatchSpec{Subprotocol: "chat.v*"},
			session: Session{Offered: []string{"other", "chat.v1"}},
			want:    true,
		},
		{
			name:    "subprotocol: none chosen, none offered matches",
			match:   MatchSpec{Subprotocol: "chat.v*"},
			session: Session{Offered: []string{"other"}},
			want:    false,
		},
		{
			name:    "subprotocol: none chosen, none offered",
			match:   MatchSpec{Subprotocol: "*"},
			session: Session{},
			want:    false,
		},
		{
			name:    "client in a CIDR",
			match:   MatchSpec{Client: "10.0.0.0/8"},
			session: Session{Client: addr("10.20.30.40")},
			want:    true,
		},
		{
			name:    "client outside a CIDR",
			match:   MatchSpec{Client: "10.0.0.0/8"},
			session: Session{Client: addr("11.0.0.1")},
			want:    false,
		},
		{
			name:    "CIDR with host bits set",
			match:   MatchSpec{Client: "10.1.2.3/16"},
			session: Session{Client: addr("10.1.200.1")},
			want:    true,
		},
		{
			name:    "client is the bare IP",
			match:   MatchSpec{Client: "127.0.0.1"},
			session: Session{Client: addr("127.0.0.1")},
			want:    true,
		},
		{
			name:    "client is not the bare IP",
			match:   MatchSpec{Client: "127.0.0.1"},
			session: Session{Client: addr("127.0.0.2")},
			want:    false,
		},
		{
			name:    "IPv4-mapped client in an IPv4 CIDR",
			match:   MatchSpec{Client: "10.0.0.0/8"},
			session: Session{Client: addr("::ffff:10.1.2.3")},
			want:    true,
		},
		{
			name:    "IPv4-mapped client outside an IPv4 CIDR",
			match:   MatchSpec{Client: "10.0.0.0/8"},
			session: Session{Client: addr("::ffff:11.1.2.3")},
			want:    false,
		},
		{
			name:    "IPv4 client, IPv4-mapped bare IP",
			match:   MatchSpec{Client: "::ffff:127.0.0.1"},
			session: Session{Client: addr("127.0.0.1")},
			want:    true,
		},
		{
			name:    "IPv4 client, IPv4-mapped CIDR",
			match:   MatchSpec{Client: "::ffff:10.0.0.0/104"},
			session: Session{Client: addr("10.9.9.9")},
			want:    true,
		},
		{
			name:    "IPv4-mapped client, IPv4-mapped CIDR",
			match:   MatchSpec{Client: "::ffff:10.0.0.0/104"},
			session: Session{Client: addr("::ffff:10.9.9.9")},
			want:    true,
		},
		{
			name:    "IPv4 client outside an IPv4-mapped CIDR",
			match:   MatchSpec{Client: "::ffff:10.0.0.0/104"},
			session: Session{Client: addr("11.0.0.1")},
			want:    false,
		},
		{
			name:    "IPv6 client in an IPv6 CIDR",
			match:   MatchSpec{Client: "2001:db8::/32"},
			session: Session{Client: addr("2001:db8::1")},
			want:    true,
		},
		{
			name:    "IPv6 loopback as a bare IP",
			match:   MatchSpec{Client: "::1"},
			session: Session{Client: addr("::1")},
			want:    true,
		},
		{
			name:    "IPv6 client, IPv4 CIDR",
			match:   MatchSpec{Client: "0.0.0.0/0"},
			session: Session{Client: addr("::1")},
			want:    false,
		},
		{
			name:    "unknown client, any CIDR",
			match:   MatchSpec{Client: "0.0.0.0/0"},
			session: Session{},
			want:    false,
		},
		{
			name: "all conditions hold",
			match: MatchSpec{
				Path:        "/chat/*",
				Query:       map[string]string{"room": "lobby"},
				Header:      map[string]string{"X-Tenant": "acme"},
				Subprotocol: "chat",
				Client:      "10.0.0.0/8",
			},
			session: Session{
				Path:        "/chat/1",
				Query:       map[string][]string{"room": {"lobby"}},
				Header:      map[string][]string{"X-Tenant": {"acme"}},
				Subprotocol: "chat",
				Client:      addr("10.0.0.1"),
			},
			want: true,
		},
		{
			name: "one condition fails",
			match: MatchSpec{
				Path:        "/chat/*",
				Query:       map[string]string{"room": "lobby"},
				Header:      map[string]string{"X-Tenant": "acme"},
				Subprotocol: "chat",
				Client:      "10.0.0.0/8",
			},
			session: Session{
				Path:        "/chat/1",
				Query:       map[string][]string{"room": {"lobby"}},
				Header:      map[string][]string{"X-Tenant": {"acme"}},
				Subprotocol: "chat",
				Client:      addr("192.168.0.1"),
			},
			want: false,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := compileMatchSpec(t, tt.match)
			if got := m.Matches(&tt.session); got != tt.want {
				t.Errorf("got %v; want %v", got, tt.want)
			}
		})
	}
}

func TestMatchString(t *testing.T) {
	for _, tt := range []struct {
		name       string
		match      MatchSpec
		want       string
		onlyClient bool
	}{
		{
			name:       "zero",
			match:      MatchSpec{},
			want:       "",
			onlyClient: true,
		},
		{
			name:       "client only",
			match:      MatchSpec{Client: "::1"},
			want:       "client=::1/128",
			onlyClient: true,
		},
		{
			name:       "mapped CIDR is shown as IPv4",
			match:      MatchSpec{Client: "::ffff:10.1.0.0/112"},
			want:       "client=10.1.0.0/16",
			onlyClient: true,
		},
		{
			name:       "path",
			match:      MatchSpec{Path: "/x"},
			want:       "path=/x",
			onlyClient: false,
		},
		{
			name:       "query",
			match:      MatchSpec{Query: map[string]string{"b": "2", "a": "1"}},
			want:       "query[a]=1 query[b]=2",
			onlyClient: false,
		},
		{
			name:       "header",
			match:      MatchSpec{Header: map[string]string{"X-B": "2", "X-A": "1"}},
			want:       "header[x-a]=1 header[x-b]=2",
			onlyClient: false,
		},
		{
			name:       "subprotocol",
			match:      MatchSpec{Subprotocol: "chat"},
			want:       "subprotocol=chat",
			onlyClient: false,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := compileMatchSpec(t, tt.match)
			if got := m.String(); got != tt.want {
				t.Errorf("String: got %q; want %q", got, tt.want)
			}
			if got := m.OnlyClient(); got != tt.onlyClient {
				t.Errorf("OnlyClient: got %v; want %v", got, tt.onlyClient)
			}
		})
	}
}
