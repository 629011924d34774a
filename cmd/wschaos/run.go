package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"runtime"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/wschaos/wschaos/config"
	"github.com/wschaos/wschaos/control"
	"github.com/wschaos/wschaos/internal/echo"
	"github.com/wschaos/wschaos/internal/gcfloor"
	"github.com/wschaos/wschaos/internal/logbuf"
	"github.com/wschaos/wschaos/proxy"
)

// startProcs is GOMAXPROCS as the runtime set it when the process started
// (a container's CPU limit included), before a proxy's loops raise it: the
// number of loops by default.
var startProcs = runtime.GOMAXPROCS(0)

// version is the release this binary is.
const version = "0.1.0"

const usage = `wschaos: a WebSocket chaos proxy

Usage:
  wschaos run [flags]       start the proxy
  wschaos validate FILE     check a configuration: every error, or one line per rule
  wschaos codes             print the WebSocket close-code table
  wschaos version           print the version
  wschaos help              print this help

Commands that drive a running proxy through its admin API:
  wschaos sessions [--json]                 list the open sessions
  wschaos close ID [--code CODE] [--reason TEXT]
                                            send the client of session ID a close frame
  wschaos close --all [--match KEY=GLOB]... [--code CODE] [--reason TEXT]
                                            the same to every open session, or to those that match
  wschaos reset ID                          a TCP RST to the client of session ID
  wschaos drop ID                           a TCP FIN without a close frame
  wschaos hang ID                           relay nothing more while TCP stays open
  wschaos rules                             list the rules: enabled, fired, limit
  wschaos enable NAME, wschaos disable NAME switch a rule on or off
  wschaos reload                            re-read the configuration file's rules
  wschaos events [--follow] [--json]        the last events; --follow then streams new ones until Ctrl-C

Flags of run:
  --config FILE       TOML configuration (see config.example.toml); without it, defaults
  --listen ADDR       override [proxy] listen, e.g. 127.0.0.1:8080
  --upstream URL      override [proxy] upstream: ws://..., wss://... or echo
  --log-level LEVEL   override [log] level: debug, info, warn, error
  --log-format FMT    override [log] format: console, json
  --admin-listen ADDR override [admin] listen, e.g. 127.0.0.1:0; "off" turns the admin API off
  --loops N           override [proxy] loops: event loops for plain sessions (Linux), 0 for none;
                      default one per CPU

Flags of the admin API commands, before or after their arguments:
  --admin URL         the admin API; default $WSCHAOS_ADMIN, else http://127.0.0.1:8081
  --token TOKEN       its bearer token; default $WSCHAOS_ADMIN_TOKEN
  --code CODE         close: a number (1012), a name (service_restart) or none; default 1001
  --reason TEXT       close: the close frame's reason, at most 123 bytes of UTF-8
  --all               close: every open session; with --match, those that match
  --match KEY=GLOB    close --all: KEY is path, query.NAME, header.NAME, subprotocol or client
                      (a CIDR); repeat it for more keys, all of which must hold
  --json              sessions, events: the API's JSON; with --follow one event per line
  --follow            events: the kept events, then each new one as it happens
In the sessions table's RULES, each rule that applies to the session is NAME, NAME* once
its probability draw picked the session (with when an after rule fires), NAME! once fired.
A failing request exits 1 with the API's error; a usage mistake exits 2.
`

// usageError is a command line the program does not understand.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// run is the whole program: it returns when the command is done, or when
// ctx is cancelled (SIGINT, SIGTERM) and the proxy has drained.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return &usageError{"no command given"}
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "run":
		return runProxy(ctx, rest, stdout, stderr)
	case "validate":
		return validate(rest, stdout)
	case "codes":
		if len(rest) > 0 {
			return &usageError{"codes takes no arguments"}
		}
		printCodes(stdout)
		return nil
	case "version", "--version":
		fmt.Fprintln(stdout, "wschaos", version)
		return nil
	case "help", "--help", "-h":
		fmt.Fprint(stdout, usage)
		return nil
	case "sessions", "close", "reset", "drop", "hang", "rules", "enable", "disable", "reload", "events":
		return adminCommand(ctx, cmd, rest, stdout)
	default:
		return &usageError{fmt.Sprintf("unknown command %q", cmd)}
	}
}

