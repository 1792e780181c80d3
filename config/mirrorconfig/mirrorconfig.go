// Package mirrorconfig reads a mirror configuration written for Anaconda's mirror
// tools and turns it into condaproxy channels, for `condaproxy sync --mirror-config FILE`.
//
// The shapes it reads, from Anaconda's documentation (no code of those tools was used):
//
//   - anaconda-server-sync-conda --mirror-config (Anaconda Repository): remote_url,
//     mirror_dir, platforms, license_blacklist (written as a single value, "GPL", in
//     the documented example), blacklist, whitelist.
//     https://docs.anaconda.com/anaconda-repository/admin-guide/install/config/whitelist-blacklist/
//   - cas-sync / cas-sync-api-v4 / cas-merge of cas-mirror (Anaconda Enterprise 4
//     Repository): remote_url, channels (a list of channel URLs such as
//     <remote_url>/pkgs/main/), mirror_dir, platforms, dest_channel, dest_site, delta.
//     https://docs.anaconda.com/anaconda-repository/admin-guide/install/config/mirrors/customize-mirror/
//     https://docs.anaconda.com/anaconda-repository/admin-guide/sys-mgmt/components/use-cas-mirror
//   - anaconda-mirror --config-file (Anaconda Repository 2.26+): platforms,
//     package_list, python_versions (written as bare numbers: 2.7, 3.6), license_blacklist,
//     blacklist, whitelist, accounts (anaconda.org accounts to mirror), account_mapping,
//     access, api_domain, api_token.
//     https://docs.continuum.io/anaconda-repository/2.32/admin/mirrors-sync-configuration/
//   - cas-sync-api-v5 / anaconda-mirror-ae5 (Anaconda Enterprise 5, Workbench):
//     dest_channel plus channels (e.g. [https://repo.anaconda.com/pkgs/main]) and
//     platforms; a short channel name in channels is completed with a channel_alias.
//     https://enterprise-docs.anaconda.com/en/latest/admin/chan-pkg/mirror.html
//     https://anaconda.com/docs/data-science/latest/admin/chan-pkg/mirror
//
// # Mapping
//
// Where the tools are silent, condaproxy decides as follows.
//
//   - channels: each entry is an http(s):// or file:// URL, or an absolute local path
//     (becomes file:///path, e.g. an import of an exported tree). A short name such as
//     conda-forge is completed with the file's channel_alias, else with conda's default
//     https://conda.anaconda.org, and a warning says so (the AE5 tool took the alias
//     from its .condarc, which condaproxy does not read). "defaults" is refused: it
//     stands for several channels; list their URLs. Trailing slashes are dropped.
//   - accounts (anaconda-mirror): each account A becomes https://conda.anaconda.org/A,
//     named account_mapping[A] if given, else A.
//   - dest_channel: all listed channels become ONE condaproxy channel of that name,
//     whose upstreams are the URLs in the order written (the union; the first upstream
//     that has a file wins). Without dest_channel, one channel per URL, named after
//     the URL's path: https://conda.anaconda.org/conda-forge → conda-forge,
//     https://repo.anaconda.com/pkgs/main → pkgs/main, .../t/<token>/private → private
//     (a token stays in the URL and never reaches the name), a local directory or
//     file:// URL → its base name. Two URLs giving the same name is an error (set
//     dest_channel to merge them).
//   - platforms, python_versions, pkg_list (alias package_list; both set is an error),
//     whitelist, blacklist, license_blacklist, include_dependencies, exclude_newer: copied
//     to every produced channel, with condaproxy's meaning (SPEC "The filter, exactly").
//     Entries are kept as written ("numpy 1.26.*", "scipy=1.11"); a python version is
//     taken from the YAML text, so an unquoted 3.10 stays "3.10", not 3.1. These keys
//     must be lists of single values; license_blacklist alone may also be one value
//     ("GPL", or several separated by spaces or commas), as the Repository
//     documentation writes it: a licence name holds no space, a package spec may.
//   - mirror_dir: returned; Apply makes it the data directory unless one is set.
//   - channel_alias: used only to complete short channel names; otherwise a warning.
//   - Every other key (remote_url, dest_site, delta, access, api_domain, api_token, …)
//     is reported in a warning "FILE:LINE: KEY: why" and ignored.
//
// Parse checks every produced channel by condaproxy's own rules (config.Parse) and
// reports a problem at the line of the mirror file that caused it.
// include_dependencies without platforms is valid as it is: the closure runs over
// the subdirs upstream lists (SPEC "The filter, exactly", step 2).
package mirrorconfig

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/condaproxy/condaproxy/config"
	"gopkg.in/yaml.v3"
)

