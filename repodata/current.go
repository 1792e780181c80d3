package repodata

// Current returns current_repodata.json's document: for each package name, the
// records of its newest version (every build, both archive formats). cmp orders
// two version strings as conda does. Records whose version does not parse for cmp
// still compete by cmp's answer; cmp must be total.
func Current(d *Doc, cmp func(a, b string) int) *Doc {
	newest := map[string]string{}
	for _, r := range d.Records {
		if v, ok := newest[r.Name]; !ok || cmp(r.Version, v) > 0 {
			newest[r.Name] = r.Version
		}
	}
	out := &Doc{Info: d.Info, Version: d.Version, Extra: nil}
	for _, r := range d.Records {
		if cmp(r.Version, newest[r.Name]) == 0 {
			out.Records = append(out.Records, r)
		}
	}
	return out
}
