// Command wschaos is a WebSocket chaos proxy: it relays every frame between
// WebSocket clients and their server and ends sessions the way real outages
// do.
//
// Usage:
//
//	wschaos run [--config FILE] [--listen ADDR] [--upstream URL]
//	wschaos validate FILE
//	wschaos codes
//	wschaos version
//	wschaos help
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err))
}

// exitCode prints err and maps it to the process's exit code: 2 for a
// usage error, 1 for any other failure, 0 for none.
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	fmt.Fprintln(os.Stderr, "wschaos:", err)
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintln(os.Stderr, "run 'wschaos help' for usage")
		return 2
	}
	return 1
}
