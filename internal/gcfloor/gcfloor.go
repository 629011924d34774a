// Package gcfloor lets the heap grow to a floor before the collector runs.
//
// The runtime starts a collection once the heap has grown by GOGC percent
// (100 by default) over what the last one left live, and never before it
// reaches 4 MiB. A proxy with a few thousand sessions has a live heap of a
// few MiB and allocates a few KiB per session, so under a reconnect storm
// it collects many times a second. Each collection stops the world twice,
// and a loop (see the proxy's Loops) that waits for its sockets in a raw
// epoll_pwait2 holds its P: the stop waits until the kernel has scheduled
// the loop's thread again, which on a busy machine takes a millisecond or
// more, with the thread that asked spinning meanwhile.
//
// Keep sets the GC percent after every collection so that the next one
// comes when the heap reaches the floor, or GOGC's default 100% over the
// live heap once that is larger: collections are rarer while the heap is
// small, and the heap never grows more than the default lets it once it is
// large. The runtime scales its own 4 MiB minimum with the percent, so the
// percent never goes above the one that puts that minimum at the floor.
package gcfloor

import (
	"context"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
)

// basePercent is GOGC's default, the percent once the live heap is over
// half the floor.
const basePercent = 100

// runtimeMinHeap is the heap below which the runtime does not collect at
// GOGC=100. It scales it with the percent: at 400, 16 MiB.
const runtimeMinHeap = 4 << 20

// Percent returns the GC percent that has the next collection start when
// the heap reaches floor bytes, live bytes being live: never below
// basePercent, nor above the percent that makes the runtime's own minimum
// the floor.
func Percent(live, floor uint64) int {
	top := max(floor*100/runtimeMinHeap, basePercent)
	if floor <= 2*live {
		return basePercent
	}
	return int(min((floor-live)/(live/100+1), top))
}

// Keep keeps the floor until ctx is done: it sets the GC percent now, and
// again after each collection, from the live heap the collection left.
// It starts no goroutine: the runtime runs its cleanup after each cycle.
func Keep(ctx context.Context, floor uint64) {
	k := &keeper{floor: floor, done: ctx.Done(), live: []metrics.Sample{{Name: "/gc/heap/live:bytes"}}}
	k.tune()
	k.arm()
}

type keeper struct {
	floor uint64
	done  <-chan struct{}
	live  []metrics.Sample // read by one collection's cleanup at a time
}

// sentinel is the object whose cleanup runs after a collection; it is
// larger than the runtime's tiny objects, whose cleanups may never run.
type sentinel [32]byte

// arm has the next collection call tune, which arms the one after it,
// until the context is done.
func (k *keeper) arm() {
	runtime.AddCleanup(new(sentinel), func(k *keeper) {
		select {
		case <-k.done:
			return
		default:
		}
		k.tune()
		k.arm()
	}, k)
}

// tune sets the percent for the live heap.
func (k *keeper) tune() {
	metrics.Read(k.live)
	if k.live[0].Value.Kind() != metrics.KindUint64 {
		return // a runtime without the metric: leave GOGC as it is
	}
	debug.SetGCPercent(Percent(k.live[0].Value.Uint64(), k.floor))
}
