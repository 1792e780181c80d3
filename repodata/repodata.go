// Package repodata reads and writes conda repodata.json documents.
//
// A record keeps the exact bytes upstream wrote for it (Raw), so what the proxy
// serves is what upstream signed off, minus the records a filter hid; only the few
// fields the proxy decides on are decoded. Parsing is strict: a document that is not
// valid JSON, or whose records lack a name, version or build, is an error, because a
// half-read repodata is worse than the last good one. The package does no I/O beyond
// the readers and writers it is given.
//
// Upstream bytes are untrusted: every function that reads JSON here refuses
// nesting past MaxDepth, and DecompressLimit refuses a body that decodes past its
// limit, so neither a deep nor a compressed "repodata" can exhaust the stack or
// memory of the proxy.
package repodata

import (
	"fmt"
	"strings"
)

// Record is one entry of "packages" or "packages.conda".
type Record struct {
	Filename string
	// Raw is the record's JSON exactly as upstream wrote it. It aliases the parsed
	// document's buffer: never modify it.
	Raw []byte

	Name, Version, Build string
	BuildNumber          int64
	Depends, Constrains  []string
	License              string
	LicenseFamily        string
	Timestamp            int64 // as written: milliseconds, or seconds in old records
	Size                 int64 // -1 when upstream gave none
	SHA256, MD5          string
	Subdir               string
	Noarch               string

	// Conda is true for records of "packages.conda".
	Conda bool
	// Upstream is the index, in the channel's upstream list, of the upstream whose
	// record this is; its bytes are fetched from that upstream only.
	Upstream int
}

// Member is one key of a JSON object with its raw value.
type Member struct {
	Key string
	Raw []byte
}

// Doc is one repodata document.
type Doc struct {
	// Info is the "info" object, without base_url (see BaseURL).
	Info []Member
	// BaseURL is info.base_url (CEP-15) as upstream wrote it: where upstream's
	// packages live. The proxy fetches from there and never passes it on, so that no
	// URL a client sees points past the proxy.
	BaseURL string
	// Records holds "packages" then "packages.conda", each in upstream's order.
	Records []*Record
	// Removed is the "removed" list.
	Removed []string
	// Version is repodata_version (0 when absent).
	Version int64
	// Extra holds other top-level keys as written (e.g. signatures). Keys beginning
	// with '_' are conda's local cache bookkeeping (_url, _etag, _mod) and are dropped:
	// they would point clients at upstream.
	Extra []Member
	// CondaFirst is true when "packages.conda" comes before "packages" in the
	// document. Otherwise (conda and rattler write them in that order) one scan
	// visits the records in the order a document is written, sections included.
	CondaFirst bool
}

// Subdir returns info.subdir, or "" when absent.
func (d *Doc) Subdir() string {
	for _, m := range d.Info {
		if m.Key == "subdir" {
			s := &scanner{data: m.Raw}
			v, err := s.str()
			if err == nil {
				return v
			}
		}
	}
	return ""
}

// Parse reads a repodata.json document. The returned Doc aliases data.
func Parse(data []byte) (*Doc, error) {
	var records []*Record
	d, err := Scan(data, func(r *Record) error {
		cp := *r
		cp.Depends = append([]string(nil), r.Depends...)
		cp.Constrains = append([]string(nil), r.Constrains...)
		records = append(records, &cp)
		return nil
	})
	if err != nil {
		return nil, err
	}
	d.Records = records
	return d, nil
}

// Scan reads a repodata.json document and calls visit for each record, in
// document order, without keeping them: the returned Doc has no Records. This is
// how a 300 MB document is filtered in little more memory than its own bytes.
//
// The Record given to visit is reused for the next one, and its strings alias
// data: copy what must outlive the call (strings.Clone), and keep data unchanged
// while any of it is in use. A nil visit reads only the head (records are checked
// for well-formed JSON and skipped).
func Scan(data []byte, visit func(r *Record) error) (*Doc, error) {
	return scan(data, visit, sectionBoth, nil)
}

// ScanSection is Scan restricted to the records of "packages" (conda false) or
// "packages.conda" (conda true); the other section is checked and skipped.
func ScanSection(data []byte, conda bool, visit func(r *Record) error) (*Doc, error) {
	return ScanWith(data, ScanOptions{Section: SectionOf(conda)}, visit)
}

// SectionOf is the ScanOptions.Section of "packages.conda" (conda true) or
// "packages" (conda false).
func SectionOf(conda bool) int {
	if conda {
		return sectionConda
	}
	return sectionTarBz2
}

// ScanOptions are the less common ways to Scan.
type ScanOptions struct {
	// Section is SectionBoth (the zero value), SectionTarBz2 or SectionConda.
	Section int
	// Behind, when set, is called as the scan moves through the records with
	// an offset before which it will not read data again. A caller whose data
	// is a memory map drops those pages (cache.Mapped.Drop), so a scan of a 300 MB
	// document holds a few megabytes of it resident, not all of it. Strings
	// handed to visit may alias dropped pages: reading them again faults the
	// page back in from the file, so they stay correct, only slower.
	Behind func(offset int)
}

// The sections ScanOptions.Section selects.
const (
	SectionBoth   = sectionBoth
	SectionTarBz2 = sectionTarBz2
	SectionConda  = sectionConda
)

// ScanWith is Scan with options.
func ScanWith(data []byte, o ScanOptions, visit func(r *Record) error) (*Doc, error) {
	return scan(data, visit, o.Section, o.Behind)
}

// behindStep is how far a scan moves between two ScanOptions.Behind calls: a
// few syscalls per 100 MB, and a resident window of about this size.
const behindStep = 4 << 20

