package config_test

import (
	"fmt"

	"github.com/wschaos/wschaos/config"
)

func ExampleParse() {
	cfg, err := config.Parse("wschaos.toml", []byte(`
[proxy]
listen = "127.0.0.1:9000"
upstream = "ws://127.0.0.1:9001/ws"
max_frame_size = "1MiB"
idle_timeout = "30s"

[log]
format = "json"
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(cfg.Proxy.Listen, cfg.Proxy.Upstream)
	fmt.Println(cfg.Proxy.MaxFrameSize, cfg.Proxy.IdleTimeout.Std(), cfg.Proxy.HandshakeTimeout.Std())
	fmt.Println(cfg.Log.Level, cfg.Log.Format)

	// Every problem is reported, in the order of the file.
	_, err = config.Parse("wschaos.toml", []byte(`
[proxy]
listen = "localhost"
upstream = "http://127.0.0.1:9001/"
`))
	fmt.Println(err)
	// Output:
	// 127.0.0.1:9000 ws://127.0.0.1:9001/ws
	// 1048576 30s 10s
	// info json
	// wschaos.toml:3: proxy.listen: "localhost" is not host:port; write for example "127.0.0.1:8080" or ":8080"
	// wschaos.toml:4: proxy.upstream: "http://127.0.0.1:9001/" must start with ws:// or wss://, or be "echo" for the built-in echo server
}
