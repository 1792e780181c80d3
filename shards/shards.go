// Package shards encodes sharded repodata (CEP-16): a small index of package
// names and, per name, one shard holding that name's records. The proxy builds
// them from the records it serves (the filtered repodata.json of a subdir), never
// from upstream's shards, so a hidden record is in no shard and no URL in them
// points past the proxy.
//
// What clients parse, and so what this package writes (see the CEP-16 notes in
// the project's research): zstd-compressed msgpack; a record's sha256 and md5 as
// raw bytes (rattler refuses hex strings); both "packages" and
// "packages.conda" always present (conda indexes them directly); the index's
// info.created_at an RFC 3339 string (rattler refuses an integer); base_url
// and shards_base_url relative, so a /t/<token>/ path and a proxy in front keep
// working. The bytes are deterministic: the same records give the same shard
// (sorted keys, one compression setting), so a name whose records did not
// change keeps its shard, and its URL, across index updates.
package shards

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/condaproxy/condaproxy/repodata"
)

// The relative URLs every index carries: packages beside the index, shards in
// shards/ below it. mamba strips a leading "./" and resolves under the subdir;
// rattler joins per RFC 3986 against the index URL: both land here.
const (
	BaseURL       = "./"
	ShardsBaseURL = "./shards/"
)

// encodingVersion names how Encode writes a shard; change it with any change
// to its output, so that kept shards are encoded again (Fingerprint).
const encodingVersion = "condaproxy-shards-1"

// Decompression bounds, as conda sets them: a client refuses more, and so does
// every reader here.
const (
	MaxIndexSize = 128 << 20
	MaxShardSize = 16 << 20
)

// Record is one record of a served document, as Group found it. Filename and
// Raw alias the document.
type Record struct {
	Filename string
	Raw      []byte // the record's JSON
	Conda    bool   // in "packages.conda"
}

// Group reads a repodata.json document and returns its records by package
// name, in document order. The names are copies; the records alias doc, which
// must stay mapped and unchanged (a memory map of the served file, say) while
// they are used.
func Group(doc []byte) (map[string][]Record, error) {
	// Pointers, so that a name is stored once, as a copy: assigning to a map
	// under an existing key stores the new key string, which here would alias
	// doc and outlive its mapping.
	byName := map[string]*[]Record{}
	_, err := repodata.Scan(doc, func(r *repodata.Record) error {
		if r.Name == "" {
			return fmt.Errorf("shards: record %q has no name", r.Filename)
		}
		recs, ok := byName[r.Name]
		if !ok {
			recs = new([]Record)
			byName[strings.Clone(r.Name)] = recs
		}
		*recs = append(*recs, Record{Filename: r.Filename, Raw: r.Raw, Conda: r.Conda})
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make(map[string][]Record, len(byName))
	for name, recs := range byName {
		out[name] = *recs
	}
	return out, nil
}

// Fingerprint is what decides whether a name's shard must be encoded again:
// the sha256 of its records as served, in (section, filename) order, as the
// shard holds them whatever the document's order. Equal fingerprints give equal
// shards.
func Fingerprint(recs []Record) [32]byte {
	// What Encode writes is part of what a name's shard is: a new encoding
	// (this package's, or the compressor's) makes every shard anew.
	recs = slices.Clone(recs)
	slices.SortFunc(recs, func(a, b Record) int {
		if a.Conda != b.Conda {
			if a.Conda {
				return 1
			}
			return -1
		}
		return strings.Compare(a.Filename, b.Filename)
	})
	h := sha256.New()
	h.Write([]byte(encodingVersion))
	var n [8]byte
	for _, r := range recs {
		section := byte('b')
		if r.Conda {
			section = 'c'
		}
		h.Write([]byte{section})
		for _, part := range [][]byte{[]byte(r.Filename), r.Raw} {
			putLen(n[:], len(part))
			h.Write(n[:])
			h.Write(part)
		}
	}
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}

func putLen(b []byte, n int) {
	for i := range 8 {
		b[i] = byte(uint64(n) >> (8 * i))
	}
}

// One encoder for every shard: the same settings, so the same bytes. EncodeAll
// is safe for concurrent use.
var encoder, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault),
	zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(true))

// Encode returns the shard of one name's records: zstd(msgpack) of
// {packages, packages.conda, removed}, keys sorted at every level.
func Encode(recs []Record) ([]byte, error) {
	tarBz2, conda := map[string]any{}, map[string]any{}
	for _, r := range recs {
		rec, err := record(r.Raw)
		if err != nil {
			return nil, fmt.Errorf("shards: record %q: %w", r.Filename, err)
		}
		if r.Conda {
			conda[r.Filename] = rec
		} else {
			tarBz2[r.Filename] = rec
		}
	}
	return compress(map[string]any{"packages": tarBz2, "packages.conda": conda, "removed": []string{}})
}

// EncodeIndex returns the index of a subdir's shards: name → sha256 of the
// shard's bytes as served (compressed, as rattler-index names them).
func EncodeIndex(subdir string, createdAt time.Time, shards map[string][32]byte) ([]byte, error) {
	names := make(map[string]any, len(shards))
	for name, sum := range shards {
		names[name] = sum[:]
	}
	return compress(map[string]any{
		"version": 1,
		"info": map[string]any{
			"subdir":          subdir,
			"base_url":        BaseURL,
			"shards_base_url": ShardsBaseURL,
			"created_at":      createdAt.UTC().Format(time.RFC3339),
		},
		"shards": names,
	})
}

