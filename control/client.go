package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/wschaos/wschaos/proxy"
	"github.com/wschaos/wschaos/rules"
)

// Client calls the admin API of a running proxy: one method per endpoint.
// An answer of the API's {"error": "..."} form is returned as an
// *APIError; a server that cannot be reached at all as an
// *UnreachableError.
type Client struct {
	// Base is the admin listener's URL, such as http://127.0.0.1:8081. A
	// path in it is kept, for an API served under a prefix.
	Base *url.URL

	// Token, if not empty, is sent as "Authorization: Bearer <token>".
	Token string

	// HTTP sends the requests. Nil: http.DefaultClient. Its Timeout, if
	// any, also ends FollowEvents.
	HTTP *http.Client
}

// APIError is an error the admin API answered with.
type APIError struct {
	Status int    // the HTTP status
	Msg    string // the answer's "error", or a description of a non-API answer
}

func (e *APIError) Error() string { return fmt.Sprintf("%s (%d)", e.Msg, e.Status) }

// UnreachableError is a request that got no HTTP answer: nothing listens
// at the URL, the name does not resolve, the TLS handshake failed, or the
// connection broke before an answer.
type UnreachableError struct {
	URL string // the admin API's base URL
	Err error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("cannot reach the admin API at %s: %v", e.URL, e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// endpoint returns the URL of the API path p, whose segments are escaped
// already, under c.Base.
func (c *Client) endpoint(p string) (*url.URL, error) {
	ref, err := url.Parse(strings.TrimSuffix(c.Base.EscapedPath(), "/") + p)
	if err != nil {
		return nil, err
	}
	u := *c.Base
	u.Path, u.RawPath, u.RawQuery, u.Fragment = ref.Path, ref.RawPath, "", ""
	return &u, nil
}

func (c *Client) httpClient() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return http.DefaultClient
}

// send makes a request to the API path p with in, if not nil, as its JSON
// body, and returns the response of a 2xx answer; any other answer is
// read and returned as an *APIError.
func (c *Client) send(ctx context.Context, method, p string, query url.Values, in any) (*http.Response, error) {
	if c.Base == nil {
		return nil, errors.New("control.Client: Base is not set")
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	u, err := c.endpoint(p)
	if err != nil {
		return nil, err
	}
	u.RawQuery = query.Encode()
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.httpClient().Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, &UnreachableError{URL: c.Base.String(), Err: err}
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	return nil, answerError(resp)
}

// answerError reads a non-2xx answer: the API's {"error": "..."}, or a
// description of whatever else the server said.
func answerError(resp *http.Response) error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var e struct {
		Error *string `json:"error"`
	}
	if isJSON(resp) && json.Unmarshal(data, &e) == nil && e.Error != nil {
		return &APIError{Status: resp.StatusCode, Msg: *e.Error}
	}
	msg := "not an answer of the wschaos admin API: " + resp.Status
	if ct := resp.Header.Get("Content-Type"); ct != "" {
		msg += ", " + ct
	}
	if line, _, _ := strings.Cut(strings.TrimSpace(string(data)), "\n"); line != "" {
		if len(line) > 200 {
			line = line[:200] + "..."
		}
		msg += ": " + strconv.Quote(line)
	}
	return &APIError{Status: resp.StatusCode, Msg: msg}
}

func isJSON(resp *http.Response) bool {
	mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	return err == nil && mt == "application/json"
}

// Do sends a request to the API path p (such as "/api/sessions", its
// segments escaped) with in, if not nil, as its JSON body, and decodes the
// JSON answer into out, if not nil. A *json.RawMessage receives the answer
// as it was sent.
func (c *Client) Do(ctx context.Context, method, p string, in, out any) error {
	resp, err := c.send(ctx, method, p, nil, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return nil
	}
	if !isJSON(resp) {
		return &APIError{Status: resp.StatusCode, Msg: fmt.Sprintf("not an answer of the wschaos admin API: %s %s answered %s, %q",
			method, p, resp.Status, resp.Header.Get("Content-Type"))}
	}
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return &UnreachableError{URL: c.Base.String(), Err: err}
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: decoding the answer: %w", method, p, err)
	}
	return nil
}

// Info returns GET /api/info: the proxy's version, URL, upstream and seed.
func (c *Client) Info(ctx context.Context) (Info, error) {
	var info Info
	err := c.Do(ctx, http.MethodGet, "/api/info", nil, &info)
	return info, err
}

// Sessions returns GET /api/sessions: the open sessions, oldest first.
func (c *Client) Sessions(ctx context.Context) ([]proxy.SessionInfo, error) {
	var ss []proxy.SessionInfo
	err := c.Do(ctx, http.MethodGet, "/api/sessions", nil, &ss)
	return ss, err
}

// Session returns GET /api/sessions/{id}.
func (c *Client) Session(ctx context.Context, id uint64) (proxy.SessionInfo, error) {
	var si proxy.SessionInfo
	err := c.Do(ctx, http.MethodGet, sessionPath(id, ""), nil, &si)
	return si, err
}

func sessionPath(id uint64, action string) string {
	p := "/api/sessions/" + strconv.FormatUint(id, 10)
	if action != "" {
		p += "/" + action
	}
	return p
}

// closeBody is the body of a close, as the API reads it.
type closeBody struct {
	Code   any        `json:"code"`
	Reason string     `json:"reason,omitempty"`
	Match  *matchBody `json:"match,omitempty"`
}