// DefaultChannelAlias completes a short channel name when the file sets no channel_alias.
const DefaultChannelAlias = "https://conda.anaconda.org"

// ignored names the keys of the Anaconda tools that condaproxy knowingly does not use,
// with the reason given in the warning. Keys not listed get a generic reason.
var ignored = map[string]string{
	"remote_url":      "ignored: it is where the tools fetch Anaconda and Miniconda installers (and derive default channels from); condaproxy mirrors only the listed channels (serve installers with a kind: files channel)",
	"dest_site":       "ignored: condaproxy serves the channel itself instead of uploading it to another server",
	"delta":           "ignored: condaproxy makes delta exports with `condaproxy export --delta`",
	"access":          "ignored: condaproxy controls access with auth.tokens",
	"api_domain":      "ignored: accounts are always taken from " + DefaultChannelAlias + "; list another server's channel URLs under channels",
	"api_token":       "ignored: put the token in the channel URL instead (" + DefaultChannelAlias + "/t/<token>/<account>)",
	"account_mapping": "ignored: it renames accounts, and the file lists no accounts",
}

// shortName is a bare channel name such as conda-forge or pytorch/label/nightly.
var shortName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$`)

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// Load reads an anaconda-mirror / cas-sync YAML file and returns the channels it
// describes as condaproxy channels, plus warnings naming every key it cannot
// honour (file:line: key: why). Errors (bad YAML, no channels, a bad URL, a filter
// spec that is not a string list) are *config.Error with file, line and key.
func Load(path string) (chs []config.Channel, mirrorDir string, warnings []string, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		var pe *os.PathError
		msg := err.Error()
		if errors.As(err, &pe) {
			msg = pe.Err.Error()
		}
		return nil, "", nil, &config.Error{File: path, Msg: "cannot read: " + msg}
	}
	return Parse(path, data)
}

// source is one entry of channels or accounts: where a channel URL came from.
type source struct {
	key  string // the mirror file's key path, e.g. channels[2]
	url  string
	name string // the channel name it gives without dest_channel
}

// parser collects the mirror file's keys with their lines.
type parser struct {
	file     string
	lines    map[string]int // mirror key path → line
	warnings []warning

	channels, accounts     []string
	accountMapping         map[string]string
	destChannel, mirrorDir string
	channelAlias           string
	hasAlias               bool

	platforms, pythonVersions, pkgList, whitelist, blacklist, licenseBlacklist []string
	pkgListKey                                                                 string // "pkg_list" or "package_list", as written
	includeDependencies                                                        bool
	excludeNewer                                                               string
}

func (p *parser) errAt(key string, line int, format string, args ...any) error {
	return &config.Error{File: p.file, Line: line, Key: key, Msg: fmt.Sprintf(format, args...)}
}

func (p *parser) errKey(key, format string, args ...any) error {
	return p.errAt(key, p.lines[key], format, args...)
}

type warning struct {
	line int
	text string
}

func (p *parser) warn(key string, format string, args ...any) {
	line := p.lines[key]
	p.warnings = append(p.warnings, warning{line, fmt.Sprintf("%s:%d: %s: %s", p.file, line, key, fmt.Sprintf(format, args...))})
}

// sortedWarnings returns the warnings in the order of the file's lines.
func (p *parser) sortedWarnings() []string {
	slices.SortStableFunc(p.warnings, func(a, b warning) int { return a.line - b.line })
	out := make([]string, len(p.warnings))
	for i, w := range p.warnings {
		out[i] = w.text
	}
	return out
}

// Parse is Load of data, read from the file called name.
func Parse(name string, data []byte) (chs []config.Channel, mirrorDir string, warnings []string, err error) {
	p := &parser{file: name, lines: map[string]int{}}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
			n, _ := strconv.Atoi(m[1])
			return nil, "", nil, p.errAt("", n, "not valid YAML: %s", m[2])
		}
		return nil, "", nil, p.errAt("", 0, "not valid YAML: %s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if len(doc.Content) == 0 || isNull(deref(doc.Content[0])) {
		return nil, "", nil, p.errAt("channels", 0, "no channels: the file is empty; list the channel URLs to mirror under channels")
	}
	root := deref(doc.Content[0])
	if root.Kind != yaml.MappingNode {
		return nil, "", nil, p.errAt("", root.Line, "want a mapping of keys (channels, platforms, …), not a %s", config.KindName(root))
	}
	if err := p.readKeys(root); err != nil {
		return nil, "", nil, err
	}
	chs, err = p.build()
	if err != nil {
		return nil, "", nil, err
	}
	return chs, p.mirrorDir, p.sortedWarnings(), nil
}

// readKeys walks the top-level mapping, checks each value's shape and records its line.
func (p *parser) readKeys(root *yaml.Node) error {
	seen := map[string]bool{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := deref(root.Content[i]), deref(root.Content[i+1])
		key := k.Value
		if seen[key] {
			return p.errAt(key, k.Line, "key given twice")
		}
		seen[key] = true
		p.lines[key] = k.Line
		var err error
		switch key {
		case "channels":
			p.channels, err = p.stringList(key, v)
		case "accounts":
			p.accounts, err = p.stringList(key, v)
		case "account_mapping":
			err = p.readAccountMapping(v)
		case "dest_channel":
			p.destChannel, err = p.scalar(key, v)
		case "mirror_dir":
			p.mirrorDir, err = p.scalar(key, v)
		case "channel_alias":
			p.channelAlias, err = p.scalar(key, v)
			p.hasAlias = p.channelAlias != ""
		case "platforms":
			p.platforms, err = p.stringList(key, v)
		case "python_versions":
			p.pythonVersions, err = p.stringList(key, v)
		case "pkg_list", "package_list":
			if p.pkgListKey != "" {
				return p.errAt(key, k.Line, "pkg_list and its alias package_list are both set: keep one")
			}
			p.pkgListKey = key
			p.pkgList, err = p.stringList(key, v)
		case "whitelist":
			p.whitelist, err = p.stringList(key, v)
		case "blacklist":
			p.blacklist, err = p.stringList(key, v)
		case "license_blacklist":
			if v.Kind == yaml.ScalarNode && !isNull(v) {
				// The Repository documentation writes `license_blacklist: GPL`.
				p.licenseBlacklist = strings.FieldsFunc(v.Value, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' })
				break
			}
			p.licenseBlacklist, err = p.stringList(key, v)
		case "include_dependencies":
			p.includeDependencies, err = p.boolean(key, v)
		case "exclude_newer":
			p.excludeNewer, err = p.scalar(key, v)
		default:
			if why, ok := ignored[key]; ok {
				p.warn(key, "%s", why)
			} else {
				p.warn(key, "not a setting condaproxy knows; ignored")
			}
		}
		if err != nil {
			return err
		}
	}
	if seen["account_mapping"] && len(p.accounts) == 0 {
		p.warn("account_mapping", "%s", ignored["account_mapping"])
	}
	return nil
}

func (p *parser) readAccountMapping(v *yaml.Node) error {
	if isNull(v) {
		return nil
	}
	if v.Kind != yaml.MappingNode {
		return p.errAt("account_mapping", v.Line, "want a mapping of account: new name, not a %s", config.KindName(v))
	}
	p.accountMapping = map[string]string{}
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, val := deref(v.Content[i]), deref(v.Content[i+1])
		key := "account_mapping." + k.Value
		p.lines[key] = k.Line
		s, err := p.scalar(key, val)
		if err != nil {
			return err
		}
		p.accountMapping[k.Value] = s
	}
	return nil
}

// stringList reads a list of single values; the entries are kept as the YAML text
// wrote them (an unquoted 3.10 stays "3.10").
func (p *parser) stringList(key string, v *yaml.Node) ([]string, error) {
	if isNull(v) {
		return nil, nil
	}
	if v.Kind != yaml.SequenceNode {
		if v.Kind == yaml.ScalarNode {
			return nil, p.errAt(key, v.Line, "want a list, not the single value %q: write it as a list, one entry a line (- %s) or [%s]", v.Value, v.Value, v.Value)
		}
		return nil, p.errAt(key, v.Line, "want a list, not a %s", config.KindName(v))
	}
	out := make([]string, 0, len(v.Content))
	for i, c := range v.Content {
		c = deref(c)
		ik := fmt.Sprintf("%s[%d]", key, i)
		p.lines[ik] = c.Line
		if c.Kind != yaml.ScalarNode || isNull(c) || strings.TrimSpace(c.Value) == "" {
			what := "an empty entry"
			if c.Kind != yaml.ScalarNode {
				what = "a " + config.KindName(c)
			}
			return nil, p.errAt(ik, c.Line, "want a single value, not %s", what)
		}
		out = append(out, strings.TrimSpace(c.Value))
	}
	return out, nil
}

func (p *parser) scalar(key string, v *yaml.Node) (string, error) {
	if isNull(v) {
		return "", nil
	}
	if v.Kind != yaml.ScalarNode {
		return "", p.errAt(key, v.Line, "want a single value, not a %s", config.KindName(v))
	}
	return strings.TrimSpace(v.Value), nil
}

func (p *parser) boolean(key string, v *yaml.Node) (bool, error) {
	if isNull(v) {
		return false, nil
	}
	if v.Kind == yaml.ScalarNode {
		switch strings.ToLower(v.Value) {
		case "true", "yes", "on":
			return true, nil
		case "false", "no", "off":
			return false, nil
		}
		return false, p.errAt(key, v.Line, "want true or false, not %q", v.Value)
	}
	return false, p.errAt(key, v.Line, "want true or false, not a %s", config.KindName(v))
}

// build turns the collected keys into channels and checks them by condaproxy's rules.
func (p *parser) build() ([]config.Channel, error) {
	var srcs []source
	usedAlias := false
	for i, raw := range p.channels {
		key := fmt.Sprintf("channels[%d]", i)
		u, short, err := p.resolve(key, raw)
		if err != nil {
			return nil, err
		}
		if short {
			usedAlias = true
		}
		name, err := p.nameFor(key, u)
		if err != nil && p.destChannel == "" {
			return nil, err
		}
		srcs = append(srcs, source{key: key, url: u, name: name})
	}
	for i, acct := range p.accounts {
		key := fmt.Sprintf("accounts[%d]", i)
		if !shortName.MatchString(acct) || strings.Contains(acct, "/") {
			return nil, p.errKey(key, "bad account %q: want an anaconda.org account name such as conda-forge", acct)
		}
		name := acct
		if m, ok := p.accountMapping[acct]; ok && m != "" {
			name = m
		}
		srcs = append(srcs, source{key: key, url: DefaultChannelAlias + "/" + acct, name: name})
	}
	if p.hasAlias && !usedAlias {
		p.warn("channel_alias", "ignored: it only completes short channel names, and every entry of channels is a URL or a path")
	}
	if len(srcs) == 0 {
		if _, ok := p.lines["channels"]; ok {
			return nil, p.errKey("channels", "no channels: the list is empty; list the channel URLs to mirror (e.g. - https://conda.anaconda.org/conda-forge)")
		}
		return nil, p.errAt("channels", 0, "no channels: the file has no channels key; list the channel URLs to mirror under it (e.g. - https://conda.anaconda.org/conda-forge)")
	}

	// groups[i] lists the sources of produced channel i; nameKey is where its name came from.
	type group struct {
		name    string
		nameKey string
		srcs    []source
	}
	var groups []group
	if p.destChannel != "" {
		groups = []group{{name: p.destChannel, nameKey: "dest_channel", srcs: srcs}}
	} else {
		byName := map[string]string{}
		for _, s := range srcs {
			if prev, ok := byName[s.name]; ok {
				return nil, p.errKey(s.key, "gives the channel name %q, as %s does: set dest_channel to serve them as one channel", s.name, prev)
			}
			byName[s.name] = s.key
			groups = append(groups, group{name: s.name, nameKey: s.key, srcs: []source{s}})
		}
	}

	chs := make([]config.Channel, len(groups))
	for i, g := range groups {
		ch := config.Channel{
			Name:                g.name,
			Kind:                config.KindConda,
			Platforms:           slices.Clone(p.platforms),
			PythonVersions:      slices.Clone(p.pythonVersions),
			PkgList:             slices.Clone(p.pkgList),
			IncludeDependencies: p.includeDependencies,
			Whitelist:           slices.Clone(p.whitelist),
			Blacklist:           slices.Clone(p.blacklist),
			LicenseBlacklist:    slices.Clone(p.licenseBlacklist),
			ExcludeNewer:        p.excludeNewer,
		}
		for _, s := range g.srcs {
			ch.Upstreams = append(ch.Upstreams, config.Upstream{URL: s.url})
		}
		chs[i] = ch
	}

	// Check by condaproxy's rules, and report at the mirror file's line.
	doc, err := yaml.Marshal(struct {
		Channels []config.Channel `yaml:"channels"`
	}{chs})
	if err != nil {
		return nil, p.errAt("", 0, "%v", err)
	}
	if _, err := config.Parse(p.file, doc, keepRefs); err != nil {
		var ce *config.Error
		if !errors.As(err, &ce) {
			return nil, err
		}
		i, rest, ok := channelKey(ce.Key)
		if !ok || i >= len(groups) {
			return nil, p.errAt(ce.Key, 0, "%s", ce.Msg)
		}
		g := groups[i]
		switch {
		case rest == "name":
			msg := ce.Msg
			if p.destChannel == "" {
				msg += " (named after the URL's path; set dest_channel to choose the name)"
			}
			return nil, p.errKey(g.nameKey, "%s", msg)
		case strings.HasPrefix(rest, "upstreams["):
			j, _ := strconv.Atoi(strings.TrimPrefix(strings.SplitN(rest, "]", 2)[0], "upstreams["))
			if j < len(g.srcs) {
				return nil, p.errKey(g.srcs[j].key, "%s", ce.Msg)
			}
		case strings.HasPrefix(rest, "pkg_list"):
			k := p.pkgListKey + strings.TrimPrefix(rest, "pkg_list")
			return nil, p.errKey(k, "%s", ce.Msg)
		}
		msg := ce.Msg
		if strings.HasPrefix(rest, "python_versions[") {
			// This package reads the YAML text, so 3.10 is not read as 3.1 here.
			msg, _, _ = strings.Cut(msg, " (quote it")
		}
		return nil, p.errKey(rest, "%s", msg)
	}
	return chs, nil
}

// resolve turns one channels entry into a channel URL. short reports a name completed
// with a channel alias.
func (p *parser) resolve(key, raw string) (u string, short bool, err error) {
	s := strings.TrimSpace(raw)
	switch {
	case strings.Contains(s, "://"):
		pu, err := url.Parse(s)
		if err != nil {
			return "", false, p.errKey(key, "bad URL %q: %v", config.RedactURL(s), errors.Unwrap(err))
		}
		switch strings.ToLower(pu.Scheme) {
		case "http", "https", "file":
		default:
			return "", false, p.errKey(key, "bad URL %q: want http://, https:// or file:// (or an absolute path)", config.RedactURL(s))
		}
		for strings.HasSuffix(s, "/") && !strings.HasSuffix(s, "://") && !strings.HasSuffix(s, ":///") {
			s = strings.TrimSuffix(s, "/")
		}
		return s, false, nil
	case filepath.IsAbs(s) || strings.HasPrefix(s, "/"):
		return (&url.URL{Scheme: "file", Path: filepath.ToSlash(filepath.Clean(s))}).String(), false, nil
	case s == "defaults":
		return "", false, p.errKey(key, `"defaults" stands for several channels: list their URLs (https://repo.anaconda.com/pkgs/main, https://repo.anaconda.com/pkgs/r, …)`)
	case shortName.MatchString(s):
		alias := strings.TrimRight(p.channelAlias, "/")
		if alias == "" {
			alias = DefaultChannelAlias
			p.warn(key, "short channel name %q read as %s/%s (conda's default channel_alias); write the full URL if the mirror tool used another alias", s, alias, s)
		}
		return alias + "/" + s, true, nil
	default:
		return "", false, p.errKey(key, "%q is neither a channel URL (https://…, file:///…) nor an absolute path", s)
	}
}