const (
	sectionBoth = iota
	sectionTarBz2
	sectionConda
)

func scan(data []byte, visit func(r *Record) error, section int, behind func(int)) (*Doc, error) {
	s := &scanner{data: data, view: true}
	told := 0
	d := &Doc{}
	seen := map[string]bool{}
	var r Record
	err := s.object(func(key string) error {
		if seen[key] {
			return s.errorf("top-level key %q given twice", key)
		}
		seen[key] = true
		switch key {
		case "info":
			return s.object(func(k string) error {
				if k == "base_url" {
					v, err := s.optStr("info.base_url")
					d.BaseURL = strings.Clone(v)
					return err
				}
				raw, err := s.raw()
				d.Info = append(d.Info, Member{strings.Clone(k), raw})
				return err
			})
		case "packages", "packages.conda":
			conda := key == "packages.conda"
			if !conda && seen["packages.conda"] {
				d.CondaFirst = true
			}
			if s.peek() == 'n' {
				return s.literal("null")
			}
			skip := visit == nil || (section == sectionTarBz2 && conda) || (section == sectionConda && !conda)
			return s.object(func(fn string) error {
				if behind != nil && s.pos-told >= behindStep {
					told = s.pos
					behind(told)
				}
				if skip {
					return s.skip()
				}
				if err := parseRecord(s, fn, &r); err != nil {
					return err
				}
				r.Conda = conda
				return visit(&r)
			})
		case "removed":
			v, err := s.strList("removed")
			for _, fn := range v {
				d.Removed = append(d.Removed, strings.Clone(fn))
			}
			return err
		case "repodata_version":
			v, err := s.int("repodata_version")
			d.Version = v
			return err
		default:
			raw, err := s.raw()
			if !strings.HasPrefix(key, "_") {
				d.Extra = append(d.Extra, Member{strings.Clone(key), raw})
			}
			return err
		}
	})
	if err != nil {
		return nil, err
	}
	if s.ws(); s.pos < len(s.data) {
		return nil, s.errorf("data after the document")
	}
	if behind != nil {
		behind(len(data))
	}
	return d, nil
}

// parseRecord reads one record into r, reusing r's slices.
func parseRecord(s *scanner, filename string, r *Record) error {
	s.ws()
	start := s.pos
	*r = Record{Filename: filename, Size: -1, Depends: r.Depends[:0], Constrains: r.Constrains[:0]}
	var err error
	objErr := s.object(func(key string) error {
		switch key {
		case "name":
			r.Name, err = s.optStr(key)
		case "version":
			r.Version, err = s.optStr(key)
		case "build":
			r.Build, err = s.optStr(key)
		case "build_number":
			r.BuildNumber, err = s.int(key)
		case "depends":
			r.Depends, err = s.appendStrList(r.Depends, key)
		case "constrains":
			r.Constrains, err = s.appendStrList(r.Constrains, key)
		case "license":
			r.License, err = s.optStr(key)
		case "license_family":
			r.LicenseFamily, err = s.optStr(key)
		case "timestamp":
			r.Timestamp, err = s.int(key)
		case "size":
			r.Size, err = s.int(key)
		case "sha256":
			r.SHA256, err = s.optStr(key)
		case "md5":
			r.MD5, err = s.optStr(key)
		case "subdir":
			r.Subdir, err = s.optStr(key)
		case "noarch":
			// "python", "generic", or true in old records.
			if s.peek() == '"' {
				r.Noarch, err = s.str()
			} else {
				var raw []byte
				raw, err = s.raw()
				if string(raw) == "true" {
					r.Noarch = "generic"
				}
			}
		default:
			err = s.skip()
		}
		return err
	})
	if objErr != nil {
		return fmt.Errorf("record %q: %w", filename, objErr)
	}
	r.Raw = s.data[start:s.pos]
	if r.Name == "" || r.Version == "" || r.Build == "" {
		return &SyntaxError{Offset: start, Msg: fmt.Sprintf("record %q: name, version and build are required", filename)}
	}
	if !ValidFilename(filename) {
		return &SyntaxError{Offset: start, Msg: fmt.Sprintf("record %q: not a package filename (.conda or .tar.bz2, no '/')", filename)}
	}
	return nil
}

// ValidFilename reports whether name can be a package file in a subdir: a plain
// name ending in .conda or .tar.bz2. Upstream repodata whose keys are paths
// ("../x.conda") is refused, so a record can never name a file outside its subdir.
func ValidFilename(name string) bool {
	if !strings.HasSuffix(name, ".conda") && !strings.HasSuffix(name, ".tar.bz2") {
		return false
	}
	if strings.ContainsAny(name, "/\\\x00") || strings.HasPrefix(name, ".") {
		return false
	}
	return true
}

// Detach returns a copy of d that aliases nothing: Scan's Doc points into the
// scanned bytes (Info and Extra values), which a caller that maps a document
// must not use after unmapping it. Records are not copied (Scan keeps none).
func (d *Doc) Detach() *Doc {
	cp := *d
	cp.Info = cloneMembers(d.Info)
	cp.Extra = cloneMembers(d.Extra)
	cp.BaseURL = strings.Clone(d.BaseURL)
	cp.Removed = make([]string, len(d.Removed))
	for i, fn := range d.Removed {
		cp.Removed[i] = strings.Clone(fn)
	}
	cp.Records = nil
	return &cp
}

func cloneMembers(ms []Member) []Member {
	if ms == nil {
		return nil
	}
	out := make([]Member, len(ms))
	for i, m := range ms {
		out[i] = Member{Key: strings.Clone(m.Key), Raw: append([]byte(nil), m.Raw...)}
	}
	return out
}
