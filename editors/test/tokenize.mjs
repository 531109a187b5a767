// Tokenize .flow files with the real TextMate engine VS Code uses (vscode-textmate + vscode-oniguruma).
// usage: node tokenize.mjs GRAMMAR.json FILE.flow...  -> JSON: {file: [[line, start, end, text, scopes], ...]}
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";

const require = createRequire(path.join(process.cwd(), "package.json"));
const vsctm = require("vscode-textmate");
const oniguruma = require("vscode-oniguruma");

const [grammarPath, ...files] = process.argv.slice(2);
const wasm = fs.readFileSync(require.resolve("vscode-oniguruma/release/onig.wasm")).buffer;
await oniguruma.loadWASM(wasm);
const registry = new vsctm.Registry({
  onigLib: Promise.resolve({
    createOnigScanner: (sources) => new oniguruma.OnigScanner(sources),
    createOnigString: (s) => new oniguruma.OnigString(s),
  }),
  loadGrammar: async () => vsctm.parseRawGrammar(fs.readFileSync(grammarPath, "utf8"), grammarPath),
});
const grammar = await registry.loadGrammar("source.flow");
const out = {};
for (const file of files) {
  const tokens = [];
  let state = vsctm.INITIAL;
  fs.readFileSync(file, "utf8").split("\n").forEach((line, i) => {
    const result = grammar.tokenizeLine(line, state);
    for (const t of result.tokens) {
      tokens.push([i + 1, t.startIndex, t.endIndex, line.slice(t.startIndex, t.endIndex), t.scopes]);
    }
    state = result.ruleStack;
  });
  out[file] = tokens;
}
process.stdout.write(JSON.stringify(out));
