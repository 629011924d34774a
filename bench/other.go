//go:build !linux

package main

import (
	"fmt"
	"os"
)

// The harness reads its processes' memory and CPU from /proc, times
// closes with SO_TIMESTAMPNS and has the kernel kill its children with
// their parent (Pdeathsig): it runs on Linux only.
func main() {
	fmt.Fprintln(os.Stderr, "bench: the harness runs on Linux only (it measures through /proc and Linux socket options)")
	os.Exit(2)
}