func runProxy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfgPath := fs.String("config", "", "")
	listen := fs.String("listen", "", "")
	upstream := fs.String("upstream", "", "")
	level := fs.String("log-level", "", "")
	format := fs.String("log-format", "", "")
	adminListen := fs.String("admin-listen", "", "")
	loops := fs.Int("loops", 0, "")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, usage)
			return nil
		}
		return &usageError{"run: " + err.Error()}
	}
	if fs.NArg() > 0 {
		return &usageError{fmt.Sprintf("run: unexpected argument %q", fs.Arg(0))}
	}

	cfg := config.Default()
	var loaded []byte // the configuration file's content, as loaded
	if *cfgPath != "" {
		var err error
		if loaded, err = os.ReadFile(*cfgPath); err != nil {
			return fmt.Errorf("read config: %w", err)
		}
		if cfg, err = config.Parse(*cfgPath, loaded); err != nil {
			return fmt.Errorf("invalid configuration:\n%w", err)
		}
	}
	for _, o := range []struct{ dst, v *string }{
		{&cfg.Proxy.Listen, listen}, {&cfg.Proxy.Upstream, upstream},
		{&cfg.Log.Level, level}, {&cfg.Log.Format, format}, {&cfg.Admin.Listen, adminListen},
	} {
		if *o.v != "" {
			*o.dst = *o.v
		}
	}
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "loops" {
			cfg.Proxy.Loops = *loops
		}
	})
	if cfg.Admin.Listen == "off" {
		cfg.Admin.Listen = ""
	}
	if cfg.Proxy.Loops == config.AutoLoops {
		cfg.Proxy.Loops = startProcs
	}
	// Flags are checked by the same rules as the file. Load has checked the
	// file and the defaults are valid, so a problem here is a flag's.
	if err := config.Check("command line", &cfg); err != nil {
		return fmt.Errorf("invalid configuration:\n%w", err)
	}

	// Log lines leave through a coalescing writer: a burst of session
	// events (a reconnect storm, a rule's tick) costs a few writes rather
	// than one per line.
	logw := logbuf.New(stderr, 0)
	defer logw.Close()
	log, err := newLogger(cfg.Log, logw)
	if err != nil {
		return err
	}
	defer log.Sync()

	target, stopEcho, err := upstreamURL(cfg.Proxy.Upstream)
	if err != nil {
		return err
	}
	defer stopEcho()

	tlsUp, err := upstreamTLS(cfg.Proxy)
	if err != nil {
		return err
	}
	tlsLn, err := listenerTLS(cfg.Proxy)
	if err != nil {
		return err
	}
	ln, err := proxy.Listen(ctx, cfg.Proxy.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	seed, seedFrom := seedOf(cfg.Proxy)
	adminToken := cmp.Or(os.Getenv("WSCHAOS_ADMIN_TOKEN"), cfg.Admin.Token)
	if err := checkAdmin(cfg.Admin, adminToken); err != nil {
		ln.Close()
		return err
	}
	if os.Getenv("GOGC") == "" {
		gcfloor.Keep(ctx, heapFloor)
	}
	events := control.NewEventLog(1000)
	p := &proxy.Proxy{
		Upstream:         target,
		TLSClientConfig:  tlsUp,
		TLSConfig:        tlsLn,
		HandshakeTimeout: cfg.Proxy.HandshakeTimeout.Std(),
		IdleTimeout:      cfg.Proxy.IdleTimeout.Std(),
		MaxFrameSize:     int64(cfg.Proxy.MaxFrameSize),
		MaxInspectSize:   int64(cfg.Proxy.MaxInspectSize),
		Loops:            cfg.Proxy.Loops,
		Rules:            cfg.RuleSet,
		Seed:             seed,
		Logger:           log,
		Events:           events,
	}
	metrics := control.NewMetrics(p.Stats)
	p.Events = proxy.Sinks{events, metrics}
	served := make(chan error, 1)
	go func() { served <- p.Serve(ln) }() // goroutine "serve": ends with Shutdown
	scheme := "ws"
	if tlsLn != nil {
		scheme = "wss"
	}
	log.Info("listening",
		zap.String("url", scheme+"://"+ln.Addr().String()),
		zap.String("upstream", cfg.Proxy.Upstream),
		zap.Uint64("seed", seed),
		zap.Int("loops", cfg.Proxy.Loops),
		zap.String("seed_from", seedFrom),
		zap.Int("rules", len(cfg.Rules)),
		zap.String("version", version))
	if cfg.RuleSet != nil {
		for _, r := range cfg.RuleSet.Rules {
			log.Info("rule loaded", zap.String("rule", r.String()))
		}
	}

	reloaded := make(chan struct{})
	var reload func() error
	if *cfgPath != "" {
		// The watcher compares the file with the bytes loaded above, so
		// that a change made since is seen; it ends with run, whichever
		// way run returns.
		wctx, stopWatching := context.WithCancel(ctx)
		defer func() {
			stopWatching()
			<-reloaded
		}()
		w := &watcher{path: *cfgPath, p: p, log: log, hup: hupSignals(wctx), last: loaded}
		reload = func() error { return w.reload("admin API") }
		go func() { // goroutine "reload": ends with wctx
			defer close(reloaded)
			w.run(wctx)
		}()
	} else {
		close(reloaded)
	}

	info := control.Info{Version: version, ProxyURL: scheme + "://" + ln.Addr().String(), Upstream: cfg.Proxy.Upstream, Seed: seed}
	stopAdmin, err := startAdmin(cfg.Admin, adminToken, info, p, events, metrics, reload, log)
	if err != nil {
		p.Close()
		<-served
		return err
	}
	defer stopAdmin()

	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	<-reloaded
	log.Info("shutting down", zap.Duration("drain_timeout", cfg.Proxy.DrainTimeout.Std()))
	dctx, cancel := context.WithTimeout(context.Background(), cfg.Proxy.DrainTimeout.Std())
	defer cancel()
	if err := p.Shutdown(dctx); err != nil {
		log.Warn("drain timed out; remaining sessions closed", zap.Error(err))
	}
	if err := <-served; !errors.Is(err, proxy.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	log.Info("stopped")
	return nil
}

// heapFloor is the heap the collector lets the proxy grow to before it
// runs, unless GOGC is set (see internal/gcfloor): with the runtime's own
// 4 MiB a reconnect storm has it collect many times a second, each
// collection stopping the loops.
const heapFloor = 16 << 20

// newLogger returns the logger run injects everywhere. w must be safe for
// concurrent writes.
func newLogger(c config.Log, w io.Writer) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(c.Level)
	if err != nil {
		return nil, fmt.Errorf("log level: %w", err)
	}
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = (&timeCache{}).encode // zapcore.ISO8601TimeEncoder's form
	var e zapcore.Encoder
	if c.Format == "json" {
		e = zapcore.NewJSONEncoder(enc)
	} else {
		enc.EncodeLevel = zapcore.CapitalLevelEncoder
		e = zapcore.NewConsoleEncoder(enc)
	}
	return zap.New(zapcore.NewCore(e, zapcore.AddSync(w), lvl)), nil
}