// nameFor names a channel after its URL: the path, without an anaconda.org /t/<token>
// prefix; for a local channel, the directory's base name.
func (p *parser) nameFor(key, u string) (string, error) {
	pu, err := url.Parse(u)
	if err != nil {
		return "", p.errKey(key, "bad URL %q", config.RedactURL(u))
	}
	trimmed := strings.Trim(pu.Path, "/")
	var name string
	if strings.EqualFold(pu.Scheme, "file") {
		if trimmed != "" {
			name = path.Base(trimmed)
		}
	} else {
		segs := strings.Split(trimmed, "/")
		if len(segs) >= 2 && segs[0] == "t" {
			segs = segs[2:]
		}
		name = strings.Join(segs, "/")
	}
	if name == "" {
		return "", p.errKey(key, "cannot name a channel after %q: its path is empty; set dest_channel", config.RedactURL(u))
	}
	return name, nil
}

// channelKey splits "channels[3].platforms[0]" into 3 and "platforms[0]".
func channelKey(key string) (int, string, bool) {
	rest, ok := strings.CutPrefix(key, "channels[")
	if !ok {
		return 0, "", false
	}
	num, rest, ok := strings.Cut(rest, "]")
	if !ok {
		return 0, "", false
	}
	i, err := strconv.Atoi(num)
	if err != nil {
		return 0, "", false
	}
	return i, strings.TrimPrefix(rest, "."), true
}

