package policy_test

import (
	"sync"
	"testing"

	"github.com/condaproxy/condaproxy/internal/testdata"
	"github.com/condaproxy/condaproxy/repodata"
)

type verdict struct{ rule, detail string }

// TestDeciderConcurrent: the proxy decides the records of concurrent package
// requests with one Decider per subdir, so Decide is called from many goroutines
// at once. With python_versions set, every call may fill the memo of python
// constraints; this ran into "concurrent map read and map write". Under -race,
// goroutines decide real repodata in different orders, on a Decider none of them
// has warmed, and must agree with a single-threaded run.
func TestDeciderConcurrent(t *testing.T) {
	dir := testdata.Path(t, "cf-subchannel-py39")
	ch := realChannel(t, dir, "linux-64", "osx-arm64", "noarch")
	ch["pytorch"] = readImpl(t, testdata.Path(t, "rattler", "pytorch_linux-64_repodata.json"))
	keys := []string{
		`python_versions: ["3.9"]`,
		`python_versions: ["3.10", "3.11"]` + "\nlicense_blacklist: [GPL]\nblacklist: [numpy 1.2*]\nwhitelist: [numpy 1.26.*]",
		"platforms: [linux-64, osx-arm64]\npkg_list: [numpy]\ninclude_dependencies: true\npython_versions: [\"3.9\"]",
	}
	for _, k := range keys {
		p := compile(t, k, nil)
		for sub, records := range ch {
			prepSub := sub
			if sub == "pytorch" {
				prepSub = "linux-64"
			}
			if !p.ServesSubdir(prepSub) {
				continue
			}
			want := make([]verdict, len(records))
			serial := prepare(t, p, prepSub, ch)
			for i, r := range records {
				want[i].rule, want[i].detail = serial.Decide(r)
			}

			shared := prepare(t, p, prepSub, ch)
			const workers = 8
			got := make([][]verdict, workers)
			var wg sync.WaitGroup
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					out := make([]verdict, len(records))
					// Each starts at a different record, so first sights of a
					// constraint happen on every goroutine at once.
					for j := range records {
						i := (j + w*len(records)/workers) % len(records)
						out[i].rule, out[i].detail = shared.Decide(records[i])
					}
					got[w] = out
				}()
			}
			wg.Wait()
			for w, out := range got {
				for i, v := range out {
					if v != want[i] {
						t.Fatalf("[%s] %s: goroutine %d decided %s as %q (%s), single-threaded %q (%s)",
							k, sub, w, records[i].Filename, v.rule, v.detail, want[i].rule, want[i].detail)
					}
				}
			}
		}
	}
}

// TestDecideHotPathAllocs: deciding a record whose python constraints were seen
// before allocates nothing, with one python dependency or several: Decide runs
// for every record of every build.
func TestDecideHotPathAllocs(t *testing.T) {
	dir := testdata.Path(t, "cf-subchannel-py39")
	ch := realChannel(t, dir, "osx-arm64")
	p := compile(t, `python_versions: ["3.9"]`, nil)
	d := prepare(t, p, "osx-arm64", ch)
	var one, several *repodata.Record
	for _, r := range ch["osx-arm64"] {
		n := 0
		for _, dep := range r.Depends {
			if len(dep) >= 6 && dep[:6] == "python" && (len(dep) == 6 || dep[6] == ' ') {
				n++
			}
		}
		if n == 1 && one == nil && r.Name != "python" {
			one = r
		}
		if n > 1 && several == nil {
			several = r
		}
	}
	if one == nil || several == nil {
		t.Fatalf("dataset assumption: osx-arm64 has records with one and with several python depends (%v, %v)", one, several)
	}
	for _, r := range []*repodata.Record{one, several} {
		d.Decide(r) // the first sight fills the memo
		if n := testing.AllocsPerRun(100, func() { d.Decide(r) }); n != 0 {
			t.Errorf("%s (depends %q): %v allocations a Decide", r.Filename, r.Depends, n)
		}
	}
}
