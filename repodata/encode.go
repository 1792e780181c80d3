package repodata

import (
	"bufio"
	"encoding/json"
	"io"
	"strconv"
)

// Encode writes d as repodata.json: info (without base_url), "packages",
// "packages.conda", "removed", "repodata_version" and the extra keys. Each record is
// written with the bytes upstream gave it, one record a line, so the output stays
// diffable and streams without building the document in memory.
//
// at, if not nil, is told the byte offset of each record's JSON in the output, so a
// caller can later read one record back without parsing the whole document.
func Encode(w io.Writer, d *Doc, at func(r *Record, offset int64)) error {
	cw := &offsetWriter{w: w}
	bw := bufio.NewWriterSize(cw, 256<<10)
	bw.WriteString(`{"info":{`)
	for i, m := range d.Info {
		if i > 0 {
			bw.WriteByte(',')
		}
		writeKey(bw, m.Key)
		bw.Write(m.Raw)
	}
	bw.WriteString("},\n")
	for _, conda := range []bool{false, true} {
		if conda {
			bw.WriteString(`"packages.conda":{`)
		} else {
			bw.WriteString(`"packages":{`)
		}
		first := true
		for _, r := range d.Records {
			if r.Conda != conda {
				continue
			}
			if !first {
				bw.WriteByte(',')
			}
			first = false
			bw.WriteByte('\n')
			writeKey(bw, r.Filename)
			if at != nil {
				at(r, cw.n+int64(bw.Buffered()))
			}
			bw.Write(r.Raw)
		}
		bw.WriteString("\n},\n")
	}
	bw.WriteString(`"removed":[`)
	for i, fn := range d.Removed {
		if i > 0 {
			bw.WriteByte(',')
		}
		writeString(bw, fn)
	}
	bw.WriteString("],\n")
	version := d.Version
	if version == 0 {
		version = 1
	}
	bw.WriteString(`"repodata_version":`)
	bw.WriteString(strconv.FormatInt(version, 10))
	for _, m := range d.Extra {
		bw.WriteString(",\n")
		writeKey(bw, m.Key)
		bw.Write(m.Raw)
	}
	bw.WriteString("}\n")
	return bw.Flush()
}

// offsetWriter counts what passed through it.
type offsetWriter struct {
	w io.Writer
	n int64
}

func (o *offsetWriter) Write(p []byte) (int, error) {
	n, err := o.w.Write(p)
	o.n += int64(n)
	return n, err
}

func writeKey(w *bufio.Writer, k string) {
	writeString(w, k)
	w.WriteByte(':')
}

func writeString(w *bufio.Writer, s string) {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x80 {
			b, _ := json.Marshal(s)
			w.Write(b)
			return
		}
	}
	w.WriteByte('"')
	w.WriteString(s)
	w.WriteByte('"')
}

// Empty returns an empty repodata document for subdir. It is what the proxy serves
// for a noarch that no upstream has: conda clients refuse a channel without one.
func Empty(subdir string) *Doc {
	raw, _ := json.Marshal(subdir)
	return &Doc{Info: []Member{{"subdir", raw}}, Version: 1}
}

// Merge is the union of the docs of a channel's upstreams, in the upstreams' order:
// where two hold the same filename the first wins, and each record remembers which
// upstream it came from. A nil doc (an upstream that has no such subdir) is skipped.
func Merge(docs []*Doc) *Doc {
	var out *Doc
	seen := map[string]bool{}
	removed := map[string]bool{}
	for i, d := range docs {
		if d == nil {
			continue
		}
		if out == nil {
			out = &Doc{Info: d.Info, Version: d.Version, Extra: d.Extra}
		}
		if d.Version > out.Version {
			out.Version = d.Version
		}
		for _, r := range d.Records {
			if seen[r.Filename] {
				continue
			}
			seen[r.Filename] = true
			cp := *r
			cp.Upstream = i
			out.Records = append(out.Records, &cp)
		}
		for _, fn := range d.Removed {
			if !removed[fn] {
				removed[fn] = true
				out.Removed = append(out.Removed, fn)
			}
		}
	}
	return out
}
