package rules

import (
	"math"
	"strconv"
	"strings"
	"testing"
)

func TestParseCode(t *testing.T) {
	for _, tt := range []struct {
		name string
		in   any
		want int
	}{
		{
			name: "int64",
			in:   int64(1012),
			want: 1012,
		},
		{
			name: "int",
			in:   1000,
			want: 1000,
		},
		{
			name: "whole float64",
			in:   1001.0,
			want: 1001,
		},
		{
			name: "numeric string",
			in:   "1014",
			want: 1014,
		},
		{
			name: "numeric string with spaces",
			in:   " 4000 ",
			want: 4000,
		},
		{
			name: "lowest sendable",
			in:   int64(1000),
			want: 1000,
		},
		{
			name: "last of the first block",
			in:   int64(1003),
			want: 1003,
		},
		{
			name: "first of the second block",
			in:   int64(1007),
			want: 1007,
		},
		{
			name: "registered code without a name",
			in:   int64(3500),
			want: 3500,
		},
		{
			name: "highest private code",
			in:   int64(4999),
			want: 4999,
		},
		{
			name: "name",
			in:   "service_restart",
			want: 1012,
		},
		{
			name: "name in another case",
			in:   "Going_Away",
			want: 1001,
		},
		{
			name: "unauthorized",
			in:   "unauthorized",
			want: 3000,
		},
		{
			name: "forbidden",
			in:   "forbidden",
			want: 3003,
		},
		{
			name: "timeout",
			in:   "timeout",
			want: 3008,
		},
		{
			name: "none",
			in:   "none",
			want: CodeNone,
		},
		{
			name: "none in another case",
			in:   " None",
			want: CodeNone,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCode(tt.in)
			if err != nil {
				t.Fatalf("got error %v; want %v", err, tt.want)
			}
			if got != tt.want {
				t.Errorf("got %v; want %v", got, tt.want)
			}
		})
	}
}

func TestParseCodeErrors(t *testing.T) {
	for _, tt := range []struct {
		name string
		in   any
		msg  string // a fragment of the error
	}{
		{
			name: "non-whole float64",
			in:   1012.5,
			msg:  "1012.5 is not a whole number",
		},
		{
			name: "NaN",
			in:   math.NaN(),
			msg:  "is not a whole number",
		},
		{
			name: "negative",
			in:   int64(-1),
			msg:  "-1 is not a close code",
		},
		{
			name: "zero is not none",
			in:   int64(0),
			msg:  "0 cannot be sent",
		},
		{
			name: "zero as a string",
			in:   "0",
			msg:  "0 cannot be sent",
		},
		{
			name: "reserved 1004",
			in:   int64(1004),
			msg:  "reserved, unused",
		},
		{
			name: "1005 says to write none",
			in:   1005,
			msg:  `write code = "none"`,
		},
		{
			name: "1006 says to reset or drop",
			in:   1006.0,
			msg:  `use action = "reset" or "drop"`,
		},
		{
			name: "1015 says to fail TLS",
			in:   "1015",
			msg:  `use action = "tls_fail"`,
		},
		{
			name: "unassigned",
			in:   int64(2000),
			msg:  "only for extensions and future specs",
		},
		{
			name: "too big",
			in:   int64(5000),
			msg:  "codes go up to 4999",
		},
		{
			name: "huge",
			in:   int64(math.MaxInt64),
			msg:  "codes go up to 4999",
		},
		{
			name: "unknown name",
			in:   "abnormal_closure",
			msg:  `"abnormal_closure" is not a close code name`,
		},
		{
			name: "empty string",
			in:   "",
			msg:  "is not a close code name",
		},
		{
			name: "bool",
			in:   true,
			msg:  "not bool",
		},
		{
			name: "nil",
			in:   nil,
			msg:  "not <nil>",
		},
		{
			name: "unsigned",
			in:   uint16(1000),
			msg:  "not uint16",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCode(tt.in)
			if err == nil {
				t.Fatalf("got %v; want an error", got)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("got %q; want it to contain %q", err, tt.msg)
			}
		})
	}
}

func TestCodeName(t *testing.T) {
	for _, tt := range []struct {
		code int
		want string
	}{
		{code: CodeNone, want: "none"},
		{code: 1000, want: "normal"},
		{code: 1001, want: "going_away"},
		{code: 1002, want: "protocol_error"},
		{code: 1003, want: "unsupported_data"},
		{code: 1007, want: "invalid_payload"},
		{code: 1008, want: "policy_violation"},
		{code: 1009, want: "message_too_big"},
		{code: 1010, want: "mandatory_extension"},
		{code: 1011, want: "internal_error"},
		{code: 1012, want: "service_restart"},
		{code: 1013, want: "try_again_later"},
		{code: 1014, want: "bad_gateway"},
		{code: 3000, want: "unauthorized"},
		{code: 3003, want: "forbidden"},
		{code: 3008, want: "timeout"},
		{code: 1006, want: "1006"},
		{code: 3001, want: "3001"},
		{code: 4000, want: "4000"},
	} {
		t.Run(tt.want, func(t *testing.T) {
			if got := CodeName(tt.code); got != tt.want {
				t.Errorf("got %v; want %v", got, tt.want)
			}
		})
	}
}

