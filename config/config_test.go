package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestDefault(t *testing.T) {
	d := Default()
	for _, tt := range []struct {
		name      string
		got, want any
	}{
		{"proxy.listen", d.Proxy.Listen, "127.0.0.1:8080"},
		{"proxy.upstream", d.Proxy.Upstream, EchoUpstream},
		{"proxy.handshake_timeout", d.Proxy.HandshakeTimeout, Duration(10 * time.Second)},
		{"proxy.idle_timeout", d.Proxy.IdleTimeout, Duration(0)},
		{"proxy.max_frame_size", d.Proxy.MaxFrameSize, Size(0)},
		{"proxy.drain_timeout", d.Proxy.DrainTimeout, Duration(10 * time.Second)},
		{"proxy.tls_cert", d.Proxy.TLSCert, ""},
		{"proxy.tls_key", d.Proxy.TLSKey, ""},
		{"proxy.upstream_ca", d.Proxy.UpstreamCA, ""},
		{"proxy.upstream_insecure_skip_verify", d.Proxy.UpstreamInsecureSkipVerify, false},
		{"proxy.loops", d.Proxy.Loops, AutoLoops},
		{"log.level", d.Log.Level, "info"},
		{"log.format", d.Log.Format, "console"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got %v; want %v", tt.got, tt.want)
			}
		})
	}
	t.Run("passes Check", func(t *testing.T) {
		if err := Check("(defaults)", &d); err != nil {
			t.Errorf("got %v; want %v", err, nil)
		}
	})
}

func TestParseDefaults(t *testing.T) {
	for _, tt := range []struct {
		name string
		toml string
	}{
		{"empty file", ""},
		{"blank lines", "\n\n  \n"},
		{"comments only", "# wschaos\n# [proxy]\n# listen = \"0.0.0.0:1\"\n"},
		{"empty sections", "[proxy]\n\n[log]\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse("wschaos.toml", []byte(tt.toml))
			if err != nil {
				t.Fatalf("got %v; want %v", err, nil)
			}
			if want := Default(); !reflect.DeepEqual(got, want) {
				t.Errorf("got %+v; want %+v", got, want)
			}
		})
	}
}

