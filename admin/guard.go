package admin

// Who may write: the API's POST calls and the page's sync form.
//
// A write passes two checks, in this order.
//
// 1. It comes from this proxy's own page, or from no page at all. Browsers mark
// what a page makes them send: Origin (the page's origin) and Sec-Fetch-Site
// (same-origin, same-site, cross-site, or none for what the user typed or
// bookmarked), and a page cannot forge either. Another site's page is refused
// whatever credentials ride along: the loopback trust below is exactly what such
// a page would borrow from an operator's browser, and with a token the check
// costs nothing, since a script sends neither header.
//
// 2. It carries the admin token as a bearer token, or, when none is configured,
// it is local in every respect ("loopback trust"):
//   - the peer is loopback;
//   - no proxy forwarded it: a reverse proxy, sidecar or tunnel on the same host
//     connects from loopback on behalf of someone remote, and the usual ones say
//     so (X-Forwarded-For, Forwarded, X-Real-IP, Via...);
//   - the Host is a loopback name or address, or public_url's host: a
//     DNS-rebinding page reaches 127.0.0.1 under its own name, which it cannot
//     make "localhost", and to the browser that page is same-origin, so check 1
//     does not see it.
// What none of this can tell from a local client: a tunnel or proxy that keeps
// Host and adds no header (kubectl port-forward, ssh -L, a bare nginx
// proxy_pass). Hence the advice to set an admin token wherever anything else
// runs next to the proxy, and the Helm chart always sets one.
//
// The page's form (POST /ui/...) is for a browser only, and every current
// browser's form post says where it comes from: one carrying neither Origin nor
// Sec-Fetch-Site is refused (browserOnly), since an older browser's cross-site
// post looks just like it. The API's writes must be JSON (api.go, jsonBody),
// which no cross-site form can send.
//
// Refusals: 401 when the admin token is missing or wrong (and loopback trust
// for a remote peer, as the SPEC says), 403 for everything a token would not
// cure in the same request: another site's page, a forwarded request, a foreign
// Host. The message says which header was wrong, never its value: it repeats no
// credential and nothing else the request sent (the log line has the values).

import (
	"crypto/subtle"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// denial is why a write is refused: the status to answer and what was wrong.
type denial struct {
	status int
	reason string
	// detail has the values of the headers at fault, for the log only: an
	// answer quotes nothing the request sent.
	detail string
}

// forwardingHeaders are those a proxy adds when it passes a request on. Any of
// them on a loopback peer means the client is someone else: the de facto
// standard ones, and those of the usual proxies, CDNs and meshes (Envoy and
// Istio, Cloudflare, Akamai, ingress-nginx, Traefik, Apache mod_proxy).
var forwardingHeaders = []string{
	"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Forwarded-Port",
	"X-Forwarded-Server", "X-Forwarded-Prefix", "X-Forwarded-Client-Cert", "X-Real-IP", "Via",
	"X-Envoy-External-Address", "True-Client-IP", "CF-Connecting-IP", "X-Original-Forwarded-For",
	"X-Client-IP", "X-Cluster-Client-IP",
}

// writeDenial says why r may not write, or nil when it may. The admin token is
// read from the Authorization header (the page's form puts the typed one there
// first, see withBearer).
func (o Options) writeDenial(r *http.Request) *denial {
	if d := crossOrigin(r, o.PublicURL); d != nil {
		return d
	}
	if o.AdminToken != "" {
		if bearer(r) == "" {
			return &denial{status: http.StatusUnauthorized, reason: "the admin token is required: Authorization: Bearer <admin_token>"}
		}
		if !o.hasAdminToken(r) {
			return &denial{status: http.StatusUnauthorized, reason: "that is not the admin token: Authorization: Bearer <admin_token>"}
		}
		return nil
	}
	return o.loopbackDenial(r)
}

// browserOnly refuses a write to the page's form that no browser page sent: it
// carries neither Origin nor Sec-Fetch-Site. Current browsers send one or both on
// every form post; an older browser posts another site's form with neither, and
// such a post must not borrow the loopback trust, nor a token typed into this
// page's form before (a password manager fills it).
func browserOnly(r *http.Request) *denial {
	if len(r.Header.Values("Origin")) > 0 || len(r.Header.Values("Sec-Fetch-Site")) > 0 {
		return nil
	}
	return &denial{status: http.StatusForbidden, reason: "this form is for this proxy's web page in a current browser, " +
		"which says where a post comes from (Origin, Sec-Fetch-Site), and this request does not; " +
		"a script starts a sync with POST /api/v1/sync"}
}

// loopbackDenial says why r does not get loopback trust, or nil when it does.
// It does not look at Origin: see crossOrigin.
func (o Options) loopbackDenial(r *http.Request) *denial {
	const noToken = "no admin_token is configured, so writes are accepted only from a client on the proxy's own host"
	if !peerIsLoopback(r) {
		return &denial{status: http.StatusUnauthorized, reason: noToken + " (loopback); set auth.admin_token to write from elsewhere"}
	}
	if h := forwardedBy(r); h != "" {
		// h is a name of forwardingHeaders, not the request's text.
		return &denial{status: http.StatusForbidden, reason: fmt.Sprintf("%s, and this request came through a proxy (it carries %s); "+
			"set auth.admin_token to write through a proxy", noToken, h)}
	}
	if !o.ownHost(r.Host) {
		return &denial{status: http.StatusForbidden, reason: noToken + ", and the Host this request names is neither a loopback " +
			"name (localhost, 127.0.0.1, [::1]) nor public_url's host; a page of another site can reach 127.0.0.1 under its own name; " +
			"use http://localhost:PORT or set auth.admin_token", detail: "Host " + shortQuote(r.Host)}
	}
	return nil
}

// writeFormShown says whether the page offers its sync form to r: with an admin
// token always (the form asks for it), else to whom loopback trust would let write.
func (o Options) writeFormShown(r *http.Request) bool {
	return o.AdminToken != "" || o.loopbackDenial(r) == nil
}

// hasAdminToken: Authorization: Bearer <admin token>, compared in constant time.
func (o Options) hasAdminToken(r *http.Request) bool {
	tok := bearer(r)
	return o.AdminToken != "" && tok != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(o.AdminToken)) == 1
}

