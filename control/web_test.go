package control

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

// TestWebPageFiles checks that the page and its two files are served, with
// their content types, without a token, and that the page needs nothing
// the Content-Security-Policy forbids (inline scripts, inline styles).
func TestWebPageFiles(t *testing.T) {
	srv := httptest.NewServer((&Server{Token: "s3cret"}).Handler())
	defer srv.Close()

	get := func(path string) (*http.Response, string) {
		t.Helper()
		res, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		if err != nil {
			t.Fatalf("GET %s: reading the body: %v", path, err)
		}
		return res, string(b)
	}

	for _, tc := range []struct {
		path     string
		types    []string // any of these content types
		contains []string
	}{
		{"/", []string{"text/html"}, []string{`<script src="app.js"`, `<link rel="stylesheet" href="style.css">`, `id="sessions-body"`, `id="client-last-code"`}},
		{"/app.js", []string{"text/javascript", "application/javascript"}, []string{"/api/sessions", "/api/events?follow=1", "Authorization"}},
		{"/style.css", []string{"text/css"}, []string{".card"}},
	} {
		res, body := get(tc.path)
		if res.StatusCode != http.StatusOK {
			t.Errorf("GET %s: status %d, want 200", tc.path, res.StatusCode)
			continue
		}
		ct := res.Header.Get("Content-Type")
		ok := false
		for _, want := range tc.types {
			if strings.HasPrefix(ct, want) {
				ok = true
			}
		}
		if !ok {
			t.Errorf("GET %s: Content-Type %q, want one of %q", tc.path, ct, tc.types)
		}
		if got := res.Header.Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("GET %s: X-Content-Type-Options %q, want nosniff", tc.path, got)
		}
		for _, want := range tc.contains {
			if !strings.Contains(body, want) {
				t.Errorf("GET %s: the body does not contain %q", tc.path, want)
			}
		}
	}

	_, page := get("/")
	if m := regexp.MustCompile(`(?is)<script(\s[^>]*)?>\s*[^<\s]`).FindString(page); m != "" {
		t.Errorf("the page has an inline script (%q), which the Content-Security-Policy blocks", m)
	}
	if m := regexp.MustCompile(`(?is)<style|\sstyle\s*=`).FindString(page); m != "" {
		t.Errorf("the page has an inline style (%q), which the Content-Security-Policy blocks", m)
	}
	if m := regexp.MustCompile(`(?i)(src|href)\s*=\s*"(https?:)?//`).FindString(page); m != "" {
		t.Errorf("the page loads something from elsewhere (%q); it must work offline", m)
	}

	// The API itself still needs the token.
	res, _ := get("/api/info")
	if res.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /api/info without the token: status %d, want 401", res.StatusCode)
	}
}
