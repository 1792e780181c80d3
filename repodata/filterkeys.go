package repodata

import (
	"bufio"
	"io"
)

// FilterPackages copies a document shaped like repodata.json (run_exports.json:
// {"info":…, "packages": {filename: …}, "packages.conda": {…}}) to w, keeping in
// "packages" and "packages.conda" only the filenames keep accepts. Other keys are
// copied as written. The input must be valid JSON; it is checked on the way.
func FilterPackages(w io.Writer, data []byte, keep func(filename string) bool) error {
	s := &scanner{data: data, view: true}
	bw := bufio.NewWriterSize(w, 64<<10)
	bw.WriteByte('{')
	first := true
	err := s.object(func(key string) error {
		if !first {
			bw.WriteString(",\n")
		}
		first = false
		writeKey(bw, key)
		if (key != "packages" && key != "packages.conda") || s.peek() != '{' {
			raw, err := s.raw()
			bw.Write(raw)
			return err
		}
		bw.WriteByte('{')
		firstRec := true
		err := s.object(func(fn string) error {
			raw, err := s.raw()
			if err != nil || !keep(fn) {
				return err
			}
			if !firstRec {
				bw.WriteByte(',')
			}
			firstRec = false
			bw.WriteByte('\n')
			writeKey(bw, fn)
			bw.Write(raw)
			return nil
		})
		bw.WriteString("\n}")
		return err
	})
	if err != nil {
		return err
	}
	if s.ws(); s.pos < len(s.data) {
		return s.errorf("data after the document")
	}
	bw.WriteString("}\n")
	return bw.Flush()
}
