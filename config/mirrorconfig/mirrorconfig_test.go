package mirrorconfig

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/condaproxy/condaproxy/config"
)

// The fixtures below are written for these tests in the shapes Anaconda documents
// (see the package comment for the pages):
//   - casSyncExport: cas-sync (AE4 cas-mirror, "Customizing mirrors") keys channels,
//     mirror_dir, platforms, with anaconda-mirror's python_versions / pkg_list filters.
//   - casImport: the air-gapped side: channels point at the copied directory,
//     dest_channel names the channel it lands in (cas-sync-api-v4/v5).
//   - ae5Main: the AE5 "main.yaml" (dest_channel: main, channels, platforms).
//   - serverSync: anaconda-server-sync-conda --mirror-config ("Whitelisting or
//     blacklisting packages"), whose example writes license_blacklist: GPL as one value.
//   - anacondaMirror: anaconda-mirror --config-file (Repository 2.26+), by accounts.
const casSyncExport = `# export.yaml: cas-sync on the connected side
channels:
  - https://conda.anaconda.org/conda-forge/
mirror_dir: /opt/cas-mirror
platforms:
  - linux-64
  - noarch
python_versions: [3.9, 3.10]
pkg_list:
  - numpy 1.26.*
  - pandas
  - scipy=1.11
include_dependencies: true
`

const casImport = `# import.yaml: on the air-gapped side, from the copied tree
channels:
  - /mnt/usb/cas-mirror/conda-forge
  - file:///srv/extra/conda-forge
dest_channel: conda-forge-internal
platforms: [linux-64, noarch]
`

const ae5Main = `dest_channel: main
channels:
  - https://repo.anaconda.com/pkgs/main
platforms:
  - linux-64
  - noarch
`

const serverSync = `remote_url: https://repo.anaconda.com/
mirror_dir: /opt/anaconda-server/package-storage
channels:
  - https://repo.anaconda.com/pkgs/main
  - https://repo.anaconda.com/pkgs/r
platforms:
  - linux-64
  - win-64
license_blacklist: GPL
whitelist:
  - distribute
  - conda
blacklist:
  - flask
  - readline
`

const anacondaMirror = `accounts:
  - anaconda
  - conda-forge
account_mapping:
  anaconda: anaconda-mirror
access: public
platforms: [linux-64]
package_list:
  - python
python_versions:
  - 2.7
  - 3.6
license_blacklist:
  - AGPL
  - GPL3
`

func up(urls ...string) []config.Upstream {
	var out []config.Upstream
	for _, u := range urls {
		out = append(out, config.Upstream{URL: u})
	}
	return out
}

