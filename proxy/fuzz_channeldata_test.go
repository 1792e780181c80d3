package proxy

import (
	"encoding/json"
	"net/http"
	"testing"
)

// FuzzChannelDataCut: whatever upstream's channeldata.json holds, the cut
// never fails but with errBadChannelData, and what it writes lists only served
// names, only served subdirs, no hidden version as a version or a run_exports
// key, and only the format's top-level keys.
func FuzzChannelDataCut(f *testing.F) {
	f.Add([]byte(`{"channeldata_version":1,"packages":{"foo":{"version":"2.0","subdirs":["linux-64","win-64"],"timestamp":5,"license":"GPL","run_exports":{"1.0":{"weak":["a"]},"2.0":{"weak":["b"]}},"description":"d"},"gone":{"version":"1"}},"subdirs":["linux-64","win-64","../x"]}`))
	f.Add([]byte(`{"packages":{"foo":{"version":"1.0","run_exports":{"weak":["x"]},"reference_package":"linux-64/foo-2.0-0.tar.bz2"}}}`))
	f.Add([]byte(`{"packages":[],"subdirs":{}}`))
	f.Add([]byte(`{"packages":{"foo":7},"x":{"__proto__":1}}`))
	f.Add([]byte(`[[[[[[[[[[]]]]]]]]]]`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		names := servedNames{}
		names.add("linux-64", "foo-1.0-0.tar.bz2")
		names.add("noarch", "bar-3.1-py_0.conda")
		names.hide("foo-2.0-0.tar.bz2")
		subdirs := map[string]bool{"noarch": true, "linux-64": true}
		served := func(ref string) bool { return ref == "linux-64/foo-1.0-0.tar.bz2" }
		out, err := cutChannelDataDoc(raw, names, subdirs, served, false)
		if err != nil {
			return // every failure is a 502 or the last good cut
		}
		var doc struct {
			Packages map[string]struct {
				Version    any             `json:"version"`
				Subdirs    []string        `json:"subdirs"`
				RunExports json.RawMessage `json:"run_exports"`
			} `json:"packages"`
			Subdirs []string `json:"subdirs"`
		}
		var top map[string]json.RawMessage
		if json.Unmarshal(out, &top) != nil || json.Unmarshal(out, &doc) != nil {
			t.Fatalf("the cut is not a channeldata object: %.200s", out)
		}
		for k := range top {
			if k != "channeldata_version" && k != "packages" && k != "subdirs" {
				t.Errorf("top-level key %q kept", k)
			}
		}
		for _, sd := range doc.Subdirs {
			if !subdirs[sd] {
				t.Errorf("subdir %q listed, not served", sd)
			}
		}
		for name, p := range doc.Packages {
			n := names[name]
			if n == nil {
				t.Fatalf("name %q listed without a served record", name)
			}
			if v, ok := p.Version.(string); ok && n.hidden[v] && !n.versions[v] {
				t.Errorf("%s: hidden version %q listed", name, v)
			}
			for _, sd := range p.Subdirs {
				if !n.subdirs[sd] {
					t.Errorf("%s: subdir %q listed, no served record there", name, sd)
				}
			}
			var byVersion map[string]json.RawMessage
			if json.Unmarshal(p.RunExports, &byVersion) == nil {
				for v := range byVersion {
					if n.hidden[v] {
						t.Errorf("%s: run_exports of hidden version %q kept", name, v)
					}
				}
			}
		}
	})
}

// FuzzWantsHTML: any Accept header is read without a panic, and a conda
// client's usual ones never get a page.
func FuzzWantsHTML(f *testing.F) {
	for _, s := range []string{"text/html", "*/*", "application/json", "text/html;q=0, */*",
		"text/html;q=0.9,application/xhtml+xml;q=1", "text/*;q=1, text/html;q=abc", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, accept string) {
		h := http.Header{}
		h.Set("Accept", accept)
		got := wantsHTML(h)
		if got && (accept == "*/*" || accept == "application/json" || accept == "") {
			t.Errorf("Accept %q: a page", accept)
		}
	})
}
