package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/signal"
	"sync"
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

	mu   sync.Mutex // serializes reloads
	last []byte     // the content last loaded; set by the watcher's maker to what it loaded
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
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.hup:
			w.reload("SIGHUP")
		case <-t.C:
			if w.changed() {
				w.reload("file changed")
			}
		}
	}
}

// reload applies the file's rules; an invalid file keeps the running rules
// and logs every error, which it also returns. It is called by the
// "reload" goroutine and by the admin API.
func (w *watcher) reload(why string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	data, err := os.ReadFile(w.path)
	if err != nil {
		w.log.Error("reload failed; the running rules stay", zap.String("why", why), zap.Error(err))
		return err
	}
	w.last = data
	cfg, err := config.Parse(w.path, data)
	if err != nil {
		var errs config.Errors
		if errors.As(err, &errs) {
			for _, e := range errs {
				w.log.Error("reload failed; the running rules stay", zap.String("why", why), zap.String("error", e.Error()))
			}
		} else {
			w.log.Error("reload failed; the running rules stay", zap.String("why", why), zap.Error(err))
		}
		return err
	}
	w.p.SetRules(cfg.RuleSet)
	w.log.Info("rules reloaded", zap.String("why", why), zap.Int("rules", len(cfg.Rules)))
	return nil
}

// changed reports whether the file's content differs from what was last
// loaded.
func (w *watcher) changed() bool {
	data, err := os.ReadFile(w.path)
	w.mu.Lock()
	defer w.mu.Unlock()
	return err == nil && !bytes.Equal(data, w.last)
}
