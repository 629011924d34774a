package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/wschaos/wschaos/config"
	"github.com/wschaos/wschaos/proxy"
)

// pollInterval is how often the configuration file is read for changes.
// Reading, not watching, sees a Kubernetes ConfigMap update, which swaps a
// symlink rather than writing the file.
const pollInterval = time.Second

// watcher reloads the rules on SIGHUP and when the configuration file's
// content changes.
type watcher struct {
	path string
	p    *proxy.Proxy
	log  *zap.Logger
	hup  <-chan os.Signal
	last []byte
}

// hupSignals delivers SIGHUP until ctx is done.
func hupSignals(ctx context.Context) <-chan os.Signal {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGHUP)
	context.AfterFunc(ctx, func() { signal.Stop(ch) })
	return ch
}

// run is the body of the "reload" goroutine; it returns when ctx is done.
func (w *watcher) run(ctx context.Context) {
	w.last, _ = os.ReadFile(w.path)
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.hup:
			w.reload("SIGHUP")
		case <-t.C:
			data, err := os.ReadFile(w.path)
			if err != nil || bytes.Equal(data, w.last) {
				continue
			}
			w.reload("file changed")
		}
	}
}

// reload applies the file's rules; an invalid file keeps the running rules
// and logs every error.
func (w *watcher) reload(why string) {
	data, err := os.ReadFile(w.path)
	if err != nil {
		w.log.Error("reload failed; the running rules stay", zap.String("why", why), zap.Error(err))
		return
	}
	w.last = data
	cfg, err := config.Parse(w.path, data)
	if err != nil {
		var errs config.Errors
		if errors.As(err, &errs) {
			for _, e := range errs {
				w.log.Error("reload failed; the running rules stay", zap.String("why", why), zap.String("error", e.Error()))
			}
			return
		}
		w.log.Error("reload failed; the running rules stay", zap.String("why", why), zap.Error(err))
		return
	}
	w.p.SetRules(cfg.RuleSet)
	w.log.Info("rules reloaded", zap.String("why", why), zap.Int("rules", len(cfg.Rules)))
}
