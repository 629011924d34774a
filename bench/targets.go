//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// allTargets are what the workloads run against, in the report's order.
var allTargets = []string{"direct", "wschaos", "wschaos-rules", "nginx", "toxiproxy"}

// target is one way of reaching the echo upstream.
type target struct {
	name    string
	missing error // a component not on this machine: reported, not run
	start   func(ctx context.Context) (*instance, error)
}

// instance is a started target.
type instance struct {
	url    string       // ws://host:port, paths are appended
	pids   func() []int // the proxy's processes, whose RSS counts; nil for direct
	fdPids func() []int // processes whose descriptors show sessions ending
	stop   func()
}

func targets(e *env) []*target {
	return []*target{
		{name: "direct", start: e.startDirect},
		{name: "wschaos", missing: e.wschaosErr, start: func(ctx context.Context) (*instance, error) {
			return e.wschaosInstance(ctx, "wschaos", noRulesConfig)
		}},
		{name: "wschaos-rules", missing: e.wschaosErr, start: func(ctx context.Context) (*instance, error) {
			return e.wschaosInstance(ctx, "wschaos-rules", idleRulesConfig)
		}},
		{name: "nginx", missing: e.nginxErr, start: e.startNginx},
		{name: "toxiproxy", missing: e.toxiproxyErr, start: e.startToxiproxy},
	}
}

// startDirect is the upstream itself: the limit every proxy is held to.
func (e *env) startDirect(context.Context) (*instance, error) {
	echoPID := func() []int { return []int{e.echo.c.pid()} }
	return &instance{
		url:    fmt.Sprintf("ws://127.0.0.1:%d", e.echoPort["direct"]),
		fdPids: echoPID,
		stop:   func() {},
	}, nil
}

// noRulesConfig is wschaos as installed, without rules. The seed only
// keeps the startup log quiet about choosing one.
const noRulesConfig = `
[proxy]
seed = 1
`

// idleRulesConfig is a realistic rule set of ten rules of which none fires
// during the benchmark: some apply to every session (a timer of 24 h or
// more per session, counters of messages and bytes, a 24 h clock), the
// others match on paths, headers, queries, subprotocols or networks the
// benchmark never uses.
const idleRulesConfig = `
[proxy]
seed = 1

[[rule]]
name = "deploy-restart"
match = { path = "/chat/*", header = { "X-Tenant" = "acme" } }
after = "30s"
probability = 0.5
limit = 10
action = "close"
code = 1012
reason = "service restart"

[[rule]]
name = "overloaded"
on = "connect"
match = { header = { "X-Load-Test" = "overload" } }
probability = 0.2
action = "reject"
status = 503
retry_after = 5
body = "try again later"

[[rule]]
name = "crash"
after = "24h..48h"
action = "reset"
to = "client"

[[rule]]
name = "lb-drop"
after_messages = 1000000000
direction = "client"
action = "drop"

[[rule]]
name = "quota"
after_bytes = "1024GiB"
direction = "upstream"
action = "close"
code = "try_again_later"
reason = "quota exceeded"

[[rule]]
name = "poison"
match = { path = "/api/v1/commands/*" }
on_message = "\"type\":\\s*\"crash\""
direction = "client"
action = "close"
code = 1011
reason = "internal error"

[[rule]]
name = "rolling-restart"
every = "24h"
action = "close"
code = "going_away"
reason = "rolling restart"

[[rule]]
name = "black-hole"
match = { query = { debug = "hang" } }
after = "60s"
action = "hang"
direction = "both"
duration = "20s"

[[rule]]
name = "slow-upstream"
match = { subprotocol = "slow-*" }
on = "connect"
action = "delay"
direction = "upstream"
latency = "200ms"
jitter = "50ms"

[[rule]]
name = "no-status"
match = { client = "10.0.0.0/8" }
after = "45s"
action = "close"
code = "none"
`

// wschaosProc is a running wschaos.
type wschaosProc struct {
	c        *child
	url      string
	cfg      string
	reloaded chan time.Time     // the time of each "rules reloaded" line
	ticked   chan time.Duration // each "clock ticked" line's "took"
	errs     *tail
}

