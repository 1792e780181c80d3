// Package bench holds condaproxy's benchmarks: Go benchmarks of the hot request path
// (bench_test.go) and a wrk load harness against nginx and a bare Go server
// (./load). See README.md.
//
// This file builds the benchmark channel both share: a tiny conda channel on disk
// with one 1 MiB package whose true sha256 and size are in a ~4 KiB
// linux-64/repodata.json, and an empty noarch/repodata.json.
package bench

import (
	"bytes"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Channel is a benchmark channel on disk. Paths are slash-separated, relative to
// Dir (and to the channel's URL).
type Channel struct {
	Dir string

	// Pkg is the 1 MiB package, e.g. "linux-64/bigpkg-1.0-h0_0.conda".
	Pkg       string
	PkgBytes  []byte
	PkgSHA256 string

	// Repodata is the ~4 KiB "linux-64/repodata.json" listing Pkg.
	Repodata       string
	RepodataBytes  []byte
	RepodataSHA256 string

	// Noarch is "noarch/repodata.json" (no records).
	Noarch string
}

// ChannelName is the proxy's name for the benchmark channel: its files are at
// /bench/<subdir>/<file>.
const ChannelName = "bench"

// PkgSize is the size of the benchmark package: exactly 1 MiB.
const PkgSize = 1 << 20

// BuildChannel writes the benchmark channel into dir (created if needed). The
// package bytes are pseudo-random from a fixed seed, so every run serves the same
// file.
func BuildChannel(dir string) (*Channel, error) {
	c := &Channel{
		Dir:      dir,
		Pkg:      "linux-64/bigpkg-1.0-h0_0.conda",
		Repodata: "linux-64/repodata.json",
		Noarch:   "noarch/repodata.json",
	}
	rng := rand.New(rand.NewChaCha8([32]byte{'c', 'o', 'n', 'd', 'a', 'p', 'r', 'o', 'x', 'y'}))
	c.PkgBytes = make([]byte, PkgSize)
	for i := 0; i < len(c.PkgBytes); i += 8 {
		v := rng.Uint64()
		for j := 0; j < 8; j++ {
			c.PkgBytes[i+j] = byte(v >> (8 * j))
		}
	}
	c.PkgSHA256 = SHA256(c.PkgBytes)
	pkgMD5 := md5.Sum(c.PkgBytes)

	// The document is written the way the proxy's encoder writes it (info, one record
	// a line, "removed", "repodata_version"), so a filter that keeps everything
	// serves the very same bytes and every server in the comparison sends one file.
	rec := func(name, build, sha, md5hex string, size int64) string {
		return fmt.Sprintf(`{"build":%q,"build_number":0,"depends":["python >=3.9","libzlib >=1.3.1,<2.0a0"],`+
			`"license":"BSD-3-Clause","license_family":"BSD","md5":%q,"name":%q,"sha256":%q,"size":%d,`+
			`"subdir":"linux-64","timestamp":1700000000000,"version":"1.0"}`, build, md5hex, name, sha, size)
	}
	var b strings.Builder
	b.WriteString(`{"info":{"subdir":"linux-64"},` + "\n")
	b.WriteString(`"packages":{` + "\n},\n")
	b.WriteString(`"packages.conda":{`)
	b.WriteString("\n\"" + filepath.Base(c.Pkg) + "\":" +
		rec("bigpkg", "h0_0", c.PkgSHA256, hex.EncodeToString(pkgMD5[:]), PkgSize))
	// Filler records (never fetched) bring the document to about 4 KiB.
	for i := 0; b.Len() < 4096-400; i++ {
		fake := sha256.Sum256([]byte(fmt.Sprint("filler", i)))
		fakeMD5 := md5.Sum([]byte(fmt.Sprint("filler", i)))
		name := fmt.Sprintf("filler%02d", i)
		b.WriteString(",\n\"" + name + "-1.0-h0_0.conda\":" +
			rec(name, "h0_0", hex.EncodeToString(fake[:]), hex.EncodeToString(fakeMD5[:]), int64(1000+i)))
	}
	b.WriteString("\n},\n")
	b.WriteString(`"removed":[],` + "\n")
	b.WriteString(`"repodata_version":1}` + "\n")
	c.RepodataBytes = []byte(b.String())
	c.RepodataSHA256 = SHA256(c.RepodataBytes)

	noarch := `{"info":{"subdir":"noarch"},` + "\n" + `"packages":{` + "\n},\n" +
		`"packages.conda":{` + "\n},\n" + `"removed":[],` + "\n" + `"repodata_version":1}` + "\n"

	for rel, data := range map[string][]byte{
		c.Pkg:      c.PkgBytes,
		c.Repodata: c.RepodataBytes,
		c.Noarch:   []byte(noarch),
	} {
		p := c.Path(rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Path is the file of rel on disk.
func (c *Channel) Path(rel string) string { return filepath.Join(c.Dir, filepath.FromSlash(rel)) }

// SHA256 is the hex sha256 of b.
func SHA256(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// BareHandler is the bare ServeContent handler of the comparison (also used by
// ./load): /<channel>/<rel> or /<rel>.
func BareHandler(ch *Channel, modTime time.Time) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rel := strings.TrimPrefix(strings.TrimPrefix(r.URL.Path, "/"+ChannelName), "/")
		switch rel {
		case ch.Repodata:
			w.Header().Set("Content-Type", "application/json")
			http.ServeContent(w, r, "", modTime, bytes.NewReader(ch.RepodataBytes))
		case ch.Pkg:
			file, err := os.Open(ch.Path(rel))
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			defer file.Close()
			info, err := file.Stat()
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			w.Header().Set("Content-Type", "application/octet-stream")
			http.ServeContent(w, r, "", info.ModTime(), file)
		default:
			http.NotFound(w, r)
		}
	})
}
