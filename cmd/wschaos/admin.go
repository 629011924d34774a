package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/wschaos/wschaos/config"
	"github.com/wschaos/wschaos/control"
	"github.com/wschaos/wschaos/proxy"
)

// checkAdmin refuses an admin API that anyone on the network could drive:
// a listen address other than loopback needs a token, or allow_insecure.
func checkAdmin(c config.Admin, token string) error {
	if c.Listen == "" || token != "" || c.AllowInsecure {
		return nil
	}
	host, _, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return fmt.Errorf("[admin] listen: %w", err)
	}
	if ip := net.ParseIP(host); host == "localhost" || ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("[admin] listen = %q is reachable from other machines and no token is set: "+
		"set [admin] token or WSCHAOS_ADMIN_TOKEN, listen on 127.0.0.1, or set allow_insecure = true", c.Listen)
}

// startAdmin serves the admin API when it is configured and returns what
// stops it.
func startAdmin(c config.Admin, token string, info control.Info, p *proxy.Proxy, events *control.EventLog,
	metrics *control.Metrics, reload func() error, log *zap.Logger) (stop func(), err error) {
	if c.Listen == "" {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return nil, fmt.Errorf("admin listen: %w", err)
	}
	srv := &control.Server{
		Proxy:   p,
		Token:   token,
		Reload:  reload,
		Ready:   p.Ready,
		Events:  events,
		Metrics: metrics,
		Logger:  log.Named("admin"),
		Pprof:   c.Pprof,
		Info:    info,
	}
	hs := &http.Server{
		Handler:           srv.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          zap.NewStdLog(log.Named("admin")),
	}
	done := make(chan struct{})
	go func() { // goroutine "admin": ends with stop
		defer close(done)
		if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin API stopped", zap.Error(err))
		}
	}()
	log.Info("admin listening", zap.String("url", "http://"+ln.Addr().String()), zap.Bool("token", token != ""))
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		hs.Shutdown(ctx) // event streams are cut when ctx ends
		hs.Close()
		<-done
	}, nil
}