type matchBody struct {
	Path        string            `json:"path,omitempty"`
	Query       map[string]string `json:"query,omitempty"`
	Header      map[string]string `json:"header,omitempty"`
	Subprotocol string            `json:"subprotocol,omitempty"`
	Client      string            `json:"client,omitempty"`
}

// codeValue is a code as the API takes it: a number when it is one, else
// the name (or "none") as a string.
func codeValue(code string) any {
	if n, err := strconv.ParseInt(strings.TrimSpace(code), 10, 64); err == nil {
		return n
	}
	return code
}

// Close sends POST /api/sessions/{id}/close: a close frame with code (a
// number such as "1012", a name such as "service_restart", or "none" for
// an empty close frame) and reason to the client of session id. The API
// checks code and reason as it checks a rule's.
func (c *Client) Close(ctx context.Context, id uint64, code, reason string) error {
	return c.Do(ctx, http.MethodPost, sessionPath(id, "close"), closeBody{Code: codeValue(code), Reason: reason}, nil)
}

// Reset sends POST /api/sessions/{id}/reset: a TCP RST to the client.
func (c *Client) Reset(ctx context.Context, id uint64) error {
	return c.Do(ctx, http.MethodPost, sessionPath(id, "reset"), nil, nil)
}

// Drop sends POST /api/sessions/{id}/drop: a TCP FIN without a close
// frame to the client.
func (c *Client) Drop(ctx context.Context, id uint64) error {
	return c.Do(ctx, http.MethodPost, sessionPath(id, "drop"), nil, nil)
}

// Hang sends POST /api/sessions/{id}/hang: nothing more is relayed, while
// TCP stays open.
func (c *Client) Hang(ctx context.Context, id uint64) error {
	return c.Do(ctx, http.MethodPost, sessionPath(id, "hang"), nil, nil)
}

// CloseMatching sends POST /api/close: a close frame with code and reason
// to every open session that match picks (nil: every session). It returns
// how many sessions were closed.
func (c *Client) CloseMatching(ctx context.Context, code, reason string, match *rules.MatchSpec) (int, error) {
	body := closeBody{Code: codeValue(code), Reason: reason}
	if match != nil {
		body.Match = &matchBody{Path: match.Path, Query: match.Query, Header: match.Header,
			Subprotocol: match.Subprotocol, Client: match.Client}
	}
	var out struct {
		Closed int `json:"closed"`
	}
	err := c.Do(ctx, http.MethodPost, "/api/close", body, &out)
	return out.Closed, err
}

// Rules returns GET /api/rules: the loaded rules, in the order of the file.
func (c *Client) Rules(ctx context.Context) ([]proxy.RuleInfo, error) {
	var rs []proxy.RuleInfo
	err := c.Do(ctx, http.MethodGet, "/api/rules", nil, &rs)
	return rs, err
}

// EnableRule sends POST /api/rules/{name}/enable, or /disable when on is
// false.
func (c *Client) EnableRule(ctx context.Context, name string, on bool) error {
	sw := "disable"
	if on {
		sw = "enable"
	}
	return c.Do(ctx, http.MethodPost, "/api/rules/"+url.PathEscape(name)+"/"+sw, nil, nil)
}

// Reload sends POST /api/reload: the proxy re-reads its configuration file
// and applies its rules. It returns how many rules are loaded; an invalid
// file is an *APIError listing its problems, and the running rules stay.
func (c *Client) Reload(ctx context.Context) (int, error) {
	var out struct {
		Rules int `json:"rules"`
	}
	err := c.Do(ctx, http.MethodPost, "/api/reload", nil, &out)
	return out.Rules, err
}

// Events returns GET /api/events: the events the proxy kept, oldest first.
func (c *Client) Events(ctx context.Context) ([]proxy.Event, error) {
	var es []proxy.Event
	err := c.Do(ctx, http.MethodGet, "/api/events", nil, &es)
	return es, err
}

// FollowEvents reads GET /api/events?follow=1, a stream of Server-Sent
// Events, and calls fn with each event and its JSON as sent: first the
// kept events, then each new one as it happens. It returns when ctx is
// done (ctx.Err()), when fn returns an error (that error), or when the
// stream ends (an *UnreachableError).
func (c *Client) FollowEvents(ctx context.Context, fn func(e proxy.Event, data json.RawMessage) error) error {
	resp, err := c.send(ctx, http.MethodGet, "/api/events", url.Values{"follow": {"1"}}, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "text/event-stream" {
		return &APIError{Status: resp.StatusCode, Msg: fmt.Sprintf("GET /api/events?follow=1 answered %q, not an event stream", resp.Header.Get("Content-Type"))}
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	var data []byte
	for sc.Scan() {
		line := sc.Bytes()
		switch {
		case len(line) == 0: // the end of an event
			if len(data) == 0 {
				continue
			}
			raw := json.RawMessage(bytes.Clone(data))
			data = data[:0]
			var e proxy.Event
			if err := json.Unmarshal(raw, &e); err != nil {
				return fmt.Errorf("event stream: decoding %q: %w", raw, err)
			}
			if err := fn(e, raw); err != nil {
				return err
			}
		case line[0] == ':': // a comment: the heartbeat
		default:
			field, value, _ := bytes.Cut(line, []byte(":"))
			value = bytes.TrimPrefix(value, []byte(" "))
			if string(field) == "data" {
				if len(data) > 0 {
					data = append(data, '\n')
				}
				data = append(data, value...)
			}
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	err = sc.Err()
	if err == nil {
		err = errors.New("the server ended the event stream")
	}
	return &UnreachableError{URL: c.Base.String(), Err: err}
}