func compress(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.SetSortMapKeys(true)
	enc.UseCompactInts(true)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return encoder.EncodeAll(buf.Bytes(), nil), nil
}

// record turns one record's JSON into its msgpack form: numbers stay integers
// where they are, sha256 and md5 become raw bytes. A digest that is not valid
// hex of its length is left out: rattler would refuse the whole shard over it,
// and the proxy refuses to fetch a file it cannot verify anyway.
func record(raw []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	for k, v := range m {
		m[k] = value(v)
	}
	// Old records say "noarch": true; mamba reads only a string there, and
	// conda means "generic" by it.
	if b, ok := m["noarch"].(bool); ok {
		if b {
			m["noarch"] = "generic"
		} else {
			delete(m, "noarch")
		}
	}
	for key, size := range map[string]int{"sha256": 32, "md5": 16} {
		s, ok := m[key].(string)
		if !ok {
			delete(m, key)
			continue
		}
		b, err := hex.DecodeString(strings.ToLower(s))
		if err != nil || len(b) != size {
			delete(m, key)
			continue
		}
		m[key] = b
	}
	return m, nil
}

// value converts what encoding/json decoded (with UseNumber) to what msgpack
// should write: integers as integers, the rest as JSON has it.
func value(v any) any {
	switch t := v.(type) {
	case json.Number:
		if i, err := t.Int64(); err == nil {
			return i
		}
		if f, err := t.Float64(); err == nil && !math.IsInf(f, 0) {
			return f
		}
		return t.String()
	case map[string]any:
		for k, x := range t {
			t[k] = value(x)
		}
		return t
	case []any:
		for i, x := range t {
			t[i] = value(x)
		}
		return t
	}
	return v
}

// Index is a decoded shard index.
type Index struct {
	Version int               `msgpack:"version"`
	Info    IndexInfo         `msgpack:"info"`
	Shards  map[string][]byte `msgpack:"shards"`
}

// IndexInfo is the index's info.
type IndexInfo struct {
	Subdir        string `msgpack:"subdir"`
	BaseURL       string `msgpack:"base_url"`
	ShardsBaseURL string `msgpack:"shards_base_url"`
	CreatedAt     string `msgpack:"created_at"`
}

// Shard is a decoded shard.
type Shard struct {
	Packages      map[string]map[string]any `msgpack:"packages"`
	PackagesConda map[string]map[string]any `msgpack:"packages.conda"`
	Removed       []string                  `msgpack:"removed"`
}

// ErrTooLarge is a compressed index or shard that expands past its bound.
var ErrTooLarge = errors.New("shards: decompressed size past the limit")

func decompress(b []byte, limit uint64) ([]byte, error) {
	dec, err := zstd.NewReader(nil, zstd.WithDecoderMaxMemory(limit), zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderMaxWindow(limit))
	if err != nil {
		return nil, err
	}
	defer dec.Close()
	out, err := dec.DecodeAll(b, nil)
	if errors.Is(err, zstd.ErrDecoderSizeExceeded) || errors.Is(err, zstd.ErrWindowSizeExceeded) {
		return nil, ErrTooLarge
	}
	return out, err
}

// DecodeIndex reads an index as a client does, within conda's bounds.
func DecodeIndex(b []byte) (*Index, error) {
	raw, err := decompress(b, MaxIndexSize)
	if err != nil {
		return nil, err
	}
	var ix Index
	if err := msgpack.Unmarshal(raw, &ix); err != nil {
		return nil, err
	}
	for name, sum := range ix.Shards {
		if len(sum) != sha256.Size {
			return nil, fmt.Errorf("shards: index names a %d-byte hash for %q", len(sum), name)
		}
	}
	return &ix, nil
}

// DecodeShard reads a shard as a client does, within conda's bounds.
func DecodeShard(b []byte) (*Shard, error) {
	raw, err := decompress(b, MaxShardSize)
	if err != nil {
		return nil, err
	}
	var sh Shard
	if err := msgpack.Unmarshal(raw, &sh); err != nil {
		return nil, err
	}
	return &sh, nil
}

// Build makes every shard of doc (a repodata.json) and its index at once, for
// a writer with no earlier shards to keep (an export). Each shard is handed to
// put with the lower-case hex sha256 that names it, in name order, before the
// index that names it is returned.
func Build(doc []byte, subdir string, createdAt time.Time, put func(sum string, shard []byte) error) ([]byte, error) {
	groups, err := Group(doc)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(groups))
	for name := range groups {
		names = append(names, name)
	}
	slices.Sort(names)
	index := make(map[string][32]byte, len(names))
	for _, name := range names {
		b, err := Encode(groups[name])
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256(b)
		if err := put(hex.EncodeToString(sum[:]), b); err != nil {
			return nil, err
		}
		index[name] = sum
	}
	return EncodeIndex(subdir, createdAt, index)
}
