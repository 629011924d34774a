//go:build !linux

package proxy

import "errors"

// poller parks idle copiers on Linux only; elsewhere every copier runs in
// its own goroutine from the start.
type poller struct{}

func newPoller(func([]*session) []*session) (*poller, error) {
	return nil, errors.New("no epoll on this system")
}
func (pl *poller) run()              {}
func (pl *poller) stop()             {}
func (pl *poller) park(*copier) bool { return false }
func (pl *poller) forget(c *copier)  {}
func (pl *poller) parkedAfterRun()   {}
func (pl *poller) hold()             {}
func (pl *poller) resume()           {}
func (pl *poller) parkedCount() int  { return 0 }
func (pl *poller) sweepCount() int64 { return 0 }
