// Validates an AsyncAPI document with the official parser (npm
// @asyncapi/parser) and prints one JSON line: the errors it found (with
// their paths), how many warnings, and what the document describes (channel
// addresses, message names, operation ids), for tests/it/asyncapi.rs.
//
// Usage: node validate.mjs FILE
import { readFileSync } from 'node:fs';
import { Parser } from '@asyncapi/parser';

const text = readFileSync(process.argv[2], 'utf8');
const { document, diagnostics } = await new Parser().parse(text);
const errors = diagnostics
  .filter((d) => d.severity === 0)
  .map((d) => ({ message: d.message, path: d.path.join('/') }));
const out = { errors, warnings: diagnostics.filter((d) => d.severity === 1).length };
if (document) {
  out.version = document.version();
  out.channels = document.channels().all().map((c) => c.address());
  out.messages = document.components().messages().all().map((m) => m.name());
  out.operations = document.operations().all().map((o) => ({ id: o.id(), action: o.action() }));
  out.security = document.components().securitySchemes().all().map((s) => s.type());
}
process.stdout.write(JSON.stringify(out) + '\n');
