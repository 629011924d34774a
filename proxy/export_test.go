package proxy

// HoldPoller keeps the copiers of closing sessions from being started, as
// a wave's first pass does, until the returned func is called.
func HoldPoller(p *Proxy) (resume func()) {
	p.poller.hold()
	return p.poller.resume
}

// ParkedCopiers returns how many copiers are parked with p's poller.
func ParkedCopiers(p *Proxy) int { return p.poller.parkedCount() }

// RetryAccept reports whether Serve waits out an accept error.
var RetryAccept = retryAccept

// SplitTokens splits comma-separated header values into their tokens, as
// the proxy reads Sec-WebSocket-Protocol.
var SplitTokens = splitTokens

// OnLoop returns how many open sessions a loop relays.
func OnLoop(p *Proxy) int {
	n := 0
	for _, s := range p.openSessions() {
		if s.lane.Load() != nil {
			n++
		}
	}
	return n
}
