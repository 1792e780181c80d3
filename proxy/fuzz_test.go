package proxy

import (
	"bufio"
	"net/http"
	"path"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/condaproxy/condaproxy/config"
	"github.com/condaproxy/condaproxy/repodata"
)

// fuzzRouteServer is a Server with a conda channel, a channel whose name holds a
// '/', and a kind: files channel. parseRoute needs no store and no upstream.
func fuzzRouteServer(tb testing.TB) *Server {
	tb.Helper()
	yaml := `channels:
  - name: fmt
    upstreams: [{url: "http://127.0.0.1:1/fmt"}]
  - name: pkgs/main
    upstreams: [{url: "http://127.0.0.1:1/main"}]
  - name: inst
    kind: files
    upstreams: [{url: "http://127.0.0.1:1/inst"}]
`
	cfg, err := config.Parse("fuzz.yaml", []byte(yaml), func(string) (string, bool) { return "", false })
	if err != nil {
		tb.Fatal(err)
	}
	s, err := New(Options{Config: cfg, Metrics: NewMetrics(prometheus.NewRegistry(), nil)})
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// FuzzRoute: whatever request target a client sends, a path cleanPath accepts is
// canonical and stays inside the tree, and a route never names a file outside its
// channel. This is the property that keeps every later file lookup safe.
func FuzzRoute(f *testing.F) {
	for _, seed := range append(traversalTargets,
		// Valid paths of every kind.
		"/fmt/linux-64/repodata.json",
		"/fmt/osx-64/repodata.json.zst",
		"/fmt/noarch/current_repodata.json",
		"/fmt/osx-64/zlib-1.2.11-h1de35cc_3.conda",
		"/pkgs/main/win-64/zlib-1.2.11-h62dcd97_3.tar.bz2",
		"/pkgs/main/linux-64/shards/abc.msgpack.zst",
		"/fmt/channeldata.json",
		"/fmt/osx-64/patch_instructions.json",
		"/t/tok/fmt/osx-64/zlib-1.2.11-h1de35cc_3.conda",
		"/inst/Miniconda3-latest-Linux-x86_64.sh",
		"/inst/sub/dir/installer.exe",
		"/inst/..x/y..",
		"/healthz",
		"*",
		"/fmt/linux-64/.conda",
		"/fmt/linux-64/%2Econda",
	) {
		f.Add(seed)
	}
	s := fuzzRouteServer(f)
	f.Fuzz(func(t *testing.T, target string) {
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader("GET " + target + " HTTP/1.1\r\nHost: x\r\n\r\n")))
		if err != nil {
			return // net/http refuses it before any handler sees it
		}
		p, err := cleanPath(req)
		if err != nil {
			return
		}
		if !strings.HasPrefix(p, "/") {
			t.Fatalf("%q: accepted path %q is not absolute", target, p)
		}
		for _, seg := range strings.Split(p[1:], "/") {
			if seg == "." || seg == ".." {
				t.Fatalf("%q: accepted path %q has a dot segment", target, p)
			}
		}
		if strings.Contains(p, "//") || strings.Contains(p, "\\") {
			t.Fatalf("%q: accepted path %q has an empty segment or a backslash", target, p)
		}
		for i := 0; i < len(p); i++ {
			if p[i] < 0x20 || p[i] == 0x7f {
				t.Fatalf("%q: accepted path %q has control byte %#x", target, p, p[i])
			}
		}
		// Canonical: no two spellings reach one file.
		if clean := path.Clean(p); clean != strings.TrimSuffix(p, "/") && p != "/" {
			t.Fatalf("%q: accepted path %q is not canonical (%q)", target, p, clean)
		}

		rt, ok, err := s.parseRoute(p)
		if !ok || err != nil {
			return
		}
		if rt.channel == nil {
			t.Fatalf("%q: route without a channel: %+v", target, rt)
		}
		inner := p
		if rt.token != "" {
			inner = strings.TrimPrefix(p, "/t/"+rt.token)
		}
		if !strings.HasPrefix(inner, "/"+rt.channel.cfg.Name+"/") {
			t.Fatalf("%q: path %q routed to channel %q outside its tree", target, p, rt.channel.cfg.Name)
		}
		if rt.file == "" && rt.kind != kindShards {
			t.Fatalf("%q: %v route with no file", target, rt.kind)
		}
		for _, seg := range strings.Split(rt.file, "/") {
			if seg == ".." || seg == "." {
				t.Fatalf("%q: route file %q has a dot segment", target, rt.file)
			}
		}
		if strings.HasPrefix(rt.file, "/") {
			t.Fatalf("%q: route file %q is absolute", target, rt.file)
		}
		if rt.subdir != "" && !config.SubdirPattern.MatchString(rt.subdir) {
			t.Fatalf("%q: route subdir %q is not a subdir", target, rt.subdir)
		}
		switch rt.kind {
		case kindPackage:
			if !repodata.ValidFilename(rt.file) || strings.Contains(rt.file, "/") {
				t.Fatalf("%q: package route file %q is not a package filename", target, rt.file)
			}
			if rt.subdir == "" {
				t.Fatalf("%q: package route without a subdir", target)
			}
		case kindRepodata:
			if rt.variant == "" || rt.subdir == "" {
				t.Fatalf("%q: repodata route %+v", target, rt)
			}
		case kindFile:
			if rt.channel.cfg.Kind != config.KindFiles {
				t.Fatalf("%q: file route on a conda channel", target)
			}
		}
		if rt.channel.cfg.Kind == config.KindFiles && rt.kind != kindFile {
			t.Fatalf("%q: a files channel routed as %v", target, rt.kind)
		}
	})
}
