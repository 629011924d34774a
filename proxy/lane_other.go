//go:build !linux

package proxy

import "net"

// lanes run sessions on event loops, on Linux only.
type lanes struct{}

type laneSession struct{}

func (p *Proxy) startLanes(net.Listener) (*lanes, error) { return nil, nil }
func (*lanes) startAccepting() error                     { return nil }
func (*lanes) stopAccepting()                            {}
func (*lanes) leaveAll()                                 {}
func (*lanes) abortAll()                                 {}
func (*lanes) stop()                                     {}
func (*session) offLane()                                {}
func offLanes([]*session)                                {}

func fireOnLoops(ss []*session, _ *liveRule) (int, []*session) { return 0, ss }