// startWschaos runs the built binary with cfgText as its configuration
// file, relaying to the echo upstream's port for name.
func (e *env) startWschaos(ctx context.Context, name, cfgText string) (*wschaosProc, error) {
	cfg := filepath.Join(e.dir, name+".toml")
	if e.o.wschaosLoops >= 0 {
		cfgText = strings.Replace(cfgText, "[proxy]\n", fmt.Sprintf("[proxy]\nloops = %d\n", e.o.wschaosLoops), 1)
	}
	if err := os.WriteFile(cfg, []byte(cfgText), 0o644); err != nil {
		return nil, err
	}
	listen := "127.0.0.1:0"
	level := e.o.wschaosLogLevel
	announces := level == "info" || level == "debug"
	if !announces {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		listen = "127.0.0.1:" + strconv.Itoa(port)
	}
	w := &wschaosProc{cfg: cfg, reloaded: make(chan time.Time, 16), ticked: make(chan time.Duration, 16), errs: &tail{}}
	urlc := make(chan string, 1)
	lw := &lineWriter{fn: func(line []byte) {
		switch {
		case bytes.Contains(line, []byte(`"msg":"listening"`)):
			var v struct{ URL string }
			if json.Unmarshal(line, &v) == nil {
				select {
				case urlc <- v.URL:
				default:
				}
			}
		case bytes.Contains(line, []byte(`"msg":"clock ticked"`)):
			var v struct{ Took float64 } // seconds
			if json.Unmarshal(line, &v) == nil {
				select {
				case w.ticked <- time.Duration(v.Took * float64(time.Second)):
				default:
				}
			}
		case bytes.Contains(line, []byte(`"msg":"rules reloaded"`)):
			select {
			case w.reloaded <- time.Now():
			default:
			}
		case bytes.Contains(line, []byte(`"level":"warn"`)), bytes.Contains(line, []byte(`"level":"error"`)),
			!bytes.HasPrefix(line, []byte("{")):
			w.errs.add(string(line))
		}
	}}
	// The admin API on a port of its own: the interleaved connect runs
	// both wschaos targets at once, and 8081 may be taken.
	cmd := exec.Command(e.wschaosBin, "run", "--config", cfg, "--listen", listen,
		"--upstream", fmt.Sprintf("ws://127.0.0.1:%d/", e.echoPort[name]),
		"--admin-listen", "127.0.0.1:0", "--log-format", "json", "--log-level", level)
	cmd.Stderr = lw
	c, err := startChild(name, cmd, e.cpus.proxyCPUs())
	if err != nil {
		return nil, err
	}
	w.c = c
	fail := func(err error) (*wschaosProc, error) {
		w.stop()
		return nil, fmt.Errorf("%w (stderr: %s)", err, w.errs)
	}
	if announces {
		select {
		case w.url = <-urlc:
		case <-c.done:
			return fail(fmt.Errorf("wschaos exited: %v", c.err))
		case <-time.After(10 * time.Second):
			return fail(errors.New(`no "listening" line in 10s`))
		case <-ctx.Done():
			return fail(ctx.Err())
		}
	} else {
		w.url = "ws://" + listen
		if err := waitTCP(ctx, listen, c, 10*time.Second); err != nil {
			return fail(err)
		}
	}
	return w, nil
}

func (w *wschaosProc) stop() { w.c.end() }

func (e *env) wschaosInstance(ctx context.Context, name, cfg string) (*instance, error) {
	w, err := e.startWschaos(ctx, name, cfg)
	if err != nil {
		return nil, err
	}
	pid := func() []int { return []int{w.c.pid()} }
	return &instance{url: w.url, pids: pid, fdPids: pid, stop: w.stop}, nil
}

// nginxConf is nginx as a WebSocket reverse proxy, everything under the
// prefix directory so that no root-owned path is needed.
const nginxConf = `
worker_processes %[1]s;
worker_rlimit_nofile %[2]d;
daemon off;
master_process on;
pid %[3]s/nginx.pid;
lock_file %[3]s/nginx.lock;
error_log %[3]s/error.log warn;

events {
    worker_connections %[4]d;
}

http {
    access_log %[7]s;
    client_body_temp_path %[3]s/client_body;
    proxy_temp_path %[3]s/proxy;
    fastcgi_temp_path %[3]s/fastcgi;
    uwsgi_temp_path %[3]s/uwsgi;
    scgi_temp_path %[3]s/scgi;

    server {
        listen 127.0.0.1:%[5]d backlog=4096;
        location / {
            proxy_pass http://127.0.0.1:%[6]d;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_set_header Host $host;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
        }
    }
}
`

