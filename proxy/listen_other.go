//go:build !linux

package proxy

import "syscall"

// listenControl sets nothing: TCP_DEFER_ACCEPT is Linux's.
func listenControl() func(network, address string, c syscall.RawConn) error { return nil }
