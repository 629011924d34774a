module github.com/wschaos/wschaos

go 1.26

require (
	github.com/BurntSushi/toml v1.6.0
	github.com/coder/websocket v1.8.15
	github.com/gobwas/httphead v0.1.0
	github.com/gobwas/ws v1.5.0
	github.com/gorilla/websocket v1.5.3
	go.uber.org/zap v1.28.0
)

require go.uber.org/multierr v1.10.0 // indirect
