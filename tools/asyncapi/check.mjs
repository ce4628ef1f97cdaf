// Parses an AsyncAPI document with the official parser and prints its diagnostics as JSON
// (one object per line: severity, code, message, path). Exit 1 on any error-severity diagnostic.
//   node tools/asyncapi/check.mjs docs/asyncapi.yaml
import { readFile } from "node:fs/promises";
import { Parser, DiagnosticSeverity } from "@asyncapi/parser";

const path = process.argv[2];
const parser = new Parser();
const { document, diagnostics } = await parser.parse(await readFile(path, "utf8"), {
  source: path,
});
let errors = 0;
for (const d of diagnostics) {
  if (d.severity === DiagnosticSeverity.Error) errors += 1;
  const severity = ["error", "warning", "information", "hint"][d.severity];
  console.log(JSON.stringify({ severity, code: d.code, message: d.message, path: d.path }));
}
if (errors > 0 || document === undefined) {
  console.error(`${path}: ${errors} error(s)`);
  process.exit(1);
}
console.log(JSON.stringify({ ok: true, asyncapi: document.version(), channels: document.channels().length }));
