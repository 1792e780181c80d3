package mirror

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
)

// manifestIndex is a manifest as an import holds it while it reads the tar:
// every file's path, size and sha256, and whether the tar has held it yet. It
// is decoded one file at a time, never as a whole document, and kept compact
// (the paths in one string, the digests as bytes, no map), so that its memory
// is that of the files it lists, under the bytes of the manifest itself.
type manifestIndex struct {
	paths string // every path, end to end; files[i] is paths[off:off+n]
	files []indexedFile
}

type indexedFile struct {
	off, n uint32
	size   int64
	sha    [32]byte
	seen   bool // the tar held it
}

func (x *manifestIndex) path(i int) string {
	f := &x.files[i]
	return x.paths[f.off : f.off+f.n]
}

// file is entry i as a ManifestFile, for the checks and messages of one entry.
func (x *manifestIndex) file(i int) ManifestFile {
	f := &x.files[i]
	return ManifestFile{Path: x.path(i), Size: f.size, SHA256: hex.EncodeToString(f.sha[:])}
}

// find is the index of path, which is sorted by path.
func (x *manifestIndex) find(p string) (int, bool) {
	return slices.BinarySearchFunc(x.files, p, func(f indexedFile, p string) int {
		return strings.Compare(x.paths[f.off:f.off+f.n], p)
	})
}

// missing is the first path in order the tar did not hold, and how many.
func (x *manifestIndex) missing() (first string, n int) {
	for i := range x.files {
		if !x.files[i].seen {
			if n == 0 {
				first = x.path(i)
			}
			n++
		}
	}
	return first, n
}

// readManifest decodes manifest.json from r, checking every file's entry as it
// comes: a path inside the tree, a size, a sha256, each path once, and no more
// than maxFiles of them, refused as soon as there is one more, so that memory
// stays at the bound whatever the manifest lists.
func readManifest(r io.Reader, maxFiles int) (*manifestIndex, error) {
	notManifest := func(err error) error {
		if rerr := sourceError(err); rerr != nil {
			return fmt.Errorf("reading %s from the tar: %w", ManifestName, rerr)
		}
		return refuse("%s is not a condaproxy export manifest: %v", ManifestName, err)
	}
	dec := json.NewDecoder(r)
	if tok, err := dec.Token(); err != nil {
		return nil, notManifest(err)
	} else if tok != json.Delim('{') {
		return nil, notManifest(fmt.Errorf("not a JSON object"))
	}
	var (
		format  string
		version int
		gotList bool
		paths   strings.Builder
	)
	x := &manifestIndex{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, notManifest(err)
		}
		key, _ := tok.(string)
		// Member names match as encoding/json matches them to Manifest's fields.
		switch strings.ToLower(key) {
		case "format":
			err = dec.Decode(&format)
		case "version":
			err = dec.Decode(&version)
		case "files":
			if gotList {
				return nil, refuse("%s lists its files twice", ManifestName)
			}
			gotList = true
			err = x.readFiles(dec, &paths, maxFiles)
		default: // created, source, delta: for people, not for the import
			var skip json.RawMessage
			err = dec.Decode(&skip)
		}
		if err != nil {
			if errors.Is(err, ErrRefused) {
				return nil, err
			}
			return nil, notManifest(err)
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, notManifest(err)
	}
	if format != manifestFormat {
		return nil, refuse("%s is not a condaproxy export manifest: format %q", ManifestName, format)
	}
	if version > manifestVersion {
		return nil, refuse("export format version %d is newer than this condaproxy reads (%d)", version, manifestVersion)
	}
	x.paths = paths.String()
	slices.SortFunc(x.files, func(a, b indexedFile) int {
		return strings.Compare(x.paths[a.off:a.off+a.n], x.paths[b.off:b.off+b.n])
	})
	for i := 1; i < len(x.files); i++ {
		if x.path(i) == x.path(i-1) {
			return nil, refuse("manifest names %s twice", x.path(i))
		}
	}
	return x, nil
}

// readFiles decodes the files array one entry at a time into x, the paths into
// paths.
func (x *manifestIndex) readFiles(dec *json.Decoder, paths *strings.Builder, maxFiles int) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if tok == nil { // "files": null, an export of nothing
		return nil
	}
	if tok != json.Delim('[') {
		return fmt.Errorf("files is not a list")
	}
	for dec.More() {
		if len(x.files) == maxFiles {
			return refuse("%s lists more than %d files, more than one import takes: export the channels in several tars (--channel), or in increments (--delta)",
				ManifestName, maxFiles)
		}
		// Size is a pointer so that an entry without one is told from a size 0.
		var f struct {
			Path   string `json:"path"`
			Size   *int64 `json:"size"`
			SHA256 string `json:"sha256"`
		}
		if err := dec.Decode(&f); err != nil {
			return err
		}
		if !cleanTarPath(f.Path) {
			return refuse("manifest names a path outside the tree: %q", f.Path)
		}
		// Every entry is checked against the manifest: one without its size or
		// sha256 would pass whatever bytes the tar holds under its name.
		if f.Size == nil || *f.Size < 0 {
			return refuse("manifest entry %s: no size, or a negative one; every file needs its size", f.Path)
		}
		var sum [32]byte
		if len(f.SHA256) != 2*len(sum) {
			return refuse("manifest entry %s: sha256 %q is not 64 hex digits; every file needs its sha256", f.Path, f.SHA256)
		}
		if _, err := hex.Decode(sum[:], []byte(f.SHA256)); err != nil {
			return refuse("manifest entry %s: sha256 %q is not 64 hex digits; every file needs its sha256", f.Path, f.SHA256)
		}
		if paths.Len()+len(f.Path) > 1<<32-1 {
			return refuse("%s: its paths add up to more than 4 GiB", ManifestName) // unreachable under maxManifest
		}
		x.files = append(x.files, indexedFile{off: uint32(paths.Len()), n: uint32(len(f.Path)), size: *f.Size, sha: sum})
		paths.WriteString(f.Path)
	}
	_, err = dec.Token() // the closing bracket
	return err
}