// bearer is the token of "Authorization: Bearer <token>", or "".
func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) < 7 || !strings.EqualFold(h[:7], "bearer ") {
		return ""
	}
	return strings.TrimSpace(h[7:])
}

func peerIsLoopback(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// forwardedBy names the first forwarding header r carries, or "".
func forwardedBy(r *http.Request) string {
	for _, h := range forwardingHeaders {
		if len(r.Header.Values(h)) > 0 {
			return h
		}
	}
	return ""
}

// ownHost says whether a Host header names this proxy from its own host: a
// loopback name or address, or public_url's host, with or without a port.
// Hostnames alone are compared: a rebinding page cannot choose its name.
func (o Options) ownHost(hostport string) bool {
	h := hostname(hostport)
	if h == "" {
		return false
	}
	if h == "localhost" {
		return true
	}
	if ip := net.ParseIP(h); ip != nil && ip.IsLoopback() {
		return true
	}
	if o.PublicURL != "" {
		if u, err := url.Parse(o.PublicURL); err == nil && u.Hostname() != "" {
			return h == strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
		}
	}
	return false
}

// hostname is the host of a Host header without port or brackets, lower case,
// without a trailing dot.
func hostname(hostport string) string {
	h := hostport
	if strings.HasPrefix(h, "[") {
		end := strings.IndexByte(h, ']')
		if end < 0 {
			return ""
		}
		h = h[1:end]
	} else if strings.Count(h, ":") == 1 {
		h, _, _ = strings.Cut(h, ":")
	}
	return strings.TrimSuffix(strings.ToLower(h), ".")
}

// crossOrigin says why r comes from a page other than this proxy's own, or nil.
// Sec-Fetch-Site must be same-origin or none when present; Origin, when present,
// must be this request's own scheme://host or public_url's origin. "null" (a
// sandboxed frame, a file, a redirect from elsewhere) is no origin to trust.
func crossOrigin(r *http.Request, publicURL string) *denial {
	for _, s := range r.Header.Values("Sec-Fetch-Site") {
		if s != "same-origin" && s != "none" {
			return &denial{status: http.StatusForbidden, reason: "a write from another site's page is refused " +
				"(Sec-Fetch-Site is not same-origin); use this proxy's own page, or a script with the admin token",
				detail: "Sec-Fetch-Site " + shortQuote(s)}
		}
	}
	for _, origin := range r.Header.Values("Origin") {
		got, ok := normalOrigin(origin)
		if ok && (got == requestOrigin(r) || (publicURL != "" && got == mustOrigin(publicURL))) {
			continue
		}
		own := requestOrigin(r)
		if publicURL != "" {
			own += " or " + mustOrigin(publicURL)
		}
		return &denial{status: http.StatusForbidden, reason: "a write from another site's page is refused " +
			"(its Origin is not this proxy's origin); behind a reverse proxy, set public_url to the address the browser uses",
			detail: fmt.Sprintf("Origin %s, own %s", shortQuote(origin), own)}
	}
	return nil
}

// requestOrigin is the origin r was sent to: its scheme (TLS here, or a
// TLS-terminating proxy's X-Forwarded-Proto) and its Host.
func requestOrigin(r *http.Request) string {
	o, _ := normalOrigin(scheme(r) + "://" + r.Host)
	return o
}

func mustOrigin(raw string) string {
	o, _ := normalOrigin(raw)
	return o
}

// normalOrigin is scheme://host[:port] of an http(s) URL, lower case, without
// the scheme's default port, as browsers serialize an origin.
func normalOrigin(raw string) (string, bool) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", false
	}
	scheme := strings.ToLower(u.Scheme)
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if (scheme == "http" && port == "80") || (scheme == "https" && port == "443") {
		port = ""
	}
	if port != "" {
		return scheme + "://" + net.JoinHostPort(host, port), true
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return scheme + "://" + host, true
}

// shortQuote quotes a header value for a message, cut short: the value is the
// client's, and only needs to be recognisable.
func shortQuote(s string) string {
	if len(s) > 80 {
		s = s[:80] + "..."
	}
	return strconv.Quote(s)
}

func (o Options) logger() *slog.Logger {
	if o.Logger != nil {
		return o.Logger
	}
	return slog.Default()
}

// logDenial records a refused write: who, where, why; never a credential (the
// reason has none, and no header but those it names is read).
func (o Options) logDenial(r *http.Request, d *denial) {
	args := []any{"method", r.Method, "path", r.URL.Path, "peer", r.RemoteAddr, "host", r.Host,
		"status", d.status, "reason", d.reason}
	if d.detail != "" {
		args = append(args, "detail", d.detail)
	}
	o.logger().Info("admin: write refused", args...)
}
