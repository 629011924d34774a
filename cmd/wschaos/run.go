package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/wschaos/wschaos/config"
	"github.com/wschaos/wschaos/internal/echo"
	"github.com/wschaos/wschaos/proxy"
)

// version is the release this binary is.
const version = "0.1.0"

const usage = `wschaos: a WebSocket chaos proxy

Usage:
  wschaos run [flags]     start the proxy
  wschaos version         print the version
  wschaos help            print this help

Flags of run:
  --config FILE       TOML configuration (see config.example.toml); without it, defaults
  --listen ADDR       override [proxy] listen, e.g. 127.0.0.1:8080
  --upstream URL      override [proxy] upstream: ws://..., wss://... or echo
  --log-level LEVEL   override [log] level: debug, info, warn, error
  --log-format FMT    override [log] format: console, json
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
	case "version", "--version":
		fmt.Fprintln(stdout, "wschaos", version)
		return nil
	case "help", "--help", "-h":
		fmt.Fprint(stdout, usage)
		return nil
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
	if *cfgPath != "" {
		var err error
		if cfg, err = config.Load(*cfgPath); err != nil {
			return fmt.Errorf("invalid configuration:\n%w", err)
		}
	}
	for _, o := range []struct{ dst, v *string }{
		{&cfg.Proxy.Listen, listen}, {&cfg.Proxy.Upstream, upstream},
		{&cfg.Log.Level, level}, {&cfg.Log.Format, format},
	} {
		if *o.v != "" {
			*o.dst = *o.v
		}
	}
	// Flags are checked by the same rules as the file. Load has checked the
	// file and the defaults are valid, so a problem here is a flag's.
	if err := config.Check("command line", &cfg); err != nil {
		return fmt.Errorf("invalid configuration:\n%w", err)
	}

	log, err := newLogger(cfg.Log, stderr)
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
	ln, scheme, err := openListener(cfg.Proxy)
	if err != nil {
		return err
	}
	p := &proxy.Proxy{
		Upstream:         target,
		TLSClientConfig:  tlsUp,
		HandshakeTimeout: cfg.Proxy.HandshakeTimeout.Std(),
		IdleTimeout:      cfg.Proxy.IdleTimeout.Std(),
		MaxFrameSize:     int64(cfg.Proxy.MaxFrameSize),
		Logger:           log,
	}
	served := make(chan error, 1)
	go func() { served <- p.Serve(ln) }() // goroutine "serve": ends with Shutdown
	log.Info("listening",
		zap.String("url", scheme+"://"+ln.Addr().String()),
		zap.String("upstream", cfg.Proxy.Upstream),
		zap.String("version", version))

	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
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

func newLogger(c config.Log, w io.Writer) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(c.Level)
	if err != nil {
		return nil, fmt.Errorf("log level: %w", err)
	}
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	var e zapcore.Encoder
	if c.Format == "json" {
		e = zapcore.NewJSONEncoder(enc)
	} else {
		enc.EncodeLevel = zapcore.CapitalLevelEncoder
		e = zapcore.NewConsoleEncoder(enc)
	}
	return zap.New(zapcore.NewCore(e, zapcore.Lock(zapcore.AddSync(w)), lvl)), nil
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

// openListener opens the proxy's listener, with TLS when a certificate is
// configured, and returns the scheme clients use.
func openListener(c config.Proxy) (net.Listener, string, error) {
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return nil, "", fmt.Errorf("listen: %w", err)
	}
	if c.TLSCert == "" {
		return ln, "ws", nil
	}
	cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
	if err != nil {
		ln.Close()
		return nil, "", fmt.Errorf("tls_cert/tls_key: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	return tls.NewListener(ln, cfg), "wss", nil
}