// upstreamURL returns the upstream to dial; "echo" starts the built-in echo
// server on loopback, which the returned func stops.
func upstreamURL(s string) (*url.URL, func(), error) {
	if s != config.EchoUpstream {
		u, err := url.Parse(s)
		return u, func() {}, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, fmt.Errorf("start echo upstream: %w", err)
	}
	srv := echo.Start(ln)
	return &url.URL{Scheme: "ws", Host: ln.Addr().String(), Path: "/"}, func() { srv.Close() }, nil
}

func upstreamTLS(c config.Proxy) (*tls.Config, error) {
	if c.UpstreamCA == "" && !c.UpstreamInsecureSkipVerify {
		return nil, nil
	}
	t := &tls.Config{InsecureSkipVerify: c.UpstreamInsecureSkipVerify}
	if c.UpstreamCA != "" {
		pem, err := os.ReadFile(c.UpstreamCA)
		if err != nil {
			return nil, fmt.Errorf("upstream_ca: %w", err)
		}
		t.RootCAs = x509.NewCertPool()
		if !t.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("upstream_ca: %s holds no PEM certificate", c.UpstreamCA)
		}
	}
	return t, nil
}

// listenerTLS returns the TLS configuration the proxy serves wss:// with,
// or nil when no certificate is configured.
func listenerTLS(c config.Proxy) (*tls.Config, error) {
	if c.TLSCert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("tls_cert/tls_key: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// seedOf returns the rules' seed: the configured one, or a random one, and
// says which.
func seedOf(c config.Proxy) (uint64, string) {
	if c.Seed != nil {
		return uint64(*c.Seed), "config"
	}
	var b [8]byte
	rand.Read(b[:])
	return binary.LittleEndian.Uint64(b[:]) >> 1, "random" // fits a TOML integer, to be written back
}