// startNginx runs nginx in the foreground (daemon off) with a generated
// configuration under the temporary directory; -p and -c keep it away
// from /etc/nginx, -e from the compiled-in error log path.
func (e *env) startNginx(ctx context.Context) (*instance, error) {
	dir := filepath.Join(e.dir, "nginx")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	conns := int(e.nofile) - 64
	accessLog := "off"
	if e.o.nginxAccessLog {
		accessLog = dir + "/access.log" // the combined format, a write per line, as Debian's default
	}
	conf := fmt.Sprintf(nginxConf, e.nginxWorkers(), e.nofile, dir, conns, port, e.echoPort["nginx"], accessLog)
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	args := []string{"-p", dir + "/", "-c", confPath}
	if help, _ := exec.Command(e.nginxBin, "-h").CombinedOutput(); bytes.Contains(help, []byte("-e filename")) {
		args = append(args, "-e", filepath.Join(dir, "error.log"))
	}
	c, errs, err := startTailed("nginx", exec.Command(e.nginxBin, args...), e.cpus.proxyCPUs())
	if err != nil {
		return nil, err
	}
	stop := c.end
	addr := "127.0.0.1:" + strconv.Itoa(port)
	if err := waitTCP(ctx, addr, c, 10*time.Second); err != nil {
		stop()
		log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
		return nil, fmt.Errorf("%w (stderr: %s; error.log: %s)", err, errs, strings.TrimSpace(string(log)))
	}
	workers := func() []int { return childPIDs(c.pid()) }
	return &instance{url: "ws://" + addr, pids: workers, fdPids: workers, stop: stop}, nil
}

// startToxiproxy runs toxiproxy's server and creates one proxy, with no
// toxics, through its HTTP API.
func (e *env) startToxiproxy(ctx context.Context) (*instance, error) {
	apiPort, err := freePort()
	if err != nil {
		return nil, err
	}
	c, errs, err := startTailed("toxiproxy", exec.Command(e.toxiproxyBin, "-host", "127.0.0.1", "-port", strconv.Itoa(apiPort)), e.cpus.proxyCPUs())
	if err != nil {
		return nil, err
	}
	stop := c.end
	api := "127.0.0.1:" + strconv.Itoa(apiPort)
	if err := waitTCP(ctx, api, c, 10*time.Second); err != nil {
		stop()
		return nil, fmt.Errorf("%w (stderr: %s)", err, errs)
	}
	body := fmt.Sprintf(`{"name":"bench","listen":"127.0.0.1:0","upstream":"127.0.0.1:%d","enabled":true}`, e.echoPort["toxiproxy"])
	hc := &http.Client{Timeout: 5 * time.Second}
	resp, err := hc.Post("http://"+api+"/proxies", "application/json", strings.NewReader(body))
	if err != nil {
		stop()
		return nil, fmt.Errorf("create proxy: %w", err)
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	resp.Body.Close()
	var p struct{ Listen string }
	if resp.StatusCode != http.StatusCreated || json.Unmarshal(b, &p) != nil || p.Listen == "" {
		stop()
		return nil, fmt.Errorf("create proxy: %s: %s", resp.Status, b)
	}
	pid := func() []int { return []int{c.pid()} }
	return &instance{url: "ws://" + p.Listen, pids: pid, fdPids: pid, stop: stop}, nil
}

// freePort returns a loopback port that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// waitTCP waits until addr accepts connections, c exits, or d passes.
func waitTCP(ctx context.Context, addr string, c *child, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		conn, err := net.DialTimeout("tcp4", addr, time.Second)
		if err == nil {
			conn.Close()
			return nil
		}
		if c.exited() {
			return fmt.Errorf("%s exited: %v", c.name, c.err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not listening on %s after %s", c.name, addr, d)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