func TestLookupCode(t *testing.T) {
	for _, tt := range []struct {
		code     int
		ok       bool
		low      int
		high     int
		name     string
		iana     string
		sendable bool
		instead  string // a fragment
	}{
		{code: -1, ok: false},
		{code: 0, ok: true, low: 0, high: 999, iana: "-", instead: "pick a code"},
		{code: 1000, ok: true, low: 1000, high: 1000, name: "normal", iana: "Normal Closure", sendable: true},
		{code: 1004, ok: true, low: 1004, high: 1004, iana: "-", instead: "pick a code"},
		{code: 1005, ok: true, low: 1005, high: 1005, iana: "No Status Rcvd", instead: `code = "none"`},
		{code: 1006, ok: true, low: 1006, high: 1006, iana: "Abnormal Closure", instead: `"reset" or "drop"`},
		{code: 1012, ok: true, low: 1012, high: 1012, name: "service_restart", iana: "Service Restart", sendable: true},
		{code: 1015, ok: true, low: 1015, high: 1015, iana: "TLS handshake", instead: "tls_fail"},
		{code: 2500, ok: true, low: 1016, high: 2999, iana: "-", instead: "pick a code"},
		{code: 3000, ok: true, low: 3000, high: 3000, name: "unauthorized", iana: "Unauthorized", sendable: true},
		{code: 3003, ok: true, low: 3003, high: 3003, name: "forbidden", iana: "Forbidden", sendable: true},
		{code: 3004, ok: true, low: 3000, high: 3999, iana: "registered at IANA", sendable: true},
		{code: 4999, ok: true, low: 4000, high: 4999, iana: "private use", sendable: true},
		{code: 5000, ok: false},
	} {
		t.Run(strconv.Itoa(tt.code), func(t *testing.T) {
			c, ok := LookupCode(tt.code)
			if ok != tt.ok {
				t.Fatalf("ok: got %v; want %v", ok, tt.ok)
			}
			if c.Low != tt.low || c.High != tt.high {
				t.Errorf("range: got %d-%d; want %d-%d", c.Low, c.High, tt.low, tt.high)
			}
			if c.Name != tt.name || c.IANA != tt.iana || c.Sendable != tt.sendable {
				t.Errorf("got %q %q %v; want %q %q %v", c.Name, c.IANA, c.Sendable, tt.name, tt.iana, tt.sendable)
			}
			if !strings.Contains(c.Instead, tt.instead) || tt.instead == "" && c.Instead != "" {
				t.Errorf("instead: got %q; want %q", c.Instead, tt.instead)
			}
		})
	}
}

// sendableBySpec is the close-code table's "may be sent in a close frame"
// column, written out on its own: 1000-1003, 1007-1014 and 3000-4999.
func sendableBySpec(code int) bool {
	switch {
	case code >= 1000 && code <= 1003:
		return true
	case code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}

func TestCodesAgreeWithSpec(t *testing.T) {
	for code := 0; code <= 5000; code++ {
		want := sendableBySpec(code)
		c, ok := LookupCode(code)
		if got := ok && c.Sendable; got != want {
			t.Errorf("%d: table says sendable %v; want %v", code, got, want)
		}
		got, err := ParseCode(int64(code))
		if want && (err != nil || got != code) {
			t.Errorf("ParseCode(%d): got %v, %v; want %d", code, got, err, code)
		}
		if !want && err == nil {
			t.Errorf("ParseCode(%d): got %v; want an error", code, got)
		}
		if ok && !c.Sendable && c.Instead == "" {
			t.Errorf("%d cannot be sent but the table says nothing to write instead", code)
		}
		if ok && c.Sendable && c.Instead != "" {
			t.Errorf("%d can be sent but the table has %q to write instead", code, c.Instead)
		}
	}
	// Codes covers 0-4999 without gaps, and every entry is a valid range.
	for _, c := range Codes {
		if c.Low > c.High {
			t.Errorf("entry %d-%d is reversed", c.Low, c.High)
		}
		if c.Meaning == "" || c.IANA == "" {
			t.Errorf("entry %d-%d lacks a meaning or an IANA name", c.Low, c.High)
		}
	}
	for code := 0; code <= 4999; code++ {
		if _, ok := LookupCode(code); !ok {
			t.Errorf("%d is not in the table", code)
		}
	}
}

func TestCodeNamesRoundTrip(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range Codes {
		if c.Name == "" {
			continue
		}
		if seen[c.Name] {
			t.Errorf("name %q is in the table twice", c.Name)
		}
		seen[c.Name] = true
		if c.Low != c.High {
			t.Errorf("name %q is on a range %d-%d", c.Name, c.Low, c.High)
		}
		if !c.Sendable {
			t.Errorf("name %q is on %d, which cannot be sent", c.Name, c.Low)
		}
		if got, err := ParseCode(c.Name); err != nil || got != c.Low {
			t.Errorf("ParseCode(%q): got %v, %v; want %v", c.Name, got, err, c.Low)
		}
		if got := CodeName(c.Low); got != c.Name {
			t.Errorf("CodeName(%d): got %v; want %v", c.Low, got, c.Name)
		}
		if got, ok := LookupCode(c.Low); !ok || got.Name != c.Name {
			t.Errorf("LookupCode(%d): got %q; want %q", c.Low, got.Name, c.Name)
		}
	}
	if seen["none"] {
		t.Errorf(`"none" is a code name; it is reserved for the empty close frame`)
	}
}
