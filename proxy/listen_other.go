//go:build !linux

package proxy

import "syscall"

// listenControl sets nothing: TCP_DEFER_ACCEPT is Linux's.
func listenControl() func(network, address string, c syscall.RawConn) error { return nil }

// dialControl sets nothing: the delayed handshake ACK is Linux's.
func dialControl(_, _ string, _ syscall.RawConn) error { return nil }
