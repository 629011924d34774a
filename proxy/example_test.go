package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/url"
	"time"

	gorilla "github.com/gorilla/websocket"

	"github.com/wschaos/wschaos/internal/echo"
	"github.com/wschaos/wschaos/proxy"
)

// A Proxy in front of a WebSocket echo server: messages go through both
// ways, and Shutdown ends the session with close 1001 Going Away.
func ExampleProxy() {
	// The upstream: a server that echoes every message.
	upLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	upstream := echo.Start(upLn)
	defer upstream.Close()

	// The proxy in front of it, on a listener made for it (net.Listen
	// works too).
	ln, err := proxy.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	p := &proxy.Proxy{
		Upstream:    &url.URL{Scheme: "ws", Host: upLn.Addr().String()},
		IdleTimeout: time.Minute,
	}
	go p.Serve(ln)

	// A client talks to the upstream through the proxy.
	conn, _, err := gorilla.DefaultDialer.Dial("ws://"+ln.Addr().String()+"/chat", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	conn.WriteMessage(gorilla.TextMessage, []byte("hello through the proxy"))
	_, msg, err := conn.ReadMessage()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(msg))

	// Shutdown sends close 1001 to both sides and waits for their answers;
	// the client answers while it reads.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- p.Shutdown(ctx) }()
	_, _, err = conn.ReadMessage()
	var ce *gorilla.CloseError
	if errors.As(err, &ce) {
		fmt.Println("client got close", ce.Code)
	}
	fmt.Println("shutdown:", <-done)

	// Output:
	// hello through the proxy
	// client got close 1001
	// shutdown: <nil>
}