func TestParse(t *testing.T) {
	tests := []struct {
		name      string
		yaml      string
		want      []config.Channel
		mirrorDir string
		warnings  []string // substrings, in order
	}{
		{
			name: "cas-sync export with unquoted python floats",
			yaml: casSyncExport,
			want: []config.Channel{{
				Name: "conda-forge", Kind: "conda", Upstreams: up("https://conda.anaconda.org/conda-forge"),
				Platforms: []string{"linux-64", "noarch"}, PythonVersions: []string{"3.9", "3.10"},
				PkgList: []string{"numpy 1.26.*", "pandas", "scipy=1.11"}, IncludeDependencies: true,
			}},
			mirrorDir: "/opt/cas-mirror",
		},
		{
			name: "import of a local dir into dest_channel",
			yaml: casImport,
			want: []config.Channel{{
				Name: "conda-forge-internal", Kind: "conda",
				Upstreams: up("file:///mnt/usb/cas-mirror/conda-forge", "file:///srv/extra/conda-forge"),
				Platforms: []string{"linux-64", "noarch"},
			}},
		},
		{
			name: "AE5 main.yaml",
			yaml: ae5Main,
			want: []config.Channel{{
				Name: "main", Kind: "conda", Upstreams: up("https://repo.anaconda.com/pkgs/main"),
				Platforms: []string{"linux-64", "noarch"},
			}},
		},
		{
			name: "anaconda-server-sync-conda: pkgs/main and pkgs/r, one channel each",
			yaml: serverSync,
			want: []config.Channel{
				{Name: "pkgs/main", Kind: "conda", Upstreams: up("https://repo.anaconda.com/pkgs/main"),
					Platforms: []string{"linux-64", "win-64"}, LicenseBlacklist: []string{"GPL"},
					Whitelist: []string{"distribute", "conda"}, Blacklist: []string{"flask", "readline"}},
				{Name: "pkgs/r", Kind: "conda", Upstreams: up("https://repo.anaconda.com/pkgs/r"),
					Platforms: []string{"linux-64", "win-64"}, LicenseBlacklist: []string{"GPL"},
					Whitelist: []string{"distribute", "conda"}, Blacklist: []string{"flask", "readline"}},
			},
			mirrorDir: "/opt/anaconda-server/package-storage",
			warnings:  []string{"t.yaml:1: remote_url: ignored"},
		},
		{
			name: "anaconda-mirror accounts with account_mapping",
			yaml: anacondaMirror,
			want: []config.Channel{
				{Name: "anaconda-mirror", Kind: "conda", Upstreams: up("https://conda.anaconda.org/anaconda"),
					Platforms: []string{"linux-64"}, PkgList: []string{"python"}, PythonVersions: []string{"2.7", "3.6"},
					LicenseBlacklist: []string{"AGPL", "GPL3"}},
				{Name: "conda-forge", Kind: "conda", Upstreams: up("https://conda.anaconda.org/conda-forge"),
					Platforms: []string{"linux-64"}, PkgList: []string{"python"}, PythonVersions: []string{"2.7", "3.6"},
					LicenseBlacklist: []string{"AGPL", "GPL3"}},
			},
			warnings: []string{"t.yaml:6: access: ignored"},
		},
		{
			name: "token URL: the token stays in the URL, never in the name",
			yaml: "channels:\n  - https://conda.anaconda.org/t/tk-9f8e7d/private\n",
			want: []config.Channel{{Name: "private", Kind: "conda", Upstreams: up("https://conda.anaconda.org/t/tk-9f8e7d/private")}},
		},
		{
			name: "unknown and ignored keys warn with their lines",
			yaml: "channels:\n  - https://conda.anaconda.org/bioconda\nremote_url: https://repo.anaconda.com/\n" +
				"dest_site: https://anaconda.example.com\nchannel_alias: https://conda.example.com\nfetch_installers: true\n" +
				"exclude_newer: 2024-06-01\nlicense_blacklist: GPL, AGPL\n",
			want: []config.Channel{{Name: "bioconda", Kind: "conda", Upstreams: up("https://conda.anaconda.org/bioconda"),
				ExcludeNewer: "2024-06-01", LicenseBlacklist: []string{"GPL", "AGPL"}}},
			warnings: []string{
				"t.yaml:3: remote_url: ignored",
				"t.yaml:4: dest_site: ignored",
				"t.yaml:5: channel_alias: ignored",
				"t.yaml:6: fetch_installers: not a setting condaproxy knows; ignored",
			},
		},
		{
			name: "short names use channel_alias",
			yaml: "channel_alias: https://conda.example.com/\nchannels: [conda-forge, bioconda]\npackage_list: [\"numpy >=1.26\"]\n",
			want: []config.Channel{
				{Name: "conda-forge", Kind: "conda", Upstreams: up("https://conda.example.com/conda-forge"), PkgList: []string{"numpy >=1.26"}},
				{Name: "bioconda", Kind: "conda", Upstreams: up("https://conda.example.com/bioconda"), PkgList: []string{"numpy >=1.26"}},
			},
		},
		{
			name:     "short name without channel_alias warns",
			yaml:     "channels:\n  - conda-forge\n",
			want:     []config.Channel{{Name: "conda-forge", Kind: "conda", Upstreams: up("https://conda.anaconda.org/conda-forge")}},
			warnings: []string{`t.yaml:2: channels[0]: short channel name "conda-forge" read as https://conda.anaconda.org/conda-forge`},
		},
		{
			name: "include_dependencies without platforms is taken as it is",
			yaml: "channels: [/srv/mirror/pkgs/main]\ndest_channel: pkgs/main\npkg_list: [numpy]\ninclude_dependencies: yes\n",
			want: []config.Channel{{Name: "pkgs/main", Kind: "conda", Upstreams: up("file:///srv/mirror/pkgs/main"),
				PkgList: []string{"numpy"}, IncludeDependencies: true}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			chs, dir, warnings, err := Parse("t.yaml", []byte(tt.yaml))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(chs, tt.want) {
				t.Errorf("channels:\n got %+v\nwant %+v", chs, tt.want)
			}
			if dir != tt.mirrorDir {
				t.Errorf("mirrorDir = %q, want %q", dir, tt.mirrorDir)
			}
			if len(warnings) != len(tt.warnings) {
				t.Fatalf("warnings = %q, want %d like %q", warnings, len(tt.warnings), tt.warnings)
			}
			for i, w := range tt.warnings {
				if !strings.HasPrefix(warnings[i], w) {
					t.Errorf("warning %d = %q, want it to start with %q", i, warnings[i], w)
				}
			}
			for _, w := range warnings {
				if strings.Contains(w, "tk-9f8e7d") {
					t.Errorf("warning leaks the token: %s", w)
				}
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		line int
		key  string
		msg  string // substring
	}{
		{"not YAML", "channels: [https://conda.anaconda.org/conda-forge\nplatforms: linux-64\n", 1, "", "not valid YAML"},
		{"not YAML: a tab", "channels:\n\t- https://conda.anaconda.org/conda-forge\n", 2, "", "not valid YAML"},
		{"not a mapping", "- https://conda.anaconda.org/conda-forge\n", 1, "", "want a mapping"},
		{"empty file", "", 0, "channels", "no channels"},
		{"channels missing", "platforms: [linux-64]\npkg_list: [numpy]\n", 0, "channels", "has no channels key"},
		{"channels empty", "channels: []\n", 1, "channels", "the list is empty"},
		{"channels: 5", "mirror_dir: /opt/m\nchannels: 5\n", 2, "channels", `want a list, not the single value "5"`},
		{"pkg_list a string", "channels:\n  - https://conda.anaconda.org/conda-forge\npkg_list: \"numpy\"\n", 3, "pkg_list", `want a list, not the single value "numpy"`},
		{"blacklist entry a mapping", "channels: [https://repo.anaconda.com/pkgs/main]\nblacklist:\n  - flask\n  - {name: tk}\n", 4, "blacklist[1]", "want a single value, not a mapping"},
		{"bad scheme", "channels:\n  - https://repo.anaconda.com/pkgs/main\n  - ftp://mirror.example.com/pkgs/r\n", 3, "channels[1]", "want http://, https:// or file://"},
		{"relative path", "channels: [./mirror/conda-forge]\n", 1, "channels[0]", "neither a channel URL"},
		{"defaults", "channels: [defaults]\n", 1, "channels[0]", "stands for several channels"},
		{"URL with no path", "channels: [\"https://conda.example.com/\"]\n", 1, "channels[0]", "set dest_channel"},
		{"URL with a query", "channels:\n  - https://conda.example.com/pkgs/main?x=1\n", 2, "channels[0]", "no query"},
		{"token-only URL", "channels:\n  - https://conda.anaconda.org/t/tk-secret\n", 2, "channels[0]", "set dest_channel"},
		{"two URLs, one name", "channels:\n  - https://conda.anaconda.org/conda-forge\n  - file:///mnt/usb/conda-forge\n", 3, "channels[1]", "set dest_channel"},
		{"bad dest_channel", "channels: [/mnt/usb/x]\ndest_channel: \"my channel\"\n", 2, "dest_channel", "bad channel name"},
		{"reserved name from URL", "channels: [https://server.example.com/api/repo/main]\n", 1, "channels[0]", "set dest_channel"},
		{"bad platform", "channels: [https://repo.anaconda.com/pkgs/main]\nplatforms:\n  - linux-64\n  - Linux 64\n", 4, "platforms[1]", "bad platform"},
		{"bad python version", "channels: [https://repo.anaconda.com/pkgs/main]\npython_versions:\n  - 3.11\n  - three\n", 4, "python_versions[1]", "bad python version"},
		{"bad exclude_newer", "channels: [https://repo.anaconda.com/pkgs/main]\nexclude_newer: last week\n", 2, "exclude_newer", "bad date"},
		{"pkg_list and package_list", "channels: [https://repo.anaconda.com/pkgs/main]\npkg_list: [a]\npackage_list: [b]\n", 3, "package_list", "both set"},
		{"include_dependencies not a bool", "channels: [https://repo.anaconda.com/pkgs/main]\ninclude_dependencies: sometimes\n", 2, "include_dependencies", "want true or false"},
		{"key twice", "channels: [https://repo.anaconda.com/pkgs/main]\nplatforms: [linux-64]\nplatforms: [noarch]\n", 3, "platforms", "key given twice"},
		{"bad account", "accounts: [conda-forge/label/x]\n", 1, "accounts[0]", "bad account"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, _, err := Parse("m.yaml", []byte(tt.yaml))
			var ce *config.Error
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v (%T), want *config.Error", err, err)
			}
			if ce.File != "m.yaml" || ce.Line != tt.line || ce.Key != tt.key || !strings.Contains(ce.Msg, tt.msg) {
				t.Errorf("err = %q (line %d, key %q), want line %d, key %q, message with %q", err, ce.Line, ce.Key, tt.line, tt.key, tt.msg)
			}
			if strings.Contains(err.Error(), "tk-secret") {
				t.Errorf("error leaks the token: %s", err)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "export.yaml")
	if err := os.WriteFile(p, []byte(casSyncExport), 0o644); err != nil {
		t.Fatal(err)
	}
	chs, mdir, _, err := Load(p)
	if err != nil || len(chs) != 1 || mdir != "/opt/cas-mirror" {
		t.Fatalf("Load = %v, %q, %v", chs, mdir, err)
	}
	_, _, _, err = Load(filepath.Join(dir, "missing.yaml"))
	var ce *config.Error
	if !errors.As(err, &ce) || !strings.Contains(ce.Msg, "cannot read") || ce.File != filepath.Join(dir, "missing.yaml") {
		t.Errorf("missing file: %v", err)
	}
	// The error of a bad file names the path it was loaded from.
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("channels:\n  - https://conda.anaconda.org/conda-forge\npkg_list: numpy\n"), 0o644)
	if _, _, _, err := Load(bad); err == nil || !strings.HasPrefix(err.Error(), bad+":3: pkg_list: ") {
		t.Errorf("bad file: %v", err)
	}
}

// sameList treats a nil list and an empty one alike: the YAML round trip makes [] of nil.
func sameList(a, b []string) bool {
	return len(a) == len(b) && (len(a) == 0 || reflect.DeepEqual(a, b))
}

func defaultConfig(t *testing.T) *config.Config {
	t.Helper()
	c, err := config.Load("")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestApply(t *testing.T) {
	tests := []struct {
		name     string
		base     string // "" is the embedded default
		mirror   string
		names    []string
		data     string
		checkKey string // a channel to check for the mirror's filter
		err      string // substring of the error, "" for none
	}{
		{
			name:   "export replaces conda-forge in place, mirror_dir becomes data",
			mirror: casSyncExport, names: []string{"conda-forge", "bioconda", "pkgs/main", "pkgs/r", "pkgs/msys2"},
			data: "/opt/cas-mirror", checkKey: "conda-forge",
		},
		{
			name:   "import appends a new channel",
			mirror: casImport, names: []string{"conda-forge", "bioconda", "pkgs/main", "pkgs/r", "pkgs/msys2", "conda-forge-internal"},
			data: config.DefaultData, checkKey: "conda-forge-internal",
		},
		{
			name:   "data set in base is kept",
			base:   "data: /var/lib/condaproxy\nchannels:\n  - name: local\n    upstreams: [{url: file:///srv/local}]\n",
			mirror: serverSync, names: []string{"local", "pkgs/main", "pkgs/r"},
			data: "/var/lib/condaproxy", checkKey: "pkgs/r",
		},
		{
			name:   "include_dependencies without platforms is accepted",
			mirror: "channels: [/srv/mirror/private]\ndest_channel: private\npkg_list: [numpy]\ninclude_dependencies: true\n",
			names:  []string{"conda-forge", "bioconda", "pkgs/main", "pkgs/r", "pkgs/msys2", "private"},
			data:   config.DefaultData, checkKey: "private",
		},
		{
			name:   "a mirror channel nesting in a base channel",
			mirror: "channels: [https://repo.anaconda.com/pkgs]\n",
			err:    `channel "pkgs" (from the mirror config)`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := defaultConfig(t)
			if tt.base != "" {
				var err error
				if base, err = config.Parse("base.yaml", []byte(tt.base), os.LookupEnv); err != nil {
					t.Fatal(err)
				}
			}
			before, _ := base.Show()
			chs, mdir, _, err := Parse("mirror.yaml", []byte(tt.mirror))
			if err != nil {
				t.Fatal(err)
			}
			got, err := Apply(base, chs, mdir)
			if after, _ := base.Show(); string(after) != string(before) {
				t.Errorf("Apply changed base")
			}
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, ch := range got.Channels {
				names = append(names, ch.Name)
			}
			if !reflect.DeepEqual(names, tt.names) {
				t.Errorf("channels = %v, want %v", names, tt.names)
			}
			if got.Data != tt.data {
				t.Errorf("data = %q, want %q", got.Data, tt.data)
			}
			ch := got.Channel(tt.checkKey)
			var want *config.Channel
			for i := range chs {
				if chs[i].Name == tt.checkKey {
					want = &chs[i]
				}
			}
			if ch == nil || want == nil || !reflect.DeepEqual(ch.Upstreams, want.Upstreams) ||
				!sameList(ch.Platforms, want.Platforms) || !sameList(ch.PkgList, want.PkgList) ||
				!sameList(ch.PythonVersions, want.PythonVersions) || !sameList(ch.LicenseBlacklist, want.LicenseBlacklist) ||
				!sameList(ch.Whitelist, want.Whitelist) || !sameList(ch.Blacklist, want.Blacklist) ||
				ch.IncludeDependencies != want.IncludeDependencies {
				t.Errorf("channel %s = %+v, want %+v", tt.checkKey, ch, want)
			}
		})
	}
}

// A base with a token expanded from the environment, and a mirror URL holding a
// literal ${...}: the round trip through YAML changes neither.
func TestApplyKeepsValues(t *testing.T) {
	base, err := config.Parse("base.yaml", []byte("auth:\n  tokens: [\"${T}\"]\nchannels:\n  - name: private\n    upstreams:\n      - url: https://conda.anaconda.org/t/${T}/private\n"),
		func(string) (string, bool) { return "tok-123", true })
	if err != nil {
		t.Fatal(err)
	}
	chs, _, _, err := Parse("m.yaml", []byte("channels: [\"https://conda.example.com/${odd}/x\"]\ndest_channel: odd\n"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := Apply(base, chs, "")
	if err != nil {
		t.Fatal(err)
	}
	if u := got.Channel("private").Upstreams[0].URL; u != "https://conda.anaconda.org/t/tok-123/private" {
		t.Errorf("base URL = %s", u)
	}
	if ch := got.Channel("odd"); ch == nil || ch.Upstreams[0].URL != "https://conda.example.com/${odd}/x" {
		t.Errorf("mirror channel = %+v", got.Channels)
	}
}
