// Package rules parses, validates and decides the faults wschaos injects:
// which sessions a rule applies to, when it fires and what it does. It is
// pure: no I/O, no logging, no clocks; the proxy feeds it facts and it
// answers.
package rules

// Spec is one [[rule]] table as written in the configuration file. Values
// that may be written in more than one way (a code as a number or a name, a
// size as a number or "1MiB") are kept as decoded and checked by Compile.
type Spec struct {
	Name  string    `toml:"name"`
	Match MatchSpec `toml:"match"`

	// Triggers: exactly one.
	On            string  `toml:"on"`
	After         string  `toml:"after"`
	AfterMessages *int64  `toml:"after_messages"`
	AfterBytes    any     `toml:"after_bytes"`
	OnMessage     *string `toml:"on_message"`
	Every         string  `toml:"every"`
	Direction     string  `toml:"direction"`

	Probability *float64 `toml:"probability"`
	Limit       *int64   `toml:"limit"`

	Action     string  `toml:"action"`
	Code       any     `toml:"code"`
	Reason     *string `toml:"reason"`
	To         string  `toml:"to"`
	Status     *int64  `toml:"status"`
	RetryAfter *int64  `toml:"retry_after"`
	Body       *string `toml:"body"`
	Duration   string  `toml:"duration"`
	Latency    string  `toml:"latency"`
	Jitter     string  `toml:"jitter"`
}

// MatchSpec is a rule's match table as written (in TOML, or in JSON for
// the admin API); every key is optional and all that are given must hold.
type MatchSpec struct {
	Path        string            `toml:"path" json:"path,omitempty"`
	Query       map[string]string `toml:"query" json:"query,omitempty"`
	Header      map[string]string `toml:"header" json:"header,omitempty"`
	Subprotocol string            `toml:"subprotocol" json:"subprotocol,omitempty"`
	Client      string            `toml:"client" json:"client,omitempty"`
}
