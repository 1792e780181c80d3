package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// serverFile, in the data directory, names the URL of the server running on it, so
// maintenance commands work through that server instead of fighting it for the
// storage lock.
const serverFile = "server.json"

func writeServerFile(data string, addr net.Addr, tls bool) error {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	scheme := "http"
	if tls {
		scheme = "https"
	}
	b, _ := json.Marshal(map[string]any{"url": scheme + "://" + net.JoinHostPort(host, port), "pid": os.Getpid()})
	return os.WriteFile(filepath.Join(data, serverFile), b, 0o644)
}

func removeServerFile(data string) { os.Remove(filepath.Join(data, serverFile)) }

// findServer returns the URL of the server on data, or "".
func findServer(data string) string {
	b, err := os.ReadFile(filepath.Join(data, serverFile))
	if err != nil {
		return ""
	}
	var f struct{ URL string }
	if json.Unmarshal(b, &f) != nil {
		return ""
	}
	return f.URL
}

// apiGet calls GET base+path and decodes the JSON answer into out. token, if set,
// goes as a bearer token.
func apiGet(base, path string, q url.Values, token string, out any) error {
	u := base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("--server %q: %w", base, err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	c := &http.Client{Timeout: 5 * time.Minute}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("server %s: %w", base, errors.Unwrap(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		json.NewDecoder(resp.Body).Decode(&e)
		return fmt.Errorf("server %s: %s: %s", base, resp.Status, e.Error)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// apiPost calls POST base+path with a JSON body and decodes the JSON answer.
func apiPost(base, path string, body any, token string, out any) error {
	b, _ := json.Marshal(body)
	req, err := http.NewRequest(http.MethodPost, base+path, bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("--server %q: %w", base, err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := (&http.Client{Timeout: time.Minute}).Do(req)
	if err != nil {
		return fmt.Errorf("server %s: %w", base, errors.Unwrap(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		var e struct{ Error string }
		json.NewDecoder(resp.Body).Decode(&e)
		return fmt.Errorf("server %s: %s: %s", base, resp.Status, e.Error)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}