// keepRefs leaves ${VAR} as written: the mirror tools do not expand variables, and
// a configuration already loaded has had its variables expanded once.
func keepRefs(name string) (string, bool) { return "${" + name + "}", true }

func deref(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n == nil || (n.Kind == yaml.ScalarNode && n.Tag == "!!null")
}

// Apply merges the channels into base (a loaded condaproxy config): a channel of
// the same name is replaced in place, the others are appended in order; mirrorDir,
// if set and base.Data is the default, becomes base.Data. It re-validates the result
// through config.Parse of its YAML form, so the same rules hold. base is not changed.
//
// The result's Source is "BASE + mirror config"; line numbers that later errors give
// for it refer to the merged configuration as `condaproxy config show` prints it. An
// error in a channel that came from the mirror config names the channel and the key
// (e.g. channels[5].include_dependencies); one in a base channel, base's own line.
func Apply(base *config.Config, chs []config.Channel, mirrorDir string) (*config.Config, error) {
	if base == nil {
		return nil, errors.New("mirrorconfig.Apply: no base configuration")
	}
	merged := *base
	merged.Channels = slices.Clone(base.Channels)
	fromMirror := map[int]bool{}
	for _, ch := range chs {
		if ch.Kind == "" {
			ch.Kind = config.KindConda
		}
		replaced := false
		for i := range base.Channels {
			if base.Channels[i].Name == ch.Name && !fromMirror[i] {
				merged.Channels[i] = ch
				fromMirror[i] = true
				replaced = true
				break
			}
		}
		if !replaced {
			fromMirror[len(merged.Channels)] = true
			merged.Channels = append(merged.Channels, ch)
		}
	}
	if mirrorDir != "" && filepath.Clean(base.Data) == filepath.Clean(config.DefaultData) {
		merged.Data = mirrorDir
	}
	doc, err := yaml.Marshal(&merged)
	if err != nil {
		return nil, fmt.Errorf("%s: merging the mirror config: %w", base.Source, err)
	}
	name := base.Source + " + mirror config"
	cfg, err := config.Parse(name, doc, keepRefs)
	if err == nil {
		return cfg, nil
	}
	var ce *config.Error
	if !errors.As(err, &ce) {
		return nil, err
	}
	if i, _, ok := channelKey(ce.Key); ok && i < len(merged.Channels) {
		if fromMirror[i] {
			return nil, &config.Error{File: name, Key: ce.Key,
				Msg: fmt.Sprintf("channel %q (from the mirror config): %s", merged.Channels[i].Name, ce.Msg)}
		}
	}
	// A base key: base knows its line.
	return nil, base.Errorf(ce.Key, "%s", ce.Msg)
}
