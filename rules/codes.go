package rules

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// CodeInfo describes one close code or range of the table in RFC 6455
// section 7.4 and the IANA "WebSocket Close Code Number" registry.
type CodeInfo struct {
	Low, High int    // the range; Low == High for a single code
	Name      string // the name a rule may use instead of the number; empty if none
	IANA      string // the registry's name
	Sendable  bool   // may be put in a close frame
	Meaning   string
	Instead   string // for a code that cannot be sent: how to make a client observe it
}

// Codes is the close-code table the product is built around, in order.
var Codes = []CodeInfo{
	{0, 999, "", "-", false, "never used", "pick a code from 1000-1003, 1007-1014 or 3000-4999"},
	{1000, 1000, "normal", "Normal Closure", true, "work is done, the connection is no longer needed", ""},
	{1001, 1001, "going_away", "Going Away", true, "browser tab closing, server shutting down gracefully", ""},
	{1002, 1002, "protocol_error", "Protocol error", true, "the peer sent a malformed frame", ""},
	{1003, 1003, "unsupported_data", "Unsupported Data", true, "a data type the endpoint cannot take", ""},
	{1004, 1004, "", "-", false, "reserved, unused", "pick a code from 1000-1003, 1007-1014 or 3000-4999"},
	{1005, 1005, "", "No Status Rcvd", false, "reported when a close frame carried no status code",
		`write code = "none" to send an empty close frame, which the client reports as 1005`},
	{1006, 1006, "", "Abnormal Closure", false, "reported when the transport broke without a close frame",
		`use action = "reset" or "drop" to make the client observe 1006`},
	{1007, 1007, "invalid_payload", "Invalid frame payload data", true, "payload inconsistent with its type", ""},
	{1008, 1008, "policy_violation", "Policy Violation", true, "generic refusal when no other code fits", ""},
	{1009, 1009, "message_too_big", "Message Too Big", true, "the endpoint will not process a message that large", ""},
	{1010, 1010, "mandatory_extension", "Mandatory Ext.", true, "client wanted extensions the server did not negotiate", ""},
	{1011, 1011, "internal_error", "Internal Error", true, "unexpected server problem", ""},
	{1012, 1012, "service_restart", "Service Restart", true, "the server/service is restarting", ""},
	{1013, 1013, "try_again_later", "Try Again Later", true, "temporary condition; come back later with back-off", ""},
	{1014, 1014, "bad_gateway", "Bad Gateway", true, "a gateway got an invalid response from upstream", ""},
	{1015, 1015, "", "TLS handshake", false, "reported when the TLS handshake failed",
		`use action = "tls_fail" on a TLS listener to make the client observe 1015`},
	{1016, 2999, "", "-", false, "only for extensions and future specs", "pick a code from 1000-1003, 1007-1014 or 3000-4999"},
	{3000, 3000, "unauthorized", "Unauthorized", true, "like HTTP 401", ""},
	{3003, 3003, "forbidden", "Forbidden", true, "like HTTP 403", ""},
	{3008, 3008, "timeout", "Timeout", true, "like HTTP 408", ""},
	{3000, 3999, "", "registered at IANA", true, "application codes", ""},
	{4000, 4999, "", "private use", true, "free for applications", ""},
}

// MaxReason is the longest close reason in bytes: a close frame's payload is
// at most 125 bytes, two of which are the code (RFC 6455 section 5.5).
const MaxReason = 123

// CodeNone is the Code of a close frame with an empty payload, which the
// receiver reports as 1005.
const CodeNone = 0

// LookupCode returns the table's entry for code: the named entry if there is
// one, else the range it falls in.
func LookupCode(code int) (CodeInfo, bool) {
	for _, c := range Codes {
		if code >= c.Low && code <= c.High {
			return c, true
		}
	}
	return CodeInfo{}, false
}

// ParseCode reads a close code as a rule or an API request writes it: a
// number, a name from the table, or "none" (CodeNone). It says why a code
// cannot be sent and what to write instead.
func ParseCode(v any) (int, error) {
	switch x := v.(type) {
	case int64:
		return checkCode(x)
	case int:
		return checkCode(int64(x))
	case float64:
		if x != float64(int64(x)) {
			return 0, fmt.Errorf("%v is not a whole number; write a code such as 1012 or a name such as \"service_restart\"", x)
		}
		return checkCode(int64(x))
	case string:
		s := strings.TrimSpace(x)
		if strings.EqualFold(s, "none") {
			return CodeNone, nil
		}
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			return checkCode(n)
		}
		for _, c := range Codes {
			if c.Name != "" && c.Name == strings.ToLower(s) {
				return c.Low, nil
			}
		}
		return 0, fmt.Errorf("%q is not a close code name; the names are %s, or \"none\"", x, strings.Join(codeNames(), ", "))
	default:
		return 0, fmt.Errorf("a close code is a number such as 1012 or a name such as \"service_restart\", not %T", v)
	}
}

func checkCode(n int64) (int, error) {
	if n < 0 || n > 4999 {
		return 0, fmt.Errorf("%d is not a close code: codes go up to 4999; pick one from 1000-1003, 1007-1014 or 3000-4999", n)
	}
	c, _ := LookupCode(int(n))
	if !c.Sendable {
		return 0, fmt.Errorf("%d cannot be sent in a close frame (%s: %s); %s", n, c.IANA, c.Meaning, c.Instead)
	}
	return int(n), nil
}

func codeNames() []string {
	var names []string
	for _, c := range Codes {
		if c.Name != "" {
			names = append(names, c.Name)
		}
	}
	return names
}

// CodeName returns code's name from the table, or its number as text.
func CodeName(code int) string {
	if code == CodeNone {
		return "none"
	}
	for _, c := range Codes {
		if c.Low == code && c.High == code && c.Name != "" {
			return c.Name
		}
	}
	return strconv.Itoa(code)
}

// CheckReason checks a close reason as rules and the admin API take it:
// valid UTF-8, at most MaxReason bytes, and empty when the code is "none"
// (none reports that it is).
func CheckReason(reason string, none bool) error {
	switch {
	case !utf8.ValidString(reason):
		return errors.New("is not valid UTF-8; a close reason must be text")
	case len(reason) > MaxReason:
		return fmt.Errorf("is %d bytes; a close reason is at most %d bytes of UTF-8 (a close frame carries 125 bytes, 2 of them the code)", len(reason), MaxReason)
	case none && reason != "":
		return errors.New(`cannot go with code = "none": an empty close frame has no room for a reason; remove it or pick a code`)
	}
	return nil
}