func TestParseKeys(t *testing.T) {
	seed42 := int64(42)
	for _, tt := range []struct {
		name string
		toml string
		want func(c *Config)
	}{
		{"listen", "[proxy]\nlisten = \"0.0.0.0:9000\"\n",
			func(c *Config) { c.Proxy.Listen = "0.0.0.0:9000" }},
		{"listen without host", "[proxy]\nlisten = \":9000\"\n",
			func(c *Config) { c.Proxy.Listen = ":9000" }},
		{"listen IPv6", "[proxy]\nlisten = \"[::1]:9000\"\n",
			func(c *Config) { c.Proxy.Listen = "[::1]:9000" }},
		{"upstream ws", "[proxy]\nupstream = \"ws://127.0.0.1:9001/path?q=1\"\n",
			func(c *Config) { c.Proxy.Upstream = "ws://127.0.0.1:9001/path?q=1" }},
		{"upstream wss", "[proxy]\nupstream = \"wss://example.com/socket\"\n",
			func(c *Config) { c.Proxy.Upstream = "wss://example.com/socket" }},
		{"upstream echo", "[proxy]\nupstream = \"echo\"\n",
			func(c *Config) { c.Proxy.Upstream = EchoUpstream }},
		{"handshake_timeout", "[proxy]\nhandshake_timeout = \"2s\"\n",
			func(c *Config) { c.Proxy.HandshakeTimeout = Duration(2 * time.Second) }},
		{"idle_timeout", "[proxy]\nidle_timeout = \"1m30s\"\n",
			func(c *Config) { c.Proxy.IdleTimeout = Duration(90 * time.Second) }},
		{"idle_timeout off", "[proxy]\nidle_timeout = \"0s\"\n",
			func(c *Config) { c.Proxy.IdleTimeout = 0 }},
		{"max_frame_size integer", "[proxy]\nmax_frame_size = 4096\n",
			func(c *Config) { c.Proxy.MaxFrameSize = 4096 }},
		{"max_frame_size zero", "[proxy]\nmax_frame_size = 0\n",
			func(c *Config) { c.Proxy.MaxFrameSize = 0 }},
		{"max_frame_size 16MiB", "[proxy]\nmax_frame_size = \"16MiB\"\n",
			func(c *Config) { c.Proxy.MaxFrameSize = 16 << 20 }},
		{"max_frame_size 1MB", "[proxy]\nmax_frame_size = \"1MB\"\n",
			func(c *Config) { c.Proxy.MaxFrameSize = 1000000 }},
		{"max_frame_size 512KiB", "[proxy]\nmax_frame_size = \"512KiB\"\n",
			func(c *Config) { c.Proxy.MaxFrameSize = 512 << 10 }},
		{"max_frame_size 10B", "[proxy]\nmax_frame_size = \"10B\"\n",
			func(c *Config) { c.Proxy.MaxFrameSize = 10 }},
		{"drain_timeout", "[proxy]\ndrain_timeout = \"500ms\"\n",
			func(c *Config) { c.Proxy.DrainTimeout = Duration(500 * time.Millisecond) }},
		{"drain_timeout zero", "[proxy]\ndrain_timeout = \"0s\"\n",
			func(c *Config) { c.Proxy.DrainTimeout = 0 }},
		{"tls_cert and tls_key", "[proxy]\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n",
			func(c *Config) { c.Proxy.TLSCert, c.Proxy.TLSKey = "cert.pem", "key.pem" }},
		{"upstream_ca", "[proxy]\nupstream_ca = \"ca.pem\"\n",
			func(c *Config) { c.Proxy.UpstreamCA = "ca.pem" }},
		{"upstream_insecure_skip_verify", "[proxy]\nupstream_insecure_skip_verify = true\n",
			func(c *Config) { c.Proxy.UpstreamInsecureSkipVerify = true }},
		{"level debug", "[log]\nlevel = \"debug\"\n",
			func(c *Config) { c.Log.Level = "debug" }},
		{"level warn", "[log]\nlevel = \"warn\"\n",
			func(c *Config) { c.Log.Level = "warn" }},
		{"level error", "[log]\nlevel = \"error\"\n",
			func(c *Config) { c.Log.Level = "error" }},
		{"format json", "[log]\nformat = \"json\"\n",
			func(c *Config) { c.Log.Format = "json" }},
		{"format console", "[log]\nformat = \"console\"\n",
			func(c *Config) { c.Log.Format = "console" }},
		{"dotted keys at top level", "proxy.listen = \":1\"\nlog.level = \"warn\"\n",
			func(c *Config) { c.Proxy.Listen, c.Log.Level = ":1", "warn" }},
		{"inline table", "log = { level = \"error\", format = \"json\" }\n",
			func(c *Config) { c.Log = Log{Level: "error", Format: "json"} }},
		{"every key", `# every key set
[proxy]
listen = "127.0.0.1:9000"
upstream = "wss://127.0.0.1:9443/ws"
handshake_timeout = "3s"
idle_timeout = "5m"
max_frame_size = "1MB"
drain_timeout = "1s"
tls_cert = "cert.pem"
tls_key = "key.pem"
upstream_ca = "ca.pem"
upstream_insecure_skip_verify = true
seed = 42
max_inspect_size = "64KiB"
loops = 4

[admin]
listen = "127.0.0.1:9001"
token = "s3cret"
allow_insecure = true
pprof = true

[log]
level = "debug"
format = "json"
`, func(c *Config) {
			*c = Config{
				Proxy: Proxy{
					Listen:                     "127.0.0.1:9000",
					Upstream:                   "wss://127.0.0.1:9443/ws",
					HandshakeTimeout:           Duration(3 * time.Second),
					IdleTimeout:                Duration(5 * time.Minute),
					MaxFrameSize:               1000000,
					DrainTimeout:               Duration(time.Second),
					TLSCert:                    "cert.pem",
					TLSKey:                     "key.pem",
					UpstreamCA:                 "ca.pem",
					UpstreamInsecureSkipVerify: true,
					Seed:                       &seed42,
					MaxInspectSize:             64 << 10,
					Loops:                      4,
				},
				Admin: Admin{Listen: "127.0.0.1:9001", Token: "s3cret", AllowInsecure: true, Pprof: true},
				Log:   Log{Level: "debug", Format: "json"},
			}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse("wschaos.toml", []byte(tt.toml))
			if err != nil {
				t.Fatalf("got %v; want %v", err, nil)
			}
			want := Default()
			tt.want(&want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got %+v; want %+v", got, want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	for _, tt := range []struct {
		name     string
		toml     string
		wantLine int
		wantKey  string
		wantMsg  string // a fragment of the message
	}{
		{"unknown key at top level", "# wschaos\n\nlisten = \"127.0.0.1:1\"\n",
			3, "listen", "unknown key"},
		{"unknown key in [proxy]", "[proxy]\nlisten = \"127.0.0.1:1\"\n# a comment\n\nlisen = \"127.0.0.1:2\"\n",
			5, "proxy.lisen", "unknown key"},
		{"unknown key in [log]", "[proxy]\n[log]\nlevel = \"info\"\ncolour = true\n",
			4, "log.colour", "unknown key"},
		{"unknown dotted key", "\n\nproxy.bogus = 1\n",
			3, "proxy.bogus", "unknown key"},
		{"unknown quoted key", "[proxy]\n\"a b\" = 1\n",
			2, `proxy."a b"`, "unknown key"},
		{"misspelled section", "\n[proxi]\nlisten = \"127.0.0.1:1\"\nupstream = \"echo\"\n",
			2, "proxi", "check the spelling and the [section]"},
		{"unknown sub-table", "[proxy]\n[proxy.tls]\ncert = \"c.pem\"\n",
			2, "proxy.tls", "unknown key"},
		{"string for bool", "[proxy]\nupstream_insecure_skip_verify = \"yes\"\n",
			2, "proxy.upstream_insecure_skip_verify", "TOML value has type string; destination has type bool"},
		{"int for bool", "[proxy]\n\nupstream_insecure_skip_verify = 1\n",
			3, "proxy.upstream_insecure_skip_verify", "TOML value has type int64; destination has type bool"},
		{"int for string", "[proxy]\nlisten = 8080\n",
			2, "proxy.listen", "TOML value has type int64; destination has type string"},
		{"bool for string", "[log]\nformat = \"json\"\nlevel = true\n",
			3, "log.level", "TOML value has type bool; destination has type string"},
		{"int for duration string", "[proxy]\nhandshake_timeout = 10\n",
			2, "proxy.handshake_timeout", `"10" is not a duration`},
		{"array for duration", "[proxy]\nidle_timeout = [\"1s\"]\n",
			2, "proxy.idle_timeout", "incompatible types"},
		{"value for section", "proxy = \"echo\"\n",
			1, "proxy", "expected table"},
		{"bad duration", "[proxy]\ndrain_timeout = \"10\"\n",
			2, "proxy.drain_timeout", `"10" is not a duration; write a Go duration such as "10s"`},
		{"bad duration unit", "[proxy]\nidle_timeout = \"10 seconds\"\n",
			2, "proxy.idle_timeout", "is not a duration"},
		{"zero handshake_timeout", "[proxy]\nhandshake_timeout = \"0s\"\n",
			2, "proxy.handshake_timeout", "must be more than 0"},
		{"negative idle_timeout", "[proxy]\nidle_timeout = \"-1s\"\n",
			2, "proxy.idle_timeout", "must not be negative"},
		{"negative drain_timeout", "[proxy]\ndrain_timeout = \"-5s\"\n",
			2, "proxy.drain_timeout", "must not be negative"},
		{"negative seed", "[proxy]\nseed = -1\n",
			2, "proxy.seed", "-1 is negative"},
		{"negative loops", "[proxy]\nloops = -1\n",
			2, "proxy.loops", "-1 is out of range"},
		{"more negative loops", "[proxy]\nloops = -2\n",
			2, "proxy.loops", "-2 is out of range"},
		{"too many loops", "[proxy]\nloops = 1000\n",
			2, "proxy.loops", "1000 is out of range"},
		{"bad size", "[proxy]\nmax_frame_size = \"12XB\"\n",
			2, "proxy.max_frame_size", `"12XB" is not a size`},
		{"negative size", "[proxy]\nmax_frame_size = -1\n",
			2, "proxy.max_frame_size", `"-1" is not a size`},
		{"negative size with unit", "[proxy]\nmax_frame_size = \"-1KiB\"\n",
			2, "proxy.max_frame_size", "is not a size"},
		{"fractional size", "[proxy]\nmax_frame_size = 1.5\n",
			2, "proxy.max_frame_size", "is not a size"},
		{"bad listen", "[proxy]\nlisten = \"localhost\"\n",
			2, "proxy.listen", `"localhost" is not host:port`},
		{"empty listen", "[proxy]\nlisten = \"\"\n",
			2, "proxy.listen", "is not host:port"},
		{"upstream with http scheme", "[proxy]\nupstream = \"http://127.0.0.1:9000/\"\n",
			2, "proxy.upstream", "must start with ws:// or wss://"},
		{"upstream without scheme", "[proxy]\nupstream = \"127.0.0.1:9000\"\n",
			2, "proxy.upstream", "ws://"},
		{"upstream without host", "[proxy]\nupstream = \"ws:///path\"\n",
			2, "proxy.upstream", "has no host"},
		{"upstream not a URL", "[proxy]\nupstream = \"ws://127.0.0.1:9000/%zz\"\n",
			2, "proxy.upstream", "is not a URL"},
		{"tls_cert without tls_key", "[proxy]\nlisten = \"127.0.0.1:8443\"\ntls_cert = \"cert.pem\"\n",
			3, "proxy.tls_cert", "tls_cert and tls_key go together"},
		{"tls_key without tls_cert", "[proxy]\nlisten = \"127.0.0.1:8443\"\n\ntls_key = \"key.pem\"\n",
			4, "proxy.tls_key", "tls_cert and tls_key go together"},
		{"bad log level", "[log]\nlevel = \"verbose\"\n",
			2, "log.level", `"verbose" is not a level`},
		{"bad log format", "[log]\nlevel = \"info\"\nformat = \"xml\"\n",
			3, "log.format", `"xml" is not a format; write "console" or "json"`},
		{"key in another case", "[proxy]\n\nLISTEN = \"nowhere\"\n",
			3, "proxy.listen", "is not host:port"},
		{"syntax: missing value", "[proxy]\nlisten =\n",
			2, "proxy.listen", "expected value"},
		{"syntax: unquoted string", "[proxy]\nidle_timeout = 10s\n",
			2, "proxy", "expected a top-level item to end with a newline"},
		{"syntax: unclosed table", "[proxy\nlisten = \"127.0.0.1:1\"\n",
			1, "", "to end table name"},
		{"syntax: unterminated string", "[proxy]\nlisten = \"127.0.0.1:1\n",
			2, "proxy.listen", "strings cannot contain newlines"},
		{"duplicate key", "[proxy]\nlisten = \"127.0.0.1:1\"\nlisten = \"127.0.0.1:2\"\n",
			3, "proxy.listen", "already been defined"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("wschaos.toml", []byte(tt.toml))
			var errs Errors
			if !errors.As(err, &errs) {
				t.Fatalf("got %T %v; want %v", err, err, "Errors")
			}
			if len(errs) != 1 {
				t.Fatalf("got %d errors:\n%v\nwant %v", len(errs), err, 1)
			}
			e := errs[0]
			if e.File != "wschaos.toml" {
				t.Errorf("File: got %v; want %v", e.File, "wschaos.toml")
			}
			if e.Line != tt.wantLine {
				t.Errorf("Line: got %v; want %v (%v)", e.Line, tt.wantLine, e)
			}
			if e.Key != tt.wantKey {
				t.Errorf("Key: got %v; want %v (%v)", e.Key, tt.wantKey, e)
			}
			if !strings.Contains(e.Msg, tt.wantMsg) {
				t.Errorf("Msg: got %v; want it to contain %v", e.Msg, tt.wantMsg)
			}
			prefix := "wschaos.toml:" + strconv.Itoa(tt.wantLine) + ": "
			if tt.wantKey != "" {
				prefix += tt.wantKey + ": "
			}
			if got := err.Error(); !strings.HasPrefix(got, prefix) {
				t.Errorf("Error(): got %v; want prefix %v", got, prefix)
			}
		})
	}
}

func TestParseSeveralErrors(t *testing.T) {
	const file = `[log]
format = "xml"
level = "loud"

[proxy]
listen = "nowhere"
upstream = "http://127.0.0.1:9000"
tls_key = "key.pem"
max_frame_size = 0
bogus = 1

[extra]
key = "value"
`
	type want struct {
		line int
		key  string
		msg  string
	}
	wants := []want{
		{2, "log.format", "is not a format"},
		{3, "log.level", "is not a level"},
		{6, "proxy.listen", "is not host:port"},
		{7, "proxy.upstream", "must start with ws://"},
		{8, "proxy.tls_key", "go together"},
		{10, "proxy.bogus", "unknown key"},
		{12, "extra", "unknown key"},
	}
	_, err := Parse("many.toml", []byte(file))
	var errs Errors
	if !errors.As(err, &errs) {
		t.Fatalf("got %T %v; want %v", err, err, "Errors")
	}
	if len(errs) != len(wants) {
		t.Fatalf("got %d errors:\n%v\nwant %v", len(errs), err, len(wants))
	}
	for i, w := range wants {
		t.Run(w.key, func(t *testing.T) {
			e := errs[i]
			if e.File != "many.toml" || e.Line != w.line || e.Key != w.key {
				t.Errorf("got %v:%v %v; want %v:%v %v", e.File, e.Line, e.Key, "many.toml", w.line, w.key)
			}
			if !strings.Contains(e.Msg, w.msg) {
				t.Errorf("got %v; want it to contain %v", e.Msg, w.msg)
			}
		})
	}
	t.Run("Error lists one per line", func(t *testing.T) {
		lines := strings.Split(err.Error(), "\n")
		if len(lines) != len(wants) {
			t.Fatalf("got %d lines; want %v", len(lines), len(wants))
		}
		for i, l := range lines {
			if want := errs[i].Error(); l != want {
				t.Errorf("line %d: got %v; want %v", i, l, want)
			}
		}
	})
}

func TestErrorString(t *testing.T) {
	for _, tt := range []struct {
		name string
		err  *Error
		want string
	}{
		{"line and key", &Error{File: "a.toml", Line: 3, Key: "proxy.listen", Msg: "bad"}, "a.toml:3: proxy.listen: bad"},
		{"no line", &Error{File: "a.toml", Key: "proxy.listen", Msg: "bad"}, "a.toml: proxy.listen: bad"},
		{"no key", &Error{File: "a.toml", Line: 7, Msg: "bad"}, "a.toml:7: bad"},
		{"neither", &Error{File: "a.toml", Msg: "bad"}, "a.toml: bad"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.Error(); got != tt.want {
				t.Errorf("got %v; want %v", got, tt.want)
			}
		})
	}
}

func TestCheck(t *testing.T) {
	for _, tt := range []struct {
		name    string
		mutate  func(c *Config)
		wantKey string // "" for no error
	}{
		{"defaults", func(c *Config) {}, ""},
		{"listen override", func(c *Config) { c.Proxy.Listen = "127.0.0.1:0" }, ""},
		{"upstream override", func(c *Config) { c.Proxy.Upstream = "ws://127.0.0.1:9000/" }, ""},
		{"bad listen", func(c *Config) { c.Proxy.Listen = "nowhere" }, "proxy.listen"},
		{"bad upstream", func(c *Config) { c.Proxy.Upstream = "ftp://127.0.0.1/" }, "proxy.upstream"},
		{"zero handshake_timeout", func(c *Config) { c.Proxy.HandshakeTimeout = 0 }, "proxy.handshake_timeout"},
		{"negative max_frame_size", func(c *Config) { c.Proxy.MaxFrameSize = -1 }, "proxy.max_frame_size"},
		{"bad level", func(c *Config) { c.Log.Level = "INFO" }, "log.level"},
		{"bad format", func(c *Config) { c.Log.Format = "text" }, "log.format"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.mutate(&c)
			err := Check("(flags)", &c)
			if tt.wantKey == "" {
				if err != nil {
					t.Errorf("got %v; want %v", err, nil)
				}
				return
			}
			var errs Errors
			if !errors.As(err, &errs) || len(errs) != 1 {
				t.Fatalf("got %v; want one error for %v", err, tt.wantKey)
			}
			if e := errs[0]; e.File != "(flags)" || e.Line != 0 || e.Key != tt.wantKey {
				t.Errorf("got %v:%v %v; want %v:%v %v", e.File, e.Line, e.Key, "(flags)", 0, tt.wantKey)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	t.Run("missing file", func(t *testing.T) {
		_, err := Load(filepath.Join(dir, "missing.toml"))
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("got %v; want %v", err, fs.ErrNotExist)
		}
	})
	t.Run("valid file", func(t *testing.T) {
		path := filepath.Join(dir, "ok.toml")
		if err := os.WriteFile(path, []byte("[log]\nlevel = \"debug\"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := Load(path)
		if err != nil {
			t.Fatalf("got %v; want %v", err, nil)
		}
		want := Default()
		want.Log.Level = "debug"
		if !reflect.DeepEqual(got, want) {
			t.Errorf("got %+v; want %+v", got, want)
		}
	})
	t.Run("invalid file names its path", func(t *testing.T) {
		path := filepath.Join(dir, "bad.toml")
		if err := os.WriteFile(path, []byte("[proxy]\nlisten = \"nowhere\"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := Load(path)
		if want := path + ":2: proxy.listen: "; err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("got %v; want prefix %v", err, want)
		}
	})
}

func TestParseSize(t *testing.T) {
	for _, tt := range []struct {
		in      string
		want    Size
		wantErr bool
	}{
		{"0", 0, false},
		{"4096", 4096, false},
		{"10B", 10, false},
		{"512KiB", 512 << 10, false},
		{"16MiB", 16 << 20, false},
		{"2GiB", 2 << 30, false},
		{"1KB", 1000, false},
		{"1MB", 1000000, false},
		{"3GB", 3000000000, false},
		{" 8 KiB ", 8 << 10, false},
		{"4611686018427387904", 1 << 62, false},
		{"4294967296GiB", 1 << 62, false},
		{"", 0, true},
		{"B", 0, true},
		{"MiB", 0, true},
		{"12XB", 0, true},
		{"16mib", 0, true},
		{"1.5MB", 0, true},
		{"-1", 0, true},
		{"-1KiB", 0, true},
		{"0x10", 0, true},
		{"4611686018427387905", 0, true},
		{"4294967297GiB", 0, true},
		{"9223372036854775807", 0, true},
		{"99999999999999999999", 0, true},
	} {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSize(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("got error %v; want error %v", err, tt.wantErr)
			}
			if err != nil {
				if !strings.Contains(err.Error(), "is not a size") {
					t.Errorf("got %v; want it to contain %v", err, "is not a size")
				}
				return
			}
			if got != tt.want {
				t.Errorf("got %v; want %v", got, tt.want)
			}
		})
	}
}

func TestSizeText(t *testing.T) {
	var s Size
	if err := s.UnmarshalText([]byte("1MiB")); err != nil {
		t.Fatalf("got %v; want %v", err, nil)
	}
	if s != 1<<20 {
		t.Errorf("got %v; want %v", s, 1<<20)
	}
	b, err := s.MarshalText()
	if err != nil || string(b) != "1048576" {
		t.Errorf("got %v, %v; want %v, %v", string(b), err, "1048576", nil)
	}
	before := s
	if err := s.UnmarshalText([]byte("lots")); err == nil {
		t.Errorf("got %v; want an error", err)
	}
	if s != before {
		t.Errorf("after a failed UnmarshalText: got %v; want %v", s, before)
	}
}

func TestDuration(t *testing.T) {
	for _, tt := range []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{"10s", 10 * time.Second, false},
		{"500ms", 500 * time.Millisecond, false},
		{"1m30s", 90 * time.Second, false},
		{"2h", 2 * time.Hour, false},
		{"0s", 0, false},
		{"0", 0, false},
		{"-1s", -time.Second, false},
		{"10", 0, true},
		{"", 0, true},
		{"10 s", 0, true},
		{"ten seconds", 0, true},
		{"1d", 0, true},
	} {
		t.Run(tt.in, func(t *testing.T) {
			var d Duration
			err := d.UnmarshalText([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("got error %v; want error %v", err, tt.wantErr)
			}
			if err != nil {
				if !strings.Contains(err.Error(), "is not a duration") {
					t.Errorf("got %v; want it to contain %v", err, "is not a duration")
				}
				return
			}
			if d.Std() != tt.want {
				t.Errorf("got %v; want %v", d.Std(), tt.want)
			}
			b, err := d.MarshalText()
			if err != nil || string(b) != tt.want.String() {
				t.Errorf("MarshalText: got %v, %v; want %v, %v", string(b), err, tt.want.String(), nil)
			}
		})
	}
}
