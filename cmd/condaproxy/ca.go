package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"

	"github.com/condaproxy/condaproxy/forward"
)

// cmdCA is `condaproxy ca init [-o DIR] [--force]`: a new CA for forward-proxy
// mode, and the client settings that trust it.
func cmdCA(_ context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "init" {
		return usageErr("ca: want `ca init [-o DIR] [--force]`")
	}
	fs := newFlags("ca init", stderr)
	dir := fs.String("o", ".", "directory to write ca.pem and ca-key.pem to")
	force := fs.Bool("force", false, "replace a CA already there (every client must then trust the new one)")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErr("ca init: unexpected argument %q", fs.Arg(0))
	}
	certPath, keyPath, err := forward.InitCA(*dir, *force)
	if errors.Is(err, forward.ErrExists) {
		return &exitError{1, err}
	}
	if err != nil {
		return err
	}
	abs, err := filepath.Abs(certPath)
	if err != nil {
		abs = certPath
	}
	absKey, _ := filepath.Abs(keyPath)
	fmt.Fprintf(stdout, `wrote %s (give it to clients) and %s (mode 0600: keep it on the proxy)

condaproxy.yaml:
  forward_proxy:
    listen: ":3128"
    ca_cert: %s
    ca_key: %s
    other_hosts: deny          # or tunnel

Clients, for a proxy at http://condaproxy.internal:3128:

conda / mamba (.condarc):
  proxy_servers:
    http: http://condaproxy.internal:3128
    https: http://condaproxy.internal:3128
  ssl_verify: %s

pixi (and rattler): environment
  export https_proxy=http://condaproxy.internal:3128   # lowercase: pixi reads http_proxy only so
  export http_proxy=http://condaproxy.internal:3128
  export SSL_CERT_FILE=%s

pip-style (requests):
  export HTTPS_PROXY=http://condaproxy.internal:3128
  export REQUESTS_CA_BUNDLE=%s

With client tokens (auth.tokens), put the token as the proxy password:
  http://conda:<token>@condaproxy.internal:3128
`, abs, absKey, abs, absKey, abs, abs, abs)
	return nil
}
