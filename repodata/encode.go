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
// diffable.
//
// at, if not nil, is told the byte offset of each record's JSON in the output, so a
// caller can later read one record back without parsing the whole document.
func Encode(w io.Writer, d *Doc, at func(r *Record, offset int64)) error {
	e := NewEncoder(w, d)
	for _, conda := range []bool{false, true} {
		e.Section(conda)
		for _, r := range d.Records {
			if r.Conda == conda {
				off := e.Record(r)
				if at != nil {
					at(r, off)
				}
			}
		}
	}
	return e.Close()
}

// Encoder writes a repodata.json one record at a time, so a filtered document
// streams to disk without being built in memory. Call Section(false), the
// "packages" records, Section(true), the "packages.conda" records, then Close.
type Encoder struct {
	cw      *offsetWriter
	bw      *bufio.Writer
	head    *Doc
	section int // 0: none yet, 1: packages, 2: packages.conda
	first   bool
}

// NewEncoder starts a document whose info, removed, version and extra keys are
// head's (its Records are ignored).
func NewEncoder(w io.Writer, head *Doc) *Encoder {
	cw := &offsetWriter{w: w}
	e := &Encoder{cw: cw, bw: bufio.NewWriterSize(cw, 256<<10), head: head}
	e.bw.WriteString(`{"info":{`)
	for i, m := range head.Info {
		if i > 0 {
			e.bw.WriteByte(',')
		}
		writeKey(e.bw, m.Key)
		e.bw.Write(m.Raw)
	}
	e.bw.WriteString("},\n")
	return e
}

// Section opens "packages" (conda false) or "packages.conda" (conda true).
func (e *Encoder) Section(conda bool) {
	want := 1
	if conda {
		want = 2
	}
	for e.section < want {
		if e.section > 0 {
			e.bw.WriteString("\n},\n")
		}
		e.section++
		if e.section == 1 {
			e.bw.WriteString(`"packages":{`)
		} else {
			e.bw.WriteString(`"packages.conda":{`)
		}
		e.first = true
	}
}

// Record writes r in the open section and returns the offset of its JSON.
func (e *Encoder) Record(r *Record) int64 {
	if !e.first {
		e.bw.WriteByte(',')
	}
	e.first = false
	e.bw.WriteByte('\n')
	writeKey(e.bw, r.Filename)
	off := e.cw.n + int64(e.bw.Buffered())
	e.bw.Write(r.Raw)
	return off
}

// Close ends the document and flushes it.
func (e *Encoder) Close() error {
	e.Section(true)
	e.bw.WriteString("\n},\n")
	e.bw.WriteString(`"removed":[`)
	for i, fn := range e.head.Removed {
		if i > 0 {
			e.bw.WriteByte(',')
		}
		writeString(e.bw, fn)
	}
	e.bw.WriteString("],\n")
	version := e.head.Version
	if version == 0 {
		version = 1
	}
	e.bw.WriteString(`"repodata_version":`)
	e.bw.WriteString(strconv.FormatInt(version, 10))
	for _, m := range e.head.Extra {
		e.bw.WriteString(",\n")
		writeKey(e.bw, m.Key)
		e.bw.Write(m.Raw)
	}
	e.bw.WriteString("}\n")
	return e.bw.Flush()
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
