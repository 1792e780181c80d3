package upstream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// An upstream's redirect may lead anywhere the upstream likes: a CDN, or a cloud
// store's signed URL for a private channel's package. It must not lead the proxy
// to an address inside its own network (a metadata service, an admin port on
// loopback): that would turn any upstream, or anyone between it and the proxy
// over plain http, into a reader of internal services. So internal addresses are
// reached only for hosts the configuration names (an upstream's own host, or one
// of its hosts: list), which is how a mirror on the LAN or a test on loopback
// works.

// trustKey carries, in a request's context, the Source it is made for: its
// hosts are the trusted ones for that request and every redirect it follows.
type trustKey struct{}

func withSource(ctx context.Context, src Source) context.Context {
	return context.WithValue(ctx, trustKey{}, src)
}

// trusts reports whether host (a name or address, with no port) is one the
// configuration names for src: its base's host or one of its Hosts.
func (src Source) trusts(host string) bool {
	host = canonicalName(strings.Trim(host, "[]"))
	if src.Base != nil && canonicalName(strings.Trim(src.Base.Hostname(), "[]")) == host {
		return true
	}
	for _, h := range src.Hosts {
		name := h
		if hn, _, err := net.SplitHostPort(h); err == nil {
			name = hn
		}
		if canonicalName(strings.Trim(name, "[]")) == host {
			return true
		}
	}
	return false
}

func trustedIn(ctx context.Context, host string) bool {
	src, ok := ctx.Value(trustKey{}).(Source)
	return ok && src.trusts(host)
}

// internal reports whether ip is an address of the proxy's own network: a place
// no untrusted host may send it.
func internal(ip netip.Addr) bool {
	ip = ip.Unmap()
	return ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsUnspecified() || ip.IsMulticast() || ip.IsInterfaceLocalMulticast() ||
		cgnat.Contains(ip) || !ip.IsValid()
}

var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// errInternal refuses a connection to an internal address for an untrusted host.
var errInternal = errors.New("refused: the host is not a configured upstream and its address is internal")

// checkTarget refuses a redirect to an untrusted host written as an internal
// address, or named "localhost". A name that resolves to an internal address is
// refused by the dialer (guardedDial), where the address is known for sure.
func checkTarget(ctx context.Context, u *url.URL) error {
	host := u.Hostname()
	if trustedIn(ctx, host) {
		return nil
	}
	if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") || strings.HasSuffix(strings.ToLower(strings.TrimSuffix(host, ".")), ".localhost") {
		return fmt.Errorf("redirect to %s: %w", host, errInternal)
	}
	if ip, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil && internal(ip) {
		return fmt.Errorf("redirect to %s: %w", host, errInternal)
	}
	return nil
}

// guardedDial resolves addr itself and dials one of its addresses, refusing
// internal ones unless the host is trusted. Dialing the address it checked (not
// the name again) leaves no room for a DNS answer that changes in between.
func guardedDial(d *net.Dialer) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		if trustedIn(ctx, host) {
			return d.DialContext(ctx, network, addr)
		}
		ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		if err != nil {
			return nil, err
		}
		var lastErr error = fmt.Errorf("%s: %w", host, errInternal)
		for _, ip := range ips {
			if internal(ip) {
				continue
			}
			conn, err := d.DialContext(ctx, network, net.JoinHostPort(ip.Unmap().String(), port))
			if err == nil {
				return conn, nil
			}
			lastErr = err
		}
		return nil, lastErr
	}
}

// defaultDialer is the dialer of the default transport.
func defaultDialer() *net.Dialer {
	return &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
}

// label is the host name a metric may carry: one src trusts, or "other", so
// that redirects to ever new hosts cannot grow the metrics without bound.
func (src Source) label(hostport string) string {
	name := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		name = h
	}
	if src.trusts(name) {
		return strings.ToLower(hostport)
	}
	return "other"
}
