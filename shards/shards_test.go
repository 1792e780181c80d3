package shards

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/condaproxy/condaproxy/internal/testdata"
)

func readDoc(t testing.TB, channel, subdir string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testdata.Path(t, channel), subdir, "repodata.json"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The same records give the same bytes: built twice, and with the records of
// each name in another order, every shard and the index are byte for byte the
// same.
func TestDeterministic(t *testing.T) {
	doc := readDoc(t, "cf-subchannel-py39", "linux-64")
	created := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	build := func() (map[string][]byte, []byte) {
		out := map[string][]byte{}
		ix, err := Build(doc, "linux-64", created, func(sum string, b []byte) error {
			out[sum] = b
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return out, ix
	}
	a, ixa := build()
	b, ixb := build()
	if !bytes.Equal(ixa, ixb) || len(a) != len(b) {
		t.Fatal("two builds of the same document differ")
	}
	for sum, sh := range a {
		if !bytes.Equal(sh, b[sum]) {
			t.Fatalf("shard %s differs between builds", sum)
		}
		if got := sha256.Sum256(sh); hex.EncodeToString(got[:]) != sum {
			t.Fatalf("shard named %s hashes to %x", sum, got)
		}
	}
	groups, err := Group(doc)
	if err != nil {
		t.Fatal(err)
	}
	for name, recs := range groups {
		if len(recs) < 2 {
			continue
		}
		fwd, err := Encode(recs)
		if err != nil {
			t.Fatal(err)
		}
		rev := slices.Clone(recs)
		slices.Reverse(rev)
		back, err := Encode(rev)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(fwd, back) {
			t.Errorf("%s: the shard depends on the order of its records", name)
		}
		if Fingerprint(recs) != Fingerprint(rev) {
			t.Errorf("%s: the fingerprint depends on the order of its records (a reordered upstream would encode every shard again)", name)
		}
	}
}

// What rattler and conda need of a record: digests as raw bytes of their
// size, integers as integers; a digest that is not valid hex is left out
// rather than written as a string a client refuses.
func TestRecordForm(t *testing.T) {
	sha := "8c5ad6b9b4bd1a8ee4ccb16eed4bc6f5e94a2a1a1ba3e68c7ab1e3c3bc5a5d22"
	recs := []Record{
		{Filename: "a-1-0.conda", Conda: true, Raw: []byte(`{"name":"a","version":"1","build":"0","build_number":3,` +
			`"size":123456789012,"timestamp":1700000000000,"sha256":"` + sha + `","md5":"0123456789ABCDEF0123456789abcdef",` +
			`"depends":["b >=1"],"run_exports":{"weak":["a"]},"ratio":0.5,"track_features":null}`)},
		{Filename: "a-2-0.tar.bz2", Raw: []byte(`{"name":"a","version":"2","build":"0","sha256":"not hex","md5":"abcd"}`)},
	}
	b, err := Encode(recs)
	if err != nil {
		t.Fatal(err)
	}
	sh, err := DecodeShard(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(sh.Packages) != 1 || len(sh.PackagesConda) != 1 || sh.Removed == nil {
		t.Fatalf("sections: %d, %d, removed %v", len(sh.Packages), len(sh.PackagesConda), sh.Removed)
	}
	c := sh.PackagesConda["a-1-0.conda"]
	if d, ok := c["sha256"].([]byte); !ok || hex.EncodeToString(d) != sha {
		t.Errorf("sha256: %T %v", c["sha256"], c["sha256"])
	}
	if d, ok := c["md5"].([]byte); !ok || len(d) != 16 {
		t.Errorf("md5 (upper-case hex in the JSON): %T %v", c["md5"], c["md5"])
	}
	for k, want := range map[string]int64{"build_number": 3, "size": 123456789012, "timestamp": 1700000000000} {
		if got, ok := asInt(c[k]); !ok || got != want {
			t.Errorf("%s: %T %v, want the integer %d", k, c[k], c[k], want)
		}
	}
	if f, ok := c["ratio"].(float64); !ok || f != 0.5 {
		t.Errorf("ratio: %T %v", c["ratio"], c["ratio"])
	}
	old := sh.Packages["a-2-0.tar.bz2"]
	if _, ok := old["sha256"]; ok {
		t.Errorf("an invalid sha256 was kept: %v", old["sha256"])
	}
	if _, ok := old["md5"]; ok {
		t.Errorf("a short md5 was kept: %v", old["md5"])
	}
}

func asInt(v any) (int64, bool) {
	switch t := v.(type) {
	case int8:
		return int64(t), true
	case int16:
		return int64(t), true
	case int32:
		return int64(t), true
	case int64:
		return t, true
	case uint8:
		return int64(t), true
	case uint16:
		return int64(t), true
	case uint32:
		return int64(t), true
	case uint64:
		return int64(t), true
	}
	return 0, false
}

// The index a client reads: created_at an RFC 3339 string, relative URLs,
// 32-byte hashes.
func TestIndexForm(t *testing.T) {
	at := time.Date(2026, 12, 1, 10, 30, 0, 0, time.FixedZone("x", 3600))
	b, err := EncodeIndex("noarch", at, map[string][32]byte{"x": sha256.Sum256([]byte("x"))})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := raw.DecodeAll(b, nil)
	raw.Close()
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := msgpack.Unmarshal(plain, &m); err != nil {
		t.Fatal(err)
	}
	info := m["info"].(map[string]any)
	if s, ok := info["created_at"].(string); !ok || s != "2026-12-01T09:30:00Z" {
		t.Errorf("created_at %T %v", info["created_at"], info["created_at"])
	}
	if info["base_url"] != "./" || info["shards_base_url"] != "./shards/" || info["subdir"] != "noarch" {
		t.Errorf("info %v", info)
	}
	if h, ok := m["shards"].(map[string]any)["x"].([]byte); !ok || len(h) != 32 {
		t.Errorf("hash of x: %T", m["shards"].(map[string]any)["x"])
	}
}

// A small compressed shard that expands past conda's bound is refused, without
// expanding it whole.
func TestDecompressionBound(t *testing.T) {
	big := make([]byte, MaxShardSize+1)
	b := encoder.EncodeAll(big, nil)
	if len(b) > 1<<20 {
		t.Fatalf("degenerate: %d compressed bytes", len(b))
	}
	if _, err := DecodeShard(b); !errors.Is(err, ErrTooLarge) {
		t.Errorf("DecodeShard of %d bytes expanding to %d: %v, want ErrTooLarge", len(b), len(big), err)
	}
}

// FuzzDecode: whatever bytes arrive as an index or a shard (a client's view,
// and the import's), decoding fails cleanly or succeeds; it never panics.
func FuzzDecode(f *testing.F) {
	ix, _ := EncodeIndex("linux-64", time.Unix(0, 0), map[string][32]byte{"a": {}})
	sh, _ := Encode([]Record{{Filename: "a-1-0.conda", Conda: true, Raw: []byte(`{"name":"a","sha256":"00"}`)}})
	f.Add(ix)
	f.Add(sh)
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd})
	f.Fuzz(func(t *testing.T, b []byte) {
		DecodeIndex(b)
		DecodeShard(b)
	})
}

// FuzzBuild: any document the repodata scanner accepts makes shards that
// decode and hold every record once.
func FuzzBuild(f *testing.F) {
	f.Add([]byte(`{"info":{"subdir":"noarch"},"packages":{"a-1-0.tar.bz2":{"name":"a","version":"1","build":"0","build_number":0,"depends":[],"sha256":"zz"}},"packages.conda":{}}`))
	f.Add([]byte(`{"packages.conda":{"b-1-0.conda":{"name":"b","version":"1","build":"0","build_number":0,"depends":["c"],"noarch":true,"x":{"y":[1,2.5,null]}}}}`))
	f.Fuzz(func(t *testing.T, doc []byte) {
		if len(doc) > 64<<10 {
			return // slow inputs add nothing a small one does not; they make the fuzzer miss its deadline
		}
		groups, err := Group(doc)
		if err != nil {
			return
		}
		want := 0
		for _, recs := range groups {
			want += len(recs)
		}
		got := 0
		_, err = Build(doc, "noarch", time.Unix(0, 0), func(sum string, b []byte) error {
			sh, err := DecodeShard(b)
			if err != nil {
				t.Fatalf("a shard made here does not decode: %v", err)
			}
			got += len(sh.Packages) + len(sh.PackagesConda)
			return nil
		})
		if err != nil {
			t.Fatalf("the scanner took the document, Build did not: %v", err)
		}
		if got > want {
			// Fewer is a filename twice in a section (the shard keeps one).
			t.Fatalf("shards hold %d records, the document %d", got, want)
		}
	})
}
