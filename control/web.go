package control

import "embed"

// webFiles is the admin page: plain HTML, CSS and JavaScript, no build step
// and nothing fetched from elsewhere.
//
//go:embed web
var webFiles embed.FS
