package proxy

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/condaproxy/condaproxy/internal/testdata"
	"github.com/condaproxy/condaproxy/shards"
)

// servedRecords is a served repodata.json's records, by section then filename,
// as JSON decodes them.
func servedRecords(t *testing.T, body []byte) map[string]map[string]any {
	t.Helper()
	var doc struct {
		Packages      map[string]map[string]any `json:"packages"`
		PackagesConda map[string]map[string]any `json:"packages.conda"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]any{}
	for fn, r := range doc.Packages {
		out["packages/"+fn] = r
	}
	for fn, r := range doc.PackagesConda {
		out["packages.conda/"+fn] = r
	}
	return out
}

// jsonish turns a shard record's msgpack values into what the same record
// decodes to from JSON: digests as hex, every number a float64.
func jsonish(v any) any {
	switch t := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, x := range t {
			if b, ok := x.([]byte); ok && (k == "sha256" || k == "md5") {
				out[k] = hex.EncodeToString(b)
				continue
			}
			out[k] = jsonish(x)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, x := range t {
			out[i] = jsonish(x)
		}
		return out
	case int8, int16, int32, int64, uint8, uint16, uint32, uint64, float32:
		var f float64
		fmt.Sscan(fmt.Sprint(t), &f)
		return f
	}
	return v
}

// checkShards fetches prefix+subdir's index and every shard it names, checks
// each the way a client reads it (and as SPEC says it is served), and checks
// that together they hold exactly the records of the served repodata.json. It
// returns the index's name → shard hash.
func checkShards(t *testing.T, h *harness, prefix, subdir string) map[string]string {
	t.Helper()
	base := prefix + "/" + subdir + "/"
	r := h.get(base + "repodata_shards.msgpack.zst")
	if r.StatusCode != 200 {
		t.Fatalf("%s index: %d %s", subdir, r.StatusCode, r.body)
	}
	if cc := r.Header.Get("Cache-Control"); !strings.Contains(cc, "max-age=") || strings.Contains(cc, "immutable") {
		t.Errorf("index Cache-Control %q: want a short max-age", cc)
	}
	etag := r.Header.Get("ETag")
	if etag == "" {
		t.Fatal("index has no ETag")
	}
	if r2 := h.get(base+"repodata_shards.msgpack.zst", "If-None-Match: "+etag); r2.StatusCode != http.StatusNotModified {
		t.Errorf("index with If-None-Match: %d, want 304", r2.StatusCode)
	}
	if r2 := h.do(http.MethodHead, base+"repodata_shards.msgpack.zst"); r2.StatusCode != 200 {
		t.Errorf("HEAD index: %d (mamba probes with HEAD)", r2.StatusCode)
	}
	ix, err := shards.DecodeIndex(r.body)
	if err != nil {
		t.Fatalf("%s index: %v", subdir, err)
	}
	if ix.Version != 1 || ix.Info.Subdir != subdir || ix.Info.BaseURL != "./" || ix.Info.ShardsBaseURL != "./shards/" {
		t.Errorf("index head: version %d, info %+v", ix.Version, ix.Info)
	}
	if _, err := time.Parse(time.RFC3339, ix.Info.CreatedAt); err != nil {
		t.Errorf("info.created_at %q is not RFC 3339: %v", ix.Info.CreatedAt, err)
	}
	want := servedRecords(t, h.get(base+"repodata.json").body)
	got := map[string]map[string]any{}
	names := map[string]string{}
	for name, sum := range ix.Shards {
		hexSum := hex.EncodeToString(sum)
		names[name] = hexSum
		sr := h.get(base + "shards/" + hexSum + ".msgpack.zst")
		if sr.StatusCode != 200 {
			t.Fatalf("shard of %s: %d %s", name, sr.StatusCode, sr.body)
		}
		if got := sha256hex(sr.body); got != hexSum {
			t.Errorf("shard of %s: bytes hash to %s, named %s", name, got, hexSum)
		}
		if cc := sr.Header.Get("Cache-Control"); cc != "public, max-age=31536000, immutable" {
			t.Errorf("shard Cache-Control %q", cc)
		}
		sh, err := shards.DecodeShard(sr.body)
		if err != nil {
			t.Fatalf("shard of %s: %v", name, err)
		}
		if sh.Packages == nil || sh.PackagesConda == nil {
			t.Errorf("shard of %s: packages %v, packages.conda %v: both must be present", name, sh.Packages != nil, sh.PackagesConda != nil)
		}
		for section, recs := range map[string]map[string]map[string]any{"packages": sh.Packages, "packages.conda": sh.PackagesConda} {
			for fn, rec := range recs {
				if rec["name"] != name {
					t.Errorf("%s in the shard of %s is named %v", fn, name, rec["name"])
				}
				for _, k := range []string{"sha256", "md5"} {
					if v, ok := rec[k]; ok {
						if b, isBytes := v.([]byte); !isBytes || (k == "sha256" && len(b) != 32) || (k == "md5" && len(b) != 16) {
							t.Errorf("%s: %s is %T, want raw bytes", fn, k, v)
						}
					}
				}
				got[section+"/"+fn] = jsonish(rec).(map[string]any)
			}
		}
	}
	if len(got) != len(want) {
		t.Errorf("%s: shards hold %d records, repodata.json %d", subdir, len(got), len(want))
	}
	for k, w := range want {
		g, ok := got[k]
		if !ok {
			t.Errorf("%s: %s is served but in no shard", subdir, k)
			continue
		}
		if !reflect.DeepEqual(g, w) {
			t.Errorf("%s: %s differs:\nshard %v\njson  %v", subdir, k, g, w)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: %s is in a shard but not served", subdir, k)
		}
	}
	return names
}

// The shards of real channels under a filter hold exactly the served records,
// read as a client reads them; a hidden record is in none.
func TestShardsAgreeWithRepodata(t *testing.T) {
	dir := testdata.Path(t, "cf-subchannel-py39")
	up := newUpstream(t, dir)
	h := newHarness(t, fltYAML(up.URL, `platforms: [linux-64, osx-arm64]
python_versions: ["3.9"]
license_blacklist: [GPL]
blacklist: ["openssl <3"]`))
	for _, sd := range []string{"linux-64", "osx-arm64", "noarch"} {
		t.Run(sd, func(t *testing.T) {
			_, hidden := fltPolicySets(t, h, dir, sd)
			if len(hidden) == 0 {
				t.Fatal("degenerate: nothing hidden")
			}
			names := checkShards(t, h, "/fmt", sd)
			if len(names) < 10 {
				t.Fatalf("only %d names", len(names))
			}
			// Hidden means hidden everywhere: openssl 1.x in no shard.
			if sum, ok := names["openssl"]; ok {
				sh, _ := shards.DecodeShard(h.get("/fmt/" + sd + "/shards/" + sum + ".msgpack.zst").body)
				for fn := range sh.PackagesConda {
					if _, isHidden := hidden[fn]; isHidden {
						t.Errorf("hidden %s is in the openssl shard", fn)
					}
				}
				for fn := range sh.Packages {
					if _, isHidden := hidden[fn]; isHidden {
						t.Errorf("hidden %s is in the openssl shard", fn)
					}
				}
			}
		})
	}
	// Outside platforms, an unknown hash, a malformed name: 404, revalidated.
	for _, p := range []string{"/fmt/win-64/repodata_shards.msgpack.zst", "/fmt/linux-64/shards/" + strings.Repeat("ab", 32) + ".msgpack.zst",
		"/fmt/linux-64/shards/nothex.msgpack.zst", "/fmt/linux-64/shards/"} {
		r := h.get(p)
		if r.StatusCode != http.StatusNotFound || r.Header.Get("Cache-Control") != "no-cache" {
			t.Errorf("%s: %d, Cache-Control %q; want 404, no-cache", p, r.StatusCode, r.Header.Get("Cache-Control"))
		}
	}
}

// conda_format_repo serves its own shards, with hex-string hashes rattler
// refuses: the proxy never passes them on, and a subdir upstream lacks is 404.
func TestShardsNeverPassedThrough(t *testing.T) {
	up := newUpstream(t, formatRepo(t))
	h := newHarness(t, channelYAML("", up.URL))
	// A sync warms the index before any client asks (mirror.ShardWarmer).
	if err := h.srv.WarmShards(context.Background(), "fmt", "linux-64"); err != nil {
		t.Fatal(err)
	}
	if tb, err := h.srv.shardTableOf(h.srv.channels["fmt"].subdir("linux-64")); err != nil || tb == nil || len(tb.state.Names) == 0 {
		t.Fatalf("after WarmShards: table %v, %v", tb, err)
	}
	for _, sd := range []string{"linux-64", "noarch", "osx-64"} {
		checkShards(t, h, "/fmt", sd)
	}
	h.get("/fmt/linux-64/shards/2dcdacf7009b4f1c21f452c5079384340257e0e1cbecb8ec484984d1fa85b115.msgpack.zst")
	for _, req := range up.requests() {
		if strings.Contains(req, "shards") || strings.Contains(req, "msgpack") {
			t.Errorf("upstream was asked for %s", req)
		}
	}
	r := h.get("/fmt/linux-aarch64/repodata_shards.msgpack.zst")
	if r.StatusCode != http.StatusNotFound || r.Header.Get("Cache-Control") != "no-cache" {
		t.Errorf("a subdir upstream lacks: %d, Cache-Control %q; want 404, no-cache", r.StatusCode, r.Header.Get("Cache-Control"))
	}
}

// Behind a client token the relative URLs keep the token path; without it the
// index is 401 like repodata.json.
func TestShardsUnderToken(t *testing.T) {
	up := newUpstream(t, formatRepo(t))
	h := newHarness(t, channelYAML("auth:\n  tokens: [sekrit-token-1]\n", up.URL))
	checkShards(t, h, "/t/sekrit-token-1/fmt", "linux-64")
	if r := h.get("/fmt/linux-64/repodata_shards.msgpack.zst"); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("index without a token: %d, want 401", r.StatusCode)
	}
}

// A refresh that changes one name's records encodes that shard alone; the
// others keep their hash; the replaced shard stays served for a week after the
// index that named it was replaced, then goes; all of it survives a restart.
func TestShardsAcrossRefresh(t *testing.T) {
	dir := fltCopyDir(t, formatRepo(t))
	// Upstream's document as encoding/json writes it, from the start: the
	// edits below then change the bytes of one name's records only.
	path := filepath.Join(dir, "linux-64", "repodata.json")
	var doc map[string]any
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	data, _ = json.Marshal(doc)
	os.WriteFile(path, data, 0o644)
	os.Remove(path + ".zst")
	up := newUpstream(t, dir)
	h := newHarness(t, channelYAML("", up.URL))
	before := checkShards(t, h, "/fmt", "linux-64")
	if len(before) < 2 {
		t.Fatalf("degenerate: %d names", len(before))
	}
	sd := h.srv.channels["fmt"].subdir("linux-64")
	table, err := h.srv.shardTableOf(sd)
	if err != nil || table == nil {
		t.Fatalf("shard table: %v", err)
	}
	firstPack := map[string]string{}
	for name, e := range table.state.Names {
		firstPack[name] = e.Pack
	}
	// Change the records of one name upstream: drop one of its files.
	changed := ""
	for _, section := range []string{"packages.conda", "packages"} {
		recs, _ := doc[section].(map[string]any)
		fns := slices.Sorted(func(yield func(string) bool) {
			for fn := range recs {
				if !yield(fn) {
					return
				}
			}
		})
		for _, fn := range fns {
			name := recs[fn].(map[string]any)["name"].(string)
			if changed == "" || name == changed {
				changed = name
				delete(recs, fn)
				break
			}
		}
		if changed != "" {
			break
		}
	}
	out, _ := json.Marshal(doc)
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
	// Later than the copy the proxy holds, to the second: not a 304.
	os.Chtimes(path, time.Now().Add(time.Hour), time.Now().Add(time.Hour))
	p2Revalidate(t, h, "fmt", "linux-64")
	waitFor(t, "the new index", func() bool {
		ix, err := shards.DecodeIndex(h.get("/fmt/linux-64/repodata_shards.msgpack.zst").body)
		return err == nil && hex.EncodeToString(ix.Shards[changed]) != before[changed]
	})
	after := checkShards(t, h, "/fmt", "linux-64")
	for name, sum := range before {
		if name != changed && after[name] != sum {
			t.Errorf("%s did not change but its shard did: %s -> %s", name, sum, after[name])
		}
	}
	// Incremental: the unchanged names' shards are where the first build put
	// them; only the changed name's is new.
	table, _ = h.srv.shardTableOf(sd)
	for name, e := range table.state.Names {
		if (e.Pack == firstPack[name]) != (name != changed) {
			t.Errorf("%s: pack %s, first build's %s (changed name: %s)", name, e.Pack, firstPack[name], changed)
		}
	}
	old := "/fmt/linux-64/shards/" + before[changed] + ".msgpack.zst"
	h.restart()
	if r := h.get(old); r.StatusCode != 200 {
		t.Fatalf("the replaced shard, after a restart: %d; want it kept for a week", r.StatusCode)
	}
	checkShards(t, h, "/fmt", "linux-64")
	// Eight days on, the next index drops it.
	h.clock.advance(8 * 24 * time.Hour)
	// Another change of the same name, so another index names another shard.
	for _, section := range []string{"packages.conda", "packages"} {
		recs, _ := doc[section].(map[string]any)
		for _, rec := range recs {
			if rec.(map[string]any)["name"] == changed {
				rec.(map[string]any)["x_test_marker"] = 1
			}
		}
	}
	out, _ = json.Marshal(doc)
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(path, time.Now().Add(2*time.Hour), time.Now().Add(2*time.Hour))
	p2Revalidate(t, h, "fmt", "linux-64")
	waitFor(t, "the next index", func() bool {
		ix, err := shards.DecodeIndex(h.get("/fmt/linux-64/repodata_shards.msgpack.zst").body)
		return err == nil && hex.EncodeToString(ix.Shards[changed]) != after[changed]
	})
	if r := h.get("/fmt/linux-64/shards/" + after[changed] + ".msgpack.zst"); r.StatusCode != 200 {
		t.Errorf("the shard the previous index named: %d, want 200", r.StatusCode)
	}
	if r := h.get(old); r.StatusCode != http.StatusNotFound {
		t.Errorf("a shard replaced 8 days ago: %d, want 404", r.StatusCode)
	}
	// With no further build, clean drops what has not been named for a week.
	if packs, _, err := h.srv.CleanShards("fmt"); err != nil || packs != 0 {
		t.Errorf("clean right after the build: %d packs, %v; want none", packs, err)
	}
	h.clock.advance(8 * 24 * time.Hour)
	packs, size, err := h.srv.CleanShards("fmt")
	if err != nil || packs != 1 || size <= 0 {
		t.Errorf("clean a week on: %d packs (%d bytes), %v; want the one pack of the replaced shard", packs, size, err)
	}
	if r := h.get("/fmt/linux-64/shards/" + after[changed] + ".msgpack.zst"); r.StatusCode != http.StatusNotFound {
		t.Errorf("a shard no index named for 8 days, after clean: %d, want 404", r.StatusCode)
	}
	checkShards(t, h, "/fmt", "linux-64")
}

// A shard an older index named, whose record the filter hides now (a policy
// tightened since), is not served: hidden means hidden in every shard.
func TestShardsOldShardHiddenNow(t *testing.T) {
	up := newUpstream(t, formatRepo(t))
	h := newHarness(t, channelYAML("", up.URL))
	before := checkShards(t, h, "/fmt", "linux-64")
	old := before["zlib"]
	if old == "" {
		t.Fatalf("degenerate: no zlib shard in %v", before)
	}
	h.stop()
	h.yaml = channelYAML("", up.URL) + "    blacklist: [\"zlib 1.2.11\"]\n"
	h.start()
	after := checkShards(t, h, "/fmt", "linux-64")
	if after["zlib"] == old {
		t.Fatal("degenerate: the zlib shard did not change with the filter")
	}
	if r := h.get("/fmt/linux-64/shards/" + old + ".msgpack.zst"); r.StatusCode != http.StatusNotFound {
		t.Errorf("the old zlib shard, its records hidden now: %d, want 404", r.StatusCode)
	}
}

// An index that cannot be made while repodata.json is served (here: one
// name's records past what a client takes in one shard) answers 404, GET and
// HEAD alike, so clients fall back to repodata.json; it never answers 200 cut
// short or a 5xx.
func TestShardsUnmakeableIndexIs404(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "noarch"), 0o755)
	var b strings.Builder
	b.WriteString(`{"info":{"subdir":"noarch"},"packages":{},"packages.conda":{`)
	pad := strings.Repeat("x", 1000)
	for i := 0; b.Len() < shards.MaxShardSize+(1<<20); i++ {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `"huge-1.%d-0.conda":{"name":"huge","version":"1.%d","build":"0","build_number":0,"depends":[],"size":1,"sha256":"%s","description":"%s"}`,
			i, i, strings.Repeat("ab", 32), pad)
	}
	b.WriteString(`}}`)
	os.WriteFile(filepath.Join(dir, "noarch", "repodata.json"), []byte(b.String()), 0o644)
	up := newUpstream(t, dir)
	h := newHarness(t, channelYAML("", up.URL))
	if r := h.get("/fmt/noarch/repodata.json"); r.StatusCode != 200 {
		t.Fatalf("repodata.json: %d", r.StatusCode)
	}
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		r := h.do(method, "/fmt/noarch/repodata_shards.msgpack.zst")
		if r.StatusCode != http.StatusNotFound || r.Header.Get("Cache-Control") != "no-cache" {
			t.Errorf("%s index: %d, Cache-Control %q; want 404, no-cache", method, r.StatusCode, r.Header.Get("Cache-Control"))
		}
	}
}

// A pack gone from the data directory (a hand cleaning it) costs one 404: the
// subdir's shards are made again, and every shard of the new index is served.
func TestShardsLostPackHeals(t *testing.T) {
	up := newUpstream(t, formatRepo(t))
	h := newHarness(t, channelYAML("", up.URL))
	before := checkShards(t, h, "/fmt", "linux-64")
	packs, _ := filepath.Glob(filepath.Join(h.data, "files", "shards-*"))
	if len(packs) == 0 {
		t.Fatalf("no pack under %s", h.data)
	}
	for _, p := range packs {
		// Through the store, so that its memory tier forgets them too.
		if err := h.store.RemoveFile(filepath.Base(p)); err != nil {
			t.Fatal(err)
		}
	}
	var name string
	for n := range before {
		name = n
		break
	}
	if r := h.get("/fmt/linux-64/shards/" + before[name] + ".msgpack.zst"); r.StatusCode != http.StatusNotFound {
		t.Errorf("a shard whose pack is gone: %d, want 404 (not a 500)", r.StatusCode)
	}
	checkShards(t, h, "/fmt", "linux-64")
}
