package bench

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
)

// nameRE is a compacted record's "name" member.
var nameRE = regexp.MustCompile(`"name":"([^"]*)"`)

// ScaleOptions shape a scaled document.
type ScaleOptions struct {
	// RenameCopies makes every copy after the first a package of its own (name
	// "<name>_c<N>"), so the document has as many names as conda-forge's instead
	// of src's few (what sharding is about); the first copy keeps the real
	// names, so src's dependency closures still hold.
	RenameCopies bool
	// Touch, when set, says which copies get one more member in each record:
	// the same document with those copies' records changed (a revalidation).
	Touch func(copyN int) bool
}

// ScaleRepodata writes a repodata.json of about target bytes made of src's
// records, repeated with a copy number in each filename; half the bytes in each
// section, as in conda-forge today.
func ScaleRepodata(src, dst string, target int64, o ScaleOptions) (int64, int, error) {
	data, err := os.ReadFile(src)
	if err != nil {
		return 0, 0, err
	}
	var doc struct {
		Packages      map[string]json.RawMessage `json:"packages"`
		PackagesConda map[string]json.RawMessage `json:"packages.conda"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return 0, 0, err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return 0, 0, err
	}
	f, err := os.Create(dst)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	w := bufio.NewWriterSize(f, 1<<20)
	cw := &counter{w: w}
	records := 0
	fmt.Fprint(cw, `{"info":{"subdir":"linux-64"},`+"\n")
	ext := regexp.MustCompile(`(\.tar\.bz2|\.conda)$`)
	for _, section := range []struct {
		name  string
		recs  map[string]json.RawMessage
		limit int64 // half the target in each section, as in conda-forge today
	}{{"packages", doc.Packages, target / 2}, {"packages.conda", doc.PackagesConda, target}} {
		type rec struct {
			stem, ext string
			raw       []byte
		}
		var recs []rec
		// In filename order, as conda-forge's are, and the same every run.
		for _, fn := range slices.Sorted(maps.Keys(section.recs)) {
			raw := section.recs[fn]
			var compact bytes.Buffer
			json.Compact(&compact, raw)
			m := ext.FindStringIndex(fn)
			recs = append(recs, rec{fn[:m[0]], fn[m[0]:], compact.Bytes()})
		}
		fmt.Fprintf(cw, "%q:{", section.name)
		first := true
		for copyN := 0; len(recs) > 0 && cw.n < section.limit; copyN++ {
			for _, r := range recs {
				if !first {
					cw.Write([]byte(",\n"))
				}
				first = false
				fmt.Fprintf(cw, "%q:", r.stem+"_c"+strconv.Itoa(copyN)+r.ext)
				raw := r.raw
				if o.RenameCopies && copyN > 0 {
					raw = nameRE.ReplaceAll(raw, []byte(`"name":"${1}_c`+strconv.Itoa(copyN)+`"`))
				}
				if o.Touch != nil && o.Touch(copyN) {
					raw = append([]byte(`{"x_bench_touched":1,`), raw[1:]...)
				}
				cw.Write(raw)
				records++
			}
		}
		fmt.Fprint(cw, "},\n")
	}
	fmt.Fprint(cw, `"removed":[],"repodata_version":1}`+"\n")
	if err := w.Flush(); err != nil {
		return 0, 0, err
	}
	return cw.n, records, nil
}

type counter struct {
	w io.Writer
	n int64
}

func (c *counter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
