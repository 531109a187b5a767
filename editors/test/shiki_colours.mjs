// Colour .flow files with Shiki (the highlighter of VitePress, Astro and many docs sites) in GitHub's themes.
// usage: node shiki_colours.mjs GRAMMAR.json FILE.flow...
//   -> JSON: {theme: {fg, files: {file: [[line, text, colour, innermost scope], ...]}}}
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";

const require = createRequire(path.join(process.cwd(), "package.json"));
const { createHighlighter } = await import(require.resolve("shiki"));
const [grammarPath, ...files] = process.argv.slice(2);
const grammar = JSON.parse(fs.readFileSync(grammarPath, "utf8"));
const themes = ["github-light", "github-dark"];
const highlighter = await createHighlighter({ themes, langs: [grammar] });
const out = {};
for (const theme of themes) {
  out[theme] = { files: {} };
  for (const file of files) {
    // `lang: "flow"`: the name a page's code fence uses must find the grammar
    const { tokens, fg } = highlighter.codeToTokens(fs.readFileSync(file, "utf8"), { lang: "flow", theme, includeExplanation: true });
    out[theme].fg = fg;
    out[theme].files[file] = tokens.flatMap((line, i) => line.flatMap((token) =>
      (token.explanation || []).filter((part) => part.content.trim()).map((part) => {
        const scopes = part.scopes.map((s) => s.scopeName);
        return [i + 1, part.content, token.color, scopes[scopes.length - 1]];
      })));
  }
}
process.stdout.write(JSON.stringify(out));
