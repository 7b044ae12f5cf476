// Bundle editor.js into the asset the binary embeds. `--check` builds in memory and fails
// when the committed bundle differs (test.sh runs it), so the committed file is always
// what these sources and package-lock.json produce.
import * as esbuild from "esbuild";
import { readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

const out = fileURLToPath(new URL("../crates/sluice-ide/assets/editor.js", import.meta.url));
const result = await esbuild.build({
  entryPoints: [fileURLToPath(new URL("editor.js", import.meta.url))],
  bundle: true,
  format: "esm",
  minify: true,
  target: "es2020",
  legalComments: "eof",
  write: false,
  logLevel: "warning",
});
const code = result.outputFiles[0].text;
if (process.argv.includes("--check")) {
  let committed = "";
  try { committed = readFileSync(out, "utf8"); } catch {}
  if (committed !== code) {
    console.error("crates/sluice-ide/assets/editor.js is out of date with web/: run `cd web && npm ci && npm run build` and commit it");
    process.exit(1);
  }
  console.log("editor bundle matches web/ sources");
} else {
  writeFileSync(out, code);
  console.log(`wrote ${out} (${code.length} bytes)`);
}
