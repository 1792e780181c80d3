package bench

import (
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
)

// MissChannel is a channel of many distinct 1 MiB packages, for timing cache
// misses: every package is asked for once per trial, so each trial needs files no
// proxy has seen. All are listed (true sha256, md5, size) in one
// linux-64/repodata.json; noarch/repodata.json is empty.
type MissChannel struct {
	Dir      string
	Repodata string // "linux-64/repodata.json"
	Noarch   string // "noarch/repodata.json"
	Pkgs     []MissPkg
}

// MissPkg is one package of a MissChannel.
type MissPkg struct {
	Path   string // slash-separated, relative to Dir: "linux-64/misspkg007-1.0-h0_0.conda"
	SHA256 string
	Size   int64
}

// MissChannelName is the proxy's name for the miss channel in the replica harness.
const MissChannelName = "miss"

// BuildMissChannel writes n packages of exactly 1 MiB (pseudo-random bytes, a
// fixed seed per index, so every run serves the same files) and their repodata
// into dir.
func BuildMissChannel(dir string, n int) (*MissChannel, error) {
	if n < 1 || n > 10000 {
		return nil, fmt.Errorf("BuildMissChannel: n = %d, want 1..10000", n)
	}
	c := &MissChannel{Dir: dir, Repodata: "linux-64/repodata.json", Noarch: "noarch/repodata.json"}
	if err := os.MkdirAll(filepath.Join(dir, "linux-64"), 0o755); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "noarch"), 0o755); err != nil {
		return nil, err
	}
	var b strings.Builder
	b.WriteString(`{"info":{"subdir":"linux-64"},` + "\n" + `"packages":{` + "\n},\n" + `"packages.conda":{`)
	buf := make([]byte, PkgSize)
	for i := 0; i < n; i++ {
		rng := rand.New(rand.NewChaCha8([32]byte{'m', 'i', 's', 's', byte(i), byte(i >> 8)}))
		for j := 0; j < len(buf); j += 8 {
			v := rng.Uint64()
			for k := 0; k < 8; k++ {
				buf[j+k] = byte(v >> (8 * k))
			}
		}
		name := fmt.Sprintf("misspkg%04d", i)
		file := name + "-1.0-h0_0.conda"
		p := MissPkg{Path: "linux-64/" + file, SHA256: SHA256(buf), Size: PkgSize}
		if err := os.WriteFile(filepath.Join(dir, filepath.FromSlash(p.Path)), buf, 0o644); err != nil {
			return nil, err
		}
		sum := md5.Sum(buf)
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, "\n%q:{\"build\":\"h0_0\",\"build_number\":0,\"depends\":[],\"license\":\"BSD-3-Clause\","+
			"\"md5\":%q,\"name\":%q,\"sha256\":%q,\"size\":%d,\"subdir\":\"linux-64\",\"timestamp\":1700000000000,"+
			"\"version\":\"1.0\"}", file, hex.EncodeToString(sum[:]), name, p.SHA256, p.Size)
		c.Pkgs = append(c.Pkgs, p)
	}
	b.WriteString("\n},\n" + `"removed":[],` + "\n" + `"repodata_version":1}` + "\n")
	if err := os.WriteFile(filepath.Join(dir, "linux-64", "repodata.json"), []byte(b.String()), 0o644); err != nil {
		return nil, err
	}
	noarch := `{"info":{"subdir":"noarch"},` + "\n" + `"packages":{` + "\n},\n" +
		`"packages.conda":{` + "\n},\n" + `"removed":[],` + "\n" + `"repodata_version":1}` + "\n"
	if err := os.WriteFile(filepath.Join(dir, "noarch", "repodata.json"), []byte(noarch), 0o644); err != nil {
		return nil, err
	}
	return c, nil
}
