package config

import (
	"errors"
	"reflect"
	"testing"
)

func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		"",
		`[proxy]
listen = "127.0.0.1:9000"
upstream = "ws://127.0.0.1:9001/ws"
handshake_timeout = "3s"
idle_timeout = "5m"
max_frame_size = "16MiB"
drain_timeout = "1s"
tls_cert = "cert.pem"
tls_key = "key.pem"
upstream_ca = "ca.pem"
upstream_insecure_skip_verify = true

[log]
level = "debug"
format = "json"
`,
		"proxy.max_frame_size = 4096\nlog = { format = \"json\" }\n",
		"[proxy]\nlisten = \"nowhere\"\nbogus = 1\n[log]\nlevel = \"loud\"\n",
		"[proxi]\nlisten = \"127.0.0.1:1\"\n",
		"[proxy]\nupstream_insecure_skip_verify = \"yes\"\n",
		"[proxy]\nhandshake_timeout = 10\nmax_frame_size = \"12XB\"\n",
		"[proxy\n",
		"[[proxy]]\n",
		"\"a.b\" = 1\n[\"proxy\" . 'x']\ny = 2\n",
		"a = \"\"\"\nb = 1\n\"\"\"\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("fuzz.toml", data)
		if err == nil {
			if cerr := Check("fuzz.toml", &cfg); cerr != nil {
				t.Fatalf("Parse succeeded but Check: got %v; want %v", cerr, nil)
			}
			return
		}
		var errs Errors
		if !errors.As(err, &errs) || len(errs) == 0 {
			t.Fatalf("got %T %v; want non-empty Errors", err, err)
		}
		if !reflect.DeepEqual(cfg, Config{}) {
			t.Errorf("on error: got %+v; want the zero Config", cfg)
		}
		for i, e := range errs {
			if e.File != "fuzz.toml" || e.Line < 0 || e.Msg == "" {
				t.Errorf("got %#v; want File fuzz.toml, Line >= 0 and a message", *e)
			}
			if i > 0 && errs[i-1].Line > e.Line {
				t.Errorf("not sorted by line: got %v before %v", errs[i-1].Line, e.Line)
			}
		}
	})
}
