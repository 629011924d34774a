package proxy_test

import (
	"os"
	"runtime"
	"strconv"
	"testing"

	"github.com/wschaos/wschaos/proxy"
)

// testLoops is how many event loops the tests' proxies run
// (WSCHAOS_TEST_LOOPS; 0: none), so that the whole suite can run with
// sessions on loops as well as on goroutines.
var testLoops, _ = strconv.Atoi(os.Getenv("WSCHAOS_TEST_LOOPS"))

// onGoroutines runs a test's proxy without loops, for tests of the
// copiers themselves.
func onGoroutines(p *proxy.Proxy) { p.Loops = 0 }

func TestMain(m *testing.M) {
	if testLoops > 0 {
		// A loop keeps its P: leave one for everything else.
		runtime.GOMAXPROCS(max(runtime.GOMAXPROCS(0), testLoops+1))
	}
	os.Exit(m.Run())
}
