#!/usr/bin/env node
// Solve conda specs against ONE channel with the official rattler bindings
// (@conda-org/rattler), for condaproxy's end-to-end tests.
//
// usage: node solve.cjs CHANNEL_URL PLATFORM SPEC...
//
// Prints one JSON line on stdout:
//   {"packages":[{"name","version","build","subdir","url","sha256","size"}, ...]}
// and exits 0; on any failure prints the error on stderr and exits 1.
//
// Every fetch rattler makes goes through a guard: a URL outside CHANNEL_URL is refused
// (the solve then fails), so the script reaches nothing but the channel under test.
// With SOLVE_TRACE=1 each request is also written to stderr as
// "fetch GET <url> -> <status>".
//
// With FORWARD_PROXY=http://host:port (and FORWARD_CA=ca.pem), every request goes
// through that forward proxy (HTTPS via CONNECT), trusting only FORWARD_CA for
// the hosts it reaches: Node's fetch ignores HTTPS_PROXY, so the proxy is set
// on undici, the library under it, as a client behind such a proxy would.
"use strict";

const { simpleSolve } = require("@conda-org/rattler");

if (process.env.FORWARD_PROXY) {
  const { ProxyAgent, setGlobalDispatcher } = require("undici");
  const fs = require("fs");
  const ca = process.env.FORWARD_CA ? [fs.readFileSync(process.env.FORWARD_CA)] : undefined;
  setGlobalDispatcher(new ProxyAgent({ uri: process.env.FORWARD_PROXY, requestTls: { ca } }));
}

function usage(msg) {
  process.stderr.write(`solve.cjs: ${msg}\nusage: node solve.cjs CHANNEL_URL PLATFORM SPEC...\n`);
  process.exit(1);
}

const [channelArg, platform, ...specs] = process.argv.slice(2);
if (!channelArg || !platform || specs.length === 0) usage("missing arguments");
let channelURL;
try {
  channelURL = new URL(channelArg.replace(/\/+$/, ""));
} catch (e) {
  usage(`bad CHANNEL_URL ${JSON.stringify(channelArg)}: ${e.message}`);
}
const channelPrefix = channelURL.href.replace(/\/+$/, "") + "/";
const trace = process.env.SOLVE_TRACE === "1";

// --- fetch guard -------------------------------------------------------------
const realFetch = globalThis.fetch;
const refused = [];
globalThis.fetch = async function guardedFetch(input, init) {
  const url = typeof input === "string" ? input : input instanceof URL ? input.href : input.url;
  const method = (init && init.method) || (input && typeof input === "object" && input.method) || "GET";
  if (!String(url).startsWith(channelPrefix)) {
    refused.push(String(url));
    if (trace) process.stderr.write(`fetch ${method} ${url} -> REFUSED (outside ${channelPrefix})\n`);
    throw new TypeError(`solve.cjs: request outside the channel refused: ${url}`);
  }
  try {
    const resp = await realFetch(input, init);
    if (trace) process.stderr.write(`fetch ${method} ${url} -> ${resp.status}\n`);
    return resp;
  } catch (e) {
    if (trace) process.stderr.write(`fetch ${method} ${url} -> error ${e.message}\n`);
    throw e;
  }
};

// --- virtual packages ----------------------------------------------------------
// rattler adds none by itself; they are passed as locked packages, each a record
// with placeholder fields.
function virtualPackage(name, version) {
  return {
    filename: name,
    packageName: name,
    repoName: "@",
    version,
    build: "@",
    subdir: "@",
    md5: "@",
    sha256: "@",
    url: "https://virtual.invalid/@/@",
  };
}
const virtualPackages = [
  virtualPackage("__unix", "0"),
  virtualPackage("__linux", "6.1"),
  virtualPackage("__glibc", "2.36"),
  virtualPackage("__osx", "13.0"),
  virtualPackage("__archspec", "1"),
];

function toNumber(v) {
  return v === undefined || v === null ? null : Number(v);
}

async function main() {
  const platforms = platform === "noarch" ? ["noarch"] : [platform, "noarch"];
  const solved = await simpleSolve(specs, [channelURL.href.replace(/\/+$/, "")], platforms, virtualPackages);
  if (refused.length > 0) {
    throw new Error(`requests outside the channel were attempted: ${refused.join(", ")}`);
  }
  const packages = solved
    .filter((p) => !p.packageName.startsWith("__"))
    .map((p) => ({
      name: p.packageName,
      version: String(p.version),
      build: p.build,
      subdir: p.subdir ?? null,
      url: p.url,
      sha256: p.sha256 ?? null,
      size: toNumber(p.size),
    }));
  process.stdout.write(JSON.stringify({ packages }) + "\n");
}

main().then(
  () => process.exit(0),
  (err) => {
    const msg = err && err.stack ? err.stack : String(err);
    process.stderr.write(`solve.cjs: ${msg}\n`);
    process.exit(1);
  },
);
