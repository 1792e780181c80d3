package repodata

import (
	"io"
	"strings"
)

// WriteCurrent writes current_repodata.json made from the repodata.json in data:
// for each package name, the records of its newest version (every build, both
// archive formats). cmp orders two version strings as conda does and must be total.
// It streams: two passes over data, one map of names.
func WriteCurrent(w io.Writer, data []byte, cmp func(a, b string) int) error {
	newest := map[string]string{}
	head, err := Scan(data, func(r *Record) error {
		if v, ok := newest[r.Name]; !ok || cmp(r.Version, v) > 0 {
			newest[strings.Clone(r.Name)] = strings.Clone(r.Version)
		}
		return nil
	})
	if err != nil {
		return err
	}
	enc := NewEncoder(w, &Doc{Info: head.Info, Version: head.Version})
	for _, conda := range []bool{false, true} {
		enc.Section(conda)
		if _, err := Scan(data, func(r *Record) error {
			if r.Conda == conda && cmp(r.Version, newest[r.Name]) == 0 {
				enc.Record(r)
			}
			return nil
		}); err != nil {
			return err
		}
	}
	return enc.Close()
}
